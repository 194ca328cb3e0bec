//! Report sources: `list()` the reports on offer and `fetch()` one to a local file.
//!
//! A source never decides what is new: the pipeline asks the ledger. Fetching yields a local
//! path plus the content's SHA-256 (and whether it is valid UTF-8), computed while reading.

pub(crate) mod local;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::report::csv::Utf8Check;

/// A report as a listing shows it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) size: u64,
    /// Modification time, seconds since the epoch.
    pub(crate) mtime: i64,
}

/// A report available as a local file.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) path: PathBuf,
    pub(crate) sha256: String,
    pub(crate) size: u64,
    pub(crate) utf8: bool,
}

pub(crate) trait Source {
    /// The reports on offer, in no particular order.
    fn list(&mut self) -> Result<Vec<Listed>>;
    /// Makes a listed report available locally, hashing it on the way.
    fn fetch(&mut self, report: &Listed) -> Result<Fetched>;
}

/// Streams a file once for its SHA-256, size and UTF-8 validity.
pub(crate) fn hash_file(path: &Path) -> Result<Fetched> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut utf8 = Utf8Check::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        utf8.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Fetched {
        path: path.to_path_buf(),
        sha256: hex::encode(hasher.finalize()),
        size,
        utf8: utf8.is_valid(),
    })
}
