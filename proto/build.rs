//! Generates the gRPC code with protox (a pure-Rust protobuf compiler), so
//! building kcred needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/csi.proto", "proto/kcred.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // They carry a pod's token: their Debug (in lib.rs) leaves it out.
        .skip_debug([".kcred.v1.FetchBundleRequest", ".kcred.v1.VolumeRequest"])
        // Small first buffers: see src/codec.rs.
        .codec_path("crate::codec::SmallBuffers")
        .compile_fds(fds)?;
    Ok(())
}
