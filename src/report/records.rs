//! Splitting a CSV stream into records: the `csv` thread of `csv.rs`. The delimiter is
//! sniffed (unless the schema sets one), records are split by csv-core and numbered by the
//! line they end on, and handed on in batches whose buffers come back for reuse.
//!
//! Guarantees: memory follows `[report] max_record`, never the longest record. A record's
//! size is its bytes plus 8 for each of its cells (what holding it takes: a line of a
//! million empty cells is a large record). A record larger than the cap is read on without
//! being kept: only its first kilobyte goes on, marked [`TooLong`], to be rejected with its
//! row; when such a record is the rest of the file, reading fails.

use std::io::{BufRead, BufReader, Read};

use super::reading::{Limits, past, size};

/// Bytes sniffed for the delimiter, and read from the file at a time.
const SNIFF_BYTES: usize = 64 * 1024;

/// What a record's size counts for each of its fields (where the field ends).
const FIELD_SIZE: usize = std::mem::size_of::<usize>();

/// What a record too long to keep keeps: enough for the reject's raw text.
const KEPT: usize = 1024;

/// One CSV record: its fields' bytes one after another, and where each ends. The buffers
/// are output room for csv-core (kept, with their length, from one record to the next).
#[derive(Debug, Default)]
pub(super) struct Record {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Bytes of `bytes` the record fills.
    filled: usize,
    /// Ends of `ends` the record fills: its fields.
    fields: usize,
    /// The line the record ends on.
    pub(super) line: u64,
    pub(super) too_long: Option<TooLong>,
}

/// A record read past without being kept: where it went past the cap, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooLong {
    /// Its size: its fields' bytes, and [`FIELD_SIZE`] for each field.
    pub(super) bytes: u64,
    /// Its line breaks (inside quoted cells).
    pub(super) breaks: u64,
    /// The field it was in when it went past the cap.
    pub(super) field: usize,
}

impl Record {
    /// The fields' bytes one after another (for a [`TooLong`] record, its first ones).
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.filled]
    }

    pub(super) fn len(&self) -> usize {
        self.fields
    }

    /// What holding the record takes (see [`FIELD_SIZE`]).
    fn size(&self) -> usize {
        self.filled + self.fields * FIELD_SIZE
    }

    pub(super) fn range(&self, i: usize) -> Option<std::ops::Range<usize>> {
        let end = *self.ends[..self.fields].get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(start..end)
    }

    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        (0..self.fields).map(|i| &self.bytes[self.range(i).unwrap_or(0..0)])
    }

    fn clear(&mut self) {
        self.filled = 0;
        self.fields = 0;
        self.too_long = None;
        // A buffer a long record grew is not kept for the rows after it (a batch holds
        // about [`BATCH_BYTES`]: only its first records ever grow).
        if self.bytes.len() > BATCH_BYTES {
            self.bytes = Vec::new();
        }
        if self.ends.len() * FIELD_SIZE > BATCH_BYTES {
            self.ends = Vec::new();
        }
        if self.bytes.is_empty() {
            self.bytes.resize(1024, 0);
        }
        if self.ends.is_empty() {
            self.ends.resize(64, 0);
        }
    }
}

/// Notes where the line breaks are in what is read through it, so records can be given the
/// line a person sees in an editor (a lone CR, from old Mac files or inside a cell, is a
/// line break too).
struct LineTracker<R> {
    inner: R,
    breaks: std::rc::Rc<std::cell::RefCell<LineBreaks>>,
}

/// The line breaks read but not yet passed by the parser.
#[derive(Default)]
struct LineBreaks {
    /// Offsets of the breaks not yet passed, in order.
    pending: std::collections::VecDeque<u64>,
    /// Breaks passed (before the first pending one).
    passed: u64,
    /// Bytes read so far.
    read: u64,
    /// The last byte read is a CR: a break unless the next byte is `\n`.
    trailing_cr: Option<u64>,
    /// The last three bytes read, the last last (0 where the input is shorter).
    tail: [u8; 3],
    /// The last byte read.
    last: Option<u8>,
}

impl LineBreaks {
    /// How many line breaks lie strictly before byte `at` (which never moves backwards).
    fn before(&mut self, at: u64) -> u64 {
        while self.pending.front().is_some_and(|&b| b < at) {
            self.pending.pop_front();
            self.passed += 1;
        }
        self.passed
    }

