//! The SFTP source and the file sink's upload, against a real OpenSSH server on 127.0.0.1.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::server::{Reply, Server};
use crate::sshd::{self, PASSWORD, PASSWORD_USER, Relay, Sshd};
use crate::support::{Case, Ran, Row, Started, csv, row, set_mtime};

/// A drop site: an sshd, a case with a client key it accepts, a known_hosts file that
/// lists the server, and a remote folder to put reports in. Derefs to the [`Case`].
struct Site {
    sshd: Sshd,
    c: Case,
    remote: PathBuf,
}

impl Deref for Site {
    type Target = Case;
    fn deref(&self) -> &Case {
        &self.c
    }
}

const HOUR_AGO: i64 = 3600;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A row as the site's exports have it: every column filled, updated at 10:00 on `day`.
fn export_row(id: &str, state: &str, day: &str) -> Row {
    row(id, state)
        .itsm(&format!("RITM{id}"))
        .at(&format!("{day}T10:00:00Z"))
        .phone("5551234567")
        .device("Pixel 9")
        .address("1 Main St")
        .cost_center("CC1")
}

impl Site {
    fn new() -> Site {
        Site::with_sshd(Sshd::start())
    }

    fn with_sshd(sshd: Sshd) -> Site {
        let c = Case::new();
        let key = sshd::keygen(c.path(), "client_key", "ed25519", "");
        sshd.authorize(&key.with_extension("pub"));
        let remote = c.path().join("remote");
        std::fs::create_dir_all(&remote).unwrap();
        c.file("known_hosts", sshd.known_hosts_lines(sshd.port));
        let site = Site { sshd, c, remote };
        site.configure(&[]);
        site
    }

    /// Writes the config: an SFTP source (the defaults below, with `overrides` replacing,
    /// adding or — with an empty value — removing keys; values are TOML) and a JSONL sink.
    fn configure(&self, overrides: &[(&str, &str)]) {
        self.configure_with(overrides, "");
    }

    fn configure_with(&self, overrides: &[(&str, &str)], sink_extra: &str) {
        let mut keys: Vec<(String, String)> = [
            ("host", "\"127.0.0.1\"".to_string()),
            ("port", self.sshd.port.to_string()),
            ("username", "\"root\"".into()),
            ("private_key", "\"client_key\"".into()),
            ("known_hosts", "\"known_hosts\"".into()),
            (
                "remote_dir",
                format!("{:?}", self.remote.display().to_string()),
            ),
            ("min_age", "\"0s\"".into()),
            ("settle", "\"0s\"".into()),
            ("timeout", "\"10s\"".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in overrides {
            keys.retain(|(key, _)| key != k);
            if !v.is_empty() {
                keys.push((k.to_string(), v.to_string()));
            }
        }
        let source: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        self.config(&format!(
            "[source]\ntype = \"sftp\"\n{source}\n[report]\ntimezone = \"UTC\"\n\
             date_from_name = '(\\d{{4}}-\\d{{2}}-\\d{{2}})'\n\n[ledger]\npath = \"state/ledger.sqlite\"\n\n\
             [[sink]]\ntype = \"file\"\ndir = \"out\"\nformat = \"jsonl\"\n{sink_extra}"
        ));
    }

    /// Puts a report in the remote folder, modified an hour ago.
    fn put(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.remote.join(name);
        std::fs::write(&p, content).unwrap();
        set_mtime(&p, now() - HOUR_AGO);
        p
    }

    /// Configures the login as the password user (who must reach the remote folder) and runs.
    fn run_as_password_user(&self, args: &[&str]) -> Ran {
        for dir in [self.path(), self.remote.as_path()] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        self.configure(&[
            ("username", &format!("{PASSWORD_USER:?}")),
            ("private_key", ""),
            ("password_env", "\"TANGOE_TEST_SFTP_PASSWORD\""),
        ]);
        self.env("TANGOE_TEST_SFTP_PASSWORD", PASSWORD).exec(args)
    }

    /// The names in the remote folder, sorted.
    fn remote_files(&self) -> Vec<String> {
        names_in(&self.remote)
    }

    fn downloads(&self) -> PathBuf {
        self.path().join("state/downloads")
    }

    /// Every file under the download folder, as `sha/name` (hidden files too).
    fn archived(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.downloads()) else {
            return out;
        };
        for d in rd.flatten() {
            let top = d.file_name().into_string().unwrap();
            if d.path().is_dir() {
                for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                    out.push(format!("{top}/{}", f.file_name().into_string().unwrap()));
                }
            } else {
                out.push(top);
            }
        }
        out.sort();
        out
    }

    fn processed(&self) -> Vec<String> {
        self.ledger_column("SELECT name FROM reports WHERE status = 'processed' ORDER BY id")
    }
}

fn sha256_of(path: &Path) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

fn states(c: &Case) -> Vec<(String, String)> {
    c.events()
        .iter()
        .map(|e| {
            (
                e["activity_id"].as_str().unwrap().into(),
                e["state"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn pair(a: &str, s: &str) -> (String, String) {
    (a.to_string(), s.to_string())
}

#[test]
fn key_auth_downloads_reports_into_the_archive_and_a_rerun_transfers_nothing() {
    let site = Site::new();
    let a = site.put(
        "acts_2026-11-01.csv",
        csv(&[
            export_row("A1", "Ordered", "2026-11-01"),
            export_row("A2", "Completed", "2026-11-01"),
        ]),
    );
    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A1", "Completed", "2026-11-02")]),
    );
    site.put("notes.txt", "not a report");
    std::fs::create_dir(site.remote.join("sub_2026-11-03.csv")).unwrap();
    let s = site
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .says("not a regular file")
        .summary();
    assert_eq!(
        states(&site),
        vec![
            pair("A1", "ordered"),
            pair("A2", "completed"),
            pair("A1", "completed")
        ]
    );
    assert_eq!(
        site.processed(),
        ["acts_2026-11-01.csv", "acts_2026-11-02.csv"]
    );
    assert_eq!(s["reports"][0]["sha256"], sha256_of(&a));
    // The archive holds each report under its content hash; the site keeps its files.
    let archived = site.archived();
    assert_eq!(archived.len(), 2, "{archived:?}");
    assert!(archived.contains(&format!("{}/acts_2026-11-01.csv", sha256_of(&a))));
    assert_eq!(site.remote_files().len(), 4);
    assert_eq!(site.sshd.reads(), 2, "{}", site.sshd.log());

    // A nightly run over files already processed transfers nothing.
    let s = site
        .exec(&["run", "--summary-json", "s2.json"])
        .code(0)
        .summary();
    assert_eq!(site.sshd.reads(), 2, "nothing is downloaded again");
    assert_eq!(s["already_processed"], 2);
    assert_eq!(site.events().len(), 3);
}

#[test]
fn password_auth_from_env_and_from_file() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    site.run_as_password_user(&["run"]).code(0);
    assert_eq!(states(&site), vec![pair("A1", "ordered")]);

    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A1", "Completed", "2026-11-02")]),
    );
    site.file("secret/sftp-password", format!("{PASSWORD}\n"));
    site.configure(&[
        ("username", &format!("{PASSWORD_USER:?}")),
        ("private_key", ""),
        ("password_file", "\"secret/sftp-password\""),
    ]);
    let out = site.run().code(0).text();
    assert_eq!(
        states(&site),
        vec![pair("A1", "ordered"), pair("A1", "completed")]
    );
    assert!(!out.contains(PASSWORD));
}

#[test]
fn wrong_password_fails_with_the_offered_methods_and_never_shows_the_password() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    let wrong = "Wr0ng-Secret-Value-93";
    site.configure(&[
        ("username", &format!("{PASSWORD_USER:?}")),
        ("private_key", ""),
        ("password_env", "\"TANGOE_TEST_SFTP_PASSWORD\""),
    ]);
    site.env("TANGOE_TEST_SFTP_PASSWORD", wrong)
        .exec(&["-v", "run", "--summary-json", "s.json"])
        .code(1)
        .says("login as \"tangoe-sftp-test\"")
        .says("password (rejected)")
        .says("The server offers: publickey, password")
        .never_says(wrong);
    let summary = site.read("s.json");
    assert!(!summary.contains(wrong));
    assert_eq!(site.summary("s.json")["exit_code"], 1);
    let ledger = std::fs::read(site.path().join("state/ledger.sqlite")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&ledger).contains(wrong));
    assert_eq!(site.sshd.reads(), 0);
    assert!(site.files("out").is_empty());
}

