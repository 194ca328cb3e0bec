//! Test support: a real OpenSSH server (`/usr/sbin/sshd -D -e`) on 127.0.0.1 and a free
//! port, with generated host keys and a throwaway password user. Stopped (with its session
//! processes) when dropped.
//!
//! The SFTP subsystem is OpenSSH's `sftp-server` (the same code as `internal-sftp`) run with
//! `-l INFO` and its log appended to a file: every open, close and rename the server did can
//! then be asserted on (`internal-sftp` can only log to syslog or to the client).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The throwaway user for password logins, and its password.
pub const PASSWORD_USER: &str = "tangoe-sftp-test";
pub const PASSWORD: &str = "Corr3ct-Horse-7821";

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates a key pair with ssh-keygen; returns the private key's path.
pub fn keygen(dir: &Path, name: &str, key_type: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", key_type, "-N", passphrase, "-C", name, "-f"])
        .arg(&path);
    if key_type == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(&mut cmd);
    path
}

/// `SHA256:...` of a public key file, as `ssh-keygen -lf` prints it.
pub fn fingerprint(pub_key: &Path) -> String {
    let out = run(Command::new("ssh-keygen").arg("-lf").arg(pub_key));
    out.split_whitespace().nth(1).unwrap().to_string()
}

fn password_user() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let exists = Command::new("id")
            .arg("-u")
            .arg(PASSWORD_USER)
            .output()
            .unwrap()
            .status
            .success();
        if !exists {
            let out = Command::new("useradd")
                .args(["-M", "-s", "/bin/sh", PASSWORD_USER])
                .output()
                .unwrap();
            // A concurrent test binary may have created it in the meantime.
            assert!(
                out.status.success()
                    || Command::new("id")
                        .arg("-u")
                        .arg(PASSWORD_USER)
                        .output()
                        .unwrap()
                        .status
                        .success(),
                "useradd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD_USER}:{PASSWORD}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "chpasswd failed");
    });
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Sshd {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Host key files (private; `.pub` beside each).
    pub host_keys: Vec<PathBuf>,
    key_types: Vec<String>,
}

impl Sshd {
    /// An sshd with one ed25519 host key.
    pub fn start() -> Sshd {
        Sshd::with_host_keys(&["ed25519"])
    }

    /// An sshd offering host keys of these types (`ed25519`, `ecdsa`, `rsa`), in that
    /// order of preference.
    pub fn with_host_keys(types: &[&str]) -> Sshd {
        password_user();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::Builder::new()
            .prefix("tangoe-sshd-")
            .tempdir()
            .unwrap();
        let host_keys = types
            .iter()
            .map(|t| keygen(dir.path(), &format!("ssh_host_{t}_key"), t, ""))
            .collect();
        std::fs::write(dir.path().join("authorized_keys"), "").unwrap();
        // The password user's sftp-server appends to the log too.
        std::fs::write(dir.path().join("sftp.log"), "").unwrap();
        for (p, mode) in [
            (dir.path().to_path_buf(), 0o755),
            (dir.path().join("sftp.log"), 0o666),
        ] {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
        }
        let mut s = Sshd {
            dir,
            port: 0,
            child: None,
            host_keys,
            key_types: types.iter().map(|t| t.to_string()).collect(),
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        for _ in 0..5 {
            self.port = free_port();
            let d = self.dir.path();
            let host_key_lines: String = self
                .host_keys
                .iter()
                .map(|k| format!("HostKey {}\n", k.display()))
                .collect();
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\n{host_key_lines}PidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server -e -l INFO 2>>{d}/sftp.log\n\
                 UsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nMaxStartups 50\n\
                 MaxAuthTries 10\nLogLevel INFO\n",
                port = self.port,
                d = d.display()
            );
            std::fs::write(d.join("sshd_config"), config).unwrap();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join("sshd.log"))
                .unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("cannot start /usr/sbin/sshd (is openssh-server installed?)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!("sshd exited ({status}); log:\n{}", self.log());
                    break;
                }
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                    let mut banner = [0u8; 4];
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                        self.child = Some(child);
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start; log:\n{}", self.log());
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Lets this public key log in (as any user).
    pub fn authorize(&self, pub_key: &Path) {
        let key = std::fs::read_to_string(pub_key).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir().join("authorized_keys"))
            .unwrap();
        f.write_all(key.as_bytes()).unwrap();
    }

    /// The server's log: sshd's, then sftp-server's (every open, close and rename).
    pub fn log(&self) -> String {
        let sshd = std::fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default();
        let sftp = std::fs::read_to_string(self.dir().join("sftp.log")).unwrap_or_default();
        format!("{sshd}{sftp}")
    }

    /// How many times the server opened a file whose path ends with `/name` for reading.
    pub fn reads_of(&self, name: &str) -> usize {
        let needle = format!("/{name}\" flags READ");
        self.log()
            .lines()
            .filter(|l| l.contains("open \"") && l.contains(&needle))
            .count()
    }

