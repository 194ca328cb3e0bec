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
//!
//! Most rows of a daily report settle from the Activity index alone ([`judge`]): for a CSV
//! report between its two passes, a part of the index at a time (`crate::deferred`); for an
//! XLSX report on the parsing thread, row by row ([`Triage`]). The [`Planner`] applies the
//! rest inside the report's transaction, in row order either way.

use std::collections::BTreeMap;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::activity::State;
use crate::deferred::{Deferred, Settled};
use crate::ledger::index::{ActivityIndex, Entry, Indexed};
use crate::ledger::{Known, NewEvent, OwnEvent, ReportCounts, ReportWriter};
use crate::report::{AcceptedRow, OwnedRow, Reject, RowHandler, RowWarning, Skip};

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

/// What the Activity index says a row needs, decided on the parsing thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    /// Rule 1: an Activity the ledger does not know. No look-up needed.
    New,
    /// Rule 2: a known Activity, not yet moved by this report, whose row is not older than
    /// the ledger and names another state. The event is certain; only its sequence number
    /// and links need `activities`.
    Change { from: State },
    /// Rule 3 with a newer time: the ledger records the time, nothing else.
    Touch,
    /// Ask `activities`: a later row of an Activity this report already moved (rule 5), an
    /// Activity the index cannot tell about (a hash collision), or a resend.
    Ask,
}

/// What the index concludes about an accepted row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Rule 3 (same state, same time) or rule 4 (stale): nothing to write, so the row's
    /// values are checked but never encoded or handed on.
    Unchanged,
    Stale,
    /// The ledger side must see the row.
    Forward(Hint),
}

/// Rules 1, 3 and 4 applied from the Activity index alone, on the thread that parses the
/// rows: in a daily report most rows repeat what the ledger knows, and those never reach
/// the ledger side at all. Rows the index cannot settle go on with a [`Hint`].
///
/// The triage owns the index while the report is read and keeps it exact: whatever the
/// ledger decides for a row that is not older than what it knows (a change, an amend, a
/// withdrawal, an unchanged row with a newer time), the Activity ends up in the row's state
/// at the row's time. An Activity this report already moved carries the report's
/// generation, and every later row of it is asked of `activities`.
pub(crate) struct Triage {
    index: ActivityIndex,
    generation: u8,
    /// Effective time of rows without `updated_at`: the report's date.
    report_time: i64,
    resend: bool,
}

impl Triage {
    pub(crate) fn new(
        index: ActivityIndex,
        generation: u8,
        report_time: i64,
        resend: bool,
    ) -> Self {
        Triage {
            index,
            generation,
            report_time,
            resend,
        }
    }

    pub(crate) fn into_index(self) -> ActivityIndex {
        self.index
    }

    /// The effective time of a row.
    pub(crate) fn at(&self, updated_at: Option<i64>) -> i64 {
        updated_at.unwrap_or(self.report_time)
    }

    /// Starts loading the index entry of `id` into the CPU cache (see
    /// [`ActivityIndex::prefetch`]): a hint for its row's [`Triage::verdict`] soon after.
    pub(crate) fn prefetch(&self, id: &str) {
        self.index.prefetch(id);
    }

    /// The verdict on a row, and the index entry it was based on (for [`Triage::record`]).
    pub(crate) fn verdict(&self, id: &str, state: State, at: i64) -> (Verdict, Indexed) {
        let found = self.index.find(id);
        (judge(found, state, at, self.generation, self.resend), found)
    }

    /// Records what an accepted row does to the Activity (call it once the row passed its
    /// checks, with what [`Triage::verdict`] returned).
    pub(crate) fn record(
        &mut self,
        id: &str,
        state: State,
        at: i64,
        verdict: Verdict,
        found: Indexed,
    ) {
        if let Some(e) = recorded(verdict, found, state, at, self.generation) {
            self.index.put(id, e);
        }
    }
}

