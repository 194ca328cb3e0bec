//! One listed report through fetch → parse → plan → commit: fetched from the source,
//! recognised as content processed before (a duplicate, or in a backfill a replay), read on
//! a thread of its own while the rules are applied to its rows in its transaction, and
//! committed whole, or rolled back and recorded as failed.
//!
//! Guarantee: a report is committed whole or not at all, and one that fails never stops the
//! run; what the run holds in memory follows the ledger (it is reloaded after a rollback).

use std::path::Path;

use anyhow::{Context, Result};
use chrono::NaiveDate;

use super::options::{Mode, Options};
use crate::config::Config;
use crate::dedupe::{KnownActivities, Order, Planner, ReportPlan};
use crate::interrupt;
use crate::ledger::attempts::MAX_TRIES;
use crate::ledger::reports::ReportKey;
use crate::ledger::{Columns, Ledger, ReportCounts, ReportMeta};
use crate::report::{self, Batch, cell::DateContext};
use crate::source::{HashJob, Listed, Source};
use crate::summary::{RejectSummary, ReportStatus, ReportSummary};

/// One run's reports, processed one after another.
pub(super) struct Run<'r> {
    cfg: &'r Config,
    ledger: &'r Ledger,
    opts: &'r Options,
    id: i64,
    /// Events with ids from here on were made by this run.
    first_event: i64,
    /// What the ledger records of every Activity and report, loaded at the first report
    /// read; dropped when a report is rolled back (loaded again for the next).
    known: Option<(KnownActivities, Order)>,
}

impl<'r> Run<'r> {
    pub(super) fn new(
        cfg: &'r Config,
        ledger: &'r Ledger,
        opts: &'r Options,
        id: i64,
    ) -> Result<Run<'r>> {
        Ok(Run {
            cfg,
            ledger,
            opts,
            id,
            first_event: ledger.max_event_id()? + 1,
            known: None,
        })
    }

    /// Takes one listed report through fetch, parse, plan and commit; says what became of
    /// it, or `None` for a file an earlier run took (same name, size and mtime): not read
    /// again. A file the source cannot take is recorded as skipped.
    pub(super) fn process(
        &mut self,
        source: &mut dyn Source,
        date: NaiveDate,
        l: &Listed,
    ) -> Option<ReportSummary> {
        // At error level, so that its file name is on every message under `-q` too.
        let span = tracing::error_span!("report", file = %l.name);
        let _enter = span.enter();
        if !self.is_backfill() {
            match self.ledger.processed_listing(&l.name, l.size, l.mtime) {
                Ok(Some(_)) => {
                    tracing::debug!("already processed (same name, size and mtime)");
                    return None;
                }
                Ok(None) => {}
                Err(e) => {
                    let rs = ReportSummary::new(&l.name, ReportStatus::Failed, date);
                    return Some(failed(rs, e));
                }
            }
        }
        match self.ledger.ignored(&l.name, l.size, l.mtime) {
            Ok(Some(ig)) => {
                tracing::info!("not read: {}", ig.describe());
                let mut rs = ReportSummary::new(&l.name, ReportStatus::Ignored, date);
                rs.notes.push(format!(
                    "{} (`tangoe-ingest reports retry {}` reads it again)",
                    ig.describe(),
                    l.name
                ));
                return Some(rs);
            }
            Ok(None) => {}
            Err(e) => {
                let rs = ReportSummary::new(&l.name, ReportStatus::Failed, date);
                return Some(failed(rs, e));
            }
        }
        if let Some(why) = &l.skipped {
            return Some(skipped(self, date, l, why));
        }
        Some(process_report(self, source, date, l))
    }

    fn is_backfill(&self) -> bool {
        matches!(self.opts.mode, Mode::Backfill { .. })
    }

    fn mode_name(&self) -> &'static str {
        if self.is_backfill() {
            "backfill"
        } else {
            "run"
        }
    }
}