#[test]
fn key_with_passphrase_and_rsa_pem_and_ecdsa_keys_log_in() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    let locked = sshd::keygen(site.path(), "locked_key", "ed25519", "open sesame 42");
    site.sshd.authorize(&locked.with_extension("pub"));
    site.configure(&[
        ("private_key", "\"locked_key\""),
        ("private_key_passphrase_env", "\"TANGOE_TEST_KEY_PASS\""),
    ]);

    site.env("TANGOE_TEST_KEY_PASS", "not it")
        .run()
        .code(1)
        .says("the passphrase does not open the key")
        .never_says("not it");

    // No passphrase configured for a key that needs one.
    let t = site.env_remove("TANGOE_TEST_KEY_PASS").run().code(1).text();
    assert!(
        t.contains("private_key_passphrase_env") || t.contains("TANGOE_TEST_KEY_PASS"),
        "{t}"
    );

    site.env("TANGOE_TEST_KEY_PASS", "open sesame 42")
        .run()
        .code(0);
    assert_eq!(site.processed().len(), 1);

    // An RSA key in the old PEM format, and an ECDSA key.
    let rsa = site.path().join("rsa_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        site.read("rsa_key")
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    let ecdsa = sshd::keygen(site.path(), "ecdsa_key", "ecdsa", "");
    for (i, key) in [("rsa_key", &rsa), ("ecdsa_key", &ecdsa)]
        .into_iter()
        .enumerate()
    {
        site.sshd.authorize(&key.1.with_extension("pub"));
        let day = format!("2026-11-0{}", i + 2);
        site.put(
            &format!("acts_{day}.csv"),
            csv(&[export_row(&format!("B{i}"), "Completed", &day)]),
        );
        site.configure(&[("private_key", &format!("{:?}", key.0))]);
        site.run().code(0);
    }
    assert_eq!(site.processed().len(), 3);
}

#[test]
fn unknown_host_key_is_refused_with_its_fingerprint_and_nothing_downloaded() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    site.file("known_hosts", "# empty\n");
    site.run()
        .code(1)
        .says("UNKNOWN HOST KEY")
        .says(&format!("127.0.0.1:{}", site.sshd.port))
        .says("ssh-ed25519")
        .says(&site.sshd.fingerprint("ed25519"))
        .says("tangoe-ingest hostkey")
        .says(&format!("[127.0.0.1]:{} ssh-ed25519 AAAA", site.sshd.port));
    assert_eq!(site.sshd.reads(), 0);
    assert!(
        !site.sshd.log().contains("Accepted publickey"),
        "no login was attempted"
    );
    assert!(site.archived().is_empty());
    assert!(site.files("out").is_empty());

    // A missing file is the same: unknown.
    site.configure(&[("known_hosts", "\"no/such/known_hosts\"")]);
    site.run().code(1).says("does not exist");
}

#[test]
fn changed_host_key_is_refused_and_nothing_downloaded() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    // known_hosts lists another ed25519 key for this host.
    let other = sshd::keygen(site.path(), "other_host_key", "ed25519", "");
    let pubkey = site.read("other_host_key.pub");
    let mut parts = pubkey.split_whitespace();
    site.file(
        "known_hosts",
        format!(
            "[127.0.0.1]:{} {} {}\n",
            site.sshd.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    );
    site.run()
        .code(1)
        .says("HOST KEY MISMATCH")
        .says(&site.sshd.fingerprint("ed25519"))
        .says(&sshd::fingerprint(&other.with_extension("pub")))
        .says("line 1");
    assert_eq!(site.sshd.reads(), 0);
    assert!(!site.sshd.log().contains("Accepted publickey"));
    assert!(site.files("out").is_empty());
}

#[test]
fn hashed_known_hosts_from_ssh_keyscan_is_accepted() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    site.file("known_hosts", site.sshd.keyscan());
    let st = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(site.path().join("known_hosts"))
        .output()
        .unwrap();
    assert!(st.status.success());
    let hashed = site.read("known_hosts");
    assert!(hashed.lines().all(|l| l.starts_with("|1|")), "{hashed}");
    assert!(!hashed.contains("127.0.0.1"));
    site.run().code(0);
    assert_eq!(site.processed().len(), 1);
}

#[test]
fn a_host_listed_with_several_key_types_verifies_whichever_is_listed() {
    let site = Site::with_sshd(Sshd::with_host_keys(&["ed25519", "ecdsa", "rsa"]));
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    let all_lines = site.sshd.known_hosts_lines(site.sshd.port);
    let lines: Vec<&str> = all_lines.lines().collect();
    // Only the ECDSA and RSA keys are known: the server would prefer ed25519.
    site.file("known_hosts", format!("{}\n{}\n", lines[1], lines[2]));
    site.run().code(0);
    // All three known, in another order.
    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A1", "Completed", "2026-11-02")]),
    );
    site.file(
        "known_hosts",
        format!("{}\n{}\n{}\n", lines[2], lines[0], lines[1]),
    );
    site.run().code(0);
    assert_eq!(site.processed().len(), 2);
    // RSA only.
    site.put(
        "acts_2026-11-03.csv",
        csv(&[export_row("A1", "Cancelled", "2026-11-03")]),
    );
    site.file("known_hosts", format!("{}\n", lines[2]));
    site.run().code(0);
    assert_eq!(site.processed().len(), 3);
}

#[test]
fn pinned_fingerprint_is_checked_for_any_key_type() {
    let site = Site::with_sshd(Sshd::with_host_keys(&["ed25519", "ecdsa"]));
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    let ed = site.sshd.fingerprint("ed25519");
    let ec = site.sshd.fingerprint("ecdsa");
    site.configure(&[
        ("known_hosts", ""),
        ("host_key_fingerprint", &format!("{ed:?}")),
    ]);
    site.run().code(0);
    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A1", "Completed", "2026-11-02")]),
    );
    // As some tools print it: with base64's padding and a stray space.
    site.configure(&[
        ("known_hosts", ""),
        ("host_key_fingerprint", &format!("\" {ec}= \"")),
    ]);
    site.run().code(0);
    assert_eq!(site.processed().len(), 2);

    // A pin that matches no key of the server.
    let other = sshd::keygen(site.path(), "other_host_key", "ed25519", "");
    let wrong = sshd::fingerprint(&other.with_extension("pub"));
    site.put(
        "acts_2026-11-03.csv",
        csv(&[export_row("A1", "Cancelled", "2026-11-03")]),
    );
    site.configure(&[
        ("known_hosts", ""),
        ("host_key_fingerprint", &format!("{wrong:?}")),
    ]);
    let reads = site.sshd.reads();
    site.run().code(1).says("HOST KEY MISMATCH").says(&ed);
    assert_eq!(site.sshd.reads(), reads);
    assert_eq!(site.processed().len(), 2);
}

