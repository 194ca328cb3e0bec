//! Host key verification, and what `tangoe-ingest hostkey` prints.
//!
//! Invariant: a session is handed on only when the server's key is listed for the host in
//! known_hosts (and not `@revoked`) or matches `host_key_fingerprint` (both, when both are
//! set); otherwise the error is [`Final`], names the key and says how to trust it, and
//! nothing has been transferred. There is no way to accept an unknown key.

use anyhow::{Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ssh2::Session;

use super::endpoint::Endpoint;
use super::known_hosts::{
    HostKeys, KEY_TYPES, KnownHosts, algorithms_for, fingerprint, key_type_of, lookup_name,
};
use super::retry::Final;

/// One line of a known_hosts file for `blob`.
pub(crate) fn known_hosts_line(host: &str, port: u16, blob: &[u8]) -> String {
    let key_type = key_type_of(blob).unwrap_or_else(|| "unknown".into());
    format!(
        "{} {key_type} {}",
        lookup_name(host, port),
        STANDARD.encode(blob)
    )
}

impl Endpoint {
    /// The host keys the server offers, one per key type (what `ssh-keyscan` prints).
    pub(crate) fn scan(&self) -> Result<Vec<Vec<u8>>> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut first_err = None;
        for t in KEY_TYPES {
            match self.handshake(Some(&algorithms_for(t).join(","))) {
                Ok(s) => {
                    let k = self.server_key(&s)?;
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                    let _ = s.disconnect(None, "scan", None);
                }
                Err(e) => {
                    tracing::debug!("no {t} host key: {e:#}");
                    first_err.get_or_insert(e);
                }
            }
        }
        if keys.is_empty() {
            return Err(first_err.unwrap_or_else(|| anyhow!("{} offered no host key", self.addr())));
        }
        Ok(keys)
    }

    fn add_hint(&self, blob: &[u8], file: &str) -> String {
        let fp = fingerprint(blob);
        format!(
            "To trust this server, first confirm the fingerprint {fp} with the site's operator; then add \
             this line to {file}:\n  {}\n(`tangoe-ingest hostkey` prints the server's keys), or set \
             host_key_fingerprint = \"{fp}\"",
            known_hosts_line(&self.host, self.port, blob)
        )
    }

    fn describe(blob: &[u8]) -> String {
        format!(
            "{} key with fingerprint {}",
            key_type_of(blob).unwrap_or_else(|| "unknown".into()),
            fingerprint(blob)
        )
    }

    /// Handshake and host key verification; returns a session not yet authenticated.
    pub(super) fn verified_session(&self) -> Result<Session> {
        let Some(kh_path) = &self.known_hosts else {
            return self.pinned_session();
        };
        let kh = KnownHosts::load(kh_path)?;
        let file = kh_path.display().to_string();
        let known = kh.lookup(&self.host, self.port);
        if known.keys.is_empty() {
            return Err(self.unknown_host(kh.exists, &file));
        }
        let types = known.key_types();
        let algs: Vec<&str> = types
            .iter()
            .flat_map(|t| algorithms_for(t).iter().copied())
            .collect();
        if algs.is_empty() {
            bail!(Final(format!(
                "known_hosts {file} lists {} for {} only with key types this build cannot verify ({})",
                lookup_name(&self.host, self.port),
                self.addr(),
                types.join(", ")
            )));
        }
        let session = match self.handshake(Some(&algs.join(","))) {
            Ok(s) => s,
            Err(e) => {
                // The server has none of the known key types: show what it does have.
                let Ok(other) = self.handshake(None) else {
                    return Err(e);
                };
                let key = self.server_key(&other)?;
                bail!(Final(format!(
                    "HOST KEY MISMATCH: known_hosts {file} lists {} key(s) for {}, but the server offers none \
                     of those types; it presents an {}. Someone may be intercepting the connection, or the \
                     server's keys were replaced. Nothing was transferred.\n{}",
                    types.join(", "),
                    self.addr(),
                    Self::describe(&key),
                    self.add_hint(&key, &file)
                )));
            }
        };
        let key = self.server_key(&session)?;
        self.check_known(&key, &known, &file)?;
        Ok(session)
    }

    /// The error for a host that known_hosts does not list: it names the key the server
    /// presents and the line to add.
    fn unknown_host(&self, file_exists: bool, file: &str) -> anyhow::Error {
        let key = match self.handshake(None).and_then(|s| self.server_key(&s)) {
            Ok(k) => k,
            Err(e) => return e,
        };
        let missing = if file_exists {
            ""
        } else {
            " (the file does not exist)"
        };
        anyhow!(Final(format!(
            "UNKNOWN HOST KEY: the SFTP server {} is not listed in the known_hosts file {file}{missing}. \
             It presents an {}. Nothing was transferred.\n{}",
            self.addr(),
            Self::describe(&key),
            self.add_hint(&key, file)
        )))
    }

    /// Whether the server's `key` is one known_hosts lists for the host (and not revoked),
    /// and matches the pin if one is set.
    fn check_known(&self, key: &[u8], known: &HostKeys, file: &str) -> Result<()> {
        if known.revoked.iter().any(|r| r == key) {
            bail!(Final(format!(
                "REVOKED HOST KEY: {} presents an {}, which {file} marks @revoked. Nothing was transferred.",
                self.addr(),
                Self::describe(key)
            )));
        }
        if let Some(k) = known.keys.iter().find(|k| k.blob == key) {
            tracing::debug!(host = %self.addr(), line = k.line, "host key verified against known_hosts");
            if let Some(pin) = &self.fingerprint
                && *pin != fingerprint(key)
            {
                bail!(Final(format!(
                    "HOST KEY MISMATCH: {} presents an {}, which known_hosts {file} lists, but \
                     host_key_fingerprint pins {pin}. Nothing was transferred.",
                    self.addr(),
                    Self::describe(key)
                )));
            }
            return Ok(());
        }
        let key_type = key_type_of(key).unwrap_or_default();
        let same_type = known.keys.iter().any(|k| k.key_type == key_type);
        let listed: Vec<String> = known
            .keys
            .iter()
            .filter(|k| !same_type || k.key_type == key_type)
            .map(|k| format!("line {}: {} {}", k.line, k.key_type, fingerprint(&k.blob)))
            .collect();
        Err(anyhow!(Final(format!(
            "HOST KEY MISMATCH: {} presents an {}, but known_hosts {file} lists a different key for it \
             ({}). Someone may be intercepting the connection, or the server's key was replaced. Nothing \
             was transferred.\nIf the site's operator confirms the new key, replace that line with:\n  {}",
            self.addr(),
            Self::describe(key),
            listed.join("; "),
            known_hosts_line(&self.host, self.port, key)
        ))))
    }

    /// Verification against `host_key_fingerprint` alone. The pin does not say which key
    /// type it is for, so when the key the server prefers does not match, the other types
    /// are tried one by one.
    fn pinned_session(&self) -> Result<Session> {
        let Some(pin) = &self.fingerprint else {
            bail!(Final(format!(
                "no way to verify the host key of {}: set known_hosts or host_key_fingerprint",
                self.addr()
            )));
        };
        let session = self.handshake(None)?;
        let key = self.server_key(&session)?;
        if fingerprint(&key) == *pin {
            return Ok(session);
        }
        drop(session);
        let mut seen = vec![Self::describe(&key)];
        let first_type = key_type_of(&key).unwrap_or_default();
        for t in KEY_TYPES.iter().filter(|t| **t != first_type) {
            let Ok(s) = self.handshake(Some(&algorithms_for(t).join(","))) else {
                continue;
            };
            let k = self.server_key(&s)?;
            if fingerprint(&k) == *pin {
                return Ok(s);
            }
            seen.push(Self::describe(&k));
        }
        Err(anyhow!(Final(format!(
            "HOST KEY MISMATCH: host_key_fingerprint pins {pin}, but {} presents: {}. Someone may be \
             intercepting the connection, or the server's key was replaced. Nothing was transferred.",
            self.addr(),
            seen.join("; ")
        ))))
    }
}

