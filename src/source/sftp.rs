//! An SFTP drop folder: the reports are the regular files of `remote_dir` (not recursive)
//! whose names match the patterns.
//!
//! Invariants:
//! - a remote name never writes outside `download_dir`: names holding `/`, `\`, `..` or
//!   control characters are skipped with a warning;
//! - a file still being uploaded is left for a later run (`min_age`, `settle`, `done_suffix`);
//! - a download streams to a hidden temporary file with a large read buffer (libssh2 keeps
//!   4 × the caller's buffer in flight), is hashed on the way, checked against the listed
//!   size and only then renamed into the archive: no report is ever held whole in memory;
//! - a dropped connection is retried (3 tries, resuming where the download stopped);
//! - nothing remote is changed except by [`Source::after`], which the pipeline calls only
//!   after the report's ledger commit, and never in a dry run.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use globset::GlobSet;
use sha2::{Digest, Sha256};

use super::archive::Archive;
use super::{Fetched, Listed, Source, hash_file};
use crate::sftp::config::{After, SftpSourceConfig};
use crate::sftp::{Connection, Endpoint, Final, is_final, is_missing, remote_path, with_retries};

/// Tries per remote operation (the first and two retries).
const TRIES: u32 = 3;
/// The read buffer: libssh2 keeps up to 4 × this in flight (it caps read-ahead at 8 MiB).
const READ_BUFFER: usize = 2 << 20;
/// Reports at least this large are downloaded in byte ranges over `connections`
/// connections at once (smaller ones over one).
const SEGMENTED_MIN: u64 = 64 << 20;

/// A listed remote file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime: i64,
}

/// One listing of `remote_dir`.
struct RemoteListing {
    /// The regular files whose names are safe and match the patterns.
    files: Vec<(String, Stat)>,
    /// Every name in the folder (done markers are looked up here).
    names: HashSet<String>,
}

pub(crate) struct SftpSource {
    cfg: SftpSourceConfig,
    patterns: GlobSet,
    backfill: bool,
    dry_run: bool,
    conn: Option<Connection>,
    archive: Archive,
    /// Where a dry run downloads to; removed with the source.
    scratch: Option<tempfile::TempDir>,
    /// The reports of the last remote listing.
    remote: HashMap<String, Stat>,
}

/// Why a remote name is unsafe to use as a local file name, if it is.
fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.contains('/') || name.contains('\\') {
        Some("it holds a path separator")
    } else if name.contains("..") {
        Some("it holds \"..\"")
    } else if name.chars().any(char::is_control) {
        Some("it holds control characters")
    } else {
        None
    }
}

impl SftpSource {
    pub(crate) fn new(
        cfg: SftpSourceConfig,
        patterns: GlobSet,
        backfill: bool,
        dry_run: bool,
    ) -> Self {
        let archive = Archive::new(cfg.download_dir.clone());
        SftpSource {
            cfg,
            patterns,
            backfill,
            dry_run,
            conn: None,
            archive,
            scratch: None,
            remote: HashMap::new(),
        }
    }

    fn where_(&self) -> String {
        format!(
            "sftp://{}/{}",
            self.cfg.endpoint.label(),
            self.cfg.remote_dir.trim_start_matches('/')
        )
    }

    fn connection(&mut self) -> Result<&Connection> {
        if self.conn.is_none() {
            self.conn = Some(self.cfg.endpoint.connect()?);
        }
        Ok(self.conn.as_ref().expect("set above"))
    }

