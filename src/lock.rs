//! The run lock: one writing command at a time per ledger (`ledger.sqlite.lock`, held
//! with `File::try_lock` for the life of the command; the operating system releases it
//! however the process ends).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Another run holds the ledger.
#[derive(Debug)]
pub struct Locked(pub PathBuf);

impl std::fmt::Display for Locked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another tangoe-ingest run holds the ledger lock {}: this run stops without doing anything \
             (it is safe to run again once the other run ends)",
            self.0.display()
        )
    }
}

impl std::error::Error for Locked {}

/// Holds the run lock for the life of the run.
pub(crate) struct RunLock {
    _file: Option<File>,
}

/// Takes the ledger's run lock for a real run. A dry run (`dry_run`) takes none: it works on
/// a consistent copy of the ledger (see `Ledger::scratch_copy`), and holding even a shared
/// lock for its length would make the nightly run that starts meanwhile exit 75. It only
/// says when a run is in progress, since its audit then shows the ledger before that run.
pub(crate) fn lock(ledger: &Path, dry_run: bool) -> Result<RunLock> {
    let path = PathBuf::from(format!("{}.lock", ledger.display()));
    if dry_run {
        let busy = std::fs::File::open(&path)
            .ok()
            .is_some_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)));
        if busy {
            tracing::warn!(
                "a run is in progress (it holds {}): this dry run reads the ledger as that run's \
                 last committed report left it",
                path.display()
            );
        }
        return Ok(RunLock { _file: None });
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // A dry run looks at the lock for an instant (see above): a run that starts just then
    // tries for two seconds before it says another run holds it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(RunLock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(anyhow::Error::new(Locked(path)));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot lock {}", path.display()))
                );
            }
        }
    }
}
