//! The configuration loader over arbitrary bytes: TOML, then every table's validation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tangoe_ingest::fuzzing::load_config(data));