    /// Runs `op` on a live connection, reconnecting and retrying when it fails.
    fn remote_op<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&Connection) -> Result<T>,
    ) -> Result<T> {
        with_retries(what, TRIES, |_| {
            let conn = self.connection()?;
            let r = op(conn);
            if r.is_err() {
                self.conn = None;
            }
            r
        })
    }

    /// Every name in `remote_dir` with its attributes (names as the server sent them).
    fn read_dir(&mut self) -> Result<Vec<(Vec<u8>, ssh2::FileStat)>> {
        let dir = self.cfg.remote_dir.clone();
        let what = format!("listing {}", self.where_());
        self.remote_op(&what, |c| {
            let mut handle = c
                .sftp()
                .opendir(std::path::Path::new(&dir))
                .with_context(|| format!("cannot open the remote folder {dir}"))?;
            let mut out = Vec::new();
            loop {
                match handle.readdir() {
                    Ok((name, stat)) => {
                        out.push((name.into_os_string().into_encoded_bytes(), stat))
                    }
                    Err(e) if e.code() == ssh2::ErrorCode::Session(-16) => break,
                    Err(e) => {
                        return Err(
                            anyhow!(e).context(format!("cannot list the remote folder {dir}"))
                        );
                    }
                }
            }
            Ok(out)
        })
        .with_context(|| format!("cannot list {}", self.where_()))
    }

    /// The regular files with safe names, and the set of all names (for done markers).
    fn list_remote(&mut self) -> Result<RemoteListing> {
        let mut files = Vec::new();
        let mut names = HashSet::new();
        for (raw, stat) in self.read_dir()? {
            if raw == b"." || raw == b".." {
                continue;
            }
            let Ok(name) = String::from_utf8(raw.clone()) else {
                tracing::warn!(file = %String::from_utf8_lossy(&raw), "skipped a remote file: its name is not valid UTF-8");
                continue;
            };
            names.insert(name.clone());
            if let Some(why) = unsafe_name(&name) {
                tracing::warn!(file = ?name, "skipped a remote file: {why}, so it cannot be saved safely");
                continue;
            }
            if name.starts_with('.') || !self.patterns.is_match(&name) {
                continue;
            }
            if !stat.is_file() {
                tracing::warn!(file = %name, "skipped: not a regular file on the server");
                continue;
            }
            let (Some(size), Some(mtime)) = (stat.size, stat.mtime) else {
                tracing::warn!(file = %name, "skipped: the server gave no size or modification time");
                continue;
            };
            files.push((
                name,
                Stat {
                    size,
                    mtime: mtime as i64,
                },
            ));
        }
        Ok(RemoteListing { files, names })
    }

    /// A dry run's downloads go to a temporary folder, removed when the run ends.
    fn scratch_archive(&mut self) -> Result<Option<Archive>> {
        if !self.dry_run {
            return Ok(None);
        }
        if self.scratch.is_none() {
            self.scratch = Some(
                tempfile::Builder::new()
                    .prefix("tangoe-ingest-dry-download-")
                    .tempdir()?,
            );
        }
        Ok(Some(Archive::new(
            self.scratch
                .as_ref()
                .expect("set above")
                .path()
                .to_path_buf(),
        )))
    }

    /// Downloads one report, resuming after a dropped connection.
    fn download(&mut self, report: &Listed) -> Result<Fetched> {
        let started = Instant::now();
        let mut scratch = self.scratch_archive()?;
        let part = match &scratch {
            Some(a) => a.part_file()?,
            None => self.archive.part_file()?,
        };
        let path = remote_path(&self.cfg.remote_dir, &report.name);
        let expected = Stat {
            size: report.size,
            mtime: report.mtime,
        };
        let (done, sha256) = if self.cfg.connections > 1 && report.size >= SEGMENTED_MIN {
            self.download_ranges(&report.name, &path, expected, part.as_file())?
        } else {
            self.download_whole(&report.name, &path, expected, part.as_file())?
        };
        if done != expected.size {
            bail!(
                "{} was listed with {} bytes but {done} bytes arrived: the file changed while it was read; \
                 it will be tried again next run",
                report.name,
                expected.size
            );
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            bytes = done,
            seconds = format!("{secs:.2}"),
            mb_per_s = format!("{:.1}", done as f64 / 1e6 / secs.max(1e-9)),
            "downloaded"
        );
        let dest = match &mut scratch {
            Some(a) => a.put(part, &report.name, &sha256, report.mtime)?,
            None => self
                .archive
                .put(part, &report.name, &sha256, report.mtime)?,
        };
        Ok(Fetched {
            path: dest,
            sha256: Some(sha256),
        })
    }

    /// Downloads the file over one connection into `file`, resuming after a dropped
    /// connection; returns the bytes that arrived and their SHA-256.
    fn download_whole(
        &mut self,
        name: &str,
        path: &Path,
        expected: Stat,
        file: &std::fs::File,
    ) -> Result<(u64, String)> {
        let mut spool = Spool::start(file.try_clone()?);
        let mut done: u64 = 0;
        let what = format!("downloading {name}");
        let read = with_retries(&what, TRIES, |attempt| {
            let result = (|| -> Result<()> {
                let conn = self.connection()?;
                let mut remote = conn
                    .sftp()
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                if done > 0 {
                    // A retry: only go on if the file is still the one listed.
                    let st = remote.stat().context("cannot stat the remote file")?;
                    check_unchanged(&st, expected, name)?;
                    tracing::info!(offset = done, attempt, "resuming the download");
                    remote.seek(SeekFrom::Start(done))?;
                }
                loop {
                    let mut buf = spool.buffer()?;
                    let n = match remote.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) => {
                            spool.give_back(buf);
                            return Err(
                                anyhow!(e).context(format!("reading {name} from the server"))
                            );
                        }
                    };
                    if n == 0 {
                        spool.give_back(buf);
                        break;
                    }
                    spool.write(buf, n)?;
                    done += n as u64;
                    if done > expected.size {
                        break;
                    }
                }
                Ok(())
            })();
            if result.is_err() {
                self.conn = None;
            }
            result
        });
        // The local side's error, if any, is the real cause.
        let sha256 = spool.finish()?;
        read?;
        Ok((done, sha256))
    }

    /// Downloads the file in `connections` byte ranges at once, each over its own SSH
    /// connection (verified and logged in like any other), written into `file` at their
    /// offsets; a hashing thread follows the ranges in order, reading back what has been
    /// written, so the SHA-256 is the whole file's. Returns the bytes that arrived (the
    /// last range reads to the end of the file, so a file that grew shows) and the hash.
    fn download_ranges(
        &mut self,
        name: &str,
        path: &Path,
        expected: Stat,
        file: &std::fs::File,
    ) -> Result<(u64, String)> {
        let n = self.cfg.connections;
        let ranges: Vec<(u64, u64)> = (0..n as u64)
            .map(|i| {
                (
                    expected.size * i / n as u64,
                    expected.size * (i + 1) / n as u64,
                )
            })
            .collect();
        let progress = Progress::new(n);
        let queue = Mutex::new((0..n).collect::<VecDeque<usize>>());
        let job = RangeJob {
            endpoint: &self.cfg.endpoint,
            name,
            path,
            expected,
            file,
            ranges: &ranges,
            progress: &progress,
            queue: &queue,
        };
        let first = self.conn.take();
        let (ends, hashed) = std::thread::scope(|s| {
            let hasher = s.spawn(|| progress.hash(file, &ranges));
            let mut first = Some(first);
            let workers: Vec<_> = (0..n)
                .map(|w| {
                    let conn = first.take().flatten();
                    let job = &job;
                    s.spawn(move || job.work(w, conn))
                })
                .collect();
            let ends: Vec<_> = workers
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| (None, WorkerEnd::Failed(Spool::stopped())))
                })
                .collect();
            progress.close();
            let hashed = hasher.join().unwrap_or_else(|_| Err(Spool::stopped()));
            (ends, hashed)
        });
        let mut failed = None;
        let mut no_connection = None;
        for (conn, end) in ends {
            if self.conn.is_none() {
                self.conn = conn;
            }
            match end {
                WorkerEnd::Done | WorkerEnd::Stopped => {}
                WorkerEnd::NoConnection(e) => {
                    no_connection.get_or_insert(e);
                }
                WorkerEnd::Failed(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if !queue.lock().map(|q| q.is_empty()).unwrap_or(false) {
            return Err(no_connection.unwrap_or_else(Spool::stopped));
        }
        let sha256 = hashed?;
        Ok((progress.total(), sha256))
    }

    fn prune(&mut self) {
        self.archive.remove_partials();
        match self.archive.prune(self.cfg.keep) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                reports = n,
                "pruned reports older than `keep` from the local archive"
            ),
            Err(e) => tracing::warn!("cannot prune the local archive: {e:#}"),
        }
    }
}

