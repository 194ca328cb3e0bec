//! The ledger: one SQLite file (WAL) that remembers reports, Activities, events (the outbox),
//! rejected rows and runs.
//!
//! Invariant: a report is committed whole or not at all. All effects of one report (its
//! row in `reports`, Activity updates, events, rejects) happen in one transaction, so a
//! crash at any moment leaves the ledger as it was before that report or after it.
//! Delivery marks are written only after a sink has really delivered.

pub(crate) mod attrs;
pub(crate) mod deliveries;
pub(crate) mod index;
pub(crate) mod migrate;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::activity::State;
use crate::deferred::{Deferred, Settled};
use index::ActivityIndex;

/// What the ledger knows of an Activity.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) state: State,
    /// Effective time of the last change: the row's `updated_at`, else its report's date.
    pub(crate) updated_at: i64,
    pub(crate) event_id: Option<i64>,
    pub(crate) events: i64,
    pub(crate) itsm_number: Option<String>,
}

/// The parts of an event needed to fold a later row of the same report into it.
#[derive(Debug, Clone)]
pub(crate) struct OwnEvent {
    pub(crate) id: i64,
    pub(crate) previous_state: Option<State>,
    pub(crate) prev_event_id: Option<i64>,
    /// `backfill --resend` re-sent the state rather than recording a change.
    pub(crate) resend: bool,
}

/// A report as listed and hashed, before processing.
#[derive(Debug, Clone)]
pub(crate) struct ReportMeta {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
    pub(crate) sha256: String,
    pub(crate) report_date: chrono::NaiveDate,
}

/// An event to insert.
pub(crate) struct NewEvent<'a> {
    pub(crate) key: &'a str,
    pub(crate) activity_id: &'a str,
    pub(crate) previous_state: Option<State>,
    pub(crate) state: State,
    pub(crate) updated_at: i64,
    pub(crate) row: u64,
    pub(crate) itsm_number: &'a str,
    pub(crate) attrs: &'a [u8],
    pub(crate) prev_event_id: Option<i64>,
    pub(crate) kind: &'a str,
}

/// An event as the sinks see it.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub(crate) id: i64,
    pub(crate) key: String,
    pub(crate) activity_id: String,
    pub(crate) previous_state: Option<State>,
    pub(crate) state: State,
    pub(crate) updated_at: i64,
    pub(crate) report: String,
    pub(crate) row: u64,
    pub(crate) itsm_number: String,
    pub(crate) kind: String,
    /// (name, value) of every attribute, schema fields first, then extra columns.
    pub(crate) attrs: Vec<(String, String)>,
    pub(crate) extra_from: usize,
}

pub(crate) struct Ledger {
    conn: Connection,
    /// The Activity index, loaded at the first report; dropped after a rollback.
    index: RefCell<Option<ActivityIndex>>,
    /// Where the ledger file is (for the checkpointing thread's own connection).
    path: Option<PathBuf>,
    /// Folds committed reports back into the ledger file in the background.
    checkpointer: RefCell<Option<Checkpointer>>,
    /// The scratch copy a dry run works on; removed when the ledger is dropped.
    _scratch: Option<(tempfile::TempDir, std::fs::File)>,
}

/// A thread with its own connection that folds the WAL back into the ledger file
/// (`wal_checkpoint(PASSIVE)`) whenever a report is committed: the copy runs while the
/// next report is read or the sinks deliver, instead of inside the next commit.
struct Checkpointer {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer> {
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

/// SQLite's default: a commit that leaves more WAL pages than this checkpoints.
const AUTOCHECKPOINT_PAGES: u32 = 1000;

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
        let stale = match std::fs::File::open(dir.join("lock")) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(86_400)),
        };
        if stale && std::fs::remove_dir_all(&dir).is_ok() {
            tracing::info!(dir = %dir.display(), "removed the ledger copy of a dry run that was interrupted");
        }
    }
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
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

/// The exit code the ledger records for a run that was interrupted (killed) before it
/// could finish; the next run records it so.
pub(crate) const EXIT_INTERRUPTED: i32 = -1;

/// A report an interrupted run committed.
#[derive(Debug, Clone)]
pub(crate) struct InterruptedReport {
    pub(crate) run: i64,
    pub(crate) report_id: i64,
    pub(crate) name: String,
    pub(crate) report_date: String,
    pub(crate) counts: ReportCounts,
    pub(crate) sha256: String,
    /// The first rejects: row, column, reason.
    pub(crate) rejects: Vec<(u64, String, String)>,
}

/// An import file put in place whose delivery mark is not written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InFlight {
    pub(crate) name: String,
    /// The last event it holds: recorded, or read from the name (`PREFIX-FIRST-LAST.EXT`,
    /// as an earlier release recorded the name alone).
    pub(crate) last: Option<i64>,
    /// What named the sink's folders and file kind when it was recorded.
    pub(crate) ident: Option<String>,
    /// Its size as it was put in place: a remote file of its name and this size is it.
    pub(crate) size: Option<u64>,
}

