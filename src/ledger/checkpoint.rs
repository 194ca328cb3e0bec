//! Folding the WAL back into the ledger file (checkpoints) on a thread of its own, so that
//! the copy runs while the next report is read instead of inside the next commit.
//!
//! Guarantees: a passive checkpoint never blocks a writer; dropping the [`Checkpointer`]
//! waits for the one running.

use std::path::Path;

use anyhow::Result;
use rusqlite::Connection;

/// A thread with its own connection that folds the WAL back into the ledger file
/// (`wal_checkpoint(PASSIVE)`) whenever a report is committed: the copy runs while the
/// next report is read or the sinks deliver, instead of inside the next commit.
pub(super) struct Checkpointer {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Asks for a checkpoint; one already asked for covers this commit too.
    pub(super) fn request(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(());
        }
    }

    pub(super) fn start(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                for () in rx {
                    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::debug!("background checkpoint: {e}");
                    }
                }
            })?;
        Ok(Checkpointer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
