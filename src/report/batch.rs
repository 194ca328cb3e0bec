//! What reading a report gives: its rows in [`Batch`]es (accepted rows packed into one
//! buffer, rejects with the raw row, warnings), and a [`Summary`] of the whole file.
//!
//! Guarantees: a batch keeps its rows' order; a reject names its row and column.

use std::ops::Range;

use anyhow::Result;

use crate::state::State;

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
pub(super) enum Item {
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
pub(super) const BATCH_ITEMS: usize = 2048;

impl Batch {
    pub(super) fn with_capacity() -> Batch {
        Batch {
            items: Vec::with_capacity(BATCH_ITEMS),
            bytes: Vec::with_capacity(BATCH_ITEMS * 512),
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.items.len() >= BATCH_ITEMS
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Where a row's values start: they are encoded into [`Batch::bytes_mut`], then the
    /// row is either finished ([`Batch::finish_row`]) or abandoned.
    pub(super) fn start_row(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Adds an accepted row whose values were encoded since `mark`, its ITSM number at
    /// `itsm` among them; its ID goes after them.
    pub(super) fn finish_row(
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
    pub(super) fn abandon_row(&mut self, mark: usize) {
        self.bytes.truncate(mark);
    }

    pub(super) fn push(&mut self, item: Item) {
        self.items.push(item);
    }

    /// How many rows the batch holds (accepted or rejected; warnings are not rows).
    pub(crate) fn rows(&self) -> u64 {
        self.items
            .iter()
            .filter(|i| !matches!(i, Item::Warning(_)))
            .count() as u64
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
    /// How the file is laid out (for `inspect`).
    pub(crate) layout: FileLayout,
}

/// How a report file is laid out, as reading it found.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileLayout {
    /// The header row, as a person sees it (spreadsheet row, CSV line).
    pub(crate) header_row: u64,
    /// Every column's header, and the schema field it feeds (none: an extra column).
    pub(crate) columns: Vec<(String, Option<String>)>,
    /// CSV: the delimiter (set by the schema, or sniffed).
    pub(crate) delimiter: Option<u8>,
    /// CSV: the encoding the text was read in.
    pub(crate) encoding: Option<&'static str>,
    /// XLSX: the sheet read.
    pub(crate) sheet: Option<String>,
}

/// Where the batches go; an error stops the reading.
pub(crate) type OnBatch<'s> = dyn FnMut(Batch) -> Result<()> + Send + 's;

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
