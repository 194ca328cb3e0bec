//! The text encoding of a CSV report: which one it is, and a reader that decodes a legacy
//! or UTF-16 file into UTF-8 as it streams.
//!
//! `[report] encoding = "auto"` (the default) decides so: UTF-16 by its BOM or, without
//! one, by its zero bytes; else UTF-8, unless the file does not read as UTF-8 at all: it
//! has bytes that are not UTF-8, and more of them than characters that are (a
//! Windows-1252 export's accented letters are each a byte that is not UTF-8; a UTF-8
//! export damaged in a few places still has its accented letters as UTF-8). Then it is
//! Windows-1252, what Excel's "CSV (Comma delimited)" writes.
//!
//! Guarantees: one bad byte never decides how the rest of a file is read; a file read as
//! UTF-8 keeps its invalid bytes for the row checks to reject (`csv.rs`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

use super::reading::Encoding;

/// A reader that decodes a legacy or UTF-16 encoding into UTF-8 as it streams.
pub(super) struct Decoding<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    raw: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    eof: bool,
    started: bool,
}

impl<R: Read> Decoding<R> {
    pub(super) fn new(inner: R, encoding: &'static encoding_rs::Encoding) -> Self {
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

/// UTF-16 by the file's BOM or zero bytes.
fn utf16(head: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    match &head[..head.len().min(2)] {
        [0xff, 0xfe] => Some(encoding_rs::UTF_16LE),
        [0xfe, 0xff] => Some(encoding_rs::UTF_16BE),
        _ => utf16_without_bom(head),
    }
}

/// Opens the report as UTF-8 text, decoded from its encoding: `encoding`, or for
/// [`Encoding::Auto`] the one it is found to be. Says in `notes` how a file was read when a
/// person may want to know. Also gives the encoding's name (for `inspect`).
pub(super) fn open(
    path: &Path,
    encoding: Encoding,
    notes: &mut Vec<String>,
) -> Result<(Box<dyn Read + Send>, &'static str)> {
    let open = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let mut head = Vec::with_capacity(4096);
    open()?.take(4096).read_to_end(&mut head)?;
    let decoded = |enc: &'static encoding_rs::Encoding| -> Result<(Box<dyn Read + Send>, _)> {
        Ok((Box::new(Decoding::new(open()?, enc)), enc.name()))
    };
    let utf8 = || -> Result<(Box<dyn Read + Send>, _)> { Ok((Box::new(open()?), "UTF-8")) };
    match encoding {
        Encoding::Utf8 => return utf8(),
        Encoding::Windows1252 => return decoded(encoding_rs::WINDOWS_1252),
        Encoding::Utf16 => return decoded(utf16(&head).unwrap_or(encoding_rs::UTF_16LE)),
        Encoding::Auto => {}
    }
    if let Some(enc) = utf16(&head) {
        notes.push(format!("read as {} (Excel's \"Unicode Text\")", enc.name()));
        return decoded(enc);
    }
    let mut file = open()?;
    // A UTF-8 BOM does not make a file UTF-8: Excel's Windows-1252 files may have one too.
    if head.starts_with(b"\xef\xbb\xbf") {
        file.read_exact(&mut [0u8; 3])?;
    }
    // The common case first: a file that is UTF-8 throughout needs no census.
    if is_utf8(&mut file).with_context(|| format!("cannot read {}", path.display()))? {
        return utf8();
    }
    let mut file = open()?;
    if head.starts_with(b"\xef\xbb\xbf") {
        file.read_exact(&mut [0u8; 3])?;
    }
    let census = utf8_census(file).with_context(|| format!("cannot read {}", path.display()))?;
    if census.invalid > census.multibyte {
        notes.push(format!(
            "the file is not UTF-8 ({} not UTF-8, {} UTF-8 characters of two bytes or more): \
             read as Windows-1252 (Excel's \"CSV (Comma delimited)\"); set [report] encoding \
             to say otherwise",
            bytes(census.invalid),
            census.multibyte
        ));
        return decoded(encoding_rs::WINDOWS_1252);
    }
    notes.push(format!(
        "the file is UTF-8 but for {}: the rows holding them are rejected",
        bytes(census.invalid)
    ));
    utf8()
}

/// "1 byte", "2 bytes".
fn bytes(n: u64) -> String {
    if n == 1 {
        "1 byte".to_string()
    } else {
        format!("{n} bytes")
    }
}

/// What a file holds, read as UTF-8.
#[derive(Debug, Default, PartialEq, Eq)]
struct Census {
    /// Characters of two to four bytes.
    multibyte: u64,
    /// Bytes (or cut sequences) that are not UTF-8.
    invalid: u64,
}

/// Reads the whole stream once, a block at a time, counting its UTF-8 characters of more
/// than one byte and its bytes that are not UTF-8.
/// Whether what `r` holds is UTF-8 from start to end (a SIMD check, block by block).
fn is_utf8(r: &mut impl Read) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    // Bytes of a character cut by the end of the last block, moved to the front.
    let mut kept = 0;
    loop {
        let n = r.read(&mut buf[kept..])?;
        let len = kept + n;
        if n == 0 {
            return Ok(len == 0);
        }
        match simdutf8::compat::from_utf8(&buf[..len]) {
            Ok(_) => kept = 0,
            Err(e) if e.error_len().is_none() => {
                let at = e.valid_up_to();
                buf.copy_within(at..len, 0);
                kept = len - at;
            }
            Err(_) => return Ok(false),
        }
    }
}

