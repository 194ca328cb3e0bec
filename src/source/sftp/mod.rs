//! An SFTP drop folder: the reports are the regular files of `remote_dir` (not recursive)
//! whose names match the patterns.
//!
//! Invariants:
//! - a remote name never writes outside `download_dir`: a report is saved under a safe local
//!   name made from its remote name (see `archive`), and a name that is no file name (`.`,
//!   `..`, one holding `/` or NUL) is never used at all; every other name is taken, and the
//!   server is only ever asked for a report by its remote name;
//! - a file that matches the patterns but cannot be taken is listed as skipped, with why;
//! - a file still being uploaded is left for a later run (`min_age`, `settle`, `done_suffix`);
//! - a download streams to a hidden temporary file with a large read buffer (libssh2 keeps
//!   4 × the caller's buffer in flight), is hashed on the way, checked against the listed
//!   size and only then renamed into the archive: no report is ever held whole in memory;
//! - a dropped connection is retried (3 tries, resuming where the download stopped);
//! - nothing remote is changed except by [`Source::after`], which the pipeline calls only
//!   after the report's ledger commit, and never in a dry run.
//!
//! `list` reads the folder and decides what waits for a later run; `download` fetches one
//! report (the local archive first), over one connection with `spool` writing and hashing
//! it, or in byte ranges over several (`ranges`); `after` cleans up on the server.

mod after;
mod download;
mod list;
mod ranges;
mod spool;

use std::collections::HashMap;
use std::ffi::OsString;

use anyhow::Result;
use globset::GlobSet;

use super::archive::Archive;
use super::{Fetched, Listed, Source};
use crate::sftp::config::SftpSourceConfig;
use crate::sftp::{Connection, with_retries};

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

pub(crate) struct SftpSource {
    cfg: SftpSourceConfig,
    patterns: GlobSet,
    backfill: bool,
    dry_run: bool,
    conn: Option<Connection>,
    archive: Archive,
    /// Where a dry run downloads to; removed with the source.
    scratch: Option<tempfile::TempDir>,
    /// The reports of the last remote listing, by remote name.
    remote: HashMap<OsString, Stat>,
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
        let conn = match self.conn.take() {
            Some(c) => c,
            None => self.cfg.endpoint.connect()?,
        };
        Ok(self.conn.insert(conn))
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

    /// Removes leftover `.part` files and the reports older than `keep` from the archive.
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

impl Source for SftpSource {
    fn list(&mut self) -> Result<Vec<Listed>> {
        self.list_reports()
    }

    fn settle(&mut self, listed: &mut [Listed], is_new: &dyn Fn(&Listed) -> bool) -> Result<()> {
        self.settle_new(listed, is_new)
    }

    fn fetch(&mut self, report: &Listed) -> Result<Fetched> {
        self.fetch_report(report)
    }

    fn after(&mut self, report: &Listed) -> Result<()> {
        self.clean_up(report)
    }
}
