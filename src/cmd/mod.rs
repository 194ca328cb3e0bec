//! The operator's commands beside the pipeline: `check`, `inspect`, `init`, `completions`
//! and `man`. Each module takes plain arguments, does its work through the library, prints
//! to stdout and returns the exit code; none of them writes to the ledger.
//!
//! Arrows point down only: `app` calls these; these call the library (`config`, `report`,
//! `source`, `sftp`, `sink`, `template`), never `app` or each other.

pub(crate) mod check;
pub(crate) mod completions;
pub(crate) mod init;
pub(crate) mod inspect;
