//! The outbox: events (each recorded state change, with the attributes of the row that
//! made it), read back in ledger order by the sinks, and the sinks' delivery marks.
//!
//! Guarantees: event ids follow the order in which reports and their rows were applied;
//! an event is written inside its report's transaction; a sink's mark only moves forward.

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, params};

use super::handle::Ledger;
use super::reports::{Columns, ReportTx};
use crate::attrs;
use crate::state::State;

/// An event to insert.
pub(crate) struct NewEvent<'a> {
    pub(crate) key: String,
    pub(crate) activity_id: &'a str,
    pub(crate) previous_state: Option<State>,
    pub(crate) state: State,
    pub(crate) updated_at: i64,
    pub(crate) row: u64,
    pub(crate) itsm_number: &'a str,
    pub(crate) attrs: &'a [u8],
    pub(crate) prev_event_id: Option<i64>,
    pub(crate) kind: &'a str,
}

/// An event as the sinks see it.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub(crate) id: i64,
    pub(crate) key: String,
    pub(crate) activity_id: String,
    pub(crate) previous_state: Option<State>,
    pub(crate) state: State,
    pub(crate) updated_at: i64,
    pub(crate) report: String,
    pub(crate) row: u64,
    pub(crate) itsm_number: String,
    pub(crate) kind: String,
    /// (name, value) of every attribute, schema fields first, then extra columns.
    pub(crate) attrs: Vec<(String, String)>,
    pub(crate) extra_from: usize,
}
/// An import file put in place whose delivery mark is not written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InFlight {
    pub(crate) name: String,
    /// The last event it holds: recorded, or read from the name (`PREFIX-FIRST-LAST.EXT`,
    /// as an earlier release recorded the name alone).
    pub(crate) last: Option<i64>,
    /// What named the sink's folders and file kind when it was recorded.
    pub(crate) ident: Option<String>,
    /// Its size as it was put in place: a remote file of its name and this size is it.
    pub(crate) size: Option<u64>,
}

impl InFlight {
    /// Reads `LAST:IDENT:SIZE:NAME`; `LAST:NAME` (recorded before the sink's settings and
    /// size were); or a name alone (an earlier release).
    fn parse(v: &str) -> InFlight {
        let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some((last, rest)) = v.split_once(':')
            && let Ok(last) = last.parse::<i64>()
        {
            if let Some((ident, rest)) = rest.split_once(':')
                && hex16(ident)
                && let Some((size, name)) = rest.split_once(':')
                && let Ok(size) = size.parse::<u64>()
            {
                return InFlight {
                    name: name.to_string(),
                    last: Some(last),
                    ident: Some(ident.to_string()),
                    size: Some(size),
                };
            }
            return InFlight {
                name: rest.to_string(),
                last: Some(last),
                ident: None,
                size: None,
            };
        }
        InFlight {
            name: v.to_string(),
            last: last_of_name(v),
            ident: None,
            size: None,
        }
    }
}

/// The last event of an import file named `PREFIX-FIRST-LAST[-N].EXT` (12-digit numbers).
fn last_of_name(name: &str) -> Option<i64> {
    let stem = name.rsplit_once('.')?.0;
    let mut parts = stem.rsplit('-');
    let mut last = parts.next()?;
    if last.len() != 12 {
        // `-2`, `-3`...: the file took the next free name.
        last = parts.next()?;
    }
    let first = parts.next()?;
    let twelve = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
    (twelve(first) && twelve(last)).then(|| last.parse().ok())?
}

impl Ledger {
    pub(crate) fn max_event_id(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }
    /// The sink's delivery mark; a sink seen for the first time starts after the events
    /// already in the ledger (history is re-sent only with `backfill --resend`).
    pub(crate) fn sink_mark(&self, sink: &str) -> Result<i64> {
        if let Some(mark) = self
            .conn
            .query_row(
                "SELECT delivered_through FROM sinks WHERE name = ?1",
                [sink],
                |r| r.get(0),
            )
            .optional()?
        {
            return Ok(mark);
        }
        let mark = self.max_event_id()?;
        self.conn.execute(
            "INSERT INTO sinks (name, delivered_through) VALUES (?1, ?2)",
            params![sink, mark],
        )?;
        Ok(mark)
    }

