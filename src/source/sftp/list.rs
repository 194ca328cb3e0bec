//! Listing `remote_dir`, and the decisions a listing allows: which entries are reports,
//! which of those cannot be taken, and which are left for a later run because they may
//! still be uploading.
//!
//! Invariant: every regular file whose name matches the patterns and is not hidden is
//! offered, whatever its name holds, except a name that is no file name at all (`.`, `..`,
//! one holding `/` or NUL): the archive saves each under a safe local name. What matches
//! but cannot be taken (such a name, a symbolic link, a listing without size or mtime) is
//! listed as skipped, with why. A file is offered for download only when it is old enough
//! (`min_age`), has its done marker (`done_suffix`) and, when new, did not change across two
//! listings `settle` apart.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, Result, anyhow};
use globset::GlobSet;

use super::{SftpSource, Stat};
use crate::source::{Listed, is_hidden};

/// One listing of `remote_dir`.
struct RemoteListing {
    /// The regular files whose names match the patterns, to take.
    files: Vec<(OsString, Stat)>,
    /// The files that match the patterns but cannot be taken, with why.
    skipped: Vec<(OsString, Stat, String)>,
    /// Every name in the folder (done markers are looked up here).
    names: HashSet<OsString>,
}

/// What an entry of the listing is to the source.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// Not a report: the folder itself or its parent, a hidden name, or a name the patterns
    /// do not match.
    Ignored,
    /// A folder (or a device...) whose name matches the patterns: not a report either.
    NotAFile,
    /// A report that cannot be taken, and why.
    Skipped(&'static str),
    Report(Stat),
}

/// What the entry `name` with attributes `stat` is (names as the server sent them).
/// Only `.`, `..` and a name holding `/` or NUL are no file names.
fn classify(name: &OsStr, stat: &ssh2::FileStat, patterns: &GlobSet) -> Entry {
    let raw = name.as_bytes();
    if raw == b"." || raw == b".." {
        return Entry::Ignored;
    }
    // Whatever the patterns say (they cannot match across a `/`): a server never lists such
    // a name unless something is wrong with it.
    if raw.contains(&b'/') || raw.contains(&0) {
        return Entry::Skipped(
            "its name holds \"/\" or a NUL byte: it is not a file name, so it cannot be read \
             or saved safely",
        );
    }
    if is_hidden(name) || !patterns.is_match(name) {
        return Entry::Ignored;
    }
    if stat.perm.is_none() {
        return Entry::Skipped("the server did not say whether it is a regular file");
    }
    let kind = stat.file_type();
    if kind.is_symlink() {
        return Entry::Skipped(
            "a symbolic link on the server: only regular files are taken (narrow `patterns` \
             to leave it out)",
        );
    }
    if !kind.is_file() {
        return Entry::NotAFile;
    }
    match (stat.size, stat.mtime) {
        (Some(size), Some(mtime)) => Entry::Report(Stat {
            size,
            mtime: mtime as i64,
        }),
        _ => Entry::Skipped("the server gave no size or modification time"),
    }
}

