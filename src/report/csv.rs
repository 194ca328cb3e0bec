//! CSV reports: RFC 4180 with quoted multi-line cells, CRLF or LF, an optional UTF-8 BOM,
//! a `,` `;` tab or `|` delimiter (sniffed unless the schema sets one), UTF-8 or, for files
//! that are not valid UTF-8, Windows-1252 (what Excel's "CSV (Comma delimited)" writes).
//!
//! The file is streamed: one record buffer is reused, nothing is held whole in memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;

use anyhow::{Context, Result};

use super::{Layout, RowCounts, RowHandler, RowProcessor};
use crate::activity::{Cell, DateContext};
use crate::plan::Triage;
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

/// Keeps what is read through it until the parser has passed it, so records can be given
/// the line a person sees in an editor (the csv crate's own line count knows only `\n`; a
/// lone CR, from old Mac files or inside a cell, is a line break too).
struct LineTracker<R> {
    inner: R,
    breaks: std::rc::Rc<std::cell::RefCell<LineBreaks>>,
}

/// The bytes read but not yet passed, and the line breaks counted before them.
#[derive(Default)]
struct LineBreaks {
    /// Bytes from offset `base` on, of which `window[start..]` are not yet passed.
    window: Vec<u8>,
    start: usize,
    base: u64,
    /// Line breaks before offset `base + start`.
    passed: u64,
    /// The input is exhausted: a CR at the very end is a line break.
    eof: bool,
}

impl LineBreaks {
    /// How many line breaks lie strictly before byte `at` (which never moves backwards).
    fn before(&mut self, at: u64) -> u64 {
        let upto = (at.saturating_sub(self.base) as usize).clamp(self.start, self.window.len());
        self.pass(upto);
        self.passed
    }

    /// Counts the breaks in `window[start..upto]` and moves past them.
    fn pass(&mut self, upto: usize) {
        let seg = &self.window[self.start..upto];
        let next = self.window.get(upto).copied();
        self.passed += count_breaks(seg, next, self.eof);
        self.start = upto;
    }

    fn append(&mut self, chunk: &[u8]) {
        // Forget what is passed once it is the larger part (amortised: each byte moves once).
        if self.start > 0 && self.start >= self.window.len() / 2 {
            self.window.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        self.window.extend_from_slice(chunk);
        // The parser never sits further back than its buffers hold: older bytes are counted
        // and forgotten, so a flood of blank lines (no records, so no `before` calls)
        // cannot grow the window.
        if self.window.len() - self.start > 2 * FOLD_BEHIND {
            self.pass(self.window.len() - FOLD_BEHIND);
        }
    }
}

/// Line breaks in `seg`: each `\n`, and each CR not followed by `\n` (`next` is the byte
/// after `seg`, if known; with none, a final CR counts only at the end of the input).
fn count_breaks(seg: &[u8], next: Option<u8>, eof: bool) -> u64 {
    let lf = count_byte(seg, b'\n');
    if memchr::memchr(b'\r', seg).is_none() {
        return lf;
    }
    let mut lone = 0;
    for i in memchr::memchr_iter(b'\r', seg) {
        match seg.get(i + 1).copied().or(next) {
            Some(b'\n') => {}
            Some(_) => lone += 1,
            None => lone += u64::from(eof),
        }
    }
    lf + lone
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
        let mut b = self.breaks.borrow_mut();
        b.eof |= n == 0;
        b.append(&buf[..n]);
        Ok(n)
    }
}

/// More than the parser can hold back: the BufReader (64 KiB) plus the csv buffer (256 KiB).
const FOLD_BEHIND: usize = 1 << 20;

