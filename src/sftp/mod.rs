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
//! - `session`: TCP, the SSH handshake, and the order of a connection's steps;
//! - `host_key` (with `known_hosts`): which server keys are trusted, and `tangoe-ingest hostkey`;
//! - `login`: the agent, the key file, the password;
//! - `upload`: putting a file in place on the server;
//! - `retry`: which failures another try can fix, and the trying;
//! - `config`: the TOML tables.

pub(crate) mod config;
mod host_key;
pub(crate) mod known_hosts;
mod login;
mod retry;
mod session;
mod upload;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use host_key::{hostkey_endpoint, hostkey_report};
pub(crate) use login::SecretSource;
pub(crate) use retry::{Final, is_final, is_missing, sftp_status, with_retries};
pub(crate) use session::Connection;

/// An SFTP server and how to trust it and log in to it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) username: String,
    pub(crate) password: Option<SecretSource>,
    pub(crate) private_key: Option<PathBuf>,
    pub(crate) passphrase: Option<SecretSource>,
    pub(crate) use_agent: bool,
    pub(crate) known_hosts: Option<PathBuf>,
    pub(crate) fingerprint: Option<String>,
    pub(crate) timeout: Duration,
}

impl Endpoint {
    /// `user@host:port`, for messages.
    pub(crate) fn label(&self) -> String {
        format!("{}@{}:{}", self.username, self.host, self.port)
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Joins a remote folder and a name with `/`.
pub(crate) fn remote_path(dir: &str, name: &str) -> PathBuf {
    if dir.is_empty() {
        return PathBuf::from(name);
    }
    Path::new(dir).join(name)
}
