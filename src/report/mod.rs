//! Reading a report: bytes + schema → rows → accepted Activities or row rejections.
//!
//! CSV and XLSX readers (`csv.rs`, `xlsx.rs`) only turn a file into rows of [`Cell`]s; this
//! module does everything else the same way for both: it finds the header row below any
//! preamble, maps columns to the schema's fields, skips blank, footer and repeated header
//! rows, and validates each row. A report missing a required column fails as a whole; a bad
//! row is rejected alone with its row number, column and reason.

pub(crate) mod csv;
pub(crate) mod schema;
pub(crate) mod xlsx;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::SyncSender;

use anyhow::{Context, Result, bail};

use crate::activity::{Cell, CellValue, DateContext, State, normalize_cell};
use crate::deferred::{Deferred, Settled};
use crate::ledger::attrs;
use crate::ledger::index::Indexed;
use crate::plan::{Hint, Triage, Verdict};
use schema::{FieldType, Schema, StateValue, normalize_header};

/// The file formats a report can come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Xlsx,
}

impl Format {
    /// Decides the format from the file's first bytes (a ZIP archive is XLSX) and its name.
    pub(crate) fn detect(path: &Path) -> Result<Format> {
        use std::io::Read;
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(path)?;
        let n = f.read(&mut magic)?;
        if n == 4 && magic == *b"PK\x03\x04" {
            return Ok(Format::Xlsx);
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

/// Why a row was skipped without being an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    Blank,
    Footer,
    RepeatedHeader,
    /// A state the schema lists as triggering nothing.
    IgnoredState,
}

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

/// Where the schema's fields sit in a report.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Column index of each schema field, in schema order.
    pub(crate) field_columns: Vec<Option<usize>>,
    /// Columns the schema does not name: (column index, header).
    pub(crate) extras: Vec<(usize, String)>,
    /// Header text of every column, for messages.
    pub(crate) headers: Vec<String>,
    /// Columns with an empty header (their values have no name to be kept under).
    unnamed: Vec<usize>,
    normalized: Vec<String>,
    id_field: usize,
    state_field: usize,
    updated_field: Option<usize>,
    itsm_field: Option<usize>,
}

impl Layout {
    /// The names of the values [`AcceptedRow::values`] yields: fields, then extras.
    pub(crate) fn extra_names(&self) -> Vec<String> {
        self.extras.iter().map(|(_, h)| h.clone()).collect()
    }
}

/// Receives what a report's rows turn into.
pub(crate) trait RowHandler {
    fn accepted(&mut self, row: &AcceptedRow<'_>) -> Result<()>;
    /// [`RowHandler::accepted`], for a row the caller gives up (a handler that keeps it
    /// need not copy it).
    fn accepted_owned(&mut self, row: OwnedRow) -> Result<()> {
        self.accepted(&row.view())
    }
    /// Accepted rows the [`Triage`] settled from the Activity index: so many unchanged,
    /// so many stale. They have nothing more to hand on.
    fn settled(&mut self, unchanged: u64, stale: u64) -> Result<()>;
    fn rejected(&mut self, reject: Reject) -> Result<()>;
    fn warning(&mut self, warning: RowWarning);
    fn skipped(&mut self, skip: Skip, row: u64);
    /// So many accepted rows were set aside, to be judged once the whole report is read
    /// (see [`crate::deferred`]).
    fn progress(&mut self, _rows: u64) -> Result<()> {
        Ok(())
    }
    /// Judges the rows set aside in the first pass (see [`crate::deferred`]); only the
    /// ledger side can.
    fn settle(&mut self, _deferred: Deferred) -> Result<Settled> {
        anyhow::bail!("this handler cannot settle deferred rows")
    }
    /// The size of the Activity index the ledger holds (what settling a piece may load).
    fn index_bytes(&mut self) -> Result<u64> {
        Ok(0)
    }
    /// A piece of the report read in its first pass, to be settled and read again.
    fn piece(&mut self, _piece: Piece) -> Result<()> {
        anyhow::bail!("this handler takes no pieces of a report")
    }
    /// The last row was handed over.
    fn end(&mut self) -> Result<()> {
        Ok(())
    }
    /// No rows are ready yet: a moment for buffered work, which otherwise waits for a full
    /// buffer or for the end of the report, after the parsing.
    fn idle(&mut self) -> Result<()> {
        Ok(())
    }
}

/// An accepted row: its key fields, and its values normalised and encoded for the ledger
/// (none for a [`Hint::Touch`]).
pub(crate) struct AcceptedRow<'a> {
    pub(crate) id: &'a str,
    pub(crate) state: State,
    pub(crate) updated_at: Option<i64>,
    pub(crate) row: u64,
    values: &'a [u8],
    /// Where the ITSM number's bytes sit in `values`.
    itsm: std::ops::Range<usize>,
    pub(crate) hint: Hint,
}

impl<'a> AcceptedRow<'a> {
    pub(crate) fn new(
        id: &'a str,
        state: State,
        updated_at: Option<i64>,
        row: u64,
        values: &'a [u8],
        itsm: std::ops::Range<usize>,
        hint: Hint,
    ) -> Self {
        AcceptedRow {
            id,
            state,
            updated_at,
            row,
            values,
            itsm,
            hint,
        }
    }

    /// The values in the ledger's attribute encoding.
    pub(crate) fn values(&self) -> &'a [u8] {
        self.values
    }

    pub(crate) fn itsm_range(&self) -> std::ops::Range<usize> {
        self.itsm.clone()
    }
}

impl AcceptedRow<'_> {
    /// Appends the row's values (every schema field, empty when the report lacks the
    /// column, then every extra column) in the ledger's attribute encoding to `out`.
    /// Returns the row's ITSM number.
    pub(crate) fn encode_values(&self, out: &mut Vec<u8>) -> String {
        out.extend_from_slice(self.values);
        let itsm = self.values.get(self.itsm.clone()).unwrap_or_default();
        String::from_utf8_lossy(itsm).into_owned()
    }
}