/// How one connection of a download in ranges ended.
enum WorkerEnd {
    /// No range is left to take.
    Done,
    /// An extra connection could not be opened: the others take its ranges.
    NoConnection(anyhow::Error),
    /// A range failed for good (after its retries): the download fails.
    Failed(anyhow::Error),
    /// Stopped because another range failed.
    Stopped,
}

/// What the connections of a download in ranges share.
struct RangeJob<'a> {
    endpoint: &'a Endpoint,
    name: &'a str,
    path: &'a Path,
    expected: Stat,
    file: &'a std::fs::File,
    /// `(start, end)` of each range; the last one reads on to the end of the file.
    ranges: &'a [(u64, u64)],
    progress: &'a Progress,
    /// The ranges no connection has taken yet.
    queue: &'a Mutex<VecDeque<usize>>,
}

impl RangeJob<'_> {
    /// One connection's work: takes ranges from the queue until none is left. `conn` is
    /// the source's open connection, for the first worker.
    fn work(&self, w: usize, mut conn: Option<Connection>) -> (Option<Connection>, WorkerEnd) {
        if conn.is_none() {
            let opened = if w == 0 {
                with_retries("connecting", TRIES, |_| self.endpoint.connect())
            } else {
                self.endpoint.connect()
            };
            match opened {
                Ok(c) => conn = Some(c),
                Err(e) if w > 0 && !is_final(&e) => {
                    tracing::warn!(
                        "cannot open SSH connection {} of {} for {}, the others take its part: {e:#}",
                        w + 1,
                        self.ranges.len(),
                        self.name
                    );
                    return (None, WorkerEnd::NoConnection(e));
                }
                Err(e) => {
                    let first = self.progress.fail();
                    return (
                        None,
                        if first {
                            WorkerEnd::Failed(e)
                        } else {
                            WorkerEnd::Stopped
                        },
                    );
                }
            }
        }
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            if self.progress.failed() {
                return (conn, WorkerEnd::Stopped);
            }
            let Some(i) = self.queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                return (conn, WorkerEnd::Done);
            };
            if let Err(e) = self.fetch_range(i, &mut conn, &mut buf) {
                let first = self.progress.fail();
                return (
                    conn,
                    if first {
                        WorkerEnd::Failed(e)
                    } else {
                        WorkerEnd::Stopped
                    },
                );
            }
        }
    }

    /// Downloads range `i` into the local file at its offsets, resuming where it stopped
    /// after a dropped connection.
    fn fetch_range(&self, i: usize, conn: &mut Option<Connection>, buf: &mut [u8]) -> Result<()> {
        let (start, end) = self.ranges[i];
        let last = i + 1 == self.ranges.len();
        let expected = self.expected;
        let name = self.name;
        let mut done: u64 = 0;
        let what = format!("downloading {name} (bytes {start}..{end})");
        with_retries(&what, TRIES, |attempt| {
            let result = (|| -> Result<()> {
                if conn.is_none() {
                    *conn = Some(self.endpoint.connect()?);
                }
                let c = conn.as_ref().expect("set above");
                let mut remote = c
                    .sftp()
                    .open(self.path)
                    .with_context(|| format!("cannot open {}", self.path.display()))?;
                if done > 0 {
                    // A retry: only go on if the file is still the one listed.
                    let st = remote.stat().context("cannot stat the remote file")?;
                    check_unchanged(&st, expected, name)?;
                    tracing::info!(offset = start + done, attempt, "resuming the download");
                }
                if start + done > 0 {
                    remote.seek(SeekFrom::Start(start + done))?;
                }
                loop {
                    if self.progress.failed() {
                        bail!(Final("stopped".into()));
                    }
                    let pos = start + done;
                    let want = if last {
                        buf.len()
                    } else {
                        // libssh2 requests up to 4 × `want` ahead: taper off so that it
                        // does not fetch much of the next range.
                        let rest = end - pos;
                        if rest == 0 {
                            break;
                        }
                        rest.min((rest / 4).max(64 << 10)).min(buf.len() as u64) as usize
                    };
                    let n = remote.read(&mut buf[..want]).map_err(|e| {
                        anyhow!(e).context(format!("reading {name} from the server"))
                    })?;
                    if n == 0 {
                        break;
                    }
                    self.file
                        .write_all_at(&buf[..n], pos)
                        .map_err(|e| anyhow!(Final(format!("cannot write the download: {e}"))))?;
                    done += n as u64;
                    self.progress.advance(i, done);
                    if last && pos + n as u64 > expected.size {
                        break;
                    }
                }
                Ok(())
            })();
            if result.is_err() {
                *conn = None;
            }
            result
        })?;
        self.progress.finish(i);
        Ok(())
    }
}

