//! File sink: ITSM import files (JSON lines or CSV), one per run per sink.
//!
//! A file is written under a temporary name in its folder and renamed into place only when
//! complete, so a consumer never sees half a file. Its name comes from the first and last
//! event it holds, so a crash before the delivery mark is written and the rerun rewrite the
//! same file instead of adding a second one with the same events.
//!
//! With `upload`, each file is also uploaded to an SFTP folder (under a temporary name, then
//! renamed); its events count as delivered only once the upload is complete.

use std::borrow::Cow;
use std::io::Write;

use anyhow::{Context, Result};
use indexmap::IndexMap;
use serde_json::Value;

use super::SinkSummary;
use crate::config::{FileFormat, FileSinkConfig};
use crate::state::State;
use crate::timestamp::rfc3339;
use std::sync::Arc;

use crate::ledger::{Columns, EventView, InFlight, Ledger, OwnedEvent, StoredEvent};
use crate::sftp::config::UploadConfig;

/// Events read from the ledger per batch handed to the writing thread.
const BATCH: usize = 512;

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

/// The canonical event (used when a sink has no mapping): `event_id`, `activity_id`,
/// `previous_state`, `state`, `itsm_number`, `updated_at`, `report`, `row`, every schema
/// field by name (empty when the report lacked it), `kind` for re-sent events, and `extra`
/// (the columns the schema does not name).
pub(crate) struct Canonical<'a> {
    /// Everything but `row` and `extra`, in output order (`row` goes after `report`).
    pub(crate) fields: Vec<(&'a str, Cow<'a, str>)>,
    pub(crate) row: u64,
    pub(crate) extra: Vec<(&'a str, &'a str)>,
}

/// Where each schema field's value sits among a report's columns, and the JSON keys of the
/// canonical event (cached per report: an event's columns are shared by its report's events).
#[derive(Default)]
pub(crate) struct FieldMap {
    /// The columns this map was built for (held, so they cannot be freed and another
    /// report's take their place at the same address).
    key: Option<Arc<Columns>>,
    /// For each schema field not in [`CANONICAL`]: its index in the report's fields.
    positions: Vec<(usize, Option<usize>)>,
    /// The report's fields that neither [`CANONICAL`] nor the schema names (an older
    /// schema's fields): their indices.
    kept: Vec<usize>,
    /// `,"name":` for each of `positions`, then each of `kept`, then each extra column.
    json_keys: Vec<Vec<u8>>,
}

impl FieldMap {
    fn prepare(&mut self, columns: &Arc<Columns>, schema_fields: &[String]) {
        if self.key.as_ref().is_some_and(|k| Arc::ptr_eq(k, columns)) {
            return;
        }
        self.key = Some(columns.clone());
        let report_fields = &columns.fields;
        self.positions = schema_fields
            .iter()
            .enumerate()
            .filter(|(_, f)| !CANONICAL.contains(&f.as_str()))
            .map(|(i, f)| (i, report_fields.iter().position(|r| r == f)))
            .collect();
        self.kept = report_fields
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                !CANONICAL.contains(&r.as_str()) && !schema_fields.iter().any(|f| f == *r)
            })
            .map(|(i, _)| i)
            .collect();
        let key = |name: &str| {
            let mut k = b",".to_vec();
            json_str(&mut k, name);
            k.push(b':');
            k
        };
        self.json_keys = (self.positions.iter().map(|&(i, _)| &schema_fields[i]))
            .chain(self.kept.iter().map(|&i| &report_fields[i]))
            .chain(&columns.extras)
            .map(|n| key(n))
            .collect();
    }
}

