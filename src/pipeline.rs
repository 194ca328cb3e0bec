//! The run: list → fetch → parse → plan → commit → deliver, in that order, for `run`,
//! `backfill` and their dry runs alike. Owns the summary and the exit code.
//!
//! A dry run walks the same stages against a throw-away copy of the ledger and stops
//! before delivery: the real ledger is only read, no file is written, nothing is moved.
//! One bad report never sinks the run: it is recorded as failed and the others go on.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::NaiveDate;
use serde::Serialize;

use crate::config::{Config, SourceConfig};
use crate::dedupe::{KnownActivities, Order, Planner, ReportPlan};
use crate::ledger::reports::ReportKey;
use crate::ledger::{Columns, Ledger, ReportCounts, ReportMeta};
use crate::report::{self, Batch, cell::DateContext};
use crate::sink::{self, SinkSummary};
use crate::source::{HashJob, Listed, Source, local::LocalSource, sftp::SftpSource};

/// Exit codes: the contract with cron and the operator.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_INCOMPLETE: i32 = 2;
pub const EXIT_LOCKED: i32 = 75;

/// Which reports a run takes.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The nightly job: reports not processed before.
    Run,
    /// Every report whose date is in `[from, to]`, seen before or not.
    Backfill {
        from: NaiveDate,
        to: NaiveDate,
        resend: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub dry_run: bool,
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

/// Another run holds the ledger.
#[derive(Debug)]
pub struct Locked(pub PathBuf);

impl std::fmt::Display for Locked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another tangoe-ingest run holds the ledger lock {}: this run stops without doing anything \
             (it is safe to run again once the other run ends)",
            self.0.display()
        )
    }
}

impl std::error::Error for Locked {}

#[derive(Debug, Clone, Serialize)]
pub struct RejectSummary {
    pub row: u64,
    pub column: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    pub name: String,
    /// processed | duplicate | failed | deferred
    pub status: String,
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub skipped: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub events: u64,
    /// Rows folded into an earlier row of the same Activity in this report (rule 5).
    pub merged: u64,
    pub warnings: u64,
    pub report_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    /// Events by transition, e.g. "ordered → completed": 12.
    pub transitions: BTreeMap<String, u64>,
    /// The first rejected rows (row, column, reason; never the row's contents).
    pub rejects: Vec<RejectSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ReportSummary {
    fn set_counts(&mut self, c: &ReportCounts) {
        self.rows = c.rows;
        self.accepted = c.accepted;
        self.rejected = c.rejected;
        self.skipped = c.skipped;
        self.unchanged = c.unchanged;
        self.stale = c.stale;
        self.events = c.events;
        self.warnings = c.warnings;
    }

    fn new(name: &str, status: &str, date: NaiveDate) -> Self {
        ReportSummary {
            name: name.to_string(),
            status: status.to_string(),
            rows: 0,
            accepted: 0,
            rejected: 0,
            skipped: 0,
            unchanged: 0,
            stale: 0,
            events: 0,
            merged: 0,
            warnings: 0,
            report_date: date.to_string(),
            sha256: None,
            error: None,
            duplicate_of: None,
            transitions: BTreeMap::new(),
            rejects: Vec::new(),
            notes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: String,
    pub dry_run: bool,
    pub rows: u64,
    pub rejected: u64,
    pub events: u64,
    pub delivered: u64,
    pub pending: u64,
    pub failed_reports: u64,
    /// Files still in the source that an earlier run processed (same name, size, mtime):
    /// not read again and not listed in `reports`.
    pub already_processed: u64,
    pub reports: Vec<ReportSummary>,
    /// Reports an earlier run committed before it was interrupted (killed), so that its
    /// summary never came out: reported once, here. Not in this run's totals.
    #[serde(rename = "interrupted_reports", skip_serializing_if = "Vec::is_empty")]
    pub interrupted: Vec<ReportSummary>,
    pub sinks: Vec<SinkSummary>,
    pub exit_code: i32,
}

impl Summary {
    /// An empty summary for a run in `mode`, with every sink registered in the ledger.
    fn start(mode: &str, dry_run: bool, cfg: &Config, ledger: &Ledger) -> Result<Summary> {
        for s in &cfg.sinks {
            ledger.sink_mark(s.name())?;
        }
        Ok(Summary {
            mode: mode.to_string(),
            dry_run,
            rows: 0,
            rejected: 0,
            events: 0,
            delivered: 0,
            pending: 0,
            failed_reports: 0,
            already_processed: 0,
            reports: Vec::new(),
            interrupted: Vec::new(),
            sinks: cfg
                .sinks
                .iter()
                .map(|s| SinkSummary {
                    name: s.name().to_string(),
                    ..Default::default()
                })
                .collect(),
            exit_code: EXIT_OK,
        })
    }
}

/// Holds the run lock for the life of the run.
pub(crate) struct RunLock {
    _file: Option<File>,
}

/// Takes the ledger's run lock for a real run. A dry run (`dry_run`) takes none: it works on
/// a consistent copy of the ledger (see [`Ledger::scratch_copy`]), and holding even a shared
/// lock for its length would make the nightly run that starts meanwhile exit 75. It only
/// says when a run is in progress, since its audit then shows the ledger before that run.
pub(crate) fn lock(ledger: &Path, dry_run: bool) -> Result<RunLock> {
    let path = PathBuf::from(format!("{}.lock", ledger.display()));
    if dry_run {
        let busy = std::fs::File::open(&path)
            .ok()
            .is_some_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)));
        if busy {
            tracing::warn!(
                "a run is in progress (it holds {}): this dry run reads the ledger as that run's \
                 last committed report left it",
                path.display()
            );
        }
        return Ok(RunLock { _file: None });
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // A dry run looks at the lock for an instant (see above): a run that starts just then
    // tries for two seconds before it says another run holds it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(RunLock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(anyhow::Error::new(Locked(path)));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot lock {}", path.display()))
                );
            }
        }
    }
}

