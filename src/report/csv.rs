//! CSV reports: RFC 4180 with quoted multi-line cells, CRLF, LF or CR line ends, an
//! optional UTF-8 BOM, a `,` `;` tab or `|` delimiter (sniffed unless the schema sets one),
//! in the encoding `[report] encoding` names or `encoding.rs` finds.
//!
//! The file is streamed: a `csv` thread splits it into records (`records.rs`), handed on in
//! batches whose buffers come back for reuse, while the calling thread checks them;
//! nothing is held whole in memory, and no record longer than `[report] max_record`. Each
//! row is numbered by the line it starts on, as an editor shows it.
//!
//! Guarantees: a row that is not text (bytes that are not UTF-8, a NUL byte) or is larger
//! than `max_record` is rejected alone, naming its row and column; the rows around it are
//! read as usual.

use std::path::Path;

use anyhow::Result;

use super::batch::{OnBatch, Summary};
use super::cell::{Cell, DateContext};
use super::encoding;
use super::reading::{past, size};
use super::records::{
    Chunk, Record, Records, TooLong, count_byte, count_line_breaks, split_records,
};
use super::row::{CsvRow, RowChecker};
use super::schema::Schema;

/// The record's cells, in `spare`'s allocation (handed back empty by the caller, so one
/// buffer serves every row). `text` is the whole record, its fields one after another.
fn cells_of<'r>(text: &'r str, record: &Record, spare: Vec<Cell<'static>>) -> Vec<Cell<'r>> {
    // An empty vector maps in place: the allocation is reused, only its lifetime changes.
    let mut cells: Vec<Cell<'r>> = spare.into_iter().collect();
    cells.clear();
    cells.extend((0..record.len()).map(|i| {
        // Fields end at delimiters (ASCII), so every range is a char boundary of `text`.
        let f = record.range(i).and_then(|r| text.get(r)).unwrap_or("");
        if f.is_empty() {
            Cell::Empty
        } else {
            Cell::Text(f)
        }
    }));
    cells
}

/// Whether every field of `record` (whose fields, joined, are `text`) begins and ends on a
/// character boundary of `text`.
fn fields_on_char_boundaries(text: &str, record: &Record) -> bool {
    if text.is_ascii() {
        return true;
    }
    (0..record.len()).all(|i| {
        record
            .range(i)
            .is_some_and(|r| text.is_char_boundary(r.start) && text.is_char_boundary(r.end))
    })
}

/// Reads and checks every row of a CSV report, handing the outcomes to `send`. Two
/// threads: a `csv` thread splits the file into records, this one checks them.
pub(crate) fn read(
    path: &Path,
    schema: &Schema,
    ctx: DateContext,
    send: &mut OnBatch<'_>,
) -> Result<Summary> {
    let mut notes = Vec::new();
    let (stream, encoding_name) = encoding::open(path, schema.reading.encoding, &mut notes)?;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Records>();
        std::thread::Builder::new()
            .name("csv".into())
            .spawn_scoped(scope, move || {
                split_records(
                    stream,
                    schema.delimiter,
                    &schema.reading.limits,
                    tx,
                    empty_rx,
                );
            })?;
        // Returning drops `rx`: the `csv` thread then stops at its next send.
        let mut checker = RowChecker::new(schema, ctx, send).with_width_checked();
        checker.file.encoding = Some(encoding_name);
        check_records(checker, &rx, &empty_tx, schema.reading.limits.max_record)?.finish(notes)
    })
}

