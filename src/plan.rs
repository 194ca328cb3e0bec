//! The dedupe rules, all of them, in one place: Activities + ledger → events.
//!
//! 1. An Activity the ledger does not know → event `(none → state)`.
//! 2. A known Activity whose state differs → event `(old → new)`.
//! 3. Same state → no event (unchanged), however many reports repeat it.
//! 4. A row older than what the ledger knows (its `updated_at`, else its report's date, is
//!    earlier than the ledger's) never changes the ledger and never emits (stale).
//! 5. The same Activity several times in one report: the latest (by `updated_at`, else the
//!    last row) wins, and the report emits one event at most for it.
//!
//! Rule 5 is kept without holding the report in memory: a later row of an Activity whose
//! event this same report created folds into that event (amends it, or removes it when the
//! Activity ends up where it started).

use std::collections::BTreeMap;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::activity::State;
use crate::ledger::{Indexed, Known, NewEvent, OwnEvent, ReportCounts, ReportWriter};
use crate::report::{AcceptedRow, Reject, RowHandler, RowWarning, Skip};

/// What one accepted row does to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Rule 1.
    New,
    /// Rule 2.
    Change { from: State },
    /// Rule 3; `newer` when the row is more recent than the ledger (its time is recorded).
    Unchanged { newer: bool },
    /// Rule 4.
    Stale,
    /// Rule 5: this report already emitted an event for the Activity; the row replaces it.
    Amend,
    /// Rule 5: a later row puts the Activity back where it was before this report: the
    /// report's event for it is withdrawn.
    Withdraw,
}

/// The rules. `own` is the Activity's event if this same report created it.
pub(crate) fn decide(
    state: State,
    at: i64,
    known: Option<&Known>,
    own: Option<&OwnEvent>,
) -> Decision {
    let Some(known) = known else {
        return Decision::New;
    };
    if at < known.updated_at {
        return Decision::Stale;
    }
    if let Some(own) = own {
        return if own.previous_state == Some(state) {
            Decision::Withdraw
        } else {
            Decision::Amend
        };
    }
    if state == known.state {
        Decision::Unchanged {
            newer: at > known.updated_at,
        }
    } else {
        Decision::Change { from: known.state }
    }
}

/// The stable id of an event: the same history gives the same id, in any ledger.
pub(crate) fn event_key(
    activity_id: &str,
    seq: i64,
    previous: Option<State>,
    state: State,
    at: i64,
) -> String {
    let mut h = Sha256::new();
    h.update(activity_id.as_bytes());
    h.update([0]);
    h.update(seq.to_le_bytes());
    h.update([previous.map_or(0, |s| s.code() as u8), state.code() as u8]);
    h.update(at.to_le_bytes());
    let digest = h.finalize();
    hex::encode(&digest[..16])
}

/// What a report did, for the summary and the dry-run audit.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReportOutcome {
    pub(crate) counts: ReportCounts,
    /// Events by transition, e.g. ("ordered", "completed") → 12.
    pub(crate) transitions: BTreeMap<(String, String), u64>,
    /// The first rejects, for the audit.
    pub(crate) rejects: Vec<Reject>,
    pub(crate) warnings: Vec<RowWarning>,
    /// Rows folded into an earlier row of the same report (rule 5).
    pub(crate) superseded: u64,
}

const KEEP_REJECTS: usize = 20;
const KEEP_WARNINGS: usize = 20;

/// Applies the rules to each accepted row of a report, inside the report's transaction.
pub(crate) struct Planner<'w, 'c> {
    writer: &'w ReportWriter<'c>,
    file: String,
    /// Effective time of rows without `updated_at`: the report's date.
    report_time: i64,
    resend: bool,
    /// The encoded attributes of the row being written (reused).
    buf: Vec<u8>,
    /// Called every [`PROGRESS_EVERY`] rows; an error stops the report.
    progress: Option<&'w mut dyn FnMut() -> Result<()>>,
    rows_seen: u64,
    pub(crate) outcome: ReportOutcome,
}

