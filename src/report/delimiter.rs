//! Which byte separates a CSV report's cells, when the schema does not say: Excel's
//! `sep=;` first line if there is one, else the candidate (`,` `;` tab `|`) whose count per
//! line is the most consistent over the first lines.
//!
//! Guarantee: decided from the sample alone; a sample with none of the candidates gives
//! `,`.

/// The delimiter of a CSV whose first bytes are `sample`.
pub(super) fn sniff(sample: &[u8]) -> u8 {
    excel_separator_hint(sample).unwrap_or_else(|| sniff_delimiter(sample))
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
fn sniff_delimiter(sample: &[u8]) -> u8 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excel_sep_hint() {
        assert_eq!(excel_separator_hint(b"sep=;\r\na,b;c"), Some(b';'));
        assert_eq!(excel_separator_hint(b"\xef\xbb\xbfsep=|\nx"), Some(b'|'));
        assert_eq!(excel_separator_hint(b"sep=\t\nx"), Some(b'\t'));
        assert_eq!(excel_separator_hint(b"Activity ID,Status\n"), None);
        assert_eq!(excel_separator_hint(b"sep=ab\n"), None);
    }

    #[test]
    fn sniffs_semicolons_with_decimal_commas() {
        let sample = b"Report title\nActivity ID;State;Cost\nA1;Ordered;12,50\nA2;Completed;1,00\n";
        assert_eq!(sniff_delimiter(sample), b';');
        assert_eq!(sniff_delimiter(b"a,b,c\n1,2,3\n"), b',');
        assert_eq!(sniff_delimiter(b"a\tb\tc\n1\t2\t3\n"), b'\t');
        assert_eq!(sniff(b"sep=|\na,b|c\n"), b'|');
    }
}
