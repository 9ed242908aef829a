fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &["proto/reprise/v1/traffic.proto", "proto/reprise/v1/worker.proto", "proto/reprise/v1/controller.proto"],
        &["proto"],
    )?;
    Ok(())
}
