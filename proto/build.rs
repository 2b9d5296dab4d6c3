//! Compiles `etl/v1/*.proto` with protox (pure Rust), so no system `protoc` is needed,
//! and writes the descriptor set that gRPC server reflection serves.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "etl/v1/common.proto",
        "etl/v1/extractor.proto",
        "etl/v1/sftp_gateway.proto",
        "etl/v1/connect_manager.proto",
        "etl/v1/sink_verifier.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("etl_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
