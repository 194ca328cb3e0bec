//! Checking a report's rows, the same way for every format: each row below the header is
//! skipped (blank, footer, repeated header, a state that triggers nothing), rejected with
//! its column and reason, or accepted with every value normalised and encoded.
//!
//! Guarantees: a row is accepted only when every one of its values reads as its field's
//! type; a rejected row never stops the report; rows come out in the order they went in.

use std::collections::HashMap;

use anyhow::Result;

use super::batch::{Batch, FileLayout, Item, OnBatch, Reject, RowCounts, RowWarning, Summary};
use super::cell::{Cell, CellValue, DateContext, UNCOMPUTED, normalize_cell};
use super::header::{HeaderSearch, Layout, header_text};
use super::schema::{FieldType, Schema, StateValue};
use crate::attrs;
use crate::state::State;

/// What a CSV reader knows of the row it hands over next.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CsvRow<'a> {
    /// The row's text (its cells one after another).
    pub(crate) text: &'a [u8],
    /// The row spans more than one line.
    pub(crate) multiline: bool,
    /// The row is the file's last and no line break follows it: a short one was cut.
    pub(crate) cut_end: bool,
    pub(crate) delimiter: u8,
}

/// A row that passed its checks, its values encoded.
struct Checked<'c> {
    id: std::borrow::Cow<'c, str>,
    /// `None` for a state the schema lists as triggering nothing.
    state: Option<State>,
    updated_at: Option<i64>,
    /// Where the row's ITSM number sits among the encoded values.
    itsm: std::ops::Range<usize>,
}

/// The longest Activity ID a row may carry (Tangoe's are a dozen characters).
const MAX_ID: usize = 255;

/// Why a row is rejected: (column, reason).
type Rejection = (String, String);

const FOOTER_PREFIXES: &[&str] = &[
    "total",
    "grand total",
    "generated",
    "report generated",
    "end of report",
    "row count",
    "record count",
    "records",
    "count:",
    "printed",
    "run date",
    "page ",
    "confidential",
    "copyright",
];

/// Turns a report's rows into [`Batch`]es: the header first, then each data row.
pub(crate) struct RowChecker<'s, 'o> {
    schema: &'s Schema,
    ctx: DateContext,
    search: HeaderSearch<'s>,
    layout: Option<Layout>,
    /// The few distinct spellings of states a report uses, as the schema reads them.
    state_memo: HashMap<String, Option<StateValue>>,
    counts: RowCounts,
    /// Rows must line up with the header (CSV; a sheet's rows end at their last value).
    width_checked: bool,
    batch: Batch,
    send: &'o mut OnBatch<'o>,
    /// What the reader knows of the file's layout; the header row and columns added here.
    pub(crate) file: FileLayout,
}

impl<'s, 'o> RowChecker<'s, 'o> {
    pub(crate) fn new(schema: &'s Schema, ctx: DateContext, send: &'o mut OnBatch<'o>) -> Self {
        RowChecker {
            schema,
            ctx,
            search: HeaderSearch::new(schema),
            layout: None,
            state_memo: HashMap::new(),
            counts: RowCounts::default(),
            width_checked: false,
            batch: Batch::with_capacity(),
            send,
            file: FileLayout::default(),
        }
    }

    /// CSV rows: every row has the header's cells. A value past them (a stray delimiter)
    /// rejects the row; fewer cells are read as empty (Excel leaves out trailing empty
    /// cells) unless the file was cut inside the row.
    pub(crate) fn with_width_checked(mut self) -> Self {
        self.width_checked = true;
        self
    }

    /// Blank lines the reader skipped itself (CSV): counted as skipped rows below the header.
    pub(crate) fn blank_lines(&mut self, n: u64) {
        if self.layout.is_some() {
            self.counts.rows += n;
            self.counts.skipped += n;
        }
    }

