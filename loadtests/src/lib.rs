//! Load-testing tools for Reprise: an HTTP sink that counts what it receives, a
//! synthetic traffic generator, and an in-process cluster (controller, workers, sink)
//! for integration tests and benchmarks.

pub mod bench;
pub mod cluster;
pub mod pcapgen;
pub mod procstat;
pub mod sink;
pub mod synth;
