//! One page of `GET /1/activities`: its records, and each record's `updated_at`.
//!
//! The answer's exact shape is not published. Read here: an array of records; or an
//! object holding the array under `records_key`; or, without `records_key`, an object with
//! exactly one key whose value is an array. Anything else fails the page with what was
//! found, so that a surprise is never read as an empty page.
//!
//! Guarantees: a page yields only JSON objects, in the order the API sent them.

use anyhow::{Result, bail};
use serde_json::{Map, Value};

/// The records of one page.
pub(crate) fn records(answer: Value, key: Option<&str>) -> Result<Vec<Map<String, Value>>> {
    let list = match (answer, key) {
        (Value::Array(list), None) => list,
        (Value::Object(mut o), Some(k)) => match o.remove(k) {
            Some(Value::Array(list)) => list,
            Some(other) => bail!(
                "the answer's {k:?} is {}, not an array of records",
                kind(&other)
            ),
            None => bail!(
                "the answer has no key {k:?} (records_key); its keys: {}",
                keys(&o)
            ),
        },
        (Value::Object(o), None) => {
            let arrays: Vec<&String> = o
                .iter()
                .filter(|(_, v)| v.is_array())
                .map(|(k, _)| k)
                .collect();
            match arrays.as_slice() {
                [one] => {
                    let one = (*one).clone();
                    let Some(Value::Array(list)) =
                        o.into_iter().find(|(k, _)| *k == one).map(|(_, v)| v)
                    else {
                        unreachable!("found above")
                    };
                    list
                }
                _ => bail!(
                    "the answer is an object with {} arrays (keys: {}): set records_key to the \
                     one holding the records",
                    arrays.len(),
                    keys(&o)
                ),
            }
        }
        (other, Some(k)) => bail!(
            "the answer is {}, not an object holding {k:?} (records_key)",
            kind(&other)
        ),
        (other, None) => bail!("the answer is {}, not a list of records", kind(&other)),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(o) => Ok(o),
            other => bail!(
                "record {} of the page is {}, not an object",
                i + 1,
                kind(&other)
            ),
        })
        .collect()
}

/// A record's `updated_at` (the key Tangoe's filters name), seconds since the epoch:
/// RFC 3339, or a date-time or date without an offset taken as UTC.
pub(crate) fn updated_at(record: &Map<String, Value>) -> Option<i64> {
    let s = record.get("updated_at")?.as_str()?.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp());
        }
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn keys(o: &Map<String, Value>) -> String {
    let k: Vec<&str> = o.keys().map(String::as_str).take(20).collect();
    if k.is_empty() {
        "none".into()
    } else {
        k.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_records_are_found_in_each_documented_shape() {
        let rec = json!({"id": 1});
        assert_eq!(records(json!([rec]), None).unwrap().len(), 1);
        assert_eq!(
            records(json!({"activities": [rec], "meta": {"page": 1}}), None)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            records(json!({"data": [rec], "links": []}), Some("data"))
                .unwrap()
                .len(),
            1
        );
        assert!(records(json!({"data": [rec], "links": []}), None).is_err());
        assert!(records(json!({"data": [rec]}), Some("items")).is_err());
        assert!(records(json!([1]), None).is_err());
        assert!(records(json!("x"), None).is_err());
    }

    #[test]
    fn updated_at_reads_rfc3339_and_naive_times_as_utc() {
        let at = |s: &str| updated_at(json!({ "updated_at": s }).as_object().unwrap());
        assert_eq!(at("2026-12-05T10:00:00Z"), Some(1_796_464_800));
        assert_eq!(at("2026-12-05T05:00:00-05:00"), Some(1_796_464_800));
        assert_eq!(at("2026-12-05T10:00:00.250"), Some(1_796_464_800));
        assert_eq!(at("2026-12-05"), Some(1_796_428_800));
        assert_eq!(at("yesterday"), None);
    }
}
