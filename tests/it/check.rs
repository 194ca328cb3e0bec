//! `check`, over the real binary, against the real sshd and the loopback HTTP server: one ✓
//! or ✗ line per check with its reason, exit 0 only when all pass, and nothing written.

use crate::server::{Reply, Server};
use crate::sshd::{self, PASSWORD_USER, Sshd};
use crate::support::{Case, csv, row, set_mtime};

const TABLE_PATH: &str = "/api/now/table/sc_req_item";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A ServiceNow Table API that answers every GET with an empty result.
fn table_api() -> Server {
    Server::start(|_, _| Reply::json(200, serde_json::json!({"result": []})))
}

/// A Table API sink on `url` with basic auth (the password in `SN_PASSWORD`).
fn table_sink(url: &str) -> String {
    format!(
        "[[sink]]\ntype = \"http\"\nname = \"sn\"\napi = \"servicenow_table\"\nurl = \"{url}\"\n\
         username = \"svc\"\npassword_env = \"SN_PASSWORD\"\nmapping = \"builtin:servicenow-ritm\"\n"
    )
}

/// A case whose source is the sshd's folder `remote/` (reports put an hour ago), logging
/// in with `login` (TOML keys) and trusting the hosts in the case's `known_hosts`.
fn sftp_case(sshd: &Sshd, login: &str, sinks: &str) -> Case {
    let c = Case::new();
    let remote = c.path().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    for dir in [c.path(), remote.as_path()] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    c.config(&format!(
        "[source]\ntype = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\n{login}\n\
         known_hosts = \"known_hosts\"\nremote_dir = {:?}\nmin_age = \"0s\"\nsettle = \"0s\"\n\
         timeout = \"10s\"\n\n[ledger]\npath = \"state/ledger.sqlite\"\n\n\
         [[sink]]\ntype = \"file\"\ndir = \"out\"\n{sinks}",
        sshd.port,
        remote.display().to_string()
    ));
    c.file("known_hosts", sshd.known_hosts_lines(sshd.port));
    c.file("remote/r_2026-11-01.csv", csv(&[row("A1", "Ordered")]));
    c.file("remote/notes.txt", "not a report");
    set_mtime(&c.path().join("remote/r_2026-11-01.csv"), now() - 3600);
    c
}

/// Logs in as root with a fresh key the sshd accepts.
fn key_login(sshd: &Sshd, c: &Case) -> &'static str {
    let key = sshd::keygen(c.path(), "client_key", "ed25519", "");
    sshd.authorize(&key.with_extension("pub"));
    "username = \"root\"\nprivate_key = \"client_key\""
}

#[test]
fn check_passes_a_good_sftp_source_and_table_api_and_writes_nothing() {
    let sshd = Sshd::start();
    let api = table_api();
    let c = sftp_case(
        &sshd,
        "username = \"root\"",
        &table_sink(&api.url(TABLE_PATH)),
    );
    let login = key_login(&sshd, &c);
    let config = c
        .read("tangoe-ingest.toml")
        .replace("username = \"root\"", login);
    c.config(&config);
    let out = c
        .env("SN_PASSWORD", "pw")
        .exec(&["check"])
        .code(0)
        .prints("✓ configuration")
        .prints("✓ sink sn mapping: renders a sample event into number, state, work_notes")
        .prints("required: number")
        .prints("host key: matches known_hosts")
        .prints("login: logged in as root")
        .prints("take  r_2026-11-01.csv")
        .prints("skip  notes.txt: matches none of the source's patterns")
        .prints("✓ source download folder")
        .prints("✓ sink sn (servicenow_table): GET")
        .never_says("skip  .")
        .prints("all checks passed")
        .stdout();
    assert!(!out.contains('✗'), "{out}");
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1, "one GET, nothing else");
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].query("sysparm_limit").as_deref(), Some("1"));
    assert!(reqs[0].header("authorization").is_some());
    assert!(!c.path().join("state").exists(), "no ledger, no archive");
    assert!(!c.path().join("out").exists(), "no import folder");
}

#[test]
fn check_fails_a_host_key_known_hosts_does_not_list() {
    let sshd = Sshd::start();
    let c = sftp_case(&sshd, "username = \"root\"", "");
    let login = key_login(&sshd, &c);
    let config = c
        .read("tangoe-ingest.toml")
        .replace("username = \"root\"", login);
    c.config(&config);
    // known_hosts names another key for the server.
    let other = sshd::keygen(c.path(), "impostor", "ed25519", "");
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut parts = pubkey.split_whitespace();
    let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
    c.file(
        "known_hosts",
        format!("[127.0.0.1]:{} {kind} {key}\n", sshd.port),
    );
    c.exec(&["check"])
        .code(1)
        .prints("✗ source sftp://root@127.0.0.1")
        .prints("host key: ")
        .never_says("logged in")
        .prints("1 check failed");
}

