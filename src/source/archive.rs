//! The local archive of downloaded reports, in the SFTP source's `download_dir`.
//!
//! Layout: `download_dir/<sha256 of the content>/<report name>`, the file's mtime set to the
//! remote mtime. The folder name is the content's hash, so the archive knows what it holds
//! without reading it again, and two reports with the same name and different content never
//! overwrite each other. Downloads in progress are hidden `.tangoe-ingest-*.part` files in
//! `download_dir` itself, renamed into the archive only once complete and verified.
//! Entries are pruned `keep` after they were archived (the folder's mtime).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// A report the archive holds.
#[derive(Debug, Clone)]
pub(crate) struct ArchiveEntry {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
    pub(crate) sha256: String,
    pub(crate) path: PathBuf,
}

pub(crate) struct Archive {
    dir: PathBuf,
    index: Option<HashMap<(String, u64, i64), ArchiveEntry>>,
}

pub(crate) const PART_PREFIX: &str = ".tangoe-ingest-";

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn mtime_secs(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

impl Archive {
    pub(crate) fn new(dir: PathBuf) -> Archive {
        Archive { dir, index: None }
    }

    /// Every report in the archive.
    pub(crate) fn entries(&self) -> Result<Vec<ArchiveEntry>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read the download folder {}", self.dir.display())
                });
            }
        };
        for d in rd {
            let d = d?;
            let Ok(sha) = d.file_name().into_string() else {
                continue;
            };
            if !is_sha256_hex(&sha) || !d.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(d.path())? {
                let f = f?;
                let Ok(name) = f.file_name().into_string() else {
                    continue;
                };
                let meta = f.metadata()?;
                if !meta.is_file() || name.starts_with('.') {
                    continue;
                }
                out.push(ArchiveEntry {
                    name,
                    size: meta.len(),
                    mtime: mtime_secs(&meta),
                    sha256: sha.clone(),
                    path: f.path(),
                });
            }
        }
        Ok(out)
    }

    /// The archived copy of a report listed with this name, size and mtime.
    pub(crate) fn lookup(
        &mut self,
        name: &str,
        size: u64,
        mtime: i64,
    ) -> Result<Option<ArchiveEntry>> {
        if self.index.is_none() {
            let mut index = HashMap::new();
            for e in self.entries()? {
                index.insert((e.name.clone(), e.size, e.mtime), e);
            }
            self.index = Some(index);
        }
        let index = self.index.as_ref().expect("built above");
        Ok(index.get(&(name.to_string(), size, mtime)).cloned())
    }

    /// A new temporary file for a download in progress.
    pub(crate) fn part_file(&self) -> Result<tempfile::NamedTempFile> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create the download folder {}", self.dir.display()))?;
        tempfile::Builder::new()
            .prefix(PART_PREFIX)
            .suffix(".part")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot write in the download folder {}", self.dir.display()))
    }

    /// Moves a complete, verified download into the archive; returns its path.
    pub(crate) fn put(
        &mut self,
        part: tempfile::NamedTempFile,
        name: &str,
        sha256: &str,
        mtime: i64,
    ) -> Result<PathBuf> {
        let folder = self.dir.join(sha256);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        let dest = folder.join(name);
        let t = std::time::UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64);
        part.as_file()
            .set_modified(t)
            .with_context(|| format!("cannot set the mtime of {}", dest.display()))?;
        // No fsync (of the file or the folder): a copy torn by a crash fails its hash check
        // when it is next used and is downloaded again; the ledger never depends on it. An
        // fsync here would cost a flush of the whole report to disk for nothing.
        let size = part.as_file().metadata()?.len();
        part.persist(&dest).with_context(|| {
            format!("cannot move the download into place as {}", dest.display())
        })?;
        let entry = ArchiveEntry {
            name: name.to_string(),
            size,
            mtime,
            sha256: sha256.to_string(),
            path: dest.clone(),
        };
        if let Some(index) = &mut self.index {
            index.insert((entry.name.clone(), size, mtime), entry);
        }
        Ok(dest)
    }

    /// Forgets an archived copy that turned out to be damaged.
    pub(crate) fn discard(&mut self, entry: &ArchiveEntry) {
        let _ = std::fs::remove_file(&entry.path);
        if let Some(index) = &mut self.index {
            index.remove(&(entry.name.clone(), entry.size, entry.mtime));
        }
    }

    /// Removes downloads a crashed run left half done. Only a real run (which holds the
    /// ledger lock exclusively) may call this.
    pub(crate) fn remove_partials(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for d in rd.flatten() {
            let name = d.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(PART_PREFIX) && name.ends_with(".part") {
                let _ = std::fs::remove_file(d.path());
            }
        }
    }

    /// Removes the reports archived more than `keep` ago; returns how many.
    pub(crate) fn prune(&mut self, keep: Duration) -> Result<usize> {
        let Some(cutoff) = SystemTime::now().checked_sub(keep) else {
            return Ok(0);
        };
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read the download folder {}", self.dir.display())
                });
            }
        };
        let mut removed = 0;
        for d in rd {
            let d = d?;
            let Ok(sha) = d.file_name().into_string() else {
                continue;
            };
            if !is_sha256_hex(&sha) {
                continue;
            }
            let archived = d.metadata()?.modified()?;
            if archived < cutoff {
                std::fs::remove_dir_all(d.path())
                    .with_context(|| format!("cannot prune {}", d.path().display()))?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.index = None;
        }
        Ok(removed)
    }
}
