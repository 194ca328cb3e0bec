//! File sink: ITSM import files (JSON lines or CSV), one per run per sink.
//!
//! A file is written under a temporary name in its folder and renamed into place only when
//! complete, so a consumer never sees half a file. Its name comes from the first and last
//! event it holds, so a crash before the delivery mark is written and the rerun rewrite the
//! same file instead of adding a second one with the same events.
//!
//! With `upload`, each file is also uploaded to an SFTP folder (under a temporary name, then
//! renamed); its events count as delivered only once the upload is complete.

use std::io::Write;

use anyhow::{Context, Result};

use super::canonical::{CANONICAL, Canonical, FieldMap, write_canonical_json};
use super::config::{FileFormat, FileSinkConfig};
use super::summary::SinkSummary;
use crate::ledger::deliveries::Outcome;
use crate::ledger::{InFlight, Ledger, OwnedEvent};
use crate::sftp::config::UploadConfig;

/// Events read from the ledger per batch handed to the writing thread.
const BATCH: usize = 512;

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

/// An import file being written: CSV under its header, or JSON lines.
struct Out<'f> {
    format: Format<'f>,
    header: Vec<String>,
    /// The line being rendered (reused).
    line: Vec<u8>,
    /// Where each schema field sits among an event's report's columns (cached per report).
    map: FieldMap,
}

type Buffered<'f> = std::io::BufWriter<&'f std::fs::File>;

