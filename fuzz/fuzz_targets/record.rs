//! Fuzz target `record`: see `ferry_proto::fuzzing::record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_proto::fuzzing::record(data));
