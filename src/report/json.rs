//! JSON Lines reports (`.jsonl`): one JSON object a line, as a pull from the Tangoe API
//! writes them. Each record is a row and each key a column: nested objects are flattened
//! into dotted keys (`shipping_address.city`), arrays stay whole as compact JSON text,
//! `null` is an empty cell. The header is every key any record has, in the order first
//! seen, so the schema's aliases match JSON keys as they match a CSV header, and each
//! record is checked by `row.rs` exactly like a CSV row.
//!
//! Guarantees: records keep their order and are numbered from 1 (record N is "row N" in
//! rejects); a line that is not a JSON object fails the report, naming the line. The file
//! is read twice (keys, then records), never held whole in memory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
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
    let mut columns = Columns::default();
    each_record(path, &mut |_, record| {
        flatten("", record, &mut |key, _| {
            columns.index(key);
        });
        Ok(())
    })?;
    let mut checker = RowChecker::new(schema, ctx, send);
    let header: Vec<Cell<'_>> = columns.names.iter().map(|n| Cell::Text(n)).collect();
    checker.row(0, &header, None)?;
    let mut values: Vec<Option<String>> = Vec::new();
    each_record(path, &mut |number, record| {
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

/// Calls `f` with each record of the file and its number (from 1).
fn each_record(path: &Path, f: &mut OnRecord<'_>) -> Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut number = 0u64;
    for (i, line) in BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(o)) => o,
            Ok(_) => bail!("line {}: not a JSON object", i + 1),
            Err(e) => bail!("line {}: not JSON ({e})", i + 1),
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
}
