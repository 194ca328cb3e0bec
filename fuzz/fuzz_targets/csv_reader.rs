//! The CSV reader over arbitrary bytes: encoding guess, record splitting, header search,
//! row checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tangoe_ingest::fuzzing::read_report(data, false));
