//! The [`Ledger`] handle: the connection to the ledger file, and what every part of the
//! ledger uses (errors naming the file, the clock, checkpoints). Opening it is in `open`;
//! each table's reads and writes are in the module named after it.

use std::cell::RefCell;
use std::path::PathBuf;

use anyhow::Result;
use rusqlite::Connection;

use super::checkpoint::Checkpointer;

pub(crate) struct Ledger {
    pub(super) conn: Connection,
    /// Where the ledger file is (for the checkpointing thread's own connection).
    pub(super) path: Option<PathBuf>,
    /// Folds committed reports back into the ledger file in the background.
    pub(super) checkpointer: RefCell<Option<Checkpointer>>,
    /// The scratch copy a dry run works on; removed when the ledger is dropped.
    pub(super) _scratch: Option<(tempfile::TempDir, std::fs::File)>,
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

    /// Runs `f` with each commit on disk before it returns (`synchronous = FULL`; else
    /// NORMAL, where a power loss may take the last commits back). For the delivery
    /// marks: one lost would send its event again. It syncs what was committed before too.
    pub(crate) fn durably<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.conn.execute_batch("PRAGMA synchronous = FULL")?;
        let out = f();
        self.conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        out
    }

    /// Starts folding what was just committed back into the ledger file, on another thread.
    pub(crate) fn checkpoint_in_background(&self) {
        let mut slot = self.checkpointer.borrow_mut();
        if slot.is_none()
            && let Some(path) = &self.path
        {
            match Checkpointer::start(path) {
                Ok(c) => *slot = Some(c),
                Err(e) => tracing::debug!("no background checkpoints: {e}"),
            }
        }
        if let Some(c) = slot.as_ref() {
            c.request();
        }
    }

    /// Folds the WAL back into the ledger file (at the end of a run).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        // Waits for a background checkpoint still running.
        drop(self.checkpointer.borrow_mut().take());
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(super) fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
