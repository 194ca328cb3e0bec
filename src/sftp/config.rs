//! The SFTP parts of the configuration: `[source] type = "sftp"` and a file sink's
//! `upload = { ... }`, from TOML to validated settings. Unknown keys are errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::endpoint::Endpoint;
use crate::secret::Secret;
use crate::setting::{parse_duration, resolve};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;

fn ssh_port() -> u16 {
    22
}

/// The most SSH connections one download may use at once.
const MAX_CONNECTIONS: u32 = 8;

fn default_patterns() -> Vec<String> {
    vec!["*.csv".into(), "*.xlsx".into()]
}

/// `[source] type = "sftp"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSftp {
    host: String,
    #[serde(default = "ssh_port")]
    port: u16,
    username: String,
    password_env: Option<String>,
    password_file: Option<String>,
    private_key: Option<String>,
    private_key_passphrase_env: Option<String>,
    #[serde(default)]
    use_agent: bool,
    known_hosts: Option<String>,
    host_key_fingerprint: Option<String>,
    remote_dir: String,
    #[serde(default = "default_patterns")]
    pub(crate) patterns: Vec<String>,
    min_age: Option<String>,
    settle: Option<String>,
    done_suffix: Option<String>,
    after: Option<String>,
    timeout: Option<String>,
    download_dir: Option<String>,
    keep: Option<String>,
    connections: Option<u32>,
}

/// A file sink's `upload = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpload {
    host: String,
    #[serde(default = "ssh_port")]
    port: u16,
    username: String,
    password_env: Option<String>,
    password_file: Option<String>,
    private_key: Option<String>,
    private_key_passphrase_env: Option<String>,
    #[serde(default)]
    use_agent: bool,
    known_hosts: Option<String>,
    host_key_fingerprint: Option<String>,
    remote_dir: String,
    timeout: Option<String>,
}

/// What happens to a remote report once its ledger commit is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum After {
    Leave,
    Delete,
    /// Renamed into this folder (relative to `remote_dir` unless absolute).
    Move(String),
}

#[derive(Clone)]
pub(crate) struct SftpSourceConfig {
    pub(crate) endpoint: Endpoint,
    pub(crate) remote_dir: String,
    pub(crate) min_age: Duration,
    pub(crate) settle: Duration,
    pub(crate) done_suffix: Option<String>,
    pub(crate) after: After,
    pub(crate) download_dir: PathBuf,
    pub(crate) keep: Duration,
    /// SSH connections a large report is downloaded over at once, each taking a byte range.
    pub(crate) connections: usize,
}

#[derive(Clone)]
pub(crate) struct UploadConfig {
    pub(crate) endpoint: Endpoint,
    pub(crate) remote_dir: String,
}

fn duration(value: Option<&str>, default: &str, key: &str, origin: &str) -> Result<Duration> {
    parse_duration(value.unwrap_or(default)).with_context(|| format!("{origin}: `{key}`"))
}

/// The connection keys both tables share.
struct Keys<'a> {
    host: &'a str,
    port: u16,
    username: &'a str,
    password_env: &'a Option<String>,
    password_file: &'a Option<String>,
    private_key: &'a Option<String>,
    private_key_passphrase_env: &'a Option<String>,
    use_agent: bool,
    known_hosts: &'a Option<String>,
    host_key_fingerprint: &'a Option<String>,
    timeout: &'a Option<String>,
}

