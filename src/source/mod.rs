//! Report sources: `list()` the reports on offer and `fetch()` one to a local file.
//!
//! A source never decides what is new: the pipeline asks the ledger. Fetching yields a local
//! path; a download also yields the content's SHA-256, computed while streaming.
//!
//! Names: a source reads a file by its own name for it (the bytes the file system or the
//! server gave, [`Listed::file_name`]); the ledger, the logs and the summary know it by
//! [`report_name`], the same name as text. A file that matches the patterns but cannot be
//! taken is listed all the same, with why ([`Listed::skipped`]), so it is counted, never
//! passed over in silence.

pub(crate) mod api;
pub(crate) mod archive;
pub(crate) mod local;
pub(crate) mod sftp;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// A report as a listing shows it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    /// Its name in the ledger, the logs and the summary: [`report_name`] of `file_name`.
    pub(crate) name: String,
    /// Its name as the source knows it, to read it by.
    pub(crate) file_name: OsString,
    pub(crate) size: u64,
    /// Modification time, seconds since the epoch.
    pub(crate) mtime: i64,
    /// Why the report is left for a later run (it may still be uploading), if it is.
    pub(crate) deferred: Option<String>,
    /// Why the file cannot be taken at all (its name, or what its listing lacks), if so:
    /// it is never fetched, and the run counts it as a report that failed.
    pub(crate) skipped: Option<String>,
}

impl Listed {
    pub(crate) fn new(file_name: OsString, size: u64, mtime: i64) -> Listed {
        Listed {
            name: report_name(&file_name),
            file_name,
            size,
            mtime,
            deferred: None,
            skipped: None,
        }
    }
}

/// The name a file goes by in the ledger, the logs and the summary: its file name, with each
/// byte that is not UTF-8 written `\xNN` (`r_\xe9.csv`). Control characters are kept (the
/// ledger holds the name); whatever prints a name escapes them (`crate::printable`).
pub(crate) fn report_name(file_name: &OsStr) -> String {
    if let Some(name) = file_name.to_str() {
        return name.to_string();
    }
    let mut out = String::new();
    for chunk in file_name.as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        out.extend(chunk.invalid().escape_ascii().map(char::from));
    }
    out
}

/// Whether a file name is hidden, and so never a report: it starts with one dot (`.r.csv`),
/// as the temporary name of a report copied or uploaded before it is renamed into place
/// (`r.csv`). A name starting with two dots (`..r.csv`) is not hidden: it could only be the
/// temporary name of a hidden name, which is never taken.
pub(crate) fn is_hidden(file_name: &OsStr) -> bool {
    let b = file_name.as_bytes();
    b.first() == Some(&b'.') && b.get(1) != Some(&b'.')
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
    /// Whether the source itself lists only what a backfill's dates select (the API asks
    /// for that window), so that the reports' own dates are not filtered again.
    fn selects_by_date(&self) -> bool {
        false
    }
}

/// Streams a file once for its SHA-256 and size.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    match hash_until(path, f, Sha256::new(), 0, None)? {
        Hashing::Done(sha, size) => Ok((sha, size)),
        Hashing::Handed { .. } => unreachable!("nobody asked to hand over"),
    }
}

/// Where a hash stands: done, or handed over part way (its state, the file and the bytes
/// hashed so far, that many read from the file).
pub(crate) enum Hashing {
    Done(String, u64),
    Handed {
        hasher: Sha256,
        file: std::fs::File,
        size: u64,
    },
}

/// Hashes the rest of `f` into `hasher`; stops and hands over between two reads once
/// `hand_over` is set.
fn hash_until(
    path: &Path,
    mut f: std::fs::File,
    mut hasher: Sha256,
    mut size: u64,
    hand_over: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Hashing> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if hand_over.is_some_and(|h| h.load(std::sync::atomic::Ordering::Acquire)) {
            return Ok(Hashing::Handed {
                hasher,
                file: f,
                size,
            });
        }
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Hashing::Done(hex::encode(hasher.finalize()), size))
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
    Running {
        thread: std::thread::JoinHandle<Result<Hashing>>,
        /// Asks the thread to hand its work over (see [`HashJob::wait`]).
        hand_over: std::sync::Arc<std::sync::atomic::AtomicBool>,
        path: std::path::PathBuf,
    },
    Failed(String),
}