/// How far each range of a download in ranges has been written; the hashing thread
/// follows it.
struct Progress {
    state: Mutex<ProgressState>,
    changed: Condvar,
    failed: AtomicBool,
}

struct ProgressState {
    /// Bytes written from each range's start, and whether the range is complete.
    ranges: Vec<(u64, bool)>,
    /// No connection works any more.
    closed: bool,
}

impl Progress {
    fn new(n: usize) -> Progress {
        Progress {
            state: Mutex::new(ProgressState {
                ranges: vec![(0, false); n],
                closed: false,
            }),
            changed: Condvar::new(),
            failed: AtomicBool::new(false),
        }
    }

    fn update(&self, f: impl FnOnce(&mut ProgressState)) {
        if let Ok(mut st) = self.state.lock() {
            f(&mut st);
        }
        self.changed.notify_all();
    }

    fn advance(&self, i: usize, done: u64) {
        self.update(|st| st.ranges[i].0 = done);
    }

    fn finish(&self, i: usize) {
        self.update(|st| st.ranges[i].1 = true);
    }

    fn close(&self) {
        self.update(|st| st.closed = true);
    }

    /// Marks the download failed; true for the first failure (the cause).
    fn fail(&self) -> bool {
        let first = !self.failed.swap(true, Ordering::SeqCst);
        self.update(|_| {});
        first
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn total(&self) -> u64 {
        self.state
            .lock()
            .map(|st| st.ranges.iter().map(|r| r.0).sum())
            .unwrap_or(0)
    }

    /// The SHA-256 of the ranges in order, read back from `file` as they are written.
    fn hash(&self, file: &std::fs::File, ranges: &[(u64, u64)]) -> Result<String> {
        let r = self.hash_inner(file, ranges);
        if r.is_err() {
            self.fail();
        }
        r
    }

    fn hash_inner(&self, file: &std::fs::File, ranges: &[(u64, u64)]) -> Result<String> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; READ_BUFFER];
        for (i, &(start, _)) in ranges.iter().enumerate() {
            let mut pos = 0u64;
            loop {
                let (written, complete) = {
                    let mut st = self.state.lock().map_err(|_| Spool::stopped())?;
                    loop {
                        let (w, c) = st.ranges[i];
                        if w > pos || c {
                            break (w, c);
                        }
                        if st.closed || self.failed() {
                            return Err(Spool::stopped());
                        }
                        st = self.changed.wait(st).map_err(|_| Spool::stopped())?;
                    }
                };
                while pos < written {
                    let k = (written - pos).min(buf.len() as u64) as usize;
                    file.read_exact_at(&mut buf[..k], start + pos)
                        .map_err(|e| {
                            anyhow!(Final(format!("cannot read back the download: {e}")))
                        })?;
                    hasher.update(&buf[..k]);
                    pos += k as u64;
                }
                if complete {
                    break;
                }
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// Fails for good when the remote file is no longer the one listed.
fn check_unchanged(st: &ssh2::FileStat, expected: Stat, name: &str) -> Result<()> {
    if st.size != Some(expected.size) || st.mtime.map(|m| m as i64) != Some(expected.mtime) {
        bail!(Final(format!(
            "{name} changed on the server while it was downloaded"
        )));
    }
    Ok(())
}

/// The local end of a download: a thread that writes and hashes the chunks
/// the SFTP reader hands it, so that the reader's thread (which decrypts) never waits for
/// the disk or the hash. Buffers go round between the two: memory stays at [`SPOOL_BUFFERS`]
/// read buffers whatever the file's size.
struct Spool {
    to_writer: Option<SyncSender<(Vec<u8>, usize)>>,
    returned: Receiver<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    writer: Option<JoinHandle<Result<String>>>,
}

/// Read buffers in circulation per download.
const SPOOL_BUFFERS: usize = 3;

impl Spool {
    fn start(mut file: std::fs::File) -> Spool {
        let (to_writer, chunks) = sync_channel::<(Vec<u8>, usize)>(SPOOL_BUFFERS);
        let (give_back, returned) = channel::<Vec<u8>>();
        let writer = std::thread::spawn(move || -> Result<String> {
            let mut hasher = Sha256::new();
            for (buf, n) in chunks {
                file.write_all(&buf[..n])
                    .map_err(|e| anyhow!(Final(format!("cannot write the download: {e}"))))?;
                hasher.update(&buf[..n]);
                let _ = give_back.send(buf);
            }
            Ok(hex::encode(hasher.finalize()))
        });
        Spool {
            to_writer: Some(to_writer),
            returned,
            spare: (0..SPOOL_BUFFERS).map(|_| vec![0u8; READ_BUFFER]).collect(),
            writer: Some(writer),
        }
    }

    fn stopped() -> anyhow::Error {
        anyhow!(Final("the local copy of the download stopped".into()))
    }

    /// A free read buffer (waits for the writer to hand one back).
    fn buffer(&mut self) -> Result<Vec<u8>> {
        match self.spare.pop() {
            Some(b) => Ok(b),
            None => self.returned.recv().map_err(|_| Self::stopped()),
        }
    }

    fn give_back(&mut self, buf: Vec<u8>) {
        self.spare.push(buf);
    }

    /// Hands the first `n` bytes of `buf` to the writer.
    fn write(&mut self, buf: Vec<u8>, n: usize) -> Result<()> {
        let tx = self.to_writer.as_ref().ok_or_else(Self::stopped)?;
        tx.send((buf, n)).map_err(|_| Self::stopped())
    }

    /// Waits for everything handed over to be written; returns the content's SHA-256.
    fn finish(mut self) -> Result<String> {
        self.to_writer = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(Self::stopped()),
        }
    }
}

impl Source for SftpSource {
    fn list(&mut self) -> Result<Vec<Listed>> {
        if !self.dry_run {
            self.prune();
        }
        let RemoteListing { files, names } = self.list_remote()?;
        let now = chrono::Utc::now().timestamp();
        let min_age = self.cfg.min_age.as_secs() as i64;
        self.remote.clear();
        let mut out = Vec::new();
        for (name, st) in files {
            self.remote.insert(name.clone(), st);
            let mut deferred = None;
            if let Some(suffix) = &self.cfg.done_suffix
                && !names.contains(&format!("{name}{suffix}"))
            {
                deferred = Some(format!("waiting for its done marker {name}{suffix}"));
            } else if now - st.mtime < min_age {
                deferred = Some(format!(
                    "modified {}s ago, less than min_age ({}s): it may still be uploading",
                    (now - st.mtime).max(0),
                    min_age
                ));
            }
            out.push(Listed {
                name,
                size: st.size,
                mtime: st.mtime,
                deferred,
            });
        }
        if self.backfill {
            // Reports the site no longer has (deleted, moved, purged) come from the archive.
            let remote: HashSet<(String, u64, i64)> = out
                .iter()
                .map(|l| (l.name.clone(), l.size, l.mtime))
                .collect();
            let mut seen = HashSet::new();
            for e in self.archive.entries()? {
                if !self.patterns.is_match(&e.name) {
                    continue;
                }
                let key = (e.name.clone(), e.size, e.mtime);
                if !remote.contains(&key) && seen.insert(key) {
                    out.push(Listed {
                        name: e.name,
                        size: e.size,
                        mtime: e.mtime,
                        deferred: None,
                    });
                }
            }
        }
        tracing::info!(source = %self.where_(), files = self.remote.len(), "listed the SFTP folder");
        Ok(out)
    }

    fn settle(&mut self, listed: &mut [Listed], is_new: &dyn Fn(&Listed) -> bool) -> Result<()> {
        if self.cfg.settle.is_zero() {
            return Ok(());
        }
        let mut candidates = Vec::new();
        for (i, l) in listed.iter().enumerate() {
            if l.deferred.is_some() || !self.remote.contains_key(&l.name) || !is_new(l) {
                continue;
            }
            if self.archive.lookup(&l.name, l.size, l.mtime)?.is_some() {
                continue; // already downloaded whole once
            }
            candidates.push(i);
        }
        if candidates.is_empty() {
            return Ok(());
        }
        tracing::info!(
            files = candidates.len(),
            seconds = self.cfg.settle.as_secs_f64(),
            "waiting `settle` to list new files again"
        );
        std::thread::sleep(self.cfg.settle);
        let files = self.list_remote()?.files;
        let again: HashMap<String, Stat> = files.into_iter().collect();
        for i in candidates {
            let l = &mut listed[i];
            match again.get(&l.name) {
                None => {
                    l.deferred = Some(format!(
                        "disappeared within `settle` ({}s)",
                        self.cfg.settle.as_secs_f64()
                    ))
                }
                Some(st) if st.size != l.size || st.mtime != l.mtime => {
                    l.deferred = Some(format!(
                        "still changing: {} bytes (mtime {}) then {} bytes (mtime {}) `settle` later",
                        l.size, l.mtime, st.size, st.mtime
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn fetch(&mut self, report: &Listed) -> Result<Fetched> {
        if let Some(entry) = self
            .archive
            .lookup(&report.name, report.size, report.mtime)?
        {
            // Archive copies are not fsynced: check that this one is whole and unchanged.
            // (A dry run takes no lock: a real run may prune the copy meanwhile.)
            match hash_file(&entry.path) {
                Ok((sha256, _)) if sha256 == entry.sha256 => {
                    tracing::info!(file = %entry.path.display(), "taken from the local archive (not downloaded)");
                    return Ok(Fetched {
                        path: entry.path,
                        sha256: Some(sha256),
                    });
                }
                Err(e) if !entry.path.exists() => {
                    tracing::debug!(file = %entry.path.display(), "the archived copy is gone ({e:#}): downloading it");
                }
                Err(e) => return Err(e),
                Ok(_) => {
                    tracing::warn!(file = %entry.path.display(), "the archived copy is damaged: downloading it again");
                    // A dry run changes nothing, the archive included.
                    if !self.dry_run {
                        self.archive.discard(&entry);
                    }
                }
            }
        }
        if !self.remote.contains_key(&report.name) {
            bail!(
                "{} is neither on the server nor in the local archive",
                report.name
            );
        }
        self.download(report)
            .with_context(|| format!("cannot download {} from {}", report.name, self.where_()))
    }

    fn after(&mut self, report: &Listed) -> Result<()> {
        if self.dry_run || self.cfg.after == After::Leave {
            return Ok(());
        }
        match self.remote.get(&report.name) {
            Some(st) if st.size == report.size && st.mtime == report.mtime => {}
            _ => return Ok(()), // from the archive only: nothing on the server to clean up
        }
        let dir = self.cfg.remote_dir.clone();
        // The done marker first: should the report's own clean-up then fail, the report,
        // processed already, is cleaned up by the next run, while a marker left behind
        // would let the next upload of that name be taken before it is complete.
        let mut names = Vec::new();
        if let Some(suffix) = &self.cfg.done_suffix {
            names.push(format!("{}{suffix}", report.name));
        }
        names.push(report.name.clone());
        let after = self.cfg.after.clone();
        let what = match &after {
            After::Move(_) => format!("moving {}", report.name),
            _ => format!("deleting {}", report.name),
        };
        self.remote_op(&what, |c| {
            // The listing may be minutes old (deliveries ran since): only the file the
            // ledger holds is cleaned up. One replaced meanwhile is left, with its marker,
            // for the next run to read.
            let path = remote_path(&dir, &report.name);
            match c.sftp().stat(&path) {
                Ok(st)
                    if st.size != Some(report.size)
                        || st.mtime.map(|m| m as i64) != Some(report.mtime) =>
                {
                    return Err(anyhow::Error::new(Final(format!(
                        "{} changed on the server since it was listed: left for the next run",
                        path.display()
                    ))));
                }
                // Gone already: a try whose answer was lost, or someone else.
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            for n in &names {
                let from = remote_path(&dir, n);
                match &after {
                    After::Leave => {}
                    After::Delete => match c.sftp().unlink(&from) {
                        Err(e) if !is_missing(&e) => {
                            return Err(anyhow::Error::new(e)
                                .context(format!("cannot delete {}", from.display())));
                        }
                        _ => {}
                    },
                    After::Move(target) => {
                        let target_dir = if target.starts_with('/') {
                            PathBuf::from(target)
                        } else {
                            remote_path(&dir, target)
                        };
                        move_to(c, &from, &target_dir, n, report.mtime)?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// Moves `from` into `target_dir` (created if missing) as `name`; a name taken there by a
/// report of that name moved earlier is kept, and this one becomes `name.MTIME` (then
/// `name.MTIME-2`...). A file already gone is moved already.
fn move_to(c: &Connection, from: &Path, target_dir: &Path, name: &str, mtime: i64) -> Result<()> {
    let sftp = c.sftp();
    if sftp.stat(target_dir).is_err()
        && let Err(e) = sftp.mkdir(target_dir, 0o755)
        && sftp.stat(target_dir).is_err()
    {
        return Err(anyhow::Error::new(e)
            .context(format!("cannot create the folder {}", target_dir.display())));
    }
    let cannot = || format!("cannot move {} to {}", from.display(), target_dir.display());
    for k in 0..20 {
        let to = match k {
            0 => target_dir.join(name),
            1 => target_dir.join(format!("{name}.{mtime}")),
            _ => target_dir.join(format!("{name}.{mtime}-{k}")),
        };
        let Err(e) = sftp.rename(from, &to, None) else {
            return Ok(());
        };
        match sftp.stat(from) {
            Err(gone) if is_missing(&gone) => return Ok(()),
            _ => {}
        }
        if sftp.stat(&to).is_err() {
            // The name is free: the rename failed for another reason.
            return Err(anyhow::Error::new(e).context(cannot()));
        }
    }
    Err(anyhow::Error::new(Final(format!(
        "{}: 20 names for it are taken there",
        cannot()
    ))))
}