#[test]
fn a_young_file_is_deferred_until_min_age_then_taken() {
    let site = Site::new();
    let p = site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    set_mtime(&p, now() - 10);
    site.configure(&[("min_age", "\"2m\"")]);
    let s = site
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(s["reports"][0]["status"], "deferred");
    assert!(
        s["reports"][0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("min_age"),
        "{s}"
    );
    assert_eq!(site.sshd.reads(), 0);
    assert!(site.processed().is_empty());

    set_mtime(&p, now() - 300);
    site.run().code(0);
    assert_eq!(site.processed(), ["acts_2026-11-01.csv"]);
    assert_eq!(states(&site), vec![pair("A1", "ordered")]);
}

#[test]
fn a_file_still_growing_is_deferred_by_settle_then_taken_whole() {
    let site = Site::new();
    let name = "acts_2026-11-01.csv";
    let path = site.put(name, csv(&[export_row("A0", "Ordered", "2026-11-01")]));
    site.configure(&[("settle", "\"2s\"")]);
    // An upload in progress: a row every 100 ms until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let mut i = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                let row = export_row(&format!("A{i}"), "Ordered", "2026-11-01");
                writeln!(f, "{}", row.line()).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            i
        })
    };
    let ran = site.exec(&["run", "--summary-json", "s.json"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rows = writer.join().unwrap();
    let s = ran.code(0).summary();
    assert_eq!(s["reports"][0]["status"], "deferred", "{s}");
    assert!(
        s["reports"][0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("still changing"),
        "{s}"
    );
    assert!(site.processed().is_empty());
    assert!(site.events().is_empty());

    // The upload is done: the next run takes the whole file.
    let s = site
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(site.processed(), [name]);
    assert_eq!(s["reports"][0]["rows"], rows);
    assert_eq!(site.events().len(), rows as usize);
}

#[test]
fn done_marker_gates_a_report_and_delete_removes_both_after_the_commit() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    site.configure(&[("done_suffix", "\".done\""), ("after", "\"delete\"")]);
    let s = site
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(s["reports"][0]["status"], "deferred");
    assert!(
        s["reports"][0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("acts_2026-11-01.csv.done")
    );
    assert_eq!(site.remote_files(), ["acts_2026-11-01.csv"]);
    assert_eq!(site.sshd.reads(), 0);

    site.put("acts_2026-11-01.csv.done", "");
    site.run().code(0);
    assert_eq!(site.processed(), ["acts_2026-11-01.csv"]);
    assert!(site.remote_files().is_empty(), "{:?}", site.remote_files());
}

/// Clean-up acts on the file the ledger holds, not on whatever has its name by then: a report
/// replaced on the server while the run delivered its events is left, with its done marker,
/// and the next run reads it and cleans it up.
#[test]
fn a_report_replaced_during_the_run_is_not_cleaned_up_unread() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    site.put("acts_2026-11-01.csv.done", "");
    // The ITSM's endpoint: while it is called, the export is written again, with news.
    let remote = site.remote.clone();
    let server = Server::start(move |_req, n| {
        if n == 0 {
            std::fs::write(
                remote.join("acts_2026-11-01.csv"),
                csv(&[
                    export_row("A1", "Completed", "2026-11-01"),
                    export_row("A2", "Ordered", "2026-11-01"),
                ]),
            )
            .unwrap();
        }
        Reply::json(200, serde_json::json!({}))
    });
    site.configure_with(
        &[("done_suffix", "\".done\""), ("after", "\"delete\"")],
        &format!(
            "\n[[sink]]\ntype = \"http\"\nname = \"hook\"\napi = \"webhook\"\nurl = \"{}\"\n",
            server.url("/hook")
        ),
    );
    site.run()
        .code(0)
        .says("changed on the server since it was listed");
    assert_eq!(
        site.remote_files(),
        ["acts_2026-11-01.csv", "acts_2026-11-01.csv.done"]
    );
    // Old enough again for min_age (and later than the first export); then read, and
    // cleaned up.
    set_mtime(
        &site.remote.join("acts_2026-11-01.csv"),
        now() - HOUR_AGO + 60,
    );
    site.run().code(0);
    assert!(site.remote_files().is_empty(), "{:?}", site.remote_files());
    assert_eq!(
        states(&site),
        vec![
            pair("A1", "ordered"),
            pair("A1", "completed"),
            pair("A2", "ordered")
        ]
    );
}

#[test]
fn delete_and_move_happen_only_after_a_successful_commit() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    site.put("broken_2026-11-01.xlsx", "this is not a workbook");
    site.configure(&[("after", "\"delete\"")]);
    site.exec(&["run", "--summary-json", "s.json"]).code(2);
    // The failed report stays on the server for a later run; the processed one is gone.
    assert_eq!(site.remote_files(), ["broken_2026-11-01.xlsx"]);

    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A1", "Completed", "2026-11-02")]),
    );
    site.put(
        "acts_2026-11-03.csv",
        csv(&[export_row("A1", "Cancelled", "2026-11-03")]),
    );
    std::fs::remove_file(site.remote.join("broken_2026-11-01.xlsx")).unwrap();
    // Reports of the same name moved earlier, twice: both are kept.
    let mtime = std::fs::metadata(site.remote.join("acts_2026-11-02.csv"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::create_dir(site.remote.join("processed")).unwrap();
    for earlier in [
        "acts_2026-11-02.csv".to_string(),
        format!("acts_2026-11-02.csv.{mtime}"),
    ] {
        std::fs::write(site.remote.join("processed").join(earlier), "earlier").unwrap();
    }
    site.configure(&[("after", "\"move:processed\"")]);
    site.run().code(0).never_says("clean-up");
    assert_eq!(site.remote_files(), ["processed"]);
    assert_eq!(
        names_in(&site.remote.join("processed")),
        [
            "acts_2026-11-02.csv".to_string(),
            format!("acts_2026-11-02.csv.{mtime}"),
            format!("acts_2026-11-02.csv.{mtime}-2"),
            "acts_2026-11-03.csv".to_string()
        ]
    );
    assert_eq!(
        states(&site),
        vec![
            pair("A1", "ordered"),
            pair("A1", "completed"),
            pair("A1", "cancelled")
        ]
    );
}

#[test]
fn a_failed_move_is_a_warning_and_never_processes_the_report_twice() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    // The target is a file, not a folder: the move fails.
    site.put("blocked", "");
    site.configure(&[("after", "\"move:blocked\"")]);
    site.exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .says("clean-up on the server failed");
    assert_eq!(site.processed(), ["acts_2026-11-01.csv"]);
    assert_eq!(site.remote_files(), ["acts_2026-11-01.csv", "blocked"]);
    let s = site
        .exec(&["run", "--summary-json", "s2.json"])
        .code(0)
        .summary();
    assert_eq!(s["already_processed"], 1);
    assert_eq!(site.processed().len(), 1);
    assert_eq!(site.events().len(), 1);
}