enum Format<'f> {
    Csv(Box<csv::Writer<Buffered<'f>>>),
    Jsonl(Buffered<'f>),
}

impl<'f> Out<'f> {
    fn new(
        sink: &FileSinkConfig,
        schema_fields: &[String],
        file: &'f std::fs::File,
    ) -> Result<Self> {
        let buffered = std::io::BufWriter::with_capacity(1 << 20, file);
        let header = csv_header(sink, schema_fields);
        let format = match sink.format {
            FileFormat::Csv => {
                let mut w = csv::WriterBuilder::new().from_writer(buffered);
                w.write_record(&header)?;
                Format::Csv(Box::new(w))
            }
            FileFormat::Jsonl => Format::Jsonl(buffered),
        };
        Ok(Out {
            format,
            header,
            line: Vec::with_capacity(4096),
            map: FieldMap::default(),
        })
    }

    /// Writes one event as a line (JSONL) or a record (CSV); or, when a `required` field of
    /// the mapping renders empty, writes nothing and says why.
    fn event(
        &mut self,
        e: &OwnedEvent,
        sink: &FileSinkConfig,
        schema_fields: &[String],
    ) -> Result<Option<String>> {
        let v = &e.view()?;
        let header = &self.header;
        match (&sink.mapping, &mut self.format) {
            (Some(m), format) => {
                let stored = v.to_stored();
                let rec = m
                    .render(&stored)
                    .with_context(|| format!("event {} (activity {})", v.key, v.activity_id))?;
                if let Some(reason) = m.missing_required(&rec) {
                    return Ok(Some(reason));
                }
                match format {
                    Format::Csv(w) => w.write_record(
                        header.iter().map(|h| rec.get(h).map_or("", String::as_str)),
                    )?,
                    Format::Jsonl(w) => {
                        self.line.clear();
                        serde_json::to_writer(&mut self.line, &rec)?;
                        self.line.push(b'\n');
                        w.write_all(&self.line)?;
                    }
                }
            }
            (None, Format::Csv(w)) => {
                self.map.prepare(e.columns(), schema_fields);
                let c = Canonical::of_view(v, &self.map, schema_fields);
                w.write_record(header.iter().map(|h| c.csv_cell(h)))?;
            }
            (None, Format::Jsonl(w)) => {
                self.map.prepare(e.columns(), schema_fields);
                self.line.clear();
                write_canonical_json(v, &self.map, &mut self.line);
                self.line.push(b'\n');
                w.write_all(&self.line)?;
            }
        }
        Ok(None)
    }

    /// Flushes what is buffered into the file.
    fn finish(self) -> Result<()> {
        let buffered = match self.format {
            Format::Csv(w) => w
                .into_inner()
                .map_err(|e| anyhow::anyhow!("cannot write the import file: {}", e.error()))?,
            Format::Jsonl(w) => w,
        };
        buffered
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write the import file: {}", e.error()))?;
        Ok(())
    }
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
    let upto = again.and_then(|f| f.last).unwrap_or(i64::MAX);
    let written = render(ledger, sink, schema_fields, mark, upto, tmp.as_file())
        .with_context(|| format!("cannot write the import file in {}", sink.dir.display()))?;
    if written.count == 0 && again.is_none() {
        // Every event left out: no import file (an empty one is only noise to the ITSM).
        settle_incomplete(ledger, sink, &written, summary)?;
        return ledger.set_sink_mark(&sink.name, written.last);
    }
    // Owner-only, as the temporary file is made, unless the sink says otherwise (an
    // import folder another program reads).
    #[cfg(unix)]
    if let Some(mode) = sink.mode {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write the import file in {}", sink.dir.display()))?;
    let size = tmp.as_file().metadata()?.len();
    let (name, replace) = choose_name(sink, again, &written, tmp.as_file(), size)?;
    let dest = sink.dir.join(&name);
    ledger.set_file_in_flight(
        &sink.name,
        Some(&InFlight {
            name: name.clone(),
            last: Some(written.last),
            ident: Some(ident(sink)),
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
    settle_incomplete(ledger, sink, &written, summary)?;
    ledger.set_sink_mark(&sink.name, written.last)?;
    ledger.set_file_in_flight(&sink.name, None)?;
    tracing::info!(sink = %sink.name, file = %name, events = written.count, "import file written");
    summary.delivered += written.count;
    summary.files.push(name);
    Ok(())
}

/// Settles the events an import file left out (a required field empty) with their reason,
/// as an HTTP sink settles them: `status` lists them, and the sink's mark moves over them.
fn settle_incomplete(
    ledger: &Ledger,
    sink: &FileSinkConfig,
    written: &Written,
    summary: &mut SinkSummary,
) -> Result<()> {
    for (id, reason) in &written.incomplete {
        ledger.record_delivery(&sink.name, *id, Outcome::Skipped, 0, Some(reason))?;
        summary.count_incomplete(reason);
    }
    Ok(())
}

/// The events an import file holds: its first and last, and how many; and the events in
/// that range it leaves out, with why.
struct Written {
    first: i64,
    last: i64,
    count: u64,
    incomplete: Vec<(i64, String)>,
}

/// Renders the events after `mark` (up to `upto`) into `file`: this thread reads them from
/// the ledger, a second one renders and writes them.
fn render(
    ledger: &Ledger,
    sink: &FileSinkConfig,
    schema_fields: &[String],
    mark: i64,
    upto: i64,
    file: &std::fs::File,
) -> Result<Written> {
    let started = std::time::Instant::now();
    let mut first = None;
    let mut last = mark;
    // Counting reads every event: only for a bar that shows it.
    let total = match crate::progress::shown() {
        true => ledger.count_events_after(mark)?,
        false => 0,
    };
    let bar = crate::progress::delivery(&sink.name, total);
    let bar = &bar;
    let (count, incomplete) = std::thread::scope(|scope| -> Result<(u64, Vec<(i64, String)>)> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<OwnedEvent>>(4);
        // Rendered batches go back to be refilled: no allocation per event or batch.
        let (used_tx, used_rx) = std::sync::mpsc::sync_channel::<Vec<OwnedEvent>>(6);
        let writer = scope.spawn(move || -> Result<(u64, Vec<(i64, String)>)> {
            let mut out = Out::new(sink, schema_fields, file)?;
            let mut count = 0u64;
            let mut incomplete = Vec::new();
            for batch in rx {
                for e in &batch {
                    match out.event(e, sink, schema_fields)? {
                        None => count += 1,
                        Some(reason) => incomplete.push((e.id(), reason)),
                    }
                }
                bar.inc(batch.len() as u64);
                let _ = used_tx.try_send(batch);
            }
            out.finish()?;
            Ok((count, incomplete))
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
    })?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "events written");
    Ok(Written {
        first: first.unwrap_or(last),
        last,
        count,
        incomplete,
    })
}

/// The name the file goes under, and whether its upload may replace a remote file of that
/// name (only this file's own earlier upload, of the same size; never one the name was free
/// of a moment ago).
fn choose_name(
    sink: &FileSinkConfig,
    again: Option<&InFlight>,
    w: &Written,
    content: &std::fs::File,
    size: u64,
) -> Result<(String, bool)> {
    let (first, last) = (w.first, w.last);
    let f = match again {
        Some(f @ InFlight { last: Some(_), .. }) => f,
        _ => {
            let ours = again.map(|f| f.name.as_str());
            return Ok((free_name(sink, first, last, content, ours)?, false));
        }
    };
    let same_place = f.ident.as_ref().is_none_or(|i| *i == ident(sink))
        && f.name.starts_with(&format!("{}-", sink.prefix))
        && f.name.ends_with(&format!(".{}", ext(sink)));
    if !same_place {
        // The sink's folder, prefix or format changed since: the same events, under a name
        // of its own settings, free where they put it now.
        tracing::warn!(
            sink = %sink.name,
            "the import file {} was put in place under the sink's earlier settings, \
             and may be there still; its events go again under the current ones",
            f.name
        );
        return Ok((free_name(sink, first, last, content, None)?, false));
    }
    // The upload may not have got as far as its rename: a remote file of that name and
    // another size than the file had when it was put in place (recorded, since its
    // rendering may have changed since) is someone else's.
    let remote = match &sink.upload {
        Some(up) => remote_size(up, &f.name)?,
        None => None,
    };
    let ours = |r: u64| f.size.map_or(r == size, |s| s == r);
    if remote.is_none_or(ours) {
        return Ok((f.name.clone(), remote.is_some()));
    }
    tracing::warn!(
        sink = %sink.name,
        "the upload folder has a file named {} that this sink's upload did not \
         complete: it is kept, and the events go under another name",
        f.name
    );
    Ok((free_name(sink, first, last, content, None)?, false))
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
