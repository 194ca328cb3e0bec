//! Activities in the ledger: the one stored record of each Activity's state, with the
//! position of the greatest row applied to it, its latest event and its ITSM number.
//!
//! Guarantee: `activities` is the only stored copy of an Activity's state. Within a report's
//! transaction the caller writes each Activity's latest record
//! ([`ReportTx::insert_activities`], [`ReportTx::update_activities`]); the commit makes them
//! durable with the rest of the report.

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, params};

use super::handle::Ledger;
use super::reports::ReportTx;
use crate::state::State;

/// Where a row stands in the order of all rows (see `crate::dedupe` for the order itself):
/// its effective time, its report (by id: the report's date, mtime, name and hash decide)
/// and its row number in that report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Position {
    /// `updated_at`, else the start of the report's date: seconds since the epoch.
    pub(crate) at: i64,
    pub(crate) report: i64,
    pub(crate) row: u64,
}

/// What `activities` records of an Activity, but for the text of its ITSM number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) state: State,
    /// The position of the greatest row applied to the Activity.
    pub(crate) position: Position,
    /// Its latest event, if any.
    pub(crate) event_id: Option<i64>,
    /// How many events it has had (the next one is number `events + 1`).
    pub(crate) events: i64,
    /// Whether it has an ITSM number.
    pub(crate) has_itsm_number: bool,
}

impl Ledger {
    /// Calls `f` with the rowid, ID and record of every Activity whose rowid is in `rowids`,
    /// in rowid order.
    pub(crate) fn each_activity(
        &self,
        rowids: std::ops::Range<i64>,
        mut f: impl FnMut(i64, &str, Record) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, activity_id, state, updated_at, report_id, row, event_id, events,
                    length(itsm_number) > 0
             FROM activities WHERE id >= ?1 AND id < ?2",
        )?;
        let mut rows = stmt.query([rowids.start, rowids.end])?;
        while let Some(r) = rows.next()? {
            let rowid: i64 = r.get(0)?;
            let id = r.get_ref(1)?.as_str()?;
            let code: i64 = r.get(2)?;
            let state = State::from_code(code).with_context(|| {
                format!("ledger: Activity {id:?} has the unknown state code {code}")
            })?;
            let record = Record {
                state,
                position: Position {
                    at: r.get(3)?,
                    report: r.get(4)?,
                    row: r.get::<_, i64>(5)? as u64,
                },
                event_id: r.get(6)?,
                events: r.get(7)?,
                has_itsm_number: r.get::<_, Option<bool>>(8)?.unwrap_or(false),
            };
            f(rowid, id, record)?;
        }
        Ok(())
    }

    /// The range the rowids of Activities lie in. (Activities are never deleted, so it is
    /// about as long as there are Activities. Two look-ups at the ends of the table: a
    /// `COUNT(*)`, or `MIN` and `MAX` in one query, would read all of it.)
    pub(crate) fn activity_rowids(&self) -> Result<std::ops::Range<i64>> {
        let (first, last): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE((SELECT MIN(id) FROM activities), 0),
                    COALESCE((SELECT MAX(id) FROM activities), -1)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(first..last + 1)
    }
}

impl ReportTx<'_> {
    /// Records Activities the ledger does not know yet: `(ID, record, ITSM number)` each;
    /// returns their rowids, in the same order. (Inserted in ID order, their index takes
    /// them far faster than scattered.)
    pub(crate) fn insert_activities<'a>(
        &self,
        writes: impl Iterator<Item = (&'a str, Record, Option<&'a str>)>,
    ) -> Result<Vec<i64>> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO activities (activity_id, state, updated_at, report_id, row, event_id, events, itsm_number)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut rowids = Vec::new();
        for (id, r, itsm_number) in writes {
            stmt.execute(params![
                id,
                r.state.code(),
                r.position.at,
                r.position.report,
                r.position.row as i64,
                r.event_id,
                r.events,
                itsm_number
            ])?;
            rowids.push(self.conn.last_insert_rowid());
        }
        Ok(rowids)
    }

    /// Rewrites the records of known Activities: `(rowid, record, ITSM number)` each, where
    /// a `None` number keeps the one recorded. (In rowid order, these walk the table page by
    /// page.)
    pub(crate) fn update_activities<'a>(
        &self,
        writes: impl Iterator<Item = (i64, Record, Option<&'a str>)>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE activities SET state = ?2, updated_at = ?3, report_id = ?4, row = ?5,
                event_id = ?6, events = ?7, itsm_number = COALESCE(?8, itsm_number)
             WHERE id = ?1",
        )?;
        for (rowid, r, itsm_number) in writes {
            stmt.execute(params![
                rowid,
                r.state.code(),
                r.position.at,
                r.position.report,
                r.position.row as i64,
                r.event_id,
                r.events,
                itsm_number
            ])?;
        }
        Ok(())
    }

    /// The ITSM number recorded for the Activity at `rowid`.
    pub(crate) fn itsm_number(&self, rowid: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT itsm_number FROM activities WHERE id = ?1")?
            .query_row([rowid], |r| r.get(0))
            .optional()?
            .flatten())
    }
}
