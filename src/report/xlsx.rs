//! XLSX reports, streamed cell by cell with calamine's `worksheet_cells_reader`.
//!
//! Memory follows the cells actually present, never the sheet's *declared* dimensions (a
//! sheet may declare a million columns), and what calamine may hold (the shared strings,
//! one tag or text) is capped before it reads anything (`xlsx_scan.rs`). Typed date cells and plain serial numbers in date
//! columns are both converted, in the workbook's own date system (1900 or 1904).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result};
use calamine::{CellErrorType, DataRef, Reader, Xlsx, XlsxCellFormulaMetadataRecord};

use super::batch::{OnBatch, Summary};
use super::cell::{Cell, DateContext};
use super::row::RowChecker;
use super::schema::Schema;
use super::xlsx_scan::{self, Parts};

/// Excel's own limits: columns beyond these cannot come from a real spreadsheet.
const MAX_COLUMNS: u32 = 16_384;
const MAX_ROWS: u32 = 1_048_576;

fn error_text(e: &CellErrorType) -> &'static str {
    match e {
        CellErrorType::Div0 => "#DIV/0!",
        CellErrorType::NA => "#N/A",
        CellErrorType::Name => "#NAME?",
        CellErrorType::Null => "#NULL!",
        CellErrorType::Num => "#NUM!",
        CellErrorType::Ref => "#REF!",
        CellErrorType::Value => "#VALUE!",
        CellErrorType::GettingData => "#GETTING_DATA",
    }
}

fn to_cell<'a>(d: &'a DataRef<'_>) -> Cell<'a> {
    match d {
        DataRef::Empty => Cell::Empty,
        DataRef::Int(i) => Cell::Number(*i as f64),
        DataRef::Float(f) => Cell::Number(*f),
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => {
            if s.is_empty() {
                Cell::Empty
            } else {
                Cell::Text(s)
            }
        }
        DataRef::SharedString(s) => {
            if s.is_empty() {
                Cell::Empty
            } else {
                Cell::Text(s)
            }
        }
        DataRef::Bool(b) => Cell::Bool(*b),
        DataRef::DateTime(d) if d.is_duration() => Cell::Number(d.as_f64()),
        DataRef::DateTime(d) => Cell::DateSerial(d.as_f64()),
        DataRef::Error(e) => Cell::Error(error_text(e)),
    }
}

/// Reads and checks every row of an XLSX report (the schema's sheet if named and present,
/// else the first), handing the outcomes to `send`. calamine (inflating and parsing the
/// sheet's XML) runs on this thread, the row checks on a second one (`rows`): calamine alone
/// takes most of a core.
pub(crate) fn read(
    path: &Path,
    schema: &Schema,
    ctx: DateContext,
    send: &mut OnBatch<'_>,
) -> Result<Summary> {
    let mut notes = Vec::new();
    let (mut workbook, sheet) = open_checked(path, schema, &mut notes)?;
    let mut ctx = ctx;
    ctx.excel_1904 = workbook.has_1904_epoch();
    let mut cells_reader = workbook
        .worksheet_cells_reader(&sheet)
        .with_context(|| format!("cannot read the sheet {sheet:?}"))?;
    let dim = cells_reader.dimensions();
    if dim.end.1 >= MAX_COLUMNS || dim.end.0 >= MAX_ROWS {
        notes.push(format!(
            "the sheet declares {} rows × {} columns, beyond Excel's limits: only the cells present were read",
            u64::from(dim.end.0) + 1,
            u64::from(dim.end.1) + 1
        ));
    }
    let mut ignored_cells = 0u64;
    let (parsed, checked) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Sheet<'_>>(4);
        let checker = std::thread::Builder::new()
            .name("rows".into())
            .spawn_scoped(scope, move || check_rows(schema, ctx, send, rx));
        let checker = match checker {
            Ok(c) => c,
            Err(e) => {
                return (
                    Err(e.into()),
                    Err(anyhow::anyhow!("no row checking thread")),
                );
            }
        };
        let parsed = read_cells(
            || cells_reader.next_cell_with_formula_metadata(),
            &sheet,
            &tx,
            &mut ignored_cells,
        );
        drop(tx);
        let checked = checker
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the row checking thread panicked")));
        (parsed, checked)
    });
    // Every row read before a sheet error was checked, in order: an error from the checks
    // concerns an earlier row, and is the one to report.
    let mut checker = match (parsed, checked) {
        (_, Err(e)) | (Err(e), Ok(_)) => return Err(e),
        (Ok(()), Ok(Some(checker))) => checker,
        (Ok(()), Ok(None)) => anyhow::bail!("the rows of the sheet {sheet:?} ended early"),
    };
    if ignored_cells > 0 {
        notes.push(format!(
            "{ignored_cells} cells beyond Excel's limits were ignored"
        ));
    }
    checker.file.sheet = Some(sheet);
    checker.finish(notes)
}