/// Appends the canonical event (see [`Canonical`]) as one JSON object, straight from the
/// stored values with the keys `map` rendered for the event's report.
fn write_canonical_json(v: &EventView<'_>, map: &FieldMap, out: &mut Vec<u8>) {
    let value = |i: usize| v.values.get(i).copied();
    out.extend_from_slice(b"{\"event_id\":");
    json_str(out, v.key);
    out.extend_from_slice(b",\"activity_id\":");
    json_str(out, v.activity_id);
    out.extend_from_slice(b",\"previous_state\":");
    json_str(out, v.previous_state.map_or("", State::as_str));
    out.extend_from_slice(b",\"state\":");
    json_str(out, v.state.as_str());
    out.extend_from_slice(b",\"itsm_number\":");
    json_str(out, v.itsm_number);
    out.extend_from_slice(b",\"updated_at\":");
    json_str(out, &rfc3339(v.updated_at));
    out.extend_from_slice(b",\"report\":");
    json_str(out, v.report);
    out.extend_from_slice(b",\"row\":");
    out.extend_from_slice(v.row.to_string().as_bytes());
    let mut keys = map.json_keys.iter();
    for (&(_, pos), k) in map.positions.iter().zip(&mut keys) {
        out.extend_from_slice(k);
        json_str(out, pos.and_then(value).unwrap_or(""));
    }
    for (&i, k) in map.kept.iter().zip(&mut keys) {
        if let Some(x) = value(i) {
            out.extend_from_slice(k);
            json_str(out, x);
        }
    }
    if v.kind != "change" {
        out.extend_from_slice(b",\"kind\":");
        json_str(out, v.kind);
    }
    out.extend_from_slice(b",\"extra\":{");
    let n = v.fields.len();
    for (j, k) in keys.enumerate() {
        let Some(x) = value(n + j) else { break };
        out.extend_from_slice(if j == 0 { &k[1..] } else { k });
        json_str(out, x);
    }
    out.extend_from_slice(b"}}");
}

impl<'a> Canonical<'a> {
    #[allow(clippy::too_many_arguments)]
    fn build(
        key: &'a str,
        activity_id: &'a str,
        previous_state: Option<State>,
        state: State,
        itsm_number: &'a str,
        updated_at: i64,
        report: &'a str,
        row: u64,
        kind: &'a str,
        fields: &[(&'a str, &'a str)],
        extra: Vec<(&'a str, &'a str)>,
        map: &FieldMap,
        schema_fields: &'a [String],
    ) -> Canonical<'a> {
        let mut out: Vec<(&'a str, Cow<'a, str>)> =
            Vec::with_capacity(CANONICAL.len() + schema_fields.len() + 1);
        out.push(("event_id", Cow::Borrowed(key)));
        out.push(("activity_id", Cow::Borrowed(activity_id)));
        out.push((
            "previous_state",
            Cow::Borrowed(previous_state.map_or("", State::as_str)),
        ));
        out.push(("state", Cow::Borrowed(state.as_str())));
        out.push(("itsm_number", Cow::Borrowed(itsm_number)));
        out.push(("updated_at", Cow::Owned(rfc3339(updated_at))));
        out.push(("report", Cow::Borrowed(report)));
        for &(i, pos) in &map.positions {
            let v = pos.and_then(|p| fields.get(p)).map_or("", |f| f.1);
            out.push((schema_fields[i].as_str(), Cow::Borrowed(v)));
        }
        // Fields an older schema had and the current one does not: kept, never dropped.
        for &(name, v) in map.kept.iter().filter_map(|&i| fields.get(i)) {
            out.push((name, Cow::Borrowed(v)));
        }
        if kind != "change" {
            out.push(("kind", Cow::Borrowed(kind)));
        }
        Canonical {
            fields: out,
            row,
            extra,
        }
    }

    /// `map` must be prepared for the event's columns.
    pub(crate) fn of_view(
        v: &'a EventView<'a>,
        map: &FieldMap,
        schema_fields: &'a [String],
    ) -> Canonical<'a> {
        let n = v.fields.len();
        let fields: Vec<(&str, &str)> = v
            .fields
            .iter()
            .map(String::as_str)
            .zip(v.values.iter().copied())
            .collect();
        let extra = v
            .extras
            .iter()
            .map(String::as_str)
            .zip(v.values.iter().skip(n).copied())
            .collect();
        Canonical::build(
            v.key,
            v.activity_id,
            v.previous_state,
            v.state,
            v.itsm_number,
            v.updated_at,
            v.report,
            v.row,
            v.kind,
            &fields,
            extra,
            map,
            schema_fields,
        )
    }

    pub(crate) fn of_stored(e: &'a StoredEvent, schema_fields: &'a [String]) -> Canonical<'a> {
        let fields: Vec<(&str, &str)> = e.attrs[..e.extra_from.min(e.attrs.len())]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let columns = Arc::new(Columns {
            fields: fields.iter().map(|f| f.0.to_string()).collect(),
            extras: Vec::new(),
        });
        let mut map = FieldMap::default();
        map.prepare(&columns, schema_fields);
        let extra = e
            .attrs
            .iter()
            .skip(e.extra_from)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Canonical::build(
            &e.key,
            &e.activity_id,
            e.previous_state,
            e.state,
            &e.itsm_number,
            e.updated_at,
            &e.report,
            e.row,
            &e.kind,
            &fields,
            extra,
            &map,
            schema_fields,
        )
    }

    /// As one JSON object, appended to `out`: the reference [`write_canonical_json`] is
    /// checked against.
    #[cfg(test)]
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> Result<()> {
        out.push(b'{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, k);
            out.push(b':');
            json_str(out, v);
            if *k == "report" {
                out.extend_from_slice(b",\"row\":");
                out.extend_from_slice(self.row.to_string().as_bytes());
            }
        }
        out.extend_from_slice(b",\"extra\":{");
        for (i, (k, v)) in self.extra.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, k);
            out.push(b':');
            json_str(out, v);
        }
        out.extend_from_slice(b"}}");
        Ok(())
    }

    /// As an ordered map (for request bodies).
    pub(crate) fn to_map(&self) -> IndexMap<String, Value> {
        let mut m = IndexMap::with_capacity(self.fields.len() + 2);
        for (k, v) in &self.fields {
            m.insert(k.to_string(), Value::from(v.as_ref()));
            if *k == "report" {
                m.insert("row".into(), Value::from(self.row));
            }
        }
        let extra: serde_json::Map<String, Value> = self
            .extra
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        m.insert("extra".into(), Value::Object(extra));
        m
    }

    /// The value of a CSV column named `h` (`extra` as a JSON object, empty when none).
    fn csv_cell(&self, h: &str) -> String {
        match h {
            "row" => self.row.to_string(),
            "extra" if self.extra.is_empty() => String::new(),
            "extra" => {
                let m: serde_json::Map<String, Value> = self
                    .extra
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::from(*v)))
                    .collect();
                Value::Object(m).to_string()
            }
            _ => self
                .fields
                .iter()
                .find(|(k, _)| *k == h)
                .map_or(String::new(), |(_, v)| v.to_string()),
        }
    }
}

