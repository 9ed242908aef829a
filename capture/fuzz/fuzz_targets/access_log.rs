//! Arbitrary bytes as access-log lines (Common, Combined and JSON): no panic, and every
//! line that parses is stored as a request that reads back whole, its secrets masked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reprise_capture::fuzzing::parse_access_log;

fuzz_target!(|data: &[u8]| {
    parse_access_log(data);
});