/// [`Run::process`] for a report not taken before.
fn process_report(
    run: &mut Run<'_>,
    source: &mut dyn Source,
    date: NaiveDate,
    l: &Listed,
) -> ReportSummary {
    let ledger = run.ledger;
    let mut rs = ReportSummary::new(&l.name, ReportStatus::Processed, date);
    if let Some(why) = &l.deferred {
        tracing::info!("deferred to a later run: {why}");
        rs.status = ReportStatus::Deferred;
        rs.notes.push(why.clone());
        return rs;
    }
    let fetched = match source.fetch(l) {
        Ok(f) => f,
        // Removed from the server between the listing and the download: nothing to read;
        // if it comes back, a later run takes it.
        Err(e) if crate::sftp::sftp_status(&e, &[2]) => {
            let why = "removed from the server after it was listed".to_string();
            tracing::info!("deferred to a later run: {why}");
            rs.status = ReportStatus::Deferred;
            rs.notes.push(why);
            return rs;
        }
        Err(e) if interrupt::is_interrupted(&e) => return stopped(rs, &e),
        Err(e) => return failed(rs, e),
    };
    let size = std::fs::metadata(&fetched.path).map_or(l.size, |m| m.len());
    let mut meta = ReportMeta {
        name: l.name.clone(),
        size,
        mtime: l.mtime,
        sha256: String::new(),
        report_date: date,
    };
    match ledger.unfinished_tries(meta.listing()) {
        Ok(tries) if tries >= MAX_TRIES => return never_finished(run, &meta, rs),
        Ok(_) => {}
        Err(e) => return failed(rs, e),
    }
    // Only a file of the size of one processed before can hold content processed before
    // (a duplicate, or in a backfill a replay): it is hashed first, at full speed, and
    // recognised before a row is read. Any other is hashed while it is read.
    let suspect = ledger.seen_size(size).unwrap_or(true);
    let mut hash = HashJob::start(&fetched, suspect);
    let mut replay = None;
    if suspect {
        let seen = hash.wait().map(str::to_string).and_then(|sha| {
            let first = ledger.first_processed(&sha)?;
            Ok((sha, first))
        });
        match seen {
            Ok((sha, first)) => {
                meta.sha256 = sha;
                replay = first;
            }
            Err(e) => return failed(rs, e),
        }
    }
    if let Some(first) = replay.as_ref().filter(|_| !run.is_backfill()) {
        return duplicate(run, &meta, &first.name);
    }
    if let Err(e) = ledger.begin_attempt(meta.listing()) {
        return failed(rs, e);
    }
    let result = ingest(run, &meta, &fetched.path, &mut hash, replay, &mut rs);
    if let Ok(sha) = hash.wait() {
        rs.sha256 = Some(sha.to_string());
    }
    concluded(run, meta, rs, result)
}

/// What became of a report once read: committed, stopped (rolled back, left for the next
/// run) or failed (rolled back and recorded).
fn concluded(
    run: &mut Run<'_>,
    mut meta: ReportMeta,
    rs: ReportSummary,
    result: Result<()>,
) -> ReportSummary {
    let ledger = run.ledger;
    match result {
        Ok(()) => {
            tracing::info!(
                rows = rs.rows,
                accepted = rs.accepted,
                rejected = rs.rejected,
                unchanged = rs.unchanged,
                stale = rs.stale,
                events = rs.events,
                "{}",
                if run.opts.dry_run {
                    "report read (dry run: committed to its throw-away copy only)"
                } else {
                    "report committed"
                }
            );
            rs
        }
        Err(e) => {
            // The report was rolled back: what the run holds in memory is reloaded.
            run.known = None;
            if interrupt::is_interrupted(&e) {
                if let Err(e2) = ledger.end_attempt(meta.listing()) {
                    tracing::error!("cannot record the end of the attempt: {e2:#}");
                }
                return stopped(rs, &e);
            }
            let e = ledger.name_in(e);
            meta.sha256 = rs.sha256.clone().unwrap_or_default();
            let msg = format!("{e:#}");
            if let Err(e2) = ledger
                .record_failed_report(&meta, run.mode_name(), run.id, &msg)
                .and_then(|()| ledger.end_attempt(meta.listing()))
            {
                tracing::error!("cannot record the failed report: {e2:#}");
            }
            failed(rs, e)
        }
    }
}