impl SftpSource {
    /// Every name in `remote_dir` with its attributes (names as the server sent them).
    fn read_dir(&mut self) -> Result<Vec<(OsString, ssh2::FileStat)>> {
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
                    Ok((name, stat)) => out.push((name.into_os_string(), stat)),
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

    /// The files to take, those that cannot be taken, and the set of all names.
    fn list_remote(&mut self) -> Result<RemoteListing> {
        let mut listing = RemoteListing {
            files: Vec::new(),
            skipped: Vec::new(),
            names: HashSet::new(),
        };
        for (name, stat) in self.read_dir()? {
            match classify(&name, &stat, &self.patterns) {
                Entry::Ignored => {}
                Entry::NotAFile => {
                    tracing::warn!(file = %crate::source::report_name(&name), "skipped: not a regular file on the server");
                }
                Entry::Skipped(why) => {
                    let st = Stat {
                        size: stat.size.unwrap_or(0),
                        mtime: stat.mtime.map_or(0, |m| m as i64),
                    };
                    listing.skipped.push((name.clone(), st, why.to_string()));
                }
                Entry::Report(st) => listing.files.push((name.clone(), st)),
            }
            listing.names.insert(name);
        }
        Ok(listing)
    }

    /// [`Source::list`](crate::source::Source::list): the folder's reports, each deferred
    /// when it may still be uploading, or skipped when it cannot be taken; with backfill,
    /// the archive's too.
    pub(super) fn list_reports(&mut self) -> Result<Vec<Listed>> {
        if !self.dry_run {
            self.prune();
        }
        let RemoteListing {
            files,
            skipped,
            names,
        } = self.list_remote()?;
        let now = chrono::Utc::now().timestamp();
        let min_age = self.cfg.min_age.as_secs() as i64;
        self.remote.clear();
        let mut out = Vec::new();
        for (file_name, st) in files {
            self.remote.insert(file_name.clone(), st);
            let mut l = Listed::new(file_name, st.size, st.mtime);
            if let Some(suffix) = &self.cfg.done_suffix {
                let mut marker = l.file_name.clone();
                marker.push(suffix);
                if !names.contains(&marker) {
                    l.deferred = Some(format!("waiting for its done marker {}{suffix}", l.name));
                }
            }
            if l.deferred.is_none() && now - st.mtime < min_age {
                l.deferred = Some(format!(
                    "modified {}s ago, less than min_age ({}s): it may still be uploading",
                    (now - st.mtime).max(0),
                    min_age
                ));
            }
            out.push(l);
        }
        for (file_name, st, why) in skipped {
            let mut l = Listed::new(file_name, st.size, st.mtime);
            l.skipped = Some(why);
            out.push(l);
        }
        if self.backfill {
            // Reports the site no longer has (deleted, moved, purged) come from the archive.
            let remote: HashSet<(OsString, u64, i64)> = out
                .iter()
                .map(|l| (l.file_name.clone(), l.size, l.mtime))
                .collect();
            let mut seen = HashSet::new();
            for e in self.archive.entries()? {
                if !self.patterns.is_match(&e.file_name) {
                    continue;
                }
                let key = (e.file_name.clone(), e.size, e.mtime);
                if !remote.contains(&key) && seen.insert(key) {
                    out.push(Listed::new(e.file_name, e.size, e.mtime));
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
            if l.deferred.is_some() || !self.remote.contains_key(&l.file_name) || !is_new(l) {
                continue;
            }
            if self
                .archive
                .lookup(&l.file_name, l.size, l.mtime)?
                .is_some()
            {
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
        let again: HashMap<OsString, Stat> = files.into_iter().collect();
        for i in candidates {
            let l = &mut listed[i];
            match again.get(&l.file_name) {
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

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn stat(perm: Option<u32>, size: Option<u64>, mtime: Option<u64>) -> ssh2::FileStat {
        ssh2::FileStat {
            size,
            uid: None,
            gid: None,
            perm,
            atime: None,
            mtime,
        }
    }

    /// Only `.`, `..` and a name holding `/` or NUL are no file names (the last two are
    /// skipped); hidden names and names the patterns leave out are not reports; a match
    /// that cannot be taken is skipped, never ignored.
    #[test]
    fn which_entries_are_reports_and_which_are_skipped() {
        let patterns = crate::config::compile_patterns(&["*.csv".to_string()], "test").unwrap();
        let file = stat(Some(0o100644), Some(10), Some(1_700_000_000));
        let is =
            |name: &[u8], st: &ssh2::FileStat| classify(OsStr::from_bytes(name), st, &patterns);
        let report = Entry::Report(Stat {
            size: 10,
            mtime: 1_700_000_000,
        });
        for name in [
            &b"r.csv"[..],
            b"..r.csv",
            b"up..r.csv",
            b"back\\slash.csv",
            b"bell\x07.csv",
            b"latin\xe9.csv",
            b"two  spaces.csv",
        ] {
            assert_eq!(is(name, &file), report, "{}", name.escape_ascii());
        }
        for name in [&b"."[..], b"..", b".r.csv", b"r.txt", b".x.csv.part"] {
            assert_eq!(is(name, &file), Entry::Ignored, "{}", name.escape_ascii());
        }
        for name in [&b"a/b.csv"[..], b"../up.txt", b"nul\0.csv", b"/etc/passwd"] {
            assert!(
                matches!(is(name, &file), Entry::Skipped(_)),
                "{}",
                name.escape_ascii()
            );
        }
        let dir = stat(Some(0o040755), Some(4096), Some(1));
        assert_eq!(is(b"sub.csv", &dir), Entry::NotAFile);
        for odd in [
            stat(Some(0o120777), Some(5), Some(1)),
            stat(None, Some(5), Some(1)),
            stat(Some(0o100644), None, Some(1)),
            stat(Some(0o100644), Some(5), None),
        ] {
            assert!(matches!(is(b"r.csv", &odd), Entry::Skipped(_)), "{odd:?}");
        }
    }
}