impl InFlight {
    /// Reads `LAST:IDENT:SIZE:NAME`; `LAST:NAME` (recorded before the sink's settings and
    /// size were); or a name alone (an earlier release).
    fn parse(v: &str) -> InFlight {
        let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some((last, rest)) = v.split_once(':')
            && let Ok(last) = last.parse::<i64>()
        {
            if let Some((ident, rest)) = rest.split_once(':')
                && hex16(ident)
                && let Some((size, name)) = rest.split_once(':')
                && let Ok(size) = size.parse::<u64>()
            {
                return InFlight {
                    name: name.to_string(),
                    last: Some(last),
                    ident: Some(ident.to_string()),
                    size: Some(size),
                };
            }
            return InFlight {
                name: rest.to_string(),
                last: Some(last),
                ident: None,
                size: None,
            };
        }
        InFlight {
            name: v.to_string(),
            last: last_of_name(v),
            ident: None,
            size: None,
        }
    }
}

/// The last event of an import file named `PREFIX-FIRST-LAST[-N].EXT` (12-digit numbers).
fn last_of_name(name: &str) -> Option<i64> {
    let stem = name.rsplit_once('.')?.0;
    let mut parts = stem.rsplit('-');
    let mut last = parts.next()?;
    if last.len() != 12 {
        // `-2`, `-3`...: the file took the next free name.
        last = parts.next()?;
    }
    let first = parts.next()?;
    let twelve = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
    (twelve(first) && twelve(last)).then(|| last.parse().ok())?
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

    /// Where a report's temporary files go: beside the ledger (on its disk; a temporary
    /// folder may be held in memory).
    pub(crate) fn spill_dir(&self) -> PathBuf {
        match self.path.as_deref().map(Path::parent) {
            Some(Some(dir)) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            Some(_) => PathBuf::from("."),
            None => std::env::temp_dir(),
        }
    }

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
        configure(&conn).with_context(|| format!("cannot open the ledger {}", path.display()))?;
        migrate::migrate(&mut conn).with_context(|| format!("ledger {}", path.display()))?;
        Ok(Ledger {
            conn,
            index: RefCell::new(None),
            path: Some(path.to_path_buf()),
            checkpointer: RefCell::new(None),
            _scratch: None,
        })
    }

    /// A private scratch copy of the ledger for a dry run (it needs no lock: a run that writes
    /// the ledger meanwhile is either wholly in the copy's reports or not at all): the run does everything a real
    /// run would, against the copy, and the copy is thrown away. The real ledger is only read.
    pub(crate) fn scratch_copy(path: &Path) -> Result<Ledger> {
        sweep_stale_scratch(&std::env::temp_dir());
        let dir = tempfile::Builder::new().prefix(SCRATCH_PREFIX).tempdir()?;
        // Held while this dry run lives: a dry run killed before it could remove its copy
        // leaves it behind, and the next dry run removes it (see `sweep_stale_scratch`).
        let lock = std::fs::File::create(dir.path().join("lock"))?;
        lock.lock()?;
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
            index: RefCell::new(None),
            path: Some(copy),
            checkpointer: RefCell::new(None),
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
            index: RefCell::new(None),
            path: None,
            checkpointer: RefCell::new(None),
            _scratch: None,
        })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn start_run(&self, mode: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (started_at, mode) VALUES (?1, ?2)",
            params![now_text(), mode],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes the runs an interruption left unfinished (killed: no run but this one can be
    /// going on, as this one holds the lock). Each gets the counts of the reports it
    /// committed and the exit code [`EXIT_INTERRUPTED`]; those reports are returned, with
    /// their first rejects, for this run to report: nobody saw the interrupted run's summary.
    pub(crate) fn close_interrupted_runs(&self, current: i64) -> Result<Vec<InterruptedReport>> {
        // All or nothing: a failure leaves the runs open for the next run to report.
        let tx = self.conn.unchecked_transaction()?;
        let runs: Vec<i64> = self
            .conn
            .prepare("SELECT id FROM runs WHERE ended_at IS NULL AND id < ?1 ORDER BY id")?
            .query_map([current], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        let mut reports_of = self.conn.prepare(
            "SELECT id, name, report_date, rows, accepted, rejected, skipped, unchanged,
                    stale, events, warnings, sha256
             FROM reports WHERE run_id = ?1 AND status = 'processed' ORDER BY id",
        )?;
        for run in runs {
            let reports = reports_of
                .query_map([run], |r| {
                    Ok(InterruptedReport {
                        run,
                        report_id: r.get(0)?,
                        name: r.get(1)?,
                        report_date: r.get(2)?,
                        counts: ReportCounts {
                            rows: r.get(3)?,
                            accepted: r.get(4)?,
                            rejected: r.get(5)?,
                            skipped: r.get(6)?,
                            unchanged: r.get(7)?,
                            stale: r.get(8)?,
                            events: r.get(9)?,
                            warnings: r.get(10)?,
                        },
                        sha256: r.get(11)?,
                        rejects: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let sum =
                |f: fn(&ReportCounts) -> u64| reports.iter().map(|r| f(&r.counts)).sum::<u64>();
            self.conn.execute(
                "UPDATE runs SET ended_at = ?1, exit_code = ?2, reports = ?3, rows = ?4,
                        rejected = ?5, events = ?6
                 WHERE id = ?7",
                params![
                    now_text(),
                    EXIT_INTERRUPTED,
                    reports.len() as i64,
                    sum(|c| c.rows) as i64,
                    sum(|c| c.rejected) as i64,
                    sum(|c| c.events) as i64,
                    run
                ],
            )?;
            out.extend(reports);
        }
        let mut rejects_of = self.conn.prepare(
            "SELECT row, col, reason FROM rejects WHERE report_id = ?1 ORDER BY id LIMIT 20",
        )?;
        for r in &mut out {
            r.rejects = rejects_of
                .query_map([r.report_id], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
        }
        drop((reports_of, rejects_of));
        tx.commit()?;
        Ok(out)
    }

    /// Records that a run failed as a whole (exit code 1), keeping any counts it recorded.
    pub(crate) fn fail_run(&self, run_id: i64, exit_code: i32) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET ended_at = COALESCE(ended_at, ?1), exit_code = ?2 WHERE id = ?3",
            params![now_text(), exit_code, run_id],
        )?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish_run(
        &self,
        run_id: i64,
        reports: u64,
        rows: u64,
        rejected: u64,
        events: u64,
        delivered: u64,
        pending: u64,
        exit_code: i32,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET ended_at = ?1, reports = ?2, rows = ?3, rejected = ?4, events = ?5,
                delivered = ?6, pending = ?7, exit_code = ?8 WHERE id = ?9",
            params![
                now_text(),
                reports,
                rows,
                rejected,
                events,
                delivered,
                pending,
                exit_code,
                run_id
            ],
        )?;
        Ok(())
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
        if let Some(tx) = slot.as_ref().and_then(|c| c.tx.as_ref()) {
            // A checkpoint already asked for covers this commit too.
            let _ = tx.try_send(());
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

    /// Whether a report of this size was processed (or found a duplicate) before: only
    /// such a file can be a duplicate.
    pub(crate) fn seen_size(&self, size: u64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM reports WHERE size = ?1 AND status IN ('processed', 'duplicate') LIMIT 1",
            )?
            .query_row([size as i64], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The name under which content with this hash was processed, if it was.
    pub(crate) fn processed_hash(&self, sha256: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT name FROM reports WHERE sha256 = ?1 AND status = 'processed' LIMIT 1",
            )?
            .query_row([sha256], |r| r.get(0))
            .optional()?)
    }

    /// Whether a report with this name, size and mtime was processed (no need to fetch it).
    pub(crate) fn processed_listing(
        &self,
        name: &str,
        size: u64,
        mtime: i64,
    ) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT sha256 FROM reports WHERE name = ?1 AND size = ?2 AND mtime = ?3
                 AND status IN ('processed', 'duplicate') LIMIT 1",
            )?
            .query_row(params![name, size, mtime], |r| r.get(0))
            .optional()?)
    }

    pub(crate) fn record_failed_report(
        &self,
        meta: &ReportMeta,
        mode: &str,
        run_id: i64,
        error: &str,
    ) -> Result<()> {
        self.record_unprocessed(meta, "failed", mode, run_id, Some(error))
    }

    /// Records a report whose content was processed before under another name: the same
    /// file (name, size, mtime) is not read again, nor listed as a duplicate every night.
    pub(crate) fn record_duplicate(
        &self,
        meta: &ReportMeta,
        mode: &str,
        run_id: i64,
    ) -> Result<()> {
        self.record_unprocessed(meta, "duplicate", mode, run_id, None)
    }

    fn record_unprocessed(
        &self,
        meta: &ReportMeta,
        status: &str,
        mode: &str,
        run_id: i64,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO reports (name, size, mtime, sha256, report_date, status, mode, run_id, error, processed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?10, ?6, ?7, ?8, ?9)",
            params![
                meta.name,
                meta.size,
                meta.mtime,
                meta.sha256,
                meta.report_date.to_string(),
                mode,
                run_id,
                error,
                now_text(),
                status
            ],
        )?;
        Ok(())
    }

    pub(crate) fn max_event_id(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Starts the one transaction in which a report is committed.
    pub(crate) fn begin_report(
        &self,
        meta: &ReportMeta,
        mode: &str,
        run_id: i64,
        run_first_event: i64,
    ) -> Result<ReportWriter<'_>> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        // From here on, dropping the writer rolls the whole report back.
        let mut writer = ReportWriter {
            conn: &self.conn,
            fresh: RefCell::new(Vec::new()),
            insert_event_stmt: RefCell::new(None),
            now: now(),
            index: &self.index,
            index_out: std::cell::Cell::new(false),
            index_distrusted: std::cell::Cell::new(false),
            report_id: 0,
            first_event: 0,
            run_first_event,
            run_id,
            next_event: std::cell::Cell::new(0),
            done: false,
        };
        // A report's commit does not checkpoint: `checkpoint_in_background` does, after it.
        // Other writes (delivery records) checkpoint as SQLite does by default.
        self.conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        self.conn.execute(
            "INSERT INTO reports (name, size, mtime, sha256, report_date, status, mode, run_id, processed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'processed', ?6, ?7, ?8)",
            params![meta.name, meta.size, meta.mtime, meta.sha256, meta.report_date.to_string(), mode, run_id, now_text()],
        )?;
        writer.report_id = self.conn.last_insert_rowid();
        writer.first_event = self.max_event_id()? + 1;
        writer.next_event.set(writer.first_event);
        Ok(writer)
    }

    /// The sink's delivery mark; a sink seen for the first time starts after the events
    /// already in the ledger (history is re-sent only with `backfill --resend`).
    pub(crate) fn sink_mark(&self, sink: &str) -> Result<i64> {
        if let Some(mark) = self
            .conn
            .query_row(
                "SELECT delivered_through FROM sinks WHERE name = ?1",
                [sink],
                |r| r.get(0),
            )
            .optional()?
        {
            return Ok(mark);
        }
        let mark = self.max_event_id()?;
        self.conn.execute(
            "INSERT INTO sinks (name, delivered_through) VALUES (?1, ?2)",
            params![sink, mark],
        )?;
        Ok(mark)
    }

    /// Records the import file about to be put in place for `sink` (its name, the last event
    /// it holds, and `ident`, what names the sink's folder and file kind), before the rename;
    /// cleared with the delivery mark. A rerun after a crash between the two puts that file
    /// in place again with the same events, even if its content changed (a mapping edited
    /// meanwhile).
    pub(crate) fn set_file_in_flight(&self, sink: &str, file: Option<&InFlight>) -> Result<()> {
        let key = format!("file_in_flight:{sink}");
        match file {
            Some(f) => self.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![
                    key,
                    format!(
                        "{}:{}:{}:{}",
                        f.last.unwrap_or_default(),
                        f.ident.as_deref().unwrap_or("0000000000000000"),
                        f.size.unwrap_or_default(),
                        f.name
                    )
                ],
            )?,
            None => self
                .conn
                .execute("DELETE FROM meta WHERE key = ?1", [key])?,
        };
        Ok(())
    }

    /// The import file of `sink` put in place (locally, perhaps uploaded) whose delivery
    /// mark was never written: a crash, or an upload that failed.
    pub(crate) fn file_in_flight(&self, sink: &str) -> Result<Option<InFlight>> {
        let value: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("file_in_flight:{sink}")],
                |r| r.get(0),
            )
            .optional()?;
        Ok(value.map(|v| InFlight::parse(&v)))
    }

    pub(crate) fn set_sink_mark(&self, sink: &str, through: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sinks (name, delivered_through) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET delivered_through = MAX(delivered_through, excluded.delivered_through)",
            params![sink, through],
        )?;
        Ok(())
    }

    /// Events after `after` in ledger order, at most `limit`, copied to hand to another
    /// thread (their values stay encoded: [`OwnedEvent::view`] decodes them there).
    /// `shared` keeps one copy of each report's name and columns.
    pub(crate) fn owned_events_after(
        &self,
        after: i64,
        limit: usize,
        shared: &mut Option<(i64, std::sync::Arc<str>, std::sync::Arc<Columns>)>,
    ) -> Result<Vec<OwnedEvent>> {
        let mut out = Vec::new();
        self.owned_events_after_into(after, limit, shared, &mut out)?;
        Ok(out)
    }

    /// [`Ledger::owned_events_after`] into `out`, reusing the buffers of the events it
    /// holds (a batch handed back by the thread that used it).
    pub(crate) fn owned_events_after_into(
        &self,
        after: i64,
        limit: usize,
        shared: &mut Option<(i64, std::sync::Arc<str>, std::sync::Arc<Columns>)>,
        out: &mut Vec<OwnedEvent>,
    ) -> Result<()> {
        fn set(to: &mut String, from: rusqlite::types::ValueRef<'_>) -> Result<()> {
            to.clear();
            to.push_str(from.as_str()?);
            Ok(())
        }
        let mut stmt = self.conn.prepare_cached(EVENTS_AFTER)?;
        let mut rows = stmt.query(params![after, limit as i64])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let report_id: i64 = r.get(12)?;
            if shared.as_ref().is_none_or(|(id, _, _)| *id != report_id) {
                let cols: Columns = serde_json::from_str(r.get_ref(11)?.as_str()?)
                    .context("ledger: bad report columns")?;
                *shared = Some((
                    report_id,
                    std::sync::Arc::from(r.get_ref(6)?.as_str()?),
                    std::sync::Arc::new(cols),
                ));
            }
            let (_, report, columns) = shared.as_ref().expect("set above");
            if n == out.len() {
                out.push(OwnedEvent {
                    id: 0,
                    key: String::new(),
                    activity_id: String::new(),
                    previous_state: None,
                    state: State::Ordered,
                    updated_at: 0,
                    report: report.clone(),
                    row: 0,
                    itsm_number: String::new(),
                    kind: String::new(),
                    columns: columns.clone(),
                    values: Vec::new(),
                });
            }
            let e = &mut out[n];
            n += 1;
            e.id = r.get(0)?;
            set(&mut e.key, r.get_ref(1)?)?;
            set(&mut e.activity_id, r.get_ref(2)?)?;
            e.previous_state = r.get::<_, Option<i64>>(3)?.and_then(State::from_code);
            e.state = State::from_code(r.get(4)?).context("ledger: bad state code")?;
            e.updated_at = r.get(5)?;
            if !std::sync::Arc::ptr_eq(&e.report, report) {
                e.report = report.clone();
            }
            e.row = r.get::<_, i64>(7)? as u64;
            set(&mut e.itsm_number, r.get_ref(8)?)?;
            set(&mut e.kind, r.get_ref(9)?)?;
            if !std::sync::Arc::ptr_eq(&e.columns, columns) {
                e.columns = columns.clone();
            }
            e.values.clear();
            match r.get_ref(10)? {
                rusqlite::types::ValueRef::Blob(b) => e.values.extend_from_slice(b),
                // Ledgers written before the compact encoding hold a JSON array.
                rusqlite::types::ValueRef::Text(t) => {
                    let json: Vec<String> =
                        serde_json::from_slice(t).context("ledger: bad event attributes")?;
                    for x in &json {
                        attrs::push(&mut e.values, x);
                    }
                }
                _ => {}
            }
        }
        out.truncate(n);
        Ok(())
    }

    /// Events after `after` in ledger order, at most `limit`, as owned values.
    pub(crate) fn events_after(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.owned_events_after(after, limit, &mut None)?
            .iter()
            .map(|e| Ok(e.view()?.to_stored()))
            .collect()
    }

    /// Whether any event comes after `after` (without counting them: that reads them all).
    pub(crate) fn any_event_after(&self, after: i64) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM events WHERE id > ?1)",
            [after],
            |r| r.get::<_, bool>(0),
        )?)
    }

    pub(crate) fn count_events_after(&self, after: i64) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM events WHERE id > ?1", [after], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }
}

