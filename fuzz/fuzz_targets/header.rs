//! Header matching: the input's lines are rows, its tabs separate cells.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tangoe_ingest::fuzzing::find_header(data));
