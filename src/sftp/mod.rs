//! SFTP connections (libssh2 through the `ssh2` crate), shared by the SFTP source and the
//! file sink's upload.
//!
//! Invariants: every connection verifies the server's host key — against known_hosts or a
//! pinned SHA256 fingerprint — *before* any authentication is attempted, and there is no
//! way to skip that check. Every blocking call (TCP connect, handshake, each SFTP request)
//! is bounded by the endpoint's `timeout`. Secrets are loaded only to authenticate and are
//! never written to logs or error messages.

pub(crate) mod config;
pub(crate) mod known_hosts;

use std::cell::Cell;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use backon::{BlockingRetryable, ExponentialBuilder};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use secrecy::{ExposeSecret, SecretString};
use ssh2::{MethodType, Session, Sftp};

use known_hosts::{KEY_TYPES, KnownHosts, algorithms_for, fingerprint, key_type_of, lookup_name};

/// Where a secret comes from; it is read only when it is needed.
#[derive(Debug, Clone)]
pub(crate) enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    /// The secret; an error is [`Final`] (trying the login again cannot set a variable or
    /// create a file).
    fn load(&self, key: &str) -> Result<SecretString> {
        self.read(key).map_err(|e| anyhow!(Final(format!("{e:#}"))))
    }

    fn read(&self, key: &str) -> Result<SecretString> {
        match self {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => bail!("`{key}` names the environment variable {var}, which is not set"),
            },
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the {key} file {}", path.display()))?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                Ok(SecretString::from(text.to_string()))
            }
        }
    }
}

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

/// An error that trying again cannot fix: the server refused (host key not trusted, login
/// failed), the file changed under the download, or the local copy cannot be written.
#[derive(Debug)]
pub(crate) struct Final(pub(crate) String);

impl std::fmt::Display for Final {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Final {}

/// Whether trying `e` again on a new connection cannot help: a [`Final`] error, or the
/// server's "no such file" or "permission denied".
pub(crate) fn is_final(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Final>().is_some()) || sftp_status(e, &[2, 3])
}

/// The server's "no such file".
pub(crate) fn is_missing(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::SFTP(2)
}

/// Whether `e` carries one of these SFTP status codes (2: no such file, 3: permission
/// denied).
pub(crate) fn sftp_status(e: &anyhow::Error, codes: &[i32]) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ssh2::Error>()
            .is_some_and(|s| matches!(s.code(), ssh2::ErrorCode::SFTP(n) if codes.contains(&n)))
    })
}

/// The wait before the second try; each later wait is twice the one before.
const FIRST_WAIT: Duration = Duration::from_secs(1);

/// Runs `f` up to `tries` times, waiting 1 s, 2 s, 4 s... between tries; a [`Final`]
/// error ends at once. `f` gets the attempt number (1-based).
pub(crate) fn with_retries<T>(
    what: &str,
    tries: u32,
    mut f: impl FnMut(u32) -> Result<T>,
) -> Result<T> {
    let attempt = Cell::new(0u32);
    let waits = ExponentialBuilder::default()
        .with_min_delay(FIRST_WAIT)
        .with_factor(2.0)
        .without_max_delay()
        .with_max_times(tries.saturating_sub(1) as usize);
    (|| {
        attempt.set(attempt.get() + 1);
        f(attempt.get())
    })
    .retry(waits)
    .sleep(std::thread::sleep)
    .when(|e| !is_final(e))
    .notify(|e, wait| {
        tracing::warn!(
            "{what} failed (try {} of {tries}), retrying in {}s: {e:#}",
            attempt.get(),
            wait.as_secs()
        );
    })
    .call()
}

/// One line of a known_hosts file for `blob`.
pub(crate) fn known_hosts_line(host: &str, port: u16, blob: &[u8]) -> String {
    let key_type = key_type_of(blob).unwrap_or_else(|| "unknown".into());
    format!(
        "{} {key_type} {}",
        lookup_name(host, port),
        STANDARD.encode(blob)
    )
}