    /// Notes the breaks in the next bytes read; an empty `chunk` is the end of the input,
    /// where a final CR is a break.
    fn append(&mut self, chunk: &[u8]) {
        let base = self.read;
        if let Some(cr) = self.trailing_cr.take()
            && chunk.first() != Some(&b'\n')
        {
            self.pending.push_back(cr);
        }
        for i in memchr::memchr2_iter(b'\n', b'\r', chunk) {
            if chunk[i] == b'\n' {
                self.pending.push_back(base + i as u64);
            } else {
                match chunk.get(i + 1) {
                    Some(b'\n') => {} // CRLF: the LF is the break
                    Some(_) => self.pending.push_back(base + i as u64),
                    None => self.trailing_cr = Some(base + i as u64),
                }
            }
        }
        self.read += chunk.len() as u64;
        for &b in chunk.iter().rev().take(3).rev() {
            self.tail = [self.tail[1], self.tail[2], b];
        }
        if let Some(&b) = chunk.last() {
            self.last = Some(b);
        }
        // The parser never sits further back than its buffer holds: older breaks are
        // counted and forgotten, so a flood of blank lines (no records, so no `before`
        // calls) cannot grow the queue.
        let horizon = self.read.saturating_sub(FOLD_BEHIND as u64);
        self.before(horizon);
    }
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.breaks.borrow_mut().append(&buf[..n]);
        Ok(n)
    }
}

/// More than the parser can hold back: the BufReader's 64 KiB.
const FOLD_BEHIND: usize = 1 << 20;

/// How many bytes of `hay` equal `needle`, eight at a time.
pub(super) fn count_byte(hay: &[u8], needle: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let pattern = u64::from_ne_bytes([needle; 8]);
    let mut words = hay.chunks_exact(8);
    let mut n = 0u64;
    for w in &mut words {
        let x = u64::from_ne_bytes(w.try_into().expect("8-byte chunk")) ^ pattern;
        // The high bit of each byte of `x` that is zero, exactly (no borrow between bytes).
        let zero = !(((x & LOW7) + LOW7) | x | LOW7);
        n += u64::from(zero.count_ones());
    }
    n + words.remainder().iter().filter(|&&b| b == needle).count() as u64
}

/// Line breaks inside a cell: `\r\n`, `\n` or a lone `\r` each count once.
pub(super) fn count_line_breaks(b: &[u8]) -> u64 {
    let lone_cr = memchr::memchr_iter(b'\r', b)
        .filter(|&i| b.get(i + 1) != Some(&b'\n'))
        .count();
    count_byte(b, b'\n') + lone_cr as u64
}

/// Records per batch from the reading thread to the checking one.
const BATCH: usize = 512;
/// Bytes a batch holds before it is handed on (its last record may take it past).
const BATCH_BYTES: usize = 1 << 20;

/// Records read by the `csv` thread.
pub(super) type Records = Vec<Record>;

/// What the `csv` thread sends: records in file order, then the end of the file or, if
/// reading failed, why.
pub(super) enum Chunk {
    /// The delimiter, first of all.
    Delimiter(u8),
    /// So many records; `true` when the last of them is the file's last record and no line
    /// break follows it (the file may have been cut inside it).
    Records(Records, usize, bool),
    End,
    Failed(anyhow::Error),
}

/// csv-core over the tracked stream, within the caps.
struct Splitter<R> {
    input: BufReader<LineTracker<R>>,
    breaks: std::rc::Rc<std::cell::RefCell<LineBreaks>>,
    core: csv_core::Reader,
    /// Bytes consumed so far.
    pos: u64,
    max_record: usize,
    /// Room for what a [`TooLong`] record goes on with, thrown away.
    scratch: Vec<u8>,
    scratch_ends: Vec<usize>,
}

