//! The clean-up on the server after a report's ledger commit: `after = "delete"` or
//! `"move:DIR"`.
//!
//! Invariant: only the file the ledger holds is cleaned up (one replaced since the listing
//! is left, with its marker, for the next run), never in a dry run, and the done marker
//! goes first, so a clean-up cut short never leaves a marker for an incomplete upload.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::SftpSource;
use crate::sftp::config::After;
use crate::sftp::{Connection, Final, is_missing, remote_path};
use crate::source::Listed;

impl SftpSource {
    /// [`Source::after`](crate::source::Source::after): deletes or moves the report (its
    /// done marker first) as `after` says.
    pub(super) fn clean_up(&mut self, report: &Listed) -> Result<()> {
        if self.dry_run || self.cfg.after == After::Leave {
            return Ok(());
        }
        match self.remote.get(&report.file_name) {
            Some(st) if st.size == report.size && st.mtime == report.mtime => {}
            _ => return Ok(()), // from the archive only: nothing on the server to clean up
        }
        let dir = self.cfg.remote_dir.clone();
        // The done marker first: should the report's own clean-up then fail, the report,
        // processed already, is cleaned up by the next run, while a marker left behind
        // would let the next upload of that name be taken before it is complete.
        // By their remote names: the server knows them by no other.
        let mut names = Vec::new();
        if let Some(suffix) = &self.cfg.done_suffix {
            let mut marker = report.file_name.clone();
            marker.push(suffix);
            names.push(marker);
        }
        names.push(report.file_name.clone());
        let after = self.cfg.after.clone();
        let what = match &after {
            After::Move(_) => format!("moving {}", report.name),
            _ => format!("deleting {}", report.name),
        };
        self.remote_op(&what, |c| {
            // The listing may be minutes old (deliveries ran since): only the file the
            // ledger holds is cleaned up. One replaced meanwhile is left, with its marker,
            // for the next run to read.
            let path = remote_path(&dir, &report.file_name);
            match c.sftp().stat(&path) {
                Ok(st)
                    if st.size != Some(report.size)
                        || st.mtime.map(|m| m as i64) != Some(report.mtime) =>
                {
                    return Err(anyhow::Error::new(Final(format!(
                        "{} changed on the server since it was listed: left for the next run",
                        path.display()
                    ))));
                }
                // Gone already: a try whose answer was lost, or someone else.
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            for n in &names {
                let from = remote_path(&dir, n);
                match &after {
                    After::Leave => {}
                    After::Delete => match c.sftp().unlink(&from) {
                        Err(e) if !is_missing(&e) => {
                            return Err(anyhow::Error::new(e)
                                .context(format!("cannot delete {}", from.display())));
                        }
                        _ => {}
                    },
                    After::Move(target) => {
                        let target_dir = if target.starts_with('/') {
                            PathBuf::from(target)
                        } else {
                            remote_path(&dir, target)
                        };
                        move_to(c, &from, &target_dir, n, report.mtime)?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// Moves `from` into `target_dir` (created if missing) as `name`; a name taken there by a
/// report of that name moved earlier is kept, and this one becomes `name.MTIME` (then
/// `name.MTIME-2`...). A file already gone is moved already.
fn move_to(c: &Connection, from: &Path, target_dir: &Path, name: &OsStr, mtime: i64) -> Result<()> {
    let sftp = c.sftp();
    if sftp.stat(target_dir).is_err()
        && let Err(e) = sftp.mkdir(target_dir, 0o755)
        && sftp.stat(target_dir).is_err()
    {
        return Err(anyhow::Error::new(e)
            .context(format!("cannot create the folder {}", target_dir.display())));
    }
    let cannot = || format!("cannot move {} to {}", from.display(), target_dir.display());
    for k in 0..20 {
        let mut to = name.to_os_string();
        match k {
            0 => {}
            1 => to.push(format!(".{mtime}")),
            _ => to.push(format!(".{mtime}-{k}")),
        }
        let to = target_dir.join(to);
        let Err(e) = sftp.rename(from, &to, None) else {
            return Ok(());
        };
        match sftp.stat(from) {
            Err(gone) if is_missing(&gone) => return Ok(()),
            _ => {}
        }
        if sftp.stat(&to).is_err() {
            // The name is free: the rename failed for another reason.
            return Err(anyhow::Error::new(e).context(cannot()));
        }
    }
    Err(anyhow::Error::new(Final(format!(
        "{}: 20 names for it are taken there",
        cannot()
    ))))
}