    /// How many files the server opened for reading, in all.
    pub fn reads(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("open \"") && l.contains("\" flags READ"))
            .count()
    }

    /// The known_hosts line of each host key, for `[127.0.0.1]:port`.
    pub fn known_hosts_lines(&self, port: u16) -> String {
        self.host_keys
            .iter()
            .map(|k| {
                let pubkey = std::fs::read_to_string(k.with_extension("pub")).unwrap();
                let mut parts = pubkey.split_whitespace();
                format!(
                    "[127.0.0.1]:{port} {} {}\n",
                    parts.next().unwrap(),
                    parts.next().unwrap()
                )
            })
            .collect()
    }

    /// What `ssh-keyscan -p PORT 127.0.0.1` prints (every key type).
    pub fn keyscan(&self) -> String {
        let out = Command::new("ssh-keyscan")
            .args([
                "-p",
                &self.port.to_string(),
                "-t",
                "rsa,ecdsa,ed25519",
                "127.0.0.1",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !text.trim().is_empty(),
            "ssh-keyscan found nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// The SHA256 fingerprint of the host key of this type.
    pub fn fingerprint(&self, key_type: &str) -> String {
        let i = self.key_types.iter().position(|t| t == key_type).unwrap();
        fingerprint(&self.host_keys[i].with_extension("pub"))
    }

    /// Kills (-9) every session process the listener forked, as a crash or a dropped line
    /// would; the listener stays up. Returns how many were killed.
    pub fn kill_sessions(&self) -> usize {
        let Some(child) = &self.child else { return 0 };
        let mut pids = descendants(child.id());
        pids.sort_unstable();
        for p in &pids {
            unsafe {
                libc::kill(*p as i32, libc::SIGKILL);
            }
        }
        pids.len()
    }
}

fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == p {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            for p in descendants(child.id()) {
                unsafe {
                    libc::kill(p as i32, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP relay on 127.0.0.1 that forwards to `target`. `cut(true)` drops every connection
/// and refuses new ones, as a lost line would.
pub struct Relay {
    pub port: u16,
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    tamper: Arc<AtomicBool>,
}

/// What a relay does to the bytes it forwards.
#[derive(Clone, Copy)]
struct Rules {
    /// At most this many bytes a second in each direction.
    bytes_per_sec: Option<u64>,
    /// Flips one bit of the byte at this offset of each connection's server-to-client
    /// stream, while tampering is on.
    flip_at: Option<u64>,
}

impl Relay {
    /// Limited to `bytes_per_sec` in each direction (so that a download lasts long enough
    /// to be interrupted).
    pub fn throttled(target: u16, bytes_per_sec: u64) -> Relay {
        Relay::start(
            target,
            Rules {
                bytes_per_sec: Some(bytes_per_sec),
                flip_at: None,
            },
        )
    }

    /// Flips one bit of every connection's server-to-client stream at byte `flip_at` (long
    /// after the key exchange), as a faulty line or someone on the path would, until
    /// `tamper(false)`.
    pub fn tampering(target: u16, flip_at: u64) -> Relay {
        let relay = Relay::start(
            target,
            Rules {
                bytes_per_sec: None,
                flip_at: Some(flip_at),
            },
        );
        relay.tamper(true);
        relay
    }

    fn start(target: u16, rules: Rules) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = Relay {
            port,
            stop: Arc::new(AtomicBool::new(false)),
            cut: Arc::new(AtomicBool::new(false)),
            tamper: Arc::new(AtomicBool::new(false)),
        };
        let (stop, cut, tamper) = (relay.stop.clone(), relay.cut.clone(), relay.tamper.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if cut.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let downstream = Rules {
                    flip_at: rules.flip_at.filter(|_| tamper.load(Ordering::Relaxed)),
                    ..rules
                };
                let upstream = Rules {
                    flip_at: None,
                    ..rules
                };
                for (from, to, rules) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        upstream,
                    ),
                    (server, client, downstream),
                ] {
                    let (stop, cut) = (stop.clone(), cut.clone());
                    std::thread::spawn(move || pump(from, to, rules, &stop, &cut));
                }
            }
        });
        relay
    }

    pub fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::Relaxed);
    }

    /// Whether connections opened from now on are tampered with.
    pub fn tamper(&self, on: bool) {
        self.tamper.store(on, Ordering::Relaxed);
    }
}

/// Forwards `from` to `to` until either side closes or the relay stops or is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, rules: Rules, stop: &AtomicBool, cut: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && !cut.load(Ordering::Relaxed) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        if let Some(at) = rules.flip_at
            && (sent..sent + n as u64).contains(&at)
        {
            buf[(at - sent) as usize] ^= 0x10;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Some(rate) = rules.bytes_per_sec {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
