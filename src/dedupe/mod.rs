//! The dedupe rules, all of them, in one place: a report's rows and what the ledger records
//! → verdicts, Activity updates and events.
//!
//! **One order of all rows.** Every row has a position: (effective time, report date,
//! report mtime, report name, row number). The effective time is the row's `updated_at`,
//! else the start of its report's date in `[report] timezone`. Two different reports of
//! the same date, mtime and name are ordered by their content hash, so the order never
//! depends on the order reports arrive in. A report seen again (the same content, under
//! any name) keeps the place it had when it was first processed ([`Order`]).
//!
//! The ledger records, for each Activity, its state and the position of the greatest row
//! applied to it. For each row of a report, in the report's row order:
//!
//! 1. An Activity the ledger does not know → event `none → state`.
//! 2. A row after the recorded position with another state → event `old → new`.
//! 3. A row after the recorded position with the same state → no event (*unchanged*); the
//!    recorded position moves to the row.
//! 4. The row at the recorded position is that row seen again → no event, nothing changes
//!    (*unchanged*). A row before it never changes the ledger and never emits (*stale*).
//! 5. One event per Activity and report at most: a later row of an Activity whose change
//!    this report already emitted is folded into that event (*merged*): it amends it (the
//!    later row's state and values), or withdraws it when the Activity ends up where it was
//!    before the report.
//!
//! So, whatever order reports come in and however often any is replayed, each Activity
//! ends in the state of its greatest row; replays emit nothing; and each Activity's events
//! form a chain, each starting from the state the one before it set.

mod known;
mod planner;
mod rule;

pub(crate) use known::KnownActivities;
pub(crate) use planner::{Outcome, Planner, ReportPlan};
pub(crate) use rule::Order;