const EVENTS_AFTER: &str =
    "SELECT e.id, e.event_key, e.activity_id, e.previous_state, e.state, e.updated_at,
            r.name, e.row, e.itsm_number, e.kind, e.attrs, r.columns, e.report_id
     FROM events e JOIN reports r ON r.id = e.report_id
     WHERE e.id > ?1 ORDER BY e.id LIMIT ?2";

/// An event borrowed from an [`OwnedEvent`], its values decoded.
pub(crate) struct EventView<'a> {
    pub(crate) id: i64,
    pub(crate) key: &'a str,
    pub(crate) activity_id: &'a str,
    pub(crate) previous_state: Option<State>,
    pub(crate) state: State,
    pub(crate) updated_at: i64,
    pub(crate) report: &'a str,
    pub(crate) row: u64,
    pub(crate) itsm_number: &'a str,
    pub(crate) kind: &'a str,
    /// Names of the schema fields, then of the extra columns; `values` in the same order.
    pub(crate) fields: &'a [String],
    pub(crate) extras: &'a [String],
    pub(crate) values: Vec<&'a str>,
}

/// An event copied out of the ledger, to hand to another thread; [`OwnedEvent::view`]
/// borrows it back as an [`EventView`].
pub(crate) struct OwnedEvent {
    id: i64,
    key: String,
    activity_id: String,
    previous_state: Option<State>,
    state: State,
    updated_at: i64,
    report: std::sync::Arc<str>,
    row: u64,
    itsm_number: String,
    kind: String,
    columns: std::sync::Arc<Columns>,
    /// The values in the ledger's attribute encoding.
    values: Vec<u8>,
}

