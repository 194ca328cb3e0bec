//! The caps on what a workbook may expand to, checked before calamine reads it.
//!
//! calamine loads the shared strings table whole when it opens a workbook, and its XML
//! parser holds each tag or text whole: a 1 MB file can inflate to gigabytes of either.
//! A ZIP entry's declared size may lie, so each part is inflated here as a stream (one
//! buffer, never the part) and scanned, stopping at the first cap exceeded:
//!
//! - a part named `sharedStrings.xml`: its inflated size (`max_shared_strings_size`), its
//!   strings, counted and as declared by `uniqueCount` (`max_shared_strings`);
//! - the other parts calamine reads whole on opening (styles, theme, workbook,
//!   relationships, told by their names): their size (`max_styles_size`);
//! - every other part (a worksheet, told apart by nothing calamine can be trusted with):
//!   its size (`max_sheet_size`) and its cells (`max_cells`);
//! - in every part, the longest tag, text, comment or CDATA section as the XML parser
//!   would hold it (`max_cell`).
//!
//! Guarantees: a workbook that passes cannot make calamine hold more than the caps allow;
//! one that does not fails before calamine opens it (or, for its sheets, before calamine
//! reads them), naming the part, the cap and the `[report]` key.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Result, bail};

use super::reading::{Limits, count, past, size};

/// What a part of the archive is, as far as the caps go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SharedStrings,
    /// Read whole when the workbook is opened (styles, theme, workbook, relationships).
    OpenedWhole,
    /// Anything else, a worksheet above all: streamed.
    Sheet,
}

/// Which parts a scan covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parts {
    /// The parts calamine reads when it opens the workbook: to scan before opening it.
    ReadOnOpening,
    /// The parts it streams (the sheets): to scan before reading a sheet.
    Streamed,
}

fn kind(name: &str) -> Kind {
    let lower = name.to_ascii_lowercase();
    let file = lower.rsplit('/').next().unwrap_or(&lower);
    if file == "sharedstrings.xml" {
        Kind::SharedStrings
    } else if file.ends_with(".rels")
        || file == "styles.xml"
        || file == "workbook.xml"
        || file == "[content_types].xml"
        || lower.ends_with("theme/theme1.xml")
    {
        Kind::OpenedWhole
    } else {
        Kind::Sheet
    }
}

/// Scans the workbook's `parts`; an error names the first cap exceeded. An archive or a
/// part that cannot be read is left to calamine, which says what is wrong with it.
pub(super) fn check(path: &Path, limits: &Limits, parts: Parts) -> Result<()> {
    let Ok(file) = File::open(path) else {
        return Ok(());
    };
    let Ok(mut zip) = zip::ZipArchive::new(BufReader::with_capacity(64 * 1024, file)) else {
        return Ok(());
    };
    let mut buf = vec![0u8; CHUNK + LOOKAHEAD];
    for i in 0..zip.len() {
        let Ok(mut entry) = zip.by_index(i) else {
            continue;
        };
        if entry.is_dir() {
            continue;
        }
        let Ok(name) = entry.name().map(|n| n.into_owned()) else {
            continue;
        };
        let kind = kind(&name);
        let wanted = match parts {
            Parts::ReadOnOpening => kind != Kind::Sheet,
            Parts::Streamed => kind == Kind::Sheet,
        };
        if wanted {
            let mut scan = Scan::new(&name, kind, limits);
            scan.part(&mut entry, &mut buf)?;
        }
    }
    Ok(())
}

/// Bytes inflated at a time.
const CHUNK: usize = 256 * 1024;
/// Bytes after a `<` looked at to tell what it opens (a comment, an element's name).
const LOOKAHEAD: usize = 64;

/// Where the scan stands in the XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// Inside a tag; in a quoted attribute value when `quote` is not 0.
    Tag {
        quote: u8,
    },
    /// Inside a comment, CDATA section or processing instruction, until this.
    Until(&'static [u8]),
    /// Inside what is measured to the end of the part (a DOCTYPE, which no workbook part
    /// has: where it ends is not worked out).
    Rest,
}

/// One part's scan.
struct Scan<'a> {
    name: &'a str,
    kind: Kind,
    limits: &'a Limits,
    state: State,
    /// Offset in the part of `buf[0]` for the chunk being scanned.
    base: u64,
    /// Where the tag or text being scanned starts.
    token_start: u64,
    strings: u64,
    cells: u64,
    /// The sheet row last opened (its `r`, or one more than the last).
    row: u64,
    /// The `<sst ...>` tag, gathered to read its `uniqueCount`.
    sst: Option<Vec<u8>>,
}

