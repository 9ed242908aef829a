//! `ctl`: the command line of a Reprise cluster, a client of the controller over gRPC.
//! It is also the composition root of the whole system in one process ([`local`]):
//! `ctl demo`, and the cluster tests and benchmarks of `reprise-loadtests`.

pub mod cli;
pub mod client;
pub mod commands;
pub mod demo;
mod demo_service;
pub mod local;
pub mod output;
pub mod recordings;
pub mod rules;