const PROGRESS_EVERY: u64 = 16_384;

impl<'w, 'c> Planner<'w, 'c> {
    pub(crate) fn new(
        writer: &'w ReportWriter<'c>,
        file: &str,
        report_time: i64,
        resend: bool,
    ) -> Self {
        Planner {
            writer,
            file: file.to_string(),
            report_time,
            resend,
            buf: Vec::with_capacity(1024),
            progress: None,
            rows_seen: 0,
            outcome: ReportOutcome::default(),
        }
    }

    /// Calls `f` every so many rows (the duplicate check while the hash is computed).
    pub(crate) fn on_progress(&mut self, f: &'w mut dyn FnMut() -> Result<()>) {
        self.progress = Some(f);
    }

    pub(crate) fn into_outcome(self) -> ReportOutcome {
        self.outcome
    }

    fn transition(&mut self, from: Option<State>, to: State, delta: i64) {
        let key = (
            from.map_or("none", State::as_str).to_string(),
            to.as_str().to_string(),
        );
        let v = self.outcome.transitions.entry(key.clone()).or_default();
        *v = v.saturating_add_signed(delta);
        if *v == 0 {
            self.outcome.transitions.remove(&key);
        }
        self.outcome.counts.events = self.outcome.counts.events.saturating_add_signed(delta);
    }

    /// Encodes the row's values into the reused buffer; returns the row's ITSM number.
    fn attrs(&mut self, row: &AcceptedRow<'_>) -> String {
        self.buf.clear();
        row.encode_values(&mut self.buf)
    }

    /// Rules 1, 3 and 4 straight from the Activity index, for the rows that need no more:
    /// a new Activity, or a known one this report has not changed yet whose row is stale or
    /// repeats its state. `None`: ask `activities` (a change, a second row of an Activity
    /// this report changed, a hash collision, a resend).
    fn fast(&self, row: &AcceptedRow<'_>, at: i64) -> Option<Decision> {
        if self.resend {
            return None;
        }
        match self.writer.indexed(row.id) {
            Indexed::Absent => Some(Decision::New),
            Indexed::Found(e) if e.generation != self.writer.generation() => {
                if at < e.updated_at {
                    Some(Decision::Stale)
                } else if row.state == e.state {
                    Some(Decision::Unchanged {
                        newer: at > e.updated_at,
                    })
                } else {
                    None
                }
            }
            Indexed::Found(_) | Indexed::Unsure => None,
        }
    }