#[test]
fn check_fails_a_wrong_password_after_the_host_key_passes() {
    let sshd = Sshd::start();
    let c = sftp_case(
        &sshd,
        &format!("username = {PASSWORD_USER:?}\npassword_env = \"SFTP_PW\""),
        "",
    );
    c.env("SFTP_PW", "not-the-password")
        .exec(&["check"])
        .code(1)
        .prints("✓ source sftp://tangoe-sftp-test@127.0.0.1")
        .prints("host key: matches known_hosts")
        .prints("✗ source sftp://tangoe-sftp-test@127.0.0.1")
        .prints("login: ")
        .prints("password (rejected)")
        .never_says("not-the-password");
}

#[test]
fn check_fails_an_unreachable_api_and_rejected_credentials() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = Case::with_config(&table_sink(&format!(
        "http://127.0.0.1:{closed}{TABLE_PATH}"
    )));
    c.env("SN_PASSWORD", "pw")
        .env("TANGOE_INGEST_HTTP_BACKOFF", "10ms")
        .exec(&["check"])
        .code(1)
        .prints("✓ source")
        .prints("✗ sink sn (servicenow_table): GET http://127.0.0.1:")
        .prints("1 check failed");

    let api = Server::start(|_, _| {
        Reply::json(
            401,
            serde_json::json!({"error": {"message": "User Not Authenticated"}}),
        )
    });
    c.config(&Case::default_config(&table_sink(&api.url(TABLE_PATH))));
    c.exec(&["check"])
        .code(1)
        .prints("✗ sink sn (servicenow_table): GET")
        .prints("HTTP 401: User Not Authenticated")
        .prints("check the sink's credentials");
    assert_eq!(
        api.requests().len(),
        1,
        "one try: a refused login is not retried"
    );
}

#[test]
fn check_says_a_webhook_is_untested_and_sends_it_nothing() {
    let hook = Server::ok();
    let c = Case::with_config(&format!(
        "[[sink]]\ntype = \"http\"\nname = \"hook\"\napi = \"webhook\"\nurl = \"{}\"\n",
        hook.url("/hook")
    ));
    c.exec(&["check"])
        .code(0)
        .prints("– sink hook (webhook): a webhook cannot be tested without sending it an event");
    assert!(hook.requests().is_empty());
}

#[test]
fn check_tests_an_import_set_sink_by_reading_its_staging_table() {
    let api = table_api();
    let c = Case::with_config(&format!(
        "[[sink]]\ntype = \"http\"\nname = \"iset\"\napi = \"servicenow_import_set\"\n\
         url = \"{}\"\nmapping = \"builtin:servicenow-ritm\"\n",
        api.url("/api/now/import/u_tangoe_activity")
    ));
    c.exec(&["check"])
        .code(0)
        .prints("✓ sink iset (servicenow_import_set): GET");
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path()),
        ("GET", "/api/now/table/u_tangoe_activity")
    );
}

#[test]
fn check_says_which_local_files_a_run_takes_and_why_not_the_others() {
    let c = Case::new();
    c.report("r_2026-11-01.csv", &[row("A1", "Ordered")]);
    c.run().code(0);
    c.report("r_2026-11-02.csv", &[row("A1", "Completed")]);
    c.file("drop/readme.txt", "x");
    c.file("drop/.r_2026-11-03.csv", "partial");
    c.exec(&["check"])
        .code(0)
        .prints("✓ ledger")
        .prints("a run would take 1")
        .prints("skip  r_2026-11-01.csv: processed before")
        .prints("take  r_2026-11-02.csv")
        .prints("skip  readme.txt: matches none of the source's patterns")
        .prints("skip  .r_2026-11-03.csv: a hidden name");
}

#[test]
fn check_fails_a_configuration_that_does_not_load_with_its_reason() {
    let c = Case::with_config("mapping = \"builtin:no-such-mapping\"\n");
    c.exec(&["check"])
        .code(1)
        .prints("✗ configuration")
        .prints("there is no built-in mapping \"no-such-mapping\"");
}
