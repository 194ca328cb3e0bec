//! One report cell ([`Cell`]) and its normalisation into a field value.
//!
//! Values are normalised the same way whatever the report's format, so the same data as
//! CSV and as XLSX yields identical Activities: dates become ISO 8601 (date-times RFC 3339
//! in UTC), spreadsheet numbers in text and phone columns become digits, money stays the
//! raw text. A value that cannot be read is an error for the row, never a guess.

use std::borrow::Cow;

use anyhow::{Result, bail};
use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::report::schema::{FieldType, Schema};
use crate::timestamp::{iso_date, rfc3339};

/// One cell of a report row, as the reader found it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell<'a> {
    Empty,
    Text(&'a str),
    /// A spreadsheet number.
    Number(f64),
    /// A spreadsheet cell formatted as a date: its serial number.
    DateSerial(f64),
    Bool(bool),
    /// A spreadsheet error value such as `#N/A`.
    Error(&'a str),
    /// A formula cell saved without its computed value: its value is unknown.
    Uncomputed,
}

/// What a [`Cell::Uncomputed`] is, for messages.
pub(crate) const UNCOMPUTED: &str = "a formula saved without its computed value (the file was \
     written by a program that does not calculate formulas: open it in Excel or LibreOffice and \
     save it again)";

/// How the report's date-times are read.
#[derive(Debug, Clone)]
pub(crate) struct DateContext {
    pub(crate) tz: Tz,
    /// The workbook uses Excel's 1904 date system.
    pub(crate) excel_1904: bool,
    date_formats: Vec<Vec<Item<'static>>>,
    datetime_formats: Vec<Vec<Item<'static>>>,
}

/// A year a report can mean: written with four digits.
pub(crate) fn four_digit_year(year: i32) -> bool {
    (1000..=9999).contains(&year)
}

impl DateContext {
    pub(crate) fn new(schema: &Schema, tz: Tz) -> Result<DateContext> {
        let compile = |fmts: &[String]| -> Result<Vec<Vec<Item<'static>>>> {
            fmts.iter()
                .map(|f| match StrftimeItems::new(f).parse_to_owned() {
                    Ok(items) => Ok(items),
                    Err(_) => bail!("invalid date format {f:?}"),
                })
                .collect()
        };
        Ok(DateContext {
            tz,
            excel_1904: false,
            date_formats: compile(&schema.date_formats)?,
            datetime_formats: compile(&schema.datetime_formats)?,
        })
    }

    fn local(&self, naive: NaiveDateTime) -> DateTime<Utc> {
        // A local time that falls into a DST gap or fold: take the earliest instant.
        let shifted = naive + chrono::Duration::hours(1);
        match self.tz.from_local_datetime(&naive).earliest() {
            Some(t) => t.with_timezone(&Utc),
            // In a DST gap: the same wall time an hour later, in the same zone.
            None => match self.tz.from_local_datetime(&shifted).earliest() {
                Some(t) => t.with_timezone(&Utc),
                None => Utc.from_utc_datetime(&shifted),
            },
        }
    }

    /// Parses a text date or date-time: ISO 8601 first, then the schema's formats.
    pub(crate) fn parse_text(&self, s: &str) -> Option<Temporal> {
        if let Some(t) = parse_iso(s, self) {
            return Some(t);
        }
        // A format's `%Y` takes any number of digits: "11/02/26" must not be read as the
        // year 26 by `%m/%d/%Y` (it is left to a `%y` format, or rejected).
        for items in &self.datetime_formats {
            let mut p = Parsed::new();
            if chrono::format::parse(&mut p, s, items.iter()).is_ok() {
                if let Ok(dt) = p.to_datetime() {
                    if four_digit_year(dt.year()) {
                        return Some(Temporal::DateTime(dt.with_timezone(&Utc)));
                    }
                } else if let Ok(n) = p.to_naive_datetime_with_offset(0)
                    && four_digit_year(n.year())
                {
                    return Some(Temporal::DateTime(self.local(n)));
                }
            }
        }
        for items in &self.date_formats {
            let mut p = Parsed::new();
            if chrono::format::parse(&mut p, s, items.iter()).is_ok()
                && let Ok(d) = p.to_naive_date()
                && four_digit_year(d.year())
            {
                return Some(Temporal::Date(d));
            }
        }
        None
    }

    /// Converts an Excel serial number, honouring the workbook's date system.
    pub(crate) fn serial(&self, serial: f64) -> Option<Temporal> {
        if !serial.is_finite() || !(0.0..2_958_466.0).contains(&serial) {
            return None;
        }
        let (base, days) = if self.excel_1904 {
            (NaiveDate::from_ymd_opt(1904, 1, 1)?, serial.trunc() as i64)
        } else if serial < 61.0 {
            // Excel's 1900 system counts a 29 February 1900 that never was.
            (
                NaiveDate::from_ymd_opt(1899, 12, 31)?,
                serial.trunc() as i64,
            )
        } else {
            (
                NaiveDate::from_ymd_opt(1899, 12, 30)?,
                serial.trunc() as i64,
            )
        };
        let date = base.checked_add_signed(chrono::Duration::days(days))?;
        let secs = (serial.fract() * 86_400.0).round() as i64;
        if secs == 0 {
            return Some(Temporal::Date(date));
        }
        let naive = date.and_time(NaiveTime::MIN) + chrono::Duration::seconds(secs);
        Some(Temporal::DateTime(self.local(naive)))
    }

    /// The instant a date stands for: its midnight in the report's time zone.
    pub(crate) fn date_start(&self, d: NaiveDate) -> DateTime<Utc> {
        self.local(d.and_time(NaiveTime::MIN))
    }
}

