//! Rejected rows as stored, for `rejects`: by run, by report, or all.
//!
//! Guarantee: a report replayed by a backfill shows the rejects of its content, though
//! they are stored once (with the report that first read that content).

use anyhow::Result;
use rusqlite::params;
use serde::Serialize;

use super::handle::Ledger;

/// One rejected row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoredReject {
    pub(crate) report: String,
    pub(crate) row: i64,
    pub(crate) column: String,
    pub(crate) reason: String,
    /// The row as read: personal data, only given when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) raw: Option<String>,
}

/// Which rejects: of one run's reports, of reports of one name, or all.
#[derive(Debug, Clone, Default)]
pub(crate) struct RejectFilter {
    pub(crate) run: Option<i64>,
    pub(crate) report: Option<String>,
    pub(crate) raw: bool,
}

impl Ledger {
    /// Calls `each` with every reject `filter` selects, report by report, row by row.
    pub(crate) fn each_reject(
        &self,
        filter: &RejectFilter,
        each: &mut dyn FnMut(StoredReject) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare(
            "SELECT p.name, x.row, x.col, x.reason, CASE WHEN ?3 THEN x.raw END
             FROM reports p
             JOIN reports q ON q.sha256 = p.sha256 AND q.status = 'processed'
             JOIN rejects x ON x.report_id = q.id
             WHERE p.status = 'processed'
               AND (?1 IS NULL OR p.run_id = ?1) AND (?2 IS NULL OR p.name = ?2)
             GROUP BY p.name, x.row, x.col, x.reason
             ORDER BY MIN(p.id), x.row, MIN(x.id)",
        )?;
        let mut rows = stmt.query(params![filter.run, filter.report, filter.raw])?;
        while let Some(r) = rows.next()? {
            each(StoredReject {
                report: r.get(0)?,
                row: r.get(1)?,
                column: r.get(2)?,
                reason: r.get(3)?,
                raw: r.get(4)?,
            })?;
        }
        Ok(())
    }

    /// Whether the ledger has a run of this id.
    pub(crate) fn has_run(&self, id: i64) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM runs WHERE id = ?1", [id], |r| {
                r.get::<_, i64>(0)
            })?
            > 0)
    }
}