/// Rules 1, 3 and 4 from what the index says of a row's Activity (see [`Triage`]).
pub(crate) fn judge(
    found: Indexed,
    state: State,
    at: i64,
    generation: u8,
    resend: bool,
) -> Verdict {
    if resend {
        return Verdict::Forward(Hint::Ask);
    }
    match found {
        Indexed::Absent => Verdict::Forward(Hint::New),
        Indexed::Found(e) if e.generation != generation => {
            if at < e.updated_at {
                Verdict::Stale
            } else if state != e.state {
                Verdict::Forward(Hint::Change { from: e.state })
            } else if at > e.updated_at {
                Verdict::Forward(Hint::Touch)
            } else {
                Verdict::Unchanged
            }
        }
        Indexed::Found(_) | Indexed::Unsure => Verdict::Forward(Hint::Ask),
    }
}

/// The index entry a row's Activity has once the ledger side applied it, if it changes.
pub(crate) fn recorded(
    verdict: Verdict,
    found: Indexed,
    state: State,
    at: i64,
    generation: u8,
) -> Option<Entry> {
    let generation = match (verdict, found) {
        (Verdict::Unchanged | Verdict::Stale, _) | (_, Indexed::Unsure) => return None,
        (Verdict::Forward(_), Indexed::Found(e)) if at < e.updated_at => return None,
        // Only the time moves: the Activity is not one this report changed.
        (Verdict::Forward(Hint::Touch), Indexed::Found(e)) => e.generation,
        _ => generation,
    };
    Some(Entry {
        state,
        updated_at: at,
        generation,
    })
}

impl Hint {
    /// One byte for a row's hint, as the two-pass read keeps it (never 0, which stands for
    /// a row settled from the index).
    pub(crate) fn code(self) -> u8 {
        match self {
            Hint::New => 1,
            Hint::Touch => 2,
            Hint::Ask => 3,
            Hint::Change { from } => 8 + from.code() as u8,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Hint> {
        match code {
            1 => Some(Hint::New),
            2 => Some(Hint::Touch),
            3 => Some(Hint::Ask),
            c if c >= 8 => State::from_code(i64::from(c - 8)).map(|from| Hint::Change { from }),
            _ => None,
        }
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
    /// Rows waiting for `activities`, applied a batch at a time in Activity-ID order.
    pending: Vec<Pending>,
    /// The events of the batch being applied (reused).
    completions: Vec<Completion>,
    /// Events by transition: from (0 for none, else the state's code) and to (code - 1).
    transitions: [[i64; 4]; 5],
    pub(crate) outcome: ReportOutcome,
}

const PROGRESS_EVERY: u64 = 16_384;

/// Changes and newer times the ledger side holds before completing them.
const PENDING_ROWS: usize = 16_384;
/// While the parser has no rows ready, at least this many new Activities are written.
const IDLE_ROWS: usize = 4_096;

/// A change, or a newer time, waiting for `activities`.
struct Pending {
    /// The row, with its values (a change) or none (a touch).
    row: OwnedRow,
    /// The id taken, in row order, for a [`Hint::Change`]'s event.
    event_id: i64,
}

/// What `activities` adds to a waiting change's event: written once the batch's look-ups
/// are done, in event order.
struct Completion {
    /// Index into the batch of waiting rows.
    at: usize,
    event_id: i64,
    /// The state the Activity moves from.
    from: State,
    key: String,
    prev_event_id: Option<i64>,
    /// The Activity's ITSM number, for a row without one.
    itsm_fallback: Option<String>,
}

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
            pending: Vec::new(),
            completions: Vec::new(),
            transitions: [[0; 4]; 5],
            outcome: ReportOutcome::default(),
        }
    }

    /// Calls `f` every so many rows (the duplicate check while the hash is computed).
    pub(crate) fn on_progress(&mut self, f: &'w mut dyn FnMut() -> Result<()>) {
        self.progress = Some(f);
    }

    pub(crate) fn into_outcome(mut self) -> ReportOutcome {
        debug_assert!(
            self.pending.is_empty(),
            "RowHandler::end applies the pending rows"
        );
        let name = |code: usize| State::from_code(code as i64).map_or("none", State::as_str);
        for (from, row) in self.transitions.iter().enumerate() {
            for (to, &n) in row.iter().enumerate() {
                if n > 0 {
                    let key = (name(from).to_string(), name(to + 1).to_string());
                    self.outcome.transitions.insert(key, n as u64);
                }
            }
        }
        self.outcome
    }

