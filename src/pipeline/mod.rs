//! The run: list → fetch → parse → plan → commit → deliver → after, in that order, for
//! `run`, `backfill` and their dry runs alike; and `deliver` and `retry`. Drives the stages;
//! the work of each is done by the modules it calls.
//!
//! A dry run walks the same stages against a throw-away copy of the ledger and stops
//! before delivery: the real ledger is only read, no file is written, nothing is moved.
//! One bad report never sinks the run: it is recorded as failed and the others go on.

mod options;
mod report;

use anyhow::Result;
use chrono::NaiveDate;

use crate::config::{Config, SourceConfig};
use crate::interrupt;
use crate::ledger::Ledger;
use crate::lock::lock;
use crate::sink;
use crate::source::api::{ApiSource, NAME_PREFIX};
use crate::source::{Listed, Source, local::LocalSource, sftp::SftpSource};
use crate::summary::{EXIT_FAILED, RejectSummary, ReportStatus, ReportSummary, Summary};
pub use options::{Mode, Options};
use report::Run;

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

fn open_source(cfg: &Config, opts: &Options, ledger: &Ledger) -> Result<Box<dyn Source>> {
    Ok(match &cfg.source {
        SourceConfig::Local { dir } => {
            Box::new(LocalSource::new(dir.clone(), cfg.patterns.clone()))
        }
        SourceConfig::Sftp(s) => Box::new(SftpSource::new(
            (**s).clone(),
            cfg.patterns.clone(),
            matches!(opts.mode, Mode::Backfill { .. }),
            opts.dry_run,
        )),
        SourceConfig::Api(a) => match opts.mode {
            Mode::Backfill { from, to, .. } => {
                Box::new(ApiSource::backfill((**a).clone(), from, to))
            }
            Mode::Run => Box::new(ApiSource::incremental(
                (**a).clone(),
                ledger.newest_mtime(NAME_PREFIX)?,
            )),
        },
    })
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
    if let Err(e) = &result
        && !opts.dry_run
    {
        // The run failed as a whole (exit 1): the ledger says so and why, rather than
        // "unfinished".
        let _ = ledger.fail_run(run_id, EXIT_FAILED, &format!("{e:#}"));
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
        let mut rs = ReportSummary::new(&r.name, ReportStatus::Processed, date);
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
    let mut summary = start(mode_name, opts.dry_run, cfg, ledger)?;
    summary.run = (!opts.dry_run).then_some(run_id);

    // Events a crashed or failed run left behind go out first, oldest first.
    if !opts.dry_run {
        let schema_fields: Vec<String> = cfg.schema.fields.iter().map(|f| f.name.clone()).collect();
        deliver_all(ledger, cfg, &schema_fields, &mut summary);
    }

    // list
    let mut source = open_source(cfg, opts, ledger)?;
    let mut listed = source.list()?;
    // Files not processed before are listed again `settle` later (partial uploads).
    let is_backfill = matches!(opts.mode, Mode::Backfill { .. });
    source.settle(&mut listed, &|l: &Listed| {
        let taken = matches!(
            ledger.processed_listing(&l.name, l.size, l.mtime),
            Ok(Some(_))
        );
        let ignored = matches!(ledger.ignored(&l.name, l.size, l.mtime), Ok(Some(_)));
        (is_backfill || !taken) && !ignored
    })?;
    let mut dated: Vec<(NaiveDate, Listed)> = listed
        .drain(..)
        .map(|l| (report_date(cfg, &l), l))
        .collect();
    if let Mode::Backfill { from, to, .. } = opts.mode
        && !source.selects_by_date()
    {
        dated.retain(|(d, _)| *d >= from && *d <= to);
    }
    dated.sort_by(|(da, a), (db, b)| (da, a.mtime, &a.name).cmp(&(db, b.mtime, &b.name)));
    tracing::info!(reports = dated.len(), "listed the source");

    let mut run = Run::new(cfg, ledger, opts, run_id)?;
    // Reports the ledger holds, for the source's clean-up after delivery.
    let mut settled: Vec<&Listed> = Vec::new();
    for (date, l) in &dated {
        if interrupt::requested().is_some() {
            tracing::warn!("stopping: the reports left are read by the next run");
            break;
        }
        let Some(rs) = run.process(source.as_mut(), *date, l) else {
            // Taken by an earlier run (same name, size and mtime): not read again.
            summary.already_processed += 1;
            settled.push(l);
            continue;
        };
        if matches!(rs.status, ReportStatus::Processed | ReportStatus::Duplicate) {
            settled.push(l);
        }
        summary.add_report(rs);
    }

    deliver_stage(ledger, cfg, opts.dry_run, &mut summary)?;

    // after: remote clean-up, only once the ledger holds the report; a failure is a warning.
    // When stopping, the next run does it (it settles reports processed before too).
    if !opts.dry_run && interrupt::requested().is_none() {
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
    if !opts.dry_run
        && let Err(e) = report_interrupted(ledger, run_id, &mut summary)
    {
        // What this run did stands: what it could not add is a warning.
        tracing::warn!("cannot report the reports of interrupted runs: {e:#}");
    }
    if let Some(within) = cfg.expect_new_within
        && let Some(message) = silence(ledger, within)?
    {
        summary.source_silent(message);
    }
    summary.set_exit_code();
    if !opts.dry_run {
        finish(ledger, run_id, &summary)?;
    }
    Ok(summary)
}

/// Why the source counts as silent, if it does: no new report for longer than `within`.
fn silence(ledger: &Ledger, within: std::time::Duration) -> Result<Option<String>> {
    let Some(newest) = ledger.newest_report_at()? else {
        return Ok(None);
    };
    let quiet = chrono::Utc::now() - newest;
    if quiet.to_std().is_ok_and(|q| q > within) {
        let hours = quiet.num_minutes() as f64 / 60.0;
        return Ok(Some(format!(
            "the source is silent: no new report for {hours:.1} hours (since {}; \
             [source] expect_new_within is {} hours)",
            newest.format("%Y-%m-%d %H:%M UTC"),
            within.as_secs() as f64 / 3600.0
        )));
    }
    Ok(None)
}

/// An empty summary for a command, every sink registered in the ledger (a sink new to it
/// starts with the events created after it).
fn start(mode: &str, dry_run: bool, cfg: &Config, ledger: &Ledger) -> Result<Summary> {
    for s in &cfg.sinks {
        ledger.sink_mark(s.name())?;
    }
    Ok(Summary::new(
        mode,
        dry_run,
        cfg.sinks.iter().map(|s| s.name()),
    ))
}

/// Records the run's end with its counts and exit code, and folds the WAL into the ledger.
fn finish(ledger: &Ledger, run_id: i64, summary: &Summary) -> Result<()> {
    let counts = crate::ledger::runs::RunCounts {
        reports: summary.reports.len() as u64,
        rows: summary.rows,
        rejected: summary.rejected,
        events: summary.events,
        delivered: summary.delivered,
        pending: summary.pending,
    };
    ledger
        .finish_run(run_id, &counts, summary.exit_code, summary.why().as_deref())
        .and_then(|()| ledger.checkpoint())
        .map_err(|e| ledger.name_in(e))
}

/// The deliver stage: each sink sends what is pending; a dry run sends nothing and shows
/// the first requests instead.
fn deliver_stage(
    ledger: &Ledger,
    cfg: &Config,
    dry_run: bool,
    summary: &mut Summary,
) -> Result<()> {
    let schema_fields: Vec<String> = cfg.schema.fields.iter().map(|f| f.name.clone()).collect();
    if dry_run {
        for (s, cfg_sink) in summary.sinks.iter_mut().zip(&cfg.sinks) {
            s.pending = sink::pending(ledger, cfg_sink)?;
            s.previews = sink::preview(ledger, cfg_sink, &schema_fields)?;
        }
    } else {
        deliver_all(ledger, cfg, &schema_fields, summary);
    }
    summary.pending = summary.sinks.iter().map(|s| s.pending).sum();
    Ok(())
}

fn deliver_all(ledger: &Ledger, cfg: &Config, schema_fields: &[String], summary: &mut Summary) {
    for (s, cfg_sink) in summary.sinks.iter_mut().zip(&cfg.sinks) {
        let out = sink::deliver(ledger, cfg_sink, schema_fields);
        s.delivered += out.delivered;
        summary.delivered += out.delivered;
        s.failed += out.failed;
        s.files.extend(out.files);
        s.skipped += out.skipped;
        s.incomplete += out.incomplete;
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

/// `deliver`: sends the events pending in the ledger to every sink, without reading any
/// report. A dry run sends nothing and shows the first requests instead.
pub fn deliver(cfg: &Config, dry_run: bool) -> Result<Summary> {
    let _lock = lock(&cfg.ledger, dry_run)?;
    let ledger = if dry_run {
        Ledger::scratch_copy(&cfg.ledger)?
    } else {
        Ledger::open(&cfg.ledger)?
    };
    let run_id = if dry_run {
        0
    } else {
        ledger.start_run("deliver")?
    };
    let result = (|| {
        let mut summary = start("deliver", dry_run, cfg, &ledger)?;
        deliver_stage(&ledger, cfg, dry_run, &mut summary)?;
        summary.set_exit_code();
        if !dry_run {
            finish(&ledger, run_id, &summary)?;
        }
        Ok(summary)
    })();
    if let Err(e) = &result
        && !dry_run
    {
        let _ = ledger.fail_run(run_id, EXIT_FAILED, &format!("{e:#}"));
    }
    result
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
