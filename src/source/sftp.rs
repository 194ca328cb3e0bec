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

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use globset::GlobSet;
use sha2::{Digest, Sha256};

use super::archive::Archive;
use super::{Fetched, Listed, Source, hash_file};
use crate::sftp::config::{After, SftpSourceConfig};
use crate::sftp::{Connection, Final, remote_path, with_retries};

/// Tries per remote operation (the first and two retries).
const TRIES: u32 = 3;
/// The read buffer: libssh2 keeps up to 4 × this in flight (it caps read-ahead at 8 MiB).
const READ_BUFFER: usize = 2 << 20;

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
        let mut spool = Spool::start(part.as_file().try_clone()?);
        let mut done: u64 = 0;
        let expected = Stat {
            size: report.size,
            mtime: report.mtime,
        };
        let what = format!("downloading {}", report.name);
        let read = with_retries(&what, TRIES, |attempt| {
            let result = (|| -> Result<()> {
                let conn = self.connection()?;
                let mut remote = conn
                    .sftp()
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                if done > 0 {
                    // A retry: only go on if the file is still the one listed.
                    let st = remote.stat().context("cannot stat the remote file")?;
                    if st.size != Some(expected.size)
                        || st.mtime.map(|m| m as i64) != Some(expected.mtime)
                    {
                        bail!(Final(format!(
                            "{} changed on the server while it was downloaded",
                            report.name
                        )));
                    }
                    tracing::info!(offset = done, attempt, "resuming the download");
                    remote.seek(SeekFrom::Start(done))?;
                }
                loop {
                    let mut buf = spool.buffer()?;
                    let n = match remote.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) => {
                            spool.give_back(buf);
                            return Err(anyhow!(e)
                                .context(format!("reading {} from the server", report.name)));
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
            let (sha256, _) = hash_file(&entry.path)?;
            if sha256 == entry.sha256 {
                tracing::info!(file = %entry.path.display(), "taken from the local archive (not downloaded)");
                return Ok(Fetched {
                    path: entry.path,
                    sha256: Some(sha256),
                });
            }
            tracing::warn!(file = %entry.path.display(), "the archived copy is damaged: downloading it again");
            self.archive.discard(&entry);
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
        let mut names = vec![report.name.clone()];
        if let Some(suffix) = &self.cfg.done_suffix {
            names.push(format!("{}{suffix}", report.name));
        }
        match self.cfg.after.clone() {
            After::Leave => Ok(()),
            After::Delete => self.remote_op(&format!("deleting {}", report.name), |c| {
                for n in &names {
                    let p = remote_path(&dir, n);
                    c.sftp()
                        .unlink(&p)
                        .with_context(|| format!("cannot delete {}", p.display()))?;
                }
                Ok(())
            }),
            After::Move(target) => {
                let target_dir = if target.starts_with('/') {
                    PathBuf::from(&target)
                } else {
                    remote_path(&dir, &target)
                };
                let mtime = report.mtime;
                self.remote_op(&format!("moving {}", report.name), |c| {
                    if c.sftp().stat(&target_dir).is_err() {
                        let _ = c.sftp().mkdir(&target_dir, 0o755);
                    }
                    for n in &names {
                        let from = remote_path(&dir, n);
                        let to = target_dir.join(n);
                        if c.sftp().rename(&from, &to, None).is_err() {
                            // A report of the same name moved earlier: keep both.
                            let to = target_dir.join(format!("{n}.{mtime}"));
                            c.sftp().rename(&from, &to, None).with_context(|| {
                                format!(
                                    "cannot move {} to {}",
                                    from.display(),
                                    target_dir.display()
                                )
                            })?;
                        }
                    }
                    Ok(())
                })
            }
        }
    }
}
