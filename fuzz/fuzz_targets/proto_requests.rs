//! Every `VectorService` request, from protobuf bytes to the engine and back.
//!
//! The first byte picks the RPC (and the index's metric and the API version header); the rest
//! is decoded with prost as that RPC's request message. A message that decodes goes through
//! the real gRPC handler — proto → engine request conversion, the engine's validation, the
//! call on an in-memory index holding a few records, engine → proto conversion — and its
//! response is encoded again. After a write, a query, stats and a namespace listing check that
//! the index still answers.

#![no_main]

use larch_data_plane::VectorApi;
use larch_proto::pinecone::{
    CreateNamespaceRequest, DeleteNamespaceRequest, DeleteRequest, DescribeIndexStatsRequest,
    DescribeNamespaceRequest, FetchByMetadataRequest, FetchRequest, ListNamespacesRequest,
    ListRequest, QueryRequest, UpdateRequest, UpsertRequest, vector_service_server::VectorService,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Request, Response, Status};

/// Decodes `bytes` as `M`, or returns from the fuzz target.
macro_rules! decode {
    ($message:ty, $bytes:expr) => {
        match <$message>::decode($bytes) {
            Ok(message) => message,
            Err(_) => return false,
        }
    };
}

/// Encodes a successful response, as tonic would.
fn encode<M: Message>(response: Result<Response<M>, Status>) -> bool {
    match response {
        Ok(response) => {
            let _ = response.into_inner().encode_to_vec();
            true
        }
        Err(status) => {
            // Every refusal carries a message for the client.
            assert!(
                !status.message().is_empty(),
                "empty message for {:?}",
                status.code()
            );
            false
        }
    }
}

fn request<M>(message: M, header: u8) -> Request<M> {
    let mut request = Request::new(message);
    if header & 0x80 != 0 {
        request.metadata_mut().insert(
            "x-pinecone-api-version",
            tonic::metadata::MetadataValue::from_static("2025-04"),
        );
    }
    request
}

fuzz_target!(|data: &[u8]| {
    larch_fuzz::init();
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let index = larch_fuzz::seeded_index(larch_fuzz::metric(selector >> 4));
    let api = VectorApi::new(larch_fuzz::engine().clone(), index.name());
    let write = larch_fuzz::block_on(async {
        let h = selector;
        match selector % 12 {
            0 => encode(api.upsert(request(decode!(UpsertRequest, bytes), h)).await),
            1 => encode(api.delete(request(decode!(DeleteRequest, bytes), h)).await),
            2 => !encode(api.fetch(request(decode!(FetchRequest, bytes), h)).await),
            3 => !encode(api.list(request(decode!(ListRequest, bytes), h)).await),
            4 => !encode(api.query(request(decode!(QueryRequest, bytes), h)).await),
            5 => encode(api.update(request(decode!(UpdateRequest, bytes), h)).await),
            6 => !encode(
                api.describe_index_stats(request(decode!(DescribeIndexStatsRequest, bytes), h))
                    .await,
            ),
            7 => !encode(
                api.list_namespaces(request(decode!(ListNamespacesRequest, bytes), h))
                    .await,
            ),
            8 => !encode(
                api.describe_namespace(request(decode!(DescribeNamespaceRequest, bytes), h))
                    .await,
            ),
            9 => encode(
                api.delete_namespace(request(decode!(DeleteNamespaceRequest, bytes), h))
                    .await,
            ),
            10 => encode(
                api.create_namespace(request(decode!(CreateNamespaceRequest, bytes), h))
                    .await,
            ),
            _ => !encode(
                api.fetch_by_metadata(request(decode!(FetchByMetadataRequest, bytes), h))
                    .await,
            ),
        }
    });
    if write {
        // The index still answers after whatever the write did.
        larch_fuzz::block_on(async {
            let query = QueryRequest {
                top_k: 100,
                vector: vec![0.5, -0.5],
                include_values: true,
                include_metadata: true,
                ..Default::default()
            };
            assert!(encode(api.query(Request::new(query)).await));
            let stats = DescribeIndexStatsRequest::default();
            assert!(encode(api.describe_index_stats(Request::new(stats)).await));
            let list = ListNamespacesRequest::default();
            assert!(encode(api.list_namespaces(Request::new(list)).await));
        });
    }
});