impl<R: Read> Splitter<R> {
    /// Reads the next record into `rec`; `false` at the end of the input.
    fn next(&mut self, rec: &mut Record) -> std::io::Result<bool> {
        use csv_core::ReadRecordResult::*;
        rec.clear();
        let mut last_out = 0u8;
        loop {
            let input = self.input.fill_buf()?;
            let (res, nin, nout, nend) = match &mut rec.too_long {
                None => self.core.read_record(
                    input,
                    &mut rec.bytes[rec.filled..],
                    &mut rec.ends[rec.fields..],
                ),
                Some(t) => {
                    let r = self
                        .core
                        .read_record(input, &mut self.scratch, &mut self.scratch_ends);
                    t.bytes += (r.2 + r.3 * FIELD_SIZE) as u64;
                    t.breaks += count_line_breaks(&self.scratch[..r.2]);
                    if r.2 > 0 {
                        last_out = self.scratch[r.2 - 1];
                    }
                    r
                }
            };
            self.input.consume(nin);
            self.pos += nin as u64;
            if rec.too_long.is_none() {
                rec.filled += nout;
                rec.fields += nend;
            }
            match res {
                InputEmpty => {}
                OutputFull | OutputEndsFull => self.grow(rec, res == OutputFull),
                Record => {
                    rec.line = 1 + self.breaks.borrow_mut().before(self.pos.saturating_sub(1));
                    if rec.too_long.is_some() && self.is_rest_of_file(last_out)? {
                        return Err(self.rest_of_file(rec, last_out));
                    }
                    return Ok(true);
                }
                End => return Ok(false),
            }
        }
    }

    /// Room for more of `rec` (`bytes`: more bytes, else more fields), or, past the cap,
    /// the record marked [`TooLong`] with only its first bytes kept.
    fn grow(&mut self, rec: &mut Record, bytes: bool) {
        if rec.too_long.is_some() {
            return; // the scratch buffers are simply reused
        }
        let size = rec.size();
        if size < self.max_record {
            if bytes {
                let room = (rec.bytes.len() * 2).min(self.max_record.saturating_add(64));
                rec.bytes.resize(room, 0);
            } else {
                let room = (rec.ends.len() * 2).min(self.max_record / FIELD_SIZE + 64);
                rec.ends.resize(room, 0);
            }
            return;
        }
        rec.too_long = Some(TooLong {
            bytes: size as u64,
            breaks: count_line_breaks(&rec.bytes[..rec.filled]),
            field: rec.fields,
        });
        // The fields that fit in the first kilobyte, and the one cut there.
        let kept = rec.filled.min(KEPT);
        let whole = rec.ends[..rec.fields].partition_point(|&e| e <= kept);
        rec.fields = whole;
        if whole < rec.ends.len() && rec.ends[..whole].last().is_none_or(|&e| e < kept) {
            rec.ends[whole] = kept;
            rec.fields += 1;
        }
        rec.filled = kept;
        rec.bytes.truncate(KEPT);
        rec.bytes.shrink_to_fit();
        rec.ends.truncate(rec.fields.max(64));
        rec.ends.shrink_to_fit();
        if self.scratch.is_empty() {
            self.scratch.resize(SNIFF_BYTES, 0);
            self.scratch_ends.resize(1024, 0);
        }
    }

    /// A too long record is the rest of the file when nothing follows it and the file does
    /// not end with a line break of its own (one it did not take into a cell).
    fn is_rest_of_file(&mut self, last_out: u8) -> std::io::Result<bool> {
        if !self.input.fill_buf()?.is_empty() {
            return Ok(false);
        }
        let ends_in_break = matches!(self.breaks.borrow().last, Some(b'\n' | b'\r'));
        let cell_took_it = matches!(last_out, b'\n' | b'\r');
        Ok(!ends_in_break || cell_took_it)
    }

    fn rest_of_file(&self, rec: &Record, last_out: u8) -> std::io::Error {
        let t = rec.too_long.expect("called for a too long record");
        // The file's last line break, taken into the cell, is the record's own.
        let own = u64::from(matches!(last_out, b'\n' | b'\r'));
        let start = (rec.line + own).saturating_sub(t.breaks);
        std::io::Error::other(format!(
            "the record starting at line {start} runs to the end of the file, {} in all (a \
             quote left open, or not a CSV at all): {}",
            size(t.bytes),
            past("max_record", &size(self.max_record as u64))
        ))
    }
}

