//! An SFTP server and how to trust it and log in to it (what the configuration says; the
//! connecting is in `session`, `host_key` and `login`), and remote paths.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::Secret;

/// An SFTP server and how to trust it and log in to it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) username: String,
    pub(crate) password: Option<Secret>,
    pub(crate) private_key: Option<PathBuf>,
    pub(crate) passphrase: Option<Secret>,
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

    /// A server known only by its address, to be asked for its host keys
    /// (`tangoe-ingest hostkey HOST`).
    pub(crate) fn bare(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            port,
            username: String::new(),
            password: None,
            private_key: None,
            passphrase: None,
            use_agent: false,
            known_hosts: None,
            fingerprint: None,
            timeout: Duration::from_secs(30),
        }
    }

    pub(super) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Joins a remote folder and a name (any bytes but `/` and NUL) with `/`.
pub(crate) fn remote_path(dir: &str, name: impl AsRef<OsStr>) -> PathBuf {
    if dir.is_empty() {
        return PathBuf::from(name.as_ref());
    }
    Path::new(dir).join(name.as_ref())
}