/// Opens the workbook within the caps of `[report]` (see `xlsx_scan`): the parts calamine
/// reads on opening are scanned first; the sheets are scanned on a thread of their own
/// while calamine opens the workbook (most of that time is spent on the shared strings),
/// and before any of them is read.
fn open_checked(
    path: &Path,
    schema: &Schema,
    notes: &mut Vec<String>,
) -> Result<(Xlsx<BufReader<File>>, String)> {
    let limits = &schema.reading.limits;
    xlsx_scan::check(path, limits, Parts::ReadOnOpening)?;
    let (opened, sheets) = std::thread::scope(|scope| {
        let sheets = std::thread::Builder::new()
            .name("xlsx-scan".into())
            .spawn_scoped(scope, || xlsx_scan::check(path, limits, Parts::Streamed));
        let opened = open_sheet(path, schema, notes);
        let sheets = match sheets {
            Ok(scan) => scan
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the workbook scan panicked"))),
            Err(e) => Err(e.into()),
        };
        (opened, sheets)
    });
    sheets?;
    opened
}

/// Opens the workbook and picks its sheet: the schema's if named and present, else the
/// first (with a note).
fn open_sheet(
    path: &Path,
    schema: &Schema,
    notes: &mut Vec<String>,
) -> Result<(Xlsx<BufReader<File>>, String)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let workbook: Xlsx<_> = Xlsx::new(BufReader::with_capacity(256 * 1024, file))
        // calamine's error says what its source says too: its own text only, once.
        .map_err(|e| {
            anyhow::anyhow!("not a readable XLSX workbook (truncated or corrupt?): {e}")
        })?;
    let names = workbook.sheet_names();
    let first = || names.first().cloned().context("the workbook has no sheets");
    let sheet = match &schema.sheet {
        Some(wanted) => match names.iter().find(|n| n.eq_ignore_ascii_case(wanted)) {
            Some(n) => n.clone(),
            None => {
                let first = first()?;
                notes.push(format!(
                    "no sheet named {wanted:?}: read the first sheet {first:?}"
                ));
                first
            }
        },
        None => first()?,
    };
    Ok((workbook, sheet))
}

/// The `rows` thread: checks the rows calamine's cells make up, in order; the checker once
/// the sheet's end is reached (`None` when the sheet could not be read to its end).
fn check_rows<'s, 'o>(
    schema: &'s Schema,
    ctx: DateContext,
    send: &'o mut OnBatch<'_>,
    rx: std::sync::mpsc::Receiver<Sheet<'_>>,
) -> Result<Option<RowChecker<'s, 'o>>> {
    let mut checker = RowChecker::new(schema, ctx, send);
    for msg in rx {
        let batch = match msg {
            Sheet::Rows(batch) => batch,
            Sheet::End => return Ok(Some(checker)),
        };
        let mut cells: Vec<Cell<'_>> = Vec::with_capacity(64);
        let mut uncomputed = batch.uncomputed.iter().copied().peekable();
        for &(number, ref range) in &batch.rows {
            cells.clear();
            cells.extend(batch.cells[range.clone()].iter().map(to_cell));
            while let Some(at) = uncomputed.next_if(|at| range.contains(at)) {
                cells[at - range.start] = Cell::Uncomputed;
            }
            checker.row(number, &cells, None)?;
        }
    }
    Ok(None)
}