/// Any name but `.`, `..` and one holding `/` or NUL is taken: a backslash, a leading or
/// inner `..`, a control character or bytes that are not UTF-8 are downloaded under a safe
/// local name (percent-encoded, never hidden), and the ledger, the summary, the done marker
/// and the clean-up on the server all go by the remote name.
#[test]
fn odd_remote_names_are_downloaded_under_safe_names_and_kept_by_their_remote_names() {
    use std::os::unix::ffi::OsStrExt;
    let site = Site::new();
    let odd: [(&[u8], &str, &str); 6] = [
        (
            b"acts_2026-11-01.csv",
            "acts_2026-11-01.csv",
            "acts_2026-11-01.csv",
        ),
        (
            b"..acts_2026-11-02.csv",
            "..acts_2026-11-02.csv",
            "%2E.acts_2026-11-02.csv",
        ),
        (
            b"up..acts_2026-11-02.csv",
            "up..acts_2026-11-02.csv",
            "up..acts_2026-11-02.csv",
        ),
        (
            b"back\\slash_2026-11-02.csv",
            "back\\slash_2026-11-02.csv",
            "back%5Cslash_2026-11-02.csv",
        ),
        (
            b"bell\x07_2026-11-02.csv",
            "bell\x07_2026-11-02.csv",
            "bell%07_2026-11-02.csv",
        ),
        (
            b"latin\xe9_2026-11-02.csv",
            "latin\\xe9_2026-11-02.csv",
            "latin%E9_2026-11-02.csv",
        ),
    ];
    let mut shas = Vec::new();
    for (i, (remote, _, _)) in odd.iter().enumerate() {
        let name = std::ffi::OsStr::from_bytes(remote);
        let day = if i == 0 { "2026-11-01" } else { "2026-11-02" };
        let p = site.remote.join(name);
        std::fs::write(&p, csv(&[export_row(&format!("A{i}"), "Ordered", day)])).unwrap();
        set_mtime(&p, now() - HOUR_AGO);
        // Each with its done marker: the remote name and the suffix.
        let mut marker = name.to_os_string();
        marker.push(".done");
        std::fs::write(site.remote.join(marker), "").unwrap();
        shas.push(sha256_of(&p));
    }
    site.configure(&[("done_suffix", "\".done\"")]);
    let ran = site.exec(&["run", "--summary-json", "s.json"]).code(0);
    let all = ran.text();
    assert!(
        !all.contains('\x07'),
        "a control character reached the output:\n{all}"
    );
    assert!(all.contains("bell\\u{7}_2026-11-02.csv"), "{all}");
    assert!(all.contains("latin\\xe9_2026-11-02.csv"), "{all}");
    let s = ran.summary();
    let mut in_summary: Vec<&str> = s["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "processed", "{r}");
            r["name"].as_str().unwrap()
        })
        .collect();
    in_summary.sort();
    let mut names: Vec<&str> = odd.iter().map(|(_, name, _)| *name).collect();
    names.sort();
    assert_eq!(in_summary, names);
    let mut processed = site.processed();
    processed.sort();
    assert_eq!(processed, names);
    assert_eq!(site.events().len(), odd.len());
    assert_eq!(site.sshd.reads(), odd.len(), "{}", site.sshd.log());

    // Every download is in the archive under its safe name, and nothing is written beside
    // the download folder.
    let mut archived: Vec<String> = odd
        .iter()
        .zip(&shas)
        .map(|((_, _, local), sha)| format!("{sha}/{local}"))
        .collect();
    archived.sort();
    assert_eq!(site.archived(), archived);
    let mut top: Vec<String> = site.files(".");
    top.retain(|f| {
        ![
            "client_key",
            "client_key.pub",
            "known_hosts",
            "out",
            "remote",
            "state",
            "tangoe-ingest.toml",
            "drop",
            "s.json",
        ]
        .contains(&f.as_str())
    });
    assert!(top.is_empty(), "{top:?}");

    // A second run downloads nothing; a backfill finds every report in the archive.
    let s = site
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(s["already_processed"], odd.len());
    let s = site
        .exec(&[
            "backfill",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
            "--summary-json",
            "s.json",
        ])
        .code(0)
        .summary();
    assert_eq!(s["reports"].as_array().unwrap().len(), odd.len(), "{s}");
    assert_eq!(site.sshd.reads(), odd.len(), "{}", site.sshd.log());

    // The clean-up moves each file and its marker by their remote names.
    site.configure(&[
        ("done_suffix", "\".done\""),
        ("after", "\"move:processed\""),
    ]);
    site.run().code(0).never_says("clean-up");
    assert_eq!(site.remote_files(), ["processed"]);
    let mut moved: Vec<Vec<u8>> = std::fs::read_dir(site.remote.join("processed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    moved.sort();
    let mut want: Vec<Vec<u8>> = odd
        .iter()
        .flat_map(|(remote, _, _)| [remote.to_vec(), [*remote, b".done"].concat()])
        .collect();
    want.sort();
    assert_eq!(moved, want);
    assert_eq!(site.events().len(), odd.len());
}

/// A file that matches the patterns but cannot be taken (here a symbolic link: only regular
/// files are) is never skipped in silence: the summary lists it with the reason, `status`
/// shows it while the latest run skipped it, and the run exits 2.
#[test]
fn a_file_that_cannot_be_taken_is_counted_shown_by_status_and_exits_2() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    std::os::unix::fs::symlink(
        "acts_2026-11-01.csv",
        site.remote.join("link_2026-11-02.csv"),
    )
    .unwrap();
    let s = site
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .prints("link_2026-11-02.csv [2026-11-02] skipped")
        .prints("symbolic link")
        .summary();
    assert_eq!(s["skipped_reports"], 1);
    let skipped: Vec<&serde_json::Value> = s["reports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{s}");
    assert_eq!(skipped[0]["name"], "link_2026-11-02.csv");
    assert!(
        skipped[0]["error"]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{s}"
    );
    assert_eq!(site.processed(), ["acts_2026-11-01.csv"]);
    assert_eq!(site.sshd.reads(), 1);

    // Every night until it is dealt with; `status` shows it once.
    site.run().code(2);
    let out = site
        .exec(&["status"])
        .code(0)
        .prints("skipped link_2026-11-02.csv")
        .prints("symbolic link")
        .stdout();
    assert_eq!(
        out.matches("skipped link_2026-11-02.csv").count(),
        1,
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&site.exec(&["status", "--json"]).code(0).stdout()).unwrap();
    assert_eq!(json["skipped_reports"][0]["name"], "link_2026-11-02.csv");

    // Acknowledged, it stops counting; `reports retry` brings it back.
    site.exec(&[
        "reports",
        "ignore",
        "link_2026-11-02.csv",
        "--reason",
        "a link, on purpose",
    ])
    .code(0);
    site.run()
        .code(0)
        .prints("link_2026-11-02.csv [2026-11-02] ignored");
    site.exec(&["reports", "retry", "link_2026-11-02.csv"])
        .code(0);
    site.run().code(2);

    // Gone from the server: the next run is clean, and `status` no longer shows it.
    std::fs::remove_file(site.remote.join("link_2026-11-02.csv")).unwrap();
    site.run().code(0);
    site.exec(&["status"])
        .code(0)
        .never_says("link_2026-11-02.csv");
}

/// Runs the binary directly and returns (exit code, peak RSS in KiB).
///
/// The peak is the child's own `VmHWM` (a high-water mark), read every few milliseconds
/// while it runs. Not `wait4`'s `ru_maxrss`: that also counts the memory of this test process,
/// which the child shares between fork and exec.
fn run_measured(c: &Case, args: &[&str]) -> (i32, i64) {
    let mut run = c.start(args);
    let status_file = format!("/proc/{}/status", run.child.id());
    let mut peak = 0i64;
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            return (status.code().unwrap(), peak);
        }
        let hwm = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        });
        peak = peak.max(hwm.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An XLSX report of about `bytes` bytes: a small sheet, and a large stored member (as
/// embedded pictures make them) that the parser never reads but the download carries whole.
fn big_xlsx(path: &Path, bytes: usize) {
    use crate::support::{X, write_xlsx};
    use std::io::Read;
    let header: Vec<X> = ["Activity ID", "Status", "Last Updated"]
        .into_iter()
        .map(X::S)
        .collect();
    let rows = vec![
        header,
        vec![X::S("A1"), X::S("Ordered"), X::S("2026-11-01T10:00:00Z")],
        vec![X::S("A2"), X::S("Completed"), X::S("2026-11-01T11:00:00Z")],
    ];
    let small = path.with_extension("small.xlsx");
    write_xlsx(&small, "Activities", &rows);
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&small).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        out.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(&data).unwrap();
    }
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    out.start_file("xl/media/image1.bin", stored).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    for i in 0..bytes / block.len() {
        block[0] = i as u8;
        out.write_all(&block).unwrap();
    }
    out.finish().unwrap();
    std::fs::remove_file(&small).unwrap();
    set_mtime(path, now() - HOUR_AGO);
}

