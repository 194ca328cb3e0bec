//! Failed reports an operator acknowledged (`reports ignore`), and the listing of reports
//! with their last status (`reports`).
//!
//! Guarantee: an acknowledgement names one version of a file (name, size, mtime): the one
//! whose attempts failed. That version is not read again until `reports retry` removes the
//! acknowledgement; a changed file (another size or mtime) under the same name is read as
//! any new report is.

use anyhow::{Result, bail};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::handle::{Ledger, now_text};

/// Who acknowledged a failed report, when and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ignored {
    pub(crate) by: String,
    pub(crate) at: String,
    pub(crate) reason: Option<String>,
}

impl Ignored {
    /// One line: `ignored by NAME at TIME: REASON`.
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("ignored by {} at {}", self.by, self.at);
        if let Some(r) = &self.reason {
            s.push_str(": ");
            s.push_str(r);
        }
        s
    }
}

/// A report name as `reports` lists it: its latest record.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReportLine {
    pub(crate) name: String,
    pub(crate) report_date: String,
    /// `processed`, `duplicate`, `failed` or `ignored`.
    pub(crate) status: String,
    /// When its latest record was written.
    pub(crate) at: String,
    pub(crate) rows: i64,
    pub(crate) rejected: i64,
    /// Failed attempts since it was last processed.
    pub(crate) failures: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ignored: Option<Ignored>,
}

impl Ledger {
    /// The acknowledgement of this version of a report, if it has one.
    pub(crate) fn ignored(&self, name: &str, size: u64, mtime: i64) -> Result<Option<Ignored>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT ignored_by, ignored_at, reason FROM ignored_reports
                 WHERE name = ?1 AND size = ?2 AND mtime = ?3",
            )?
            .query_row(params![name, size as i64, mtime], |r| {
                Ok(Ignored {
                    by: r.get(0)?,
                    at: r.get(1)?,
                    reason: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Acknowledges the report `name` whose latest attempt failed (or a file the source
    /// could not take): that version of the file is not tried again. Errors when its latest
    /// record is neither.
    pub(crate) fn ignore_report(&self, name: &str, by: &str, reason: Option<&str>) -> Result<()> {
        let latest: Option<(String, i64, i64)> = self
            .conn
            .query_row(
                "SELECT status, size, mtime FROM reports WHERE name = ?1 ORDER BY id DESC LIMIT 1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((status, size, mtime)) = latest else {
            bail!("no report named {name:?} in the ledger (`tangoe-ingest reports` lists them)");
        };
        if status != "failed" && status != "skipped" {
            bail!(
                "the report {name:?} is not failing (its last attempt: {status}): nothing to ignore"
            );
        }
        self.conn.execute(
            "INSERT OR REPLACE INTO ignored_reports (name, size, mtime, ignored_by, ignored_at, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, size, mtime, by, now_text(), reason],
        )?;
        Ok(())
    }

    /// Removes every acknowledgement of the report `name`; returns how many there were.
    pub(crate) fn unignore_report(&self, name: &str) -> Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM ignored_reports WHERE name = ?1", [name])?)
    }

    /// Every report name in the ledger with its latest record, the latest first; with
    /// `failing`, only those whose latest attempt failed (ignored ones included).
    pub(crate) fn report_lines(&self, failing: bool) -> Result<Vec<ReportLine>> {
        let mut stmt = self.conn.prepare(
            "SELECT r.name, r.report_date, r.status, r.processed_at, r.rows, r.rejected, r.error,
                    (SELECT COUNT(*) FROM reports f WHERE f.name = r.name AND f.status = 'failed'
                       AND f.id > COALESCE((SELECT MAX(p.id) FROM reports p WHERE p.name = r.name
                                            AND p.status IN ('processed', 'duplicate')), 0)),
                    i.ignored_by, i.ignored_at, i.reason
             FROM reports r
             LEFT JOIN ignored_reports i ON i.name = r.name AND i.size = r.size AND i.mtime = r.mtime
             WHERE r.id = (SELECT MAX(x.id) FROM reports x WHERE x.name = r.name)
               AND (?1 = 0 OR r.status IN ('failed', 'skipped'))
             ORDER BY r.id DESC",
        )?;
        let lines = stmt
            .query_map([failing], |r| {
                let status: String = r.get(2)?;
                let by: Option<String> = r.get(8)?;
                let ignored = match (&by, status.as_str()) {
                    (Some(by), "failed" | "skipped") => Some(Ignored {
                        by: by.clone(),
                        at: r.get(9)?,
                        reason: r.get(10)?,
                    }),
                    _ => None,
                };
                Ok(ReportLine {
                    name: r.get(0)?,
                    report_date: r.get(1)?,
                    status: if ignored.is_some() {
                        "ignored".into()
                    } else {
                        status
                    },
                    at: r.get(3)?,
                    rows: r.get(4)?,
                    rejected: r.get(5)?,
                    failures: r.get(7)?,
                    error: r.get(6)?,
                    ignored,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(lines)
    }
}
