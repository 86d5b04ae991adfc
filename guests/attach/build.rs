//! Generates the prost types of proto/attach.proto (the same file that is
//! registered with the node), so the handler and the node agree on them.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/attach.proto");
    let files = protox::compile(["attach.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(files)?;
    Ok(())
}