#[test]
fn a_200_mb_report_streams_with_bounded_memory_and_the_right_hash() {
    let site = Site::new();
    let path = site.remote.join("big_2026-11-01.xlsx");
    big_xlsx(&path, 200 << 20);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 200 << 20);
    let sha = sha256_of(&path);
    let (code, peak_kib) = run_measured(&site, &["run", "--summary-json", "s.json"]);
    assert_eq!(code, 0, "{}", site.sshd.log());
    let s = site.summary("s.json");
    assert_eq!(s["reports"][0]["status"], "processed");
    assert_eq!(s["reports"][0]["sha256"], sha);
    assert_eq!(
        states(&site),
        vec![pair("A1", "ordered"), pair("A2", "completed")]
    );
    let archived = site.downloads().join(&sha).join("big_2026-11-01.xlsx");
    assert_eq!(std::fs::metadata(&archived).unwrap().len(), size);
    // Far below the file's 200 MiB: the report is never held whole in memory.
    assert!(
        peak_kib > 0 && peak_kib < 80 * 1024,
        "peak RSS {peak_kib} KiB"
    );
}

/// Starts `run --summary-json s.json` on `c` and returns once one of its downloads has at
/// least `min_bytes`, the run still going.
fn start_download(c: &Case, min_bytes: u64) -> Started {
    let mut run = c.start(&["run", "--summary-json", "s.json"]);
    let dir = c.path().join("state/downloads");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            run.child.try_wait().unwrap().is_none(),
            "the run ended before the download was interrupted"
        );
        assert!(std::time::Instant::now() < deadline, "no download started");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let partial = rd.flatten().any(|e| {
                e.file_name().to_string_lossy().ends_with(".part")
                    && e.metadata().map(|m| m.len()).unwrap_or(0) >= min_bytes
            });
            if partial {
                return run;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the site's report through undisturbed: its two events, the reference for a run
/// that is disturbed.
fn reference_events(site: &Site) -> Vec<serde_json::Value> {
    site.run().code(0);
    let reference = site.events();
    assert_eq!(reference.len(), 2);
    reference
}

/// Asserts that the run of `c` that gave `ran` failed its report and left nothing behind:
/// no event, no partial download. Returns the run's summary.
fn failed_cleanly(c: &Case, ran: Ran) -> serde_json::Value {
    let s = ran.code(2).summary();
    assert_eq!(s["reports"][0]["status"], "failed", "{s}");
    assert!(c.events().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(c.path().join("state/downloads"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "no partial download is left behind");
    s
}

/// A second case on the same site whose connections go through a relay: the same
/// config, with the relay's port.
fn through_relay(site: &Site, relay: &Relay) -> Case {
    let c = Case::new();
    let key = sshd::keygen(c.path(), "client_key", "ed25519", "");
    site.sshd.authorize(&key.with_extension("pub"));
    c.file("known_hosts", site.sshd.known_hosts_lines(relay.port));
    let cfg = site.read("tangoe-ingest.toml").replace(
        &format!("port = {}", site.sshd.port),
        &format!("port = {}", relay.port),
    );
    c.config(&cfg);
    c
}

#[test]
fn a_session_killed_mid_download_is_resumed_and_gives_the_same_events() {
    let site = Site::new();
    let name = "big_2026-11-01.xlsx";
    big_xlsx(&site.remote.join(name), 24 << 20);

    // The same report, undisturbed: the reference events.
    let reference = reference_events(&site);

    // Another work dir reads it through a throttled relay; its session is killed mid-file.
    let relay = Relay::throttled(site.sshd.port, 8 << 20);
    let w2 = through_relay(&site, &relay);
    let reads_before = site.sshd.reads_of(name);
    let run = start_download(&w2, 2 << 20);
    assert!(site.sshd.kill_sessions() > 0);
    let s = run.wait().code(0).says("resuming the download").summary();
    assert!(
        site.sshd.reads_of(name) >= reads_before + 2,
        "the file was opened again"
    );
    assert_eq!(w2.events(), reference);
    let sha = sha256_of(&site.remote.join(name));
    assert_eq!(s["reports"][0]["sha256"], sha);
    assert!(
        w2.path()
            .join("state/downloads")
            .join(&sha)
            .join(name)
            .exists()
    );
}

#[test]
fn a_connection_lost_for_good_fails_the_report_cleanly_and_a_rerun_matches() {
    let site = Site::new();
    let name = "big_2026-11-01.xlsx";
    big_xlsx(&site.remote.join(name), 24 << 20);
    let reference = reference_events(&site);

    let relay = Relay::throttled(site.sshd.port, 8 << 20);
    let w2 = through_relay(&site, &relay);
    let run = start_download(&w2, 2 << 20);
    relay.cut(true);
    failed_cleanly(&w2, run.wait());
    let processed: i64 = w2.ledger_value(
        "SELECT COUNT(*) FROM reports WHERE status = 'processed'",
        [],
    );
    assert_eq!(processed, 0, "nothing is marked processed");

    relay.cut(false);
    w2.run().code(0);
    assert_eq!(w2.events(), reference);
}

#[test]
fn a_download_tampered_with_on_the_wire_fails_the_report_and_a_clean_rerun_processes_it() {
    let site = Site::new();
    let name = "big_2026-11-01.xlsx";
    big_xlsx(&site.remote.join(name), 8 << 20);

    // One bit of the server's stream is flipped 1 MiB into every connection: long after
    // the key exchange, with the download under way. Each try (a new connection) meets it.
    let relay = Relay::tampering(site.sshd.port, 1 << 20);
    let c = through_relay(&site, &relay);
    let ran = c
        .exec(&["run", "--summary-json", "s.json"])
        .never_says("panicked");
    let s = failed_cleanly(&c, ran);
    let error = s["reports"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("corrupted"), "{error}");
    let processed: i64 = c.ledger_value(
        "SELECT COUNT(*) FROM reports WHERE name = ?1 AND status = 'processed'",
        [name],
    );
    assert_eq!(processed, 0, "nothing is marked processed");

    // The line mends: the next run takes the report whole.
    relay.tamper(false);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(s["reports"][0]["status"], "processed", "{s}");
    assert_eq!(
        s["reports"][0]["sha256"],
        sha256_of(&site.remote.join(name))
    );
    assert_eq!(
        states(&c),
        vec![pair("A1", "ordered"), pair("A2", "completed")]
    );
}

/// A site with a report large enough to be downloaded in ranges, with `connections = 2`.
fn site_with_ranges() -> (Site, &'static str, u64) {
    let site = Site::new();
    let name = "big_2026-11-01.xlsx";
    big_xlsx(&site.remote.join(name), 72 << 20);
    site.configure(&[("connections", "2")]);
    let size = std::fs::metadata(site.remote.join(name)).unwrap().len();
    (site, name, size)
}

#[test]
fn a_large_report_over_two_connections_is_read_in_two_ranges_and_resumed_per_range() {
    let (site, name, size) = site_with_ranges();

    // Undisturbed: each range is opened once, on its own connection.
    let s = site
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(site.sshd.reads_of(name), 2, "{}", site.sshd.log());
    let sha = sha256_of(&site.remote.join(name));
    assert_eq!(s["reports"][0]["sha256"], sha);
    let reference = site.events();
    assert_eq!(reference.len(), 2);

    // Through a throttled relay, both sessions are killed once the second range has
    // started: each range reopens the file and resumes where it stopped.
    let relay = Relay::throttled(site.sshd.port, 8 << 20);
    let w2 = through_relay(&site, &relay);
    let reads_before = site.sshd.reads_of(name);
    let run = start_download(&w2, size / 2 + (2 << 20));
    assert!(site.sshd.kill_sessions() > 0);
    let ran = run.wait().code(0);
    let text = ran.text();
    assert_eq!(text.matches("resuming the download").count(), 2, "{text}");
    assert!(
        site.sshd.reads_of(name) >= reads_before + 4,
        "both ranges were opened again"
    );
    assert_eq!(w2.events(), reference);
    assert_eq!(ran.summary()["reports"][0]["sha256"], sha);
    let archived = w2.path().join("state/downloads").join(&sha).join(name);
    assert_eq!(std::fs::metadata(&archived).unwrap().len(), size);
    assert_eq!(sha256_of(&archived), sha);
}

#[test]
fn a_connection_lost_for_good_during_a_download_in_ranges_fails_cleanly_and_a_rerun_matches() {
    let (site, _, size) = site_with_ranges();
    let reference = reference_events(&site);

    let relay = Relay::throttled(site.sshd.port, 8 << 20);
    let w2 = through_relay(&site, &relay);
    let run = start_download(&w2, size / 2 + (2 << 20));
    relay.cut(true);
    failed_cleanly(&w2, run.wait());

    relay.cut(false);
    w2.run().code(0);
    assert_eq!(w2.events(), reference);
}

#[test]
fn a_server_that_stays_silent_cannot_hang_the_run() {
    let site = Site::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c); // accept, then say nothing
        }
    });
    site.configure(&[("port", &port.to_string()), ("timeout", "\"1s\"")]);
    site.timeout(Duration::from_secs(60))
        .run()
        .code(1)
        .says("timeout");
}