impl OwnedEvent {
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// The names of its report's columns (shared by the report's events).
    pub(crate) fn columns(&self) -> &std::sync::Arc<Columns> {
        &self.columns
    }

    pub(crate) fn view(&self) -> Result<EventView<'_>> {
        Ok(EventView {
            id: self.id,
            key: &self.key,
            activity_id: &self.activity_id,
            previous_state: self.previous_state,
            state: self.state,
            updated_at: self.updated_at,
            report: &self.report,
            row: self.row,
            itsm_number: &self.itsm_number,
            kind: &self.kind,
            fields: &self.columns.fields,
            extras: &self.columns.extras,
            values: attrs::decode(&self.values)?,
        })
    }
}

impl EventView<'_> {
    pub(crate) fn to_stored(&self) -> StoredEvent {
        let names = self.fields.iter().chain(self.extras);
        StoredEvent {
            id: self.id,
            key: self.key.to_string(),
            activity_id: self.activity_id.to_string(),
            previous_state: self.previous_state,
            state: self.state,
            updated_at: self.updated_at,
            report: self.report.to_string(),
            row: self.row,
            itsm_number: self.itsm_number.to_string(),
            kind: self.kind.to_string(),
            extra_from: self.fields.len(),
            attrs: names
                .cloned()
                .zip(self.values.iter().map(|v| v.to_string()))
                .collect(),
        }
    }
}

