//! Compiles Larch's `.proto` files with protox (pure Rust, no system `protoc`), writes the
//! descriptor set used by gRPC reflection, and generates prost messages + tonic services.

use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";
/// The APIs clients use; reflection describes these.
const PUBLIC: &[&str] = &[
    "vector_service.proto",
    "larch/control/v1/index.proto",
    "larch/control/v1/access.proto",
    "larch/control/v1/backup.proto",
];
/// Between the planes only: generated, but left out of reflection.
const INTERNAL: &[&str] = &["larch/internal/v1/internal.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build does not emit rerun-if-changed for fds input; watch the folder ourselves.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let public = protox::compile(PUBLIC, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("larch_descriptor.bin"),
        prost::Message::encode_to_vec(&public),
    )?;

    let all = protox::compile(PUBLIC.iter().chain(INTERNAL), [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(all)?;
    Ok(())
}
