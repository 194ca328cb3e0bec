//! Timestamps as events and import files write them: RFC 3339 in UTC, ISO 8601 dates.
//!
//! A leaf module. Formatted by hand: this runs for every event written, and chrono's
//! formatter parses its format string each time.

use chrono::{DateTime, Datelike, NaiveDate, Timelike};

/// Renders seconds since the epoch as RFC 3339 in UTC.
pub(crate) fn rfc3339(ts: i64) -> String {
    let Some(t) = DateTime::from_timestamp(ts, 0) else {
        return String::new();
    };
    let mut s = iso_date(t.date_naive());
    let hms = t.time();
    s.push('T');
    push2(&mut s, hms.hour());
    s.push(':');
    push2(&mut s, hms.minute());
    s.push(':');
    push2(&mut s, hms.second());
    s.push('Z');
    s
}

/// `YYYY-MM-DD` (years outside 0..=9999 fall back to chrono).
pub(crate) fn iso_date(d: NaiveDate) -> String {
    let y = d.year();
    if !(0..=9999).contains(&y) {
        return d.format("%Y-%m-%d").to_string();
    }
    let mut s = String::with_capacity(20);
    push2(&mut s, (y / 100) as u32);
    push2(&mut s, (y % 100) as u32);
    s.push('-');
    push2(&mut s, d.month());
    s.push('-');
    push2(&mut s, d.day());
    s
}

fn push2(s: &mut String, v: u32) {
    s.push(char::from(b'0' + (v / 10 % 10) as u8));
    s.push(char::from(b'0' + (v % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_formatting_matches_chrono() {
        for ts in [0i64, 1_793_000_000, 951_782_400, 4_102_444_799, -86_400] {
            let t = DateTime::from_timestamp(ts, 0).unwrap();
            assert_eq!(rfc3339(ts), t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            assert_eq!(iso_date(t.date_naive()), t.format("%Y-%m-%d").to_string());
        }
    }
}
