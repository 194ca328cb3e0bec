//! A report's attempts: recorded (and committed) before the report is read, cleared when
//! its processing ends either way. An attempt still recorded at the next run is one that
//! never finished: the process was killed, ran out of memory or crashed while reading it.
//!
//! Guarantee: a report whose processing did not finish [`MAX_TRIES`] times is not read
//! again (the pipeline records it as failed) until its file changes (another size or mtime)
//! or its attempts are cleared.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::handle::{Ledger, now_text};
use super::reports::{ReportMeta, ReportTx};

/// Unfinished attempts after which a report is not read again.
pub(crate) const MAX_TRIES: i64 = 2;

/// A listed report, as its attempts are keyed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Listing<'a> {
    pub(crate) name: &'a str,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
}

impl ReportMeta {
    /// The report as its attempts are keyed.
    pub(crate) fn listing(&self) -> Listing<'_> {
        Listing {
            name: &self.name,
            size: self.size,
            mtime: self.mtime,
        }
    }
}

impl Ledger {
    /// How many attempts at this report never finished.
    pub(crate) fn unfinished_tries(&self, l: Listing<'_>) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT tries FROM attempts WHERE name = ?1 AND size = ?2 AND mtime = ?3",
            )?
            .query_row(params![l.name, l.size, l.mtime], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// Records (and commits) an attempt at this report, before it is read.
    pub(crate) fn begin_attempt(&self, l: Listing<'_>) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO attempts (name, size, mtime, tries, last_try) VALUES (?1, ?2, ?3, 1, ?4)
                 ON CONFLICT (name, size, mtime) DO UPDATE SET tries = tries + 1, last_try = ?4",
            )?
            .execute(params![l.name, l.size, l.mtime, now_text()])?;
        Ok(())
    }

    /// The attempt at this report ended (it failed, and is recorded as failed).
    pub(crate) fn end_attempt(&self, l: Listing<'_>) -> Result<()> {
        end(self.conn(), l)
    }
}

impl ReportTx<'_> {
    /// The attempt at this report ends with its commit.
    pub(crate) fn end_attempt(&self, l: Listing<'_>) -> Result<()> {
        end(self.conn, l)
    }
}

/// Ends the attempts at every version of the report's file (an older one given up is
/// replaced by this one).
fn end(conn: &rusqlite::Connection, l: Listing<'_>) -> Result<()> {
    conn.prepare_cached("DELETE FROM attempts WHERE name = ?1")?
        .execute([l.name])?;
    Ok(())
}
