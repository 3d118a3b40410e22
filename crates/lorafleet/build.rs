//! Compiles the ChirpStack v3 definitions lorafleet declares itself (v4's come from the
//! chirpstack_api crate). protoc is found through PROTOC, see tools/protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The console is embedded as a folder (web/assets.rs): a new file must trigger a rebuild.
    println!("cargo:rerun-if-changed=assets");
    // sqlx::migrate! embeds the migrations folder but does not see a new file in it.
    println!("cargo:rerun-if-changed=migrations");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(
            &[
                "proto/chirpstack-v3/integration.proto",
                "proto/chirpstack-v3/fuota.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