/// A parsed date or date-time value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Temporal {
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

impl Temporal {
    fn render(self, kind: FieldType) -> String {
        match (self, kind) {
            (Temporal::Date(d), _) => iso_date(d),
            (Temporal::DateTime(t), FieldType::Date) => iso_date(t.date_naive()),
            (Temporal::DateTime(t), _) => rfc3339(t.timestamp()),
        }
    }

    /// Seconds since the epoch (a date counts from its midnight in the report's zone).
    pub(crate) fn timestamp(self, ctx: &DateContext) -> i64 {
        match self {
            Temporal::Date(d) => ctx.date_start(d).timestamp(),
            Temporal::DateTime(t) => t.timestamp(),
        }
    }
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u32 = 0;
    for &b in s {
        v = v.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some(v)
}

/// A fast reader for ISO 8601: `YYYY-MM-DD`, `YYYY-MM-DD[T ]hh:mm[:ss[.fff]][Z|±hh[:]mm]`.
fn parse_iso(s: &str, ctx: &DateContext) -> Option<Temporal> {
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        digits(&b[0..4])? as i32,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )?;
    if b.len() == 10 {
        return Some(Temporal::Date(date));
    }
    if b[10] != b'T' && b[10] != b' ' && b[10] != b't' {
        return None;
    }
    let rest = &b[11..];
    if rest.len() < 5 || rest[2] != b':' {
        return None;
    }
    let hour = digits(&rest[0..2])?;
    let min = digits(&rest[3..5])?;
    let mut i = 5;
    let mut sec = 0;
    let mut nanos = 0;
    if rest.len() >= 8 && rest[5] == b':' {
        sec = digits(&rest[6..8])?;
        i = 8;
        if i < rest.len() && (rest[i] == b'.' || rest[i] == b',') {
            let start = i + 1;
            let mut end = start;
            while end < rest.len() && rest[end].is_ascii_digit() {
                end += 1;
            }
            if end == start {
                return None;
            }
            let frac = &rest[start..end.min(start + 9)];
            nanos = digits(frac)? * 10u32.pow(9 - frac.len() as u32);
            i = end;
        }
    }
    let time = NaiveTime::from_hms_nano_opt(hour, min, sec, nanos)?;
    let naive = date.and_time(time);
    let zone = &rest[i..];
    let zone = if zone.first() == Some(&b' ') {
        &zone[1..]
    } else {
        zone
    };
    let offset_secs = match zone {
        [] => return Some(Temporal::DateTime(ctx.local(naive))),
        [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let h = digits(&[*h1, *h2])? as i64;
            let m = digits(&[*m1, *m2])? as i64;
            let v = h * 3600 + m * 60;
            if *sign == b'-' { -v } else { v }
        }
        [sign @ (b'+' | b'-'), h1, h2] => {
            let v = digits(&[*h1, *h2])? as i64 * 3600;
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    let utc = naive - chrono::Duration::seconds(offset_secs);
    Some(Temporal::DateTime(Utc.from_utc_datetime(&utc)))
}

/// The outcome of normalising one cell.
#[derive(Debug, PartialEq)]
pub(crate) enum CellValue<'a> {
    /// The normalised text (borrowed from the cell where nothing changes); `warning` says
    /// why it may be lossy or was blanked.
    Ok {
        text: Cow<'a, str>,
        temporal: Option<Temporal>,
        warning: Option<String>,
    },
    /// The cell cannot be read as its field's type: the row is rejected.
    Invalid(String),
}

fn is_exponent_notation(s: &str) -> bool {
    if !s
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
    {
        return false;
    }
    let Some(epos) = s.find(['e', 'E']) else {
        return false;
    };
    let (mantissa, exp) = (&s[..epos], &s[epos + 1..]);
    let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    !mantissa.is_empty()
        && mantissa.chars().all(|c| c.is_ascii_digit() || c == '.')
        && mantissa.chars().any(|c| c.is_ascii_digit())
        && !exp.is_empty()
        && exp.chars().all(|c| c.is_ascii_digit())
}

fn significant_digits(s: &str) -> usize {
    s.trim_start_matches(|c: char| c == '0' || !c.is_ascii_digit())
        .chars()
        .filter(char::is_ascii_digit)
        .count()
}

/// Renders a spreadsheet number for a text or phone column: integral values as digits.
fn number_text(f: f64) -> (String, Option<String>) {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        return (format!("{}", f as i64), None);
    }
    let text = format!("{f}");
    let warning = (f.abs() >= 1e15).then(|| {
        "a number of more than 15 significant digits: the spreadsheet may already have \
         rounded it; store such values as text"
            .to_string()
    });
    (text, warning)
}