/// The canonical event of a stored event, as an ordered map.
pub(crate) fn canonical(e: &StoredEvent, schema_fields: &[String]) -> IndexMap<String, Value> {
    Canonical::of_stored(e, schema_fields).to_map()
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

enum Out<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Jsonl(W),
}

/// Whether no byte of `b` needs a JSON escape: 32 bytes at a time, without branches inside
/// a block (the compiler turns a block into a few vector instructions).
fn needs_no_escape(b: &[u8]) -> bool {
    let escapes = |acc: u8, &c: &u8| acc | u8::from((c < 0x20) | (c == b'"') | (c == b'\\'));
    let mut blocks = b.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(0u8, escapes) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().fold(0u8, escapes) == 0
}

/// Appends `s` as a JSON string, escaped exactly as `serde_json` does (the short escapes,
/// `\u00XX` for other control characters, nothing else). Most values need no escaping:
/// one pass without branches tells, and they are copied whole.
fn json_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.push(b'"');
    if needs_no_escape(b) {
        out.extend_from_slice(b);
    } else {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut start = 0;
        for (i, &c) in b.iter().enumerate() {
            let short: &[u8] = match c {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => continue,
            };
            out.extend_from_slice(&b[start..i]);
            start = i + 1;
            if short.is_empty() {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            } else {
                out.extend_from_slice(short);
            }
        }
        out.extend_from_slice(&b[start..]);
    }
    out.push(b'"');
}

/// Writes one event as a line (JSONL) or a record (CSV) of the sink's file.
fn write_event<W: Write>(
    e: &OwnedEvent,
    sink: &FileSinkConfig,
    schema_fields: &[String],
    map: &mut FieldMap,
    header: &[String],
    line: &mut Vec<u8>,
    out: &mut Out<W>,
) -> Result<()> {
    let v = &e.view()?;
    match (&sink.mapping, out) {
        (Some(m), out) => {
            let stored = v.to_stored();
            let rec = m
                .render(&stored)
                .with_context(|| format!("event {} (activity {})", v.key, v.activity_id))?;
            match out {
                Out::Csv(w) => {
                    w.write_record(header.iter().map(|h| rec.get(h).map_or("", String::as_str)))?
                }
                Out::Jsonl(w) => {
                    line.clear();
                    serde_json::to_writer(&mut *line, &rec)?;
                    line.push(b'\n');
                    w.write_all(line)?;
                }
            }
        }
        (None, Out::Csv(w)) => {
            map.prepare(e.columns(), schema_fields);
            let c = Canonical::of_view(v, map, schema_fields);
            w.write_record(header.iter().map(|h| c.csv_cell(h)))?;
        }
        (None, Out::Jsonl(w)) => {
            map.prepare(e.columns(), schema_fields);
            line.clear();
            write_canonical_json(v, map, line);
            line.push(b'\n');
            w.write_all(line)?;
        }
    }
    Ok(())
}