/// The `upload` key of a file sink that uploads to `inbox` on the site's server.
fn upload_to(site: &Site, inbox: &Path) -> String {
    format!(
        "upload = {{ host = \"127.0.0.1\", port = {}, username = \"root\", private_key = \"client_key\", \
         known_hosts = \"known_hosts\", remote_dir = {:?} }}\n",
        site.sshd.port,
        inbox.display().to_string()
    )
}

/// The names in a folder, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn import_files_are_uploaded_and_delivered_only_once_uploaded() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[
            export_row("A1", "Ordered", "2026-11-01"),
            export_row("A2", "Ordered", "2026-11-01"),
        ]),
    );
    let inbox = site.path().join("inbox");
    let upload = upload_to(&site, &inbox);
    site.configure_with(&[], &upload);
    // The remote folder does not exist yet: the upload fails and the events stay pending.
    let s = site
        .exec(&["run", "--summary-json", "s.json"])
        .code(3)
        .summary();
    assert_eq!(s["pending"], 2, "{s}");
    assert!(
        s["sinks"][0]["error"]
            .as_str()
            .unwrap()
            .contains("uploading"),
        "{s}"
    );
    assert!(
        site.files("out").is_empty(),
        "no local import file without its upload"
    );

    std::fs::create_dir(&inbox).unwrap();
    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A1", "Completed", "2026-11-02")]),
    );
    let s = site
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(s["delivered"], 3, "{s}");
    assert_eq!(s["pending"], 0);
    // The pending events went out first, then the new one: two files, both uploaded.
    let local = site.files("out");
    assert_eq!(local.len(), 2);
    let remote = names_in(&inbox);
    assert_eq!(
        remote, local,
        "uploaded under its final name, no temporary file left"
    );
    for f in &local {
        assert_eq!(
            std::fs::read(inbox.join(f)).unwrap(),
            std::fs::read(site.path().join("out").join(f)).unwrap()
        );
        let renamed = format!(
            "rename old \"{}/.{f}.part\" new \"{}/{f}\"",
            inbox.display(),
            inbox.display()
        );
        assert!(
            site.sshd.log().contains(&renamed),
            "uploaded under a temporary name: {}",
            site.sshd.log()
        );
    }
    // Nothing more to deliver.
    site.run().code(0);
    assert_eq!(std::fs::read_dir(&inbox).unwrap().count(), 2);
}

/// The upload folder is the ITSM's: a file there this ledger did not put there is never
/// replaced, and a file put there whose delivery mark was lost is put there again with
/// exactly its events, never inside a larger file that repeats them.
#[test]
fn uploads_never_replace_a_file_they_did_not_put_there_nor_repeat_an_event() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[
            export_row("A1", "Ordered", "2026-11-01"),
            export_row("A2", "Ordered", "2026-11-01"),
        ]),
    );
    let inbox = site.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let upload = upload_to(&site, &inbox);
    // Two sinks uploading the same names to one folder are refused.
    site.configure_with(
        &[],
        &format!("{upload}\n[[sink]]\ntype = \"file\"\nname = \"b\"\ndir = \"out-b\"\nformat = \"jsonl\"\n{upload}"),
    );
    site.run().code(1).says("would upload the same file names");
    site.configure_with(&[], &upload);

    // A file of the name the first import file takes, which the ITSM has not collected yet
    // (from a ledger started afresh, say), and the leftover of an interrupted upload.
    let first = "tangoe-events-000000000001-000000000002.jsonl";
    std::fs::write(inbox.join(first), "not ours\n").unwrap();
    // Left an hour ago: removed. Younger, or another prefix's: perhaps another uploader's
    // at work, kept.
    let stale = inbox.join(".tangoe-events-000000000007-000000000009.jsonl.part");
    std::fs::write(&stale, "x").unwrap();
    set_mtime(&stale, now() - 2 * HOUR_AGO);
    let young = inbox.join(".tangoe-events-000000000010-000000000011.jsonl.part");
    std::fs::write(&young, "x").unwrap();
    let other = inbox.join(".tangoe-events-hr-000000000001-000000000002.jsonl.part");
    std::fs::write(&other, "x").unwrap();
    set_mtime(&other, now() - 2 * HOUR_AGO);
    site.run().code(0);
    assert_eq!(
        std::fs::read_to_string(inbox.join(first)).unwrap(),
        "not ours\n"
    );
    let second = "tangoe-events-000000000001-000000000002-2.jsonl";
    assert_eq!(site.files("out"), [second]);
    assert_eq!(
        std::fs::read(inbox.join(second)).unwrap(),
        std::fs::read(site.path().join("out").join(second)).unwrap()
    );
    assert!(!stale.exists());
    assert!(young.exists() && other.exists());
    std::fs::remove_file(&young).unwrap();
    std::fs::remove_file(&other).unwrap();

    // A crash after the upload's rename, before the delivery mark: the ledger still has
    // the file in flight (here as an earlier release recorded it: its name alone). The next
    // runs cannot upload (the folder is gone) while a new event comes; once they can, the
    // file in flight goes again alone, then the new event.
    let ledger = site.ledger();
    ledger
        .execute_batch(&format!(
            "UPDATE sinks SET delivered_through = 0;
             INSERT OR REPLACE INTO meta (key, value) VALUES ('file_in_flight:file', '{second}');"
        ))
        .unwrap();
    drop(ledger);
    let away = site.path().join("inbox-away");
    std::fs::rename(&inbox, &away).unwrap();
    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A1", "Completed", "2026-11-02")]),
    );
    site.run().code(3);
    site.run().code(3);
    std::fs::rename(&away, &inbox).unwrap();
    site.run().code(0);
    let remote = names_in(&inbox);
    assert_eq!(
        remote,
        [
            second,
            first,
            "tangoe-events-000000000003-000000000003.jsonl"
        ]
    );
    let mut ids = Vec::new();
    for f in remote.iter().filter(|f| *f != first) {
        for line in std::fs::read_to_string(inbox.join(f)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            ids.push(v["event_id"].as_str().unwrap().to_string());
        }
    }
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((n, ids.len()), (3, 3), "each event in one file only");

    // Killed before its upload's rename: the file in flight never reached the folder, and
    // a file of that very name that is not this one appeared there since. It is kept.
    let fourth = "tangoe-events-000000000004-000000000004.jsonl";
    site.ledger()
        .execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('file_in_flight:file', ?1)",
            [fourth],
        )
        .unwrap();
    std::fs::write(inbox.join(fourth), "someone else's\n").unwrap();
    site.put(
        "acts_2026-11-03.csv",
        csv(&[export_row("A2", "Completed", "2026-11-03")]),
    );
    site.run().code(0);
    assert_eq!(
        std::fs::read_to_string(inbox.join(fourth)).unwrap(),
        "someone else's\n"
    );
    let own = "tangoe-events-000000000004-000000000004-2.jsonl";
    assert!(
        std::fs::read_to_string(inbox.join(own))
            .unwrap()
            .contains("\"A2\"")
    );
}