impl<'a> Scan<'a> {
    fn new(name: &'a str, kind: Kind, limits: &'a Limits) -> Self {
        Scan {
            name,
            kind,
            limits,
            state: State::Text,
            base: 0,
            token_start: 0,
            strings: 0,
            cells: 0,
            row: 0,
            sst: None,
        }
    }

    /// Inflates the part a chunk at a time; the bytes a chunk leaves unscanned (a `<`
    /// whose meaning the next bytes tell) start the next one.
    fn part(&mut self, entry: &mut impl Read, buf: &mut [u8]) -> Result<()> {
        let cap = match self.kind {
            Kind::Sheet => ("max_sheet_size", self.limits.max_sheet_size),
            Kind::SharedStrings => (
                "max_shared_strings_size",
                self.limits.max_shared_strings_size,
            ),
            Kind::OpenedWhole => ("max_styles_size", self.limits.max_styles_size),
        };
        let mut kept = 0;
        loop {
            let n = match entry.read(&mut buf[kept..kept + CHUNK]) {
                Ok(n) => n,
                Err(_) => return Ok(()), // corrupt: calamine says so when it reads it
            };
            let len = kept + n;
            if self.base + len as u64 > cap.1 {
                bail!(
                    "{} inflates to more than {}: {}",
                    self.name,
                    size(cap.1),
                    past(cap.0, &size(cap.1))
                );
            }
            let eof = n == 0;
            let done = self.chunk(&buf[..len], eof)?;
            if eof {
                return Ok(());
            }
            buf.copy_within(done..len, 0);
            kept = len - done;
            self.base += done as u64;
        }
    }