/// Removes the temporary files a killed run left in the output folder (this run holds the
/// ledger lock: no other run is writing there).
fn remove_stale_parts(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".tangoe-ingest-") && name.ends_with(".part") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes the pending events into import files, and marks each file's events delivered once
/// it is in place (and uploaded). A file put in place whose mark was never written (a crash,
/// a failed upload) goes first, with exactly its events again under its name, replacing it
/// wherever it got to; then one file holds the rest. So the ITSM never gets an event in two
/// files, however many runs the upload failed in while new events came.
pub(crate) fn deliver(
    ledger: &Ledger,
    sink: &FileSinkConfig,
    schema_fields: &[String],
) -> Result<SinkSummary> {
    let mut summary = SinkSummary {
        name: sink.name.clone(),
        ..SinkSummary::default()
    };
    let in_flight = ledger.file_in_flight(&sink.name)?;
    match &in_flight {
        Some(
            f @ InFlight {
                last: Some(last), ..
            },
        ) => {
            if *last > ledger.sink_mark(&sink.name)? {
                write_file(ledger, sink, schema_fields, &mut summary, Some(f))?;
            } else {
                ledger.set_file_in_flight(&sink.name, None)?;
            }
        }
        // A name that says nothing of its events: it may be replaced by the next file.
        Some(f) => {
            let unknown = f.clone();
            return write_file(ledger, sink, schema_fields, &mut summary, Some(&unknown))
                .map(|()| summary);
        }
        None => {}
    }
    if let Err(e) = write_file(ledger, sink, schema_fields, &mut summary, None) {
        if summary.files.is_empty() {
            return Err(e);
        }
        // The file in flight went out: said, with the failure of the rest.
        tracing::error!(sink = %sink.name, "delivery failed: {e:#}");
        summary.error = Some(format!("{e:#}"));
        summary.pending = ledger.count_events_after(ledger.sink_mark(&sink.name)?)?;
    }
    Ok(summary)
}