/// A report whose processing did not finish [`MAX_TRIES`] times (the process was killed
/// while reading it): recorded as failed without reading it again, so that the reports
/// after it go through.
fn never_finished(run: &Run<'_>, meta: &ReportMeta, rs: ReportSummary) -> ReportSummary {
    let e = anyhow::anyhow!(
        "processing did not finish twice (killed or out of memory?); it is not read again \
         until the file changes"
    );
    if let Err(e2) =
        run.ledger
            .record_failed_report(meta, run.mode_name(), run.id, &format!("{e:#}"))
    {
        tracing::error!("cannot record the failed report: {e2:#}");
    }
    failed(rs, e)
}

/// A file the source cannot take: never read, and recorded, so that `status` shows it.
fn skipped(run: &Run<'_>, date: NaiveDate, l: &Listed, why: &str) -> ReportSummary {
    tracing::warn!("skipped: {why}");
    let meta = ReportMeta {
        name: l.name.clone(),
        size: l.size,
        mtime: l.mtime,
        sha256: String::new(),
        report_date: date,
    };
    if let Err(e) = run
        .ledger
        .record_skipped(&meta, run.mode_name(), run.id, why)
    {
        tracing::error!("cannot record the skipped file: {e:#}");
    }
    let mut rs = ReportSummary::new(&l.name, ReportStatus::Skipped, date);
    rs.error = Some(why.to_string());
    rs
}

/// A report whose content was processed before (under this name or another): skipped,
/// and recorded so that the same file is not hashed again.
fn duplicate(run: &Run<'_>, meta: &ReportMeta, first: &str) -> ReportSummary {
    tracing::info!(same_as = %first, "skipped: identical content was already processed");
    if !run.opts.dry_run
        && let Err(e) = run.ledger.record_duplicate(meta, run.mode_name(), run.id)
    {
        tracing::warn!("cannot record the duplicate: {e:#}");
    }
    let mut dup = ReportSummary::new(&meta.name, ReportStatus::Duplicate, meta.report_date);
    dup.duplicate_of = Some(first.to_string());
    dup.sha256 = Some(meta.sha256.clone());
    dup
}

/// A report the run was asked to stop in: rolled back, left for the next run.
fn stopped(rs: ReportSummary, e: &anyhow::Error) -> ReportSummary {
    tracing::warn!("{e}: the report is rolled back and left for the next run");
    let mut rs = rolled_back(rs);
    rs.status = ReportStatus::Deferred;
    rs.notes
        .push(format!("{e}: rolled back, read again by the next run"));
    rs
}

fn failed(rs: ReportSummary, e: anyhow::Error) -> ReportSummary {
    let msg = format!("{e:#}");
    tracing::error!("report failed: {msg}");
    let mut rs = rolled_back(rs);
    rs.status = ReportStatus::Failed;
    rs.error = Some(msg);
    rs
}

/// The summary of a report nothing of which was committed.
fn rolled_back(mut rs: ReportSummary) -> ReportSummary {
    rs.rows = 0;
    rs.accepted = 0;
    rs.rejected = 0;
    rs.skipped = 0;
    rs.unchanged = 0;
    rs.stale = 0;
    rs.events = 0;
    rs.merged = 0;
    rs.transitions.clear();
    rs.rejects.clear();
    rs
}

/// The ledger side stopped taking rows (it failed: its error is the one reported).
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the ledger side stopped taking rows")
    }
}

impl std::error::Error for Stopped {}

