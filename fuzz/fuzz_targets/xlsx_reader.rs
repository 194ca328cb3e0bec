//! The XLSX reader over arbitrary bytes (seed it with real workbooks: most mutations of a
//! ZIP are refused early, the rest reach the caps' scan and calamine).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tangoe_ingest::fuzzing::read_report(data, true));