    fn apply(&mut self, row: &AcceptedRow<'_>) -> Result<()> {
        let w = self.writer;
        let at = row.updated_at.unwrap_or(self.report_time);
        match self.fast(row, at) {
            Some(Decision::New) => return self.emit(row, at, None),
            Some(Decision::Stale) => {
                self.outcome.counts.stale += 1;
                return Ok(());
            }
            Some(Decision::Unchanged { newer }) => {
                self.outcome.counts.unchanged += 1;
                if newer {
                    w.touch_activity(row.id, at)?;
                }
                return Ok(());
            }
            _ => {}
        }
        let mut known = w.lookup(row.id)?;
        let mut own = match known.as_ref().and_then(|k| k.event_id) {
            Some(id) if id >= w.first_event => Some(w.own_event(id)?),
            _ => None,
        };
        // A resend this report made is not a change to fold into: a later row that really
        // changes the Activity replaces it with that change (one event), and a row that
        // does not finds the resend already sent.
        if let Some(o) = own.take_if(|o| o.resend)
            && let Some(k) = known.as_mut()
            && matches!(
                decide(row.state, at, Some(k), None),
                Decision::Change { .. }
            )
        {
            w.delete_event(o.id)?;
            self.transition(o.previous_state, k.state, -1);
            k.event_id = o.prev_event_id;
            k.events -= 1;
        }
        let decision = decide(row.state, at, known.as_ref(), own.as_ref());
        match decision {
            Decision::New | Decision::Change { .. } => self.emit(row, at, known.as_ref())?,
            Decision::Unchanged { newer } => {
                self.outcome.counts.unchanged += 1;
                if newer {
                    w.touch_activity(row.id, at)?;
                }
                if self.resend {
                    self.resend(row, known.as_ref().expect("unchanged implies known"), at)?;
                }
            }
            Decision::Stale => {
                self.outcome.counts.stale += 1;
                if self.resend {
                    self.resend(row, known.as_ref().expect("stale implies known"), at)?;
                }
            }
            Decision::Amend => {
                let known = known.expect("amend implies known");
                let own = own.expect("amend implies own event");
                self.outcome.superseded += 1;
                let mut itsm = self.attrs(row);
                if itsm.is_empty() {
                    itsm = known.itsm_number.clone().unwrap_or_default();
                }
                let key = event_key(row.id, known.events, own.previous_state, row.state, at);
                w.amend_event(own.id, &key, row.state, at, row.row, &itsm, &self.buf)?;
                let itsm_opt = (!itsm.is_empty()).then_some(itsm.as_str());
                w.put_activity(row.id, row.state, at, Some(own.id), known.events, itsm_opt)?;
                if known.state != row.state {
                    self.transition(own.previous_state, known.state, -1);
                    self.transition(own.previous_state, row.state, 1);
                }
            }
            Decision::Withdraw => {
                let known = known.expect("withdraw implies known");
                let own = own.expect("withdraw implies own event");
                self.outcome.superseded += 1;
                w.delete_event(own.id)?;
                w.put_activity(
                    row.id,
                    row.state,
                    at,
                    own.prev_event_id,
                    known.events - 1,
                    None,
                )?;
                self.transition(own.previous_state, known.state, -1);
            }
        }
        Ok(())
    }

    /// Rules 1 and 2: a new event `(known state or none → row state)`.
    fn emit(&mut self, row: &AcceptedRow<'_>, at: i64, known: Option<&Known>) -> Result<()> {
        let w = self.writer;
        let from = known.map(|k| k.state);
        let seq = known.map_or(0, |k| k.events) + 1;
        let mut itsm = self.attrs(row);
        if itsm.is_empty() {
            itsm = known
                .and_then(|k| k.itsm_number.clone())
                .unwrap_or_default();
        }
        let key = event_key(row.id, seq, from, row.state, at);
        let id = w.insert_event(
            &NewEvent {
                key: &key,
                activity_id: row.id,
                previous_state: from,
                state: row.state,
                updated_at: at,
                row: row.row,
                itsm_number: &itsm,
                attrs: &self.buf,
                prev_event_id: known.and_then(|k| k.event_id),
                kind: "change",
            },
            w.report_id,
        )?;
        let itsm_opt = (!itsm.is_empty()).then_some(itsm.as_str());
        match known {
            None => w.add_activity(row.id, row.state, at, id, itsm_opt)?,
            Some(_) => w.put_activity(row.id, row.state, at, Some(id), seq, itsm_opt)?,
        }
        self.transition(from, row.state, 1);
        Ok(())
    }

