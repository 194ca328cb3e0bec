//! tangoe-ingest: keeps a client's ITSM in step with Tangoe Mobile activity reports.
//!
//! `list → fetch → parse → plan → commit → deliver`: reports come from a drop folder,
//! are parsed by a schema into Activities, deduplicated against a SQLite ledger, and the
//! real state changes go out to ITSM import files. See README.md for the whole picture.

pub mod app;
pub(crate) mod attrs;
pub mod cli;
pub(crate) mod cmd;
pub(crate) mod config;
pub(crate) mod dedupe;
pub mod interrupt;
pub(crate) mod ledger;
pub(crate) mod lock;
pub mod logging;
pub(crate) mod pipeline;
pub(crate) mod printable;
pub(crate) mod report;
pub(crate) mod secret;
pub(crate) mod setting;
pub(crate) mod sftp;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod summary;
pub(crate) mod template;
pub(crate) mod timestamp;
