//! A local drop folder: the reports are the folder's regular files whose names match the
//! patterns (not recursive) and are not hidden. Fetching reads them where they are, by
//! their names in the file system, whatever bytes those hold.

use std::path::PathBuf;

use anyhow::{Context, Result};
use globset::GlobSet;

use super::{Fetched, Listed, Source, is_hidden};

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
            let file_name = entry.file_name();
            if is_hidden(&file_name) || !self.patterns.is_match(&file_name) {
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
                    let listed = Listed::new(file_name, 0, 0);
                    tracing::warn!(file = %listed.name, error = %e, "{why}");
                    out.push(listed);
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
            out.push(Listed::new(file_name, meta.len(), mtime));
        }
        Ok(out)
    }

    fn fetch(&mut self, report: &Listed) -> Result<Fetched> {
        // Read in place; the pipeline hashes it while parsing it.
        Ok(Fetched {
            path: self.dir.join(&report.file_name),
            sha256: None,
        })
    }
}