/// An accepted row copied out of the parser's buffers, to hand to another thread or keep
/// for later: one allocation, holding the values kept, then the Activity ID.
pub(crate) struct OwnedRow {
    buf: Vec<u8>,
    values_len: usize,
    /// Where the ITSM number's bytes sit in the values kept.
    itsm: std::ops::Range<usize>,
    state: State,
    updated_at: Option<i64>,
    row: u64,
    hint: Hint,
}

impl OwnedRow {
    /// A copy of `row` keeping all its values.
    pub(crate) fn of(row: &AcceptedRow<'_>) -> OwnedRow {
        OwnedRow::keeping(row, row.values, row.itsm.clone())
    }

    /// A copy of `row` keeping only `values` (`itsm`: where its ITSM number sits in them).
    pub(crate) fn keeping(
        row: &AcceptedRow<'_>,
        values: &[u8],
        itsm: std::ops::Range<usize>,
    ) -> OwnedRow {
        let mut buf = Vec::with_capacity(values.len() + row.id.len());
        buf.extend_from_slice(values);
        buf.extend_from_slice(row.id.as_bytes());
        OwnedRow {
            buf,
            values_len: values.len(),
            itsm,
            state: row.state,
            updated_at: row.updated_at,
            row: row.row,
            hint: row.hint,
        }
    }

    /// The Activity ID's bytes (valid UTF-8: it was a `str`).
    pub(crate) fn id_bytes(&self) -> &[u8] {
        &self.buf[self.values_len..]
    }

    pub(crate) fn id(&self) -> &str {
        std::str::from_utf8(&self.buf[self.values_len..]).unwrap_or_default()
    }

    pub(crate) fn view(&self) -> AcceptedRow<'_> {
        AcceptedRow::new(
            self.id(),
            self.state,
            self.updated_at,
            self.row,
            &self.buf[..self.values_len],
            self.itsm.clone(),
            self.hint,
        )
    }
}

/// What a row that passed its checks turns into.
enum Checked<'c> {
    /// The ledger side must see it: its values encoded for the ledger (none for a touch).
    Forward(Forwarded<'c>),
    /// The Activity index settled it: unchanged or stale.
    Settled(Verdict),
    /// Set aside, to be judged once the whole report is read.
    Deferred {
        id: Cow<'c, str>,
        state: State,
        at: i64,
    },
    /// A state the schema lists as triggering nothing.
    Ignored,
}

/// A row the ledger side must see.
struct Forwarded<'c> {
    id: Cow<'c, str>,
    state: State,
    updated_at: Option<i64>,
    values: Vec<u8>,
    /// Where the ITSM number's bytes sit in `values`.
    itsm: std::ops::Range<usize>,
    hint: Hint,
}

impl Forwarded<'_> {
    /// The row as handed on, `number` being its row in the report.
    fn row(&self, number: u64) -> AcceptedRow<'_> {
        AcceptedRow::new(
            &self.id,
            self.state,
            self.updated_at,
            number,
            &self.values,
            self.itsm.clone(),
            self.hint,
        )
    }
}

/// Counts of the rows a report held, by what became of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RowCounts {
    pub(crate) rows: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
    pub(crate) skipped: u64,
    pub(crate) warnings: u64,
}

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

/// Turns rows of cells into accepted rows and rejections (the part shared by all formats).
/// How a [`RowProcessor`] judges its accepted rows against the ledger.
pub(crate) enum Judge<'h> {
    /// The Activity index in memory: each row as it comes (one pass).
    Index(&'h mut Triage),
    /// The first of two passes: rows are set aside and judged later (see
    /// [`crate::deferred`]).
    Defer(&'h mut Deferred),
    /// The second pass: the row's hint is known.
    Given(Hint),
}

pub(crate) struct RowProcessor<'h, H: RowHandler> {
    schema: &'h Schema,
    ctx: DateContext,
    judge: Judge<'h>,
    handler: &'h mut H,
    layout: Option<Layout>,
    /// The row with the most field matches seen while looking for the header.
    best_candidate: Option<(usize, Vec<String>)>,
    rows_before_header: usize,
    state_memo: HashMap<String, Option<StateValue>>,
    pub(crate) counts: RowCounts,
    /// Rows must line up with the header (CSV; a sheet's rows end at their last value).
    width_checked: bool,
    /// The CSV delimiter, once known: a cell's inner lines are checked for swallowed rows.
    delimiter: Option<u8>,
    /// Of the row about to be checked (see [`RowProcessor::csv_row`]): the delimiters its
    /// cells hold when it spans more than one line, else 0.
    delimiters_inside: usize,
    /// The row about to be checked is the file's last and no line break follows it: a short
    /// one was cut, not written short.
    at_cut_end: bool,
}

impl<'h, H: RowHandler> RowProcessor<'h, H> {
    pub(crate) fn new(
        schema: &'h Schema,
        ctx: DateContext,
        judge: Judge<'h>,
        handler: &'h mut H,
    ) -> Self {
        RowProcessor {
            schema,
            ctx,
            judge,
            handler,
            layout: None,
            best_candidate: None,
            rows_before_header: 0,
            state_memo: HashMap::new(),
            counts: RowCounts::default(),
            width_checked: false,
            delimiter: None,
            delimiters_inside: 0,
            at_cut_end: false,
        }
    }

    /// Called by a reader at the end of the file: fails when no header was found.
    pub(crate) fn finish(self) -> Result<(Layout, RowCounts)> {
        match self.layout {
            Some(layout) => Ok((layout, self.counts)),
            None => Err(self.missing_columns_error()),
        }
    }

