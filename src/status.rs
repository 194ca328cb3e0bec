//! `status`: what the ledger says — recent runs, reports, Activities by state, undelivered
//! events per sink, recent rejects. Read-only: the ledger file is never written.

use std::fmt::Write as _;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::config::LedgerView;
use crate::ledger::Ledger;
use crate::printable::printable;
use crate::state::State;

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    runs: Vec<RunRow>,
    reports: ReportTotals,
    failed_reports: Vec<FailedReport>,
    /// Files the latest run that listed the source could not take, with why.
    skipped_reports: Vec<SkippedReport>,
    /// Failed reports acknowledged with `reports ignore`: not read again, not a problem.
    ignored_reports: Vec<crate::ledger::ignored::ReportLine>,
    activities: Vec<(String, i64)>,
    sinks: Vec<SinkRow>,
    rejects: i64,
    recent_rejects: Vec<RejectRow>,
}

#[derive(Debug, Serialize)]
struct RunRow {
    id: i64,
    started_at: String,
    ended_at: Option<String>,
    mode: String,
    reports: i64,
    rows: i64,
    rejected: i64,
    events: i64,
    delivered: i64,
    pending: i64,
    exit_code: Option<i64>,
    /// Why the exit code is not 0: the error that failed the run, or its problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct ReportTotals {
    processed: i64,
    failed: i64,
    last_processed: Option<String>,
}

#[derive(Debug, Serialize)]
struct SinkRow {
    name: String,
    /// Added to the configuration since the last run: it starts with the next events.
    new: bool,
    delivered_through: i64,
    pending: i64,
    failed: i64,
    skipped: i64,
    /// Why events were skipped (the reason, how many), most first.
    skip_reasons: Vec<(String, i64)>,
    /// The oldest pending events (at most [`LIST_EVENTS`]).
    pending_events: Vec<EventRow>,
    /// The latest events not sent because a field the ITSM needs was empty (at most
    /// [`LIST_EVENTS`]), with the reason: the Activities whose ticket someone should fill in.
    incomplete_events: Vec<EventRow>,
    /// The failed events (at most [`LIST_EVENTS`]), with the error of each.
    failed_events: Vec<EventRow>,
}

/// How many pending and failed events `status` lists per sink.
const LIST_EVENTS: i64 = 50;

#[derive(Debug, Serialize)]
struct EventRow {
    id: i64,
    event_id: String,
    activity_id: String,
    itsm_number: String,
    transition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn state_name(code: Option<i64>) -> &'static str {
    code.and_then(State::from_code)
        .map_or("none", State::as_str)
}

