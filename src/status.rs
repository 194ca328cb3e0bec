//! `status`: what the ledger says — recent runs, reports, Activities by state, undelivered
//! events per sink, recent rejects. Read-only: the ledger file is never written.

use std::fmt::Write as _;

use anyhow::Result;
use rusqlite::params;
use serde::Serialize;

use crate::activity::State;
use crate::config::Config;
use crate::ledger::Ledger;

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    runs: Vec<RunRow>,
    reports: ReportTotals,
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
    delivered_through: i64,
    pending: i64,
    failed: i64,
}

#[derive(Debug, Serialize)]
struct RejectRow {
    file: String,
    row: i64,
    column: String,
    reason: String,
}

pub(crate) fn collect(cfg: &Config) -> Result<Status> {
    if !cfg.ledger.exists() {
        anyhow::bail!("no ledger at {} yet: nothing has run", cfg.ledger.display());
    }
    let ledger = Ledger::read_only(&cfg.ledger)?;
    let c = ledger.conn();
    let mut stmt = c.prepare(
        "SELECT id, started_at, ended_at, mode, reports, rows, rejected, events, delivered, pending, exit_code
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
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let reports = c.query_row(
        "SELECT COALESCE(SUM(status = 'processed'), 0), COALESCE(SUM(status = 'failed'), 0),
                MAX(CASE WHEN status = 'processed' THEN name || ' (' || processed_at || ')' END) FROM reports",
        [],
        |r| Ok(ReportTotals { processed: r.get(0)?, failed: r.get(1)?, last_processed: r.get(2)? }),
    )?;
    let mut activities = Vec::new();
    for s in State::ALL {
        let n: i64 = c.query_row(
            "SELECT COUNT(*) FROM activities WHERE state = ?1",
            [s.code()],
            |r| r.get(0),
        )?;
        activities.push((s.as_str().to_string(), n));
    }
    let mut sinks = Vec::new();
    let names: Vec<String> = cfg.sinks.iter().map(|s| s.name().to_string()).collect();
    for name in names {
        let mark: i64 = c
            .query_row(
                "SELECT delivered_through FROM sinks WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )
            .unwrap_or(0);
        let pending: i64 = c.query_row(
            "SELECT COUNT(*) FROM events e WHERE e.id > ?1
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.sink = ?2 AND d.event_id = e.id AND d.status = 'delivered')",
            params![mark, name],
            |r| r.get(0),
        )?;
        let failed: i64 = c.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE sink = ?1 AND status = 'failed'",
            [&name],
            |r| r.get(0),
        )?;
        sinks.push(SinkRow {
            name,
            delivered_through: mark,
            pending,
            failed,
        });
    }
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
    Ok(Status {
        runs,
        reports,
        activities,
        sinks,
        rejects,
        recent_rejects,
    })
}

pub(crate) fn render(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Recent runs:");
    if s.runs.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for r in &s.runs {
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
            r.exit_code
                .map_or("(unfinished)".to_string(), |c| c.to_string())
        );
    }
    let _ = writeln!(
        o,
        "Reports: {} processed, {} failed{}",
        s.reports.processed,
        s.reports.failed,
        s.reports
            .last_processed
            .as_ref()
            .map_or(String::new(), |l| format!("; last: {l}"))
    );
    let _ = writeln!(o, "Activities by state:");
    for (state, n) in &s.activities {
        let _ = writeln!(o, "  {state:<14} {n}");
    }
    let _ = writeln!(o, "Sinks:");
    for k in &s.sinks {
        let _ = writeln!(
            o,
            "  {:<16} pending {:>7}  failed {:>5}  (delivered through event {})",
            k.name, k.pending, k.failed, k.delivered_through
        );
    }
    let _ = writeln!(o, "Rejected rows: {} in all", s.rejects);
    for r in &s.recent_rejects {
        let _ = writeln!(
            o,
            "  {} row {} column {:?}: {}",
            r.file, r.row, r.column, r.reason
        );
    }
    o
}