/// Applies the report's batches as they come; while none is ready, writes what the planner
/// holds.
fn apply_batches(
    planner: &mut Planner<'_, '_>,
    batches: &std::sync::mpsc::Receiver<Batch>,
    bar: &crate::progress::Bar,
) -> Result<()> {
    use std::sync::mpsc::TryRecvError;
    loop {
        let batch = match batches.try_recv() {
            Ok(batch) => batch,
            Err(TryRecvError::Disconnected) => return Ok(()),
            Err(TryRecvError::Empty) => {
                if planner.idle()? {
                    continue;
                }
                match batches.recv() {
                    Ok(batch) => batch,
                    Err(_) => return Ok(()),
                }
            }
        };
        crate::interrupt::check()?;
        planner.apply(&batch)?;
        bar.inc(batch.rows());
    }
}

/// Parse, plan and commit: reads the report on a thread of its own while this one applies
/// the rules to its rows in the report's transaction, then commits it whole.
fn ingest(
    run: &mut Run<'_>,
    meta: &ReportMeta,
    path: &Path,
    hash: &mut HashJob,
    replay: Option<ReportKey>,
    rs: &mut ReportSummary,
) -> Result<()> {
    let (cfg, ledger) = (run.cfg, run.ledger);
    let before = stamp(path);
    if run.known.is_none() {
        run.known = Some((KnownActivities::load(ledger)?, Order::load(ledger)?));
    }
    let mut tx = ledger.begin_report(meta, run.mode_name(), run.id)?;
    if let Some(first) = &replay {
        tx.replaying(&first.sha256)?;
    }
    let resend = matches!(run.opts.mode, Mode::Backfill { resend: true, .. });
    let run_first_event = run.first_event;
    let (known, order) = run.known.as_mut().expect("loaded above");
    // A replay's rows keep the place (and date) its content had when first processed.
    let (place, date) = match &replay {
        Some(first) => (first.id, parse_date(first)?),
        None => {
            let key = own_key(meta, tx.report_id, order, hash)?;
            order.insert(key);
            (tx.report_id, meta.report_date)
        }
    };
    let ctx = DateContext::new(&cfg.schema, cfg.timezone)?;
    let plan = ReportPlan {
        file: meta.name.clone(),
        report_time: ctx.date_start(date).timestamp(),
        place,
        resend,
        run_first_event,
    };
    let started = std::time::Instant::now();
    let mut planner = Planner::new(known, order, &tx, plan);
    let read = read_and_apply(cfg, &meta.name, path, ctx, &mut planner)
        .map_err(|e| e.context(meta.name.clone()))?;
    let outcome = planner.finish()?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "rows read and applied"
    );
    // A file that changed while it was read (still being written?) is not committed: the
    // hash and the rows might not describe the same content. The next run reads it again.
    if stamp(path) != before {
        anyhow::bail!(
            "{}: the file changed while it was read; it is left for the next run",
            meta.name
        );
    }
    let sha256 = hash.wait()?.to_string();
    log_findings(&read, &outcome);
    let totals = ReportCounts {
        rows: read.counts.rows,
        accepted: read.counts.accepted,
        rejected: read.counts.rejected,
        skipped: read.counts.skipped,
        unchanged: outcome.unchanged,
        stale: outcome.stale,
        events: outcome.events(),
        warnings: read.counts.warnings,
    };
    let columns = Columns {
        fields: cfg.schema.fields.iter().map(|f| f.name.clone()).collect(),
        extras: read.extras.clone(),
    };
    let own_place = place == tx.report_id;
    tx.end_attempt(meta.listing())?;
    tx.commit(&totals, &columns, &sha256)?;
    if own_place {
        // Its hash may not have been known when its place was taken: a later report may
        // need it.
        order.insert(ReportKey {
            id: place,
            date: meta.report_date.to_string(),
            mtime: meta.mtime,
            name: meta.name.clone(),
            sha256,
        });
    }
    ledger.checkpoint_in_background();
    summarize(rs, &totals, outcome, read.notes);
    Ok(())
}

