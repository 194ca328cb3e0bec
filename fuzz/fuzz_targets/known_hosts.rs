//! The known_hosts parser over arbitrary bytes (plain, hashed and marked lines).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tangoe_ingest::fuzzing::read_known_hosts(data));
