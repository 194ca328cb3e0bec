//! How a report's bytes are read, as `[report]` in the configuration sets it: the text
//! encoding of a CSV, and the caps on what a report may expand to in memory.
//!
//! Guarantees: every cap has a default that no real portal report reaches, and a report
//! past a cap fails (or, for a CSV record, has its row rejected) with a message naming the
//! cap, its value and the `[report]` key to raise.

use bytesize::ByteSize;
use serde::Deserialize;

/// The text encoding of a CSV report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub(crate) enum Encoding {
    /// UTF-16 by its BOM or zero bytes; else UTF-8 unless the file does not read as UTF-8
    /// at all, then Windows-1252 (see `encoding.rs`).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "windows-1252")]
    Windows1252,
    /// Little-endian unless a BOM or the zero bytes say big-endian.
    #[serde(rename = "utf-16")]
    Utf16,
}

/// The caps on what a report may expand to. Sizes are in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Strings in a workbook's shared strings table (calamine holds them all).
    pub(crate) max_shared_strings: u64,
    /// The shared strings part once inflated.
    pub(crate) max_shared_strings_size: u64,
    /// The styles part once inflated; also each other part read whole when a workbook is
    /// opened (theme, workbook, relationships). calamine keeps ~7 times its size.
    pub(crate) max_styles_size: u64,
    /// Any other part of a workbook (a worksheet) once inflated.
    pub(crate) max_sheet_size: u64,
    /// The longest tag or text anywhere in a workbook's XML (one cell's value, one
    /// shared string): what the XML parser holds at once.
    pub(crate) max_cell: u64,
    /// Cells in a worksheet.
    pub(crate) max_cells: u64,
    /// One CSV record (a row, with its quoted line breaks).
    pub(crate) max_record: u64,
}

impl Default for Limits {
    /// Past real reports (a 100,000-row portal workbook has ~565,000 shared strings in
    /// 23 MB and a sheet of 80 MB; Excel caps a cell at 32,767 characters, a workbook at
    /// 64,000 cell formats), and within ~250 MB of memory for a workbook at every cap at
    /// once.
    fn default() -> Self {
        Limits {
            max_shared_strings: 2_000_000,
            max_shared_strings_size: 128 << 20,
            max_styles_size: 8 << 20,
            max_sheet_size: 2 << 30,
            max_cell: 1 << 20,
            max_cells: 50_000_000,
            max_record: 16 << 20,
        }
    }
}

/// How reports are read: the encoding of CSVs and the caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    pub(crate) encoding: Encoding,
    pub(crate) limits: Limits,
}

/// A size as a person writes it in the configuration ("16 MiB").
pub(crate) fn size(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// A count with thousands separators ("2,000,000").
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The end of every "past a cap" message: the key, its value, and what to do.
pub(crate) fn past(key: &str, value: &str) -> String {
    format!(
        "past [report] {key} = {value}, a cap that keeps a hostile or corrupt file from taking \
         the machine's memory: raise it if the report is genuine"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sizes_read_as_a_person_writes_them() {
        assert_eq!(count(2_000_000), "2,000,000");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(size(16 << 20), "16.0 MiB");
        assert_eq!(size(2 << 30), "2.0 GiB");
    }
}