/// Writes the events after the sink's mark into one file: those up to `again.last` under the
/// name `again` holds when given (a file to put in place again), else all of them under a
/// new name free in the folder and in the upload folder.
fn write_file(
    ledger: &Ledger,
    sink: &FileSinkConfig,
    schema_fields: &[String],
    summary: &mut SinkSummary,
    again: Option<&InFlight>,
) -> Result<()> {
    let mark = ledger.sink_mark(&sink.name)?;
    let upto = again.and_then(|f| f.last).unwrap_or(i64::MAX);
    let started = std::time::Instant::now();
    if !ledger.any_event_after(mark)? {
        return Ok(());
    }
    std::fs::create_dir_all(&sink.dir)
        .with_context(|| format!("cannot create the output folder {}", sink.dir.display()))?;
    remove_stale_parts(&sink.dir);
    let tmp = tempfile::Builder::new()
        .prefix(".tangoe-ingest-")
        .suffix(".part")
        .tempfile_in(&sink.dir)
        .with_context(|| format!("cannot write in the output folder {}", sink.dir.display()))?;
    let mut first = None;
    let mut last = mark;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "events found");
    // This thread reads the events from the ledger; a second one renders and writes them.
    let count = std::thread::scope(|scope| -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<OwnedEvent>>(4);
        // Rendered batches go back to be refilled: no allocation per event or batch.
        let (used_tx, used_rx) = std::sync::mpsc::sync_channel::<Vec<OwnedEvent>>(6);
        let tmp_file = tmp.as_file();
        let writer = scope.spawn(move || -> Result<u64> {
            let file = std::io::BufWriter::with_capacity(1 << 20, tmp_file);
            let header = csv_header(sink, schema_fields);
            let mut out = match sink.format {
                FileFormat::Csv => {
                    let mut w = csv::WriterBuilder::new().from_writer(file);
                    w.write_record(&header)?;
                    Out::Csv(Box::new(w))
                }
                FileFormat::Jsonl => Out::Jsonl(file),
            };
            let mut map = FieldMap::default();
            let mut line = Vec::with_capacity(4096);
            let mut count = 0u64;
            for batch in rx {
                for e in &batch {
                    write_event(
                        e,
                        sink,
                        schema_fields,
                        &mut map,
                        &header,
                        &mut line,
                        &mut out,
                    )?;
                    count += 1;
                }
                let _ = used_tx.try_send(batch);
            }
            let file = match out {
                Out::Csv(w) => w
                    .into_inner()
                    .map_err(|e| anyhow::anyhow!("cannot write the import file: {}", e.error()))?,
                Out::Jsonl(w) => w,
            };
            file.into_inner()
                .map_err(|e| anyhow::anyhow!("cannot write the import file: {}", e.error()))?;
            Ok(count)
        });
        let mut shared = None;
        let read = (|| -> Result<()> {
            loop {
                // A batch the writer is done with, refilled in place.
                let mut batch = used_rx.try_recv().unwrap_or_default();
                ledger.owned_events_after_into(last, BATCH, &mut shared, &mut batch)?;
                let fetched = batch.len();
                batch.retain(|e| e.id() <= upto);
                match (batch.first(), batch.last()) {
                    (Some(f), Some(l)) => {
                        first.get_or_insert(f.id());
                        last = l.id();
                    }
                    _ => return Ok(()),
                }
                let more = batch.len() == fetched && last < upto;
                if tx.send(batch).is_err() || !more {
                    return Ok(()); // (on a send error the writer failed: reported below)
                }
            }
        })();
        drop(tx);
        let written = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the import file writer panicked"))?;
        read?;
        written
    })
    .with_context(|| format!("cannot write the import file in {}", sink.dir.display()))?;
    let first = first.unwrap_or(last);
    // Readable by the ITSM's collector like any file this user writes (not 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "events written");
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write the import file in {}", sink.dir.display()))?;
    let ident = ident(sink);
    let size = tmp.as_file().metadata()?.len();
    // Whether the upload may replace a remote file of the name: only this file's own earlier
    // upload (the same size), never one the name was free of a moment ago.
    let mut replace = false;
    let name = match again {
        Some(f @ InFlight { last: Some(_), .. }) => {
            let same_place = f.ident.as_ref().is_none_or(|i| *i == ident)
                && f.name.starts_with(&format!("{}-", sink.prefix))
                && f.name.ends_with(&format!(".{}", ext(sink)));
            // The upload may not have got as far as its rename: a remote file of that name
            // and another size than the file had when it was put in place (recorded, since
            // its rendering may have changed since) is someone else's.
            let remote = match &sink.upload {
                Some(up) => remote_size(up, &f.name)?,
                None => None,
            };
            let ours = |r: u64| f.size.map_or(r == size, |s| s == r);
            if same_place && remote.is_none_or(ours) {
                replace = remote.is_some();
                f.name.clone()
            } else if same_place {
                tracing::warn!(
                    sink = %sink.name,
                    "the upload folder has a file named {} that this sink's upload did not \
                     complete: it is kept, and the events go under another name",
                    f.name
                );
                free_name(sink, first, last, tmp.as_file(), None)?
            } else {
                // The sink's folder, prefix or format changed since: the same events, under a
                // name of its own settings, free where they put it now.
                tracing::warn!(
                    sink = %sink.name,
                    "the import file {} was put in place under the sink's earlier settings, \
                     and may be there still; its events go again under the current ones",
                    f.name
                );
                free_name(sink, first, last, tmp.as_file(), None)?
            }
        }
        _ => free_name(
            sink,
            first,
            last,
            tmp.as_file(),
            again.map(|f| f.name.as_str()),
        )?,
    };
    let dest = sink.dir.join(&name);
    ledger.set_file_in_flight(
        &sink.name,
        Some(&InFlight {
            name: name.clone(),
            last: Some(last),
            ident: Some(ident),
            size: Some(size),
        }),
    )?;
    tmp.persist(&dest).with_context(|| {
        format!(
            "cannot move the import file into place as {}",
            dest.display()
        )
    })?;
    if let Ok(dir) = std::fs::File::open(&sink.dir) {
        let _ = dir.sync_all();
    }
    if let Some(up) = &sink.upload
        && let Err(e) = upload(up, &dest, &name, replace)
    {
        // Not delivered: the local copy goes too, and the next run writes the events again.
        let _ = std::fs::remove_file(&dest);
        return Err(e);
    }
    ledger.set_sink_mark(&sink.name, last)?;
    ledger.set_file_in_flight(&sink.name, None)?;
    tracing::info!(sink = %sink.name, file = %name, events = count, "import file written");
    summary.delivered += count;
    summary.files.push(name);
    Ok(())
}