fn endpoint(k: Keys<'_>, base: &Path, origin: &str) -> Result<Endpoint> {
    if k.host.trim().is_empty() {
        bail!("{origin}: `host` is empty");
    }
    if k.username.trim().is_empty() {
        bail!("{origin}: `username` is empty");
    }
    let password = match (k.password_env, k.password_file) {
        (Some(_), Some(_)) => bail!("{origin}: set `password_env` or `password_file`, not both"),
        (Some(var), None) => Some(Secret::env("password_env", var)),
        (None, Some(p)) => Some(Secret::file("password_file", resolve(base, p))),
        (None, None) => None,
    };
    if k.private_key.is_none() && k.private_key_passphrase_env.is_some() {
        bail!("{origin}: `private_key_passphrase_env` is set but `private_key` is not");
    }
    if password.is_none() && k.private_key.is_none() && !k.use_agent {
        bail!(
            "{origin}: no way to log in: set `password_env`, `password_file`, `private_key` or `use_agent = true`"
        );
    }
    if k.known_hosts.is_none() && k.host_key_fingerprint.is_none() {
        bail!(
            "{origin}: the server's host key cannot be verified: set `known_hosts` (e.g. \"~/.ssh/known_hosts\") \
             or `host_key_fingerprint` (`tangoe-ingest hostkey` prints the server's keys and fingerprints)"
        );
    }
    // Some tools print the fingerprint with base64's padding (`=`); `ssh-keygen` does not.
    let fingerprint = k
        .host_key_fingerprint
        .as_deref()
        .map(|fp| fp.trim().trim_end_matches('=').to_string());
    if let Some(fp) = &fingerprint {
        let ok = fp
            .strip_prefix("SHA256:")
            .and_then(|b64| STANDARD_PAD_INDIFFERENT.decode(b64).ok())
            .is_some_and(|d| d.len() == 32);
        if !ok {
            bail!(
                "{origin}: host_key_fingerprint {fp:?} is not a SHA256 fingerprint as `ssh-keygen -lf` prints it \
                 (\"SHA256:\" followed by 43 base64 characters)"
            );
        }
    }
    let timeout = duration(k.timeout.as_deref(), "30s", "timeout", origin)?;
    if timeout.is_zero() {
        bail!("{origin}: `timeout` must be more than 0");
    }
    Ok(Endpoint {
        host: k.host.trim().to_string(),
        port: k.port,
        username: k.username.to_string(),
        password,
        private_key: k.private_key.as_deref().map(|p| resolve(base, p)),
        passphrase: k
            .private_key_passphrase_env
            .as_deref()
            .map(|var| Secret::env("private_key_passphrase_env", var)),
        use_agent: k.use_agent,
        known_hosts: k.known_hosts.as_deref().map(|p| resolve(base, p)),
        fingerprint,
        timeout,
    })
}

impl RawSftp {
    /// Validates the table; `ledger` is the resolved ledger path (downloads default to
    /// a `downloads` folder beside it).
    pub(crate) fn resolve(
        &self,
        base: &Path,
        origin: &str,
        ledger: &Path,
    ) -> Result<SftpSourceConfig> {
        let origin = format!("{origin} [source]");
        let endpoint = endpoint(
            Keys {
                host: &self.host,
                port: self.port,
                username: &self.username,
                password_env: &self.password_env,
                password_file: &self.password_file,
                private_key: &self.private_key,
                private_key_passphrase_env: &self.private_key_passphrase_env,
                use_agent: self.use_agent,
                known_hosts: &self.known_hosts,
                host_key_fingerprint: &self.host_key_fingerprint,
                timeout: &self.timeout,
            },
            base,
            &origin,
        )?;
        let after = match self.after.as_deref().unwrap_or("leave") {
            "leave" => After::Leave,
            "delete" => After::Delete,
            other => match other.strip_prefix("move:") {
                Some(dir) if !dir.trim().is_empty() => After::Move(dir.trim().to_string()),
                _ => bail!(
                    "{origin}: after = {other:?} must be \"leave\", \"delete\" or \"move:FOLDER\""
                ),
            },
        };
        if let Some(s) = &self.done_suffix
            && (s.is_empty() || s.contains('/'))
        {
            bail!(
                "{origin}: done_suffix {s:?} must be a non-empty file name suffix such as \".done\""
            );
        }
        let download_dir = match &self.download_dir {
            Some(d) => resolve(base, d),
            None => ledger
                .parent()
                .map_or_else(|| PathBuf::from("downloads"), |p| p.join("downloads")),
        };
        let connections = self.connections.unwrap_or(1);
        if !(1..=MAX_CONNECTIONS).contains(&connections) {
            bail!("{origin}: `connections` = {connections} must be from 1 to {MAX_CONNECTIONS}");
        }
        Ok(SftpSourceConfig {
            endpoint,
            remote_dir: self.remote_dir.clone(),
            min_age: duration(self.min_age.as_deref(), "2m", "min_age", &origin)?,
            settle: duration(self.settle.as_deref(), "5s", "settle", &origin)?,
            done_suffix: self.done_suffix.clone(),
            after,
            download_dir,
            keep: duration(self.keep.as_deref(), "90d", "keep", &origin)?,
            connections: connections as usize,
        })
    }
}

impl RawUpload {
    pub(crate) fn resolve(&self, base: &Path, origin: &str) -> Result<UploadConfig> {
        let origin = format!("{origin} upload");
        let endpoint = endpoint(
            Keys {
                host: &self.host,
                port: self.port,
                username: &self.username,
                password_env: &self.password_env,
                password_file: &self.password_file,
                private_key: &self.private_key,
                private_key_passphrase_env: &self.private_key_passphrase_env,
                use_agent: self.use_agent,
                known_hosts: &self.known_hosts,
                host_key_fingerprint: &self.host_key_fingerprint,
                timeout: &self.timeout,
            },
            base,
            &origin,
        )?;
        Ok(UploadConfig {
            endpoint,
            remote_dir: self.remote_dir.clone(),
        })
    }
}
