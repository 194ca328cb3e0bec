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
pub(crate) mod deliveries;
pub(crate) mod migrate;
mod open;
pub(crate) mod outbox;
pub(crate) mod reports;
pub(crate) mod runs;

use std::cell::RefCell;
use std::path::PathBuf;

use rusqlite::Connection;

pub(crate) use outbox::{Columns, EventView, InFlight, OwnedEvent, StoredEvent};
pub(crate) use reports::{ReportCounts, ReportMeta};
pub(crate) use runs::EXIT_INTERRUPTED;

pub(crate) struct Ledger {
    conn: Connection,
    /// Where the ledger file is (for the checkpointing thread's own connection).
    path: Option<PathBuf>,
    /// Folds committed reports back into the ledger file in the background.
    checkpointer: RefCell<Option<open::Checkpointer>>,
    /// The scratch copy a dry run works on; removed when the ledger is dropped.
    _scratch: Option<(tempfile::TempDir, std::fs::File)>,
}

impl Ledger {
    /// An error from SQLite, with the ledger's file named (as "disk is full" alone does not
    /// say which disk); other errors as they are.
    pub(crate) fn name_in(&self, e: anyhow::Error) -> anyhow::Error {
        let from_sqlite = e
            .chain()
            .any(|c| c.downcast_ref::<rusqlite::Error>().is_some());
        match &self.path {
            Some(p) if from_sqlite => e.context(format!("the ledger {}", p.display())),
            _ => e,
        }
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