fn event_rows(
    c: &rusqlite::Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<EventRow>> {
    let mut stmt = c.prepare(sql)?;
    let rows = stmt
        .query_map(p, |r| {
            Ok(EventRow {
                id: r.get(0)?,
                event_id: r.get(1)?,
                activity_id: r.get(2)?,
                itsm_number: r.get(3)?,
                transition: format!("{} → {}", state_name(r.get(4)?), state_name(r.get(5)?)),
                attempts: r.get(6)?,
                error: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A report whose attempts failed and that no run processed since (same name and date).
#[derive(Debug, Serialize)]
struct FailedReport {
    name: String,
    report_date: String,
    attempts: i64,
    last_attempt: String,
    error: String,
}

/// A file the latest run that listed the source could not take (its name, or what its
/// listing lacks): it stays in the source, and is listed here until a run no longer finds it.
#[derive(Debug, Serialize)]
struct SkippedReport {
    name: String,
    report_date: String,
    why: String,
}

#[derive(Debug, Serialize)]
struct RejectRow {
    file: String,
    row: i64,
    column: String,
    reason: String,
}

pub(crate) fn collect(cfg: &LedgerView) -> Result<Status> {
    if !cfg.ledger.exists() {
        anyhow::bail!("no ledger at {} yet: nothing has run", cfg.ledger.display());
    }
    let ledger = Ledger::read_only(&cfg.ledger)?;
    let c = ledger.conn();
    let sinks = cfg
        .sinks
        .iter()
        .map(|s| sink_row(c, s))
        .collect::<Result<Vec<_>>>()?;
    let (rejects, recent_rejects) = rejects(c)?;
    Ok(Status {
        runs: runs(c)?,
        reports: report_totals(c)?,
        failed_reports: failed_reports(c)?,
        skipped_reports: skipped_reports(c)?,
        ignored_reports: ledger
            .report_lines(true)?
            .into_iter()
            .filter(|r| r.ignored.is_some())
            .collect(),
        activities: activities(c)?,
        sinks,
        rejects,
        recent_rejects,
    })
}

/// The last ten runs, the latest first.
fn runs(c: &rusqlite::Connection) -> Result<Vec<RunRow>> {
    let mut stmt = c.prepare(
        "SELECT id, started_at, ended_at, mode, reports, rows, rejected, events, delivered, pending, exit_code, reason
         FROM runs ORDER BY id DESC LIMIT 10",
    )?;
    let runs = stmt
        .query_map([], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                started_at: r.get(1)?,
                ended_at: r.get(2)?,
                mode: r.get(3)?,
                reports: r.get(4)?,
                rows: r.get(5)?,
                rejected: r.get(6)?,
                events: r.get(7)?,
                delivered: r.get(8)?,
                pending: r.get(9)?,
                exit_code: r.get(10)?,
                reason: r.get(11)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(runs)
}

fn report_totals(c: &rusqlite::Connection) -> Result<ReportTotals> {
    Ok(c.query_row(
        // Failed: reports whose last attempt failed (an attempt of the same name and report
        // date processed since clears it; a daily file under a fixed name does not), unless
        // a version of the file recorded since was acknowledged (`reports ignore`).
        // Last: the report processed most recently, not the greatest name.
        "SELECT (SELECT COUNT(*) FROM reports WHERE status = 'processed'),
                (SELECT COUNT(*) FROM (SELECT 1 FROM reports f WHERE f.status = 'failed'
                   AND NOT EXISTS (SELECT 1 FROM ignored_reports i JOIN reports g
                                     ON g.name = i.name AND g.size = i.size AND g.mtime = i.mtime
                                   WHERE i.name = f.name AND g.id >= f.id)
                   AND NOT EXISTS (SELECT 1 FROM reports p
                                   WHERE p.name = f.name AND p.report_date = f.report_date
                                     AND p.status IN ('processed', 'duplicate') AND p.id > f.id)
                   GROUP BY f.name, f.report_date)),
                (SELECT name || ' (' || processed_at || ')' FROM reports
                   WHERE status = 'processed' ORDER BY id DESC LIMIT 1)",
        [],
        |r| {
            Ok(ReportTotals {
                processed: r.get(0)?,
                failed: r.get(1)?,
                last_processed: r.get(2)?,
            })
        },
    )?)
}

/// The reports counted as failed, each with its last error: what to look at.
fn failed_reports(c: &rusqlite::Connection) -> Result<Vec<FailedReport>> {
    let mut stmt = c.prepare(
        "SELECT f.name, f.report_date, COUNT(*), MAX(f.processed_at),
                (SELECT g.error FROM reports g
                   WHERE g.name = f.name AND g.report_date = f.report_date
                     AND g.status = 'failed' ORDER BY g.id DESC LIMIT 1)
         FROM reports f WHERE f.status = 'failed'
           AND NOT EXISTS (SELECT 1 FROM ignored_reports i JOIN reports g
                             ON g.name = i.name AND g.size = i.size AND g.mtime = i.mtime
                           WHERE i.name = f.name AND g.id >= f.id)
           AND NOT EXISTS (SELECT 1 FROM reports p
                           WHERE p.name = f.name AND p.report_date = f.report_date
                             AND p.status IN ('processed', 'duplicate') AND p.id > f.id)
         GROUP BY f.name, f.report_date ORDER BY MAX(f.id) DESC LIMIT 20",
    )?;
    let failed_reports = stmt
        .query_map([], |r| {
            Ok(FailedReport {
                name: r.get(0)?,
                report_date: r.get(1)?,
                attempts: r.get(2)?,
                last_attempt: r.get(3)?,
                error: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(failed_reports)
}

/// The files the latest `run` or `backfill` skipped.
fn skipped_reports(c: &rusqlite::Connection) -> Result<Vec<SkippedReport>> {
    let mut stmt = c.prepare(
        "SELECT name, report_date, COALESCE(error, '') FROM reports
         WHERE status = 'skipped'
           AND run_id = (SELECT MAX(id) FROM runs WHERE mode IN ('run', 'backfill'))
         ORDER BY name",
    )?;
    let skipped = stmt
        .query_map([], |r| {
            Ok(SkippedReport {
                name: r.get(0)?,
                report_date: r.get(1)?,
                why: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(skipped)
}

/// Activities by state.
fn activities(c: &rusqlite::Connection) -> Result<Vec<(String, i64)>> {
    let mut activities = Vec::new();
    for s in State::ALL {
        let n: i64 = c.query_row(
            "SELECT COUNT(*) FROM activities WHERE state = ?1",
            [s.code()],
            |r| r.get(0),
        )?;
        activities.push((s.as_str().to_string(), n));
    }
    Ok(activities)
}

/// A configured sink: its mark, what is pending and failed, and the first of each.
fn sink_row(c: &rusqlite::Connection, name: &str) -> Result<SinkRow> {
    let name = name.to_string();
    let known: Option<i64> = c
        .query_row(
            "SELECT delivered_through FROM sinks WHERE name = ?1",
            [&name],
            |r| r.get(0),
        )
        .optional()?;
    // A sink no run delivered to yet starts with the events created after it was
    // added (see `Ledger::sink_mark`): none of the ledger's events is pending for it.
    let new = known.is_none();
    let mark = match known {
        Some(m) => m,
        None => c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?,
    };
    // Pending: after the mark and without an outcome (delivered, failed or skipped).
    let pending: i64 = c.query_row(
        "SELECT COUNT(*) FROM events e WHERE e.id > ?1
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.sink = ?2 AND d.event_id = e.id)",
        params![mark, name],
        |r| r.get(0),
    )?;
    let failed: i64 = c.query_row(
        "SELECT COUNT(*) FROM deliveries WHERE sink = ?1 AND status = 'failed'",
        [&name],
        |r| r.get(0),
    )?;
    let skipped: i64 = c.query_row(
        "SELECT COUNT(*) FROM deliveries WHERE sink = ?1 AND status = 'skipped'",
        [&name],
        |r| r.get(0),
    )?;
    let mut stmt = c.prepare(
        "SELECT COALESCE(error, ''), COUNT(*) FROM deliveries WHERE sink = ?1 AND status = 'skipped'
         GROUP BY 1 ORDER BY 2 DESC, 1",
    )?;
    let skip_reasons = stmt
        .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(String, i64)>>>()?;
    let pending_events = event_rows(
        c,
        "SELECT e.id, e.event_key, e.activity_id, e.itsm_number, e.previous_state, e.state, NULL, NULL
         FROM events e WHERE e.id > ?1
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.sink = ?2 AND d.event_id = e.id)
         ORDER BY e.id LIMIT ?3",
        params![mark, name, LIST_EVENTS],
    )?;
    // Every skip but the superseded ones is a field the ITSM needs that was empty.
    let incomplete_events = event_rows(
        c,
        "SELECT e.id, e.event_key, e.activity_id, e.itsm_number, e.previous_state, e.state, NULL, d.error
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.sink = ?1 AND d.status = 'skipped' AND d.error IS NOT ?2
         ORDER BY e.id DESC LIMIT ?3",
        params![name, crate::sink::http::SKIP_SUPERSEDED, LIST_EVENTS],
    )?;
    let failed_events = event_rows(
        c,
        "SELECT e.id, e.event_key, e.activity_id, e.itsm_number, e.previous_state, e.state, d.attempts, d.error
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.sink = ?1 AND d.status = 'failed' ORDER BY e.id LIMIT ?2",
        params![name, LIST_EVENTS],
    )?;
    Ok(SinkRow {
        name,
        new,
        delivered_through: mark,
        pending,
        failed,
        skipped,
        skip_reasons,
        incomplete_events,
        pending_events,
        failed_events,
    })
}

/// How many rows were rejected in all, and the last twenty.
fn rejects(c: &rusqlite::Connection) -> Result<(i64, Vec<RejectRow>)> {
    let rejects: i64 = c.query_row("SELECT COUNT(*) FROM rejects", [], |r| r.get(0))?;
    let mut stmt =
        c.prepare("SELECT file, row, col, reason FROM rejects ORDER BY id DESC LIMIT 20")?;
    let recent_rejects = stmt
        .query_map([], |r| {
            Ok(RejectRow {
                file: r.get(0)?,
                row: r.get(1)?,
                column: r.get(2)?,
                reason: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((rejects, recent_rejects))
}

pub(crate) fn render(s: &Status) -> String {
    let mut o = String::new();
    render_runs(&mut o, &s.runs);
    render_reports(&mut o, s);
    let _ = writeln!(o, "Activities by state:");
    for (state, n) in &s.activities {
        let _ = writeln!(o, "  {state:<14} {n}");
    }
    let _ = writeln!(o, "Sinks:");
    for k in &s.sinks {
        render_sink(&mut o, k);
    }
    let _ = writeln!(o, "Rejected rows: {} in all", s.rejects);
    for r in &s.recent_rejects {
        let _ = writeln!(
            o,
            "  {} row {} column {:?}: {}",
            printable(&r.file),
            r.row,
            r.column,
            printable(&r.reason)
        );
    }
    if s.rejects > s.recent_rejects.len() as i64 {
        let _ = writeln!(
            o,
            "  … {} more: tangoe-ingest rejects (--run ID, --report NAME, --csv)",
            s.rejects - s.recent_rejects.len() as i64
        );
    }
    o
}

/// The recent runs, each with why it did not exit 0.
fn render_runs(o: &mut String, runs: &[RunRow]) {
    let _ = writeln!(o, "Recent runs:");
    if runs.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for r in runs {
        let _ = writeln!(
            o,
            "  #{:<4} {} {:<8} reports {:>4}  rows {:>8}  rejected {:>5}  events {:>7}  delivered {:>7}  pending {:>6}  exit {}",
            r.id,
            r.started_at,
            r.mode,
            r.reports,
            r.rows,
            r.rejected,
            r.events,
            r.delivered,
            r.pending,
            match r.exit_code {
                None => "(unfinished: running, or killed)".to_string(),
                Some(c) if c == i64::from(crate::ledger::EXIT_INTERRUPTED) => {
                    "(interrupted)".to_string()
                }
                Some(143) => "143 (stopped by SIGTERM)".to_string(),
                Some(130) => "130 (stopped by SIGINT)".to_string(),
                Some(c) => c.to_string(),
            }
        );
        if let Some(why) = &r.reason {
            let _ = writeln!(o, "        why: {}", crate::printable::printable(why));
        }
    }
}

/// The reports: totals, then the failed, skipped and ignored ones.
fn render_reports(o: &mut String, s: &Status) {
    let _ = writeln!(
        o,
        "Reports: {} processed, {} failed, {} ignored{}",
        s.reports.processed,
        s.reports.failed,
        s.ignored_reports.len(),
        s.reports
            .last_processed
            .as_ref()
            .map_or(String::new(), |l| format!("; last: {l}"))
    );
    for f in &s.failed_reports {
        let _ = writeln!(
            o,
            "  failed {} (report date {}): {} attempt(s), the last at {}: {}",
            printable(&f.name),
            f.report_date,
            f.attempts,
            f.last_attempt,
            printable(&f.error)
        );
    }
    if !s.failed_reports.is_empty() {
        let _ = writeln!(
            o,
            "  (a failed report stays listed until a run processes it: same name and date)"
        );
    }
    for k in &s.skipped_reports {
        let _ = writeln!(
            o,
            "  skipped {} (report date {}) by the latest run: {}",
            printable(&k.name),
            k.report_date,
            printable(&k.why)
        );
    }
    for r in &s.ignored_reports {
        let _ = writeln!(
            o,
            "  ignored {} (report date {}): {}; last error: {}",
            printable(&r.name),
            r.report_date,
            printable(&r.ignored.as_ref().map_or(String::new(), |i| i.describe())),
            printable(r.error.as_deref().unwrap_or(""))
        );
    }
}

/// One sink's part of the status: its mark, and its pending and failed events.
fn render_sink(o: &mut String, k: &SinkRow) {
    if k.new {
        let _ = writeln!(
            o,
            "  {:<16} new: starts with the events after event {} (use `backfill --resend` \
             to fill it with earlier ones)",
            k.name, k.delivered_through
        );
        return;
    }
    let _ = writeln!(
        o,
        "  {:<16} pending {:>7}  failed {:>5}  (delivered through event {})",
        k.name, k.pending, k.failed, k.delivered_through
    );
    for (reason, n) in &k.skip_reasons {
        let _ = writeln!(
            o,
            "    skipped {n}: {}",
            crate::printable::printable(reason)
        );
    }
    for e in &k.pending_events {
        let _ = writeln!(
            o,
            "    pending #{} {} activity {} {} {}",
            e.id, e.event_id, e.activity_id, e.itsm_number, e.transition
        );
    }
    if k.pending > k.pending_events.len() as i64 {
        let _ = writeln!(
            o,
            "    ... and {} more pending",
            k.pending - k.pending_events.len() as i64
        );
    }
    for e in &k.incomplete_events {
        let _ = writeln!(
            o,
            "    not sent #{} {} activity {} {}: {}",
            e.id,
            e.event_id,
            crate::printable::printable(&e.activity_id),
            e.transition,
            crate::printable::printable(e.error.as_deref().unwrap_or(""))
        );
    }
    for e in &k.failed_events {
        let _ = writeln!(
            o,
            "    failed  #{} {} activity {} {} {} after {} attempts: {}",
            e.id,
            e.event_id,
            e.activity_id,
            e.itsm_number,
            e.transition,
            e.attempts.unwrap_or(0),
            e.error.as_deref().unwrap_or("")
        );
    }
    if k.failed > k.failed_events.len() as i64 {
        let _ = writeln!(
            o,
            "    ... and {} more failed",
            k.failed - k.failed_events.len() as i64
        );
    }
    if k.failed > 0 {
        let _ = writeln!(
            o,
            "    once the cause is fixed: tangoe-ingest retry --failed --sink {}",
            k.name
        );
    }
}
