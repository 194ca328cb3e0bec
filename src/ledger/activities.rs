//! Activities in the ledger: the one stored record of each Activity's state, with the
//! position of the latest row that confirmed it, its latest event and its ITSM number.
//!
//! Guarantees: `activities` is the only stored copy of an Activity's state; within a
//! report's transaction, writes to one Activity land in the order they were asked for
//! (buffered writes are flushed before a direct one to an Activity seen earlier in the
//! report: see [`ReportTx::flush`]).

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, params};

use super::Ledger;
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

/// What `activities` records of an Activity's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) state: State,
    pub(crate) position: Position,
}

/// An Activity's latest event and ITSM number, as a new event of it needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct History {
    /// Its latest event, if any.
    pub(crate) event_id: Option<i64>,
    /// How many events it has had (the next one is number `events + 1`).
    pub(crate) events: i64,
    pub(crate) itsm_number: Option<String>,
}

/// An Activity first seen in the report, waiting to be inserted.
#[derive(Debug)]
pub(crate) struct Fresh {
    pub(crate) id: String,
    pub(crate) state: State,
    pub(crate) position: Position,
    pub(crate) event_id: i64,
    pub(crate) itsm_number: Option<String>,
}

/// Buffered writes a report holds before writing them in Activity-ID order: a B-tree takes
/// sorted writes far faster than scattered ones.
const BUFFERED: usize = 65_536;

impl Ledger {
    /// Calls `f` with every Activity's ID and recorded state, in ID order.
    pub(crate) fn each_activity(
        &self,
        mut f: impl FnMut(&str, Recorded) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT activity_id, state, updated_at, report_id, row FROM activities")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id = r.get_ref(0)?.as_str()?;
            let code: i64 = r.get(1)?;
            let state = State::from_code(code).with_context(|| {
                format!("ledger: Activity {id:?} has the unknown state code {code}")
            })?;
            let position = Position {
                at: r.get(2)?,
                report: r.get(3)?,
                row: r.get::<_, i64>(4)? as u64,
            };
            f(id, Recorded { state, position })?;
        }
        Ok(())
    }

    pub(crate) fn count_activities(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM activities", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

impl ReportTx<'_> {
    /// Records an Activity the ledger did not know (buffered: see [`ReportTx::flush`]).
    pub(crate) fn add_activity(&mut self, fresh: Fresh) -> Result<()> {
        self.fresh.push(fresh);
        if self.fresh.len() >= BUFFERED {
            self.flush_fresh()?;
        }
        Ok(())
    }

    /// Records a newer position of an Activity whose state stays (buffered).
    pub(crate) fn touch_activity(&mut self, id: &str, position: Position) -> Result<()> {
        self.touched.push((id.to_string(), position));
        if self.touched.len() >= BUFFERED {
            self.flush_touched()?;
        }
        Ok(())
    }

    /// Writes the buffered new Activities and newer positions. Call it before reading or
    /// writing an Activity that this report has already written.
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.flush_fresh()?;
        self.flush_touched()
    }

    fn flush_fresh(&mut self) -> Result<()> {
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO activities (activity_id, state, updated_at, report_id, row, event_id, events, itsm_number)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)",
        )?;
        for a in &fresh {
            stmt.execute(params![
                a.id,
                a.state.code(),
                a.position.at,
                a.position.report,
                a.position.row as i64,
                a.event_id,
                a.itsm_number
            ])?;
        }
        fresh.clear();
        self.fresh = fresh;
        Ok(())
    }

    fn flush_touched(&mut self) -> Result<()> {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut stmt = self.conn.prepare_cached(
            "UPDATE activities SET updated_at = ?2, report_id = ?3, row = ?4 WHERE activity_id = ?1",
        )?;
        for (id, p) in &touched {
            stmt.execute(params![id, p.at, p.report, p.row as i64])?;
        }
        touched.clear();
        self.touched = touched;
        Ok(())
    }

    /// The latest event and ITSM number of a known Activity.
    pub(crate) fn history(&self, id: &str) -> Result<History> {
        self.conn
            .prepare_cached(
                "SELECT event_id, events, itsm_number FROM activities WHERE activity_id = ?1",
            )?
            .query_row([id], |r| {
                Ok(History {
                    event_id: r.get(0)?,
                    events: r.get(1)?,
                    itsm_number: r.get(2)?,
                })
            })
            .optional()?
            .with_context(|| format!("ledger: the Activity {id:?} is not in `activities`"))
    }

    /// Moves a known Activity to `state` at `position`, with `event_id` as its latest event
    /// and `events` events in all; keeps its ITSM number when `itsm_number` is `None`.
    pub(crate) fn set_activity(
        &self,
        id: &str,
        state: State,
        position: Position,
        event_id: Option<i64>,
        events: i64,
        itsm_number: Option<&str>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE activities SET state = ?2, updated_at = ?3, report_id = ?4, row = ?5,
                    event_id = ?6, events = ?7, itsm_number = COALESCE(?8, itsm_number)
                 WHERE activity_id = ?1",
            )?
            .execute(params![
                id,
                state.code(),
                position.at,
                position.report,
                position.row as i64,
                event_id,
                events,
                itsm_number
            ])?;
        Ok(())
    }
}
