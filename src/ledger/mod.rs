//! The ledger: one SQLite file (WAL), the one source of truth of what tangoe-ingest knows:
//! reports, Activities, events (the outbox), deliveries, rejected rows and runs.
//!
//! Invariant: a report is committed whole or not at all. All effects of one report (its
//! row in `reports`, Activity updates, events, rejects) happen in one transaction
//! ([`reports::ReportTx`]), so a crash at any moment leaves the ledger as it was before that
//! report or after it. Delivery marks are written only after a sink has really delivered.
//! Nothing stored is derived from other stored data: fast look-up structures are built in
//! memory, per run, from these tables.

pub(crate) mod activities;
pub(crate) mod attempts;
mod checkpoint;
pub(crate) mod deliveries;
mod handle;
pub(crate) mod ignored;
pub(crate) mod migrate;
mod open;
pub(crate) mod outbox;
pub(crate) mod rejects;
pub(crate) mod reports;
pub(crate) mod runs;

pub(crate) use handle::Ledger;
pub(crate) use outbox::{EventView, InFlight, OwnedEvent, StoredEvent};
pub(crate) use reports::{Columns, ReportCounts, ReportMeta};
pub(crate) use runs::EXIT_INTERRUPTED;
