//! Fuzz target `frame`: see `ferry_proto::fuzzing::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_proto::fuzzing::frame(data));