/// Line breaks inside a cell: `\r\n`, `\n` or a lone `\r` each count once.
fn count_line_breaks(b: &[u8]) -> u64 {
    count_breaks(b, None, true)
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

/// Parses and checks every row of a CSV report into `handler`.
/// Records read ahead of the one being checked (see `read`).
const AHEAD: usize = 16;

pub(crate) fn read<H: RowHandler>(
    path: &Path,
    schema: &Schema,
    ctx: DateContext,
    triage: &mut Triage,
    handler: &mut H,
    notes: &mut Vec<String>,
    utf8: bool,
) -> Result<(Layout, RowCounts)> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bom = [0u8; 2];
    let got = file.read(&mut bom)?;
    file.rewind()?;
    let utf16 = match &bom[..got] {
        [0xff, 0xfe] => Some(encoding_rs::UTF_16LE),
        [0xfe, 0xff] => Some(encoding_rs::UTF_16BE),
        _ => None,
    };
    let stream: Box<dyn Read> = match (utf16, utf8) {
        (Some(enc), _) => {
            notes.push(format!("read as {} (Excel's \"Unicode Text\")", enc.name()));
            Box::new(Decoding::new(file, enc))
        }
        (None, true) => Box::new(file),
        (None, false) => {
            notes.push(
                "the file is not valid UTF-8: read as Windows-1252 (Excel's \"CSV (Comma delimited)\")"
                    .to_string(),
            );
            Box::new(Decoding::new(file, encoding_rs::WINDOWS_1252))
        }
    };
    let breaks = std::rc::Rc::new(std::cell::RefCell::new(LineBreaks::default()));
    let tracked = LineTracker {
        inner: stream,
        breaks: breaks.clone(),
    };
    let mut buffered = BufReader::with_capacity(SNIFF_BYTES, tracked);
    let delimiter = match schema.delimiter {
        Some(d) => d,
        None => {
            let sample = buffered.fill_buf()?;
            excel_separator_hint(sample).unwrap_or_else(|| sniff_delimiter(sample))
        }
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .buffer_capacity(256 * 1024)
        .from_reader(buffered);
    let mut processor = RowProcessor::new(schema, ctx, triage, handler);
    // Records are read AHEAD rows before they are checked: as each is read, the index slot
    // of its Activity starts loading into the CPU cache, and is there when its turn comes
    // (the index is far larger than the caches and its look-ups are random).
    let mut ring: Vec<(::csv::ByteRecord, u64)> =
        (0..AHEAD).map(|_| (::csv::ByteRecord::new(), 0)).collect();
    let (mut head, mut filled) = (0usize, 0usize);
    let mut read_error = None;
    let mut spare: Vec<Cell<'static>> = Vec::new();
    let mut prev_end = 0u64;
    loop {
        while read_error.is_none() && filled < AHEAD {
            let (record, end) = &mut ring[(head + filled) % AHEAD];
            match reader.read_byte_record(record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let where_ = match e.position() {
                        Some(p) => format!(" at line {}", p.line()),
                        None => String::new(),
                    };
                    read_error = Some(anyhow::anyhow!("cannot read the CSV{where_}: {e}"));
                    break;
                }
            }
            // The record's last byte is just before the reader's position (a `\n` there is
            // its terminator); it starts as many lines earlier as its cells hold line
            // breaks, counted when it is checked.
            let end_byte = reader.position().byte();
            *end = 1 + breaks.borrow_mut().before(end_byte.saturating_sub(1));
            if let Some(id) = processor
                .id_column()
                .and_then(|c| record.get(c))
                .and_then(|b| std::str::from_utf8(b).ok())
            {
                processor.prefetch(id);
            }
            filled += 1;
        }
        if filled == 0 {
            break;
        }
        let (record, end) = &ring[head];
        let end = *end;
        head = (head + 1) % AHEAD;
        filled -= 1;
        // One UTF-8 check for the whole record (its fields one after another), then one
        // that every field starts and ends on a character: together, every field is valid.
        // (Joined, the end of one field and the start of the next can make a character
        // neither holds, e.g. Windows-1252 "É" then "€".)
        let text = std::str::from_utf8(record.as_slice())
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
        processor.row(line, &cells)?;
        cells.clear();
        spare = cells.into_iter().map(|_| Cell::Empty).collect();
    }
    if let Some(e) = read_error {
        return Err(e);
    }
    processor.finish()
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
        assert!(b.window.len() <= 4 * FOLD_BEHIND, "{}", b.window.len());
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
        assert_eq!(count_breaks(b"x\r", Some(b'\n'), false), 0);
        assert_eq!(count_breaks(b"x\r", None, false), 0);
        assert_eq!(count_breaks(b"x\r", None, true), 1);
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
