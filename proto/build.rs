//! Compiles Larch's `.proto` files with protox (pure Rust, no system `protoc`), writes the
//! descriptor set used by gRPC reflection, and generates prost messages + tonic services.

use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";
const FILES: &[&str] = &[
    "vector_service.proto",
    "larch/control/v1/index.proto",
    "larch/control/v1/access.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build does not emit rerun-if-changed for fds input; watch the folder ourselves.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let fds = protox::compile(FILES, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("larch_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
