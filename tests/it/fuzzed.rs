//! The inputs kept from fuzzing (`fuzz/regressions/<target>/`: crashers once fixed, and
//! inputs worth keeping) go through the same entry points as the fuzz targets on every
//! test run: each must return, without a panic. The fuzzers themselves run with
//! `cargo +nightly fuzz` (docs/reliability.md).

use std::path::Path;

use tangoe_ingest::fuzzing;

/// The kept inputs of one fuzz target.
fn kept(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no kept input in {}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn kept_csv_inputs_are_read_without_a_panic() {
    for input in kept("csv_reader") {
        fuzzing::read_report(&input, false);
    }
}

#[test]
fn kept_xlsx_inputs_are_read_without_a_panic() {
    for input in kept("xlsx_reader") {
        fuzzing::read_report(&input, true);
    }
}

#[test]
fn kept_header_rows_are_matched_without_a_panic() {
    for input in kept("header") {
        fuzzing::find_header(&input);
    }
}

#[test]
fn kept_known_hosts_files_are_parsed_without_a_panic() {
    for input in kept("known_hosts") {
        fuzzing::read_known_hosts(&input);
    }
}

#[test]
fn kept_configurations_are_loaded_without_a_panic() {
    for input in kept("config") {
        fuzzing::load_config(&input);
    }
}
