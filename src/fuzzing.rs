//! Entry points for the fuzz targets in `fuzz/` and their regression tests: each feeds
//! arbitrary bytes to one reader the way a run would, and returns. Not an API.
//!
//! Guarantee: every function here returns (an `Err` is fine; a panic, a hang or an
//! unbounded allocation is the bug a fuzzer looks for). Errors are swallowed: what is under
//! test is that the reader survives the input, not what it says about it.

use std::io::Write;

use crate::report::cell::{Cell, DateContext};
use crate::report::header::HeaderSearch;
use crate::report::schema::Schema;

/// The bundled schema (what a run without `[report] schema` reads reports with).
fn schema() -> Schema {
    Schema::bundled().expect("the bundled schema parses")
}

/// `bytes` written to a temporary file named `*.{ext}` (the readers take paths).
fn temp_file(bytes: &[u8], ext: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(&format!(".{ext}"))
        .tempfile()
        .expect("a temporary file");
    f.write_all(bytes).expect("write the temporary file");
    f
}

/// Reads `bytes` as a report file named `*.csv` (or `*.xlsx`), every row checked against
/// the bundled schema and dropped.
pub fn read_report(bytes: &[u8], xlsx: bool) {
    let schema = schema();
    let file = temp_file(bytes, if xlsx { "xlsx" } else { "csv" });
    let ctx = DateContext::new(&schema, chrono_tz::UTC).expect("the bundled date formats");
    let _ = crate::report::read(file.path(), &schema, ctx, &mut |_batch| Ok(()));
}

/// Looks for the header, with the bundled schema, among the rows `data` holds: its lines
/// are rows, its tabs separate cells (as a report's first rows are searched).
pub fn find_header(data: &[u8]) {
    let schema = schema();
    let text = String::from_utf8_lossy(data);
    let mut search = HeaderSearch::new(&schema);
    for line in text.split('\n') {
        let cells: Vec<Cell<'_>> = line.split('\t').map(Cell::Text).collect();
        match search.row(&cells) {
            Ok(Some(layout)) => {
                let _ = layout.extra_names();
                return;
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

/// Reads `text` as a known_hosts file and looks a host up in it.
pub fn read_known_hosts(text: &[u8]) {
    let file = temp_file(text, "known_hosts");
    if let Ok(k) = crate::sftp::known_hosts::KnownHosts::load(file.path()) {
        let _ = k.lookup("127.0.0.1", 2222);
        let _ = k.lookup("sftp.example.com", 22);
    }
}

/// Loads `text` as a configuration file, in a folder of its own (relative paths in it
/// resolve there).
pub fn load_config(text: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("tangoe-ingest.toml");
    std::fs::write(&path, text).expect("write the configuration");
    let _ = crate::config::Config::load(&path);
}
