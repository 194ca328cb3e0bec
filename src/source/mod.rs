//! Report sources: `list()` the reports on offer and `fetch()` one to a local file.
//!
//! A source never decides what is new: the pipeline asks the ledger. Fetching yields a local
//! path; a download also yields the content's SHA-256, computed while streaming.

pub(crate) mod archive;
pub(crate) mod local;
pub(crate) mod sftp;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// A report as a listing shows it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) size: u64,
    /// Modification time, seconds since the epoch.
    pub(crate) mtime: i64,
    /// Why the report is left for a later run (it may still be uploading), if it is.
    pub(crate) deferred: Option<String>,
}

/// A report available as a local file.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) path: PathBuf,
    /// The content's SHA-256 when fetching computed it (a download); `None` for a file that
    /// is read in place: the pipeline hashes it while parsing it.
    pub(crate) sha256: Option<String>,
}

pub(crate) trait Source {
    /// The reports on offer, in no particular order.
    fn list(&mut self) -> Result<Vec<Listed>>;
    /// Makes a listed report available locally (a download hashes it on the way).
    fn fetch(&mut self, report: &Listed) -> Result<Fetched>;
    /// Lists the reports for which `is_new` holds a second time, `settle` after the first
    /// listing, and defers those whose size or mtime changed (partial uploads).
    fn settle(&mut self, _listed: &mut [Listed], _is_new: &dyn Fn(&Listed) -> bool) -> Result<()> {
        Ok(())
    }
    /// The clean-up after a report's ledger commit (remote delete or move). A failure is a
    /// warning: the ledger already holds the report, so it is never processed twice.
    fn after(&mut self, _report: &Listed) -> Result<()> {
        Ok(())
    }
}

/// Streams a file once for its SHA-256 and size.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Gives the calling thread the lowest CPU priority of the time-sharing class (nice 19: it
/// yields to busy threads, yet never starves as a `SCHED_IDLE` one can on a loaded machine);
/// elsewhere, or if refused, nothing changes.
fn idle_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: on Linux, PRIO_PROCESS with 0 names the calling thread; no memory is passed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// A report's hash, computed on another thread while the report is parsed.
pub(crate) enum HashJob {
    Done(String),
    Running(std::thread::JoinHandle<Result<(String, u64)>>),
    Failed(String),
}

impl HashJob {
    /// The hash `fetched` carries, or a thread computing it. Unless `urgent`, the thread
    /// runs at the lowest priority (nice 19), on what CPU the others leave: a CSV report's
    /// first pass keeps both cores of a small machine busy, its second leaves one with time
    /// to spare.
    pub(crate) fn start(fetched: &Fetched, urgent: bool) -> HashJob {
        match &fetched.sha256 {
            Some(h) => HashJob::Done(h.clone()),
            None => {
                let path = fetched.path.clone();
                HashJob::Running(
                    std::thread::Builder::new()
                        .name("hash".into())
                        .spawn(move || {
                            if !urgent {
                                idle_priority();
                            }
                            hash_file(&path)
                        })
                        .expect("spawn the hashing thread"),
                )
            }
        }
    }

    /// The hash if it is known by now, without waiting.
    pub(crate) fn poll(&mut self) -> Result<Option<&str>> {
        if let HashJob::Running(h) = self
            && !h.is_finished()
        {
            return Ok(None);
        }
        self.wait().map(Some)
    }

    /// Waits for the hash.
    pub(crate) fn wait(&mut self) -> Result<&str> {
        if let HashJob::Running(_) = self {
            let HashJob::Running(h) = std::mem::replace(self, HashJob::Failed(String::new()))
            else {
                unreachable!("checked above")
            };
            *self = match h.join() {
                Ok(Ok((sha, _))) => HashJob::Done(sha),
                Ok(Err(e)) => HashJob::Failed(format!("{e:#}")),
                Err(_) => HashJob::Failed("the hashing thread panicked".into()),
            };
        }
        match self {
            HashJob::Done(s) => Ok(s),
            HashJob::Failed(e) => Err(anyhow::anyhow!("cannot hash the report: {e}")),
            HashJob::Running(_) => unreachable!("joined above"),
        }
    }
}
