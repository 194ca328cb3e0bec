//! Reading a report: bytes + schema → accepted rows, row rejections, warnings and skips.
//!
//! This module knows nothing of the ledger or of the dedupe rules. The format readers
//! (`csv.rs`, `xlsx.rs`) only turn a file into rows of [`Cell`]s; `header.rs` finds the
//! header row below any preamble and maps columns to the schema's fields; `row.rs` checks
//! each data row the same way for both formats. A report missing a required column fails as
//! a whole; a bad row is rejected alone with its row number, column and reason, and the
//! report's other rows go on.
//!
//! [`read`] hands what it finds on in [`Batch`]es, in row order, so that a caller can apply
//! one batch while the next is read on another thread.

pub(crate) mod cell;
mod csv;
mod header;
mod row;
pub(crate) mod schema;
mod xlsx;

use std::ops::Range;
use std::path::Path;

use anyhow::{Result, bail};

use crate::state::State;
use cell::DateContext;
use schema::Schema;

/// The file formats a report can come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Xlsx,
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
            bail!(
                "the file is named like an XLSX workbook but is not a ZIP archive (truncated or not a workbook)"
            );
        }
        if lower.ends_with(".xls") {
            bail!("legacy .xls workbooks are not supported: save the report as .xlsx or .csv");
        }
        Ok(Format::Csv)
    }
}

/// The first bytes of an OLE compound file (Office's binary container).
const OLE_MAGIC: [u8; 8] = [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];

/// A rejected row: where, why, and the raw row for a person to fix it.
#[derive(Debug, Clone)]
pub(crate) struct Reject {
    pub(crate) row: u64,
    pub(crate) column: String,
    pub(crate) reason: String,
    pub(crate) raw: String,
}

/// A warning about one cell of an accepted row.
#[derive(Debug, Clone)]
pub(crate) struct RowWarning {
    pub(crate) row: u64,
    pub(crate) column: String,
    pub(crate) message: String,
}

/// Counts of the rows a report held, by what became of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RowCounts {
    pub(crate) rows: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
    pub(crate) skipped: u64,
    pub(crate) warnings: u64,
}

/// An accepted row, borrowed from its [`Batch`]: the Activity's key fields, and every value
/// in the ledger's attribute encoding (`crate::attrs`): each schema field in schema
/// order (empty when the report lacks the column), then each extra column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    /// The row as a person sees it: the spreadsheet row, or the CSV line it starts on.
    pub(crate) number: u64,
    pub(crate) id: &'a str,
    pub(crate) state: State,
    /// The row's `updated_at`, seconds since the epoch, when the report has one.
    pub(crate) updated_at: Option<i64>,
    pub(crate) values: &'a [u8],
    /// The row's ITSM number (empty when none).
    pub(crate) itsm_number: &'a str,
}

/// What a report row became, in a [`Batch`] (skipped rows are only counted).
#[derive(Debug)]
enum Item {
    Accepted {
        number: u64,
        state: State,
        updated_at: Option<i64>,
        /// Where the row's ID, values and ITSM number sit in the batch's bytes.
        id: Range<usize>,
        values: Range<usize>,
        itsm: Range<usize>,
    },
    Rejected(Reject),
    Warning(RowWarning),
}

