//! Load-testing tools for Reprise: an HTTP sink that counts what it receives, a
//! synthetic traffic generator, an in-process cluster (controller, workers, sink) for
//! integration tests and benchmarks, and a harness that runs the real daemons as
//! processes for fault tests ([`procs`]).

pub mod apache;
pub mod bench;
pub mod browser;
pub mod cluster;
pub mod http;
pub mod nginx;
pub mod pcapgen;
pub mod pki;
pub mod procs;
pub mod procstat;
pub mod sink;
pub mod synth;
