//! CSV reports: RFC 4180 with quoted multi-line cells, CRLF or LF, an optional UTF-8 BOM,
//! a `,` `;` tab or `|` delimiter (sniffed unless the schema sets one), UTF-8, UTF-16 (by its
//! BOM or, without one, by its zero bytes) or, for files that are not valid UTF-8,
//! Windows-1252 (what Excel's "CSV (Comma delimited)" writes).
//!
//! The file is streamed: a `csv` thread splits it into records, handed on in batches whose
//! buffers come back for reuse; nothing is held whole in memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use anyhow::{Context, Result};

use super::{Judge, Layout, RowCounts, RowHandler, RowProcessor};
use crate::activity::{Cell, DateContext};
use crate::deferred::{PLACE, Settled};
use crate::plan::Hint;
use crate::report::schema::Schema;

const SNIFF_BYTES: usize = 64 * 1024;

/// A reader that decodes a legacy or UTF-16 encoding into UTF-8 as it streams.
struct Decoding<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    raw: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    eof: bool,
    started: bool,
}

impl<R: Read> Decoding<R> {
    fn new(inner: R, encoding: &'static encoding_rs::Encoding) -> Self {
        Decoding {
            inner,
            // UTF-16 loses its BOM here; Windows-1252 has none (a UTF-8 one is skipped below).
            decoder: encoding.new_decoder_with_bom_removal(),
            raw: vec![0; 64 * 1024],
            out: Vec::with_capacity(3 * 64 * 1024 + 16),
            pos: 0,
            eof: false,
            started: false,
        }
    }
}

impl<R: Read> Read for Decoding<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.out.len() {
            if self.eof {
                return Ok(0);
            }
            let n = self.inner.read(&mut self.raw)?;
            self.eof = n == 0;
            self.out.clear();
            self.pos = 0;
            // A UTF-8 BOM in front of a file that is otherwise Windows-1252: not text.
            let skip = if !self.started && self.raw[..n].starts_with(b"\xef\xbb\xbf") {
                3
            } else {
                0
            };
            self.started |= n > 0;
            let needed = self.decoder.max_utf8_buffer_length(n).unwrap_or(3 * n + 16);
            self.out.resize(needed, 0);
            let (_, _, written, _) =
                self.decoder
                    .decode_to_utf8(&self.raw[skip..n], &mut self.out, self.eof);
            self.out.truncate(written);
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Excel's `sep=;` first line names the delimiter (the line is then skipped as preamble).
fn excel_separator_hint(sample: &[u8]) -> Option<u8> {
    let sample = sample.strip_prefix(b"\xef\xbb\xbf").unwrap_or(sample);
    let rest = sample
        .strip_prefix(b"sep=")
        .or_else(|| sample.strip_prefix(b"SEP="))?;
    match rest {
        [d, b'\r' | b'\n', ..] if d.is_ascii() && !d.is_ascii_alphanumeric() => Some(*d),
        _ => None,
    }
}

/// Picks the delimiter whose count per line is the most consistent in the first lines.
pub(crate) fn sniff_delimiter(sample: &[u8]) -> u8 {
    let candidates = [b',', b';', b'\t', b'|'];
    let mut best = (b',', 0usize, 0usize);
    for &d in &candidates {
        let mut counts: Vec<usize> = Vec::new();
        let mut in_quotes = false;
        let mut n = 0;
        for &b in sample {
            match b {
                b'"' => in_quotes = !in_quotes,
                b'\n' if !in_quotes => {
                    counts.push(n);
                    n = 0;
                }
                _ if b == d && !in_quotes => n += 1,
                _ => {}
            }
        }
        if n > 0 {
            counts.push(n);
        }
        // The most common non-zero count, and how many lines have it.
        let mut freq: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
        for c in counts.into_iter().filter(|&c| c > 0) {
            *freq.entry(c).or_default() += 1;
        }
        if let Some((&mode, &lines)) = freq.iter().max_by_key(|(c, l)| (**l, **c))
            && (lines, mode) > (best.1, best.2)
        {
            best = (d, lines, mode);
        }
    }
    best.0
}

/// Notes where the line breaks are in what is read through it, so records can be given the
/// line a person sees in an editor (the csv crate's own line count knows only `\n`; a lone
/// CR, from old Mac files or inside a cell, is a line break too).
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
        if let Some(&b) = chunk.last() {
            self.last = Some(b);
        }
        // The parser never sits further back than its buffers hold: older breaks are
        // counted and forgotten, so a flood of blank lines (no records, so no `before`
        // calls) cannot grow the queue.
        let horizon = self.read.saturating_sub(FOLD_BEHIND as u64);
        self.before(horizon);
    }
}

