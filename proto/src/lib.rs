//! Wire formats shared by every Reprise daemon: the traffic record stored in the log
//! (one per captured HTTP message) and the gRPC services between controller, workers
//! and `ctl`.

/// Version of the controller/worker/ctl protocol. Every registration and assignment
/// carries it; a peer with another version is refused with a clear error instead of
/// being misread.
pub const PROTOCOL_VERSION: u32 = 1;

/// Version of [`v1::TrafficRecord`]'s format written by this build.
pub const TRAFFIC_FORMAT_VERSION: u32 = 1;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("reprise.v1");
}
