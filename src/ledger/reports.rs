//! Reports in the ledger: which were processed (and under which content hash), failed,
//! found duplicates or skipped (files that cannot be taken); and [`ReportTx`], the one transaction in which a report is committed.
//!
//! Guarantee: everything a report does to the ledger happens inside its `ReportTx`;
//! dropped without [`ReportTx::commit`], it rolls all of it back.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};

use super::handle::{Ledger, now, now_text};

/// A report as listed and hashed, before processing.
#[derive(Debug, Clone)]
pub(crate) struct ReportMeta {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
    pub(crate) sha256: String,
    pub(crate) report_date: chrono::NaiveDate,
}

/// Counts a report's processing ends with.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReportCounts {
    pub(crate) rows: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
    pub(crate) skipped: u64,
    pub(crate) unchanged: u64,
    pub(crate) stale: u64,
    pub(crate) events: u64,
    pub(crate) warnings: u64,
}

impl Ledger {
    /// Whether a report of this size was processed (or found a duplicate) before: only
    /// such a file can be a duplicate.
    pub(crate) fn seen_size(&self, size: u64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM reports WHERE size = ?1 AND status IN ('processed', 'duplicate') LIMIT 1",
            )?
            .query_row([size as i64], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Whether a report with this name, size and mtime was processed (no need to fetch it).
    pub(crate) fn processed_listing(
        &self,
        name: &str,
        size: u64,
        mtime: i64,
    ) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT sha256 FROM reports WHERE name = ?1 AND size = ?2 AND mtime = ?3
                 AND status IN ('processed', 'duplicate') LIMIT 1",
            )?
            .query_row(params![name, size, mtime], |r| r.get(0))
            .optional()?)
    }

    pub(crate) fn record_failed_report(
        &self,
        meta: &ReportMeta,
        mode: &str,
        run_id: i64,
        error: &str,
    ) -> Result<()> {
        self.record_unprocessed(meta, "failed", mode, run_id, Some(error))
    }

    /// Records a file the source cannot take (`why`: its name, or what its listing lacks).
    pub(crate) fn record_skipped(
        &self,
        meta: &ReportMeta,
        mode: &str,
        run_id: i64,
        why: &str,
    ) -> Result<()> {
        self.record_unprocessed(meta, "skipped", mode, run_id, Some(why))
    }

    /// Records a report whose content was processed before under another name: the same
    /// file (name, size, mtime) is not read again, nor listed as a duplicate every night.
    pub(crate) fn record_duplicate(
        &self,
        meta: &ReportMeta,
        mode: &str,
        run_id: i64,
    ) -> Result<()> {
        self.record_unprocessed(meta, "duplicate", mode, run_id, None)
    }

    fn record_unprocessed(
        &self,
        meta: &ReportMeta,
        status: &str,
        mode: &str,
        run_id: i64,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO reports (name, size, mtime, sha256, report_date, status, mode, run_id, error, processed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?10, ?6, ?7, ?8, ?9)",
            params![
                meta.name,
                meta.size,
                meta.mtime,
                meta.sha256,
                meta.report_date.to_string(),
                mode,
                run_id,
                error,
                now_text(),
                status
            ],
        )?;
        Ok(())
    }
    /// When the newest report arrived: the time each file (name, size, mtime) was first
    /// recorded, whatever became of it, the latest of those; a file failed or skipped again
    /// every night is not new each night. Else, for a ledger that never saw one, when its
    /// first run started.
    pub(crate) fn newest_report_at(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let at: Option<String> = self.conn.query_row(
            "SELECT COALESCE((SELECT MAX(first_seen) FROM
                                (SELECT MIN(processed_at) AS first_seen FROM reports
                                 GROUP BY name, size, mtime)),
                             (SELECT MIN(started_at) FROM runs))",
            [],
            |r| r.get(0),
        )?;
        Ok(at.and_then(|t| {
            chrono::DateTime::parse_from_rfc3339(&t)
                .ok()
                .map(|t| t.to_utc())
        }))
    }

    /// The greatest mtime of the reports a `run` processed whose names start with
    /// `prefix`: for the API source, the newest `updated_at` a committed nightly pull
    /// brought (its watermark). A backfill's pull covers its own window only: it does not
    /// move the watermark.
    pub(crate) fn newest_mtime(&self, prefix: &str) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MAX(mtime) FROM reports WHERE status = 'processed' AND mode = 'run'
               AND substr(name, 1, length(?1)) = ?1",
            [prefix],
            |r| r.get(0),
        )?)
    }

    /// Processed reports as the order of rows needs them: (id, date, mtime, name, sha256).
    pub(crate) fn processed_reports(&self) -> Result<Vec<ReportKey>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, report_date, mtime, name, sha256 FROM reports WHERE status = 'processed'",
        )?;
        let rows = stmt.query_map([], ReportKey::of_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The first processed report of this content, if any: a report replayed keeps its
    /// place in the order of rows.
    pub(crate) fn first_processed(&self, sha256: &str) -> Result<Option<ReportKey>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, report_date, mtime, name, sha256 FROM reports
                 WHERE sha256 = ?1 AND status = 'processed' ORDER BY id LIMIT 1",
            )?
            .query_row([sha256], ReportKey::of_row)
            .optional()?)
    }

    /// Starts the one transaction in which a report is committed: records the report as
    /// processed (undone with the rest if the transaction is dropped).
    pub(crate) fn begin_report(
        &self,
        meta: &ReportMeta,
        mode: &str,
        run_id: i64,
    ) -> Result<ReportTx<'_>> {
        // A report's commit does not checkpoint: `checkpoint_in_background` does, after it.
        // Other writes (delivery records) checkpoint as SQLite does by default.
        self.conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0; BEGIN IMMEDIATE")?;
        // From here on, dropping the transaction rolls the whole report back.
        let mut tx = ReportTx {
            conn: &self.conn,
            report_id: 0,
            first_event: 0,
            run_id,
            now: now(),
            done: false,
            stored_rejects: None,
        };
        self.conn.execute(
            "INSERT INTO reports (name, size, mtime, sha256, report_date, status, mode, run_id, processed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'processed', ?6, ?7, ?8)",
            params![meta.name, meta.size, meta.mtime, meta.sha256, meta.report_date.to_string(), mode, run_id, now_text()],
        )?;
        tx.report_id = self.conn.last_insert_rowid();
        tx.first_event = self.max_event_id()? + 1;
        Ok(tx)
    }
}

