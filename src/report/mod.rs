//! Reading a report: bytes + schema → accepted rows, row rejections, warnings and skips.
//!
//! This module knows nothing of the ledger or of the dedupe rules. The format readers
//! (`csv.rs`, `xlsx.rs`, `json.rs` for API pulls) only turn a file into rows of [`Cell`]s; `header.rs` finds the
//! header row below any preamble and maps columns to the schema's fields; `row.rs` checks
//! each data row the same way for both formats. A report missing a required column fails as
//! a whole; a bad row is rejected alone with its row number, column and reason, and the
//! report's other rows go on.
//!
//! [`read`] hands what it finds on in [`Batch`]es, in row order, so that a caller can apply
//! one batch while the next is read on another thread.

mod batch;
pub(crate) mod cell;
mod csv;
mod delimiter;
mod encoding;
pub(crate) mod header;
mod json;
pub(crate) mod reading;
mod records;
mod row;
pub(crate) mod schema;
mod xlsx;
mod xlsx_scan;

use std::path::Path;

use anyhow::{Result, bail};

pub(crate) use batch::{Batch, FileLayout, OnBatch, Outcome, Reject, Row, RowWarning, Summary};
use cell::DateContext;
use schema::Schema;

/// The file formats a report can come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Xlsx,
    /// JSON Lines (`.jsonl`): a pull from the Tangoe API.
    JsonLines,
}

impl Format {
    /// Decides the format from the file's first bytes (a ZIP archive is XLSX) and its name.
    /// An Office binary container (an encrypted workbook, or a legacy `.xls`) is refused
    /// saying which it is.
    pub(crate) fn detect(path: &Path) -> Result<Format> {
        use std::io::Read;
        let mut head = Vec::with_capacity(64 * 1024);
        std::fs::File::open(path)?
            .take(64 * 1024)
            .read_to_end(&mut head)?;
        if head.starts_with(b"PK\x03\x04") {
            return Ok(Format::Xlsx);
        }
        if head.starts_with(&OLE_MAGIC) {
            let encrypted: Vec<u8> = "EncryptedPackage"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect();
            if memchr::memmem::find(&head, &encrypted).is_some() {
                bail!(
                    "the workbook is encrypted (password-protected): open it in Excel and save it \
                     without a password (File > Info > Protect Workbook > Encrypt with Password, \
                     empty), or export the report as CSV"
                );
            }
            bail!(
                "the file is an Office binary document (a legacy .xls workbook?), which is not \
                 supported: save the report as .xlsx or .csv"
            );
        }
        let lower = path.to_string_lossy().to_lowercase();
        if lower.ends_with(".xlsx") || lower.ends_with(".xlsm") {
            if head.is_empty() {
                bail!("the file is named like an XLSX workbook but is empty (0 bytes)");
            }
            if std::str::from_utf8(&head).is_ok() {
                bail!(
                    "the file is named like an XLSX workbook but holds text (a CSV saved under an \
                     .xlsx name?): rename it to .csv"
                );
            }
            bail!(
                "the file is named like an XLSX workbook but is not a ZIP archive (truncated or not a workbook)"
            );
        }
        if lower.ends_with(".xls") {
            bail!("legacy .xls workbooks are not supported: save the report as .xlsx or .csv");
        }
        if lower.ends_with(".jsonl") {
            return Ok(Format::JsonLines);
        }
        Ok(Format::Csv)
    }
}

/// The first bytes of an OLE compound file (Office's binary container).
const OLE_MAGIC: [u8; 8] = [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];

/// Reads a whole report, handing what its rows become to `send` in batches, in row order.
/// Errors are failures of the report as a whole (no header, an unreadable file, or an error
/// from `send`).
pub(crate) fn read(
    path: &Path,
    schema: &Schema,
    ctx: DateContext,
    send: &mut OnBatch<'_>,
) -> Result<Summary> {
    match Format::detect(path)? {
        Format::Csv => csv::read(path, schema, ctx, send),
        Format::Xlsx => xlsx::read(path, schema, ctx, send),
        Format::JsonLines => json::read(path, schema, ctx, send),
    }
}
