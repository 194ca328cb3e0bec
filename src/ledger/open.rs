//! Opening the ledger: for a real run (created and migrated), as a dry run's private copy,
//! or read-only (`status`).
//!
//! Guarantees: a dry run never writes the real ledger (its copy holds whole reports only,
//! however a run writes meanwhile); `status` never writes it either.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

use super::handle::Ledger;
use super::migrate;

/// SQLite's page cache is 8 MiB: what a report touches at random (`activities`) is far larger
/// than any cache worth its memory, and a page missed is read from the OS page cache. 32 MiB
/// and 4 MiB measured the same speed on reports of 1M and 3M rows; each MiB is peak RSS.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA page_size = 32768;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = OFF;
         PRAGMA cache_size = -8192;
         PRAGMA temp_store = FILE;",
    )?;
    Ok(())
}

const SCRATCH_PREFIX: &str = "tangoe-ingest-dry-";

/// Copies the committed ledger at `path` to `dst` through SQLite, in one read transaction:
/// a consistent snapshot however a run writes the ledger meanwhile (a backup in steps
/// would start over at each of that run's commits).
fn snapshot(path: &Path, dst: &Path) -> Result<()> {
    let src = open_read_only(path, true)?;
    let mut out = Connection::open(dst)?;
    let done = rusqlite::backup::Backup::new(&src, &mut out)
        .and_then(|b| b.step(-1))
        .with_context(|| format!("cannot read the ledger {}", path.display()))?;
    anyhow::ensure!(
        done == rusqlite::backup::StepResult::Done,
        "cannot read the ledger {}: it stayed locked ({done:?})",
        path.display()
    );
    Ok(())
}

/// Removes the scratch copies of dry runs that ended without removing them (killed, or
/// interrupted with Ctrl-C). A dry run holds an exclusive lock on its copy's `lock` file
/// while it lives (the lock goes with the process, in any PID namespace): a copy whose lock
/// can be taken is stale. A copy without one (being made, or from an older release) goes a
/// day after it was made.
fn sweep_stale_scratch(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(SCRATCH_PREFIX) {
            continue;
        }
        let dir = entry.path();
        // The lock is held while the copy is removed: a dry run that takes it after this
        // finds its copy gone, and makes another (see `Ledger::scratch_copy`).
        let held = std::fs::File::open(dir.join("lock")).ok();
        let stale = match &held {
            Some(f) => f.try_lock().is_ok(),
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(86_400)),
        };
        if stale && std::fs::remove_dir_all(&dir).is_ok() {
            tracing::info!(dir = %dir.display(), "removed the ledger copy of a dry run that was interrupted");
        }
        drop(held);
    }
}

/// Makes a file its owner's alone if it is not (a ledger an earlier release made under a
/// looser umask): SQLite gives the ledger's -wal and -shm files the ledger's permissions.
pub(crate) fn owner_only(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    Ok(())
}

/// A folder of its own for a dry run's copy of the ledger, with its lock held. Held while
/// the dry run lives: a dry run killed before it could remove its copy leaves it behind,
/// and the next dry run removes it (see `sweep_stale_scratch`). Another dry run's sweep may
/// take the lock of a folder just made, before this one could: the folder is then gone
/// once this one has the lock, and another is made.
fn scratch_dir() -> Result<(tempfile::TempDir, std::fs::File)> {
    for _ in 0..10 {
        let dir = tempfile::Builder::new().prefix(SCRATCH_PREFIX).tempdir()?;
        let path = dir.path().join("lock");
        let lock = std::fs::File::create(&path)?;
        lock.lock()?;
        if path.exists() {
            return Ok((dir, lock));
        }
    }
    anyhow::bail!(
        "cannot make a folder for the dry run's copy of the ledger in {}: other dry runs keep \
         removing it",
        std::env::temp_dir().display()
    )
}

