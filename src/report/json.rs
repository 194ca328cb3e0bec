//! JSON Lines reports (`.jsonl`): one JSON object a line, as a pull from the Tangoe API
//! writes them. Each record is a row and each key a column: nested objects are flattened
//! into dotted keys (`shipping_address.city`), arrays stay whole as compact JSON text,
//! `null` is an empty cell. The header is every key any record has, in the order first
//! seen, so the schema's aliases match JSON keys as they match a CSV header, and each
//! record is checked by `row.rs` exactly like a CSV row.
//!
//! Guarantees: records keep their order and are numbered from 1 (record N is "row N" in
//! rejects); a line that is not a JSON object, or longer than `[report] max_record`, fails
//! the report, naming the line. The file is read twice (keys, then records), never held
//! whole in memory, and no more than `max_record` of a line at once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use super::batch::{OnBatch, Summary};
use super::cell::{Cell, DateContext};
use super::row::RowChecker;
use super::schema::Schema;

/// Reads the records of the file at `path` through the schema.
pub(crate) fn read(
    path: &Path,
    schema: &Schema,
    ctx: DateContext,
    send: &mut OnBatch<'_>,
) -> Result<Summary> {
    let max_record = schema.reading.limits.max_record;
    let mut columns = Columns::default();
    each_record(path, max_record, &mut |_, record| {
        flatten("", record, &mut |key, _| {
            columns.index(key);
        });
        Ok(())
    })?;
    let mut checker = RowChecker::new(schema, ctx, send);
    let header: Vec<Cell<'_>> = columns.names.iter().map(|n| Cell::Text(n)).collect();
    checker.row(0, &header, None)?;
    let mut values: Vec<Option<String>> = Vec::new();
    each_record(path, max_record, &mut |number, record| {
        values.clear();
        values.resize(columns.names.len(), None);
        flatten("", record, &mut |key, value| {
            if let Some(&i) = columns.by_name.get(key) {
                values[i] = value;
            }
        });
        let cells: Vec<Cell<'_>> = values
            .iter()
            .map(|v| match v {
                Some(s) => Cell::Text(s),
                None => Cell::Empty,
            })
            .collect();
        checker.row(number, &cells, None)
    })?;
    checker.finish(Vec::new())
}

/// The columns found: every key, in the order first seen.
#[derive(Default)]
struct Columns {
    names: Vec<String>,
    by_name: HashMap<String, usize>,
}

impl Columns {
    fn index(&mut self, key: &str) {
        if !self.by_name.contains_key(key) {
            self.by_name.insert(key.to_string(), self.names.len());
            self.names.push(key.to_string());
        }
    }
}

/// What [`each_record`] calls with each record and its number.
type OnRecord<'f> = dyn FnMut(u64, &Map<String, Value>) -> Result<()> + 'f;

/// Calls `f` with each record of the file and its number (from 1); a line longer than
/// `max_record` bytes fails the file.
fn each_record(path: &Path, max_record: u64, f: &mut OnRecord<'_>) -> Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut number = 0u64;
    let mut line = Vec::new();
    for i in 1u64.. {
        line.clear();
        let read = (&mut reader)
            .take(max_record.saturating_add(1))
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        if line.len() as u64 > max_record {
            bail!(
                "line {i} is longer than {}: {}",
                super::reading::size(max_record),
                super::reading::past("max_record", &super::reading::size(max_record))
            );
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        let record = match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(o)) => o,
            Ok(_) => bail!("line {i}: not a JSON object"),
            Err(e) => bail!("line {i}: not JSON ({e})"),
        };
        number += 1;
        f(number, &record)?;
    }
    Ok(())
}

/// Calls `leaf` with each leaf of `object`: its dotted key and its value as text (`None`
/// for `null`).
fn flatten(prefix: &str, object: &Map<String, Value>, leaf: &mut dyn FnMut(&str, Option<String>)) {
    for (k, v) in object {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(o) if !o.is_empty() => flatten(&key, o, leaf),
            Value::Object(_) | Value::Null => leaf(&key, None),
            Value::String(s) => leaf(&key, Some(s.clone())),
            Value::Bool(b) => leaf(&key, Some(b.to_string())),
            Value::Number(n) => leaf(&key, Some(n.to_string())),
            Value::Array(_) => leaf(&key, Some(v.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_objects_flatten_into_dotted_keys() {
        let v: Value = serde_json::json!({
            "id": 7, "shipping_address": {"city": "Austin", "geo": {"lat": 1.5}},
            "features": ["a", "b"], "remote_activity_id": null, "ok": true, "empty": {}
        });
        let mut got = Vec::new();
        flatten("", v.as_object().unwrap(), &mut |k, v| {
            got.push(format!("{k}={}", v.unwrap_or_else(|| "∅".into())))
        });
        assert_eq!(
            got,
            [
                "id=7",
                "shipping_address.city=Austin",
                "shipping_address.geo.lat=1.5",
                "features=[\"a\",\"b\"]",
                "remote_activity_id=∅",
                "ok=true",
                "empty=∅"
            ]
        );
    }

    #[test]
    fn a_line_past_max_record_fails_the_file_naming_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pull.jsonl");
        let long = format!("{{\"id\": \"{}\"}}\n", "x".repeat(2000));
        std::fs::write(&path, format!("{{\"id\": \"a\"}}\n{long}")).unwrap();
        let mut seen = 0;
        let e = each_record(&path, 1024, &mut |_, _| {
            seen += 1;
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("line 2 is longer than 1.0 KiB"), "{e}");
        assert!(e.contains("[report] max_record"), "{e}");
        assert_eq!(seen, 1);
        let mut all = 0;
        each_record(&path, 4096, &mut |_, _| {
            all += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(all, 2);
    }
}