/// A text cell without surrounding white space (or a BOM).
pub(crate) fn trim_cell(raw: &str) -> &str {
    // Most cells start and end with a visible ASCII character: nothing to trim.
    let b = raw.as_bytes();
    if let (Some(&first), Some(&last)) = (b.first(), b.last())
        && (b'!'..=b'~').contains(&first)
        && (b'!'..=b'~').contains(&last)
    {
        return raw;
    }
    raw.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// Normalises one cell for a field of type `kind`.
///
/// With `want_text` false, values that would need rendering (dates, spreadsheet numbers)
/// are only validated: the fast path for rows that turn out unchanged.
pub(crate) fn normalize_cell<'a>(
    cell: Cell<'a>,
    kind: FieldType,
    ctx: &DateContext,
    want_text: bool,
) -> CellValue<'a> {
    let ok = |text: Cow<'a, str>| CellValue::Ok {
        text,
        temporal: None,
        warning: None,
    };
    let empty = Cow::Borrowed("");
    match cell {
        Cell::Empty => ok(empty),
        Cell::Error(e) => CellValue::Ok {
            text: empty,
            temporal: None,
            warning: Some(format!("the spreadsheet error value {e} was read as empty")),
        },
        Cell::Uncomputed => CellValue::Ok {
            text: empty,
            temporal: None,
            warning: Some(format!("{UNCOMPUTED}: read as empty")),
        },
        Cell::Bool(b) if kind.is_temporal() => CellValue::Invalid(format!(
            "{} is not a date",
            if b { "TRUE" } else { "FALSE" }
        )),
        Cell::Bool(b) => ok(Cow::Borrowed(if b { "TRUE" } else { "FALSE" })),
        Cell::Number(f) | Cell::DateSerial(f) if kind.is_temporal() => match ctx.serial(f) {
            Some(t) => CellValue::Ok {
                text: if want_text {
                    Cow::Owned(t.render(kind))
                } else {
                    empty
                },
                temporal: Some(t),
                warning: None,
            },
            None => CellValue::Invalid(format!("{f} is not a valid spreadsheet date")),
        },
        Cell::DateSerial(f) => match (want_text, ctx.serial(f)) {
            (false, _) => ok(empty),
            (true, Some(t)) => ok(Cow::Owned(t.render(FieldType::Datetime))),
            (true, None) => ok(Cow::Owned(format!("{f}"))),
        },
        Cell::Number(f) => {
            let (text, warning) = number_text(f);
            CellValue::Ok {
                text: Cow::Owned(text),
                temporal: None,
                warning,
            }
        }
        Cell::Text(raw) if kind.is_temporal() => {
            normalize_date_text(trim_cell(raw), kind, ctx, want_text)
        }
        Cell::Text(raw) => normalize_text(trim_cell(raw), kind),
    }
}

/// A text cell in a date or date-time column: ISO 8601 or one of the schema's formats.
fn normalize_date_text<'a>(
    s: &'a str,
    kind: FieldType,
    ctx: &DateContext,
    want_text: bool,
) -> CellValue<'a> {
    if s.is_empty() {
        return CellValue::Ok {
            text: Cow::Borrowed(""),
            temporal: None,
            warning: None,
        };
    }
    match ctx.parse_text(s) {
        Some(t) => CellValue::Ok {
            text: if want_text {
                Cow::Owned(t.render(kind))
            } else {
                Cow::Borrowed("")
            },
            temporal: Some(t),
            warning: None,
        },
        None => CellValue::Invalid(format!(
            "{:?} matches no accepted {} format (ISO 8601 or the schema's formats)",
            s,
            if kind == FieldType::Date {
                "date"
            } else {
                "date-time"
            }
        )),
    }
}

