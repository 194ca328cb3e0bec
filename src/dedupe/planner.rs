//! Applying the rules to one report's rows inside its transaction: each accepted row is
//! judged against [`KnownActivities`] in memory; its [`Verdict`] becomes an event written
//! at once and a new record for its Activity, kept in memory and written to `activities`
//! later, in ID order (new Activities in sorted chunks, changed ones in a walk over the
//! table, partly while the report is still being read).
//!
//! Guarantees: rows are applied in the report's row order, so events are written in that
//! order; every Activity's latest record is in `activities` before the report commits.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use anyhow::Result;

use super::known::KnownActivities;
use super::known::Slot;
use super::rule::{Order, Verdict, event_key, verdict};
use crate::ledger::activities::{Position, Record};
use crate::ledger::outbox::{EventHead, NewEvent};
use crate::ledger::reports::ReportTx;
use crate::report::{Batch, Outcome as RowOutcome, Reject, Row, RowWarning};
use crate::state::State;

/// What the planner needs to know of the report it applies.
#[derive(Debug, Clone)]
pub(crate) struct ReportPlan {
    /// The report's file name, for its rejects.
    pub(crate) file: String,
    /// The effective time of its rows without `updated_at`: the start of its date.
    pub(crate) report_time: i64,
    /// The report its rows' positions name: itself, or for content processed before (a
    /// replay) the report that first processed it.
    pub(crate) place: i64,
    /// `backfill --resend`: emit each Activity's current state again, once per run.
    pub(crate) resend: bool,
    /// Events with ids from here on were made by this run.
    pub(crate) run_first_event: i64,
}

/// What a report's rows did, for the summary and the dry-run audit.
#[derive(Debug, Default, Clone)]
pub(crate) struct Outcome {
    pub(crate) unchanged: u64,
    pub(crate) stale: u64,
    /// Rows folded into an earlier row's event of the same Activity in this report.
    pub(crate) merged: u64,
    /// Events by transition, e.g. ("ordered", "completed") → 12.
    pub(crate) transitions: BTreeMap<(&'static str, &'static str), u64>,
    /// The first rejects and warnings, for the summary.
    pub(crate) rejects: Vec<Reject>,
    pub(crate) warnings: Vec<RowWarning>,
}

impl Outcome {
    pub(crate) fn events(&self) -> u64 {
        self.transitions.values().sum()
    }
}

const KEEP_REJECTS: usize = 20;
const KEEP_WARNINGS: usize = 20;

/// New Activities written at a time, in ID order (a walk over the table each time).
const FRESH_CHUNK: usize = 262_144;
/// While the rows wait, the records held are written once they are at least 1/`IDLE_SHARE`
/// of all Activities: each write walks a whole index or table (more than the page cache
/// holds), so the walks are kept few, each writing many records a page, and what is left
/// for the end stays bounded.
const IDLE_SHARE: usize = 4;
/// ... and new Activities once at least this many are held.
const IDLE_FRESH: usize = 16_384;
/// Changed Activities written at a time: while the report is read and the rows wait, or
/// in steps at the end.
const WALK_STEP: usize = 8_192;

/// ITSM numbers rows brought, until their Activity's record is written: one buffer of
/// text and, per Activity, where its number lies in it.
#[derive(Default)]
struct ItsmNumbers {
    text: String,
    at: hashbrown::HashMap<Slot, (u32, u32)>,
}

impl ItsmNumbers {
    fn insert(&mut self, slot: Slot, number: &str) -> Result<()> {
        let start = u32::try_from(self.text.len())?;
        self.text.push_str(number);
        self.at
            .insert(slot, (start, u32::try_from(self.text.len())?));
        Ok(())
    }

    fn get(&self, slot: Slot) -> Option<&str> {
        self.at
            .get(&slot)
            .map(|&(a, b)| &self.text[a as usize..b as usize])
    }

    /// Forgets the numbers of records written; the buffer empties with the last of them.
    fn written(&mut self, slots: &[Slot]) {
        for slot in slots {
            self.at.remove(slot);
        }
        if self.at.is_empty() {
            self.text.clear();
        }
    }
}

/// Applies a report's rows (see the module's documentation).
pub(crate) struct Planner<'p, 'c> {
    known: &'p mut KnownActivities,
    order: &'p Order,
    tx: &'p ReportTx<'c>,
    plan: ReportPlan,
    itsm_numbers: ItsmNumbers,
    /// Events by transition: from (0 for none, else the state's code) and to (code - 1).
    transitions: [[i64; 4]; 5],
    /// Each accepted row's slot in a batch, found before the batch is applied (reused).
    slots: Vec<Option<Slot>>,
    outcome: Outcome,
}

