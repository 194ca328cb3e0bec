//! File sink: ITSM import files (JSON lines or CSV), one per run per sink.
//!
//! A file is written under a temporary name in its folder and renamed into place only when
//! complete, so a consumer never sees half a file. Its name comes from the first and last
//! event it holds, so a crash before the delivery mark is written and the rerun rewrite the
//! same file instead of adding a second one with the same events.

use std::io::{BufWriter, Write};

use anyhow::{Context, Result};
use indexmap::IndexMap;
use serde_json::Value;

use super::SinkSummary;
use crate::activity::{State, rfc3339};
use crate::config::{FileFormat, FileSinkConfig};
use crate::ledger::{Ledger, StoredEvent};

const CHUNK: usize = 10_000;

/// The top-level fields of the canonical event, before the attributes.
const CANONICAL: [&str; 8] = [
    "event_id",
    "activity_id",
    "previous_state",
    "state",
    "itsm_number",
    "updated_at",
    "report",
    "row",
];

/// The canonical event (used when a sink has no mapping), as ordered (name, value) pairs.
pub(crate) fn canonical(e: &StoredEvent, schema_fields: &[String]) -> IndexMap<String, Value> {
    let mut m = IndexMap::with_capacity(CANONICAL.len() + e.attrs.len() + 1);
    m.insert("event_id".into(), Value::from(e.key.as_str()));
    m.insert("activity_id".into(), Value::from(e.activity_id.as_str()));
    m.insert(
        "previous_state".into(),
        Value::from(e.previous_state.map_or("", State::as_str)),
    );
    m.insert("state".into(), Value::from(e.state.as_str()));
    m.insert("itsm_number".into(), Value::from(e.itsm_number.as_str()));
    m.insert("updated_at".into(), Value::from(rfc3339(e.updated_at)));
    m.insert("report".into(), Value::from(e.report.as_str()));
    m.insert("row".into(), Value::from(e.row));
    for f in schema_fields {
        if !m.contains_key(f) {
            m.insert(f.clone(), Value::from(""));
        }
    }
    let mut extra = serde_json::Map::new();
    for (i, (k, v)) in e.attrs.iter().enumerate() {
        if i >= e.extra_from {
            extra.insert(k.clone(), Value::from(v.as_str()));
        } else if !CANONICAL.contains(&k.as_str()) {
            m.insert(k.clone(), Value::from(v.as_str()));
        }
    }
    if e.kind != "change" {
        m.insert("kind".into(), Value::from(e.kind.as_str()));
    }
    m.insert("extra".into(), Value::Object(extra));
    m
}

fn record(
    e: &StoredEvent,
    sink: &FileSinkConfig,
    schema_fields: &[String],
) -> Result<IndexMap<String, Value>> {
    match &sink.mapping {
        Some(m) => Ok(m
            .render(e)
            .with_context(|| format!("event {} (activity {})", e.key, e.activity_id))?
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect()),
        None => Ok(canonical(e, schema_fields)),
    }
}

fn csv_header(sink: &FileSinkConfig, schema_fields: &[String]) -> Vec<String> {
    match &sink.mapping {
        Some(m) => m.fields.clone(),
        None => {
            let mut h: Vec<String> = CANONICAL.iter().map(|s| s.to_string()).collect();
            h.extend(
                schema_fields
                    .iter()
                    .filter(|f| !CANONICAL.contains(&f.as_str()))
                    .cloned(),
            );
            h.push("kind".into());
            h.push("extra".into());
            h
        }
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) if o.is_empty() => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Writes every pending event into one file and marks them delivered once it is in place.
pub(crate) fn deliver(
    ledger: &Ledger,
    sink: &FileSinkConfig,
    schema_fields: &[String],
) -> Result<SinkSummary> {
    let mark = ledger.sink_mark(&sink.name)?;
    let mut summary = SinkSummary {
        name: sink.name.clone(),
        ..SinkSummary::default()
    };
    let mut batch = ledger.events_after(mark, CHUNK)?;
    if batch.is_empty() {
        return Ok(summary);
    }
    std::fs::create_dir_all(&sink.dir)
        .with_context(|| format!("cannot create the output folder {}", sink.dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tangoe-ingest-")
        .suffix(".part")
        .tempfile_in(&sink.dir)
        .with_context(|| format!("cannot write in the output folder {}", sink.dir.display()))?;
    let first = batch[0].id;
    let mut last = first;
    let mut count = 0u64;
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut each = |f: &mut dyn FnMut(&StoredEvent) -> Result<()>| -> Result<()> {
            loop {
                for e in &batch {
                    f(e)?;
                    last = e.id;
                    count += 1;
                }
                batch = ledger.events_after(last, CHUNK)?;
                if batch.is_empty() {
                    return Ok(());
                }
            }
        };
        match sink.format {
            FileFormat::Csv => {
                let header = csv_header(sink, schema_fields);
                let mut w = csv::WriterBuilder::new().from_writer(&mut out);
                w.write_record(&header)?;
                each(&mut |e| {
                    let rec = record(e, sink, schema_fields)?;
                    w.write_record(header.iter().map(|h| cell(rec.get(h))))?;
                    Ok(())
                })?;
                w.flush()?;
            }
            FileFormat::Jsonl => {
                each(&mut |e| {
                    serde_json::to_writer(&mut out, &record(e, sink, schema_fields)?)?;
                    out.write_all(b"\n")?;
                    Ok(())
                })?;
            }
        }
        out.flush()?;
    }
    tmp.as_file().sync_all()?;
    let ext = match sink.format {
        FileFormat::Jsonl => "jsonl",
        FileFormat::Csv => "csv",
    };
    let name = format!("{}-{:012}-{:012}.{ext}", sink.prefix, first, last);
    let dest = sink.dir.join(&name);
    tmp.persist(&dest).with_context(|| {
        format!(
            "cannot move the import file into place as {}",
            dest.display()
        )
    })?;
    if let Ok(dir) = std::fs::File::open(&sink.dir) {
        let _ = dir.sync_all();
    }
    ledger.set_sink_mark(&sink.name, last)?;
    tracing::info!(sink = %sink.name, file = %name, events = count, "import file written");
    summary.delivered = count;
    summary.files.push(name);
    Ok(summary)
}
