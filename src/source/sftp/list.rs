//! Listing `remote_dir`, and the decisions a listing allows: which names are safe to take,
//! and which files are left for a later run because they may still be uploading.
//!
//! Invariant: a remote name never writes outside `download_dir` (names holding `/`, `\`,
//! `..` or control characters are skipped with a warning), and a file is offered for
//! download only when it is old enough (`min_age`), has its done marker (`done_suffix`)
//! and, when new, did not change across two listings `settle` apart.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, anyhow};

use super::{SftpSource, Stat};
use crate::source::Listed;

/// One listing of `remote_dir`.
struct RemoteListing {
    /// The regular files whose names are safe and match the patterns.
    files: Vec<(String, Stat)>,
    /// Every name in the folder (done markers are looked up here).
    names: HashSet<String>,
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

    /// [`Source::list`](crate::source::Source::list): the folder's reports, each deferred
    /// when it may still be uploading; with backfill, the archive's too.
    pub(super) fn list_reports(&mut self) -> Result<Vec<Listed>> {
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

    /// [`Source::settle`](crate::source::Source::settle): lists the folder again `settle`
    /// later and defers the new reports whose size or mtime changed meanwhile.
    pub(super) fn settle_new(
        &mut self,
        listed: &mut [Listed],
        is_new: &dyn Fn(&Listed) -> bool,
    ) -> Result<()> {
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
}