/// The names of the values an event's `attrs` holds, stored once per report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Columns {
    pub(crate) fields: Vec<String>,
    pub(crate) extras: Vec<String>,
}

/// Counts a report's processing ends with.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReportCounts {
    pub(crate) rows: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
    pub(crate) skipped: u64,
    pub(crate) unchanged: u64,
    pub(crate) stale: u64,
    pub(crate) events: u64,
    pub(crate) warnings: u64,
}

/// The open transaction of one report. Dropped without [`ReportWriter::commit`], it rolls
/// everything back.
/// An Activity first seen in this report, waiting to be inserted in ID order.
struct Fresh {
    id: String,
    state: State,
    updated_at: i64,
    event_id: i64,
    itsm_number: Option<String>,
}

const FRESH_CHUNK: usize = 65_536;

pub(crate) struct ReportWriter<'c> {
    conn: &'c Connection,
    fresh: RefCell<Vec<Fresh>>,
    /// The statement every event goes through, prepared once per report.
    insert_event_stmt: RefCell<Option<rusqlite::Statement<'c>>>,
    /// When the report started (events' `created_at`).
    now: i64,
    index: &'c RefCell<Option<ActivityIndex>>,
    /// The index is out with the triage (see [`ReportWriter::take_index`]).
    index_out: std::cell::Cell<bool>,
    /// The index disagreed with `activities` (see [`ReportWriter::distrust_index`]).
    index_distrusted: std::cell::Cell<bool>,
    pub(crate) report_id: i64,
    /// Events with ids from here on were created by this report.
    pub(crate) first_event: i64,
    /// Events with ids from here on were created by this run.
    pub(crate) run_first_event: i64,
    run_id: i64,
    /// The id the next event of this report takes.
    next_event: std::cell::Cell<i64>,
    done: bool,
}