impl HashJob {
    /// The hash `fetched` carries, or a thread computing it. Unless `urgent`, the thread
    /// runs at the lowest priority (nice 19), on what CPU the others leave: a CSV report's
    /// first pass keeps both cores of a small machine busy, its second leaves one with time
    /// to spare. Whoever then waits for the hash finishes it at its own priority.
    pub(crate) fn start(fetched: &Fetched, urgent: bool) -> HashJob {
        match &fetched.sha256 {
            Some(h) => HashJob::Done(h.clone()),
            None => {
                let path = fetched.path.clone();
                let hand_over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let asked = hand_over.clone();
                let on = path.clone();
                let thread = std::thread::Builder::new()
                    .name("hash".into())
                    .spawn(move || {
                        if !urgent {
                            idle_priority();
                        }
                        let f = std::fs::File::open(&on)
                            .with_context(|| format!("cannot open {}", on.display()))?;
                        hash_until(&on, f, Sha256::new(), 0, Some(&asked))
                    })
                    .expect("spawn the hashing thread");
                HashJob::Running {
                    thread,
                    hand_over,
                    path,
                }
            }
        }
    }

    /// Waits for the hash: a thread still at it hands its work over, and this one (at its
    /// own priority, which a nice 19 thread cannot get back) finishes it.
    pub(crate) fn wait(&mut self) -> Result<&str> {
        if let HashJob::Running { .. } = self {
            let HashJob::Running {
                thread,
                hand_over,
                path,
            } = std::mem::replace(self, HashJob::Failed(String::new()))
            else {
                unreachable!("checked above")
            };
            hand_over.store(true, std::sync::atomic::Ordering::Release);
            let finished = match thread.join() {
                Ok(Ok(Hashing::Handed { hasher, file, size })) => {
                    hash_until(&path, file, hasher, size, None)
                }
                Ok(other) => other,
                Err(_) => Err(anyhow::anyhow!("the hashing thread panicked")),
            };
            *self = match finished {
                Ok(Hashing::Done(sha, _)) => HashJob::Done(sha),
                Ok(Hashing::Handed { .. }) => unreachable!("nobody asked to hand over"),
                Err(e) => HashJob::Failed(format!("{e:#}")),
            };
        }
        match self {
            HashJob::Done(s) => Ok(s),
            HashJob::Failed(e) => Err(anyhow::anyhow!("cannot hash the report: {e}")),
            HashJob::Running { .. } => unreachable!("joined above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom};
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// A hash handed over before its first read, or part way, ends as the same hash.
    #[test]
    fn a_hash_handed_over_ends_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (want, size) = hash_file(&path).unwrap();
        assert_eq!(size, data.len() as u64);

        let asked = AtomicBool::new(true);
        let f = std::fs::File::open(&path).unwrap();
        let Hashing::Handed { hasher, file, size } =
            hash_until(&path, f, Sha256::new(), 0, Some(&asked)).unwrap()
        else {
            panic!("not handed over")
        };
        assert_eq!(size, 0);
        match hash_until(&path, file, hasher, size, None).unwrap() {
            Hashing::Done(sha, n) => assert_eq!((sha, n), (want.clone(), size + data.len() as u64)),
            Hashing::Handed { .. } => panic!("handed over unasked"),
        }

        // Part way: the first 3 MB hashed, the rest taken over.
        let mut f = std::fs::File::open(&path).unwrap();
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        let mut hasher = Sha256::new();
        hasher.update(&data[..3 << 20]);
        match hash_until(&path, f, hasher, 3 << 20, None).unwrap() {
            Hashing::Done(sha, n) => assert_eq!((sha, n), (want.clone(), data.len() as u64)),
            Hashing::Handed { .. } => panic!("handed over unasked"),
        }

        // Through a job at the lowest priority, waited for at once.
        let fetched = Fetched {
            path: path.clone(),
            sha256: None,
        };
        let mut job = HashJob::start(&fetched, false);
        assert_eq!(job.wait().unwrap(), want);
    }

    #[test]
    fn a_name_that_is_not_utf8_shows_its_bytes_and_hidden_names_start_with_one_dot() {
        let name = |b: &[u8]| report_name(OsStr::from_bytes(b));
        assert_eq!(name(b"r_2026-11-01.csv"), "r_2026-11-01.csv");
        assert_eq!(name("Zoë\u{7}.csv".as_bytes()), "Zoë\u{7}.csv");
        assert_eq!(name(b"r_\xe9\xff_\xc3\xa9.csv"), "r_\\xe9\\xff_é.csv");
        let hidden = |s: &str| is_hidden(OsStr::new(s));
        assert!(hidden(".r.csv") && hidden(".") && hidden(".x"));
        assert!(!hidden("..r.csv") && !hidden("r.csv") && !hidden("r..csv") && !hidden(""));
    }
}
