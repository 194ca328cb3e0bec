//! Uploads to an SFTP folder (the file sink's `upload`), and what it looks at first.
//!
//! Invariant: a file appears under its name only whole: it is written under a hidden
//! temporary name, its size checked, then renamed; a file of that name the caller does
//! not know for its own is never replaced.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::endpoint::remote_path;
use super::retry::{Final, is_missing};
use super::session::Connection;

impl Connection {
    /// The names in `remote_dir` that start with `prefix`. The upload temporaries of import
    /// files of this prefix (`.PREFIX-FIRST-LAST....part`) an interrupted upload left behind
    /// an hour or more ago are removed: younger ones may be another uploader's, at work.
    pub(crate) fn names_in(&self, remote_dir: &str, prefix: &str) -> Result<Vec<String>> {
        let entries = self
            .sftp()
            .readdir(Path::new(remote_dir))
            .with_context(|| format!("cannot list {remote_dir} on the SFTP server"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ours = |n: &str| {
            n.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|r| r.len() > 12 && r.as_bytes()[..12].iter().all(u8::is_ascii_digit))
        };
        let mut names = Vec::new();
        for (path, st) in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let part = name.strip_prefix('.').and_then(|n| n.strip_suffix(".part"));
            if let Some(p) = part {
                let old = st.mtime.is_some_and(|m| now.saturating_sub(m) >= 3600);
                if ours(p) && old {
                    let _ = self.sftp().unlink(&path);
                }
            } else if name.starts_with(prefix) {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    /// The size of `remote_dir/name`, if it exists.
    pub(crate) fn size_of(&self, remote_dir: &str, name: &str) -> Result<Option<u64>> {
        let path = remote_path(remote_dir, name);
        match self.sftp().stat(&path) {
            Ok(st) => Ok(Some(st.size.unwrap_or(0))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("cannot look at {}", path.display())))
            }
        }
    }

    /// Uploads `local` as `remote_dir/name`: written under a hidden temporary name, its size
    /// checked, then renamed into place, so a consumer never sees a partial file. A file of
    /// that name already there is replaced only if `replace` (the caller knows it for its
    /// own earlier upload of the same events); otherwise the upload fails, and the file is
    /// kept.
    /// `renamed`: set when this upload sends its rename; when an earlier try had set it, a
    /// file of the name and the same size is that try's (its answer was lost).
    pub(crate) fn upload(
        &self,
        local: &Path,
        remote_dir: &str,
        name: &str,
        replace: bool,
        renamed: &mut bool,
    ) -> Result<()> {
        let tmp = remote_path(remote_dir, format!(".{name}.part"));
        let dest = remote_path(remote_dir, name);
        let mut src = std::fs::File::open(local)
            .with_context(|| format!("cannot open {}", local.display()))?;
        let expected = src.metadata()?.len();
        let mut remote = self
            .sftp()
            .create(&tmp)
            .with_context(|| format!("cannot create {} on the SFTP server", tmp.display()))?;
        // libssh2 keeps the whole buffer given to one write in flight: a large one pipelines.
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", local.display()))?;
            if n == 0 {
                break;
            }
            remote
                .write_all(&buf[..n])
                .with_context(|| format!("cannot write {} on the SFTP server", tmp.display()))?;
        }
        let _ = remote.fsync();
        remote
            .close()
            .with_context(|| format!("cannot close {} on the SFTP server", tmp.display()))?;
        let size = self.sftp().stat(&tmp)?.size.unwrap_or(0);
        if size != expected {
            let _ = self.sftp().unlink(&tmp);
            bail!("the upload of {name} is incomplete: {size} of {expected} bytes arrived");
        }
        let retry = *renamed;
        *renamed = true;
        if let Err(e) = self.sftp().rename(&tmp, &dest, None) {
            // SFTP v3 renames do not overwrite.
            let there = self.sftp().stat(&dest).ok().map(|st| st.size);
            if retry && there == Some(Some(expected)) {
                let _ = self.sftp().unlink(&tmp); // the earlier try's file
                return Ok(());
            }
            if !replace {
                let _ = self.sftp().unlink(&tmp);
                let what = format!(
                    "cannot rename {} to {} on the SFTP server",
                    tmp.display(),
                    dest.display()
                );
                // A file of that name appeared: trying again cannot help (and must not take it
                // for this upload's); the next run picks another name.
                if there.is_some() {
                    return Err(anyhow::Error::new(Final(format!(
                        "{what}: a file of that name appeared there meanwhile, and is kept"
                    ))));
                }
                return Err(anyhow::Error::new(e).context(what));
            }
            let _ = self.sftp().unlink(&dest);
            self.sftp().rename(&tmp, &dest, None).with_context(|| {
                format!(
                    "cannot rename {} to {} on the SFTP server",
                    tmp.display(),
                    dest.display()
                )
            })?;
        }
        Ok(())
    }
}