impl ReportWriter<'_> {
    /// The generation this report writes into the index (wraps; a stale match only costs a
    /// lookup in `activities`).
    pub(crate) fn generation(&self) -> u8 {
        (self.report_id & 0xff) as u8
    }

    /// Hands the Activity index over to the report's triage, which keeps it up to date
    /// while the rows are read (see `plan::Triage`). Give it back with
    /// [`ReportWriter::restore_index`]; a report committed without it marks the persisted
    /// index out of date, to be rebuilt from `activities`.
    pub(crate) fn take_index(&self) -> Result<ActivityIndex> {
        self.index_out.set(true);
        match self.index.borrow_mut().take() {
            Some(idx) => Ok(idx),
            None => ActivityIndex::load(self.conn),
        }
    }

    /// The index was found out of step with `activities` (a ledger edited by hand): at
    /// commit it is dropped and marked for a rebuild from `activities`.
    pub(crate) fn distrust_index(&self) {
        self.index_distrusted.set(true);
    }

    /// Judges the rows a two-pass read set aside, one index part at a time, saving each
    /// part in this report's transaction (see [`crate::deferred`]). An index held in memory
    /// is dropped: its parts change under it.
    pub(crate) fn settle(&self, deferred: Deferred, resend: bool) -> Result<Settled> {
        *self.index.borrow_mut() = None;
        deferred.settle(self.conn, self.generation(), resend)
    }

    /// The bytes of the persisted Activity index's parts.
    pub(crate) fn index_bytes(&self) -> Result<u64> {
        index::stored_bytes(self.conn)
    }

    pub(crate) fn restore_index(&self, idx: ActivityIndex) {
        *self.index.borrow_mut() = Some(idx);
        self.index_out.set(false);
    }

    pub(crate) fn lookup(&self, activity_id: &str) -> Result<Option<Known>> {
        self.flush_fresh()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT state, updated_at, event_id, events, itsm_number FROM activities WHERE activity_id = ?1",
        )?;
        let known = stmt
            .query_row([activity_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })
            .optional()?;
        match known {
            None => Ok(None),
            Some((code, updated_at, event_id, events, itsm_number)) => Ok(Some(Known {
                state: State::from_code(code).context("ledger: bad state code")?,
                updated_at,
                event_id,
                events,
                itsm_number,
            })),
        }
    }

    pub(crate) fn own_event(&self, event_id: i64) -> Result<OwnEvent> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT previous_state, prev_event_id, kind FROM events WHERE id = ?1",
        )?;
        let (prev, prev_event_id, kind): (Option<i64>, Option<i64>, String) =
            stmt.query_row([event_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(OwnEvent {
            id: event_id,
            previous_state: prev.and_then(State::from_code),
            prev_event_id,
            resend: kind == "resend",
        })
    }

    /// The encoded attributes, report and row of an event, to re-send it.
    pub(crate) fn event_payload(&self, event_id: i64) -> Result<(Vec<u8>, i64, u64, String)> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT attrs, report_id, row, itsm_number FROM events WHERE id = ?1",
        )?;
        Ok(stmt.query_row([event_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64, r.get(3)?))
        })?)
    }

    /// Takes the next event id (ids follow the report's rows; an id taken for an event
    /// that is then not written stays unused).
    pub(crate) fn reserve_event_id(&self) -> i64 {
        let id = self.next_event.get();
        self.next_event.set(id + 1);
        id
    }

    /// Writes an event under the next id.
    pub(crate) fn insert_event(&self, e: &NewEvent<'_>, report_id: i64) -> Result<i64> {
        let id = self.reserve_event_id();
        self.insert_event_as(id, e, report_id)?;
        Ok(id)
    }

    /// Writes an event under an id taken with [`ReportWriter::reserve_event_id`].
    pub(crate) fn insert_event_as(&self, id: i64, e: &NewEvent<'_>, report_id: i64) -> Result<()> {
        let mut slot = self.insert_event_stmt.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.conn.prepare(
                "INSERT INTO events (id, event_key, activity_id, previous_state, state, updated_at, report_id, row,
                                     itsm_number, attrs, prev_event_id, kind, run_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?);
        }
        let stmt = slot.as_mut().expect("prepared above");
        stmt.execute(params![
            id,
            e.key,
            e.activity_id,
            e.previous_state.map(State::code),
            e.state.code(),
            e.updated_at,
            report_id,
            e.row as i64,
            e.itsm_number,
            e.attrs,
            e.prev_event_id,
            e.kind,
            self.run_id,
            self.now
        ])?;
        Ok(())
    }

    /// Rewrites an event this report created, for a later row of the same Activity.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn amend_event(
        &self,
        id: i64,
        key: &str,
        state: State,
        updated_at: i64,
        row: u64,
        itsm: &str,
        attrs: &[u8],
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE events SET event_key = ?2, state = ?3, updated_at = ?4, row = ?5, itsm_number = ?6, attrs = ?7,
                    report_id = ?8
                 WHERE id = ?1",
            )?
            .execute(params![id, key, state.code(), updated_at, row as i64, itsm, attrs, self.report_id])?;
        Ok(())
    }

    pub(crate) fn delete_event(&self, id: i64) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM events WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    /// Records an Activity the ledger did not know. Inserts are buffered and written in
    /// ID order, a chunk at a time: a B-tree takes sorted inserts far faster than random
    /// ones. The buffer is written before any look-up in `activities` and before commit.
    pub(crate) fn add_activity(
        &self,
        activity_id: &str,
        state: State,
        updated_at: i64,
        event_id: i64,
        itsm_number: Option<&str>,
    ) -> Result<()> {
        let full = {
            let mut fresh = self.fresh.borrow_mut();
            fresh.push(Fresh {
                id: activity_id.to_string(),
                state,
                updated_at,
                event_id,
                itsm_number: itsm_number.map(str::to_string),
            });
            fresh.len() >= FRESH_CHUNK
        };
        if full {
            self.flush_fresh()?;
        }
        Ok(())
    }

    /// Writes the buffered new Activities if there are at least `min`.
    pub(crate) fn flush_fresh_from(&self, min: usize) -> Result<()> {
        if self.fresh.borrow().len() >= min {
            self.flush_fresh()?;
        }
        Ok(())
    }

    fn flush_fresh(&self) -> Result<()> {
        let mut fresh = std::mem::take(&mut *self.fresh.borrow_mut());
        if fresh.is_empty() {
            return Ok(());
        }
        fresh.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO activities (activity_id, state, updated_at, report_id, event_id, events, itsm_number)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
        )?;
        for a in &fresh {
            stmt.execute(params![
                a.id,
                a.state.code(),
                a.updated_at,
                self.report_id,
                a.event_id,
                a.itsm_number
            ])?;
        }
        fresh.clear();
        *self.fresh.borrow_mut() = fresh;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put_activity(
        &self,
        activity_id: &str,
        state: State,
        updated_at: i64,
        event_id: Option<i64>,
        events: i64,
        itsm_number: Option<&str>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO activities (activity_id, state, updated_at, report_id, event_id, events, itsm_number)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(activity_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at,
                    report_id = excluded.report_id, event_id = excluded.event_id, events = excluded.events,
                    itsm_number = COALESCE(excluded.itsm_number, activities.itsm_number)",
            )?
            .execute(params![activity_id, state.code(), updated_at, self.report_id, event_id, events, itsm_number])?;
        Ok(())
    }

    /// Records that a later report saw the Activity unchanged (stale checks compare to this).
    pub(crate) fn touch_activity(&self, activity_id: &str, updated_at: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE activities SET updated_at = MAX(updated_at, ?2), report_id = ?3 WHERE activity_id = ?1",
            )?
            .execute(params![activity_id, updated_at, self.report_id])?;
        Ok(())
    }

    pub(crate) fn reject(
        &self,
        file: &str,
        row: u64,
        column: &str,
        reason: &str,
        raw: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO rejects (report_id, file, row, col, reason, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![self.report_id, file, row as i64, column, reason, raw])?;
        Ok(())
    }

    /// Writes the report's counts and commits everything it did.
    pub(crate) fn commit(
        mut self,
        counts: &ReportCounts,
        columns: &Columns,
        sha256: &str,
    ) -> Result<()> {
        self.flush_fresh()?;
        self.conn.execute(
            "UPDATE reports SET columns = ?2, rows = ?3, accepted = ?4, rejected = ?5, skipped = ?6,
                unchanged = ?7, stale = ?8, events = ?9, warnings = ?10, sha256 = ?11 WHERE id = ?1",
            params![
                self.report_id,
                serde_json::to_string(columns)?,
                counts.rows,
                counts.accepted,
                counts.rejected,
                counts.skipped,
                counts.unchanged,
                counts.stale,
                counts.events,
                counts.warnings,
                sha256
            ],
        )?;
        if self.index_out.get() || self.index_distrusted.get() {
            index::invalidate(self.conn)?;
            *self.index.borrow_mut() = None;
        } else if let Some(idx) = self.index.borrow_mut().as_mut() {
            let started = std::time::Instant::now();
            idx.save(self.conn)?;
            tracing::debug!(ms = started.elapsed().as_millis() as u64, "index saved");
        }
        let started = std::time::Instant::now();
        self.conn.execute_batch("COMMIT")?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "transaction committed"
        );
        self.done = true;
        self.restore_autocheckpoint();
        Ok(())
    }

    fn restore_autocheckpoint(&self) {
        let _ = self.conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES};"
        ));
    }
}