fn utf8_census(mut r: impl Read) -> std::io::Result<Census> {
    let mut census = Census::default();
    let mut buf = vec![0u8; 1 << 20];
    // Bytes of a character cut by the end of the last block, moved to the front.
    let mut kept = 0;
    loop {
        let n = r.read(&mut buf[kept..])?;
        let len = kept + n;
        let mut at = 0;
        kept = 0;
        while at < len {
            match simdutf8::compat::from_utf8(&buf[at..len]) {
                Ok(valid) => {
                    census.multibyte += lead_bytes(valid.as_bytes());
                    at = len;
                }
                Err(e) => {
                    census.multibyte += lead_bytes(&buf[at..at + e.valid_up_to()]);
                    at += e.valid_up_to();
                    match e.error_len() {
                        Some(bad) => {
                            census.invalid += 1;
                            at += bad;
                        }
                        // A character cut by the block's end: goes on into the next one,
                        // unless this is the end of the file.
                        None if n > 0 => {
                            buf.copy_within(at..len, 0);
                            kept = len - at;
                            at = len;
                        }
                        None => {
                            census.invalid += 1;
                            at = len;
                        }
                    }
                }
            }
        }
        if n == 0 {
            return Ok(census);
        }
    }
}

/// The first bytes of multi-byte characters in valid UTF-8.
fn lead_bytes(valid: &[u8]) -> u64 {
    valid.iter().filter(|&&b| b >= 0xc0).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_utf8_reads_across_blocks_and_refuses_a_bad_or_cut_character() {
        let mut text = vec![b'a'; (1 << 20) - 1];
        text.extend_from_slice("é and more".as_bytes()); // "é" straddles the first block
        assert!(is_utf8(&mut &text[..]).unwrap());
        let mut bad = text.clone();
        bad.push(0xe9);
        bad.push(b'x');
        assert!(!is_utf8(&mut &bad[..]).unwrap());
        let mut cut = text.clone();
        cut.push(0xc3);
        assert!(!is_utf8(&mut &cut[..]).unwrap());
        assert!(is_utf8(&mut &b""[..]).unwrap());
    }

    fn census(bytes: &[u8]) -> (u64, u64) {
        let c = utf8_census(bytes).unwrap();
        (c.multibyte, c.invalid)
    }

    #[test]
    fn utf8_is_counted_across_block_boundaries() {
        // A two-byte character split by the 1 MiB block boundary is still UTF-8.
        let mut data = vec![b'a'; (1 << 20) - 1];
        data.extend_from_slice("é, and more".as_bytes());
        assert_eq!(census(&data), (1, 0));
        data.push(0xff);
        assert_eq!(census(&data), (1, 1));
        // Cut inside a character at the very end: not UTF-8.
        assert_eq!(census(&"é".as_bytes()[..1]), (0, 1));
        assert_eq!(census(b""), (0, 0));
    }

    #[test]
    fn windows_1252_text_has_more_bad_bytes_than_utf8_characters() {
        // "Zoë Müller, Renée" in Windows-1252, and an accidental UTF-8 pair ("Ã©").
        assert_eq!(census(b"Zo\xeb M\xfcller, Ren\xe9e, \xc3\xa9"), (1, 3));
        // UTF-8 with one byte gone wrong.
        assert_eq!(census("Zoë Müller, Renée, ".as_bytes()), (3, 0));
        assert_eq!(census(b"Zo\xc3\xab M\xc3\xbcller, Ren\xe9e"), (2, 1));
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
    fn windows_1252_decodes() {
        let mut out = String::new();
        Decoding::new(&b"Zo\xeb \x80"[..], encoding_rs::WINDOWS_1252)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "Zoë €");
    }
}