    /// Scans `buf` (the part from `self.base` on); returns how many bytes it is done with.
    fn chunk(&mut self, buf: &[u8], eof: bool) -> Result<usize> {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Text => {
                    // Between two tags there is most often no text at all.
                    let at = if buf[i] == b'<' {
                        i
                    } else if let Some(k) = memchr::memchr(b'<', &buf[i..]) {
                        i + k
                    } else {
                        self.token(buf.len())?;
                        return Ok(buf.len());
                    };
                    self.token(at)?;
                    if buf.len() - at < LOOKAHEAD && !eof {
                        return Ok(at);
                    }
                    i = self.open(buf, at)?;
                }
                State::Tag { quote } => {
                    let (end, quote) = tag_end(buf, i, quote);
                    if let Some(sst) = &mut self.sst {
                        let room = 4096usize.saturating_sub(sst.len());
                        let to = end.unwrap_or(buf.len());
                        sst.extend_from_slice(&buf[i..to.min(i + room)]);
                    }
                    let Some(end) = end else {
                        self.state = State::Tag { quote };
                        self.token(buf.len())?;
                        return Ok(buf.len());
                    };
                    i = end;
                    self.token(i)?;
                    self.base_token(i);
                    self.state = State::Text;
                    if self.sst.is_some() {
                        self.tag_closed()?;
                    }
                }
                State::Rest => {
                    self.token(buf.len())?;
                    return Ok(buf.len());
                }
                State::Until(end) => match memchr::memmem::find(&buf[i..], end) {
                    Some(k) => {
                        i += k + end.len();
                        self.token(i)?;
                        self.base_token(i);
                        self.state = State::Text;
                    }
                    None => {
                        self.token(buf.len())?;
                        // The end marker may begin in this chunk and end in the next.
                        let keep = if eof { 0 } else { end.len() - 1 };
                        return Ok(buf.len().saturating_sub(keep).max(i));
                    }
                },
            }
        }
        Ok(buf.len())
    }

    /// A tag, text or section that goes on at least to `buf[at]`: within `max_cell`?
    #[inline]
    fn token(&self, at: usize) -> Result<()> {
        if self.base + at as u64 - self.token_start <= self.limits.max_cell {
            return Ok(());
        }
        Err(self.too_long())
    }

    #[cold]
    fn too_long(&self) -> anyhow::Error {
        let cap = self.limits.max_cell;
        let what = match self.kind {
            Kind::SharedStrings => format!("shared string {}", count(self.strings.max(1))),
            Kind::Sheet if self.row > 0 => format!("a value or tag in row {}", self.row),
            _ => "a value or tag".to_string(),
        };
        anyhow::anyhow!(
            "{}: {what} is longer than {} (Excel itself holds at most 32,767 characters in a \
             cell): {}",
            self.name,
            size(cap),
            past("max_cell", &size(cap))
        )
    }

    /// The next tag or text starts at `buf[at]`.
    fn base_token(&mut self, at: usize) {
        self.token_start = self.base + at as u64;
    }

    /// At the `<` at `buf[at]`: tells what it opens, counts the elements the caps are on;
    /// returns where to go on from.
    fn open(&mut self, buf: &[u8], at: usize) -> Result<usize> {
        self.base_token(at);
        let rest = &buf[at + 1..];
        let (state, skip) = match rest.first() {
            // As quick-xml tells them: `<!-` a comment, `<![` a CDATA section, `<!D` a
            // DOCTYPE (which no workbook part has: measured to the end of the part).
            Some(b'!') => match rest.get(1) {
                Some(b'-') => (State::Until(b"-->"), 2),
                Some(b'[') => (State::Until(b"]]>"), 2),
                _ => (State::Rest, 1),
            },
            Some(b'?') => (State::Until(b"?>"), 2),
            Some(b'/') | None => (State::Tag { quote: 0 }, 1),
            Some(_) => {
                self.element(&rest[..rest.len().min(LOOKAHEAD)])?;
                (State::Tag { quote: 0 }, 1)
            }
        };
        self.state = state;
        Ok(at + skip)
    }

    /// An element opens with `head` (the bytes after its `<`): counts shared strings,
    /// cells and rows.
    fn element(&mut self, head: &[u8]) -> Result<()> {
        if self.kind == Kind::OpenedWhole {
            return Ok(());
        }
        // The element's name, and its local part (after any `x:` prefix).
        let (mut end, mut local) = (0, 0);
        while let Some(&b) = head.get(end) {
            match b {
                b':' => local = end + 1,
                b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/' => break,
                _ => {}
            }
            end += 1;
        }
        let local = &head[local..end];
        match (self.kind, local) {
            (Kind::SharedStrings, b"si") => {
                self.strings += 1;
                self.check_strings(self.strings, false)?;
            }
            (Kind::SharedStrings, b"sst") => self.sst = Some(Vec::new()),
            (Kind::Sheet, b"c") => {
                self.cells += 1;
                if self.cells > self.limits.max_cells {
                    let cap = count(self.limits.max_cells);
                    bail!(
                        "{}: the sheet holds more than {cap} cells: {}",
                        self.name,
                        past("max_cells", &cap)
                    );
                }
            }
            (Kind::Sheet, b"row") => self.row = row_number(head).unwrap_or(self.row + 1),
            _ => {}
        }
        Ok(())
    }

    /// A tag just closed: the `<sst>` tag's `uniqueCount` is what calamine reserves room for.
    fn tag_closed(&mut self) -> Result<()> {
        if let Some(tag) = self.sst.take()
            && let Some(n) = attribute(&tag, b"uniqueCount").and_then(number)
        {
            self.check_strings(n, true)?;
        }
        Ok(())
    }

    /// `n` strings, counted so far or as `declared` by `uniqueCount`: within the cap?
    fn check_strings(&self, n: u64, declared: bool) -> Result<()> {
        let cap = self.limits.max_shared_strings;
        if n <= cap {
            return Ok(());
        }
        let cap = count(cap);
        let what = if declared {
            format!(
                "declares {} strings (uniqueCount), more than {cap}",
                count(n)
            )
        } else {
            format!("holds more than {cap} strings")
        };
        bail!(
            "{}: the shared strings table {what}: {}",
            self.name,
            past("max_shared_strings", &cap)
        )
    }
}

/// Where the tag that `buf[i..]` is inside of ends (just past its `>`), a `>` in a quoted
/// value being no end; else the quote still open at the end of `buf` (0: none).
#[inline]
fn tag_end(buf: &[u8], mut i: usize, mut quote: u8) -> (Option<usize>, u8) {
    while i < buf.len() {
        let b = buf[i];
        i += 1;
        if quote == 0 {
            match b {
                b'>' => return (Some(i), 0),
                b'"' | b'\'' => quote = b,
                _ => {}
            }
        } else if b == quote {
            quote = 0;
        }
    }
    (None, quote)
}

/// The value of the attribute `name` in a tag's bytes (a plain search: enough for the
/// few attributes read here).
fn attribute<'t>(tag: &'t [u8], name: &[u8]) -> Option<&'t [u8]> {
    let mut from = 0;
    while let Some(k) = memchr::memmem::find(&tag[from..], name) {
        let at = from + k;
        let before_ok = at > 0 && tag[at - 1].is_ascii_whitespace();
        let rest = &tag[at + name.len()..];
        let rest = rest.strip_prefix(b"=").unwrap_or(&[]);
        if before_ok && let Some(&q @ (b'"' | b'\'')) = rest.first() {
            let value = &rest[1..];
            return memchr::memchr(q, value).map(|end| &value[..end]);
        }
        from = at + 1;
    }
    None
}