/// How many bytes of `hay` equal `needle`, eight at a time.
fn count_byte(hay: &[u8], needle: u8) -> u64 {
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

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.breaks.borrow_mut().append(&buf[..n]);
        Ok(n)
    }
}

/// More than the parser can hold back: the BufReader (64 KiB) plus the csv buffer (256 KiB).
const FOLD_BEHIND: usize = 1 << 20;

/// Line breaks inside a cell: `\r\n`, `\n` or a lone `\r` each count once.
fn count_line_breaks(b: &[u8]) -> u64 {
    let lone_cr = memchr::memchr_iter(b'\r', b)
        .filter(|&i| b.get(i + 1) != Some(&b'\n'))
        .count();
    count_byte(b, b'\n') + lone_cr as u64
}

/// The file is not valid UTF-8: the caller reads it again as Windows-1252.
#[derive(Debug)]
pub(crate) struct NotUtf8;

impl std::fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the file is not valid UTF-8")
    }
}

impl std::error::Error for NotUtf8 {}

/// The record's cells, in `spare`'s allocation (handed back empty by the caller, so one
/// buffer serves every row). `text` is the whole record, its fields one after another.
fn cells_of<'r>(
    text: &'r str,
    record: &::csv::ByteRecord,
    spare: Vec<Cell<'static>>,
) -> Vec<Cell<'r>> {
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
fn fields_on_char_boundaries(text: &str, record: &::csv::ByteRecord) -> bool {
    if text.is_ascii() {
        return true;
    }
    (0..record.len()).all(|i| {
        record
            .range(i)
            .is_some_and(|r| text.is_char_boundary(r.start) && text.is_char_boundary(r.end))
    })
}

/// Records read ahead of the one being checked (see `read`).
const AHEAD: usize = 16;
/// Records per batch from the reading thread to the checking one.
const BATCH: usize = 512;

/// Where a record lies: the line it ends on, and its bytes in the (decoded) stream, from
/// the end of the record before (blank lines the reader skipped included) to the start of
/// the next.
#[derive(Debug, Default, Clone, Copy)]
struct Span {
    line: u64,
    start: u64,
    end: u64,
}

/// Records read by the `csv` thread, each with where it lies.
type Records = Vec<(::csv::ByteRecord, Span)>;

/// What the `csv` thread sends: records in file order, then the end of the file or, if
/// reading failed, why.
enum Chunk {
    /// The delimiter, first of all.
    Delimiter(u8),
    /// So many records; `true` when the last of them is the file's last record and no line
    /// break follows it (the file may have been cut inside it).
    Records(Records, usize, bool),
    End,
    Failed(anyhow::Error),
}

