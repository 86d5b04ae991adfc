//! Compiles proto/collector/v1 with protox (no protoc needed) into tonic code
//! and a descriptor set the node serves through reflection.
use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = ["common", "registry", "repo", "collection", "dispatcher"]
        .map(|f| root.join(format!("collector/v1/{f}.proto")));
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("collector_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No `Client::connect` constructors (clients take a Channel): one would
        // clash with the CollectiveDispatcher.Connect RPC's client method.
        .build_transport(false)
        // Undecodable requests are INVALID_ARGUMENT, not tonic-prost's INTERNAL.
        .codec_path("crate::api::codec::ProstCodec")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