fn report_date(cfg: &Config, l: &Listed) -> NaiveDate {
    if let Some(re) = &cfg.date_from_name
        && let Some(caps) = re.captures(&l.name)
    {
        let text = caps
            .get(1)
            .or_else(|| caps.get(0))
            .map_or("", |m| m.as_str());
        for fmt in ["%Y-%m-%d", "%Y%m%d", "%Y_%m_%d", "%m-%d-%Y", "%m%d%Y"] {
            if let Ok(d) = NaiveDate::parse_from_str(text, fmt)
                && crate::report::cell::four_digit_year(chrono::Datelike::year(&d))
            {
                return d;
            }
        }
        tracing::warn!(file = %l.name, "date_from_name matched {text:?}, which is not a date: using the file's mtime");
    }
    let utc = chrono::DateTime::from_timestamp(l.mtime, 0).unwrap_or_default();
    utc.with_timezone(&cfg.timezone).date_naive()
}

fn open_source(cfg: &Config, opts: &Options) -> Box<dyn Source> {
    match &cfg.source {
        SourceConfig::Local { dir } => {
            Box::new(LocalSource::new(dir.clone(), cfg.patterns.clone()))
        }
        SourceConfig::Sftp(s) => Box::new(SftpSource::new(
            (**s).clone(),
            cfg.patterns.clone(),
            matches!(opts.mode, Mode::Backfill { .. }),
            opts.dry_run,
        )),
    }
}

/// Runs the pipeline once. Errors are failures of the run as a whole (exit 1 or 75).
pub fn run(cfg: &Config, opts: &Options) -> Result<Summary> {
    let _lock = lock(&cfg.ledger, opts.dry_run)?;
    let ledger = if opts.dry_run {
        Ledger::scratch_copy(&cfg.ledger)?
    } else {
        Ledger::open(&cfg.ledger)?
    };
    let mode_name = match opts.mode {
        Mode::Run => "run",
        Mode::Backfill { .. } => "backfill",
    };
    let run_id = ledger.start_run(mode_name)?;
    let result = run_started(cfg, opts, &ledger, run_id, mode_name);
    if result.is_err() && !opts.dry_run {
        // The run failed as a whole (exit 1): the ledger says so, rather than "unfinished".
        let _ = ledger.fail_run(run_id, EXIT_FAILED);
    }
    result
}

/// Closes the runs an interruption left unfinished and adds the reports they committed to
/// `summary` (their rejects count towards its exit code).
fn report_interrupted(ledger: &Ledger, run_id: i64, summary: &mut Summary) -> Result<()> {
    let interrupted = ledger
        .close_interrupted_runs(run_id)
        .map_err(|e| ledger.name_in(e))?;
    for r in interrupted {
        let date = NaiveDate::parse_from_str(&r.report_date, "%Y-%m-%d").unwrap_or_default();
        let mut rs = ReportSummary::new(&r.name, "processed", date);
        rs.set_counts(&r.counts);
        rs.sha256 = Some(r.sha256);
        rs.rejects = r
            .rejects
            .into_iter()
            .map(|(row, column, reason)| RejectSummary {
                row,
                column,
                reason,
            })
            .collect();
        rs.notes.push(format!(
            "processed by run {}, which was interrupted before it could report",
            r.run
        ));
        summary.interrupted.push(rs);
    }
    Ok(())
}