/// A file in flight that its upload renamed into place is this file, recognised by the size
/// it had then: replaced by the rerun even if its rendering changed since (a mapping
/// edited, say), never kept beside a second copy of its events.
#[test]
fn a_file_in_flight_is_replaced_remotely_even_if_its_rendering_changed() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    let inbox = site.path().join("inbox");
    let name = "tangoe-events-000000000001-000000000001.jsonl";
    // The upload fails after the file is recorded in flight (a folder holds its temporary
    // name): the ledger keeps the record, with the file's size.
    std::fs::create_dir_all(inbox.join(format!(".{name}.part"))).unwrap();
    site.configure_with(&[], &upload_to(&site, &inbox));
    site.run().code(3);
    let record: String = site.ledger_value(
        "SELECT value FROM meta WHERE key = 'file_in_flight:file'",
        [],
    );
    let (last, rest) = record.split_once(':').unwrap();
    let (ident, rest) = rest.split_once(':').unwrap();
    assert_eq!(rest.split_once(':').unwrap().1, name);
    // As if that upload had renamed the file, rendered then as it is not now (10 bytes),
    // and the run had died before its mark.
    std::fs::remove_dir(inbox.join(format!(".{name}.part"))).unwrap();
    std::fs::write(inbox.join(name), "rendered\n\n").unwrap();
    site.ledger()
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'file_in_flight:file'",
            [format!("{last}:{ident}:10:{name}")],
        )
        .unwrap();
    // Rerun by hand, the configuration named another way than cron named it: the same sink.
    #[allow(deprecated)]
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("tangoe-ingest"))
        .current_dir(site.path())
        .env_remove("TANGOE_INGEST_CONFIG")
        .args(["--config", "./tangoe-ingest.toml", "run"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        names_in(&inbox),
        [name],
        "replaced, not kept beside a second copy"
    );
    assert!(
        std::fs::read_to_string(inbox.join(name))
            .unwrap()
            .contains("\"A1\"")
    );
}

#[test]
fn dry_run_downloads_to_a_temporary_folder_and_changes_nothing() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    site.configure(&[("after", "\"delete\"")]);
    let tmp_before = dry_download_dirs();
    site.exec(&["run", "--dry-run"])
        .code(0)
        .prints("would emit");
    assert_eq!(
        site.remote_files(),
        ["acts_2026-11-01.csv"],
        "nothing deleted"
    );
    assert!(!site.downloads().exists(), "nothing archived");
    assert!(
        !site.path().join("state/ledger.sqlite").exists(),
        "no ledger written"
    );
    assert!(site.files("out").is_empty());
    assert_eq!(
        dry_download_dirs(),
        tmp_before,
        "the temporary download folder is removed"
    );
    assert_eq!(site.sshd.reads(), 1);
    // The real run does it all.
    site.run().code(0);
    assert!(site.remote_files().is_empty());
    assert_eq!(site.processed().len(), 1);

    // A dry run that finds an archived copy damaged reads the report from the server and
    // leaves the archive as it was (its next real run deals with the copy).
    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A1", "Completed", "2026-11-02")]),
    );
    site.configure(&[]);
    site.run().code(0);
    let copy = site.downloads().join(
        site.archived()
            .into_iter()
            .find(|a| a.ends_with("acts_2026-11-02.csv"))
            .unwrap(),
    );
    let mut damaged = std::fs::read(&copy).unwrap();
    damaged[0] ^= 1;
    std::fs::write(&copy, &damaged).unwrap();
    site.exec(&[
        "backfill",
        "--from",
        "2026-11-02",
        "--to",
        "2026-11-02",
        "--dry-run",
    ])
    .code(0);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        damaged,
        "the archive is untouched"
    );
}

fn dry_download_dirs() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tangoe-ingest-dry-download-"))
        .collect();
    v.sort();
    v
}

#[test]
fn backfill_replays_reports_the_site_deleted_from_the_archive_without_downloading_again() {
    let site = Site::new();
    let first = site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    let first_sha = sha256_of(&first);
    site.configure(&[("after", "\"delete\"")]);
    site.run().code(0);
    assert!(site.remote_files().is_empty());
    assert_eq!(site.sshd.reads(), 1);

    // The site keeps the next report; backfill takes both, the first from the archive.
    site.configure(&[]);
    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A1", "Completed", "2026-11-02")]),
    );
    let s = site
        .exec(&[
            "backfill",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
            "--summary-json",
            "s.json",
        ])
        .code(0)
        .summary();
    let names: Vec<&str> = s["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acts_2026-11-01.csv", "acts_2026-11-02.csv"]);
    assert_eq!(s["reports"][0]["sha256"], first_sha);
    assert_eq!(site.sshd.reads_of("acts_2026-11-01.csv"), 1);
    assert_eq!(site.sshd.reads_of("acts_2026-11-02.csv"), 1);
    assert_eq!(
        states(&site),
        vec![pair("A1", "ordered"), pair("A1", "completed")]
    );

    // Again, with --resend: everything comes from the archive, nothing is downloaded.
    let s = site
        .exec(&[
            "backfill",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
            "--resend",
            "--summary-json",
            "s.json",
        ])
        .code(0)
        .summary();
    assert_eq!(site.sshd.reads(), 2);
    assert_eq!(s["reports"].as_array().unwrap().len(), 2);
    let by_kind: BTreeMap<String, usize> =
        site.events().iter().fold(BTreeMap::new(), |mut m, e| {
            *m.entry(e["kind"].as_str().unwrap_or("change").to_string())
                .or_default() += 1;
            m
        });
    assert_eq!(by_kind.get("change"), Some(&2));
    assert!(
        by_kind.get("resend").copied().unwrap_or(0) >= 1,
        "{by_kind:?}"
    );
}

#[test]
fn the_archive_is_pruned_after_keep() {
    let site = Site::new();
    let a = site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    site.configure(&[("keep", "\"30d\"")]);
    site.run().code(0);
    let folder = site.downloads().join(sha256_of(&a));
    assert!(folder.exists());
    // Archived 40 days ago.
    let f = std::fs::File::open(&folder).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(40 * 86_400))
        .unwrap();
    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A1", "Completed", "2026-11-02")]),
    );
    site.run().code(0);
    assert!(!folder.exists(), "pruned");
    assert_eq!(site.archived().len(), 1);
    assert_eq!(
        site.processed().len(),
        2,
        "pruning the archive forgets nothing in the ledger"
    );
}