/// The `csv` thread: splits the stream into records (the csv crate), numbers their lines,
/// and sends them on in batches; `empty` brings batches back for reuse. Stops at the end
/// of the input, at a read error (sent last), or when the receiver is gone.
fn split_records(
    stream: Box<dyn Read + Send>,
    delimiter: Option<u8>,
    tx: std::sync::mpsc::SyncSender<Chunk>,
    empty: std::sync::mpsc::Receiver<Records>,
) {
    let breaks = std::rc::Rc::new(std::cell::RefCell::new(LineBreaks::default()));
    let tracked = LineTracker {
        inner: stream,
        breaks: breaks.clone(),
    };
    let mut buffered = BufReader::with_capacity(SNIFF_BYTES, tracked);
    let delimiter = match delimiter {
        Some(d) => d,
        None => match buffered.fill_buf() {
            Ok(sample) => excel_separator_hint(sample).unwrap_or_else(|| sniff_delimiter(sample)),
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
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .buffer_capacity(256 * 1024)
        .from_reader(buffered);
    // The last record of a full batch goes first into the next one: the batch that holds
    // the file's last record is then always known to be the last.
    let mut carry: Option<(::csv::ByteRecord, Span)> = None;
    loop {
        let mut batch = empty.try_recv().unwrap_or_else(|_| {
            (0..BATCH)
                .map(|_| (::csv::ByteRecord::new(), Span::default()))
                .collect()
        });
        let mut n = 0;
        if let Some(c) = carry.take() {
            batch[0] = c;
            n = 1;
        }
        let mut failed = None;
        while n < batch.len() {
            let (record, span) = &mut batch[n];
            let start = reader.position().byte();
            match reader.read_byte_record(record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let where_ = match e.position() {
                        Some(p) => format!(" at line {}", p.line()),
                        None => String::new(),
                    };
                    failed = Some(anyhow::anyhow!("cannot read the CSV{where_}: {e}"));
                    break;
                }
            }
            // The record's last byte is just before the reader's position (a `\n` there is
            // its terminator); it starts as many lines earlier as its cells hold line
            // breaks, counted when it is checked.
            let end_byte = reader.position().byte();
            *span = Span {
                line: 1 + breaks.borrow_mut().before(end_byte.saturating_sub(1)),
                start,
                end: end_byte,
            };
            n += 1;
        }
        let full = n == batch.len();
        if full && failed.is_none() {
            carry = Some(std::mem::take(&mut batch[n - 1]));
            n -= 1;
        }
        let unterminated = !full
            && failed.is_none()
            && n > 0
            && !matches!(breaks.borrow().last, Some(b'\n' | b'\r'));
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

/// Parses and checks every row of a CSV report into `handler`.
///
/// UTF-16 written without a BOM, told by its NUL bytes: each ASCII character has a zero byte
/// beside it (after it in little-endian, before it in big-endian), always on the same side.
/// UTF-8 and Windows-1252 text has none.
fn utf16_without_bom(head: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let pairs = head.len() / 2;
    if pairs < 8 {
        return None;
    }
    let zeros_at = |parity: usize| {
        head.chunks_exact(2)
            .filter(|pair| pair[parity] == 0)
            .count()
    };
    // Text in UTF-8 or Windows-1252 has no NUL at all; UTF-16 has one beside every ASCII
    // character (the header, digits, punctuation), even among Cyrillic or CJK names.
    let (even, odd) = (zeros_at(0), zeros_at(1));
    if odd * 10 >= pairs && even == 0 {
        Some(encoding_rs::UTF_16LE)
    } else if even * 10 >= pairs && odd == 0 {
        Some(encoding_rs::UTF_16BE)
    } else {
        None
    }
}

/// Two threads: a `csv` thread splits the file into records, this one checks them. The
/// checker prefetches the index slot of the Activity AHEAD records on, so that its
/// look-up finds it in the CPU cache (the index is far larger than the caches and its
/// look-ups are random).
pub(crate) fn read<H: RowHandler>(
    file: File,
    schema: &Schema,
    ctx: DateContext,
    judge: Judge<'_>,
    handler: &mut H,
    notes: &mut Vec<String>,
    utf8: bool,
) -> Result<(Layout, RowCounts, u8)> {
    let stream: Box<dyn Read + Send> = match open(file, utf8, notes)? {
        Stream::Plain(file) => Box::new(file),
        Stream::Decoded(d) => Box::new(d),
    };
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Records>();
        std::thread::Builder::new()
            .name("csv".into())
            .spawn_scoped(scope, move || {
                split_records(stream, schema.delimiter, tx, empty_rx);
            })?;
        // Returning drops `rx`: the `csv` thread then stops at its next send.
        check_records(schema, ctx, judge, handler, utf8, &rx, &empty_tx)
    })
}

/// A report's text as the reader sees it: the file itself (UTF-8), or decoded from it.
enum Stream {
    Plain(At),
    Decoded(Decoding<At>),
}

/// A file read at a place of its own (`pread`): the two passes of a two-pass read share
/// one open file, on two threads, and never move each other's place in it.
struct At {
    file: File,
    pos: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(&self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads the report from its start as text: UTF-16 by its BOM or its zero bytes, else UTF-8
/// when `utf8` is set, else Windows-1252. Says in `notes` how a decoded file was read.
fn open(file: File, utf8: bool, notes: &mut Vec<String>) -> Result<Stream> {
    let mut head = Vec::with_capacity(4096);
    (At {
        file: file.try_clone()?,
        pos: 0,
    })
    .take(4096)
    .read_to_end(&mut head)?;
    let file = At { file, pos: 0 };
    let utf16 = match &head[..head.len().min(2)] {
        [0xff, 0xfe] => Some(encoding_rs::UTF_16LE),
        [0xfe, 0xff] => Some(encoding_rs::UTF_16BE),
        _ => utf16_without_bom(&head),
    };
    Ok(match (utf16, utf8) {
        (Some(enc), _) => {
            notes.push(format!("read as {} (Excel's \"Unicode Text\")", enc.name()));
            Stream::Decoded(Decoding::new(file, enc))
        }
        (None, true) => Stream::Plain(file),
        (None, false) => {
            notes.push(
                "the file is not valid UTF-8: read as Windows-1252 (Excel's \"CSV (Comma delimited)\")"
                    .to_string(),
            );
            Stream::Decoded(Decoding::new(file, encoding_rs::WINDOWS_1252))
        }
    })
}

/// Reads ranges of a [`Stream`] at increasing offsets: skips what lies between (a seek
/// in a plain file, a read in a decoded one) and keeps only what is asked for. Ranges
/// that follow one another are read ahead in large blocks; scattered ones alone.
struct Window {
    stream: Stream,
    buf: Vec<u8>,
    /// The stream offset of `buf[0]`.
    at: u64,
    /// Where the last range asked for ended, and how many ranges in a row began there.
    last_end: u64,
    adjacent: u32,
}

/// Bytes read at a time once ranges come one after another.
const READ_AHEAD: usize = 256 * 1024;

impl Window {
    fn new(stream: Stream) -> Window {
        Window {
            stream,
            buf: Vec::with_capacity(READ_AHEAD),
            at: 0,
            last_end: u64::MAX,
            adjacent: 0,
        }
    }

    /// The bytes `start..start + len` of the stream (`start` never below an earlier one's);
    /// fewer at the end of the stream.
    fn get(&mut self, start: u64, len: usize) -> std::io::Result<&[u8]> {
        self.adjacent = if start == self.last_end {
            self.adjacent.saturating_add(1)
        } else {
            0
        };
        self.last_end = start + len as u64;
        let end = self.at + self.buf.len() as u64;
        if start >= end {
            self.buf.clear();
            let gap = start - end;
            match &mut self.stream {
                Stream::Plain(f) => f.pos = start,
                Stream::Decoded(d) => {
                    std::io::copy(&mut d.take(gap), &mut std::io::sink())?;
                }
            }
            self.at = start;
        }
        let mut from = (start - self.at) as usize;
        if from + len > self.buf.len() {
            // Only when it must be refilled is what the buffer still holds moved to its front.
            self.buf.drain(..from);
            self.at = start;
            from = 0;
            let ahead = if self.adjacent >= 4 {
                READ_AHEAD
            } else {
                64 * 1024
            };
            while self.buf.len() < len {
                let have = self.buf.len();
                let want = (len - have).max(ahead);
                self.buf.resize(have + want, 0);
                let n = match &mut self.stream {
                    Stream::Plain(f) => f.read(&mut self.buf[have..])?,
                    Stream::Decoded(d) => d.read(&mut self.buf[have..])?,
                };
                self.buf.truncate(have + n);
                if n == 0 {
                    break;
                }
            }
        }
        Ok(&self.buf[from..(from + len).min(self.buf.len())])
    }
}

/// Splits one record off `bytes` into `record` (blank lines before it skipped, as the
/// `csv` crate does); false when `bytes` holds none.
fn parse_record(
    core: &mut csv_core::Reader,
    bytes: &[u8],
    out: &mut Vec<u8>,
    ends: &mut Vec<usize>,
    record: &mut ::csv::ByteRecord,
) -> bool {
    use csv_core::ReadRecordResult as R;
    core.reset();
    if out.len() < bytes.len() + 16 {
        out.resize(bytes.len() + 16, 0);
    }
    if ends.len() < 64 {
        ends.resize(64, 0);
    }
    let (mut input, mut nout, mut nend) = (bytes, 0, 0);
    let mut ended = false;
    loop {
        // `ends` holds where each field ends, counted from the record's first output byte.
        let (res, i, o, e) = core.read_record(input, &mut out[nout..], &mut ends[nend..]);
        input = &input[i..];
        nout += o;
        nend += e;
        match res {
            R::Record => break,
            R::End => return false,
            R::OutputFull => out.resize(out.len() * 2, 0),
            R::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            // The input is used up: an empty input then ends the record.
            R::InputEmpty if ended => return false,
            R::InputEmpty => ended = input.is_empty(),
        }
    }
    record.clear();
    let mut from = 0;
    for &to in &ends[..nend] {
        record.push_field(&out[from..to]);
        from = to;
    }
    true
}

/// The second pass of a two-pass read (see [`crate::deferred`]): for each settled piece of
/// the report `pieces` brings (with the delimiter and the layout), reads again, in row
/// order, the records of the rows settling left for the ledger side, and hands them on
/// with their hints.
pub(crate) fn reread<H: RowHandler>(
    file: File,
    schema: &Schema,
    ctx: DateContext,
    pieces: &std::sync::mpsc::Receiver<(Settled, u8, Layout)>,
    handler: &mut H,
    utf8: bool,
) -> Result<()> {
    let Ok((first, delimiter, layout)) = pieces.recv() else {
        return Ok(()); // stopped before the first piece
    };
    let mut window = Window::new(open(file, utf8, &mut Vec::new())?);
    let mut processor = RowProcessor::again(schema, ctx, layout, handler);
    let mut core = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
    let (mut out, mut ends) = (Vec::new(), Vec::new());
    let mut record = ::csv::ByteRecord::new();
    let mut place = [0u8; PLACE];
    let mut spare: Vec<Cell<'static>> = Vec::new();
    let changed = || {
        anyhow::anyhow!(
            "the file changed while it was read (a row read again is not what it was); it is \
             left for the next run"
        )
    };
    for settled in std::iter::once(first).chain(pieces.iter().map(|(s, _, _)| s)) {
        let mut places = BufReader::with_capacity(64 * 1024, &settled.places);
        for &code in &settled.hints {
            places
                .read_exact(&mut place)
                .context("cannot read the temporary file of row places")?;
            let Some(hint) = Hint::from_code(code) else {
                continue; // settled from the index
            };
            let start = u64::from_le_bytes(place[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(place[8..12].try_into().expect("4 bytes")) as usize;
            let line = u64::from(u32::from_le_bytes(
                place[12..16].try_into().expect("4 bytes"),
            ));
            let key = u64::from_le_bytes(place[16..].try_into().expect("8 bytes"));
            let bytes = window.get(start, len)?;
            if bytes.len() < len
                || !parse_record(&mut core, bytes, &mut out, &mut ends, &mut record)
            {
                return Err(changed());
            }
            let text = simdutf8::basic::from_utf8(record.as_slice())
                .ok()
                .filter(|t| fields_on_char_boundaries(t, &record))
                .ok_or_else(changed)?;
            let mut cells = cells_of(text, &record, std::mem::take(&mut spare));
            if !processor.row_again(line, &cells, hint, key)? {
                return Err(changed());
            }
            cells.clear();
            spare = cells.into_iter().map(|_| Cell::Empty).collect();
        }
    }
    Ok(())
}

/// The checking half of [`read`]: takes the `csv` thread's records in order.
fn check_records<H: RowHandler>(
    schema: &Schema,
    ctx: DateContext,
    judge: Judge<'_>,
    handler: &mut H,
    utf8: bool,
    rx: &std::sync::mpsc::Receiver<Chunk>,
    empty: &std::sync::mpsc::Sender<Records>,
) -> Result<(Layout, RowCounts, u8)> {
    let mut processor = RowProcessor::new(schema, ctx, judge, handler).with_width_checked();
    let looks_up = processor.looks_up();
    let mut cut_tail;
    let mut spare: Vec<Cell<'static>> = Vec::new();
    let mut prev_end = 0u64;
    let prefetch = |processor: &RowProcessor<'_, H>, record: &::csv::ByteRecord| {
        if !looks_up {
            return;
        }
        if let Some(id) = processor
            .id_column()
            .and_then(|c| record.get(c))
            .and_then(|b| std::str::from_utf8(b).ok())
        {
            processor.prefetch(id);
        }
    };
    // How many records, from the start of the batch in hand, had their slots prefetched
    // while the previous batch ended; and the next batch, if it was already there.
    let mut prefetched = 0;
    let mut next: Option<Chunk> = None;
    loop {
        let chunk = match next.take() {
            Some(chunk) => chunk,
            None => rx
                .recv()
                .map_err(|_| anyhow::anyhow!("the CSV reading thread stopped before the end"))?,
        };
        let (batch, n) = match chunk {
            Chunk::Delimiter(d) => {
                processor.set_delimiter(d);
                continue;
            }
            Chunk::Records(batch, n, unterminated) => {
                cut_tail = unterminated;
                (batch, n)
            }
            Chunk::End => break,
            Chunk::Failed(e) => return Err(e),
        };
        for (record, _) in batch[..n.min(AHEAD)].iter().skip(prefetched) {
            prefetch(&processor, record);
        }
        prefetched = 0;
        for i in 0..n {
            if i + AHEAD < n {
                prefetch(&processor, &batch[i + AHEAD].0);
            } else {
                // The record AHEAD on is in the next batch, if it has come.
                if next.is_none() {
                    next = rx.try_recv().ok();
                }
                if let Some(Chunk::Records(following, m, _)) = &next {
                    // Up to the record AHEAD on, catching up if the batch came late.
                    while prefetched <= i + AHEAD - n && prefetched < *m {
                        prefetch(&processor, &following[prefetched].0);
                        prefetched += 1;
                    }
                }
            }
            let (record, span) = &batch[i];
            let end = span.line;
            // One UTF-8 check for the whole record (its fields one after another), then one
            // that every field starts and ends on a character: together, every field is
            // valid. (Joined, the end of one field and the start of the next can make a
            // character neither holds, e.g. Windows-1252 "É" then "€".)
            let text = simdutf8::basic::from_utf8(record.as_slice())
                .ok()
                .filter(|t| fields_on_char_boundaries(t, record));
            let Some(text) = text else {
                if utf8 {
                    return Err(anyhow::Error::new(NotUtf8));
                }
                anyhow::bail!("cannot read the CSV at line {end}: not valid text after decoding");
            };
            // Without a CR, the cells' line breaks are the record's `\n`s (a CR at the end of
            // one cell and a LF at the start of the next must not count as one).
            let bytes = text.as_bytes();
            let breaks: u64 = if memchr::memchr(b'\r', bytes).is_none() {
                count_byte(bytes, b'\n')
            } else {
                record.iter().map(count_line_breaks).sum()
            };
            let line = end.saturating_sub(breaks);
            let blank = line.saturating_sub(prev_end + 1);
            prev_end = end;
            if blank > 0 {
                processor.blank_lines(blank);
            }
            let mut cells = cells_of(text, record, std::mem::take(&mut spare));
            processor.csv_row(bytes, breaks > 0, cut_tail && i + 1 == n);
            processor.locate(span.start, span.end - span.start)?;
            processor.row(line, &cells)?;
            cells.clear();
            spare = cells.into_iter().map(|_| Cell::Empty).collect();
        }
        let _ = empty.send(batch);
    }
    let delimiter = processor.delimiter().unwrap_or(b',');
    let (layout, counts) = processor.finish()?;
    Ok((layout, counts, delimiter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_semicolons_with_decimal_commas() {
        let sample = b"Report title\nActivity ID;State;Cost\nA1;Ordered;12,50\nA2;Completed;1,00\n";
        assert_eq!(sniff_delimiter(sample), b';');
        assert_eq!(sniff_delimiter(b"a,b,c\n1,2,3\n"), b',');
        assert_eq!(sniff_delimiter(b"a\tb\tc\n1\t2\t3\n"), b'\t');
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
    fn bytes_are_counted() {
        let hay: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        for needle in [0u8, b'\n', 0x80, 0xff, b'a'] {
            for len in [0, 1, 7, 8, 9, 100, 1000] {
                let want = hay[..len].iter().filter(|&&b| b == needle).count() as u64;
                assert_eq!(count_byte(&hay[..len], needle), want, "{needle} {len}");
            }
        }
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

    #[test]
    fn excel_sep_hint() {
        assert_eq!(excel_separator_hint(b"sep=;\r\na,b;c"), Some(b';'));
        assert_eq!(excel_separator_hint(b"\xef\xbb\xbfsep=|\nx"), Some(b'|'));
        assert_eq!(excel_separator_hint(b"sep=\t\nx"), Some(b'\t'));
        assert_eq!(excel_separator_hint(b"Activity ID,Status\n"), None);
        assert_eq!(excel_separator_hint(b"sep=ab\n"), None);
    }

    #[test]
    fn line_breaks_in_cells() {
        assert_eq!(count_line_breaks(b"a\nb\r\nc\rd"), 3);
        assert_eq!(count_line_breaks(b"plain"), 0);
        assert_eq!(count_line_breaks(b"x\r"), 1);
        assert_eq!(count_line_breaks(b"x\r\n\r"), 2);
    }

    #[test]
    fn utf16_without_a_bom_is_told_even_with_cyrillic_names() {
        let text = "Activity ID,Status,User Name\r\nA1,Ordered,Анна Иванова Петровна\r\nA2,Ordered,Дмитрий Сергеевич\r\n";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(utf16_without_bom(&le), Some(encoding_rs::UTF_16LE));
        assert_eq!(utf16_without_bom(&be), Some(encoding_rs::UTF_16BE));
        assert_eq!(utf16_without_bom(text.as_bytes()), None);
        assert_eq!(
            utf16_without_bom(b"Zo\xeb M\xfcller,Ordered,\x80 12\r\n"),
            None
        );
    }

    /// The second pass of a two-pass read finds each record where the first pass's
    /// `csv` reader said it lay: blank lines before it, quoted line breaks of every kind,
    /// doubled quotes, a last record with no line break; in a plain and a decoded file,
    /// skipping records (a seek, a read) or taking each.
    #[test]
    fn records_are_read_again_where_the_first_pass_found_them() {
        let text = "sep=,\r\nActivity ID,State,Note\r\n\r\nA1,Ordered,\"two\r\nlines\"\r\n\nA2,\
                    Completed,\"say \"\"hi\"\"\"\rA3,Cancelled,plain\n\n\nA4,Ordered,\"é, \r\rü\"\r\n\
                    A5,Ordered,x\nA6,Completed,\"ü\"";
        let dir = tempfile::tempdir().unwrap();
        for utf8 in [true, false] {
            let path = dir.path().join(format!("r{utf8}.csv"));
            let bytes = if utf8 {
                text.as_bytes().to_vec()
            } else {
                encoding_rs::WINDOWS_1252.encode(text).0.into_owned()
            };
            std::fs::write(&path, bytes).unwrap();
            let file = || File::open(&path).unwrap();
            let stream: Box<dyn Read> = match open(file(), utf8, &mut Vec::new()).unwrap() {
                Stream::Plain(f) => Box::new(f),
                Stream::Decoded(d) => Box::new(d),
            };
            let mut reader = ::csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(stream);
            let mut spans = Vec::new();
            let mut record = ::csv::ByteRecord::new();
            loop {
                let start = reader.position().byte();
                if !reader.read_byte_record(&mut record).unwrap() {
                    break;
                }
                let len = (reader.position().byte() - start) as usize;
                spans.push((start, len, record.clone()));
            }
            assert_eq!(spans.len(), 8, "{spans:?}");
            for step in [1, 2, 3] {
                let mut window = Window::new(open(file(), utf8, &mut Vec::new()).unwrap());
                let mut core = csv_core::ReaderBuilder::new().delimiter(b',').build();
                let (mut out, mut ends) = (Vec::new(), Vec::new());
                for (start, len, want) in spans.iter().skip(step - 1).step_by(step) {
                    let bytes = window.get(*start, *len).unwrap();
                    assert_eq!(bytes.len(), *len);
                    let mut got = ::csv::ByteRecord::new();
                    assert!(parse_record(
                        &mut core, bytes, &mut out, &mut ends, &mut got
                    ));
                    assert_eq!(&got, want, "utf8 {utf8}, step {step}");
                }
            }
        }
    }

    /// Collects the rows handed on in the second pass.
    struct Collect(Vec<(String, u64, Hint)>);

    impl RowHandler for Collect {
        fn accepted(&mut self, row: &crate::report::AcceptedRow<'_>) -> Result<()> {
            self.0.push((row.id.to_string(), row.row, row.hint));
            Ok(())
        }
        fn settled(&mut self, _: u64, _: u64) -> Result<()> {
            Ok(())
        }
        fn rejected(&mut self, r: crate::report::Reject) -> Result<()> {
            panic!("rejected: {r:?}")
        }
        fn warning(&mut self, _: crate::report::RowWarning) {}
        fn skipped(&mut self, _: crate::report::Skip, _: u64) {}
    }

    /// Both passes over one file, with `between` done to it in between.
    fn two_passes(
        path: &std::path::Path,
        between: impl FnOnce(),
    ) -> Result<Vec<(String, u64, Hint)>> {
        let schema = Schema::bundled().unwrap();
        let ctx = DateContext::new(&schema, chrono_tz::UTC).unwrap();
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::ledger::index::TEST_TABLES)
            .unwrap();
        let dir = path.parent().unwrap();
        let mut deferred = crate::deferred::Deferred::new(dir, 0)?;
        let mut handler = Collect(Vec::new());
        let file = File::open(path)?;
        let again = file.try_clone()?;
        let (layout, _, delimiter) = read(
            file,
            &schema,
            ctx.clone(),
            Judge::Defer(&mut deferred),
            &mut handler,
            &mut Vec::new(),
            true,
        )?;
        between();
        let settled = deferred.settle(&conn, 1, false)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        tx.send((settled, delimiter, layout)).unwrap();
        drop(tx);
        reread(again, &schema, ctx, &rx, &mut handler, true)?;
        Ok(handler.0)
    }

    /// The second pass reads the very file the first read: one put under its name in
    /// between is not seen, and one rewritten in place is refused, not read as other rows.
    #[test]
    fn the_second_pass_reads_the_first_passs_file_or_refuses_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_2026-11-01.csv");
        let text = "Activity ID,Status,Last Updated\r\n\
                    A1,Ordered,2026-11-01T10:00:00Z\r\n\
                    A2,Completed,2026-11-01T10:00:00Z\r\n\
                    A3,Ordered,2026-11-01T10:00:00Z\r\n";
        let all = vec![
            ("A1".to_string(), 2, Hint::New),
            ("A2".to_string(), 3, Hint::New),
            ("A3".to_string(), 4, Hint::New),
        ];
        std::fs::write(&path, text).unwrap();
        assert_eq!(two_passes(&path, || {}).unwrap(), all);

        // Another file renamed over it: the rows of the first are handed on.
        let other = dir.path().join("other.csv");
        let swapped = text.replace("A2", "B2").replace("A3", "B3");
        let got = two_passes(&path, || {
            std::fs::write(&other, &swapped).unwrap();
            std::fs::rename(&other, &path).unwrap();
        })
        .unwrap();
        assert_eq!(got, all);

        // The same bytes' places now hold other Activities: refused.
        std::fs::write(&path, text).unwrap();
        let err = two_passes(&path, || {
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            std::io::Write::write_all(&mut f, swapped.as_bytes()).unwrap();
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("the file changed while it was read"),
            "{err:#}"
        );
    }

    #[test]
    fn windows_1252_decodes() {
        let mut out = String::new();
        Decoding::new(&b"Zo\xeb \x80"[..], encoding_rs::WINDOWS_1252)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "Zoë €");
    }
}