    fn missing_columns_error(&self) -> anyhow::Error {
        let required: Vec<&str> = self
            .schema
            .fields
            .iter()
            .filter(|f| f.required)
            .map(|f| f.name.as_str())
            .collect();
        match &self.best_candidate {
            None => anyhow::anyhow!(
                "the report holds no rows at all (empty file?); expected a header with the \
                 columns {}",
                required.join(", ")
            ),
            // Not one cell names a column of the schema: the best candidate is a data row
            // (a report without its header), and its values stay out of the message.
            Some((0, _)) => anyhow::anyhow!(
                "no header row found: no row names a column of the schema; expected a header \
                 with {}. If the report's columns have other names, add them as aliases in the \
                 report schema",
                self.schema
                    .fields
                    .iter()
                    .filter(|f| f.required)
                    .map(|f| format!("{:?} ({})", f.example, f.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some((_, headers)) => {
                let normalized: Vec<String> = headers.iter().map(|h| normalize_header(h)).collect();
                let missing: Vec<String> = self
                    .schema
                    .fields
                    .iter()
                    .filter(|f| f.required && !f.aliases.iter().any(|a| normalized.contains(a)))
                    .map(|f| format!("{} (e.g. {:?})", f.name, f.example))
                    .collect();
                let shown: Vec<&str> = headers
                    .iter()
                    .map(String::as_str)
                    .filter(|h| !h.trim().is_empty())
                    .collect();
                anyhow::anyhow!(
                    "missing required column(s): {}; headers found: [{}]. Add the columns to the \
                     report or their names as aliases in the report schema",
                    missing.join(", "),
                    shown.join(", ")
                )
            }
        }
    }

    /// Blank lines the reader skipped itself (CSV): counted as skipped rows below the header.
    pub(crate) fn blank_lines(&mut self, n: u64) {
        if self.layout.is_some() {
            self.counts.rows += n;
            self.counts.skipped += n;
        }
    }

    /// The column of the Activity ID, once the header is found.
    pub(crate) fn id_column(&self) -> Option<usize> {
        let layout = self.layout.as_ref()?;
        layout.field_columns[layout.id_field]
    }

    /// Starts loading the index entry of the Activity whose raw ID cell is `raw`, for a
    /// row that comes soon (see [`crate::plan::Triage::prefetch`]).
    pub(crate) fn prefetch(&self, raw: &str) {
        if let Judge::Index(triage) = &self.judge {
            triage.prefetch(crate::activity::trim_cell(raw));
        }
    }

    /// Whether rows are judged as they come (and [`RowProcessor::prefetch`] helps).
    pub(crate) fn looks_up(&self) -> bool {
        matches!(self.judge, Judge::Index(_))
    }

    /// Where the record of the row checked next lies in the file (see
    /// [`crate::deferred::Deferred::locate`]).
    /// A report read in two pieces hands the first on once the second begins (see
    /// [`crate::deferred::Deferred::cut`]).
    pub(crate) fn locate(&mut self, start: u64, len: u64) -> Result<()> {
        if let Judge::Defer(d) = &mut self.judge {
            d.locate(start, len);
            if let Some(layout) = self.layout.as_ref()
                && let Some(piece) = d.cut()?
            {
                let delimiter = self.delimiter.unwrap_or(b',');
                self.handler.piece(Piece {
                    deferred: piece,
                    delimiter,
                    layout: layout.clone(),
                    last: false,
                })?;
            }
        }
        Ok(())
    }

    /// The delimiter given by [`RowProcessor::set_delimiter`].
    pub(crate) fn delimiter(&self) -> Option<u8> {
        self.delimiter
    }

    /// A processor for the second pass over a report whose header is known: rows fed to
    /// [`RowProcessor::row_again`] are handed on with their hints, their warnings not
    /// said again.
    pub(crate) fn again(
        schema: &'h Schema,
        ctx: DateContext,
        layout: Layout,
        handler: &'h mut H,
    ) -> Self {
        let mut p = RowProcessor::new(schema, ctx, Judge::Given(Hint::Ask), handler);
        p.layout = Some(layout);
        p
    }

    /// The second pass: hands on a row the first accepted, with its hint. False when the
    /// row no longer checks out as it did, or names an Activity other than `key`'s (the
    /// file changed in between).
    pub(crate) fn row_again(
        &mut self,
        number: u64,
        cells: &[Cell<'_>],
        hint: Hint,
        key: u64,
    ) -> Result<bool> {
        self.judge = Judge::Given(hint);
        self.at_cut_end = false;
        self.delimiters_inside = 0;
        match self.check_row(number, cells) {
            Ok(Checked::Forward(f)) if crate::ledger::index::key_check(&f.id).0 == key => {
                self.handler.accepted(&f.row(number))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Checks CSV rows against the header: in a CSV file every row has the header's cells. A
    /// value past them (a stray delimiter) rejects the row; fewer cells are read as empty
    /// (Excel leaves out trailing empty cells) unless the file was cut inside the row.
    pub(crate) fn with_width_checked(mut self) -> Self {
        self.width_checked = true;
        self
    }

    /// The CSV delimiter: a multi-line cell with a line that reads as a row of its own is a
    /// quote left open, and its row is rejected instead of swallowing the rows after it.
    pub(crate) fn set_delimiter(&mut self, delimiter: u8) {
        self.delimiter = Some(delimiter);
    }

    /// What the CSV reader knows of the row it hands over next: its text (the cells one
    /// after another), whether it spans more than one line, and whether it is the file's
    /// last with no line break after it.
    pub(crate) fn csv_row(&mut self, text: &[u8], multiline: bool, cut_end: bool) {
        self.at_cut_end = cut_end;
        self.delimiters_inside = match self.delimiter {
            Some(d) if multiline => memchr::memchr_iter(d, text).count(),
            _ => 0,
        };
    }

    /// Feeds one row. `number` is the row as a person sees it (spreadsheet row, CSV line).
    pub(crate) fn row(&mut self, number: u64, cells: &[Cell<'_>]) -> Result<()> {
        if self.layout.is_none() {
            return self.look_for_header(number, cells);
        }
        self.counts.rows += 1;
        let layout = self.layout.as_ref().expect("layout checked above");
        // Only "none", "one or two" and "more" matter.
        let nonempty = cells.iter().filter(|c| !cell_is_empty(c)).take(3).count();
        if nonempty == 0 {
            self.counts.skipped += 1;
            self.handler.skipped(Skip::Blank, number);
            return Ok(());
        }
        if nonempty <= 2 && is_footer(cells) {
            self.counts.skipped += 1;
            self.handler.skipped(Skip::Footer, number);
            return Ok(());
        }
        if is_repeated_header(cells, &layout.normalized) {
            self.counts.skipped += 1;
            self.handler.skipped(Skip::RepeatedHeader, number);
            return Ok(());
        }
        match self.check_row(number, cells) {
            Ok(Checked::Forward(f)) => {
                self.counts.accepted += 1;
                self.handler.accepted(&f.row(number))
            }
            Ok(Checked::Settled(v)) => {
                self.counts.accepted += 1;
                let stale = u64::from(v == Verdict::Stale);
                self.handler.settled(1 - stale, stale)
            }
            Ok(Checked::Deferred { id, state, at }) => {
                self.counts.accepted += 1;
                if let Judge::Defer(d) = &mut self.judge {
                    d.push(&id, state, at, number)?;
                }
                self.handler.progress(1)
            }
            Ok(Checked::Ignored) => {
                self.counts.skipped += 1;
                self.handler.skipped(Skip::IgnoredState, number);
                Ok(())
            }
            Err((column, reason)) => {
                self.counts.rejected += 1;
                let raw = raw_row(cells);
                self.handler.rejected(Reject {
                    row: number,
                    column,
                    reason,
                    raw,
                })
            }
        }
    }

    /// Validates a data row, asks the triage what it needs, and encodes its values only
    /// when the ledger side will use them.
    #[allow(clippy::type_complexity)]
    fn check_row<'c>(
        &mut self,
        number: u64,
        cells: &'c [Cell<'c>],
    ) -> std::result::Result<Checked<'c>, (String, String)> {
        let layout = self.layout.as_ref().expect("called after the header");
        let header = |col: usize| layout.headers.get(col).cloned().unwrap_or_default();
        let get = |col: usize| cells.get(col).copied().unwrap_or(Cell::Empty);

        let id_col = layout.field_columns[layout.id_field].expect("required column");
        let state_col = layout.field_columns[layout.state_field].expect("required column");
        // A swallowed row brings most of a row's delimiters; a multi-line address a few. In a
        // narrow report a line of notes can look like a row: not checked there.
        let width = layout.headers.len();
        let enough = (width.saturating_sub(1) / 2).max(1);
        if width >= 5
            && self.delimiters_inside >= enough
            && let Some(d) = self.delimiter
        {
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
                        && self
                            .schema
                            .state(parts[state_col].trim().trim_matches('"'))
                            .is_some();
                    if reads_as_row {
                        // Named by its ID and state only: the line's other values (names,
                        // addresses) stay in the reject's raw row, out of summaries and logs.
                        let id: String = parts[id_col].trim().chars().take(40).collect();
                        let state = parts[state_col].trim().trim_matches('"');
                        return Err((
                            header(col),
                            format!(
                                "a line inside this cell reads as a row of its own (Activity ID \
                                 {id:?}, state {state:?}): a quote left open takes the rows after \
                                 it into one cell"
                            ),
                        ));
                    }
                }
            }
        }
        // A row that does not line up with the header is not guessed at: cut short (a
        // truncated file), or with values past the last column (a stray delimiter, or a
        // quote left open that took the following lines into one cell).
        let mut short_note = None;
        if self.width_checked {
            if let Some(col) = (cells.len()..width).find(|&c| !layout.headers[c].is_empty()) {
                // Excel and other writers leave out a row's trailing empty cells: those are
                // read as empty. A short last row with no line break after it was cut.
                if self.at_cut_end {
                    return Err((
                        header(col),
                        format!(
                            "the row has {} cells where the header has {width} and the file ends \
                             inside it: the file was cut short",
                            cells.len()
                        ),
                    ));
                }
                short_note = Some((
                    header(col),
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
        }

        if let Some(what) = unreadable(&get(id_col)) {
            return Err((header(id_col), format!("no activity_id: {what}")));
        }
        let id = match normalize_cell(get(id_col), FieldType::Text, &self.ctx, true) {
            CellValue::Ok { text, .. } => text,
            CellValue::Invalid(e) => return Err((header(id_col), e)),
        };
        if id.is_empty() {
            return Err((header(id_col), "empty activity_id".to_string()));
        }
        let state = match get(state_col) {
            Cell::Text(t) if !t.trim().is_empty() => {
                match state_of(&mut self.state_memo, self.schema, t) {
                    Some(StateValue::Trigger(s)) => Some(s),
                    Some(StateValue::Ignored) => None,
                    None => {
                        return Err((
                            header(state_col),
                            format!(
                                "unknown state {:?}: add it to the schema's [states] if it is valid",
                                t.trim()
                            ),
                        ));
                    }
                }
            }
            Cell::Empty | Cell::Text(_) => {
                return Err((header(state_col), "empty state".to_string()));
            }
            other @ (Cell::Error(_) | Cell::Uncomputed) => {
                let what = unreadable(&other).unwrap_or_default();
                return Err((header(state_col), format!("no state: {what}")));
            }
            other => {
                let value = header_text(&other);
                return Err((header(state_col), format!("unknown state {value:?}")));
            }
        };
        let mut warnings: Vec<(String, String)> = short_note.into_iter().collect();
        // The row's time first: the triage needs it. Its error or warning is reported in
        // its column's place below, so that the first bad column in schema order is named.
        let updated = layout
            .updated_field
            .and_then(|f| layout.field_columns[f].map(|c| (f, c)));
        let mut updated_at = None;
        let mut updated_note: Option<std::result::Result<String, String>> = None;
        if let Some((f, col)) = updated {
            match normalize_cell(get(col), self.schema.fields[f].kind, &self.ctx, false) {
                CellValue::Ok {
                    temporal, warning, ..
                } => {
                    updated_at = temporal.map(|t| t.timestamp(&self.ctx));
                    updated_note = warning.map(Ok);
                }
                CellValue::Invalid(reason) => updated_note = Some(Err(reason)),
            }
        }
        let updated_ok = !matches!(updated_note, Some(Err(_)));
        // The verdict: None for a row set aside (judged after the whole report is read).
        let triaged = state.filter(|_| updated_ok).map(|s| match &self.judge {
            Judge::Index(triage) => {
                let at = triage.at(updated_at);
                let (verdict, found) = triage.verdict(&id, s, at);
                (s, at, Some(verdict), found)
            }
            Judge::Defer(d) => (s, d.at(updated_at), None, Indexed::Absent),
            Judge::Given(h) => (s, 0, Some(Verdict::Forward(*h)), Indexed::Absent),
        });
        // Values are encoded only for rows the ledger side stores; every row is checked.
        let encode = matches!(
            triaged,
            Some((_, _, Some(Verdict::Forward(h)), _)) if h != Hint::Touch
        );
        let mut values = Vec::with_capacity(if encode { 512 } else { 0 });
        let mut itsm = 0..0;
        let state_text = state.map_or("", State::as_str);
        for (i, col) in layout.field_columns.iter().enumerate() {
            let Some(col) = *col else {
                if encode {
                    attrs::push(&mut values, "");
                }
                continue;
            };
            if i == layout.id_field {
                if encode {
                    attrs::push(&mut values, &id);
                }
                continue;
            }
            if i == layout.state_field {
                if encode {
                    attrs::push(&mut values, state_text);
                }
                continue;
            }
            let is_updated = Some(i) == layout.updated_field;
            if is_updated {
                match updated_note.take() {
                    Some(Err(reason)) => return Err((header(col), reason)),
                    Some(Ok(w)) => warnings.push((header(col), w)),
                    None => {}
                }
                if !encode {
                    continue; // checked above
                }
            }
            let kind = self.schema.fields[i].kind;
            match normalize_cell(get(col), kind, &self.ctx, encode) {
                CellValue::Ok { text, warning, .. } => {
                    if let Some(w) = warning
                        && !is_updated
                    {
                        warnings.push((header(col), w));
                    }
                    if encode {
                        let at = attrs::push(&mut values, &text);
                        if Some(i) == layout.itsm_field {
                            itsm = at;
                        }
                    }
                }
                CellValue::Invalid(reason) => return Err((header(col), reason)),
            }
        }
        for (col, _) in &layout.extras {
            let cell = get(*col);
            let unknown = matches!(cell, Cell::Error(_) | Cell::Uncomputed);
            if !encode && !unknown {
                continue; // an extra column only warns about a value it cannot know
            }
            match normalize_cell(cell, FieldType::Text, &self.ctx, true) {
                CellValue::Ok { text, warning, .. } => {
                    if let (Some(w), true) = (warning, unknown) {
                        warnings.push((header(*col), w));
                    }
                    if encode {
                        attrs::push(&mut values, &text);
                    }
                }
                CellValue::Invalid(_) => {
                    if encode {
                        attrs::push(&mut values, "");
                    }
                }
            }
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
        let Some((state, at, verdict, found)) = triaged else {
            return Ok(Checked::Ignored);
        };
        // The second pass: said in the first.
        if !matches!(self.judge, Judge::Given(_)) {
            for (column, message) in warnings {
                self.counts.warnings += 1;
                self.handler.warning(RowWarning {
                    row: number,
                    column,
                    message,
                });
            }
        }
        let verdict = match (&mut self.judge, verdict) {
            (Judge::Index(triage), Some(verdict)) => {
                triage.record(&id, state, at, verdict, found);
                verdict
            }
            (_, Some(verdict)) => verdict,
            (_, None) => return Ok(Checked::Deferred { id, state, at }),
        };
        Ok(match verdict {
            Verdict::Forward(hint) => Checked::Forward(Forwarded {
                id,
                state,
                updated_at,
                values,
                itsm,
                hint,
            }),
            settled => Checked::Settled(settled),
        })
    }

    fn look_for_header(&mut self, _number: u64, cells: &[Cell<'_>]) -> Result<()> {
        self.rows_before_header += 1;
        let headers: Vec<String> = cells.iter().map(header_text).collect();
        let normalized: Vec<String> = headers.iter().map(|h| normalize_header(h)).collect();
        let mut field_columns = vec![None; self.schema.fields.len()];
        let mut extras = Vec::new();
        let mut matched = 0;
        // Two columns naming one field: the one matching the earlier alias in the schema's
        // list holds it (the schema says which it prefers) and the other is kept as an extra;
        // the same header twice: (field, first, second), the report fails.
        let mut rank = vec![usize::MAX; self.schema.fields.len()];
        let mut ambiguous = Vec::new();
        let mut outranked = Vec::new();
        for (col, norm) in normalized.iter().enumerate() {
            match self.schema.alias_for_header(norm) {
                Some((f, r)) if field_columns[f].is_none() => {
                    field_columns[f] = Some(col);
                    rank[f] = r;
                    matched += 1;
                }
                Some((f, r)) if r == rank[f] => {
                    ambiguous.push((f, field_columns[f].unwrap_or(col), col));
                }
                Some((f, r)) => {
                    let kept = if r < rank[f] {
                        let prev = field_columns[f].replace(col).unwrap_or(col);
                        rank[f] = r;
                        prev
                    } else {
                        col
                    };
                    outranked.push((f, kept));
                }
                None => {
                    if !norm.is_empty() || !headers[col].trim().is_empty() {
                        extras.push((col, headers[col].trim().to_string()));
                    }
                }
            }
        }
        let has_required = self
            .schema
            .fields
            .iter()
            .zip(&field_columns)
            .all(|(f, c)| !f.required || c.is_some());
        if has_required && let Some(&(f, first, second)) = ambiguous.first() {
            anyhow::bail!(
                "the columns {:?} (column {}) and {:?} (column {}) both name the field {}: \
                 which one holds it is not guessed; rename one of them",
                headers[first].trim(),
                first + 1,
                headers[second].trim(),
                second + 1,
                self.schema.fields[f].name,
            );
        }
        if has_required {
            // The outranked columns are kept as extras, under their own header.
            for &(f, col) in &outranked {
                tracing::warn!(
                    column = %headers[col].trim(),
                    field = %self.schema.fields[f].name,
                    "another column matches an earlier alias of this field: this one is kept as an extra"
                );
                extras.push((col, headers[col].trim().to_string()));
            }
            extras.sort_by_key(|(c, _)| *c);
            // Name extras uniquely: a duplicate header gets " (2)", an empty one "column N".
            let mut seen: Vec<String> = self.schema.fields.iter().map(|f| f.name.clone()).collect();
            for (col, name) in &mut extras {
                if name.is_empty() {
                    *name = format!("column {}", *col + 1);
                }
                let base = name.clone();
                let mut n = 2;
                while seen.contains(name) {
                    *name = format!("{base} ({n})");
                    n += 1;
                }
                seen.push(name.clone());
            }
            let unnamed = (0..headers.len())
                .filter(|&c| {
                    headers[c].trim().is_empty()
                        && normalized[c].is_empty()
                        && !field_columns.contains(&Some(c))
                })
                .collect();
            let pos = |n: &str| self.schema.field_index(n);
            self.layout = Some(Layout {
                id_field: pos(schema::ACTIVITY_ID).expect("schema checked"),
                state_field: pos(schema::STATE).expect("schema checked"),
                updated_field: pos(schema::UPDATED_AT),
                itsm_field: pos(schema::ITSM_NUMBER),
                field_columns,
                extras,
                unnamed,
                headers: headers.iter().map(|h| h.trim().to_string()).collect(),
                normalized,
            });
            return Ok(());
        }
        let nonempty = headers.iter().any(|h| !h.trim().is_empty());
        if nonempty
            && self
                .best_candidate
                .as_ref()
                .is_none_or(|(m, _)| matched > *m)
        {
            self.best_candidate = Some((matched, headers));
        }
        if self.rows_before_header >= self.schema.header_search_rows {
            return Err(self.missing_columns_error().context(format!(
                "no header row in the first {} rows",
                self.schema.header_search_rows
            )));
        }
        Ok(())
    }
}

/// The state a cell names; remembers the few distinct spellings a report uses.
fn state_of(
    memo: &mut HashMap<String, Option<StateValue>>,
    schema: &Schema,
    text: &str,
) -> Option<StateValue> {
    if let Some(v) = memo.get(text) {
        return *v;
    }
    let v = schema.state(text);
    if memo.len() < 256 {
        memo.insert(text.to_string(), v);
    }
    v
}

fn cell_is_empty(c: &Cell<'_>) -> bool {
    match c {
        Cell::Empty => true,
        Cell::Text(t) => t.chars().all(char::is_whitespace),
        _ => false,
    }
}

fn header_text(c: &Cell<'_>) -> String {
    match c {
        Cell::Text(t) => t.to_string(),
        Cell::Empty => String::new(),
        Cell::Number(f) | Cell::DateSerial(f) => format!("{f}"),
        Cell::Bool(b) => b.to_string(),
        Cell::Error(e) => e.to_string(),
        Cell::Uncomputed => String::new(),
    }
}

/// What a cell whose value cannot be known holds, for a reject's reason.
fn unreadable(c: &Cell<'_>) -> Option<String> {
    match c {
        Cell::Error(e) => Some(format!("the spreadsheet error value {e}")),
        Cell::Uncomputed => Some(crate::activity::UNCOMPUTED.to_string()),
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

/// The row as one CSV line, for the rejects table and a person fixing the report.
fn raw_row(cells: &[Cell<'_>]) -> String {
    let mut w = ::csv::WriterBuilder::new().from_writer(Vec::new());
    let fields: Vec<String> = cells.iter().map(header_text).collect();
    let _ = w.write_record(&fields);
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).trim_end().to_string()
}

/// What the parsing thread hands to the ledger side, in row order.
enum Msg {
    /// An accepted row with its values already encoded for the ledger (the parsing thread
    /// does that work, so the ledger side only decides and writes).
    Accepted(OwnedRow),
    /// Rows the triage settled since the last batch.
    Settled {
        unchanged: u64,
        stale: u64,
    },
    /// Rows set aside since the last batch.
    Progress(u64),
    /// A piece of the report read in its first pass.
    Piece(Box<Piece>),
    /// The first pass failed: no more pieces come.
    NoMorePieces,
    Rejected(Reject),
    Warning(RowWarning),
    Skipped(Skip, u64),
}

/// Messages a batch holds before it is sent (settled rows are counts, not messages).
const BATCH: usize = 2048;
/// Rows settled by the triage that a batch may stand for (they cost the batch nothing):
/// the channel then holds enough rows for the parser to go on while the ledger side
/// writes a batch of changes.
const SETTLED_BATCH: u64 = 32_768;

/// The parsing thread's handler: batches what the rows became and sends it on.
struct Sender {
    tx: SyncSender<Vec<Msg>>,
    batch: Vec<Msg>,
    unchanged: u64,
    stale: u64,
    progress: u64,
}

impl Sender {
    fn new(tx: SyncSender<Vec<Msg>>) -> Sender {
        Sender {
            tx,
            batch: Vec::with_capacity(BATCH + 1),
            unchanged: 0,
            stale: 0,
            progress: 0,
        }
    }

    fn push(&mut self, m: Msg) -> Result<()> {
        self.batch.push(m);
        self.flush_when_full()
    }

    fn flush_when_full(&mut self) -> Result<()> {
        if self.batch.len() >= BATCH || self.unchanged + self.stale + self.progress >= SETTLED_BATCH
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.unchanged + self.stale > 0 {
            self.batch.push(Msg::Settled {
                unchanged: std::mem::take(&mut self.unchanged),
                stale: std::mem::take(&mut self.stale),
            });
        }
        if self.progress > 0 {
            self.batch
                .push(Msg::Progress(std::mem::take(&mut self.progress)));
        }
        if !self.batch.is_empty() {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH + 1));
            self.tx
                .send(batch)
                .map_err(|_| anyhow::Error::new(Stopped))?;
        }
        Ok(())
    }
}

/// The ledger side stopped taking rows (it failed or gave up on the report).
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped")
    }
}

impl std::error::Error for Stopped {}

impl RowHandler for Sender {
    fn accepted(&mut self, row: &AcceptedRow<'_>) -> Result<()> {
        self.push(Msg::Accepted(OwnedRow::of(row)))
    }

    fn settled(&mut self, unchanged: u64, stale: u64) -> Result<()> {
        self.unchanged += unchanged;
        self.stale += stale;
        self.flush_when_full()
    }

    fn progress(&mut self, rows: u64) -> Result<()> {
        self.progress += rows;
        self.flush_when_full()
    }

    fn piece(&mut self, piece: Piece) -> Result<()> {
        self.push(Msg::Piece(Box::new(piece)))?;
        self.flush()
    }

    fn rejected(&mut self, reject: Reject) -> Result<()> {
        self.push(Msg::Rejected(reject))
    }

    fn warning(&mut self, warning: RowWarning) {
        // A failed send means the ledger side stopped; the next row's send reports it.
        let _ = self.push(Msg::Warning(warning));
    }

    fn skipped(&mut self, skip: Skip, row: u64) {
        let _ = self.push(Msg::Skipped(skip, row));
    }
}

/// A piece of a CSV report read in its first pass: its rows set aside, and what reading
/// them again needs. A report is read in pieces, so that the next is read while the ledger
/// side works through one (see [`read_twice`]).
pub(crate) struct Piece {
    deferred: Deferred,
    delimiter: u8,
    layout: Layout,
    /// The report's last piece.
    last: bool,
}

/// How a report's rows are judged against the ledger (see [`Judge`]).
pub(crate) enum Judging {
    /// In one pass, with the whole Activity index in memory (XLSX).
    Index(Triage),
    /// In two passes, with one part of the index in memory at a time (CSV; see
    /// [`crate::deferred`]).
    Defer(Deferred),
}

/// Reads a whole report into `handler`; returns the layout, the row counts and, for a
/// one-pass read, the triage (whose index now includes the report's rows).
///
/// A second thread parses and checks the rows (a CSV file is split into records by a third)
/// and encodes the values of the rows the ledger side needs, while this one hands those to
/// `handler`, the ledger side, in row order. With [`Judging::Defer`], the rows are judged
/// between two passes over the file (see [`crate::deferred`]); the handler sees the same
/// rows in the same order either way. A CSV file that turns out not to be UTF-8 fails with
/// [`csv::NotUtf8`] when `utf8` is set: the caller reads it again as Windows-1252.
pub(crate) fn read<H: RowHandler>(
    path: &Path,
    schema: &Schema,
    ctx: DateContext,
    judging: Judging,
    handler: &mut H,
    notes: &mut Vec<String>,
    utf8: bool,
) -> Result<(Layout, RowCounts, Option<Triage>)> {
    let format = Format::detect(path)?;
    let (layout, counts, triage, more_notes) = match (format, judging) {
        (Format::Csv, Judging::Defer(d)) => {
            let (layout, counts, more_notes) = read_twice(path, schema, ctx, d, handler, utf8)?;
            (layout, counts, None, more_notes)
        }
        (format, Judging::Index(mut t)) => {
            let ((layout, counts), more_notes, t) = pass(handler, move |sender| {
                let mut notes = Vec::new();
                let read = match format {
                    Format::Csv => {
                        let file = std::fs::File::open(path)
                            .with_context(|| format!("cannot open {}", path.display()))?;
                        let (l, c, _) = csv::read(
                            file,
                            schema,
                            ctx,
                            Judge::Index(&mut t),
                            sender,
                            &mut notes,
                            utf8,
                        )?;
                        (l, c)
                    }
                    Format::Xlsx => xlsx::read(path, schema, ctx, &mut t, sender, &mut notes)?,
                };
                Ok((read, notes, t))
            })?;
            (layout, counts, Some(t), more_notes)
        }
        (Format::Xlsx, Judging::Defer(_)) => bail!("an XLSX report is read in one pass"),
    };
    notes.extend(more_notes);
    handler.end()?;
    Ok((layout, counts, triage))
}

/// Pieces a CSV report is read in (fewer for a small file: none under [`MIN_PIECE`] bytes).
/// More pieces overlap more of the two passes; each costs a settling of the Activity index
/// parts its rows fall in (at 1M rows, 8 pieces measured ~10 % faster than 1, 2 ~7 %).
const PIECES: u64 = 8;
const MIN_PIECE: u64 = 64 * 1024;

/// The bytes of a piece of a file of `size` bytes, against an Activity index of
/// `index_bytes`: a piece's rows touch most parts of the index, each loaded and saved once a
/// piece, so past a few MB of index a piece is never smaller than half of it (a small report
/// against a large ledger is read in one or two pieces).
fn piece_bytes(size: u64, index_bytes: u64) -> u64 {
    let piece = size.div_ceil(PIECES).max(MIN_PIECE);
    if index_bytes >= 8 << 20 {
        piece.max(index_bytes / 2)
    } else {
        piece
    }
}

/// Reads a CSV report in two passes (see [`crate::deferred`]), in pieces of the file: a
/// thread reads the file, checks its rows and sets them aside; this one settles each piece
/// against the Activity index and hands it to a third thread, which reads its rows again
/// for the ledger side, `handler`, while the first thread reads on. So the ledger side's
/// work on one piece overlaps the first pass over the next. Pieces are settled in order,
/// each against the index as the pieces before it left it, and their rows reach the ledger
/// side in order: the outcome is the same as in one piece.
fn read_twice<H: RowHandler>(
    path: &Path,
    schema: &Schema,
    ctx: DateContext,
    deferred: Deferred,
    handler: &mut H,
    utf8: bool,
) -> Result<(Layout, RowCounts, Vec<String>)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // The second pass reads this same file, whatever takes its name meanwhile.
    let again = file.try_clone()?;
    let size = file.metadata()?.len();
    let index_bytes = handler.index_bytes()?;
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Msg>>(4);
        // Unbounded (a piece is a byte a row): sending one never waits for the thread
        // reading rows again, which may itself wait for this one to take its rows. (Pieces
        // are cut in the decoded text, which a legacy encoding can make longer than the file.)
        let (job_tx, job_rx) = std::sync::mpsc::channel::<(Settled, u8, Layout)>();
        let piece = piece_bytes(size, index_bytes);
        let tx_again = tx.clone();
        let ctx_again = ctx.clone();
        let first = std::thread::Builder::new()
            .name("parse".into())
            .spawn_scoped(scope, move || {
                let mut sender = Sender::new(tx);
                let mut notes = Vec::new();
                let mut d = deferred.cut_every(piece);
                // A panic must still tell the thread reading rows again that no more pieces
                // come (it would wait for ever, and this thread's caller with it).
                let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    csv::read(
                        file,
                        schema,
                        ctx,
                        Judge::Defer(&mut d),
                        &mut sender,
                        &mut notes,
                        utf8,
                    )
                }))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the report parsing thread panicked")));
                let result = read.and_then(|(layout, counts, delimiter)| {
                    sender.piece(Piece {
                        deferred: d,
                        delimiter,
                        layout: layout.clone(),
                        last: true,
                    })?;
                    Ok((layout, counts, notes))
                });
                if result.is_err() {
                    // The thread reading rows again waits for pieces: none come.
                    let _ = sender.push(Msg::NoMorePieces);
                }
                let flushed = sender.flush();
                result.and_then(|r| flushed.map(|()| r))
            })?;
        let second = std::thread::Builder::new()
            .name("reread".into())
            .spawn_scoped(scope, move || -> Result<()> {
                let mut sender = Sender::new(tx_again);
                let read = csv::reread(again, schema, ctx_again, &job_rx, &mut sender, utf8);
                let flushed = sender.flush();
                read.and(flushed)
            })?;
        let mut job_tx = Some(job_tx);
        let ms = |t: std::time::Instant| t.elapsed().as_millis() as u64;
        let failure = drain(&rx, handler, &mut |handler, piece| {
            let Some(piece) = piece else {
                job_tx = None;
                return Ok(());
            };
            tracing::debug!(ms = ms(started), last = piece.last, "a piece read");
            let settled = handler.settle(piece.deferred)?;
            tracing::debug!(ms = ms(started), "its rows settled");
            let to = job_tx.as_ref().context("a piece after the last")?;
            to.send((settled, piece.delimiter, piece.layout))
                .map_err(|_| anyhow::anyhow!("the thread reading rows again stopped"))?;
            if piece.last {
                job_tx = None; // the second pass ends with this piece
            }
            Ok(())
        });
        // Dropping these stops both threads at their next send or receive.
        drop(job_tx);
        drop(rx);
        let first = first
            .join()
            .map_err(|_| anyhow::anyhow!("the report parsing thread panicked"))?;
        let second = second
            .join()
            .map_err(|_| anyhow::anyhow!("the thread reading rows again panicked"))?;
        // Why the rows read again stopped (a file changed under the report) comes first:
        // it is why the ledger side could not hand it the next piece.
        if let Err(e) = second
            && e.downcast_ref::<Stopped>().is_none()
        {
            return Err(e);
        }
        // Then the ledger side's error: it is why the parser stopped.
        if let Some(e) = failure {
            return Err(e);
        }
        first
    })
}

