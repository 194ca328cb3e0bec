//! The encoding of a row's values, as a report row carries them and an event stores them
//! (`events.attrs`): for each value, its length as a LEB128 varint, then its UTF-8 bytes.
//! Compact and decoded without allocating; the names of the values are stored once per
//! report (`reports.columns`). A leaf module: reports, the ledger and sinks all use it.

use anyhow::{Result, bail};

/// Appends one value; returns where its bytes sit in `out`.
pub(crate) fn push(out: &mut Vec<u8>, value: &str) -> std::ops::Range<usize> {
    let mut n = value.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    let start = out.len();
    out.extend_from_slice(value.as_bytes());
    start..out.len()
}

/// The values of an encoded blob, borrowed from it.
pub(crate) fn decode(mut blob: &[u8]) -> Result<Vec<&str>> {
    let mut out = Vec::with_capacity(32);
    // Values are mostly ASCII and shorter than 128 bytes: then the whole blob is ASCII, one
    // fast check covers every value, and none needs its own.
    let ascii = blob.is_ascii();
    while !blob.is_empty() {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let Some((&byte, rest)) = blob.split_first() else {
                bail!("ledger: truncated attribute length")
            };
            blob = rest;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                bail!("ledger: bad attribute length");
            }
        }
        let n = n as usize;
        if n > blob.len() {
            bail!("ledger: truncated attribute value");
        }
        let (value, rest) = blob.split_at(n);
        out.push(if ascii {
            // SAFETY: every byte of the blob, so of `value`, is ASCII: valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(value) }
        } else {
            std::str::from_utf8(value)
                .map_err(|_| anyhow::anyhow!("ledger: attribute is not UTF-8"))?
        });
        blob = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let long = "x".repeat(300);
        let values = ["", "ACT-1", "Zoë\nMüller", long.as_str()];
        let mut blob = Vec::new();
        for v in values {
            push(&mut blob, v);
        }
        assert_eq!(decode(&blob).unwrap(), values);
        assert!(decode(&blob[..blob.len() - 1]).is_err());
        // A value that is not UTF-8 is refused, in an ASCII blob's company or not.
        for other in ["ACT-1", "Zoë"] {
            let mut bad = Vec::new();
            push(&mut bad, other);
            bad.extend_from_slice(&[2, b'a', 0xff]);
            assert!(decode(&bad).is_err(), "{other}");
        }
    }
}
