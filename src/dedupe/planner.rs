//! Applying the rules to one report's rows inside its transaction: each accepted row's
//! [`Verdict`] becomes Activity updates and events in the ledger, and the in-memory
//! [`KnownActivities`] follow every write.
//!
//! Guarantees: rows are applied in the report's row order, so events are written in that
//! order; an Activity's writes reach `activities` in the order they are made.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use anyhow::Result;

use super::{KnownActivities, Order, Verdict, event_key, verdict};
use crate::ledger::activities::{Fresh, History, Position, Recorded};
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

/// The event this same report already emitted for an Activity (rule 5).
struct Own {
    id: i64,
    head: EventHead,
    history: History,
}

/// Applies a report's rows (see the module's documentation).
pub(crate) struct Planner<'p, 'c> {
    known: &'p mut KnownActivities,
    order: &'p Order,
    tx: &'p mut ReportTx<'c>,
    plan: ReportPlan,
    /// Events by transition: from (0 for none, else the state's code) and to (code - 1).
    transitions: [[i64; 4]; 5],
    outcome: Outcome,
}

impl<'p, 'c> Planner<'p, 'c> {
    pub(crate) fn new(
        known: &'p mut KnownActivities,
        order: &'p Order,
        tx: &'p mut ReportTx<'c>,
        plan: ReportPlan,
    ) -> Self {
        Planner {
            known,
            order,
            tx,
            plan,
            transitions: [[0; 4]; 5],
            outcome: Outcome::default(),
        }
    }

    pub(crate) fn finish(mut self) -> Outcome {
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
        self.outcome
    }