    /// Records the import file about to be put in place for `sink` (its name, the last event
    /// it holds, and `ident`, what names the sink's folder and file kind), before the rename;
    /// cleared with the delivery mark. A rerun after a crash between the two puts that file
    /// in place again with the same events, even if its content changed (a mapping edited
    /// meanwhile).
    pub(crate) fn set_file_in_flight(&self, sink: &str, file: Option<&InFlight>) -> Result<()> {
        let key = format!("file_in_flight:{sink}");
        match file {
            Some(f) => self.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![
                    key,
                    format!(
                        "{}:{}:{}:{}",
                        f.last.unwrap_or_default(),
                        f.ident.as_deref().unwrap_or("0000000000000000"),
                        f.size.unwrap_or_default(),
                        f.name
                    )
                ],
            )?,
            None => self
                .conn
                .execute("DELETE FROM meta WHERE key = ?1", [key])?,
        };
        Ok(())
    }

    /// The import file of `sink` put in place (locally, perhaps uploaded) whose delivery
    /// mark was never written: a crash, or an upload that failed.
    pub(crate) fn file_in_flight(&self, sink: &str) -> Result<Option<InFlight>> {
        let value: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("file_in_flight:{sink}")],
                |r| r.get(0),
            )
            .optional()?;
        Ok(value.map(|v| InFlight::parse(&v)))
    }

    pub(crate) fn set_sink_mark(&self, sink: &str, through: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sinks (name, delivered_through) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET delivered_through = MAX(delivered_through, excluded.delivered_through)",
            params![sink, through],
        )?;
        Ok(())
    }
    /// Events after `after` in ledger order, at most `limit`, copied to hand to another
    /// thread (their values stay encoded: [`OwnedEvent::view`] decodes them there).
    /// `shared` keeps one copy of each report's name and columns.
    pub(crate) fn owned_events_after(
        &self,
        after: i64,
        limit: usize,
        shared: &mut Option<(i64, std::sync::Arc<str>, std::sync::Arc<Columns>)>,
    ) -> Result<Vec<OwnedEvent>> {
        let mut out = Vec::new();
        self.owned_events_after_into(after, limit, shared, &mut out)?;
        Ok(out)
    }

    /// [`Ledger::owned_events_after`] into `out`, reusing the buffers of the events it
    /// holds (a batch handed back by the thread that used it).
    pub(crate) fn owned_events_after_into(
        &self,
        after: i64,
        limit: usize,
        shared: &mut Option<(i64, std::sync::Arc<str>, std::sync::Arc<Columns>)>,
        out: &mut Vec<OwnedEvent>,
    ) -> Result<()> {
        fn set(to: &mut String, from: rusqlite::types::ValueRef<'_>) -> Result<()> {
            to.clear();
            to.push_str(from.as_str()?);
            Ok(())
        }
        let mut stmt = self.conn.prepare_cached(EVENTS_AFTER)?;
        let mut rows = stmt.query(params![after, limit as i64])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let report_id: i64 = r.get(12)?;
            if shared.as_ref().is_none_or(|(id, _, _)| *id != report_id) {
                let cols: Columns = serde_json::from_str(r.get_ref(11)?.as_str()?)
                    .context("ledger: bad report columns")?;
                *shared = Some((
                    report_id,
                    std::sync::Arc::from(r.get_ref(6)?.as_str()?),
                    std::sync::Arc::new(cols),
                ));
            }
            let (_, report, columns) = shared.as_ref().expect("set above");
            if n == out.len() {
                out.push(OwnedEvent {
                    id: 0,
                    key: String::new(),
                    activity_id: String::new(),
                    previous_state: None,
                    state: State::Ordered,
                    updated_at: 0,
                    report: report.clone(),
                    row: 0,
                    itsm_number: String::new(),
                    kind: String::new(),
                    columns: columns.clone(),
                    values: Vec::new(),
                });
            }
            let e = &mut out[n];
            n += 1;
            e.id = r.get(0)?;
            set(&mut e.key, r.get_ref(1)?)?;
            set(&mut e.activity_id, r.get_ref(2)?)?;
            e.previous_state = r.get::<_, Option<i64>>(3)?.and_then(State::from_code);
            e.state = State::from_code(r.get(4)?).context("ledger: bad state code")?;
            e.updated_at = r.get(5)?;
            if !std::sync::Arc::ptr_eq(&e.report, report) {
                e.report = report.clone();
            }
            e.row = r.get::<_, i64>(7)? as u64;
            set(&mut e.itsm_number, r.get_ref(8)?)?;
            set(&mut e.kind, r.get_ref(9)?)?;
            if !std::sync::Arc::ptr_eq(&e.columns, columns) {
                e.columns = columns.clone();
            }
            e.values.clear();
            match r.get_ref(10)? {
                rusqlite::types::ValueRef::Blob(b) => e.values.extend_from_slice(b),
                // Ledgers written before the compact encoding hold a JSON array.
                rusqlite::types::ValueRef::Text(t) => {
                    let json: Vec<String> =
                        serde_json::from_slice(t).context("ledger: bad event attributes")?;
                    for x in &json {
                        attrs::push(&mut e.values, x);
                    }
                }
                _ => {}
            }
        }
        out.truncate(n);
        Ok(())
    }

    /// Events after `after` in ledger order, at most `limit`, as owned values.
    pub(crate) fn events_after(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.owned_events_after(after, limit, &mut None)?
            .iter()
            .map(|e| Ok(e.view()?.to_stored()))
            .collect()
    }

    /// Whether any event comes after `after` (without counting them: that reads them all).
    pub(crate) fn any_event_after(&self, after: i64) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM events WHERE id > ?1)",
            [after],
            |r| r.get::<_, bool>(0),
        )?)
    }

    pub(crate) fn count_events_after(&self, after: i64) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM events WHERE id > ?1", [after], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }
}

