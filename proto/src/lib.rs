//! Larch's wire types: generated prost messages and tonic clients/servers, nothing else.
//!
//! # Layout
//! - [`pinecone`]: Pinecone's data-plane API (package-less `VectorService`, API 2026-07),
//!   written for Larch with Pinecone's message names and field numbers so Pinecone's own
//!   gRPC clients work unmodified. Sources: `proto/vector_service.proto`.
//! - [`control`]: `larch.control.v1`, Larch's control plane: `IndexService`,
//!   `BackupService` (backups and restore jobs), and `ApiKeyService`/`ProjectService` for
//!   administration. Sources: `proto/larch/control/v1/index.proto`,
//!   `proto/larch/control/v1/backup.proto`, `proto/larch/control/v1/access.proto`.
//! - [`internal`]: `larch.internal.v1`, the API between the planes in split mode
//!   (`ControlPlaneSync` on the control plane, `DataPlaneControl` on the data plane).
//!   Sources: `proto/larch/internal/v1/internal.proto`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of both (with their imports), for
//!   gRPC server reflection.
//!
//! Metadata and filters are `google.protobuf.Struct`, i.e. [`prost_types::Struct`].
//!
//! ```
//! use larch_proto::pinecone::{QueryRequest, vector_service_client::VectorServiceClient};
//! let req = QueryRequest { top_k: 10, vector: vec![0.1, 0.2], ..Default::default() };
//! assert_eq!(req.top_k, 10);
//! # let _ = std::marker::PhantomData::<VectorServiceClient<tonic::transport::Channel>>;
//! ```

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::doc_markdown,
    clippy::large_enum_variant
)]

/// Pinecone's data plane (`VectorService`, package-less).
pub mod pinecone {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// Larch's control plane, `larch.control.v1`.
pub mod control {
    include!(concat!(env!("OUT_DIR"), "/larch.control.v1.rs"));
}

/// Larch's internal API between the planes in split mode, `larch.internal.v1`.
pub mod internal {
    include!(concat!(env!("OUT_DIR"), "/larch.internal.v1.rs"));
}

/// Encoded `FileDescriptorSet` of every public Larch proto and its imports, for server
/// reflection (the internal API is left out).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/larch_descriptor.bin"));

/// Re-exported so users of the messages name the same `Struct` type.
pub use prost_types;

/// gRPC server reflection (v1 and v1alpha) over every Larch proto and `grpc.health.v1`, so
/// `grpcurl` and reflection-based clients can explore any Larch port.
pub mod reflection {
    use tonic_reflection::server::{v1, v1alpha};

    /// Both reflection services, ready to add to a tonic server.
    pub fn services() -> (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ) {
        let builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Both descriptor sets are produced at build time by protox/tonic, so decoding them
        // can only fail if the build itself is broken.
        (
            builder()
                .build_v1()
                .expect("built-in descriptor sets are valid"),
            builder()
                .build_v1alpha()
                .expect("built-in descriptor sets are valid"),
        )
    }
}
