//! A local drop folder: the reports are the folder's regular files whose names match the
//! patterns (not recursive). Fetching reads them where they are.

use std::path::PathBuf;

use anyhow::{Context, Result};
use globset::GlobSet;

use super::{Fetched, Listed, Source};

pub(crate) struct LocalSource {
    dir: PathBuf,
    patterns: GlobSet,
}

impl LocalSource {
    pub(crate) fn new(dir: PathBuf, patterns: GlobSet) -> Self {
        LocalSource { dir, patterns }
    }
}

impl Source for LocalSource {
    fn list(&mut self) -> Result<Vec<Listed>> {
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list the drop folder {}", self.dir.display()))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry
                .with_context(|| format!("cannot list the drop folder {}", self.dir.display()))?;
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(file = ?entry.file_name(), "skipped: the file name is not valid UTF-8");
                continue;
            };
            if name.starts_with('.') || !self.patterns.is_match(&name) {
                continue;
            }
            // An entry that cannot be read (a link to a missing file, a file moved away since
            // the folder was read, an I/O error) is listed all the same: it fails as a report
            // of its own, named in the summary, and the other reports go on.
            let meta = match std::fs::metadata(entry.path()) {
                Ok(meta) => meta,
                Err(e) => {
                    let why = if entry.path().is_symlink() {
                        "a link to a file that cannot be read"
                    } else {
                        "it cannot be read"
                    };
                    tracing::warn!(file = %name, error = %e, "{why}");
                    out.push(Listed {
                        name,
                        size: 0,
                        mtime: 0,
                        deferred: None,
                    });
                    continue;
                }
            };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            out.push(Listed {
                name,
                size: meta.len(),
                mtime,
                deferred: None,
            });
        }
        Ok(out)
    }

    fn fetch(&mut self, report: &Listed) -> Result<Fetched> {
        // Read in place; the pipeline hashes it while parsing it.
        Ok(Fetched {
            path: self.dir.join(&report.name),
            sha256: None,
        })
    }
}