    /// Counts rows seen; every [`PROGRESS_EVERY`] of them, calls the progress callback.
    fn progress(&mut self, rows: u64) -> Result<()> {
        let before = self.rows_seen / PROGRESS_EVERY;
        self.rows_seen += rows;
        if self.rows_seen / PROGRESS_EVERY != before
            && let Some(f) = self.progress.as_mut()
        {
            f()?;
        }
        Ok(())
    }

    /// Puts a change or a newer time with those waiting for `activities`.
    fn wait(&mut self, p: Pending) -> Result<()> {
        self.pending.push(p);
        if self.pending.len() >= PENDING_ROWS {
            self.apply_pending()?;
        }
        Ok(())
    }

    /// Completes the waiting changes and newer times in Activity-ID order (rows of one
    /// Activity keep their order): look-ups and updates then walk `activities` page by page
    /// instead of jumping about it. Each waiting row is the first of its Activity to reach
    /// the ledger side in this report, or a newer time before it; any later row of the
    /// same Activity is a [`Hint::Ask`], applied only after the rows waiting before it. So
    /// the order changes no outcome. The changes' events, whose ids were taken in row
    /// order, are then written in id order, each once.
    fn apply_pending(&mut self) -> Result<()> {
        let mut pending = std::mem::take(&mut self.pending);
        let mut completions = std::mem::take(&mut self.completions);
        // Bytes compare as the IDs do (`str` orders by its bytes), without a UTF-8 check each.
        pending.sort_by(|a, b| a.row.id_bytes().cmp(b.row.id_bytes()));
        for (at, p) in pending.iter().enumerate() {
            let row = p.row.view();
            match row.hint {
                Hint::Change { from } => {
                    if let Some(c) = self.complete_early(&row, at, p.event_id, from)? {
                        completions.push(c);
                    }
                }
                _ => self.apply(&row)?,
            }
        }
        completions.sort_unstable_by_key(|c| c.event_id);
        for c in completions.drain(..) {
            self.write_early(&pending[c.at].row.view(), c)?;
        }
        pending.clear();
        self.pending = pending;
        self.completions = completions;
        Ok(())
    }

    fn transition(&mut self, from: Option<State>, to: State, delta: i64) {
        let from = from.map_or(0, |s| s.code() as usize);
        self.transitions[from][to.code() as usize - 1] += delta;
        self.outcome.counts.events = self.outcome.counts.events.saturating_add_signed(delta);
    }

    /// Encodes the row's values into the reused buffer; returns the row's ITSM number.
    fn attrs(&mut self, row: &AcceptedRow<'_>) -> String {
        self.buf.clear();
        row.encode_values(&mut self.buf)
    }