/// [`run`] once its row in `runs` is written.
fn run_started(
    cfg: &Config,
    opts: &Options,
    ledger: &Ledger,
    run_id: i64,
    mode_name: &str,
) -> Result<Summary> {
    let schema_fields: Vec<String> = cfg.schema.fields.iter().map(|f| f.name.clone()).collect();
    let mut summary = Summary::start(mode_name, opts.dry_run, cfg, ledger)?;

    // Events a crashed or failed run left behind go out first, oldest first.
    if !opts.dry_run {
        deliver_all(ledger, cfg, &schema_fields, &mut summary);
    }

    // list
    let mut source = open_source(cfg, opts);
    let mut listed = source.list()?;
    // Files not processed before are listed again `settle` later (partial uploads).
    let is_backfill = matches!(opts.mode, Mode::Backfill { .. });
    source.settle(&mut listed, &|l: &Listed| {
        is_backfill
            || !matches!(
                ledger.processed_listing(&l.name, l.size, l.mtime),
                Ok(Some(_))
            )
    })?;
    let mut dated: Vec<(NaiveDate, Listed)> = listed
        .drain(..)
        .map(|l| (report_date(cfg, &l), l))
        .collect();
    if let Mode::Backfill { from, to, .. } = opts.mode {
        dated.retain(|(d, _)| *d >= from && *d <= to);
    }
    dated.sort_by(|(da, a), (db, b)| (da, a.mtime, &a.name).cmp(&(db, b.mtime, &b.name)));
    tracing::info!(reports = dated.len(), "listed the source");

    let mut run = Run {
        cfg,
        ledger,
        opts,
        id: run_id,
        first_event: ledger.max_event_id()? + 1,
        known: None,
    };
    // Reports the ledger holds, for the source's clean-up after delivery.
    let mut settled: Vec<&Listed> = Vec::new();
    for (date, l) in &dated {
        let rs = process_report(&mut run, source.as_mut(), *date, l);
        if matches!(rs.status.as_str(), "seen" | "processed" | "duplicate") {
            settled.push(l);
        }
        if rs.status == "seen" {
            summary.already_processed += 1;
            continue;
        }
        summary.rows += rs.rows;
        summary.rejected += rs.rejected;
        summary.events += rs.events;
        if rs.status == "failed" {
            summary.failed_reports += 1;
        }
        summary.reports.push(rs);
    }

    // deliver
    if opts.dry_run {
        for (s, cfg_sink) in summary.sinks.iter_mut().zip(&cfg.sinks) {
            s.pending = sink::pending(ledger, cfg_sink)?;
            s.previews = sink::preview(ledger, cfg_sink, &schema_fields)?;
        }
    } else {
        deliver_all(ledger, cfg, &schema_fields, &mut summary);
    }

    // after: remote clean-up, only once the ledger holds the report; a failure is a warning.
    if !opts.dry_run {
        for l in settled {
            if let Err(e) = source.after(l) {
                tracing::warn!(file = %l.name, "the report is processed, but its clean-up on the server failed: {e:#}");
                if let Some(rs) = summary.reports.iter_mut().find(|r| r.name == l.name) {
                    rs.notes
                        .push(format!("clean-up on the server failed: {e:#}"));
                }
            }
        }
    }
    summary.pending = summary.sinks.iter().map(|s| s.pending).sum();
    if !opts.dry_run
        && let Err(e) = report_interrupted(ledger, run_id, &mut summary)
    {
        // What this run did stands: what it could not add is a warning.
        tracing::warn!("cannot report the reports of interrupted runs: {e:#}");
    }
    // A dry run delivers nothing by design: its pending events are the audit, not a failure.
    summary.exit_code = if summary.failed_reports > 0
        || summary.rejected > 0
        || summary.interrupted.iter().any(|r| r.rejected > 0)
        || (summary.pending > 0 && !opts.dry_run)
        || summary
            .sinks
            .iter()
            .any(|s| s.error.is_some() || s.failed > 0)
    {
        EXIT_INCOMPLETE
    } else {
        EXIT_OK
    };
    if !opts.dry_run {
        ledger
            .finish_run(
                run_id,
                summary.reports.len() as u64,
                summary.rows,
                summary.rejected,
                summary.events,
                summary.delivered,
                summary.pending,
                summary.exit_code,
            )
            .and_then(|()| ledger.checkpoint())
            .map_err(|e| ledger.name_in(e))?;
    }
    Ok(summary)
}

