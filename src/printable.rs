//! Text as it may reach a log line or a terminal: control characters (a line break, an
//! escape sequence) written as escapes, so that a file name, a header or a value can never
//! forge a log line or drive the terminal. A leaf module.

use std::borrow::Cow;

/// `s` with every control character escaped (`\n`, `\r`, `\t`, `\u{1b}`...).
pub(crate) fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("r_2026-11-01.csv"), "r_2026-11-01.csv");
        assert_eq!(printable("Zoë Müller"), "Zoë Müller");
        assert_eq!(
            printable("a\nb\r\tc\u{1b}[31md\u{7}"),
            "a\\nb\\r\\tc\\u{1b}[31md\\u{7}"
        );
    }
}
