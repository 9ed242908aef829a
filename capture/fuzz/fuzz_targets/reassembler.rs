//! Arbitrary segments (sequence numbers, flags, payloads) into the reassembler and the
//! HTTP framer behind it: no panic, bounded buffering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reprise_capture::fuzzing::reassemble;

fuzz_target!(|data: &[u8]| {
    reassemble(data);
});
