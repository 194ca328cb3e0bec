//! The local archive of downloaded reports, in the SFTP source's `download_dir`.
//!
//! Layout: `download_dir/<sha256 of the content>/<local name>`, the file's mtime set to the
//! remote mtime. The folder name is the content's hash, so the archive knows what it holds
//! without reading it again, and two reports with the same name and different content never
//! overwrite each other. The local name is the remote name made safe and reversibly so
//! ([`local_name`]): it is never `.` or `..`, never holds `/`, NUL, `\` or a control
//! character and never starts with `.`, so a remote name can never write outside its folder
//! nor hide there, and the archive reads the remote name back from it.
//!
//! Downloads in progress are hidden `.tangoe-ingest-*.part` files in `download_dir` itself,
//! renamed into the archive only once complete and verified. Entries are pruned `keep`
//! after they were archived (the folder's mtime).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode, percent_encode};

/// A report the archive holds.
#[derive(Debug, Clone)]
pub(crate) struct ArchiveEntry {
    /// The report's remote name (read back from its local name).
    pub(crate) file_name: OsString,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
    pub(crate) sha256: String,
    pub(crate) path: PathBuf,
}

/// An archived report's key: its remote name, size and mtime, as a listing shows them.
type Key = (OsString, u64, i64);

pub(crate) struct Archive {
    dir: PathBuf,
    index: Option<HashMap<Key, ArchiveEntry>>,
}

pub(crate) const PART_PREFIX: &str = ".tangoe-ingest-";

/// The ASCII characters a local name writes as `%XX`: `%` itself (so that the name reads
/// back), `/`, `\` and the control characters (NUL among them).
const ESCAPED: &AsciiSet = &CONTROLS.add(b'%').add(b'/').add(b'\\');

/// The name a report with this remote name is saved under: the remote name with `%`, `/`,
/// `\`, control characters and bytes that are not UTF-8 written `%XX`, and a leading `.`
/// written `%2E`. Other characters (`é`, a space, an inner `..`) are kept, so the name stays
/// readable and as short as the remote one. [`file_name_of`] reads it back.
pub(crate) fn local_name(file_name: &OsStr) -> String {
    let mut out = String::with_capacity(file_name.len());
    for chunk in file_name.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_ascii() || c.is_control() {
                out.extend(percent_encode(
                    c.encode_utf8(&mut [0; 4]).as_bytes(),
                    ESCAPED,
                ));
            } else {
                out.push(c);
            }
        }
        // Bytes that are not UTF-8 are never ASCII: all are encoded.
        out.extend(percent_encode(chunk.invalid(), ESCAPED));
    }
    if out.starts_with('.') {
        out.replace_range(..1, "%2E");
    }
    out
}

/// The remote name a [`local_name`] was made from.
pub(crate) fn file_name_of(local: &OsStr) -> OsString {
    OsString::from_vec(percent_decode(local.as_bytes()).collect())
}

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
                let local = f.file_name();
                let meta = f.metadata()?;
                // A local name never starts with `.`: such a file is not the archive's.
                if !meta.is_file() || local.as_bytes().starts_with(b".") {
                    continue;
                }
                out.push(ArchiveEntry {
                    file_name: file_name_of(&local),
                    size: meta.len(),
                    mtime: mtime_secs(&meta),
                    sha256: sha.clone(),
                    path: f.path(),
                });
            }
        }
        Ok(out)
    }

    /// The archived copy of a report listed with this remote name, size and mtime.
    pub(crate) fn lookup(
        &mut self,
        file_name: &OsStr,
        size: u64,
        mtime: i64,
    ) -> Result<Option<ArchiveEntry>> {
        if self.index.is_none() {
            let mut index = HashMap::new();
            for e in self.entries()? {
                index.insert((e.file_name.clone(), e.size, e.mtime), e);
            }
            self.index = Some(index);
        }
        let index = self.index.as_ref().expect("built above");
        Ok(index.get(&(file_name.to_os_string(), size, mtime)).cloned())
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

    /// Moves a complete, verified download of the remote file `file_name` into the archive,
    /// under its [`local_name`]; returns its path.
    pub(crate) fn put(
        &mut self,
        part: tempfile::NamedTempFile,
        file_name: &OsStr,
        sha256: &str,
        mtime: i64,
    ) -> Result<PathBuf> {
        let folder = self.dir.join(sha256);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        let dest = folder.join(local_name(file_name));
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
            file_name: file_name.to_os_string(),
            size,
            mtime,
            sha256: sha256.to_string(),
            path: dest.clone(),
        };
        if let Some(index) = &mut self.index {
            index.insert((entry.file_name.clone(), size, mtime), entry);
        }
        Ok(dest)
    }

    /// Forgets an archived copy that turned out to be damaged.
    pub(crate) fn discard(&mut self, entry: &ArchiveEntry) {
        let _ = std::fs::remove_file(&entry.path);
        if let Some(index) = &mut self.index {
            index.remove(&(entry.file_name.clone(), entry.size, entry.mtime));
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn odd_names_are_saved_under_safe_readable_names() {
        let local = |b: &[u8]| local_name(OsStr::from_bytes(b));
        assert_eq!(local(b"acts_2026-11-01.csv"), "acts_2026-11-01.csv");
        assert_eq!(local(b"..acts.csv"), "%2E.acts.csv");
        assert_eq!(local(b".."), "%2E.");
        assert_eq!(local(b"up..acts.csv"), "up..acts.csv");
        assert_eq!(local(b"back\\slash/x.csv"), "back%5Cslash%2Fx.csv");
        assert_eq!(
            local(b"bell\x07 nul\0 100%.csv"),
            "bell%07 nul%00 100%25.csv"
        );
        assert_eq!(local("Zoë\u{85}.csv".as_bytes()), "Zoë%C2%85.csv");
        assert_eq!(local(b"latin\xe9.csv"), "latin%E9.csv");
    }

    proptest! {
        /// Any remote name reads back from its local name, which is safe as a file name.
        #[test]
        fn a_local_name_reads_back_and_is_safe(name in proptest::collection::vec(any::<u8>(), 1..40)) {
            let local = local_name(OsStr::from_bytes(&name));
            prop_assert_eq!(file_name_of(OsStr::new(&local)).into_vec(), name);
            prop_assert!(!local.starts_with('.'));
            prop_assert!(!local.contains(['/', '\\', '\0']));
            prop_assert!(!local.chars().any(char::is_control));
        }
    }
}