fn number(digits: &[u8]) -> Option<u64> {
    std::str::from_utf8(digits).ok()?.trim().parse().ok()
}

/// The `r` of a `<row r="5" ...>` whose head (the bytes after `<`) holds it.
fn row_number(head: &[u8]) -> Option<u64> {
    attribute(head, b"r").and_then(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(kind: Kind, xml: &[u8], limits: &Limits) -> Result<Scan<'static>> {
        let limits: &'static Limits = Box::leak(Box::new(*limits));
        let mut s = Scan::new("part.xml", kind, limits);
        let mut buf = vec![0u8; CHUNK + LOOKAHEAD];
        s.part(&mut &xml[..], &mut buf)?;
        Ok(s)
    }

    #[test]
    fn parts_are_told_by_their_names() {
        assert_eq!(kind("xl/sharedStrings.xml"), Kind::SharedStrings);
        assert_eq!(kind("XL/SHAREDSTRINGS.XML"), Kind::SharedStrings);
        assert_eq!(kind("xl/styles.xml"), Kind::OpenedWhole);
        assert_eq!(kind("xl/_rels/workbook.xml.rels"), Kind::OpenedWhole);
        assert_eq!(kind("xl/theme/theme1.xml"), Kind::OpenedWhole);
        assert_eq!(kind("xl/worksheets/sheet1.xml"), Kind::Sheet);
        assert_eq!(kind("xl/worksheets/anything.bin"), Kind::Sheet);
    }

    #[test]
    fn strings_cells_and_rows_are_counted() {
        let l = Limits::default();
        let s = scan(
            Kind::SharedStrings,
            br#"<?xml version="1.0"?><sst uniqueCount="3"><si><t>a</t></si><x:si><x:t>b</x:t></x:si><sig/><si/></sst>"#,
            &l,
        )
        .unwrap();
        assert_eq!(s.strings, 3);
        let s = scan(
            Kind::Sheet,
            br#"<sheetData><row r="7"><c r="A7"><v>1</v></c><c/><col/></row></sheetData>"#,
            &l,
        )
        .unwrap();
        assert_eq!((s.cells, s.row), (2, 7));
    }

    #[test]
    fn every_cap_is_named_when_passed() {
        let l = Limits {
            max_shared_strings: 2,
            max_cell: 16,
            max_cells: 1,
            max_sheet_size: 100,
            ..Limits::default()
        };
        let err = |kind, xml: &[u8]| scan(kind, xml, &l).err().unwrap().to_string();
        assert!(
            err(Kind::SharedStrings, b"<sst><si/><si/><si/></sst>")
                .contains("max_shared_strings = 2")
        );
        let declared = scan(
            Kind::SharedStrings,
            br#"<sst xmlns="x" count="1" uniqueCount="99999999999">"#,
            &Limits {
                max_cell: 1024,
                ..l
            },
        );
        assert!(declared.err().unwrap().to_string().contains(
            "the shared strings table declares 99,999,999,999 strings (uniqueCount), more than 2:"
        ));
        assert!(err(Kind::Sheet, b"<c/><c/>").contains("max_cells = 1"));
        assert!(err(Kind::Sheet, &[b' '; 200]).contains("max_sheet_size"));
        for long in [
            &b"<v>aaaaaaaaaaaaaaaaaaaaaaa</v>"[..],
            b"<c r=\"aaaa>aaaaaaaaaaaaaaaaaaaa\">",
            b"<!-- <a> <b> <c> <d> <e> <f> -->",
            b"<![CDATA[ <a> <b> <c> <d> <e> ]]>",
            b"<!DOCTYPE a [ <!ENTITY b 'c'> ]> <a/>",
        ] {
            assert!(
                err(Kind::Sheet, long).contains("max_cell = 16 B"),
                "{long:?}"
            );
        }
    }

    #[test]
    fn tokens_are_measured_across_chunks() {
        // A comment whose end marker straddles two chunks, then a long text.
        let l = Limits {
            max_cell: 1 << 20,
            ..Limits::default()
        };
        let mut xml = b"<a>".to_vec();
        xml.extend(std::iter::repeat_n(b'x', CHUNK - 3 - 5));
        xml.extend_from_slice(b"<!-- comment -->");
        xml.extend_from_slice(b"</a>");
        scan(Kind::Sheet, &xml, &l).unwrap();
        let mut xml = b"<a>".to_vec();
        xml.extend(std::iter::repeat_n(b'x', (1 << 20) + 1));
        let e = scan(Kind::Sheet, &xml, &l).err().unwrap().to_string();
        assert!(e.contains("longer than 1.0 MiB"), "{e}");
    }
}