impl<'p, 'c> Planner<'p, 'c> {
    pub(crate) fn new(
        known: &'p mut KnownActivities,
        order: &'p Order,
        tx: &'p ReportTx<'c>,
        plan: ReportPlan,
    ) -> Self {
        Planner {
            known,
            order,
            tx,
            plan,
            itsm_numbers: ItsmNumbers::default(),
            transitions: [[0; 4]; 5],
            slots: Vec::new(),
            outcome: Outcome::default(),
        }
    }

    /// Writes every record still held and says what the report's rows did.
    pub(crate) fn finish(mut self) -> Result<Outcome> {
        self.write_fresh()?;
        while self.known.has_dirty() {
            self.write_dirty(WALK_STEP)?;
        }
        let name = |code: usize| State::from_code(code as i64).map_or("none", State::as_str);
        for (from, row) in self.transitions.iter().enumerate() {
            for (to, &n) in row.iter().enumerate() {
                if n > 0 {
                    self.outcome
                        .transitions
                        .insert((name(from), name(to + 1)), n as u64);
                }
            }
        }
        Ok(self.outcome)
    }

    /// Work to do while no rows are ready: writes the new Activities held if they are many,
    /// else some of the changed records if they are many (the rest wait for
    /// [`Planner::finish`]).
    pub(crate) fn idle(&mut self) -> Result<bool> {
        let fresh = self.known.fresh_len();
        if fresh >= IDLE_FRESH && fresh * IDLE_SHARE >= self.known.len() {
            self.write_fresh()?;
            return Ok(true);
        }
        if !self.known.has_dirty() || self.known.dirty_len() * IDLE_SHARE < self.known.len() {
            return Ok(false);
        }
        self.write_dirty(WALK_STEP)?;
        Ok(true)
    }

    /// Writes the new Activities held, in ID order.
    fn write_fresh(&mut self) -> Result<()> {
        let fresh = self.known.drain_fresh();
        let (known, itsm) = (&*self.known, &self.itsm_numbers);
        let writes = fresh
            .iter()
            .map(|&slot| (known.id_of(slot), known.get(slot), itsm.get(slot)));
        let rowids = self.tx.insert_activities(writes)?;
        for (&slot, rowid) in fresh.iter().zip(rowids) {
            self.known.set_rowid(slot, rowid)?;
        }
        self.itsm_numbers.written(&fresh);
        Ok(())
    }

    /// Writes up to `budget` changed records, walking the table in rowid order.
    fn write_dirty(&mut self, budget: usize) -> Result<()> {
        let dirty = self.known.drain_dirty(budget);
        let (known, itsm) = (&*self.known, &self.itsm_numbers);
        let writes = dirty
            .iter()
            .map(|&slot| (known.rowid(slot), known.get(slot), itsm.get(slot)));
        self.tx.update_activities(writes)?;
        self.itsm_numbers.written(&dirty);
        Ok(())
    }

    /// Applies a batch of a report's rows, in order.
    pub(crate) fn apply(&mut self, batch: &Batch) -> Result<()> {
        // The look-ups first, one after another: their memory accesses overlap.
        let mut slots = std::mem::take(&mut self.slots);
        slots.clear();
        slots.extend(batch.items().filter_map(|item| match item {
            RowOutcome::Accepted(row) => Some(self.known.find(row.id)),
            _ => None,
        }));
        let mut found = slots.iter();
        for item in batch.items() {
            match item {
                RowOutcome::Accepted(row) => {
                    // An Activity an earlier row of the batch added was not there yet.
                    let slot = match found.next().copied().flatten() {
                        Some(slot) => Some(slot),
                        None => self.known.find(row.id),
                    };
                    self.row(&row, slot)?;
                }
                RowOutcome::Rejected(r) => {
                    self.tx
                        .reject(&self.plan.file, r.row, &r.column, &r.reason, &r.raw)?;
                    if self.outcome.rejects.len() < KEEP_REJECTS {
                        self.outcome.rejects.push(r.clone());
                    }
                }
                RowOutcome::Warning(w) => {
                    if self.outcome.warnings.len() < KEEP_WARNINGS {
                        self.outcome.warnings.push(w.clone());
                    }
                }
            }
        }
        self.slots = slots;
        Ok(())
    }

    fn transition(&mut self, from: Option<State>, to: State, delta: i64) {
        let from = from.map_or(0, |s| s.code() as usize);
        self.transitions[from][to.code() as usize - 1] += delta;
    }

