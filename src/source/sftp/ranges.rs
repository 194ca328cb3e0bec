//! A large report downloaded in byte ranges, each over its own SSH connection (verified
//! and logged in like any other), written at its offsets into the same `.part` file while
//! a thread hashes the file in order as the ranges fill it.
//!
//! Invariant: the hash is the whole file's, in order; a range resumes on its own after a
//! dropped connection, and when one fails for good the others stop and the download fails.
//! An extra connection that cannot be opened is left out and the others take its ranges.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

use super::download::check_unchanged;
use super::spool::Spool;
use super::{READ_BUFFER, SftpSource, Stat, TRIES};
use crate::sftp::{Connection, Endpoint, Final, is_final, with_retries};

impl SftpSource {
    /// Downloads the file in `connections` byte ranges at once, each over its own SSH
    /// connection (verified and logged in like any other), written into `file` at their
    /// offsets; a hashing thread follows the ranges in order, reading back what has been
    /// written, so the SHA-256 is the whole file's. Returns the bytes that arrived (the
    /// last range reads to the end of the file, so a file that grew shows) and the hash.
    pub(super) fn download_ranges(
        &mut self,
        name: &str,
        path: &Path,
        expected: Stat,
        file: &std::fs::File,
        bar: &crate::progress::Bar,
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
            let hasher = s.spawn(|| progress.hash(file, &ranges, bar));
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
                let c = match conn.take() {
                    Some(c) => conn.insert(c),
                    None => conn.insert(self.endpoint.connect()?),
                };
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
                    crate::interrupt::check()?;
                    let n = remote.read(&mut buf[..want]).map_err(|e| {
                        c.io_error(e)
                            .context(format!("reading {name} from the server"))
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

    /// The SHA-256 of the ranges in order, read back from `file` as they are written; the
    /// bytes hashed are the download's progress on `bar`.
    fn hash(
        &self,
        file: &std::fs::File,
        ranges: &[(u64, u64)],
        bar: &crate::progress::Bar,
    ) -> Result<String> {
        let r = self.hash_inner(file, ranges, bar);
        if r.is_err() {
            self.fail();
        }
        r
    }

    fn hash_inner(
        &self,
        file: &std::fs::File,
        ranges: &[(u64, u64)],
        bar: &crate::progress::Bar,
    ) -> Result<String> {
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
                    bar.inc(k as u64);
                }
                if complete {
                    break;
                }
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }
}