fn deliver_all(ledger: &Ledger, cfg: &Config, schema_fields: &[String], summary: &mut Summary) {
    for (s, cfg_sink) in summary.sinks.iter_mut().zip(&cfg.sinks) {
        let out = sink::deliver(ledger, cfg_sink, schema_fields);
        s.delivered += out.delivered;
        summary.delivered += out.delivered;
        s.failed += out.failed;
        s.files.extend(out.files);
        s.skipped += out.skipped;
        for (reason, n) in out.skip_reasons {
            *s.skip_reasons.entry(reason).or_default() += n;
        }
        s.failures.extend(out.failures);
        s.pending = out.pending;
        if out.error.is_some() {
            s.error = out.error;
        }
    }
}

/// One run's reports, processed one after another.
struct Run<'r> {
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

impl Run<'_> {
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

/// Takes one listed report through fetch, parse, plan and commit; says what became of it.
fn process_report(
    run: &mut Run<'_>,
    source: &mut dyn Source,
    date: NaiveDate,
    l: &Listed,
) -> ReportSummary {
    // At error level, so that its file name is on every message under `-q` too.
    let span = tracing::error_span!("report", file = %l.name);
    let _enter = span.enter();
    let ledger = run.ledger;
    let mut rs = ReportSummary::new(&l.name, "processed", date);
    // A file the ledger holds under the same name, size and mtime is not read again.
    if !run.is_backfill() {
        match ledger.processed_listing(&l.name, l.size, l.mtime) {
            Ok(Some(_)) => {
                rs.status = "seen".into();
                tracing::debug!("already processed (same name, size and mtime)");
                return rs;
            }
            Ok(None) => {}
            Err(e) => return failed(rs, e),
        }
    }
    if let Some(why) = &l.deferred {
        tracing::info!("deferred to a later run: {why}");
        rs.status = "deferred".into();
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
            rs.status = "deferred".into();
            rs.notes.push(why);
            return rs;
        }
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
    let result = ingest(run, &meta, &fetched.path, &mut hash, replay, &mut rs);
    if let Ok(sha) = hash.wait() {
        rs.sha256 = Some(sha.to_string());
    }
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
            let e = ledger.name_in(e);
            meta.sha256 = rs.sha256.clone().unwrap_or_default();
            let msg = format!("{e:#}");
            if let Err(e2) = ledger.record_failed_report(&meta, run.mode_name(), run.id, &msg) {
                tracing::error!("cannot record the failed report: {e2:#}");
            }
            failed(rs, e)
        }
    }
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
    let mut dup = ReportSummary::new(&meta.name, "duplicate", meta.report_date);
    dup.duplicate_of = Some(first.to_string());
    dup.sha256 = Some(meta.sha256.clone());
    dup
}

