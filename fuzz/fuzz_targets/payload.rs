//! Fuzz target `payload`: see `ferry_proto::fuzzing::payload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_proto::fuzzing::payload(data));