/// An authenticated SFTP session.
pub(crate) struct Connection {
    session: Session,
    sftp: Sftp,
}

impl Connection {
    pub(crate) fn sftp(&self) -> &Sftp {
        &self.sftp
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.session.disconnect(None, "done", None);
    }
}

fn timeout_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

impl Endpoint {
    /// `user@host:port`, for messages.
    pub(crate) fn label(&self) -> String {
        format!("{}@{}:{}", self.username, self.host, self.port)
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn tcp(&self) -> Result<TcpStream> {
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve the SFTP host {}", self.host))?
            .collect();
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => {
                    s.set_read_timeout(Some(self.timeout))?;
                    s.set_write_timeout(Some(self.timeout))?;
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(anyhow!(e).context(format!("cannot connect to {}", self.addr()))),
            None => bail!("the SFTP host {} has no address", self.host),
        }
    }

    /// TCP connect and SSH handshake, offering only `algorithms` for the host key if given.
    fn handshake(&self, algorithms: Option<&str>) -> Result<Session> {
        let tcp = self.tcp()?;
        let mut session = Session::new().context("cannot start an SSH session")?;
        session.set_timeout(timeout_ms(self.timeout));
        session.set_tcp_stream(tcp);
        if let Some(algs) = algorithms {
            session
                .method_pref(MethodType::HostKey, algs)
                .with_context(|| format!("this build cannot verify host keys of type {algs}"))?;
        }
        session.handshake().map_err(|e| {
            let hint = if e.code() == ssh2::ErrorCode::Session(-9) {
                format!(
                    " (no answer within the timeout of {}s)",
                    self.timeout.as_secs_f32()
                )
            } else {
                String::new()
            };
            anyhow!("SSH handshake with {} failed{hint}: {e}", self.addr())
        })?;
        Ok(session)
    }

    fn server_key(&self, session: &Session) -> Result<Vec<u8>> {
        session
            .host_key()
            .map(|(k, _)| k.to_vec())
            .ok_or_else(|| anyhow!("{} sent no host key", self.addr()))
    }

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
    fn verified_session(&self) -> Result<Session> {
        let Some(kh_path) = &self.known_hosts else {
            return self.pinned_session();
        };
        let kh = KnownHosts::load(kh_path)?;
        let file = kh_path.display().to_string();
        let known = kh.lookup(&self.host, self.port);
        if known.keys.is_empty() {
            let session = self.handshake(None)?;
            let key = self.server_key(&session)?;
            let missing = if kh.exists {
                ""
            } else {
                " (the file does not exist)"
            };
            return Err(anyhow!(Final(format!(
                "UNKNOWN HOST KEY: the SFTP server {} is not listed in the known_hosts file {file}{missing}. \
                 It presents an {}. Nothing was transferred.\n{}",
                self.addr(),
                Self::describe(&key),
                self.add_hint(&key, &file)
            ))));
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
        if known.revoked.contains(&key) {
            bail!(Final(format!(
                "REVOKED HOST KEY: {} presents an {}, which {file} marks @revoked. Nothing was transferred.",
                self.addr(),
                Self::describe(&key)
            )));
        }
        if let Some(k) = known.keys.iter().find(|k| k.blob == key) {
            tracing::debug!(host = %self.addr(), line = k.line, "host key verified against known_hosts");
            if let Some(pin) = &self.fingerprint
                && *pin != fingerprint(&key)
            {
                bail!(Final(format!(
                    "HOST KEY MISMATCH: {} presents an {}, which known_hosts {file} lists, but \
                     host_key_fingerprint pins {pin}. Nothing was transferred.",
                    self.addr(),
                    Self::describe(&key)
                )));
            }
            return Ok(session);
        }
        let key_type = key_type_of(&key).unwrap_or_default();
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
            Self::describe(&key),
            listed.join("; "),
            known_hosts_line(&self.host, self.port, &key)
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

    fn authenticate(&self, session: &Session) -> Result<()> {
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
                    Some(p) => Some(p.load("private_key_passphrase_env")?),
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
            let password = source.load("password")?;
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

    /// Connects, verifies the host key, logs in and opens the SFTP subsystem.
    pub(crate) fn connect(&self) -> Result<Connection> {
        let session = self.verified_session()?;
        self.authenticate(&session)?;
        tracing::debug!(
            server = %self.label(),
            cipher = session.methods(MethodType::CryptSc).unwrap_or("?"),
            host_key = session.methods(MethodType::HostKey).unwrap_or("?"),
            "SSH session established"
        );
        let sftp = session
            .sftp()
            .with_context(|| format!("cannot start SFTP on {}", self.addr()))?;
        tracing::debug!(server = %self.label(), "SFTP session open");
        Ok(Connection { session, sftp })
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

/// Joins a remote folder and a name with `/`.
pub(crate) fn remote_path(dir: &str, name: &str) -> PathBuf {
    if dir.is_empty() {
        return PathBuf::from(name);
    }
    Path::new(dir).join(name)
}

impl Connection {
    /// The names in `remote_dir` that start with `prefix`. The upload temporaries of import
    /// files of this prefix (`.PREFIX-FIRST-LAST....part`) an interrupted upload left behind
    /// an hour or more ago are removed: younger ones may be another uploader's, at work.
    pub(crate) fn names_in(&self, remote_dir: &str, prefix: &str) -> Result<Vec<String>> {
        let entries = self
            .sftp
            .readdir(Path::new(remote_dir))
            .with_context(|| format!("cannot list {remote_dir} on the SFTP server"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ours = |n: &str| {
            n.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|r| r.len() > 12 && r.as_bytes()[..12].iter().all(u8::is_ascii_digit))
        };
        let mut names = Vec::new();
        for (path, st) in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let part = name.strip_prefix('.').and_then(|n| n.strip_suffix(".part"));
            if let Some(p) = part {
                let old = st.mtime.is_some_and(|m| now.saturating_sub(m) >= 3600);
                if ours(p) && old {
                    let _ = self.sftp.unlink(&path);
                }
            } else if name.starts_with(prefix) {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    /// The size of `remote_dir/name`, if it exists.
    pub(crate) fn size_of(&self, remote_dir: &str, name: &str) -> Result<Option<u64>> {
        let path = remote_path(remote_dir, name);
        match self.sftp.stat(&path) {
            Ok(st) => Ok(Some(st.size.unwrap_or(0))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("cannot look at {}", path.display())))
            }
        }
    }

    /// Uploads `local` as `remote_dir/name`: written under a hidden temporary name, its size
    /// checked, then renamed into place, so a consumer never sees a partial file. A file of
    /// that name already there is replaced only if `replace` (the caller knows it for its
    /// own earlier upload of the same events); otherwise the upload fails, and the file is
    /// kept.
    /// `renamed`: set when this upload sends its rename; when an earlier try had set it, a
    /// file of the name and the same size is that try's (its answer was lost).
    pub(crate) fn upload(
        &self,
        local: &Path,
        remote_dir: &str,
        name: &str,
        replace: bool,
        renamed: &mut bool,
    ) -> Result<()> {
        use std::io::{Read, Write};
        let tmp = remote_path(remote_dir, &format!(".{name}.part"));
        let dest = remote_path(remote_dir, name);
        let mut src = std::fs::File::open(local)
            .with_context(|| format!("cannot open {}", local.display()))?;
        let expected = src.metadata()?.len();
        let mut remote = self
            .sftp
            .create(&tmp)
            .with_context(|| format!("cannot create {} on the SFTP server", tmp.display()))?;
        // libssh2 keeps the whole buffer given to one write in flight: a large one pipelines.
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", local.display()))?;
            if n == 0 {
                break;
            }
            remote
                .write_all(&buf[..n])
                .with_context(|| format!("cannot write {} on the SFTP server", tmp.display()))?;
        }
        let _ = remote.fsync();
        remote
            .close()
            .with_context(|| format!("cannot close {} on the SFTP server", tmp.display()))?;
        let size = self.sftp.stat(&tmp)?.size.unwrap_or(0);
        if size != expected {
            let _ = self.sftp.unlink(&tmp);
            bail!("the upload of {name} is incomplete: {size} of {expected} bytes arrived");
        }
        let retry = *renamed;
        *renamed = true;
        if let Err(e) = self.sftp.rename(&tmp, &dest, None) {
            // SFTP v3 renames do not overwrite.
            let there = self.sftp.stat(&dest).ok().map(|st| st.size);
            if retry && there == Some(Some(expected)) {
                let _ = self.sftp.unlink(&tmp); // the earlier try's file
                return Ok(());
            }
            if !replace {
                let _ = self.sftp.unlink(&tmp);
                let what = format!(
                    "cannot rename {} to {} on the SFTP server",
                    tmp.display(),
                    dest.display()
                );
                // A file of that name appeared: trying again cannot help (and must not take it
                // for this upload's); the next run picks another name.
                if there.is_some() {
                    return Err(anyhow::Error::new(Final(format!(
                        "{what}: a file of that name appeared there meanwhile, and is kept"
                    ))));
                }
                return Err(anyhow::Error::new(e).context(what));
            }
            let _ = self.sftp.unlink(&dest);
            self.sftp.rename(&tmp, &dest, None).with_context(|| {
                format!(
                    "cannot rename {} to {} on the SFTP server",
                    tmp.display(),
                    dest.display()
                )
            })?;
        }
        Ok(())
    }
}

/// The endpoint `tangoe-ingest hostkey` asks: `host` if given, else a sink's upload server
/// (`sink`), else the configured SFTP source.
pub(crate) fn hostkey_endpoint(
    cfg: Option<&crate::config::Config>,
    host: Option<&str>,
    port: u16,
    sink: Option<&str>,
) -> Result<Endpoint> {
    if let Some(host) = host {
        return Ok(Endpoint {
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
        });
    }
    let cfg = cfg.context("no HOST given and no configuration")?;
    if let Some(name) = sink {
        for s in &cfg.sinks {
            match s {
                crate::config::SinkConfig::File(f) if f.name == name => {
                    return match &f.upload {
                        Some(u) => Ok(u.endpoint.clone()),
                        None => bail!("the sink {name:?} has no `upload`"),
                    };
                }
                _ => {}
            }
        }
        bail!("no sink is named {name:?}");
    }
    match &cfg.source {
        crate::config::SourceConfig::Sftp(s) => Ok(s.endpoint.clone()),
        _ => bail!(
            "the configured [source] is not SFTP: give a HOST (e.g. `tangoe-ingest hostkey sftp.example.com --port 22`)"
        ),
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

/// Whether the private key file at `path` is encrypted with a passphrase: `None` when that
/// cannot be told (unreadable, or a format this does not know).
fn key_is_encrypted(path: &std::path::Path) -> Option<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stop_at_a_final_error_or_after_the_tries() {
        let mut calls = Vec::new();
        let r: Result<()> = with_retries("test", 3, |a| {
            calls.push(a);
            bail!(Final("refused".into()))
        });
        assert!(r.is_err());
        assert_eq!(calls, [1], "a final error is not tried again");

        let mut calls = Vec::new();
        let r = with_retries("test", 2, |a| {
            calls.push(a);
            if a < 2 { bail!("dropped") } else { Ok(a) }
        });
        assert_eq!(r.unwrap(), 2);
        assert_eq!(calls, [1, 2]);

        let mut calls = 0;
        let r: Result<()> = with_retries("test", 2, |_| {
            calls += 1;
            bail!("dropped")
        });
        assert!(r.is_err());
        assert_eq!(calls, 2, "gives up after `tries`");
    }
}
