//! Compiles proto/kms/v1/kms.proto with protox (pure Rust), so the build needs no system `protoc`.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/kms/v1/kms.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Served through gRPC reflection.
    std::fs::write(out.join("kms_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // Server and client encode and decode through `api::codec::WipingCodec`: prost's encoding, plus
    // zeroizing the secret fields of each message once it is encoded (ProstCodec drops them as is).
    // The builder has one codec path for both sides; the client (tests, kms-bench) gets it too.
    tonic_prost_build::configure()
        .codec_path("crate::api::codec::WipingCodec")
        .compile_fds(fds)?;
    Ok(())
}