impl Drop for ReportWriter<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.restore_autocheckpoint();
            // The in-memory index holds the rolled-back changes: reload it next time.
            *self.index.borrow_mut() = None;
        }
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

    #[test]
    fn a_file_in_flight_is_read_as_recorded_or_from_an_earlier_releases_name() {
        let f = InFlight::parse("20:0123456789abcdef:4096:ev-000000000011-000000000020.csv");
        assert_eq!(
            (f.name.as_str(), f.last, f.ident.as_deref(), f.size),
            (
                "ev-000000000011-000000000020.csv",
                Some(20),
                Some("0123456789abcdef"),
                Some(4096)
            )
        );
        let f = InFlight::parse("20:ev-000000000011-000000000020.csv");
        assert_eq!(
            (f.name.as_str(), f.last, f.ident, f.size),
            ("ev-000000000011-000000000020.csv", Some(20), None, None)
        );
        for (name, last) in [
            ("tangoe-events-000000000001-000000000010.jsonl", Some(10)),
            ("tangoe-events-000000000001-000000000010-2.jsonl", Some(10)),
            ("my-prefix-000000000001-000000000010.csv", Some(10)),
            ("odd-name.jsonl", None),
        ] {
            let f = InFlight::parse(name);
            assert_eq!(
                (f.name.as_str(), f.last, f.ident, f.size),
                (name, last, None, None)
            );
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
