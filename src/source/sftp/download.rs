//! Downloading a report: from the local archive when it holds the report whole, else from
//! the server over one connection (or, for a large report with `connections` > 1, in byte
//! ranges: see `ranges`), into a hidden `.part` file that is renamed into the archive.
//!
//! Invariant: a report is handed on only once all of it has arrived, its size matches the
//! listing and its SHA-256 is known; a connection dropped mid-file resumes where it
//! stopped, and only while the remote file is still the one listed.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::spool::Spool;
use super::{SftpSource, Stat, TRIES};
use crate::sftp::{Final, remote_path, with_retries};
use crate::source::archive::Archive;
use crate::source::{Fetched, Listed, hash_file};

/// Reports at least this large are downloaded in byte ranges over `connections`
/// connections at once (smaller ones over one).
const SEGMENTED_MIN: u64 = 64 << 20;

impl SftpSource {
    /// [`Source::fetch`](crate::source::Source::fetch): the archive's copy when it is whole,
    /// else a download.
    pub(super) fn fetch_report(&mut self, report: &Listed) -> Result<Fetched> {
        if let Some(entry) = self
            .archive
            .lookup(&report.file_name, report.size, report.mtime)?
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
        if !self.remote.contains_key(&report.file_name) {
            bail!(
                "{} is neither on the server nor in the local archive",
                report.name
            );
        }
        self.download(report)
            .with_context(|| format!("cannot download {} from {}", report.name, self.where_()))
    }

    /// A dry run's downloads go to a temporary folder, removed when the run ends.
    fn scratch_archive(&mut self) -> Result<Option<Archive>> {
        if !self.dry_run {
            return Ok(None);
        }
        let dir = match self.scratch.take() {
            Some(d) => d,
            None => tempfile::Builder::new()
                .prefix("tangoe-ingest-dry-download-")
                .tempdir()?,
        };
        let archive = Archive::new(dir.path().to_path_buf());
        self.scratch = Some(dir);
        Ok(Some(archive))
    }

    /// Downloads one report, resuming after a dropped connection.
    fn download(&mut self, report: &Listed) -> Result<Fetched> {
        let started = Instant::now();
        let mut scratch = self.scratch_archive()?;
        let part = match &scratch {
            Some(a) => a.part_file()?,
            None => self.archive.part_file()?,
        };
        let path = remote_path(&self.cfg.remote_dir, &report.file_name);
        let expected = Stat {
            size: report.size,
            mtime: report.mtime,
        };
        let bar = crate::progress::download(&report.name, report.size);
        let (done, sha256) = if self.cfg.connections > 1 && report.size >= SEGMENTED_MIN {
            self.download_ranges(&report.name, &path, expected, part.as_file(), &bar)?
        } else {
            self.download_whole(&report.name, &path, expected, part.as_file(), &bar)?
        };
        drop(bar);
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
            Some(a) => a.put(part, &report.file_name, &sha256, report.mtime)?,
            None => self
                .archive
                .put(part, &report.file_name, &sha256, report.mtime)?,
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
        bar: &crate::progress::Bar,
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
                    crate::interrupt::check()?;
                    let mut buf = spool.buffer()?;
                    let n = match remote.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) => {
                            spool.give_back(buf);
                            return Err(conn
                                .io_error(e)
                                .context(format!("reading {name} from the server")));
                        }
                    };
                    if n == 0 {
                        spool.give_back(buf);
                        break;
                    }
                    spool.write(buf, n)?;
                    done += n as u64;
                    bar.set(done);
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
}

/// Fails for good when the remote file is no longer the one listed.
pub(super) fn check_unchanged(st: &ssh2::FileStat, expected: Stat, name: &str) -> Result<()> {
    if st.size != Some(expected.size) || st.mtime.map(|m| m as i64) != Some(expected.mtime) {
        bail!(Final(format!(
            "{name} changed on the server while it was downloaded"
        )));
    }
    Ok(())
}