/// Opens an existing ledger without writing to it, even to its -wal/-shm files where it
/// can: a cleanly closed ledger (no -wal) is opened immutable, unless `live` (a run may
/// start writing it while it is read: only SQLite's locking keeps that read consistent).
fn open_read_only(path: &Path, live: bool) -> Result<Connection> {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let wal_in_use = live
        || std::fs::metadata(&wal)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
    let abs = std::fs::canonicalize(path)?;
    let mut uri = String::from("file:");
    for b in abs.to_string_lossy().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                uri.push(b as char)
            }
            _ => uri.push_str(&format!("%{b:02X}")),
        }
    }
    uri.push_str(if wal_in_use {
        "?mode=ro"
    } else {
        "?mode=ro&immutable=1"
    });
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open the ledger {} read-only", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl Ledger {
    /// Opens (creating if needed) the ledger for a real run, migrated to this build's schema.
    pub(crate) fn open(path: &Path) -> Result<Ledger> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the ledger folder {}", dir.display()))?;
        }
        let mut conn = Connection::open(path)
            .with_context(|| format!("cannot open the ledger {}", path.display()))?;
        owner_only(path).with_context(|| format!("cannot open the ledger {}", path.display()))?;
        configure(&conn).with_context(|| format!("cannot open the ledger {}", path.display()))?;
        migrate::migrate(&mut conn).with_context(|| format!("ledger {}", path.display()))?;
        Ok(Ledger {
            conn,
            path: Some(path.to_path_buf()),
            checkpointer: std::cell::RefCell::new(None),
            _scratch: None,
        })
    }

    /// A private scratch copy of the ledger for a dry run (it needs no lock: a run that writes
    /// the ledger meanwhile is either wholly in the copy's reports or not at all): the run does everything a real
    /// run would, against the copy, and the copy is thrown away. The real ledger is only read.
    pub(crate) fn scratch_copy(path: &Path) -> Result<Ledger> {
        sweep_stale_scratch(&std::env::temp_dir());
        let (dir, lock) = scratch_dir()?;
        let copy = dir.path().join("ledger.sqlite");
        if path.exists() {
            let wal = PathBuf::from(format!("{}-wal", path.display()));
            let wal_in_use = std::fs::metadata(&wal)
                .map(|m| m.len() > 0)
                .unwrap_or(false);
            if wal_in_use {
                // Committed pages may still sit in the WAL: copy through SQLite.
                snapshot(path, &copy)?;
            } else {
                // A cleanly closed ledger is one self-contained file: a plain copy is the
                // fastest read. Should a run have written it meanwhile, copy through SQLite.
                let stamp = |p: &Path| {
                    std::fs::metadata(p)
                        .ok()
                        .map(|m| (m.len(), m.modified().ok()))
                };
                let before = stamp(path);
                std::fs::copy(path, &copy)
                    .with_context(|| format!("cannot read the ledger {}", path.display()))?;
                if stamp(path) != before || stamp(&wal).is_some_and(|(len, _)| len > 0) {
                    std::fs::remove_file(&copy)?;
                    snapshot(path, &copy)?;
                }
            }
        }
        let mut conn = Connection::open(&copy)?;
        configure(&conn)?;
        migrate::migrate(&mut conn)?;
        Ok(Ledger {
            conn,
            path: Some(copy),
            checkpointer: std::cell::RefCell::new(None),
            _scratch: Some((dir, lock)),
        })
    }

    /// Opens an existing ledger for reading only (the `status` command).
    pub(crate) fn read_only(path: &Path) -> Result<Ledger> {
        let conn = open_read_only(path, false)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != migrate::VERSION {
            anyhow::bail!(
                "the ledger {} is at schema version {version}; this build reads version {}: run \
                 `tangoe-ingest run` once to migrate it",
                path.display(),
                migrate::VERSION
            );
        }
        Ok(Ledger {
            conn,
            path: None,
            checkpointer: std::cell::RefCell::new(None),
            _scratch: None,
        })
    }
    /// Another connection to this ledger's file, read-only, for a thread of its own (`None`
    /// for a ledger opened without a file to name).
    pub(crate) fn reader(&self) -> Result<Option<Ledger>> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        Ok(Some(Ledger {
            conn: open_read_only(path, true)?,
            path: None,
            checkpointer: std::cell::RefCell::new(None),
            _scratch: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_left_by_interrupted_dry_runs_are_swept_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("ledger.sqlite"), b"copy").unwrap();
            d
        };
        // A dry run that was killed: its lock file is there, nobody holds it.
        let dead = make("tangoe-ingest-dry-dead");
        std::fs::File::create(dead.join("lock")).unwrap();
        // A dry run still running holds its lock.
        let live = make("tangoe-ingest-dry-live");
        let held = std::fs::File::create(live.join("lock")).unwrap();
        held.lock().unwrap();
        let young = make("tangoe-ingest-dry-young");
        let other = make("someone-else");
        std::fs::File::create(other.join("lock")).unwrap();
        sweep_stale_scratch(tmp.path());
        assert!(!dead.exists(), "the copy of a dry run that is gone");
        assert!(live.exists(), "a dry run still running");
        assert!(young.exists(), "no lock yet, and less than a day old");
        assert!(other.exists(), "not ours");
        drop(held);
        sweep_stale_scratch(tmp.path());
        assert!(!live.exists(), "its lock released");
    }

    /// Dry runs that start together sweep each other's folders while they make their own:
    /// none loses the folder it got.
    #[test]
    fn concurrent_dry_runs_never_sweep_each_others_copies() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..100 {
                        sweep_stale_scratch(&std::env::temp_dir());
                        let (dir, _lock) = scratch_dir().unwrap();
                        std::fs::write(dir.path().join("ledger.sqlite"), b"copy").unwrap();
                        assert!(dir.path().join("lock").exists());
                        assert!(dir.path().join("ledger.sqlite").exists());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_dry_runs_copy_holds_what_was_committed_while_a_run_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        drop(Ledger::open(&path).unwrap());
        let meta = |l: &Ledger| -> Vec<String> {
            let mut st = l
                .conn
                .prepare("SELECT key FROM meta WHERE key LIKE 'probe%' ORDER BY key")
                .unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        // A cleanly closed ledger: copied as it is.
        assert!(meta(&Ledger::scratch_copy(&path).unwrap()).is_empty());
        // A run is writing: one commit sits in the WAL, the next is not committed yet.
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA wal_autocheckpoint = 0;
                 INSERT INTO meta(key, value) VALUES ('probe1', 1);
                 BEGIN;
                 INSERT INTO meta(key, value) VALUES ('probe2', 2);",
            )
            .unwrap();
        let copy = Ledger::scratch_copy(&path).unwrap();
        assert_eq!(meta(&copy), ["probe1"]);
        writer.execute_batch("COMMIT;").unwrap();
        assert_eq!(meta(&copy), ["probe1"], "the copy is the dry run's own");
        assert_eq!(
            meta(&Ledger::scratch_copy(&path).unwrap()),
            ["probe1", "probe2"]
        );
    }
}
