//! Fuzz target `name`: see `ferry_proto::fuzzing::name`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_proto::fuzzing::name(data));
