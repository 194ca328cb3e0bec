//! CSV reports: RFC 4180 with quoted multi-line cells, CRLF, LF or CR line ends, an
//! optional UTF-8 BOM, a `,` `;` tab or `|` delimiter (sniffed unless the schema sets one),
//! UTF-8, UTF-16 (by its BOM or, without one, by its zero bytes) or, for files that are not
//! valid UTF-8, Windows-1252 (what Excel's "CSV (Comma delimited)" writes).
//!
//! The file is streamed: a `csv` thread splits it into records, handed on in batches whose
//! buffers come back for reuse, while the calling thread checks them; nothing is held whole
//! in memory. Each row is numbered by the line it starts on, as an editor shows it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result};

use super::batch::{OnBatch, Summary};
use super::cell::{Cell, DateContext};
use super::row::{CsvRow, RowChecker};
use super::schema::Schema;

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

/// Records per batch from the reading thread to the checking one.
const BATCH: usize = 512;

/// Records read by the `csv` thread, each with the line it ends on.
type Records = Vec<(::csv::ByteRecord, u64)>;

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
    let mut carry: Option<(::csv::ByteRecord, u64)> = None;
    loop {
        let mut batch = empty
            .try_recv()
            .unwrap_or_else(|_| (0..BATCH).map(|_| (::csv::ByteRecord::new(), 0)).collect());
        let mut n = 0;
        if let Some(c) = carry.take() {
            batch[0] = c;
            n = 1;
        }
        let mut failed = None;
        while n < batch.len() {
            let (record, line) = &mut batch[n];
            match reader.read_byte_record(record) {
                Ok(true) => {}
                Ok(false) => {
                    // The file's last record ends in a quote left open at its end: its last
                    // line break is its own, not a terminator (see `breaks_its_own`).
                    if n > 0 && breaks_its_own(breaks.borrow().tail, &batch[n - 1].0) {
                        batch[n - 1].1 += 1;
                    }
                    break;
                }
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
            *line = 1 + breaks.borrow_mut().before(end_byte.saturating_sub(1));
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

/// Whether the input's final line break belongs to its last record: the record's last
/// field ends with a line break (only a quoted field can hold one) and no quote closes it
/// before the end of the input (`tail`, its last three bytes). Such a record was cut inside
/// a quote left open, and its last line is the input's last.
fn breaks_its_own(tail: [u8; 3], last: &::csv::ByteRecord) -> bool {
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
    ends_in_break && before_break != b'"'
}

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

/// Reads and checks every row of a CSV report, handing the outcomes to `send`. Two
/// threads: a `csv` thread splits the file into records, this one checks them.
pub(crate) fn read(
    path: &Path,
    schema: &Schema,
    ctx: DateContext,
    send: &mut OnBatch<'_>,
) -> Result<Summary> {
    let mut notes = Vec::new();
    let stream = open(path, &mut notes)?;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Records>();
        std::thread::Builder::new()
            .name("csv".into())
            .spawn_scoped(scope, move || {
                split_records(stream, schema.delimiter, tx, empty_rx);
            })?;
        // Returning drops `rx`: the `csv` thread then stops at its next send.
        let checker = RowChecker::new(schema, ctx, send).with_width_checked();
        check_records(checker, &rx, &empty_tx)?.finish(notes)
    })
}

/// Opens the report as UTF-8 text: the file itself when it is valid UTF-8, else decoded
/// from UTF-16 (told by its BOM or its zero bytes) or Windows-1252. Says in `notes` how a
/// decoded file was read.
fn open(path: &Path, notes: &mut Vec<String>) -> Result<Box<dyn Read + Send>> {
    let open = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let mut head = Vec::with_capacity(4096);
    open()?.take(4096).read_to_end(&mut head)?;
    let utf16 = match &head[..head.len().min(2)] {
        [0xff, 0xfe] => Some(encoding_rs::UTF_16LE),
        [0xfe, 0xff] => Some(encoding_rs::UTF_16BE),
        _ => utf16_without_bom(&head),
    };
    if let Some(enc) = utf16 {
        notes.push(format!("read as {} (Excel's \"Unicode Text\")", enc.name()));
        return Ok(Box::new(Decoding::new(open()?, enc)));
    }
    if is_utf8(open()?).with_context(|| format!("cannot read {}", path.display()))? {
        return Ok(Box::new(open()?));
    }
    notes.push(
        "the file is not valid UTF-8: read as Windows-1252 (Excel's \"CSV (Comma delimited)\")"
            .to_string(),
    );
    Ok(Box::new(Decoding::new(open()?, encoding_rs::WINDOWS_1252)))
}

/// Whether the whole stream is valid UTF-8 (read once, a block at a time).
fn is_utf8(mut r: impl Read) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    // Bytes of a character cut by the end of the last block, moved to the front.
    let mut kept = 0;
    loop {
        let n = r.read(&mut buf[kept..])?;
        if n == 0 {
            return Ok(kept == 0);
        }
        let len = kept + n;
        match simdutf8::compat::from_utf8(&buf[..len]) {
            Ok(_) => kept = 0,
            // Only an incomplete character at the very end may go on into the next block.
            Err(e) if e.error_len().is_none() && len - e.valid_up_to() < 4 => {
                let start = e.valid_up_to();
                buf.copy_within(start..len, 0);
                kept = len - start;
            }
            Err(_) => return Ok(false),
        }
    }
}

/// The checking half of [`read`]: takes the `csv` thread's records in order.
fn check_records<'s, 'o>(
    mut checker: RowChecker<'s, 'o>,
    rx: &std::sync::mpsc::Receiver<Chunk>,
    empty: &std::sync::mpsc::Sender<Records>,
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
                continue;
            }
            Chunk::Records(batch, n, unterminated) => (batch, n, unterminated),
            Chunk::End => return Ok(checker),
            Chunk::Failed(e) => return Err(e),
        };
        for (i, (record, end)) in batch[..n].iter().enumerate() {
            // One UTF-8 check for the whole record (its fields one after another), then one
            // that every field starts and ends on a character: together, every field is
            // valid. (Joined, the end of one field and the start of the next can make a
            // character neither holds, e.g. Windows-1252 "É" then "€".)
            let text = simdutf8::basic::from_utf8(record.as_slice())
                .ok()
                .filter(|t| fields_on_char_boundaries(t, record));
            let Some(text) = text else {
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
            prev_end = *end;
            if blank > 0 {
                checker.blank_lines(blank);
            }
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

    #[test]
    fn utf8_is_told_across_block_boundaries() {
        // A two-byte character split by the 1 MiB block boundary is still UTF-8.
        let mut data = vec![b'a'; (1 << 20) - 1];
        data.extend_from_slice("é, and more".as_bytes());
        assert!(is_utf8(&data[..]).unwrap());
        data.push(0xff);
        assert!(!is_utf8(&data[..]).unwrap());
        // Cut inside a character at the very end: not UTF-8.
        assert!(!is_utf8(&"é".as_bytes()[..1]).unwrap());
        assert!(is_utf8(&b""[..]).unwrap());
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
