//! Fuzz target `group_entry`: see `ferry_proto::fuzzing::group_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_proto::fuzzing::group_entry(data));
