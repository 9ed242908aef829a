//! Arbitrary bytes in both directions of a connection, cut at arbitrary places: the
//! framer must never panic, and every record it emits must be a message it framed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reprise_capture::fuzzing::frame_http;

fuzz_target!(|data: &[u8]| {
    frame_http(data);
});
