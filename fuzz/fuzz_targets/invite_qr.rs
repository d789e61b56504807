//! Fuzz target `invite_qr`: see `ferry_proto::fuzzing::invite_qr`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_proto::fuzzing::invite_qr(data));
