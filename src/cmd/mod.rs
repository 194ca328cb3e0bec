//! The operator's commands beside the pipeline: `check`, `inspect`, `init`, `completions`,
//! `man`, `reports` and `rejects`. Each module takes plain arguments, does its work through
//! the library and prints to stdout; `app` decides the exit code.
//!
//! Arrows point down only: `app` calls these; these call the library, never `app` or each
//! other.

pub(crate) mod check;
pub(crate) mod completions;
pub(crate) mod init;
pub(crate) mod inspect;
pub mod rejects;
pub mod reports;