/// A committed report's part of the run's summary.
fn summarize(
    rs: &mut ReportSummary,
    totals: &ReportCounts,
    outcome: crate::dedupe::Outcome,
    notes: Vec<String>,
) {
    rs.set_counts(totals);
    rs.merged = outcome.merged;
    rs.notes = notes;
    rs.transitions = outcome
        .transitions
        .into_iter()
        .map(|((a, b), n)| (format!("{a} → {b}"), n))
        .collect();
    rs.rejects = outcome
        .rejects
        .into_iter()
        .map(|r| RejectSummary {
            row: r.row,
            column: r.column,
            reason: r.reason,
        })
        .collect();
}

/// The date a report first processed had (a replay's rows without `updated_at` take it).
fn parse_date(first: &ReportKey) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(&first.date, "%Y-%m-%d")
        .with_context(|| format!("ledger: report {} has the date {:?}", first.id, first.date))
}

/// A new report's place in the order of rows. Its content hash decides only between
/// reports of the same date, mtime and name: it is waited for then, and only then.
fn own_key(meta: &ReportMeta, id: i64, order: &Order, hash: &mut HashJob) -> Result<ReportKey> {
    let date = meta.report_date.to_string();
    let sha256 = if order.needs_hash(&date, meta.mtime, &meta.name) {
        hash.wait()?.to_string()
    } else {
        meta.sha256.clone()
    };
    Ok(ReportKey {
        id,
        date,
        mtime: meta.mtime,
        name: meta.name.clone(),
        sha256,
    })
}

/// Reads the report on a `parse` thread and hands its batches to `planner` on this one.
fn read_and_apply(
    cfg: &Config,
    name: &str,
    path: &Path,
    ctx: DateContext,
    planner: &mut Planner<'_, '_>,
) -> Result<report::Summary> {
    std::thread::scope(|scope| {
        let (to_planner, batches) = std::sync::mpsc::sync_channel::<Batch>(4);
        let reader = std::thread::Builder::new()
            .name("parse".into())
            .spawn_scoped(scope, move || {
                report::read(path, &cfg.schema, ctx, &mut |batch| {
                    to_planner
                        .send(batch)
                        .map_err(|_| anyhow::Error::new(Stopped))
                })
            })?;
        let bar = crate::progress::parsing(name);
        let failure = apply_batches(planner, &batches, &bar).err();
        drop(bar);
        // Dropping the receiver stops the reader at its next batch.
        drop(batches);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the report parsing thread panicked"))?;
        match failure {
            Some(e) => Err(e),
            None => read,
        }
    })
}

/// Logs how the report was read, its warnings and its rejects (values elided above debug).
fn log_findings(read: &report::Summary, outcome: &crate::dedupe::Outcome) {
    for n in &read.notes {
        tracing::warn!("{n}");
    }
    for w in &outcome.warnings {
        tracing::warn!(row = w.row, column = %w.column, "{}", w.message);
    }
    for r in &outcome.rejects {
        // Logs above debug carry no row contents (personal data): values are elided.
        tracing::warn!(row = r.row, column = %r.column, "row rejected: {}", elide_values(&r.reason));
        tracing::debug!(row = r.row, column = %r.column, "row rejected: {}", r.reason);
    }
}

/// A file's size and modification time, to tell whether it changed while it was read.
fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// A message with every quoted value replaced by `"…"`, for logs above debug level.
fn elide_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…");
            }
            quoted = !quoted;
            if !quoted {
                out.push('"');
            }
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::elide_values;

    #[test]
    fn log_messages_elide_quoted_values() {
        assert_eq!(
            elide_values("unknown state \"Shipped\": add it to the schema"),
            "unknown state \"…\": add it to the schema"
        );
        assert_eq!(
            elide_values("\"31/12/2026\" matches no format"),
            "\"…\" matches no format"
        );
        assert_eq!(elide_values("empty activity_id"), "empty activity_id");
    }
}