#[test]
fn hostkey_prints_the_key_lines_and_fingerprints_an_operator_can_add() {
    let site = Site::with_sshd(Sshd::with_host_keys(&["ed25519", "ecdsa"]));
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    site.file("known_hosts", "");
    let stdout = site
        .exec(&["hostkey"])
        .code(0)
        .logs("Check these fingerprints")
        .stdout();
    for t in ["ed25519", "ecdsa"] {
        assert!(stdout.contains(&site.sshd.fingerprint(t)), "{stdout}");
    }
    for line in site.sshd.known_hosts_lines(site.sshd.port).lines() {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line} in {stdout}"
        );
    }
    assert!(stdout.contains("not in"), "{stdout}");
    assert!(!stdout.contains("DIFFERS"), "{stdout}");
    assert_eq!(site.sshd.reads(), 0);
    // known_hosts lists another ed25519 key for the host: that one is called out.
    let other = sshd::keygen(site.path(), "other_host_key", "ed25519", "");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut fields = other_pub.split_whitespace();
    let (kind, blob) = (fields.next().unwrap(), fields.next().unwrap());
    site.file(
        "known_hosts",
        format!("[127.0.0.1]:{} {kind} {blob}\n", site.sshd.port),
    );
    let stdout = site.exec(&["hostkey"]).code(0).stdout();
    let ed_line = stdout
        .lines()
        .find(|l| l.contains(&site.sshd.fingerprint("ed25519")))
        .unwrap();
    assert!(
        ed_line.contains("DIFFERS from the ssh-ed25519 key"),
        "{stdout}"
    );
    let ec_line = stdout
        .lines()
        .find(|l| l.contains(&site.sshd.fingerprint("ecdsa")))
        .unwrap();
    assert!(ec_line.contains("(not in "), "{stdout}");
    // The printed lines are a valid known_hosts file.
    site.file("known_hosts", &stdout);
    site.run().code(0);
    site.exec(&[
        "hostkey",
        "127.0.0.1",
        "--port",
        &site.sshd.port.to_string(),
    ])
    .code(0)
    .prints(&site.sshd.fingerprint("ed25519"));
}

#[test]
fn agent_identities_log_in() {
    let site = Site::new();
    site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    let sock = site.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "ssh-agent did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A key the server does not accept first, then the one it does.
    let stranger = sshd::keygen(site.path(), "stranger_key", "ed25519", "");
    for k in [stranger, site.path().join("client_key")] {
        let st = std::process::Command::new("ssh-add")
            .arg(&k)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    site.configure(&[("private_key", ""), ("use_agent", "true")]);
    let ran = site.env("SSH_AUTH_SOCK", sock.to_str().unwrap()).run();
    let _ = agent.kill();
    let _ = agent.wait();
    ran.code(0);
    assert_eq!(site.processed().len(), 1);
}

#[test]
fn a_file_the_server_will_not_let_us_read_fails_alone_at_once() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let locked = site.put(
        "acts_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("A2", "Ordered", "2026-11-02")]),
    );
    // As a user the file's mode applies to (root reads anything).
    let s = site
        .run_as_password_user(&["run", "--summary-json", "s.json"])
        .code(2)
        // Permission denied is the server's answer, not a dropped connection: not tried again.
        .never_says("retrying in")
        .summary();
    assert_eq!(s["reports"][0]["status"], "failed", "{s}");
    assert!(
        s["reports"][0]["error"]
            .as_str()
            .unwrap()
            .contains("acts_2026-11-01.csv"),
        "{s}"
    );
    assert_eq!(s["reports"][1]["status"], "processed");
    assert_eq!(site.processed(), vec!["acts_2026-11-02.csv".to_string()]);
}

#[test]
fn a_file_removed_from_the_server_after_the_listing_is_deferred_not_failed() {
    let site = Site::new();
    // A: ~4 MB, read through a relay at 1 MB/s; B is removed while A downloads.
    let rows: Vec<Row> = (0..40_000)
        .map(|i| export_row(&format!("A{i}"), "Ordered", "2026-11-01"))
        .collect();
    site.put("acts_2026-11-01.csv", csv(&rows));
    let b = site.put(
        "acts_2026-11-02.csv",
        csv(&[export_row("B1", "Ordered", "2026-11-02")]),
    );
    site.configure(&[]);
    let relay = Relay::throttled(site.sshd.port, 1 << 20);
    let w2 = through_relay(&site, &relay);
    let run = start_download(&w2, 256 << 10);
    std::fs::remove_file(&b).unwrap();
    let ran = run.wait().code(0).never_says("retrying in");
    let s = ran.summary();
    assert_eq!(s["reports"][0]["status"], "processed", "{s}");
    assert_eq!(s["reports"][1]["status"], "deferred", "{s}");
    assert!(
        s["reports"][1]["notes"][0]
            .as_str()
            .unwrap()
            .contains("removed from the server after it was listed"),
        "{s}"
    );
}

/// Issue 17, item 6: a report that fails at every run over SFTP with `after = "leave"`
/// (it stays on the server) can be acknowledged: `reports ignore` stops the exit 2, `status`
/// and `reports` show it as ignored with who and why, `reports retry` brings it back.
#[test]
fn an_ignored_failing_report_stops_exit_2_over_sftp_until_retried() {
    let site = Site::new();
    site.configure(&[("after", "\"leave\"")]);
    let bad = "r_2026-11-01.csv";
    site.put(bad, "Renamed Column,Status\nA1,Ordered\n");
    site.put(
        "r_2026-11-02.csv",
        csv(&[export_row("A2", "Ordered", "2026-11-02")]),
    );
    site.run().code(2).says("missing required column");
    site.run().code(2);
    site.exec(&["reports"])
        .code(0)
        .prints(&format!("{bad} [2026-11-01] failed"))
        .prints("2 failed attempt(s); last error:")
        .prints("missing required column");

    site.env("USER", "night-operator")
        .exec(&["reports", "ignore", bad, "--reason", "ticket 4711"])
        .code(0);
    site.exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .prints("ignored by night-operator")
        .never_says("missing required column");
    assert_eq!(
        site.remote_files(),
        [bad, "r_2026-11-02.csv"],
        "left on the server"
    );
    site.exec(&["status"])
        .code(0)
        .prints(&format!(
            "ignored {bad} (report date 2026-11-01): ignored by night-operator at "
        ))
        .prints(": ticket 4711; last error: ");
    let status: serde_json::Value =
        serde_json::from_str(&site.exec(&["status", "--json"]).code(0).stdout()).unwrap();
    assert_eq!(status["reports"]["failed"], 0, "{status}");
    assert_eq!(
        status["ignored_reports"][0]["ignored"]["reason"],
        "ticket 4711"
    );
    site.exec(&["reports", "--failed"])
        .code(0)
        .prints(&format!("{bad} [2026-11-01] ignored"));

    site.exec(&["reports", "retry", bad]).code(0);
    site.run().code(2).says("missing required column");
}

#[test]
fn only_a_failing_report_can_be_ignored() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    c.exec(&["reports", "ignore", "r_2026-11-01.csv"])
        .code(1)
        .says("is not failing");
    c.exec(&["reports", "ignore", "nope.csv"])
        .code(1)
        .says("no report named");
    c.exec(&["reports", "retry", "r_2026-11-01.csv"])
        .code(1)
        .says("is not ignored");
}

/// Issue 17, item 8: a download shows its bytes, rate and time left on a terminal.
#[test]
fn a_download_shows_its_progress_on_a_terminal() {
    let site = Site::new();
    site.put(
        "r_2026-11-01.csv",
        csv(&[export_row("A1", "Ordered", "2026-11-01")]),
    );
    let tty = crate::progress::in_terminal(&site, "run", &[]);
    assert!(tty.contains("downloading r_2026-11-01.csv ["), "{tty}");
    assert!(tty.contains(" ETA "), "{tty}");
}
