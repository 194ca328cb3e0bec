//! One SSH connection: TCP with timeouts, the handshake, then — in this order, always —
//! host key verification, login and the SFTP subsystem.
//!
//! Invariant: [`Endpoint::connect`] is the only way to a [`Connection`], and it verifies the
//! host key before it sends any credential; every blocking call is bounded by `timeout`.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ssh2::{MethodType, Session, Sftp};

use super::endpoint::Endpoint;

/// The steps of a connection, in order: reaching the server and verifying its host key,
/// logging in, opening SFTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    HostKey,
    Login,
    Sftp,
}

/// An authenticated SFTP session.
pub(crate) struct Connection {
    session: Session,
    sftp: Sftp,
}

/// libssh2's codes for a packet whose integrity check failed: `LIBSSH2_ERROR_DECRYPT`
/// (an AEAD cipher's tag, e.g. chacha20-poly1305) and `LIBSSH2_ERROR_INVALID_MAC`.
const CORRUPTED_PACKET: [i32; 2] = [-12, -4];

impl Connection {
    pub(crate) fn sftp(&self) -> &Sftp {
        &self.sftp
    }

    /// `e`, an I/O error of a read or write on this connection, with what libssh2 knows of
    /// its cause: the `io::Error` that `ssh2` returns keeps only libssh2's last message
    /// ("channel read"), so a packet that failed its integrity check is named here.
    pub(crate) fn io_error(&self, e: std::io::Error) -> anyhow::Error {
        let corrupted = ssh2::Error::last_session_error(&self.session).is_some_and(|last| {
            matches!(last.code(), ssh2::ErrorCode::Session(c) if CORRUPTED_PACKET.contains(&c))
        });
        if corrupted {
            anyhow!(e).context(
                "the data arrived corrupted: what the server sent failed the SSH integrity \
                 check (a faulty network path, or something on it altering the connection)",
            )
        } else {
            anyhow!(e)
        }
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
    pub(super) fn handshake(&self, algorithms: Option<&str>) -> Result<Session> {
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

    pub(super) fn server_key(&self, session: &Session) -> Result<Vec<u8>> {
        session
            .host_key()
            .map(|(k, _)| k.to_vec())
            .ok_or_else(|| anyhow!("{} sent no host key", self.addr()))
    }

    /// Connects, verifies the host key, logs in and opens the SFTP subsystem.
    pub(crate) fn connect(&self) -> Result<Connection> {
        self.connect_by_step().map_err(|(_, e)| e)
    }

    /// [`Endpoint::connect`], saying at which step it failed (for `tangoe-ingest check`).
    pub(crate) fn connect_by_step(&self) -> std::result::Result<Connection, (Step, anyhow::Error)> {
        let session = self.verified_session().map_err(|e| (Step::HostKey, e))?;
        self.authenticate(&session).map_err(|e| (Step::Login, e))?;
        tracing::debug!(
            server = %self.label(),
            cipher = session.methods(MethodType::CryptSc).unwrap_or("?"),
            host_key = session.methods(MethodType::HostKey).unwrap_or("?"),
            "SSH session established"
        );
        let sftp = session
            .sftp()
            .with_context(|| format!("cannot start SFTP on {}", self.addr()))
            .map_err(|e| (Step::Sftp, e))?;
        tracing::debug!(server = %self.label(), "SFTP session open");
        Ok(Connection { session, sftp })
    }
}