const EVENTS_AFTER: &str =
    "SELECT e.id, e.event_key, e.activity_id, e.previous_state, e.state, e.updated_at,
            r.name, e.row, e.itsm_number, e.kind, e.attrs, r.columns, e.report_id
     FROM events e JOIN reports r ON r.id = e.report_id
     WHERE e.id > ?1 ORDER BY e.id LIMIT ?2";

/// An event borrowed from an [`OwnedEvent`], its values decoded.
pub(crate) struct EventView<'a> {
    pub(crate) id: i64,
    pub(crate) key: &'a str,
    pub(crate) activity_id: &'a str,
    pub(crate) previous_state: Option<State>,
    pub(crate) state: State,
    pub(crate) updated_at: i64,
    pub(crate) report: &'a str,
    pub(crate) row: u64,
    pub(crate) itsm_number: &'a str,
    pub(crate) kind: &'a str,
    /// Names of the schema fields, then of the extra columns; `values` in the same order.
    pub(crate) fields: &'a [String],
    pub(crate) extras: &'a [String],
    pub(crate) values: Vec<&'a str>,
}

/// An event copied out of the ledger, to hand to another thread; [`OwnedEvent::view`]
/// borrows it back as an [`EventView`].
pub(crate) struct OwnedEvent {
    id: i64,
    key: String,
    activity_id: String,
    previous_state: Option<State>,
    state: State,
    updated_at: i64,
    report: std::sync::Arc<str>,
    row: u64,
    itsm_number: String,
    kind: String,
    columns: std::sync::Arc<Columns>,
    /// The values in the ledger's attribute encoding.
    values: Vec<u8>,
}

impl OwnedEvent {
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// The names of its report's columns (shared by the report's events).
    pub(crate) fn columns(&self) -> &std::sync::Arc<Columns> {
        &self.columns
    }

    pub(crate) fn view(&self) -> Result<EventView<'_>> {
        Ok(EventView {
            id: self.id,
            key: &self.key,
            activity_id: &self.activity_id,
            previous_state: self.previous_state,
            state: self.state,
            updated_at: self.updated_at,
            report: &self.report,
            row: self.row,
            itsm_number: &self.itsm_number,
            kind: &self.kind,
            fields: &self.columns.fields,
            extras: &self.columns.extras,
            values: attrs::decode(&self.values)?,
        })
    }
}

impl EventView<'_> {
    pub(crate) fn to_stored(&self) -> StoredEvent {
        let names = self.fields.iter().chain(self.extras);
        StoredEvent {
            id: self.id,
            key: self.key.to_string(),
            activity_id: self.activity_id.to_string(),
            previous_state: self.previous_state,
            state: self.state,
            updated_at: self.updated_at,
            report: self.report.to_string(),
            row: self.row,
            itsm_number: self.itsm_number.to_string(),
            kind: self.kind.to_string(),
            extra_from: self.fields.len(),
            attrs: names
                .cloned()
                .zip(self.values.iter().map(|v| v.to_string()))
                .collect(),
        }
    }
}
/// The parts of an event a later row of its report needs to fold into it.
#[derive(Debug, Clone)]
pub(crate) struct EventHead {
    pub(crate) previous_state: Option<State>,
    pub(crate) prev_event_id: Option<i64>,
    /// `backfill --resend` sent the state again rather than recording a change.
    pub(crate) resend: bool,
}