    /// Applies a batch of a report's rows, in order.
    pub(crate) fn apply(&mut self, batch: &Batch) -> Result<()> {
        for item in batch.items() {
            match item {
                RowOutcome::Accepted(row) => self.row(&row)?,
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
    fn row(&mut self, row: &Row<'_>) -> Result<()> {
        let position = self.position(row);
        let Some((slot, recorded)) = self.known.get(row.id) else {
            return self.add(row, position);
        };
        let ordering = self.order.cmp(&position, &recorded.position);
        // An Activity this report already wrote: its buffered writes go first.
        if recorded.position.report == self.plan.place {
            self.tx.flush()?;
        }
        let own = match ordering {
            Ordering::Greater if recorded.position.report == self.plan.place => {
                self.own_event(row, recorded)?
            }
            _ => None,
        };
        let v = verdict(
            row.state,
            Some((recorded.state, ordering)),
            own.as_ref().map(|o| o.head.previous_state),
        );
        let moved = Recorded {
            state: row.state,
            position,
        };
        match v {
            Verdict::New => unreachable!("the Activity is known"),
            Verdict::Change { from } => {
                let history = self.tx.history(row.id)?;
                self.change(row, from, position, &history)?;
                self.known.update(slot, moved)?;
            }
            Verdict::Unchanged { newer } => {
                self.outcome.unchanged += 1;
                if newer {
                    self.tx.touch_activity(row.id, position)?;
                    self.known.update(slot, moved)?;
                }
                if self.plan.resend {
                    self.resend(row, position)?;
                }
            }
            Verdict::Stale => {
                self.outcome.stale += 1;
                if self.plan.resend {
                    self.resend(row, position)?;
                }
            }
            Verdict::Amend => {
                let own = own.expect("an amend has an event to amend");
                self.amend(row, position, recorded.state, own)?;
                self.known.update(slot, moved)?;
            }
            Verdict::Withdraw => {
                let own = own.expect("a withdrawal has an event to withdraw");
                self.withdraw(row, position, recorded.state, own)?;
                self.known.update(slot, moved)?;
            }
        }
        Ok(())
    }

    /// This report's event for an Activity it already wrote, if it emitted one. A resend
    /// this report made is not a change to fold into: a row that changes the Activity
    /// replaces it with that change (one event), and any other row leaves it.
    fn own_event(&mut self, row: &Row<'_>, recorded: Recorded) -> Result<Option<Own>> {
        let history = self.tx.history(row.id)?;
        let Some(id) = history.event_id.filter(|&id| id >= self.tx.first_event) else {
            return Ok(None);
        };
        let head = self.tx.event_head(id)?;
        if !head.resend {
            return Ok(Some(Own { id, head, history }));
        }
        if row.state != recorded.state {
            self.tx.delete_event(id)?;
            self.transition(head.previous_state, recorded.state, -1);
            self.tx.set_activity(
                row.id,
                recorded.state,
                recorded.position,
                head.prev_event_id,
                history.events - 1,
                None,
            )?;
        }
        Ok(None)
    }

    /// Rule 1: a new Activity and its first event.
    fn add(&mut self, row: &Row<'_>, position: Position) -> Result<()> {
        let event = NewEvent {
            key: &event_key(row.id, 1, None, row.state, position.at),
            activity_id: row.id,
            previous_state: None,
            state: row.state,
            updated_at: position.at,
            row: row.number,
            itsm_number: row.itsm_number,
            attrs: row.values,
            prev_event_id: None,
            kind: "change",
        };
        let event_id = self.tx.insert_event(&event, self.tx.report_id)?;
        self.tx.add_activity(Fresh {
            id: row.id.to_string(),
            state: row.state,
            position,
            event_id,
            itsm_number: (!row.itsm_number.is_empty()).then(|| row.itsm_number.to_string()),
        })?;
        self.known.insert(
            row.id,
            Recorded {
                state: row.state,
                position,
            },
        )?;
        self.transition(None, row.state, 1);
        Ok(())
    }

    /// Rule 2: a known Activity moves on, with an event.
    fn change(
        &mut self,
        row: &Row<'_>,
        from: State,
        position: Position,
        history: &History,
    ) -> Result<()> {
        let seq = history.events + 1;
        let itsm = match row.itsm_number {
            "" => history.itsm_number.as_deref().unwrap_or_default(),
            own => own,
        };
        let event = NewEvent {
            key: &event_key(row.id, seq, Some(from), row.state, position.at),
            activity_id: row.id,
            previous_state: Some(from),
            state: row.state,
            updated_at: position.at,
            row: row.number,
            itsm_number: itsm,
            attrs: row.values,
            prev_event_id: history.event_id,
            kind: "change",
        };
        let event_id = self.tx.insert_event(&event, self.tx.report_id)?;
        let row_itsm = (!row.itsm_number.is_empty()).then_some(row.itsm_number);
        self.tx
            .set_activity(row.id, row.state, position, Some(event_id), seq, row_itsm)?;
        self.transition(Some(from), row.state, 1);
        Ok(())
    }

    /// Rule 5: a later row replaces this report's event for the Activity.
    fn amend(&mut self, row: &Row<'_>, position: Position, current: State, own: Own) -> Result<()> {
        self.outcome.merged += 1;
        let itsm = match row.itsm_number {
            "" => own.history.itsm_number.as_deref().unwrap_or_default(),
            mine => mine,
        };
        let event = NewEvent {
            key: &event_key(
                row.id,
                own.history.events,
                own.head.previous_state,
                row.state,
                position.at,
            ),
            activity_id: row.id,
            previous_state: own.head.previous_state,
            state: row.state,
            updated_at: position.at,
            row: row.number,
            itsm_number: itsm,
            attrs: row.values,
            prev_event_id: own.head.prev_event_id,
            kind: "change",
        };
        self.tx.amend_event(own.id, &event)?;
        let row_itsm = (!row.itsm_number.is_empty()).then_some(row.itsm_number);
        self.tx.set_activity(
            row.id,
            row.state,
            position,
            Some(own.id),
            own.history.events,
            row_itsm,
        )?;
        if current != row.state {
            self.transition(own.head.previous_state, current, -1);
            self.transition(own.head.previous_state, row.state, 1);
        }
        Ok(())
    }

    /// Rule 5: a later row puts the Activity back where it was before this report.
    fn withdraw(
        &mut self,
        row: &Row<'_>,
        position: Position,
        current: State,
        own: Own,
    ) -> Result<()> {
        self.outcome.merged += 1;
        self.tx.delete_event(own.id)?;
        self.tx.set_activity(
            row.id,
            row.state,
            position,
            own.head.prev_event_id,
            own.history.events - 1,
            None,
        )?;
        self.transition(own.head.previous_state, current, -1);
        Ok(())
    }

    /// `backfill --resend`: emits the Activity's current state again, once per run. Its
    /// values are this row's when the row is the recorded one or newer, else those of the
    /// Activity's latest event (with that event's report and row).
    fn resend(&mut self, row: &Row<'_>, position: Position) -> Result<()> {
        self.tx.flush()?;
        let history = self.tx.history(row.id)?;
        let Some(last) = history.event_id else {
            return Ok(());
        };
        if last >= self.plan.run_first_event {
            return Ok(()); // this run already sent it (as a change or a resend)
        }
        let (_, recorded) = self.known.get(row.id).expect("the Activity is known");
        let head = self.tx.event_head(last)?;
        let current = self.order.cmp(&position, &recorded.position) != Ordering::Less;
        let payload = if current {
            None
        } else {
            Some(self.tx.event_payload(last)?)
        };
        let (attrs, report_id, source_row, itsm) = match &payload {
            None => (
                row.values,
                self.tx.report_id,
                row.number,
                match row.itsm_number {
                    "" => history.itsm_number.as_deref().unwrap_or_default(),
                    mine => mine,
                },
            ),
            Some(p) => (&p.attrs[..], p.report_id, p.row, p.itsm_number.as_str()),
        };
        let seq = history.events + 1;
        let event = NewEvent {
            key: &event_key(
                row.id,
                seq,
                head.previous_state,
                recorded.state,
                recorded.position.at,
            ),
            activity_id: row.id,
            previous_state: head.previous_state,
            state: recorded.state,
            updated_at: recorded.position.at,
            row: source_row,
            itsm_number: itsm,
            attrs,
            prev_event_id: Some(last),
            kind: "resend",
        };
        let event_id = self.tx.insert_event(&event, report_id)?;
        self.tx.set_activity(
            row.id,
            recorded.state,
            recorded.position,
            Some(event_id),
            seq,
            None,
        )?;
        self.transition(head.previous_state, recorded.state, 1);
        Ok(())
    }
}