fn ext(sink: &FileSinkConfig) -> &'static str {
    match sink.format {
        FileFormat::Jsonl => "jsonl",
        FileFormat::Csv => "csv",
    }
}

/// What decides where a sink's files go and what they are (folder, prefix, format, upload
/// folder), in 16 hex digits: a file in flight is put in place again under its name only
/// while these stay the same.
fn ident(sink: &FileSinkConfig) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    // The folder as it is, however the configuration's path reached it.
    let dir = std::fs::canonicalize(&sink.dir).unwrap_or_else(|_| sink.dir.clone());
    for part in [
        dir.display().to_string(),
        sink.prefix.clone(),
        ext(sink).to_string(),
        sink.upload.as_ref().map_or(String::new(), |u| {
            format!("{}:{}/{}", u.endpoint.host, u.endpoint.port, u.remote_dir)
        }),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// A name for the file of events `first..=last`, free in the sink's folder and in its upload
/// folder. A file of the same content there locally is this file already (the rerun of a
/// run that crashed before its delivery mark) and is replaced, as is `ours` (the name an
/// earlier release recorded in flight). A file of that name with other content (a ledger
/// started afresh numbers its events from 1 again, and the ITSM may not have collected the
/// earlier file yet) is kept, and this one takes the next name: `-2`, `-3`...
fn free_name(
    sink: &FileSinkConfig,
    first: i64,
    last: i64,
    content: &std::fs::File,
    ours: Option<&str>,
) -> Result<String> {
    let ext = ext(sink);
    let remote: Vec<String> = match &sink.upload {
        Some(up) => on_upload_server(up, |c| c.names_in(&up.remote_dir, &sink.prefix))?,
        None => Vec::new(),
    };
    let mut name = format!("{}-{:012}-{:012}.{ext}", sink.prefix, first, last);
    let mut n = 1;
    loop {
        let mine = ours == Some(name.as_str());
        let local_free = match std::fs::File::open(sink.dir.join(&name)) {
            Ok(existing) => mine || same_content(existing, content)?,
            Err(_) => true,
        };
        if local_free && (mine || !remote.contains(&name)) {
            return Ok(name);
        }
        n += 1;
        name = format!("{}-{:012}-{:012}-{n}.{ext}", sink.prefix, first, last);
    }
}

/// Whether two files hold the same bytes.
fn same_content(mut a: std::fs::File, b: &std::fs::File) -> Result<bool> {
    use std::io::{Read, Seek};
    let mut b = b.try_clone()?;
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    b.rewind()?;
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// The upload folder, for messages.
fn target(up: &UploadConfig) -> String {
    format!(
        "sftp://{}/{}",
        up.endpoint.label(),
        up.remote_dir.trim_start_matches('/')
    )
}

/// Asks the upload server something (a new connection for each try, as [`upload`]).
fn on_upload_server<T>(
    up: &UploadConfig,
    ask: impl Fn(&crate::sftp::Connection) -> Result<T>,
) -> Result<T> {
    let what = format!("uploading to {}", target(up));
    crate::sftp::with_retries(&what, 3, |_| ask(&up.endpoint.connect()?))
        .with_context(|| format!("{what} failed; the events stay pending"))
}

/// The size of the file `name` in the upload folder, if there is one.
fn remote_size(up: &UploadConfig, name: &str) -> Result<Option<u64>> {
    on_upload_server(up, |c| c.size_of(&up.remote_dir, name))
}

/// Uploads an import file to the sink's SFTP folder, retrying a dropped connection;
/// `replace`: a remote file of that name is this file's own earlier upload.
fn upload(up: &UploadConfig, local: &std::path::Path, name: &str, replace: bool) -> Result<()> {
    let target = target(up);
    let what = format!("uploading {name} to {target}");
    // Whether an earlier try sent its rename: a file of the name and the same size is then
    // that try's, whose answer was lost.
    let mut renamed = false;
    crate::sftp::with_retries(&what, 3, |_| {
        up.endpoint
            .connect()?
            .upload(local, &up.remote_dir, name, replace, &mut renamed)
    })
    .with_context(|| format!("{what} failed; its events stay pending"))?;
    tracing::info!(file = %name, "import file uploaded to {target}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        let mut every: String = (0u8..0x80).map(char::from).collect();
        every.push_str("Zoë \u{2028} €\"\\/");
        for s in [
            "",
            "plain",
            "line\nbreak",
            every.as_str(),
            "\u{7f}",
            "\"",
            "end\\",
        ] {
            let mut ours = Vec::new();
            json_str(&mut ours, s);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
        // One character to escape at every position of strings around the block size.
        for len in [1, 31, 32, 33, 64, 70] {
            for at in 0..len {
                for c in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                    let s: String = (0..len).map(|i| if i == at { c } else { 'a' }).collect();
                    let mut ours = Vec::new();
                    json_str(&mut ours, &s);
                    assert_eq!(
                        String::from_utf8(ours).unwrap(),
                        serde_json::to_string(&s).unwrap(),
                        "{s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_direct_json_line_equals_the_reference_rendering() {
        let schema: Vec<String> = [
            "activity_id",
            "state",
            "updated_at",
            "device",
            "line",
            "user",
        ]
        .map(String::from)
        .to_vec();
        // Report columns: all the schema's, some missing, an older schema's field, extras.
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (schema.iter().map(String::as_str).collect(), vec![]),
            (
                vec!["activity_id", "state", "user", "retired", "device"],
                vec!["Cost Center", "x\"y"],
            ),
            (vec!["line"], vec!["only extra"]),
            (vec![], vec![]),
        ];
        let odd = "tab\tquote\"back\\slash\u{1}Zoë €";
        for (fields, extras) in &cases {
            let columns = Arc::new(Columns {
                fields: fields.iter().map(|s| s.to_string()).collect(),
                extras: extras.iter().map(|s| s.to_string()).collect(),
            });
            let mut map = FieldMap::default();
            map.prepare(&columns, &schema);
            let all: Vec<String> = (0..fields.len() + extras.len())
                .map(|i| {
                    if i % 3 == 1 {
                        odd.to_string()
                    } else {
                        format!("v{i}")
                    }
                })
                .collect();
            // Every number of stored values, from none to all (older or damaged rows).
            for stored in 0..=all.len() {
                for (kind, previous) in [("change", None), ("resend", Some(State::Ordered))] {
                    let v = EventView {
                        id: 7,
                        key: "k-7",
                        activity_id: "ACT\"1",
                        previous_state: previous,
                        state: State::Completed,
                        updated_at: 1_790_000_000,
                        report: "r_2026-10-31.csv",
                        row: 12,
                        itsm_number: "RITM1",
                        kind,
                        fields: &columns.fields,
                        extras: &columns.extras,
                        values: all[..stored].iter().map(String::as_str).collect(),
                    };
                    let mut direct = Vec::new();
                    write_canonical_json(&v, &map, &mut direct);
                    let mut reference = Vec::new();
                    Canonical::of_view(&v, &map, &schema)
                        .write_json(&mut reference)
                        .unwrap();
                    assert_eq!(
                        String::from_utf8(direct).unwrap(),
                        String::from_utf8(reference).unwrap(),
                        "{fields:?} {extras:?} {stored} values, {kind}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_field_map_is_rebuilt_for_other_columns_of_the_same_length() {
        let schema: Vec<String> = ["device", "line"].map(String::from).to_vec();
        let mut map = FieldMap::default();
        let a = Arc::new(Columns {
            fields: vec!["device".into(), "line".into()],
            extras: vec![],
        });
        map.prepare(&a, &schema);
        assert_eq!(map.positions, vec![(0, Some(0)), (1, Some(1))]);
        let b = Arc::new(Columns {
            fields: vec!["line".into(), "device".into()],
            extras: vec![],
        });
        map.prepare(&b, &schema);
        assert_eq!(map.positions, vec![(0, Some(1)), (1, Some(0))]);
    }
}
