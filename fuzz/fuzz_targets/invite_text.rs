//! Fuzz target `invite_text`: see `ferry_proto::fuzzing::invite_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_proto::fuzzing::invite_text(data));
