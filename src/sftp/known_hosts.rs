//! OpenSSH `known_hosts` files: plain and hashed (`|1|salt|hash`) host names, the
//! `[host]:port` form, wildcard and negated patterns, and `@revoked` markers.
//!
//! We read the file ourselves (rather than through libssh2's check) so that we know which key
//! *types* the file holds for a host before the handshake: the negotiation is then restricted
//! to those types, and a host listed with several key types verifies whichever the server
//! would have preferred.
//!
//! Invariant: a host's keys are those of the lines whose patterns match its lookup name
//! (a negated pattern on a line excludes it) and that are not `@cert-authority`; a key on a
//! `@revoked` line is reported as revoked, never as known. A line that cannot be read is
//! skipped, so it can never make a key trusted.

use std::path::Path;

use anyhow::{Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, STANDARD_PAD_INDIFFERENT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
enum Hosts {
    Patterns(Vec<String>),
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    marker: Marker,
    hosts: Hosts,
    key_type: String,
    blob: Vec<u8>,
}

/// A host's key as known_hosts lists it.
#[derive(Debug, Clone)]
pub(crate) struct KnownKey {
    pub(crate) key_type: String,
    pub(crate) blob: Vec<u8>,
    pub(crate) line: usize,
}

/// What a known_hosts file says about one host.
#[derive(Debug, Default)]
pub(crate) struct HostKeys {
    pub(crate) keys: Vec<KnownKey>,
    pub(crate) revoked: Vec<Vec<u8>>,
}

impl HostKeys {
    /// The key types listed, in file order, without repeats.
    pub(crate) fn key_types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for k in &self.keys {
            if !v.contains(&k.key_type.as_str()) {
                v.push(&k.key_type);
            }
        }
        v
    }
}

pub(crate) struct KnownHosts {
    pub(crate) exists: bool,
    entries: Vec<Entry>,
}

