//! Arbitrary bytes in both directions of an HTTP/2 connection, cut at arbitrary places,
//! with gaps and closes: the decoder must never panic, must keep to its limits, and
//! must emit the same messages however the bytes are cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reprise_capture::fuzzing::h2_connection;

fuzz_target!(|data: &[u8]| {
    h2_connection(data);
});