/// The server's host keys as known_hosts lines, each after a comment with its fingerprint
/// and what the configured known_hosts or pin says of it.
pub(crate) fn hostkey_report(ep: &Endpoint) -> Result<String> {
    let known = match &ep.known_hosts {
        Some(p) => Some((p, KnownHosts::load(p)?.lookup(&ep.host, ep.port))),
        None => None,
    };
    let mut out = String::new();
    for k in ep.scan()? {
        let fp = fingerprint(&k);
        let mut status = String::new();
        if let Some((path, hk)) = &known {
            let kind = key_type_of(&k).unwrap_or_default();
            status = if let Some(e) = hk.keys.iter().find(|e| e.blob == k) {
                format!(" (known: {} line {})", path.display(), e.line)
            } else if let Some(e) = hk.keys.iter().find(|e| e.key_type == kind) {
                // The same host and key type with another key: the host key changed, or
                // someone is in the middle.
                format!(
                    " (DIFFERS from the {kind} key {} line {} lists for this host)",
                    path.display(),
                    e.line
                )
            } else {
                format!(" (not in {})", path.display())
            };
        }
        if ep.fingerprint.as_deref() == Some(fp.as_str()) {
            status.push_str(" (matches host_key_fingerprint)");
        }
        out.push_str(&format!(
            "# {}:{} {}{status}\n",
            ep.host,
            ep.port,
            Endpoint::describe(&k)
        ));
        out.push_str(&known_hosts_line(&ep.host, ep.port, &k));
        out.push('\n');
    }
    Ok(out)
}