fn failed(mut rs: ReportSummary, e: anyhow::Error) -> ReportSummary {
    let msg = format!("{e:#}");
    tracing::error!("report failed: {msg}");
    rs.status = "failed".into();
    rs.error = Some(msg);
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
        planner.apply(&batch)?;
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
    let ctx = DateContext::new(&cfg.schema, cfg.timezone)?;
    // A replay keeps the place its content had: rows without `updated_at` take the date it
    // had then.
    let date = match &replay {
        Some(first) => NaiveDate::parse_from_str(&first.date, "%Y-%m-%d").with_context(|| {
            format!("ledger: report {} has the date {:?}", first.id, first.date)
        })?,
        None => meta.report_date,
    };
    let report_time = ctx.date_start(date).timestamp();
    let before = stamp(path);
    if run.known.is_none() {
        run.known = Some((KnownActivities::load(ledger)?, Order::load(ledger)?));
    }
    let tx = ledger.begin_report(meta, run.mode_name(), run.id)?;
    let resend = matches!(run.opts.mode, Mode::Backfill { resend: true, .. });
    let run_first_event = run.first_event;
    let (known, order) = run.known.as_mut().expect("loaded above");
    // A replay's rows keep the place its content had when first processed.
    let place = match replay {
        Some(first) => first.id,
        None => {
            let date = meta.report_date.to_string();
            let sha256 = if order.needs_hash(&date, meta.mtime, &meta.name) {
                hash.wait()?.to_string()
            } else {
                meta.sha256.clone()
            };
            order.insert(ReportKey {
                id: tx.report_id,
                date,
                mtime: meta.mtime,
                name: meta.name.clone(),
                sha256,
            });
            tx.report_id
        }
    };
    let plan = ReportPlan {
        file: meta.name.clone(),
        report_time,
        place,
        resend,
        run_first_event,
    };
    let started = std::time::Instant::now();
    let mut planner = Planner::new(known, order, &tx, plan);
    let read = std::thread::scope(|scope| -> Result<report::Summary> {
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
        let failure = apply_batches(&mut planner, &batches).err();
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
        extras: read.extras,
    };
    let own_place = place == tx.report_id;
    tx.commit(&totals, &columns, &sha256)?;
    if own_place {
        // Its hash was not known when its place was taken: a later report may need it.
        order.insert(ReportKey {
            id: place,
            date: meta.report_date.to_string(),
            mtime: meta.mtime,
            name: meta.name.clone(),
            sha256,
        });
    }
    ledger.checkpoint_in_background();
    rs.set_counts(&totals);
    rs.merged = outcome.merged;
    rs.notes = read.notes;
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
    Ok(())
}

/// `deliver`: sends the events pending in the ledger to every sink, without reading any
/// report. A dry run sends nothing and shows the first requests instead.
pub fn deliver(cfg: &Config, dry_run: bool) -> Result<Summary> {
    let _lock = lock(&cfg.ledger, dry_run)?;
    let ledger = if dry_run {
        Ledger::scratch_copy(&cfg.ledger)?
    } else {
        Ledger::open(&cfg.ledger)?
    };
    let schema_fields: Vec<String> = cfg.schema.fields.iter().map(|f| f.name.clone()).collect();
    let run_id = if dry_run {
        0
    } else {
        ledger.start_run("deliver")?
    };
    let mut summary = Summary::start("deliver", dry_run, cfg, &ledger)?;
    if dry_run {
        for (s, cfg_sink) in summary.sinks.iter_mut().zip(&cfg.sinks) {
            s.pending = sink::pending(&ledger, cfg_sink)?;
            s.previews = sink::preview(&ledger, cfg_sink, &schema_fields)?;
        }
    } else {
        deliver_all(&ledger, cfg, &schema_fields, &mut summary);
    }
    summary.pending = summary.sinks.iter().map(|s| s.pending).sum();
    // As for `run`: a dry run's pending events are its audit, not a failure.
    summary.exit_code = if (summary.pending > 0 && !dry_run)
        || summary
            .sinks
            .iter()
            .any(|s| s.error.is_some() || s.failed > 0)
    {
        EXIT_INCOMPLETE
    } else {
        EXIT_OK
    };
    if !dry_run {
        ledger
            .finish_run(
                run_id,
                0,
                0,
                0,
                0,
                summary.delivered,
                summary.pending,
                summary.exit_code,
            )
            .and_then(|()| ledger.checkpoint())
            .map_err(|e| ledger.name_in(e))?;
    }
    Ok(summary)
}

/// `retry --failed`: makes the events that failed for good pending again, for one sink or
/// all; returns (sink, events re-queued).
pub fn retry_failed(cfg: &Config, sink: Option<&str>) -> Result<Vec<(String, u64)>> {
    let names: Vec<&str> = match sink {
        Some(name) => {
            if !cfg.sinks.iter().any(|s| s.name() == name) {
                let known: Vec<&str> = cfg.sinks.iter().map(|s| s.name()).collect();
                anyhow::bail!(
                    "no sink named {name:?} in the configuration (sinks: {})",
                    known.join(", ")
                );
            }
            vec![name]
        }
        None => cfg.sinks.iter().map(|s| s.name()).collect(),
    };
    if !cfg.ledger.exists() {
        anyhow::bail!("no ledger at {} yet: nothing has run", cfg.ledger.display());
    }
    let _lock = lock(&cfg.ledger, false)?;
    let ledger = Ledger::open(&cfg.ledger)?;
    let out = ledger.requeue_failed(&names)?;
    ledger.checkpoint()?;
    Ok(out)
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