    /// The rules for a row the triage could not settle, against `activities`.
    fn apply(&mut self, row: &AcceptedRow<'_>) -> Result<()> {
        let w = self.writer;
        let at = row.updated_at.unwrap_or(self.report_time);
        if row.hint == Hint::Touch {
            self.outcome.counts.unchanged += 1;
            return w.touch_activity(row.id, at);
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

    /// Rule 2 for a [`Hint::Change`]: takes the event's id now, in row order; the event
    /// is written with its batch (see [`Planner::complete_early`]).
    fn reserve_early(&mut self, row: &AcceptedRow<'_>, from: State) -> i64 {
        self.transition(Some(from), row.state, 1);
        self.writer.reserve_event_id()
    }

    /// Looks up the Activity of a change [`Planner::reserve_early`] took an id for, and
    /// moves it on: the event's sequence number, key, link and fallback ITSM number come
    /// from `activities`. None when the index was wrong about the Activity: the row is
    /// then decided again from `activities` (its id stays unused).
    fn complete_early(
        &mut self,
        p: &AcceptedRow<'_>,
        at_batch: usize,
        event_id: i64,
        from: State,
    ) -> Result<Option<Completion>> {
        let w = self.writer;
        let id = p.id;
        let at = p.updated_at.unwrap_or(self.report_time);
        let row_itsm = std::str::from_utf8(&p.values()[p.itsm_range()]).unwrap_or_default();
        let known = w.lookup(id)?;
        let Some(known) = known.filter(|k| k.state == from && at >= k.updated_at) else {
            // The index did not match `activities` (edited by hand?): decide the row
            // again from `activities`.
            tracing::warn!(activity = %id, "the Activity index was out of step with the ledger");
            w.distrust_index();
            self.transition(Some(from), p.state, -1);
            let row = AcceptedRow::new(
                id,
                p.state,
                p.updated_at,
                p.row,
                p.values(),
                p.itsm_range(),
                Hint::Ask,
            );
            self.apply(&row)?;
            return Ok(None);
        };
        let seq = known.events + 1;
        let key = event_key(id, seq, Some(from), p.state, at);
        let itsm_fallback = if row_itsm.is_empty() {
            known.itsm_number.clone()
        } else {
            None
        };
        let itsm_opt = (!row_itsm.is_empty()).then_some(row_itsm);
        w.put_activity(id, p.state, at, Some(event_id), seq, itsm_opt)?;
        Ok(Some(Completion {
            at: at_batch,
            event_id,
            from,
            key,
            prev_event_id: known.event_id,
            itsm_fallback,
        }))
    }

    /// Writes the event of a change [`Planner::complete_early`] completed.
    fn write_early(&mut self, row: &AcceptedRow<'_>, c: Completion) -> Result<()> {
        let at = row.updated_at.unwrap_or(self.report_time);
        let mut itsm = self.attrs(row);
        if itsm.is_empty() {
            itsm = c.itsm_fallback.unwrap_or_default();
        }
        let w = self.writer;
        w.insert_event_as(
            c.event_id,
            &NewEvent {
                key: &c.key,
                activity_id: row.id,
                previous_state: Some(c.from),
                state: row.state,
                updated_at: at,
                row: row.row,
                itsm_number: &itsm,
                attrs: &self.buf,
                prev_event_id: c.prev_event_id,
                kind: "change",
            },
            w.report_id,
        )
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
        self.progress(1)?;
        let at = row.updated_at.unwrap_or(self.report_time);
        let mut event_id = 0;
        match row.hint {
            // Absent from the index: neither the ledger nor an earlier row of this report
            // knows the Activity, so nothing can come before it.
            Hint::New => return self.emit(row, at, None),
            // The event's id is taken now, in row order; the event waits for the batch.
            Hint::Change { from } => event_id = self.reserve_early(row, from),
            // A later row of an Activity this report moved, a collision, a resend: applied
            // at once, in row order, once the rows waiting before it are.
            Hint::Ask => {
                self.apply_pending()?;
                return self.apply(row);
            }
            Hint::Touch => {}
        }
        // A change keeps its values for its event; a touch needs none.
        let row = if event_id != 0 {
            OwnedRow::of(row)
        } else {
            OwnedRow::keeping(row, &[], 0..0)
        };
        self.wait(Pending { row, event_id })
    }

    /// A change waits as it came, not copied.
    fn accepted_owned(&mut self, row: OwnedRow) -> Result<()> {
        let Hint::Change { from } = row.view().hint else {
            return self.accepted(&row.view());
        };
        self.progress(1)?;
        let event_id = self.reserve_early(&row.view(), from);
        self.wait(Pending { row, event_id })
    }

    fn settled(&mut self, unchanged: u64, stale: u64) -> Result<()> {
        self.outcome.counts.unchanged += unchanged;
        self.outcome.counts.stale += stale;
        self.progress(unchanged + stale)
    }

    fn progress(&mut self, rows: u64) -> Result<()> {
        Planner::progress(self, rows)
    }

    fn index_bytes(&mut self) -> Result<u64> {
        self.writer.index_bytes()
    }

    fn settle(&mut self, deferred: Deferred) -> Result<Settled> {
        let settled = self.writer.settle(deferred, self.resend)?;
        tracing::debug!(
            unchanged = settled.unchanged,
            stale = settled.stale,
            forwarded = settled.forwarded(),
            "rows settled from the Activity index"
        );
        self.outcome.counts.unchanged += settled.unchanged;
        self.outcome.counts.stale += settled.stale;
        Ok(settled)
    }

    fn end(&mut self) -> Result<()> {
        self.apply_pending()
    }

    /// New Activities are written while the parser is busy, so that little is left for
    /// after the last row; below [`IDLE_ROWS`] they wait, to be written in larger sorted
    /// runs. (The rows waiting for `activities` are not: smaller batches of those measured
    /// slower on a report of changes.)
    fn idle(&mut self) -> Result<()> {
        self.writer.flush_fresh_from(IDLE_ROWS)
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