/// What a report row became, as [`Batch::items`] yields it.
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    Accepted(Row<'a>),
    Rejected(&'a Reject),
    Warning(&'a RowWarning),
}

/// Consecutive outcomes of a report's rows, in row order; accepted rows keep their text in
/// one buffer (one allocation for the batch, not two a row).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    items: Vec<Item>,
    bytes: Vec<u8>,
}

/// Items a batch holds before it is handed on.
const BATCH_ITEMS: usize = 2048;

impl Batch {
    fn with_capacity() -> Batch {
        Batch {
            items: Vec::with_capacity(BATCH_ITEMS),
            bytes: Vec::with_capacity(BATCH_ITEMS * 512),
        }
    }

    fn is_full(&self) -> bool {
        self.items.len() >= BATCH_ITEMS
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Where a row's values start: they are encoded into [`Batch::bytes_mut`], then the
    /// row is either finished ([`Batch::finish_row`]) or abandoned.
    fn start_row(&self) -> usize {
        self.bytes.len()
    }

    fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Adds an accepted row whose values were encoded since `mark`, its ITSM number at
    /// `itsm` among them; its ID goes after them.
    fn finish_row(
        &mut self,
        mark: usize,
        number: u64,
        id: &str,
        state: State,
        updated_at: Option<i64>,
        itsm: Range<usize>,
    ) {
        let values = mark..self.bytes.len();
        self.bytes.extend_from_slice(id.as_bytes());
        self.items.push(Item::Accepted {
            number,
            state,
            updated_at,
            id: values.end..self.bytes.len(),
            values,
            itsm,
        });
    }

    /// Drops what was encoded since `mark`.
    fn abandon_row(&mut self, mark: usize) {
        self.bytes.truncate(mark);
    }

    fn push(&mut self, item: Item) {
        self.items.push(item);
    }

    /// The outcomes, in row order.
    pub(crate) fn items(&self) -> impl Iterator<Item = Outcome<'_>> {
        self.items.iter().map(|item| match item {
            Item::Accepted {
                number,
                state,
                updated_at,
                id,
                values,
                itsm,
            } => Outcome::Accepted(Row {
                number: *number,
                // Both were `str`s when they went in; the ranges end on their boundaries.
                id: std::str::from_utf8(&self.bytes[id.clone()]).unwrap_or_default(),
                state: *state,
                updated_at: *updated_at,
                values: &self.bytes[values.clone()],
                itsm_number: std::str::from_utf8(&self.bytes[itsm.clone()]).unwrap_or_default(),
            }),
            Item::Rejected(r) => Outcome::Rejected(r),
            Item::Warning(w) => Outcome::Warning(w),
        })
    }
}

/// What reading a whole report found, besides its rows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    pub(crate) counts: RowCounts,
    /// The headers of the columns the schema does not name, in the order their values
    /// follow the schema fields' in each row.
    pub(crate) extras: Vec<String>,
    /// How the file was read, where a person may want to know (its encoding, a sheet
    /// chosen in place of a missing one...).
    pub(crate) notes: Vec<String>,
}

/// Where the batches go; an error stops the reading.
pub(crate) type OnBatch<'s> = dyn FnMut(Batch) -> Result<()> + Send + 's;

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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_its_rows_as_they_went_in() {
        let mut b = Batch::with_capacity();
        let mark = b.start_row();
        crate::attrs::push(b.bytes_mut(), "A1");
        let itsm = crate::attrs::push(b.bytes_mut(), "RITM1");
        b.finish_row(mark, 2, "A1", State::Ordered, Some(5), itsm);
        b.push(Item::Warning(RowWarning {
            row: 3,
            column: "Device".into(),
            message: "odd".into(),
        }));
        let mark = b.start_row();
        crate::attrs::push(b.bytes_mut(), "dropped");
        b.abandon_row(mark);
        let mark = b.start_row();
        crate::attrs::push(b.bytes_mut(), "x");
        b.finish_row(mark, 4, "Zoë", State::Completed, None, 0..0);
        let got: Vec<String> = b
            .items()
            .map(|o| match o {
                Outcome::Accepted(r) => format!(
                    "{} {} {:?} {:?} {} {}",
                    r.number,
                    r.id,
                    r.state,
                    r.updated_at,
                    r.itsm_number,
                    r.values.len()
                ),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                "2 A1 Ordered Some(5) RITM1 9",
                "Warning(RowWarning { row: 3, column: \"Device\", message: \"odd\" })",
                "4 Zoë Completed None  2"
            ]
        );
    }
}