    /// Feeds one row. `number` is the row as a person sees it (spreadsheet row, CSV line).
    pub(crate) fn row(
        &mut self,
        number: u64,
        cells: &[Cell<'_>],
        csv: Option<CsvRow<'_>>,
    ) -> Result<()> {
        let Some(layout) = &self.layout else {
            self.layout = self.search.row(cells)?;
            self.file.header_row = number;
            return Ok(());
        };
        self.counts.rows += 1;
        if skip(cells, layout).is_some() {
            self.counts.skipped += 1;
            return Ok(());
        }
        let mut warnings = Vec::new();
        let mark = self.batch.start_row();
        let mut bytes = std::mem::take(self.batch.bytes_mut());
        let checked = self.check(cells, csv, &mut warnings, &mut bytes);
        *self.batch.bytes_mut() = bytes;
        match checked {
            Ok(Checked { state: None, .. }) => {
                self.batch.abandon_row(mark);
                self.counts.skipped += 1;
                Ok(())
            }
            Ok(Checked {
                id,
                state: Some(state),
                updated_at,
                itsm,
            }) => {
                self.counts.accepted += 1;
                self.counts.warnings += warnings.len() as u64;
                self.batch
                    .finish_row(mark, number, &id, state, updated_at, itsm);
                for (column, message) in warnings {
                    self.batch.push(Item::Warning(RowWarning {
                        row: number,
                        column,
                        message,
                    }));
                }
                self.flush_when_full()
            }
            Err((column, reason)) => {
                self.batch.abandon_row(mark);
                self.counts.rejected += 1;
                self.push(Item::Rejected(Reject {
                    row: number,
                    column,
                    reason,
                    raw: raw_row(cells),
                }))
            }
        }
    }

    /// Feeds a row that cannot be read as it is (bytes that are not text, a record past
    /// `max_record`): `cells` hold what can be shown of it. Above the header it is one
    /// more row the header search looks at; below, it is skipped like any row when blank
    /// or a footer, else rejected in its column `col` for `reason`.
    pub(crate) fn unreadable(
        &mut self,
        number: u64,
        cells: &[Cell<'_>],
        col: usize,
        reason: String,
    ) -> Result<()> {
        let Some(layout) = &self.layout else {
            return self.row(number, cells, None);
        };
        self.counts.rows += 1;
        if skip(cells, layout).is_some() {
            self.counts.skipped += 1;
            return Ok(());
        }
        let column = match layout.headers.get(col) {
            Some(h) if !h.is_empty() => layout.header(col),
            _ => format!("column {}", col + 1),
        };
        self.counts.rejected += 1;
        self.push(Item::Rejected(Reject {
            row: number,
            column,
            reason,
            raw: raw_row(cells),
        }))
    }

    fn push(&mut self, item: Item) -> Result<()> {
        self.batch.push(item);
        self.flush_when_full()
    }

    fn flush_when_full(&mut self) -> Result<()> {
        if self.batch.is_full() {
            let full = std::mem::replace(&mut self.batch, Batch::with_capacity());
            (self.send)(full)?;
        }
        Ok(())
    }

    /// Called by a reader at the end of the file: hands on the last batch; fails when no
    /// header was found.
    pub(crate) fn finish(mut self, notes: Vec<String>) -> Result<Summary> {
        let Some(layout) = self.layout.take() else {
            return Err(self.search.missing_columns_error());
        };
        if !self.batch.is_empty() {
            (self.send)(std::mem::take(&mut self.batch))?;
        }
        let mut file = self.file;
        file.columns = (0..layout.headers.len())
            .map(|col| {
                let field = layout
                    .field_columns
                    .iter()
                    .position(|c| *c == Some(col))
                    .map(|f| self.schema.fields[f].name.clone());
                (layout.header(col), field)
            })
            .collect();
        Ok(Summary {
            counts: self.counts,
            extras: layout.extra_names(),
            notes,
            layout: file,
        })
    }

    /// Validates a data row: its shape, its ID and state, then every value in schema
    /// order, each encoded into `out` as it passes (see [`encode_value`]); warnings go to
    /// `warnings`. The first bad column in schema order is the one named.
    fn check<'c>(
        &mut self,
        cells: &'c [Cell<'c>],
        csv: Option<CsvRow<'_>>,
        warnings: &mut Vec<(String, String)>,
        out: &mut Vec<u8>,
    ) -> std::result::Result<Checked<'c>, Rejection> {
        let layout = self.layout.as_ref().expect("called after the header");
        if let Some(csv) = csv {
            swallowed_rows(self.schema, layout, cells, csv)?;
            if self.width_checked {
                check_width(layout, cells, csv.cut_end, warnings)?;
            }
        }
        let get = |col: usize| cells.get(col).copied().unwrap_or(Cell::Empty);
        let id = activity_id(&self.ctx, layout, get(layout.id_column()))?;
        let state = state(
            &mut self.state_memo,
            self.schema,
            layout,
            get(layout.state_column()),
        )?;
        let mut updated_at = None;
        let mut itsm = 0..0;
        for (i, col) in layout.field_columns.iter().enumerate() {
            let at = if i == layout.id_field {
                attrs::push(out, &id)
            } else if i == layout.state_field {
                attrs::push(out, state.map_or("", State::as_str))
            } else if let Some(col) = *col {
                let kind = self.schema.fields[i].kind;
                match normalize_cell(get(col), kind, &self.ctx, true) {
                    CellValue::Ok {
                        text,
                        warning,
                        temporal,
                    } => {
                        if Some(i) == layout.updated_field {
                            updated_at = temporal.map(|t| t.timestamp(&self.ctx));
                        }
                        if let Some(w) = warning {
                            warnings.push((layout.header(col), w));
                        }
                        attrs::push(out, &text)
                    }
                    CellValue::Invalid(reason) => return Err((layout.header(col), reason)),
                }
            } else {
                attrs::push(out, "")
            };
            if Some(i) == layout.itsm_field {
                itsm = at;
            }
        }
        for &(col, _) in &layout.extras {
            match normalize_cell(get(col), FieldType::Text, &self.ctx, true) {
                CellValue::Ok { text, warning, .. } => {
                    // An extra column only warns about a value it cannot know.
                    if let Some(w) = warning.filter(|_| unreadable(&get(col)).is_some()) {
                        warnings.push((layout.header(col), w));
                    }
                    attrs::push(out, &text)
                }
                CellValue::Invalid(_) => attrs::push(out, ""),
            };
        }
        // A column with no header has no name to keep its value under: said, not silent.
        for &col in &layout.unnamed {
            if !cell_is_empty(&get(col)) {
                warnings.push((
                    format!("column {}", col + 1),
                    "a value under a column with no header is not kept".to_string(),
                ));
            }
        }
        Ok(Checked {
            id,
            state,
            updated_at,
            itsm,
        })
    }
}

