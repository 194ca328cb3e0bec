//! Runs: one row per command that writes the ledger, with its counts and exit code. A run
//! killed before it finished is closed (as interrupted) by the next one, which reports what
//! it committed.

use anyhow::Result;
use rusqlite::params;

use super::handle::{Ledger, now_text};
use super::reports::ReportCounts;

/// The exit code the ledger records for a run that was interrupted (killed) before it
/// could finish; the next run records it so.
pub(crate) const EXIT_INTERRUPTED: i32 = -1;

/// What a run did, as `runs` records it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunCounts {
    pub(crate) reports: u64,
    pub(crate) rows: u64,
    pub(crate) rejected: u64,
    pub(crate) events: u64,
    pub(crate) delivered: u64,
    pub(crate) pending: u64,
}

/// A report an interrupted run committed.
#[derive(Debug, Clone)]
pub(crate) struct InterruptedReport {
    pub(crate) run: i64,
    pub(crate) report_id: i64,
    pub(crate) name: String,
    pub(crate) report_date: String,
    pub(crate) counts: ReportCounts,
    pub(crate) sha256: String,
    /// The first rejects: row, column, reason.
    pub(crate) rejects: Vec<(u64, String, String)>,
}

impl Ledger {
    pub(crate) fn start_run(&self, mode: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (started_at, mode) VALUES (?1, ?2)",
            params![now_text(), mode],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes the runs an interruption left unfinished (killed: no run but this one can be
    /// going on, as this one holds the lock). Each gets the counts of the reports it
    /// committed and the exit code [`EXIT_INTERRUPTED`]; those reports are returned, with
    /// their first rejects, for this run to report: nobody saw the interrupted run's summary.
    pub(crate) fn close_interrupted_runs(&self, current: i64) -> Result<Vec<InterruptedReport>> {
        // All or nothing: a failure leaves the runs open for the next run to report.
        let tx = self.conn.unchecked_transaction()?;
        let runs: Vec<i64> = self
            .conn
            .prepare("SELECT id FROM runs WHERE ended_at IS NULL AND id < ?1 ORDER BY id")?
            .query_map([current], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        let mut reports_of = self.conn.prepare(
            "SELECT id, name, report_date, rows, accepted, rejected, skipped, unchanged,
                    stale, events, warnings, sha256
             FROM reports WHERE run_id = ?1 AND status = 'processed' ORDER BY id",
        )?;
        for run in runs {
            let reports = reports_of
                .query_map([run], |r| {
                    Ok(InterruptedReport {
                        run,
                        report_id: r.get(0)?,
                        name: r.get(1)?,
                        report_date: r.get(2)?,
                        counts: ReportCounts {
                            rows: r.get(3)?,
                            accepted: r.get(4)?,
                            rejected: r.get(5)?,
                            skipped: r.get(6)?,
                            unchanged: r.get(7)?,
                            stale: r.get(8)?,
                            events: r.get(9)?,
                            warnings: r.get(10)?,
                        },
                        sha256: r.get(11)?,
                        rejects: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let sum =
                |f: fn(&ReportCounts) -> u64| reports.iter().map(|r| f(&r.counts)).sum::<u64>();
            self.conn.execute(
                "UPDATE runs SET ended_at = ?1, exit_code = ?2, reports = ?3, rows = ?4,
                        rejected = ?5, events = ?6
                 WHERE id = ?7",
                params![
                    now_text(),
                    EXIT_INTERRUPTED,
                    reports.len() as i64,
                    sum(|c| c.rows) as i64,
                    sum(|c| c.rejected) as i64,
                    sum(|c| c.events) as i64,
                    run
                ],
            )?;
            out.extend(reports);
        }
        // A replayed report's rejects are stored with the report that first read its
        // content (see `ReportTx::replaying`).
        let mut rejects_of = self.conn.prepare(
            "SELECT x.row, x.col, x.reason FROM rejects x
             JOIN reports q ON q.id = x.report_id AND q.status = 'processed'
             WHERE q.sha256 = (SELECT sha256 FROM reports WHERE id = ?1)
             ORDER BY x.id LIMIT 20",
        )?;
        for r in &mut out {
            r.rejects = rejects_of
                .query_map([r.report_id], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
        }
        drop((reports_of, rejects_of));
        tx.commit()?;
        Ok(out)
    }

    /// Records that a run failed as a whole (exit code 1) and why, keeping any counts it
    /// recorded.
    pub(crate) fn fail_run(&self, run_id: i64, exit_code: i32, error: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET ended_at = COALESCE(ended_at, ?1), exit_code = ?2, reason = ?4
             WHERE id = ?3",
            params![now_text(), exit_code, run_id, error],
        )?;
        Ok(())
    }

    /// Records a run's end, its counts, exit code and why it is not 0 (`reason`).
    pub(crate) fn finish_run(
        &self,
        run_id: i64,
        c: &RunCounts,
        exit_code: i32,
        reason: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET ended_at = ?1, reports = ?2, rows = ?3, rejected = ?4, events = ?5,
                delivered = ?6, pending = ?7, exit_code = ?8, reason = ?10 WHERE id = ?9",
            params![
                now_text(),
                c.reports,
                c.rows,
                c.rejected,
                c.events,
                c.delivered,
                c.pending,
                exit_code,
                run_id,
                reason
            ],
        )?;
        Ok(())
    }
}
