//! Fuzz target `envelope`: see `ferry_proto::fuzzing::envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_proto::fuzzing::envelope(data));