/// Why a data row is skipped without being an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Blank,
    Footer,
    RepeatedHeader,
}

/// Whether a data row is skipped rather than checked, and why.
fn skip(cells: &[Cell<'_>], layout: &Layout) -> Option<Skip> {
    // Only "none", "one or two" and "more" matter.
    let nonempty = cells.iter().filter(|c| !cell_is_empty(c)).take(3).count();
    if nonempty == 0 {
        Some(Skip::Blank)
    } else if nonempty <= 2 && is_footer(cells) {
        Some(Skip::Footer)
    } else if is_repeated_header(cells, &layout.normalized) {
        Some(Skip::RepeatedHeader)
    } else {
        None
    }
}

/// In a report of five columns or more, a multi-line cell holding a line that reads as a
/// row of its own (all but one of a row's cells, an Activity ID, then a known state in the
/// state column) is a quote left open that took the rows after it into one cell.
fn swallowed_rows(
    schema: &Schema,
    layout: &Layout,
    cells: &[Cell<'_>],
    csv: CsvRow<'_>,
) -> std::result::Result<(), Rejection> {
    let width = layout.headers.len();
    // A swallowed row brings most of a row's delimiters; a multi-line address a few. In a
    // narrow report a line of notes can look like a row: not checked there.
    let enough = (width.saturating_sub(1) / 2).max(1);
    let d = csv.delimiter;
    if width < 5 || !csv.multiline || memchr::memchr_iter(d, csv.text).count() < enough {
        return Ok(());
    }
    let (id_col, state_col) = (layout.id_column(), layout.state_column());
    for (col, cell) in cells.iter().enumerate() {
        let Cell::Text(t) = cell else { continue };
        if memchr::memchr2(b'\n', b'\r', t.as_bytes()).is_none()
            || memchr::memchr_iter(d, t.as_bytes()).count() < enough
        {
            continue;
        }
        for line in t.split(['\n', '\r']).skip(1) {
            // All but one of a row's cells: at least width - 2 delimiters.
            if memchr::memchr_iter(d, line.as_bytes()).count() + 2 < width {
                continue;
            }
            let parts: Vec<&str> = line.split(char::from(d)).collect();
            let reads_as_row = parts.len() > id_col.max(state_col)
                && !parts[id_col].trim().is_empty()
                && schema
                    .state(parts[state_col].trim().trim_matches('"'))
                    .is_some();
            if reads_as_row {
                // Named by its ID and state only: the line's other values (names,
                // addresses) stay in the reject's raw row, out of summaries and logs.
                let id: String = parts[id_col].trim().chars().take(40).collect();
                let state = parts[state_col].trim().trim_matches('"');
                return Err((
                    layout.header(col),
                    format!(
                        "a line inside this cell reads as a row of its own (Activity ID \
                         {id:?}, state {state:?}): a quote left open takes the rows after \
                         it into one cell"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A CSV row must line up with the header: cut short (a truncated file), or with values
/// past the last column (a stray delimiter, or a quote left open), it is not guessed at.
fn check_width(
    layout: &Layout,
    cells: &[Cell<'_>],
    cut_end: bool,
    warnings: &mut Vec<(String, String)>,
) -> std::result::Result<(), Rejection> {
    let width = layout.headers.len();
    if let Some(col) = (cells.len()..width).find(|&c| !layout.headers[c].is_empty()) {
        // Excel and other writers leave out a row's trailing empty cells: those are read
        // as empty. A short last row with no line break after it was cut.
        if cut_end {
            return Err((
                layout.header(col),
                format!(
                    "the row has {} cells where the header has {width} and the file ends \
                     inside it: the file was cut short",
                    cells.len()
                ),
            ));
        }
        warnings.push((
            layout.header(col),
            format!(
                "the row has {} cells where the header has {width}: the missing ones are read as empty",
                cells.len()
            ),
        ));
    }
    if let Some(col) = (width..cells.len()).find(|&c| !cell_is_empty(&cells[c])) {
        return Err((
            format!("column {}", col + 1),
            format!(
                "the row has a value past the header's {width} columns: a stray delimiter, or a quote left open"
            ),
        ));
    }
    Ok(())
}

/// The row's Activity ID: never empty, never an unknown value.
fn activity_id<'c>(
    ctx: &DateContext,
    layout: &Layout,
    cell: Cell<'c>,
) -> std::result::Result<std::borrow::Cow<'c, str>, Rejection> {
    let col = layout.id_column();
    if let Some(what) = unreadable(&cell) {
        return Err((layout.header(col), format!("no activity_id: {what}")));
    }
    match normalize_cell(cell, FieldType::Text, ctx, true) {
        CellValue::Ok { text, .. } if text.is_empty() => {
            Err((layout.header(col), "empty activity_id".to_string()))
        }
        CellValue::Ok { text, .. } if text.len() > MAX_ID => Err((
            layout.header(col),
            format!(
                "an activity_id of {} bytes (at most {MAX_ID}): not an ID; is this the ID column?",
                text.len()
            ),
        )),
        CellValue::Ok { text, .. } => Ok(text),
        CellValue::Invalid(e) => Err((layout.header(col), e)),
    }
}

/// The row's state: one of the four, or `None` for a state that triggers nothing.
fn state(
    memo: &mut HashMap<String, Option<StateValue>>,
    schema: &Schema,
    layout: &Layout,
    cell: Cell<'_>,
) -> std::result::Result<Option<State>, Rejection> {
    let header = || layout.header(layout.state_column());
    match cell {
        Cell::Text(t) if !t.trim().is_empty() => {
            let value = match memo.get(t) {
                Some(v) => *v,
                None => {
                    let v = schema.state(t);
                    if memo.len() < 256 {
                        memo.insert(t.to_string(), v);
                    }
                    v
                }
            };
            match value {
                Some(StateValue::Trigger(s)) => Ok(Some(s)),
                Some(StateValue::Ignored) => Ok(None),
                None => Err((
                    header(),
                    format!(
                        "unknown state {:?}: add it to the schema's [states] if it is valid",
                        t.trim()
                    ),
                )),
            }
        }
        Cell::Empty | Cell::Text(_) => Err((header(), "empty state".to_string())),
        Cell::Error(_) | Cell::Uncomputed => {
            let what = unreadable(&cell).unwrap_or_default();
            Err((header(), format!("no state: {what}")))
        }
        other => Err((header(), format!("unknown state {:?}", header_text(&other)))),
    }
}

fn cell_is_empty(c: &Cell<'_>) -> bool {
    match c {
        Cell::Empty => true,
        Cell::Text(t) => t.chars().all(char::is_whitespace),
        _ => false,
    }
}

/// What a cell whose value cannot be known holds, for a message.
fn unreadable(c: &Cell<'_>) -> Option<String> {
    match c {
        Cell::Error(e) => Some(format!("the spreadsheet error value {e}")),
        Cell::Uncomputed => Some(UNCOMPUTED.to_string()),
        _ => None,
    }
}

fn is_footer(cells: &[Cell<'_>]) -> bool {
    let Some(Cell::Text(first)) = cells.iter().find(|c| !cell_is_empty(c)) else {
        return false;
    };
    // A BOM inside the file: another export appended to this one begins here (its title).
    if first.starts_with('\u{feff}') {
        return true;
    }
    let lower = first.trim().to_lowercase();
    FOOTER_PREFIXES.iter().any(|p| lower.starts_with(p))
}

fn is_repeated_header(cells: &[Cell<'_>], header: &[String]) -> bool {
    let mut matched = 0;
    for (i, c) in cells.iter().enumerate() {
        let Cell::Text(t) = c else {
            if cell_is_empty(c) {
                continue;
            }
            return false;
        };
        if t.trim().is_empty() {
            continue;
        }
        match header.get(i) {
            Some(h) if normalized_eq(h, t) => matched += 1,
            _ => return false,
        }
    }
    matched >= 2
}

/// `normalize_header(raw) == normalized`, without allocating.
fn normalized_eq(normalized: &str, raw: &str) -> bool {
    let mut want = normalized.chars();
    for c in raw
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
    {
        if want.next() != Some(c) {
            return false;
        }
    }
    want.next().is_none()
}

/// The row as one CSV line, for the rejects table and a person fixing the report: at most
/// [`MAX_RAW`] bytes of it, with a note of its whole length where it is cut (a reject is
/// looked at, not replayed; one bad report must not swell the ledger).
fn raw_row(cells: &[Cell<'_>]) -> String {
    let mut w = ::csv::WriterBuilder::new().from_writer(Vec::new());
    let fields: Vec<String> = cells.iter().map(header_text).collect();
    let _ = w.write_record(&fields);
    let bytes = w.into_inner().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_end();
    if text.len() <= MAX_RAW {
        return text.to_string();
    }
    let mut cut = MAX_RAW;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… [cut: {} bytes in all]", &text[..cut], text.len())
}

/// The most raw text a reject keeps.
const MAX_RAW: usize = 1024;