/// The `csv` thread: splits the stream into records, numbers their lines, and sends them
/// on in batches; `empty` brings batches back for reuse. Stops at the end of the input, at
/// a read error (sent last), or when the receiver is gone.
pub(super) fn split_records(
    stream: Box<dyn Read + Send>,
    delimiter: Option<u8>,
    limits: &Limits,
    tx: std::sync::mpsc::SyncSender<Chunk>,
    empty: std::sync::mpsc::Receiver<Records>,
) {
    let breaks = std::rc::Rc::new(std::cell::RefCell::new(LineBreaks::default()));
    let tracked = LineTracker {
        inner: stream,
        breaks: breaks.clone(),
    };
    let mut input = BufReader::with_capacity(SNIFF_BYTES, tracked);
    let delimiter = match delimiter {
        Some(d) => d,
        None => match input.fill_buf() {
            Ok(sample) => super::delimiter::sniff(sample),
            Err(e) => {
                let _ = tx.send(Chunk::Failed(
                    anyhow::Error::new(e).context("cannot read the CSV"),
                ));
                return;
            }
        },
    };
    if tx.send(Chunk::Delimiter(delimiter)).is_err() {
        return;
    }
    let mut splitter = Splitter {
        input,
        breaks: breaks.clone(),
        core: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
        pos: 0,
        max_record: usize::try_from(limits.max_record).unwrap_or(usize::MAX),
        scratch: Vec::new(),
        scratch_ends: Vec::new(),
    };
    send_batches(&mut splitter, &tx, &empty);
}

/// The loop of [`split_records`], once the delimiter is known.
fn send_batches<R: Read>(
    splitter: &mut Splitter<R>,
    tx: &std::sync::mpsc::SyncSender<Chunk>,
    empty: &std::sync::mpsc::Receiver<Records>,
) {
    // The last record of a full batch goes first into the next one: the batch that holds
    // the file's last record is then always known to be the last.
    let mut carry: Option<Record> = None;
    loop {
        let mut batch = empty
            .try_recv()
            .unwrap_or_else(|_| (0..BATCH).map(|_| Record::default()).collect());
        let (mut n, mut bytes, mut fresh, mut ended) = (0, 0, 0, false);
        if let Some(c) = carry.take() {
            bytes += c.size();
            batch[0] = c;
            n = 1;
        }
        let mut failed = None;
        // At least one record read into each batch, whatever the carried one holds.
        while n < batch.len() && (bytes < BATCH_BYTES || fresh == 0) {
            match splitter.next(&mut batch[n]) {
                Ok(true) => {}
                Ok(false) => {
                    // The file's last record ends in a quote left open at its end: its last
                    // line break is its own, not a terminator (see `breaks_its_own`).
                    if n > 0 && breaks_its_own(splitter.breaks.borrow().tail, &batch[n - 1]) {
                        batch[n - 1].line += 1;
                    }
                    ended = true;
                    break;
                }
                Err(e) => {
                    failed = Some(anyhow::anyhow!("cannot read the CSV: {e}"));
                    ended = true;
                    break;
                }
            }
            bytes += batch[n].size();
            n += 1;
            fresh += 1;
        }
        let full = !ended;
        if full {
            carry = Some(std::mem::take(&mut batch[n - 1]));
            n -= 1;
        }
        let unterminated = !full
            && failed.is_none()
            && n > 0
            && !matches!(splitter.breaks.borrow().last, Some(b'\n' | b'\r'));
        if n > 0 && tx.send(Chunk::Records(batch, n, unterminated)).is_err() {
            return; // the checking side stopped
        }
        if let Some(e) = failed {
            let _ = tx.send(Chunk::Failed(e));
            return;
        }
        if !full {
            let _ = tx.send(Chunk::End);
            return;
        }
    }
}

