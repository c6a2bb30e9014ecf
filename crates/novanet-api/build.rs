//! Generates the protobuf and tonic code from `proto/novanet.proto` (needs `protoc`, installed by
//! `scripts/setup.sh`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/novanet.proto");
    tonic_prost_build::configure().compile_protos(&["proto/novanet.proto"], &["proto"])?;
    Ok(())
}