/// A sheet's cell as calamine streams it.
type NextCell<'a> = Result<Option<XlsxCellFormulaMetadataRecord<'a>>, calamine::XlsxError>;

/// Streams the sheet's cells into batches of rows for the `rows` thread, then its end.
fn read_cells<'a>(
    mut next_cell: impl FnMut() -> NextCell<'a>,
    sheet: &str,
    tx: &std::sync::mpsc::SyncSender<Sheet<'a>>,
    ignored_cells: &mut u64,
) -> Result<()> {
    let mut batch = SheetRows::with_capacity();
    let mut current: Option<u32> = None;
    let mut row_start = 0;
    let parsed = (|| -> Result<()> {
        loop {
            let next =
                next_cell().map_err(|e| anyhow::anyhow!("cannot read the sheet {sheet:?}: {e}"))?;
            let Some(cell) = next else { break };
            let (r, c) = cell.pos;
            if c >= MAX_COLUMNS || r >= MAX_ROWS {
                *ignored_cells += 1;
                continue;
            }
            if current != Some(r) {
                if let Some(done) = current {
                    batch
                        .rows
                        .push((u64::from(done) + 1, row_start..batch.cells.len()));
                    if batch.cells.len() >= CELLS_PER_BATCH {
                        // The next batch is allocated whole: growing it would copy it.
                        let full = std::mem::replace(&mut batch, SheetRows::with_capacity());
                        if tx.send(Sheet::Rows(full)).is_err() {
                            return Ok(()); // the checker stopped: its error is reported
                        }
                    }
                }
                row_start = batch.cells.len();
                current = Some(r);
            }
            batch.put(row_start + c as usize, cell);
        }
        if let Some(done) = current {
            batch
                .rows
                .push((u64::from(done) + 1, row_start..batch.cells.len()));
        }
        let _ = tx.send(Sheet::Rows(std::mem::take(&mut batch)));
        let _ = tx.send(Sheet::End);
        Ok(())
    })();
    if parsed.is_err() {
        // The rows completed before the sheet failed are checked (the row it failed in is
        // not), as when the two ran one after the other.
        let _ = tx.send(Sheet::Rows(batch));
    }
    parsed
}

/// Cells handed to the row checks per batch.
const CELLS_PER_BATCH: usize = 8192;

/// What the row checks receive.
enum Sheet<'a> {
    Rows(SheetRows<'a>),
    /// The sheet was read to its end.
    End,
}

/// Consecutive sheet rows: each row's number and its cells' range in `cells`.
#[derive(Default)]
struct SheetRows<'a> {
    rows: Vec<(u64, std::ops::Range<usize>)>,
    cells: Vec<DataRef<'a>>,
    /// Positions in `cells` of formulas saved without their computed value, in order.
    uncomputed: Vec<usize>,
}

impl<'a> SheetRows<'a> {
    /// Puts a cell at `at` in the batch (its row's start plus its column).
    fn put(&mut self, at: usize, cell: XlsxCellFormulaMetadataRecord<'a>) {
        let (formula, value) = (cell.formula.is_some(), cell.value);
        // No value saved at all (`<v/>` or none). A formula whose value is the empty string
        // is saved as an empty `t="str"` value, and is empty.
        if formula && matches!(value, DataRef::Empty) {
            self.uncomputed.push(at);
        }
        match self.cells.len().cmp(&at) {
            std::cmp::Ordering::Equal => self.cells.push(value), // the usual case
            std::cmp::Ordering::Less => {
                self.cells.resize(at, DataRef::Empty); // columns without a cell
                self.cells.push(value);
            }
            std::cmp::Ordering::Greater => self.cells[at] = value,
        }
    }

    /// Room for a batch (a row of up to 1,024 cells past [`CELLS_PER_BATCH`] included).
    fn with_capacity() -> Self {
        SheetRows {
            rows: Vec::with_capacity(1024),
            cells: Vec::with_capacity(CELLS_PER_BATCH + 1024),
            uncomputed: Vec::new(),
        }
    }
}