/// Whether the input's final line break belongs to its last record: the record's last
/// field ends with a line break (only a quoted field can hold one) and no quote closes it
/// before the end of the input (`tail`, its last three bytes). Such a record was cut inside
/// a quote left open, and its last line is the input's last.
fn breaks_its_own(tail: [u8; 3], last: &Record) -> bool {
    let ends_in_break = last
        .iter()
        .next_back()
        .and_then(|f| f.last())
        .is_some_and(|b| matches!(b, b'\n' | b'\r'));
    let before_break = match tail {
        [x, b'\r', b'\n'] => x,
        [_, x, b'\n' | b'\r'] => x,
        _ => return false,
    };
    ends_in_break && before_break != b'"' && last.too_long.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `data` as the `csv` thread does: each record's fields (its first ones when
    /// too long), its line, and whether it was too long; or the error.
    fn split(data: &[u8], max_record: u64) -> Result<Vec<(Vec<String>, u64, bool)>, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        let (_empty_tx, empty_rx) = std::sync::mpsc::channel();
        let limits = Limits {
            max_record,
            ..Limits::default()
        };
        split_records(
            Box::new(std::io::Cursor::new(data.to_vec())),
            Some(b','),
            &limits,
            tx,
            empty_rx,
        );
        let mut out = Vec::new();
        for chunk in rx {
            match chunk {
                Chunk::Records(batch, n, _) => {
                    for r in &batch[..n] {
                        let fields = r.iter().map(|f| String::from_utf8_lossy(f).into_owned());
                        out.push((fields.collect(), r.line, r.too_long.is_some()));
                    }
                }
                Chunk::Failed(e) => return Err(e.to_string()),
                Chunk::Delimiter(_) | Chunk::End => {}
            }
        }
        Ok(out)
    }

    #[test]
    fn a_record_past_max_record_is_marked_and_the_next_ones_are_read() {
        let long = "x".repeat(5000);
        let data = format!("a,b\n1,\"{long}\n{long}\"\n2,c\n");
        let got = split(data.as_bytes(), 4096).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (vec!["a".into(), "b".into()], 1, false));
        assert!(got[1].2 && got[1].1 == 3, "{:?}", got[1].1);
        assert_eq!(got[1].0.len(), 2);
        assert_eq!(got[1].0[1].len(), 1023, "the first kilobyte is kept");
        assert_eq!(got[2], (vec!["2".into(), "c".into()], 4, false));
    }

    #[test]
    fn a_record_past_max_record_to_the_end_of_the_file_fails() {
        let long = "x".repeat(5000);
        for data in [
            format!("a,b\n1,{long}"),          // no line break at the end
            format!("a,b\n1,\"{long}\n2,c\n"), // a quote left open
        ] {
            let e = split(data.as_bytes(), 4096).unwrap_err();
            assert!(e.contains("line 2 runs to the end of the file"), "{e}");
            assert!(e.contains("max_record = 4.0 KiB"), "{e}");
        }
        // The last line, long but ended: only its row goes.
        let got = split(format!("a,b\n1,{long}\n").as_bytes(), 4096).unwrap();
        assert!(got[1].2);
    }

    #[test]
    fn records_are_the_csv_crates() {
        let data = b"\xef\xbb\xbfa,\"b\"\"c\",\r\n\r\n\"x\ny\",2\r3,4";
        let got = split(data, 1 << 20).unwrap();
        let fields: Vec<Vec<String>> = got.iter().map(|r| r.0.clone()).collect();
        let mut rdr = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&data[..]);
        let want: Vec<Vec<String>> = rdr
            .byte_records()
            .map(|r| {
                r.unwrap()
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect()
            })
            .collect();
        assert_eq!(fields, want);
        let lines: Vec<u64> = got.iter().map(|r| r.1).collect();
        assert_eq!(lines, [1, 4, 5]);
    }

    #[test]
    fn a_flood_of_blank_lines_keeps_the_window_bounded() {
        let breaks = std::rc::Rc::new(std::cell::RefCell::new(LineBreaks::default()));
        let data = vec![b'\n'; 8 << 20];
        let mut t = LineTracker {
            inner: &data[..],
            breaks: breaks.clone(),
        };
        std::io::copy(&mut t, &mut std::io::sink()).unwrap();
        let mut b = breaks.borrow_mut();
        assert!(b.pending.len() <= FOLD_BEHIND, "{}", b.pending.len());
        assert_eq!(b.before(8 << 20), 8 << 20);
    }

    #[test]
    fn breaks_are_counted_across_reads() {
        // CRLF, LF, lone CR, a CR split from its LF by a read boundary, a final lone CR.
        let data = b"a\r\nb\nc\rd\r\ne\r";
        for chunk in 1..data.len() {
            let breaks = std::rc::Rc::new(std::cell::RefCell::new(LineBreaks::default()));
            let mut t = LineTracker {
                inner: std::io::Cursor::new(&data[..]),
                breaks: breaks.clone(),
            };
            let mut buf = vec![0; chunk];
            while t.read(&mut buf).unwrap() > 0 {}
            let mut b = breaks.borrow_mut();
            // Before 'd' (offset 7): the breaks after a, b and c.
            assert_eq!(b.before(7), 3, "chunk {chunk}");
            assert_eq!(b.before(data.len() as u64), 5, "chunk {chunk}");
        }
    }
}