/// The checking half of [`read`]: takes the `csv` thread's records in order.
fn check_records<'s, 'o>(
    mut checker: RowChecker<'s, 'o>,
    rx: &std::sync::mpsc::Receiver<Chunk>,
    empty: &std::sync::mpsc::Sender<Records>,
    max_record: u64,
) -> Result<RowChecker<'s, 'o>> {
    let mut spare: Vec<Cell<'static>> = Vec::new();
    let mut prev_end = 0u64;
    let mut delimiter = b',';
    loop {
        let chunk = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the CSV reading thread stopped before the end"))?;
        let (batch, n, cut_tail) = match chunk {
            Chunk::Delimiter(d) => {
                delimiter = d;
                checker.file.delimiter = Some(d);
                continue;
            }
            Chunk::Records(batch, n, unterminated) => (batch, n, unterminated),
            Chunk::End => return Ok(checker),
            Chunk::Failed(e) => return Err(e),
        };
        for (i, record) in batch[..n].iter().enumerate() {
            let end = record.line;
            let bytes = record.as_slice();
            // Without a CR, the cells' line breaks are the record's `\n`s (a CR at the end of
            // one cell and a LF at the start of the next must not count as one).
            let breaks: u64 = match record.too_long {
                Some(t) => t.breaks,
                None if memchr::memchr(b'\r', bytes).is_none() => count_byte(bytes, b'\n'),
                None => record.iter().map(count_line_breaks).sum(),
            };
            let line = end.saturating_sub(breaks);
            let blank = line.saturating_sub(prev_end + 1);
            prev_end = end;
            if blank > 0 {
                checker.blank_lines(blank);
            }
            if let Some(t) = record.too_long {
                let reason = too_long(t, max_record);
                unreadable(&mut checker, line, record, t.field, reason)?;
                continue;
            }
            // One UTF-8 check for the whole record (its fields one after another), then one
            // that every field starts and ends on a character: together, every field is
            // valid. (Joined, the end of one field and the start of the next can make a
            // character neither holds, e.g. Windows-1252 "É" then "€".)
            let text = simdutf8::basic::from_utf8(bytes)
                .ok()
                .filter(|t| fields_on_char_boundaries(t, record))
                .filter(|_| memchr::memchr(0, bytes).is_none());
            let Some(text) = text else {
                let (col, reason) = not_text(record);
                unreadable(&mut checker, line, record, col, reason)?;
                continue;
            };
            let mut cells = cells_of(text, record, std::mem::take(&mut spare));
            let csv = CsvRow {
                text: bytes,
                multiline: breaks > 0,
                cut_end: cut_tail && i + 1 == n,
                delimiter,
            };
            checker.row(line, &cells, Some(csv))?;
            cells.clear();
            spare = cells.into_iter().map(|_| Cell::Empty).collect();
        }
        let _ = empty.send(batch);
    }
}

/// Hands the checks a row that cannot be read as text: its cells as far as they can be
/// shown (bytes that are not UTF-8 and NULs as U+FFFD), to be rejected in column `col`.
fn unreadable(
    checker: &mut RowChecker<'_, '_>,
    line: u64,
    record: &Record,
    col: usize,
    reason: String,
) -> Result<()> {
    let texts: Vec<String> = record
        .iter()
        .map(|f| String::from_utf8_lossy(f).replace('\0', "\u{fffd}"))
        .collect();
    let cells: Vec<Cell<'_>> = texts
        .iter()
        .map(|t| {
            if t.is_empty() {
                Cell::Empty
            } else {
                Cell::Text(t)
            }
        })
        .collect();
    checker.unreadable(line, &cells, col, reason)
}

/// Why a record past the caps is rejected.
fn too_long(t: TooLong, max_record: u64) -> String {
    format!(
        "the row is {} long (its cells' bytes, and 8 for each cell): {}",
        size(t.bytes),
        past("max_record", &size(max_record))
    )
}

/// The first field of `record` that is not text, and why (never its value: it may be a
/// person's name, and reasons reach logs).
fn not_text(record: &Record) -> (usize, String) {
    for (col, f) in record.iter().enumerate() {
        let valid = match std::str::from_utf8(f) {
            Ok(t) => t,
            Err(e) => {
                let at = e.valid_up_to();
                let nth = String::from_utf8_lossy(&f[..at]).chars().count() + 1;
                return (
                    col,
                    format!(
                        "byte 0x{:02X} (character {nth} of the value) is not UTF-8, in a file \
                         read as UTF-8: fix the value, or set [report] encoding to the file's \
                         encoding",
                        f[at]
                    ),
                );
            }
        };
        if let Some(at) = memchr::memchr(0, f) {
            let nth = valid[..at].chars().count() + 1;
            return (
                col,
                format!(
                    "a NUL byte (character {nth} of the value): not text (a file padded with \
                     zeros, or not a CSV?)"
                ),
            );
        }
    }
    (0, "the row is not valid text".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_in_cells() {
        assert_eq!(count_line_breaks(b"a\nb\r\nc\rd"), 3);
        assert_eq!(count_line_breaks(b"plain"), 0);
        assert_eq!(count_line_breaks(b"x\r"), 1);
        assert_eq!(count_line_breaks(b"x\r\n\r"), 2);
    }

    #[test]
    fn bytes_are_counted() {
        let hay: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        for needle in [0u8, b'\n', 0x80, 0xff, b'a'] {
            for len in [0, 1, 7, 8, 9, 100, 1000] {
                let want = hay[..len].iter().filter(|&&b| b == needle).count() as u64;
                assert_eq!(count_byte(&hay[..len], needle), want, "{needle} {len}");
            }
        }
    }
}