/// One pass over a report: `work` runs on a parsing thread and hands what it finds to a
/// [`Sender`], while this thread passes it on to `handler`, in order.
fn pass<H: RowHandler, T: Send>(
    handler: &mut H,
    work: impl FnOnce(&mut Sender) -> Result<T> + Send,
) -> Result<T> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Msg>>(4);
        let parser = std::thread::Builder::new()
            .name("parse".into())
            .spawn_scoped(scope, move || {
                let mut sender = Sender::new(tx);
                let result = work(&mut sender);
                let flushed = sender.flush();
                result.and_then(|r| flushed.map(|()| r))
            })?;
        let failure = drain(&rx, handler, &mut |_, _| {
            anyhow::bail!("pieces of a report read in one pass")
        });
        // Dropping the receiver stops the parser at its next send.
        drop(rx);
        let parsed = parser.join();
        // The ledger side's error first: it is why the parser stopped.
        if let Some(e) = failure {
            return Err(e);
        }
        parsed.map_err(|_| anyhow::anyhow!("the report parsing thread panicked"))?
    })
}

/// Hands what the parsing thread sends to `handler` until it is done; the handler's first
/// error, if any.
fn drain<H: RowHandler>(
    rx: &std::sync::mpsc::Receiver<Vec<Msg>>,
    handler: &mut H,
    on_piece: &mut dyn FnMut(&mut H, Option<Piece>) -> Result<()>,
) -> Option<anyhow::Error> {
    loop {
        let batch = match rx.try_recv() {
            Ok(batch) => batch,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                if let Err(e) = handler.idle() {
                    return Some(e);
                }
                match rx.recv() {
                    Ok(batch) => batch,
                    Err(_) => return None,
                }
            }
        };
        for msg in batch {
            let step = match msg {
                Msg::Accepted(row) => handler.accepted_owned(row),
                Msg::Settled { unchanged, stale } => handler.settled(unchanged, stale),
                Msg::Progress(rows) => handler.progress(rows),
                Msg::Piece(piece) => on_piece(handler, Some(*piece)),
                Msg::NoMorePieces => on_piece(handler, None),
                Msg::Rejected(r) => handler.rejected(r),
                Msg::Warning(w) => {
                    handler.warning(w);
                    Ok(())
                }
                Msg::Skipped(skip, row) => {
                    handler.skipped(skip, row);
                    Ok(())
                }
            };
            if let Err(e) = step {
                return Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_eight_at_most_never_tiny_and_never_smaller_than_half_a_large_index() {
        assert_eq!(piece_bytes(0, 0), MIN_PIECE);
        assert_eq!(piece_bytes(200 << 10, 0), MIN_PIECE);
        assert_eq!(piece_bytes(800 << 20, 0), 100 << 20);
        // A small index (a test ledger) does not matter; a large one does.
        assert_eq!(piece_bytes(800 << 10, 2 << 20), 100 << 10);
        assert_eq!(piece_bytes(41 << 20, 64 << 20), 32 << 20);
        assert_eq!(piece_bytes(410 << 20, 32 << 20), (410u64 << 20).div_ceil(8));
    }
}