    fn position(&self, row: &Row<'_>) -> Position {
        Position {
            at: row.updated_at.unwrap_or(self.plan.report_time),
            report: self.plan.place,
            row: row.number,
        }
    }

    /// One accepted row: its verdict, then what the verdict writes.
    fn row(&mut self, row: &Row<'_>, slot: Option<Slot>) -> Result<()> {
        let position = self.position(row);
        let Some(slot) = slot else {
            return self.add(row, position);
        };
        let mut known = self.known.get(slot);
        let ordering = self.order.cmp(&position, &known.position);
        let own = match known.event_id {
            Some(id) if ordering == Ordering::Greater && id >= self.tx.first_event => {
                self.own_event(row, slot, &mut known, id)?
            }
            _ => None,
        };
        let v = verdict(
            row.state,
            Some((known.state, ordering)),
            own.as_ref().map(|(_, head)| head.previous_state),
        );
        match v {
            Verdict::New => unreachable!("the Activity is known"),
            Verdict::Change { from } => self.change(row, slot, position, from, &known)?,
            Verdict::Unchanged { newer } => {
                self.outcome.unchanged += 1;
                if newer {
                    known.position = position;
                    self.known.set(slot, &known)?;
                }
                if self.plan.resend {
                    self.resend(row, slot, position)?;
                }
            }
            Verdict::Stale => {
                self.outcome.stale += 1;
                if self.plan.resend {
                    self.resend(row, slot, position)?;
                }
            }
            Verdict::Amend => {
                let (id, head) = own.expect("an amend has an event to amend");
                self.amend(row, slot, position, &known, id, &head)?;
            }
            Verdict::Withdraw => {
                let (id, head) = own.expect("a withdrawal has an event to withdraw");
                self.withdraw(row, slot, position, &known, id, &head)?;
                // Back where it was: in a resend, its state goes out again all the same.
                if self.plan.resend {
                    self.resend(row, slot, position)?;
                }
            }
        }
        Ok(())
    }

    /// This report's event `id` for an Activity, if it is a change. A resend this report
    /// made is not a change to fold into: a row that changes the Activity replaces it with
    /// that change (one event), and any other row leaves it.
    fn own_event(
        &mut self,
        row: &Row<'_>,
        slot: Slot,
        known: &mut Record,
        id: i64,
    ) -> Result<Option<(i64, EventHead)>> {
        let head = self.tx.event_head(id)?;
        if !head.resend {
            return Ok(Some((id, head)));
        }
        if row.state != known.state {
            self.tx.delete_event(id)?;
            self.transition(head.previous_state, known.state, -1);
            known.event_id = head.prev_event_id;
            known.events -= 1;
            self.known.set(slot, known)?;
        }
        Ok(None)
    }

    /// The ITSM number an event of this row carries: the row's, else the Activity's.
    fn itsm_number(&self, row: &Row<'_>, slot: Option<Slot>) -> Result<String> {
        if !row.itsm_number.is_empty() {
            return Ok(row.itsm_number.to_string());
        }
        let Some(slot) = slot.filter(|&s| self.known.get(s).has_itsm_number) else {
            return Ok(String::new());
        };
        if let Some(n) = self.itsm_numbers.get(slot) {
            return Ok(n.to_string());
        }
        Ok(self
            .tx
            .itsm_number(self.known.rowid(slot))?
            .unwrap_or_default())
    }

    /// Keeps the row's ITSM number for its Activity's record, if it has one.
    fn keep_itsm_number(&mut self, row: &Row<'_>, slot: Slot) -> Result<()> {
        if !row.itsm_number.is_empty() {
            self.itsm_numbers.insert(slot, row.itsm_number)?;
        }
        Ok(())
    }

    /// Rule 1: a new Activity and its first event.
    fn add(&mut self, row: &Row<'_>, position: Position) -> Result<()> {
        let event = change_event(row, position.at, 1, None, row.itsm_number, None);
        let event_id = self.tx.insert_event(&event, self.tx.report_id)?;
        let record = Record {
            state: row.state,
            position,
            event_id: Some(event_id),
            events: 1,
            has_itsm_number: !row.itsm_number.is_empty(),
        };
        let slot = self.known.add(row.id, &record)?;
        self.keep_itsm_number(row, slot)?;
        self.transition(None, row.state, 1);
        if self.known.fresh_len() >= FRESH_CHUNK {
            self.write_fresh()?;
        }
        Ok(())
    }

