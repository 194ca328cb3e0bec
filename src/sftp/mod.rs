//! SFTP connections (libssh2 through the `ssh2` crate), shared by the SFTP source and the
//! file sink's upload: an [`Endpoint`] is a server and how to trust it and log in to it;
//! [`Endpoint::connect`] gives a [`Connection`].
//!
//! Invariants: every connection verifies the server's host key — against known_hosts or a
//! pinned SHA256 fingerprint — *before* any authentication is attempted, and there is no
//! way to skip that check. Every blocking call (TCP connect, handshake, each SFTP request)
//! is bounded by the endpoint's `timeout`. Secrets are loaded only to authenticate and are
//! never written to logs or error messages.
//!
//! - `endpoint`: a server, as configured;
//! - `session`: TCP, the SSH handshake, and the order of a connection's steps;
//! - `host_key` (with `known_hosts`): which server keys are trusted, and `tangoe-ingest hostkey`;
//! - `login`: the agent, the key file, the password;
//! - `upload`: putting a file in place on the server;
//! - `retry`: which failures another try can fix, and the trying;
//! - `config`: the TOML tables.

pub(crate) mod config;
mod endpoint;
mod host_key;
pub(crate) mod known_hosts;
mod login;
mod retry;
mod session;
mod upload;

pub(crate) use endpoint::{Endpoint, remote_path};
pub(crate) use host_key::hostkey_report;
pub(crate) use retry::{Final, is_final, is_missing, sftp_status, with_retries};
pub(crate) use session::{Connection, Step};