    /// `backfill --resend`: emits the Activity's current state again, once per run.
    fn resend(&mut self, row: &AcceptedRow<'_>, known: &Known, at: i64) -> Result<()> {
        let w = self.writer;
        let Some(last) = known.event_id else {
            return Ok(());
        };
        if last >= w.run_first_event {
            return Ok(()); // this run already sent it (as a change or a resend)
        }
        let last_event = w.own_event(last)?;
        // The attributes: this row's when it is current, else those of the last change
        // (with its report and row, whose column names they follow).
        let (itsm, report_id, source_row) = if at >= known.updated_at {
            let i = self.attrs(row);
            let i = if i.is_empty() {
                known.itsm_number.clone().unwrap_or_default()
            } else {
                i
            };
            (i, w.report_id, row.row)
        } else {
            let (a, report_id, source_row, i) = w.event_payload(last)?;
            self.buf = a;
            (i, report_id, source_row)
        };
        let seq = known.events + 1;
        let key = event_key(
            row.id,
            seq,
            last_event.previous_state,
            known.state,
            known.updated_at,
        );
        let id = w.insert_event(
            &NewEvent {
                key: &key,
                activity_id: row.id,
                previous_state: last_event.previous_state,
                state: known.state,
                updated_at: known.updated_at,
                row: source_row,
                itsm_number: &itsm,
                attrs: &self.buf,
                prev_event_id: Some(last),
                kind: "resend",
            },
            report_id,
        )?;
        w.put_activity(
            row.id,
            known.state,
            known.updated_at.max(at),
            Some(id),
            seq,
            None,
        )?;
        self.transition(last_event.previous_state, known.state, 1);
        Ok(())
    }
}

impl RowHandler for Planner<'_, '_> {
    fn accepted(&mut self, row: &AcceptedRow<'_>) -> Result<()> {
        self.rows_seen += 1;
        if self.rows_seen.is_multiple_of(PROGRESS_EVERY)
            && let Some(f) = self.progress.as_mut()
        {
            f()?;
        }
        self.apply(row)
    }

    fn rejected(&mut self, reject: Reject) -> Result<()> {
        self.writer.reject(
            &self.file,
            reject.row,
            &reject.column,
            &reject.reason,
            &reject.raw,
        )?;
        if self.outcome.rejects.len() < KEEP_REJECTS {
            self.outcome.rejects.push(reject);
        }
        Ok(())
    }

    fn warning(&mut self, warning: RowWarning) {
        if self.outcome.warnings.len() < KEEP_WARNINGS {
            self.outcome.warnings.push(warning);
        }
    }

    fn skipped(&mut self, _skip: Skip, _row: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(state: State, at: i64) -> Known {
        Known {
            state,
            updated_at: at,
            event_id: Some(1),
            events: 1,
            itsm_number: None,
        }
    }

    #[test]
    fn the_five_rules() {
        assert_eq!(decide(State::Ordered, 10, None, None), Decision::New);
        assert_eq!(
            decide(State::Completed, 10, Some(&known(State::Ordered, 5)), None),
            Decision::Change {
                from: State::Ordered
            }
        );
        assert_eq!(
            decide(State::Ordered, 5, Some(&known(State::Ordered, 5)), None),
            Decision::Unchanged { newer: false }
        );
        assert_eq!(
            decide(State::Ordered, 9, Some(&known(State::Ordered, 5)), None),
            Decision::Unchanged { newer: true }
        );
        assert_eq!(
            decide(State::Ordered, 4, Some(&known(State::Completed, 5)), None),
            Decision::Stale
        );
        let own = OwnEvent {
            id: 7,
            previous_state: Some(State::Ordered),
            prev_event_id: Some(1),
            resend: false,
        };
        assert_eq!(
            decide(
                State::Cancelled,
                6,
                Some(&known(State::Completed, 5)),
                Some(&own)
            ),
            Decision::Amend
        );
        assert_eq!(
            decide(
                State::Ordered,
                6,
                Some(&known(State::Completed, 5)),
                Some(&own)
            ),
            Decision::Withdraw
        );
        assert_eq!(
            decide(
                State::Ordered,
                4,
                Some(&known(State::Completed, 5)),
                Some(&own)
            ),
            Decision::Stale
        );
    }

    #[test]
    fn event_keys_are_stable_and_distinct() {
        let a = event_key("A1", 1, None, State::Ordered, 100);
        assert_eq!(a, event_key("A1", 1, None, State::Ordered, 100));
        assert_ne!(a, event_key("A1", 2, None, State::Ordered, 100));
        assert_ne!(a, event_key("A2", 1, None, State::Ordered, 100));
        assert_eq!(a.len(), 32);
    }
}