    /// Rule 2: a known Activity moves on, with an event.
    fn change(
        &mut self,
        row: &Row<'_>,
        slot: Slot,
        position: Position,
        from: State,
        known: &Record,
    ) -> Result<()> {
        let seq = known.events + 1;
        let itsm = self.itsm_number(row, Some(slot))?;
        let event = change_event(row, position.at, seq, Some(from), &itsm, known.event_id);
        let event_id = self.tx.insert_event(&event, self.tx.report_id)?;
        let record = Record {
            state: row.state,
            position,
            event_id: Some(event_id),
            events: seq,
            has_itsm_number: known.has_itsm_number || !itsm.is_empty(),
        };
        self.known.set(slot, &record)?;
        self.keep_itsm_number(row, slot)?;
        self.transition(Some(from), row.state, 1);
        Ok(())
    }

    /// Rule 5: a later row replaces this report's event `id` for the Activity.
    fn amend(
        &mut self,
        row: &Row<'_>,
        slot: Slot,
        position: Position,
        known: &Record,
        id: i64,
        head: &EventHead,
    ) -> Result<()> {
        self.outcome.merged += 1;
        let itsm = self.itsm_number(row, Some(slot))?;
        let event = change_event(
            row,
            position.at,
            known.events,
            head.previous_state,
            &itsm,
            head.prev_event_id,
        );
        self.tx.amend_event(id, &event)?;
        let record = Record {
            state: row.state,
            position,
            has_itsm_number: known.has_itsm_number || !itsm.is_empty(),
            ..*known
        };
        self.known.set(slot, &record)?;
        self.keep_itsm_number(row, slot)?;
        if known.state != row.state {
            self.transition(head.previous_state, known.state, -1);
            self.transition(head.previous_state, row.state, 1);
        }
        Ok(())
    }

    /// Rule 5: a later row puts the Activity back where it was before this report: its
    /// event `id` is withdrawn.
    fn withdraw(
        &mut self,
        row: &Row<'_>,
        slot: Slot,
        position: Position,
        known: &Record,
        id: i64,
        head: &EventHead,
    ) -> Result<()> {
        self.outcome.merged += 1;
        self.tx.delete_event(id)?;
        let record = Record {
            state: row.state,
            position,
            event_id: head.prev_event_id,
            events: known.events - 1,
            has_itsm_number: known.has_itsm_number,
        };
        self.known.set(slot, &record)?;
        self.transition(head.previous_state, known.state, -1);
        Ok(())
    }

    /// `backfill --resend`: emits the Activity's current state again, once per run. Its
    /// values are this row's when the row is the recorded one or newer, else those of the
    /// Activity's latest event (with that event's report and row).
    fn resend(&mut self, row: &Row<'_>, slot: Slot, position: Position) -> Result<()> {
        let known = self.known.get(slot);
        let Some(last) = known.event_id else {
            return Ok(());
        };
        if last >= self.plan.run_first_event {
            return Ok(()); // this run already sent it (as a change or a resend)
        }
        let head = self.tx.event_head(last)?;
        let current = self.order.cmp(&position, &known.position) != Ordering::Less;
        let itsm = self.itsm_number(row, Some(slot))?;
        let payload = if current {
            None
        } else {
            Some(self.tx.event_payload(last)?)
        };
        let (attrs, report_id, source_row, itsm) = match &payload {
            None => (row.values, self.tx.report_id, row.number, itsm.as_str()),
            Some(p) => (&p.attrs[..], p.report_id, p.row, p.itsm_number.as_str()),
        };
        let seq = known.events + 1;
        let event = NewEvent {
            key: event_key(
                row.id,
                seq,
                head.previous_state,
                known.state,
                known.position.at,
            ),
            activity_id: row.id,
            previous_state: head.previous_state,
            state: known.state,
            updated_at: known.position.at,
            row: source_row,
            itsm_number: itsm,
            attrs,
            prev_event_id: Some(last),
            kind: "resend",
        };
        let event_id = self.tx.insert_event(&event, report_id)?;
        let record = Record {
            event_id: Some(event_id),
            events: seq,
            ..known
        };
        self.known.set(slot, &record)?;
        self.transition(head.previous_state, known.state, 1);
        Ok(())
    }
}

/// The event of a change a row makes: the Activity's `seq`-th, from `previous` to the row's
/// state at `at`, carrying the row's values.
fn change_event<'r>(
    row: &Row<'r>,
    at: i64,
    seq: i64,
    previous: Option<State>,
    itsm_number: &'r str,
    prev_event_id: Option<i64>,
) -> NewEvent<'r> {
    NewEvent {
        key: event_key(row.id, seq, previous, row.state, at),
        activity_id: row.id,
        previous_state: previous,
        state: row.state,
        updated_at: at,
        row: row.number,
        itsm_number,
        attrs: row.values,
        prev_event_id,
        kind: "change",
    }
}
