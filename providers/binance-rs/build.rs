//! Compiles the provider.v1 contract with a vendored `protoc`, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let proto_root = "../proto";
    let proto = "../proto/provider/v1/provider.proto";
    println!("cargo:rerun-if-changed={proto}");
    // The encoded descriptors of the contract, served by gRPC reflection (src/server.rs).
    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("provider_v1.bin");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(descriptors)
        .compile_protos(&[proto], &[proto_root])?;
    Ok(())
}