/// A processed report's place in the order of rows (see `crate::dedupe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReportKey {
    pub(crate) id: i64,
    /// `YYYY-MM-DD`.
    pub(crate) date: String,
    pub(crate) mtime: i64,
    pub(crate) name: String,
    pub(crate) sha256: String,
}

impl ReportKey {
    /// The key a row of `SELECT id, report_date, mtime, name, sha256 FROM reports` holds.
    fn of_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportKey> {
        Ok(ReportKey {
            id: r.get(0)?,
            date: r.get(1)?,
            mtime: r.get(2)?,
            name: r.get(3)?,
            sha256: r.get(4)?,
        })
    }
}

/// The open transaction of one report. Dropped without [`ReportTx::commit`], it rolls
/// everything back.
pub(crate) struct ReportTx<'c> {
    pub(super) conn: &'c Connection,
    pub(crate) report_id: i64,
    /// Events with ids from here on were created by this report.
    pub(crate) first_event: i64,
    pub(super) run_id: i64,
    /// When the report started (events' `created_at`).
    pub(super) now: i64,
    done: bool,
    /// For content processed before (a backfill's replay): the rejects already stored for
    /// it (row, column, reason), which are not stored again.
    stored_rejects: Option<std::collections::HashSet<(u64, String, String)>>,
}

impl ReportTx<'_> {
    /// The report's content (`sha256`) was processed before: its rejects already stored
    /// (row, column and reason alike) are not stored a second time.
    pub(crate) fn replaying(&mut self, sha256: &str) -> Result<()> {
        let mut stmt = self.conn.prepare(
            "SELECT x.row, x.col, x.reason FROM rejects x
             JOIN reports p ON p.id = x.report_id
             WHERE p.sha256 = ?1 AND p.status = 'processed'",
        )?;
        let stored = stmt
            .query_map([sha256], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        self.stored_rejects = Some(stored);
        Ok(())
    }

    /// Stores a rejected row (unless a replay finds it stored already).
    pub(crate) fn reject(
        &self,
        file: &str,
        row: u64,
        column: &str,
        reason: &str,
        raw: &str,
    ) -> Result<()> {
        if let Some(stored) = &self.stored_rejects
            && stored.contains(&(row, column.to_string(), reason.to_string()))
        {
            return Ok(());
        }
        self.conn
            .prepare_cached("INSERT INTO rejects (report_id, file, row, col, reason, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![self.report_id, file, row as i64, column, reason, raw])?;
        Ok(())
    }

    /// Writes the report's counts and content hash and commits everything it did.
    pub(crate) fn commit(
        mut self,
        counts: &ReportCounts,
        columns: &Columns,
        sha256: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE reports SET columns = ?2, rows = ?3, accepted = ?4, rejected = ?5, skipped = ?6,
                unchanged = ?7, stale = ?8, events = ?9, warnings = ?10, sha256 = ?11 WHERE id = ?1",
            params![
                self.report_id,
                serde_json::to_string(columns)?,
                counts.rows,
                counts.accepted,
                counts.rejected,
                counts.skipped,
                counts.unchanged,
                counts.stale,
                counts.events,
                counts.warnings,
                sha256
            ],
        )?;
        self.conn.execute_batch("COMMIT")?;
        self.done = true;
        self.restore_autocheckpoint();
        Ok(())
    }

    fn restore_autocheckpoint(&self) {
        let _ = self.conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES};"
        ));
    }
}

/// SQLite's default: a commit that leaves more WAL pages than this checkpoints.
const AUTOCHECKPOINT_PAGES: u32 = 1000;

impl Drop for ReportTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.restore_autocheckpoint();
        }
    }
}

/// The names of the values an event's `attrs` holds, stored once per report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Columns {
    pub(crate) fields: Vec<String>,
    pub(crate) extras: Vec<String>,
}