/// A text cell in any other column: kept as it is (trimmed), with a warning where its
/// value may already be lossy, and a phone number's spreadsheet `.0` dropped.
fn normalize_text(s: &str, kind: FieldType) -> CellValue<'_> {
    let mut warning = None;
    let mut text = s;
    if matches!(kind, FieldType::Phone | FieldType::Text) {
        if is_exponent_notation(s) {
            warning = Some(
                "a number in exponent notation: digits were already lost before this report \
                 was written"
                    .to_string(),
            );
        } else if kind == FieldType::Phone {
            // "5551234567.0" as written by a spreadsheet round trip.
            if let Some(int) = s.strip_suffix(".0")
                && !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
            {
                text = int;
            }
            if significant_digits(text) > 15 && text.bytes().all(|b| b.is_ascii_digit()) {
                warning = Some("more than 15 significant digits".to_string());
            }
        }
    }
    if kind == FieldType::Email && !s.is_empty() && !s.contains('@') {
        warning = Some("not an e-mail address".to_string());
    }
    CellValue::Ok {
        text: Cow::Borrowed(text),
        temporal: None,
        warning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> DateContext {
        DateContext::new(&Schema::bundled().unwrap(), chrono_tz::America::New_York).unwrap()
    }

    fn text(c: Cell<'_>, k: FieldType) -> String {
        match normalize_cell(c, k, &ctx(), true) {
            CellValue::Ok { text, .. } => text.into_owned(),
            CellValue::Invalid(e) => panic!("{e}"),
        }
    }

    #[test]
    fn iso_and_us_dates() {
        assert_eq!(
            text(Cell::Text("2026-11-02T10:00:00Z"), FieldType::Datetime),
            "2026-11-02T10:00:00Z"
        );
        assert_eq!(
            text(Cell::Text("2026-11-02 10:00:00+02:00"), FieldType::Datetime),
            "2026-11-02T08:00:00Z"
        );
        // Naive local times are in the configured zone (New York: UTC-5 in November).
        assert_eq!(
            text(Cell::Text("2026-11-02 10:00"), FieldType::Datetime),
            "2026-11-02T15:00:00Z"
        );
        assert_eq!(
            text(Cell::Text("11/02/2026 3:04 PM"), FieldType::Datetime),
            "2026-11-02T20:04:00Z"
        );
        assert_eq!(
            text(Cell::Text("11/02/2026 15:04:05"), FieldType::Datetime),
            "2026-11-02T20:04:05Z"
        );
        assert_eq!(
            text(Cell::Text("11/02/2026"), FieldType::Date),
            "2026-11-02"
        );
        assert_eq!(
            text(Cell::Text("11/02/2026"), FieldType::Datetime),
            "2026-11-02"
        );
    }

    #[test]
    fn two_digit_years_are_this_century_never_year_26() {
        // `%m/%d/%Y` comes first in the bundled formats and chrono's `%Y` takes "26".
        assert_eq!(
            text(Cell::Text("11/02/26 9:15 AM"), FieldType::Datetime),
            "2026-11-02T14:15:00Z"
        );
        assert_eq!(text(Cell::Text("11/02/26"), FieldType::Date), "2026-11-02");
        // A year no format reads with four digits is not guessed.
        for bad in ["11-02-26", "11/02/202"] {
            assert!(
                matches!(
                    normalize_cell(Cell::Text(bad), FieldType::Datetime, &ctx(), true),
                    CellValue::Invalid(_)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn unparseable_dates_are_invalid_not_guessed() {
        for bad in ["31/12/2026", "2026-13-01", "yesterday", "12/31/2026 25:00"] {
            assert!(
                matches!(
                    normalize_cell(Cell::Text(bad), FieldType::Datetime, &ctx(), true),
                    CellValue::Invalid(_)
                ),
                "{bad}"
            );
        }
        // A spreadsheet's TRUE in a date column is not an empty date.
        for kind in [FieldType::Datetime, FieldType::Date] {
            assert!(matches!(
                normalize_cell(Cell::Bool(true), kind, &ctx(), true),
                CellValue::Invalid(_)
            ));
        }
        assert_eq!(text(Cell::Bool(true), FieldType::Text), "TRUE");
    }

    #[test]
    fn excel_serials_in_both_date_systems() {
        let mut c = ctx();
        assert_eq!(
            c.serial(46328.0),
            Some(Temporal::Date(
                NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
            ))
        );
        c.excel_1904 = true;
        assert_eq!(
            c.serial(46328.0 - 1462.0),
            Some(Temporal::Date(
                NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
            ))
        );
    }

    #[test]
    fn numbers_in_text_columns_are_digits() {
        assert_eq!(
            text(Cell::Number(5551234567.0), FieldType::Phone),
            "5551234567"
        );
        assert_eq!(
            text(Cell::Text("5551234567.0"), FieldType::Phone),
            "5551234567"
        );
        assert_eq!(text(Cell::Number(12.5), FieldType::Text), "12.5");
        let CellValue::Ok { warning, .. } =
            normalize_cell(Cell::Text("5.55123E+09"), FieldType::Phone, &ctx(), true)
        else {
            panic!()
        };
        assert!(warning.is_some());
    }
}
