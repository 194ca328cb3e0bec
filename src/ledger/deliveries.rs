//! Per-event delivery outcomes of sinks that deliver one event at a time (HTTP sinks).
//!
//! An event after a sink's mark is *pending* for the sink until it has a `deliveries` row:
//! `delivered` (the ITSM answered 2xx and accepted it), `failed` (a permanent failure, kept
//! until `retry --failed` removes the row, which makes the event pending again) or `skipped`
//! (deliberately not sent, with the reason). The mark only moves over events that are
//! delivered or skipped, never over a failed one, so a re-queued failure is always after it.

use std::collections::HashSet;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::handle::{Ledger, now};

/// The outcome of one event for one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered,
    Failed,
    Skipped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

impl Ledger {
    /// Events after `mark` that already have an outcome for `sink`.
    pub(crate) fn settled_after(&self, sink: &str, mark: i64) -> Result<HashSet<i64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT event_id FROM deliveries WHERE sink = ?1 AND event_id > ?2")?;
        let ids = stmt
            .query_map(params![sink, mark], |r| r.get(0))?
            .collect::<rusqlite::Result<HashSet<i64>>>()?;
        Ok(ids)
    }

    /// Records an event's outcome for a sink. Written at once (autocommit), so a delivery
    /// the ITSM acknowledged survives the process being killed right after.
    pub(crate) fn record_delivery(
        &self,
        sink: &str,
        event_id: i64,
        outcome: Outcome,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO deliveries (sink, event_id, status, attempts, error, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(sink, event_id) DO UPDATE SET status = excluded.status,
                    attempts = deliveries.attempts + excluded.attempts, error = excluded.error,
                    updated_at = excluded.updated_at",
            )?
            .execute(params![
                sink,
                event_id,
                outcome.as_str(),
                attempts,
                error,
                now()
            ])?;
        Ok(())
    }

    /// Moves the sink's mark over the delivered and skipped events right after it.
    pub(crate) fn advance_mark(&self, sink: &str) -> Result<i64> {
        let mark = self.sink_mark(sink)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.id, d.status FROM events e
             LEFT JOIN deliveries d ON d.sink = ?1 AND d.event_id = e.id
             WHERE e.id > ?2 ORDER BY e.id",
        )?;
        let mut rows = stmt.query(params![sink, mark])?;
        let mut through = mark;
        while let Some(r) = rows.next()? {
            let status: Option<String> = r.get(1)?;
            match status.as_deref() {
                Some("delivered") | Some("skipped") => through = r.get(0)?,
                _ => break,
            }
        }
        drop(rows);
        if through > mark {
            self.set_sink_mark(sink, through)?;
        }
        Ok(through)
    }

    /// Events pending for a sink that records per-event outcomes.
    pub(crate) fn count_unsettled(&self, sink: &str) -> Result<u64> {
        let mark = self.sink_mark(sink)?;
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM events e WHERE e.id > ?1
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.sink = ?2 AND d.event_id = e.id)",
            params![mark, sink],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Whether a later event of the same Activity was already delivered to the sink (an
    /// older one sent now would put the ticket back into an older state). Walks the
    /// Activity's events from its latest back along `prev_event_id`: no index on events needed.
    pub(crate) fn later_delivered(
        &self,
        sink: &str,
        activity_id: &str,
        event_id: i64,
    ) -> Result<bool> {
        let mut next: Option<i64> = self
            .conn
            .prepare_cached("SELECT event_id FROM activities WHERE activity_id = ?1")?
            .query_row([activity_id], |r| r.get(0))
            .optional()?
            .flatten();
        let mut prev = self
            .conn
            .prepare_cached("SELECT prev_event_id FROM events WHERE id = ?1")?;
        let mut delivered = self.conn.prepare_cached(
            "SELECT 1 FROM deliveries WHERE sink = ?1 AND event_id = ?2 AND status = 'delivered'",
        )?;
        while let Some(id) = next {
            if id <= event_id {
                break;
            }
            if delivered
                .query_row(params![sink, id], |_| Ok(()))
                .optional()?
                .is_some()
            {
                return Ok(true);
            }
            next = prev.query_row([id], |r| r.get(0)).optional()?.flatten();
        }
        Ok(false)
    }

    /// Makes permanently failed events pending again; returns how many, per sink.
    pub(crate) fn requeue_failed(&self, sinks: &[&str]) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for sink in sinks {
            let n = self.conn.execute(
                "DELETE FROM deliveries WHERE sink = ?1 AND status = 'failed'",
                [sink],
            )?;
            out.push((sink.to_string(), n as u64));
        }
        Ok(out)
    }

    /// The ITSM number the ledger holds for an Activity, if any.
    pub(crate) fn activity_number(&self, activity_id: &str) -> Result<Option<String>> {
        let n: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT itsm_number FROM activities WHERE activity_id = ?1")?
            .query_row([activity_id], |r| r.get(0))
            .optional()?;
        Ok(n.flatten().filter(|s| !s.is_empty()))
    }

    /// The sys_id of a ticket created for the Activity under this number, if one was.
    pub(crate) fn ticket_sys_id(&self, activity_id: &str, number: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT sys_id FROM tickets WHERE activity_id = ?1 AND number = ?2")?
            .query_row(params![activity_id, number], |r| r.get(0))
            .optional()?)
    }

    /// Records a ticket created for an Activity and the event that created it as delivered,
    /// in one transaction: the Activity's later events then update that ticket.
    pub(crate) fn record_ticket(
        &self,
        sink: &str,
        activity_id: &str,
        number: &str,
        sys_id: &str,
        event_id: i64,
        attempts: u32,
    ) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> Result<()> {
            self.conn.execute(
                "INSERT INTO tickets (activity_id, number, sys_id, sink, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(activity_id) DO UPDATE SET number = excluded.number, sys_id = excluded.sys_id,
                    sink = excluded.sink, created_at = excluded.created_at",
                params![activity_id, number, sys_id, sink, now()],
            )?;
            self.conn.execute(
                "UPDATE activities SET itsm_number = ?2 WHERE activity_id = ?1 AND COALESCE(itsm_number, '') = ''",
                params![activity_id, number],
            )?;
            self.record_delivery(sink, event_id, Outcome::Delivered, attempts, None)?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}
