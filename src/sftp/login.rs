//! Logging in: the agent's identities, then the key file, then the password (by
//! `keyboard-interactive` when the server offers only that), as configured.
//!
//! Invariant: a password or passphrase is read only here, only to log in, and never
//! appears in a log line or an error; when every way fails, the [`Final`] error names what
//! was tried and what the server offers.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use secrecy::{ExposeSecret, SecretString};
use ssh2::Session;

use super::endpoint::Endpoint;
use super::retry::Final;
use crate::secret::Secret;

/// A secret, read now to log in; an error is [`Final`] (trying the login again cannot set a
/// variable or create a file).
fn load(secret: &Secret) -> Result<SecretString> {
    secret.read().map_err(|e| anyhow!(Final(format!("{e:#}"))))
}

impl Endpoint {
    pub(super) fn authenticate(&self, session: &Session) -> Result<()> {
        let user = &self.username;
        let offered = session
            .auth_methods(user)
            .map(str::to_string)
            .with_context(|| format!("cannot ask {} which login methods it offers", self.addr()))?;
        if session.authenticated() {
            return Ok(());
        }
        let offers = |m: &str| offered.split(',').any(|o| o == m);
        let mut tried: Vec<String> = Vec::new();
        if self.use_agent {
            match self.auth_agent(session) {
                Ok(true) => return Ok(()),
                Ok(false) => tried.push("agent (no identity was accepted)".into()),
                Err(e) => tried.push(format!("agent ({e:#})")),
            }
        }
        if let Some(key) = &self.private_key {
            if offers("publickey") {
                let passphrase = match &self.passphrase {
                    Some(p) => Some(load(p)?),
                    None => None,
                };
                match session.userauth_pubkey_file(
                    user,
                    None,
                    key,
                    passphrase.as_ref().map(|p| p.expose_secret()),
                ) {
                    Ok(()) if session.authenticated() => return Ok(()),
                    Ok(()) => tried.push(format!("key file {} (not accepted)", key.display())),
                    Err(e) => {
                        // libssh2 says "Unable to extract public key from private key" when an
                        // OpenSSH-format key cannot be decrypted: say what is likely wrong.
                        let why = match (key_is_encrypted(key), passphrase.is_some()) {
                            (Some(true), false) => format!(
                                "the key is protected by a passphrase and none is configured \
                                 (private_key_passphrase_env); {}",
                                e.message()
                            ),
                            (Some(true), true) => {
                                format!("the passphrase does not open the key; {}", e.message())
                            }
                            _ => e.message().to_string(),
                        };
                        tried.push(format!("key file {} ({why})", key.display()));
                    }
                }
            } else {
                tried.push(format!(
                    "key file {} (the server does not offer publickey)",
                    key.display()
                ));
            }
        }
        if let Some(source) = &self.password {
            let password = load(source)?;
            if offers("password") {
                match session.userauth_password(user, password.expose_secret()) {
                    Ok(()) if session.authenticated() => return Ok(()),
                    _ => tried.push("password (rejected)".into()),
                }
            } else if offers("keyboard-interactive") {
                let mut answer = PasswordPrompt(password);
                match session.userauth_keyboard_interactive(user, &mut answer) {
                    Ok(()) if session.authenticated() => return Ok(()),
                    _ => tried.push("password by keyboard-interactive (rejected)".into()),
                }
            } else {
                tried.push("password (the server does not offer password login)".into());
            }
        }
        if tried.is_empty() {
            tried.push("nothing (no password, private_key or use_agent is configured)".into());
        }
        Err(anyhow!(Final(format!(
            "SFTP login as {user:?} on {} failed. Tried: {}. The server offers: {}. Check username, \
             password_env / password_file, private_key (and its passphrase) and use_agent.",
            self.addr(),
            tried.join("; "),
            if offered.is_empty() {
                "nothing".to_string()
            } else {
                offered.replace(',', ", ")
            }
        ))))
    }

    fn auth_agent(&self, session: &Session) -> Result<bool> {
        let mut agent = session.agent().context("cannot use the SSH agent")?;
        agent
            .connect()
            .context("cannot reach the SSH agent (is SSH_AUTH_SOCK set?)")?;
        agent
            .list_identities()
            .context("cannot list the SSH agent's identities")?;
        let ids = agent.identities()?;
        for id in &ids {
            if agent.userauth(&self.username, id).is_ok() && session.authenticated() {
                tracing::debug!(identity = %id.comment(), "logged in with an agent identity");
                let _ = agent.disconnect();
                return Ok(true);
            }
        }
        let _ = agent.disconnect();
        Ok(false)
    }
}

struct PasswordPrompt(SecretString);

impl ssh2::KeyboardInteractivePrompt for PasswordPrompt {
    fn prompt<'a>(
        &mut self,
        _user: &str,
        _instructions: &str,
        prompts: &[ssh2::Prompt<'a>],
    ) -> Vec<String> {
        prompts
            .iter()
            .map(|_| self.0.expose_secret().to_string())
            .collect()
    }
}

/// Whether the private key file at `path` is encrypted with a passphrase: `None` when that
/// cannot be told (unreadable, or a format this does not know).
fn key_is_encrypted(path: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(path).ok()?;
    if text.contains("ENCRYPTED") {
        return Some(true); // PEM: "Proc-Type: 4,ENCRYPTED" or "BEGIN ENCRYPTED PRIVATE KEY"
    }
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return if text.contains("-----BEGIN") {
            Some(false)
        } else {
            None
        };
    }
    // "openssh-key-v1\0", then the cipher's name as a length-prefixed string.
    let raw = STANDARD_PAD_INDIFFERENT.decode(&body).ok()?;
    let rest = raw.strip_prefix(b"openssh-key-v1\0")?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let cipher = rest.get(4..4 + len)?;
    Some(cipher != b"none")
}
