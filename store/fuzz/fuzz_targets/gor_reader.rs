//! Arbitrary bytes as a GoReplay file: every message is read or reported, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for message in reprise_store::gor::GorReader::new(data) {
        if let Ok(message) = message {
            let _ = message.to_record("fuzz");
        }
    }
});