/// An event's values, report and row, to send its state again (`backfill --resend`).
#[derive(Debug, Clone)]
pub(crate) struct EventPayload {
    pub(crate) attrs: Vec<u8>,
    pub(crate) report_id: i64,
    pub(crate) row: u64,
    pub(crate) itsm_number: String,
}

impl ReportTx<'_> {
    /// Writes an event of this report's (from the report `report_id`'s row: a re-sent
    /// event keeps the report its values came from); returns its id, the next in order.
    pub(crate) fn insert_event(&self, e: &NewEvent<'_>, report_id: i64) -> Result<i64> {
        self.conn
            .prepare_cached(
                "INSERT INTO events (event_key, activity_id, previous_state, state, updated_at, report_id, row,
                                     itsm_number, attrs, prev_event_id, kind, run_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                e.key,
                e.activity_id,
                e.previous_state.map(State::code),
                e.state.code(),
                e.updated_at,
                report_id,
                e.row as i64,
                e.itsm_number,
                e.attrs,
                e.prev_event_id,
                e.kind,
                self.run_id,
                self.now
            ])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Rewrites an event this report created with a later row of the same Activity.
    pub(crate) fn amend_event(&self, id: i64, e: &NewEvent<'_>) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE events SET event_key = ?2, state = ?3, updated_at = ?4, row = ?5,
                    itsm_number = ?6, attrs = ?7
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                e.key,
                e.state.code(),
                e.updated_at,
                e.row as i64,
                e.itsm_number,
                e.attrs
            ])?;
        Ok(())
    }

    /// Removes an event this report created (a later row undid its change).
    pub(crate) fn delete_event(&self, id: i64) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM events WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    pub(crate) fn event_head(&self, id: i64) -> Result<EventHead> {
        Ok(self
            .conn
            .prepare_cached("SELECT previous_state, prev_event_id, kind FROM events WHERE id = ?1")?
            .query_row([id], |r| {
                Ok(EventHead {
                    previous_state: r.get::<_, Option<i64>>(0)?.and_then(State::from_code),
                    prev_event_id: r.get(1)?,
                    resend: r.get_ref(2)?.as_str()? == "resend",
                })
            })?)
    }

    pub(crate) fn event_payload(&self, id: i64) -> Result<EventPayload> {
        Ok(self
            .conn
            .prepare_cached("SELECT attrs, report_id, row, itsm_number FROM events WHERE id = ?1")?
            .query_row([id], |r| {
                Ok(EventPayload {
                    attrs: r.get(0)?,
                    report_id: r.get(1)?,
                    row: r.get::<_, i64>(2)? as u64,
                    itsm_number: r.get(3)?,
                })
            })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_flight_is_read_as_recorded_or_from_an_earlier_releases_name() {
        let f = InFlight::parse("20:0123456789abcdef:4096:ev-000000000011-000000000020.csv");
        assert_eq!(
            (f.name.as_str(), f.last, f.ident.as_deref(), f.size),
            (
                "ev-000000000011-000000000020.csv",
                Some(20),
                Some("0123456789abcdef"),
                Some(4096)
            )
        );
        let f = InFlight::parse("20:ev-000000000011-000000000020.csv");
        assert_eq!(
            (f.name.as_str(), f.last, f.ident, f.size),
            ("ev-000000000011-000000000020.csv", Some(20), None, None)
        );
        for (name, last) in [
            ("tangoe-events-000000000001-000000000010.jsonl", Some(10)),
            ("tangoe-events-000000000001-000000000010-2.jsonl", Some(10)),
            ("my-prefix-000000000001-000000000010.csv", Some(10)),
            ("odd-name.jsonl", None),
        ] {
            let f = InFlight::parse(name);
            assert_eq!(
                (f.name.as_str(), f.last, f.ident, f.size),
                (name, last, None, None)
            );
        }
    }
}