/// The name OpenSSH looks a host up by: `host` on port 22, else `[host]:port`.
pub(crate) fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:<base64, unpadded>` of a key blob, as `ssh-keygen -lf` prints it.
pub(crate) fn fingerprint(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

/// The key type named inside an SSH public key blob (e.g. `ssh-ed25519`).
pub(crate) fn key_type_of(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

/// The host key algorithms that can present a key of `key_type`, strongest first.
pub(crate) fn algorithms_for(key_type: &str) -> &'static [&'static str] {
    match key_type {
        "ssh-ed25519" => &["ssh-ed25519"],
        "ecdsa-sha2-nistp256" => &["ecdsa-sha2-nistp256"],
        "ecdsa-sha2-nistp384" => &["ecdsa-sha2-nistp384"],
        "ecdsa-sha2-nistp521" => &["ecdsa-sha2-nistp521"],
        "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
        "ssh-dss" => &["ssh-dss"],
        _ => &[],
    }
}

/// Every host key type we can verify, in the order a scan tries them.
pub(crate) const KEY_TYPES: [&str; 5] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// OpenSSH's wildcard match: `*` any run of characters, `?` one character, anything else
/// itself. Matched by the `regex` crate, in time linear in the name whatever the pattern
/// (a pattern of many stars tried by backtracking takes exponential time).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    let mut re = String::with_capacity(pattern.len() + 8);
    re.push_str("(?s-u)\\A");
    for chunk in pattern.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            }
        }
        for b in chunk.invalid() {
            re.push_str(&format!("\\x{b:02x}"));
        }
    }
    re.push_str("\\z");
    regex::bytes::Regex::new(&re).is_ok_and(|re| re.is_match(name))
}

impl Hosts {
    fn matches(&self, name: &str) -> bool {
        match self {
            // `|1|salt|hash`: the hash is HMAC-SHA1 of the name, keyed with the salt.
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let name = name.to_ascii_lowercase();
                let mut positive = false;
                for p in patterns {
                    let (negated, p) = match p.strip_prefix('!') {
                        Some(rest) => (true, rest),
                        None => (false, p.as_str()),
                    };
                    if wildcard(p.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
                        if negated {
                            return false;
                        }
                        positive = true;
                    }
                }
                positive
            }
        }
    }
}

fn parse_line(line: usize, text: &str) -> Option<Entry> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    let mut fields = text.split_whitespace();
    let mut first = fields.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let hosts = if let Some(rest) = first.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|')?;
        Hosts::Hashed {
            salt: STANDARD_PAD_INDIFFERENT.decode(salt).ok()?,
            hash: STANDARD_PAD_INDIFFERENT.decode(hash).ok()?,
        }
    } else {
        Hosts::Patterns(first.split(',').map(str::to_string).collect())
    };
    let key_type = fields.next()?.to_string();
    let blob = STANDARD_PAD_INDIFFERENT.decode(fields.next()?).ok()?;
    Some(Entry {
        line,
        marker,
        hosts,
        key_type,
        blob,
    })
}

impl KnownHosts {
    /// Reads a known_hosts file. A missing file is read as empty (the host is then unknown,
    /// and the error says how to add it).
    pub(crate) fn load(path: &Path) -> Result<KnownHosts> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(KnownHosts {
                    exists: false,
                    entries: Vec::new(),
                });
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read the known_hosts file {}", path.display())
                });
            }
        };
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            match parse_line(i + 1, line) {
                Some(e) => entries.push(e),
                None if !line.trim().is_empty() && !line.trim_start().starts_with('#') => {
                    tracing::debug!(file = %path.display(), line = i + 1, "known_hosts: line not understood, ignored");
                }
                None => {}
            }
        }
        Ok(KnownHosts {
            exists: true,
            entries,
        })
    }

    /// The keys the file holds for `host` on `port`.
    pub(crate) fn lookup(&self, host: &str, port: u16) -> HostKeys {
        let name = lookup_name(host, port);
        let mut out = HostKeys::default();
        for e in &self.entries {
            if !e.hosts.matches(&name) {
                continue;
            }
            match e.marker {
                Marker::CertAuthority => {}
                Marker::Revoked => out.revoked.push(e.blob.clone()),
                Marker::None => out.keys.push(KnownKey {
                    key_type: e.key_type.clone(),
                    blob: e.blob.clone(),
                    line: e.line,
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn matches_plain_bracketed_wildcard_negated_and_hashed_names() {
        let blob = b"\0\0\0\x0bssh-ed25519\0\0\0\x01k".to_vec();
        let b64 = STANDARD.encode(&blob);
        // HMAC-SHA1 of "[sftp.example.com]:2222" keyed with this salt (computed with Python's hmac).
        let salt = b"0123456789abcdefghij";
        let hashed = format!(
            "|1|{}|{}",
            STANDARD.encode(salt),
            "NNl375YL/yxsLOBr7rEl9NzMrM4="
        );
        let text = format!(
            "# comment\n\
             sftp.example.com,10.0.0.1 ssh-ed25519 {b64}\n\
             [sftp.example.com]:2200 ssh-rsa {b64}\n\
             *.example.org,!bad.example.org ecdsa-sha2-nistp256 {b64}\n\
             {hashed} ssh-ed25519 {b64}\n\
             @revoked old.example.com ssh-ed25519 {b64}\n\
             garbage\n\
             unpadded.example.com ssh-ed25519 {}\n",
            b64.trim_end_matches('=')
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, text).unwrap();
        let kh = KnownHosts::load(&path).unwrap();
        assert_eq!(
            kh.lookup("sftp.example.com", 22).key_types(),
            ["ssh-ed25519"]
        );
        assert_eq!(kh.lookup("SFTP.example.com", 22).keys.len(), 1);
        assert_eq!(kh.lookup("sftp.example.com", 2200).key_types(), ["ssh-rsa"]);
        assert_eq!(
            kh.lookup("sftp.example.com", 2222).key_types(),
            ["ssh-ed25519"]
        );
        assert_eq!(kh.lookup("sftp.example.com", 2222).keys[0].line, 5);
        assert!(kh.lookup("sftp.example.com", 2223).keys.is_empty());
        assert_eq!(
            kh.lookup("a.example.org", 22).key_types(),
            ["ecdsa-sha2-nistp256"]
        );
        assert!(kh.lookup("bad.example.org", 22).keys.is_empty());
        assert_eq!(kh.lookup("old.example.com", 22).revoked.len(), 1);
        assert_eq!(kh.lookup("unpadded.example.com", 22).keys[0].blob, blob);
        assert_eq!(key_type_of(&blob).as_deref(), Some("ssh-ed25519"));
    }

    #[test]
    fn wildcards_match_as_openssh_says_in_linear_time() {
        assert!(wildcard(b"*.example.com", b"sftp.example.com"));
        assert!(!wildcard(b"*.example.com", b"example.com"));
        assert!(wildcard(b"sftp?.example.com", b"sftp1.example.com"));
        assert!(!wildcard(b"sftp?.example.com", b"sftp.example.com"));
        assert!(wildcard(b"a.b[c]+(d)", b"a.b[c]+(d)"));
        assert!(!wildcard(b"a.b", b"axb"));
        assert!(wildcard("h\u{e9}*".as_bytes(), "h\u{e9}te".as_bytes()));
        // Found by fuzzing: 30 stars before a name that does not match took minutes.
        let stars = format!("sf{}EXpBsftmple.com", "*".repeat(30));
        let started = std::time::Instant::now();
        assert!(!wildcard(stars.as_bytes(), b"sftp.example.com"));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "hang guard"
        );
    }
}
