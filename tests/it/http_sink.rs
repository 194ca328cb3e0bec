//! The HTTP sink against a real server on 127.0.0.1: ServiceNow Import Set and Table API,
//! webhooks, retries, the durable outbox, ticket mirroring, and secrets kept out of sight.

use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

use crate::server::{Recorded, Reply, Server, import_ok};
use crate::support::Workdir;

const PASSWORD: &str = "Zq-SECRET-pw-9731";
const IMPORT_PATH: &str = "/api/now/import/u_tangoe_activity";
const TABLE_PATH: &str = "/api/now/table/sc_req_item";

/// An `[[sink]]` table for the server, with `extra` keys.
fn sink(server: &Server, api: &str, path: &str, extra: &str) -> String {
    format!(
        r#"
[[sink]]
type = "http"
name = "servicenow"
api = "{api}"
url = "{}"
timeout = "5s"
max_attempts = 3
{extra}
"#,
        server.url(path)
    )
}

const BASIC: &str =
    "username = \"svc_tangoe\"\npassword_env = \"SN_PASSWORD\"\nmapping = \"mapping.toml\"";

fn workdir(sink_toml: &str) -> Workdir {
    let w = Workdir::new();
    w.config(&Workdir::config_with(sink_toml));
    w.write(
        "mapping.toml",
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/servicenow-ritm.toml"
        ))
        .unwrap(),
    );
    w
}

/// Runs the binary with the sink's password in the environment and short retry waits.
fn run(w: &Workdir, args: &[&str], code: i32) -> Output {
    let out = w
        .cmd()
        .env("SN_PASSWORD", PASSWORD)
        .env("TANGOE_INGEST_HTTP_BACKOFF", "10ms")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "args {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// (event_id, status) of each event the ledger has an outcome for, for the sink, in order.
fn outcomes(w: &Workdir) -> Vec<(String, String)> {
    let c = w.ledger();
    let mut stmt = c
        .prepare(
            "SELECT e.event_key, d.status FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.sink = 'servicenow' ORDER BY e.id",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Event ids in ledger order (the file sink writes every event).
fn event_ids(w: &Workdir) -> Vec<String> {
    w.events()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect()
}

fn keys(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter().map(Recorded::key).collect()
}

#[test]
fn import_set_delivers_each_event_once_with_basic_auth_and_idempotency_key() {
    let server = Server::ok();
    let w = workdir(&sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,",
            "A2,Completed,RITM2,2026-11-01T10:00:00Z,,,,",
        ],
    );
    run(&w, &["run"], 0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("svc_tangoe:{PASSWORD}"))
    );
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path(), IMPORT_PATH);
        assert_eq!(r.header("Authorization"), Some(expected_auth.as_str()));
        assert_eq!(r.header("Content-Type"), Some("application/json"));
    }
    assert_eq!(
        keys(&reqs),
        event_ids(&w),
        "X-Idempotency-Key is the event id"
    );
    assert_eq!(reqs[0].json()["number"], "RITM1");
    assert_eq!(reqs[0].json()["state"], "2");
    assert_eq!(reqs[1].json()["number"], "RITM2");
    assert_eq!(reqs[1].json()["state"], "3");
    assert!(
        reqs[1].json()["work_notes"]
            .as_str()
            .unwrap()
            .starts_with("Your mobility request has been completed.")
    );
    assert_eq!(
        outcomes(&w)
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>(),
        ["delivered", "delivered"]
    );

    // Nothing delivered is sent again: not by a run, not by `deliver`.
    run(&w, &["run"], 0);
    run(&w, &["deliver"], 0);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn import_set_row_error_is_a_failed_delivery_not_retried_until_retry_failed() {
    let server = Server::start(|r, _| {
        if r.json()["number"] == "RITM1" {
            Reply::json(
                201,
                json!({"import_set": "ISET1", "staging_table": "u_tangoe_activity", "result": [{
                    "transform_map": "Tangoe", "table": "sc_req_item", "status": "error",
                    "error_message": "Unable to resolve target record, coalesce values not present: number"}]}),
            )
        } else {
            import_ok()
        }
    });
    let w = workdir(&sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,",
            "A2,Ordered,RITM2,2026-11-01T10:00:00Z,,,,",
        ],
    );
    let out = run(&w, &["run", "--summary-json", "s.json"], 2);
    assert!(
        stdout(&out)
            .contains("Unable to resolve target record, coalesce values not present: number"),
        "{}",
        stdout(&out)
    );
    assert_eq!(server.requests().len(), 2, "the row error is not retried");
    let s = w.summary("s.json");
    assert_eq!(s["sinks"][1]["name"], "servicenow");
    assert_eq!(s["sinks"][1]["delivered"], 1);
    assert_eq!(s["sinks"][1]["failed"], 1);
    assert_eq!(s["sinks"][1]["pending"], 0);
    let ids = event_ids(&w);
    assert_eq!(
        outcomes(&w),
        vec![
            (ids[0].clone(), "failed".into()),
            (ids[1].clone(), "delivered".into())
        ]
    );

    let status = stdout(&run(&w, &["status"], 0));
    assert!(
        status.contains(&format!("failed  #1 {}", ids[0])),
        "{status}"
    );
    assert!(
        status.contains("Unable to resolve target record"),
        "{status}"
    );
    assert!(
        status.contains("retry --failed --sink servicenow"),
        "{status}"
    );

    // A failed event stays failed: neither `deliver` nor `run` sends it again...
    run(&w, &["deliver"], 0);
    run(&w, &["run"], 0);
    assert_eq!(server.requests().len(), 2);
    // ...until a person re-queues it.
    server.set(|_, _| import_ok());
    let out = run(&w, &["retry", "--failed", "--sink", "servicenow"], 0);
    assert!(
        stdout(&out).contains("sink servicenow: 1 failed events are pending again"),
        "{}",
        stdout(&out)
    );
    run(&w, &["deliver"], 0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].key(), ids[0]);
    assert_eq!(
        outcomes(&w),
        vec![
            (ids[0].clone(), "delivered".into()),
            (ids[1].clone(), "delivered".into())
        ]
    );
}

#[test]
fn rate_limited_429_waits_as_retry_after_says_then_delivers() {
    let server = Server::start(|_, i| {
        if i == 0 {
            Reply::Send(429, vec![("Retry-After", "1".into())], "{}".into())
        } else {
            import_ok()
        }
    });
    let w = workdir(&sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &["A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,"],
    );
    run(&w, &["run"], 0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].key(), reqs[1].key());
    // The retry backoff is 10 ms here: only Retry-After explains a gap of a second.
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, before Retry-After: 1"
    );
    assert_eq!(outcomes(&w).len(), 1);
}

#[test]
fn server_error_twice_then_success_delivers_once() {
    let server = Server::start(|_, i| {
        if i < 2 {
            Reply::json(
                500,
                json!({"error": {"message": "Transaction cancelled: maximum execution time exceeded"}}),
            )
        } else {
            import_ok()
        }
    });
    let w = workdir(&sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &["A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,"],
    );
    run(&w, &["run"], 0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|r| r.key() == reqs[0].key()));
    assert_eq!(
        outcomes(&w),
        vec![(event_ids(&w)[0].clone(), "delivered".into())]
    );
    let attempts: i64 = w
        .ledger()
        .query_row(
            "SELECT attempts FROM deliveries WHERE sink = 'servicenow'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(attempts, 3);
}

#[test]
fn dropped_connection_and_hang_past_the_timeout_are_retried() {
    let server = Server::start(|_, i| match i {
        0 => Reply::Drop,
        1 => Reply::Hang(Duration::from_secs(4)),
        _ => import_ok(),
    });
    let w = workdir(
        &sink(
            &server,
            "servicenow_import_set",
            IMPORT_PATH,
            &format!("{BASIC}\n"),
        )
        .replace("timeout = \"5s\"", "timeout = \"1s\""),
    );
    w.report(
        "r_2026-11-01.csv",
        &["A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,"],
    );
    let out = run(&w, &["run"], 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timed out"), "{stderr}");
    assert_eq!(server.requests().len(), 3);
    assert_eq!(outcomes(&w).len(), 1);
}

#[test]
fn endpoint_down_for_a_whole_run_leaves_events_pending_and_the_next_run_delivers_them_once_in_order()
 {
    let server = Server::start(|_, _| {
        Reply::json(503, json!({"error": {"message": "instance unavailable"}}))
    });
    let w = workdir(
        &sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC)
            .replace("max_attempts = 3", "max_attempts = 2"),
    );
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,",
            "A2,Ordered,RITM2,2026-11-01T10:00:00Z,,,,",
        ],
    );
    w.report(
        "r_2026-11-02.csv",
        &["A1,Completed,RITM1,2026-11-02T10:00:00Z,,,,"],
    );
    let out = run(&w, &["run", "--summary-json", "s.json"], 2);
    assert!(
        stdout(&out).contains("HTTP 503: instance unavailable"),
        "{}",
        stdout(&out)
    );
    let ids = event_ids(&w);
    assert_eq!(
        ids.len(),
        3,
        "the file sink has its own delivery state and got every event"
    );
    let s = w.summary("s.json");
    assert_eq!(s["sinks"][0]["pending"], 0);
    assert_eq!(s["sinks"][1]["pending"], 3);
    assert_eq!(s["pending"], 3);
    // max_attempts for the oldest event; A1's later event never overtakes it, while A2 (another
    // Activity) is tried in its turn.
    assert_eq!(
        keys(&server.requests()),
        vec![
            ids[0].clone(),
            ids[0].clone(),
            ids[1].clone(),
            ids[1].clone()
        ]
    );
    assert!(outcomes(&w).is_empty());
    // Pending events are what a dry run audits, not a failure of it: both dry runs exit 0
    // and send nothing.
    let sent = server.requests().len();
    run(&w, &["run", "--dry-run"], 0);
    run(&w, &["deliver", "--dry-run"], 0);
    assert_eq!(server.requests().len(), sent);
    let status = stdout(&run(&w, &["status"], 0));
    assert!(
        status.contains(&format!("pending #1 {}", ids[0])),
        "{status}"
    );

    // The ITSM is back: the next run sends the pending events first, oldest first, once each.
    server.set(|_, _| import_ok());
    run(&w, &["run"], 0);
    let sent: Vec<String> = keys(&server.requests()[4..]);
    assert_eq!(sent, ids);
    run(&w, &["deliver"], 0);
    run(&w, &["run"], 0);
    assert_eq!(server.requests().len(), 7);
}

#[test]
fn killed_during_delivery_the_rerun_delivers_every_event_and_never_resends_a_recorded_one() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let server = Server::start(move |_, i| {
        if i < 3 {
            import_ok()
        } else {
            let _ = tx.lock().unwrap().send(());
            Reply::Hang(Duration::from_secs(20))
        }
    });
    let w = workdir(
        &sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC)
            .replace("timeout = \"5s\"", "timeout = \"60s\""),
    );
    let rows: Vec<String> = (1..=6)
        .map(|i| format!("A{i},Ordered,RITM{i},2026-11-01T10:00:00Z,,,,"))
        .collect();
    w.report(
        "r_2026-11-01.csv",
        &rows.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("tangoe-ingest"))
        .current_dir(w.path())
        .env("SN_PASSWORD", PASSWORD)
        .env_remove("RUST_LOG")
        .args(["--config", "tangoe-ingest.toml", "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The fourth request is in flight: kill -9.
    let got = rx.recv_timeout(Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    got.expect("the fourth request never came");
    let first_run = keys(&server.requests());
    let recorded: Vec<String> = outcomes(&w)
        .into_iter()
        .filter(|(_, s)| s == "delivered")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        recorded,
        first_run[..3].to_vec(),
        "each 2xx is recorded before the next request"
    );

    server.set(|_, _| import_ok());
    run(&w, &["run"], 0);
    let ids = event_ids(&w);
    assert_eq!(ids.len(), 6);
    let rerun = keys(&server.requests()[first_run.len()..]);
    assert_eq!(
        rerun,
        ids[3..].to_vec(),
        "the rerun sends exactly the events without a recorded 2xx"
    );
    assert_eq!(outcomes(&w).len(), 6);
}

fn table_server() -> Server {
    Server::start(|r, _| match (r.method.as_str(), r.path()) {
        ("GET", TABLE_PATH) => {
            let q = r.query("sysparm_query").unwrap_or_default();
            match q.strip_prefix("number=") {
                // A server that ignores the query's conditions answers with another record.
                Some("RITM77") => Reply::json(
                    200,
                    json!({"result": [{"sys_id": "sys-RITM1", "number": "RITM1"}]}),
                ),
                Some(n) if n.starts_with("RITM") && n != "RITM404" => Reply::json(
                    200,
                    json!({"result": [{"sys_id": format!("sys-{n}"), "number": n}]}),
                ),
                _ => Reply::json(200, json!({"result": []})),
            }
        }
        ("PATCH", p) if p.starts_with(TABLE_PATH) => {
            Reply::json(200, json!({"result": {"sys_id": p.rsplit('/').next()}}))
        }
        ("POST", TABLE_PATH) => Reply::json(
            201,
            json!({"result": {"sys_id": "new-sys-1", "number": "RITM0010001", "state": "1"}}),
        ),
        _ => Reply::json(404, json!({"error": {"message": "No such path"}})),
    })
}

#[test]
fn table_api_looks_up_the_sys_id_once_per_run_then_patches() {
    let server = table_server();
    let w = workdir(&sink(&server, "servicenow_table", TABLE_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,",
            "A2,Ordered,RITM2,2026-11-01T10:00:00Z,,,,",
        ],
    );
    w.report(
        "r_2026-11-02.csv",
        &["A1,Completed,RITM1,2026-11-02T10:00:00Z,,,,"],
    );
    run(&w, &["run"], 0);
    let reqs = server.requests();
    let seen: Vec<String> = reqs
        .iter()
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    assert_eq!(
        seen,
        vec![
            format!("GET {TABLE_PATH}"),
            format!("PATCH {TABLE_PATH}/sys-RITM1"),
            format!("GET {TABLE_PATH}"),
            format!("PATCH {TABLE_PATH}/sys-RITM2"),
            format!("PATCH {TABLE_PATH}/sys-RITM1"),
        ]
    );
    assert_eq!(
        reqs[0].query("sysparm_query").as_deref(),
        Some("number=RITM1")
    );
    assert_eq!(
        reqs[0].query("sysparm_fields").as_deref(),
        Some("sys_id,number")
    );
    assert_eq!(reqs[4].json()["state"], "3");
    let ids = event_ids(&w);
    assert_eq!(
        keys(&reqs),
        vec![
            ids[0].clone(),
            ids[0].clone(),
            ids[1].clone(),
            ids[1].clone(),
            ids[2].clone()
        ]
    );
    assert_eq!(outcomes(&w).len(), 3);
}

#[test]
fn table_api_unknown_number_is_a_permanent_failure() {
    let server = table_server();
    let w = workdir(&sink(&server, "servicenow_table", TABLE_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &["A1,Ordered,RITM404,2026-11-01T10:00:00Z,,,,"],
    );
    let out = run(&w, &["run"], 2);
    assert!(
        stdout(&out).contains("no RITM404 in sc_req_item"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        server.requests().len(),
        1,
        "one lookup, not retried, no PATCH"
    );
    let error: String = w
        .ledger()
        .query_row(
            "SELECT error FROM deliveries WHERE status = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(error, "no RITM404 in sc_req_item");
    run(&w, &["run"], 0);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn table_api_numbers_that_could_change_the_query_or_find_another_ticket_update_nothing() {
    let server = table_server();
    let w = workdir(&sink(&server, "servicenow_table", TABLE_PATH, BASIC));
    // `^` joins conditions in a ServiceNow encoded query: this number would match any ticket.
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,RITM1^ORnumberISNOTEMPTY,2026-11-01T10:00:00Z,,,,",
            "A2,Ordered,RITM77,2026-11-01T10:00:00Z,,,,",
            "A3,Ordered,RITM3,2026-11-01T10:00:00Z,,,,",
        ],
    );
    run(&w, &["run"], 2);
    let seen: Vec<String> = server
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.method,
                r.path(),
                r.query("sysparm_query").unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            format!("GET {TABLE_PATH} number=RITM77"),
            format!("GET {TABLE_PATH} number=RITM3"),
            format!("PATCH {TABLE_PATH}/sys-RITM3 "),
        ],
        "no lookup for the number with `^`, no PATCH of the record another lookup returned"
    );
    let errors: Vec<String> = w
        .ledger()
        .prepare("SELECT error FROM deliveries WHERE status = 'failed' ORDER BY event_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("is not a ticket number"), "{errors:?}");
    assert_eq!(
        errors[1],
        "the lookup of RITM77 in sc_req_item returned RITM1"
    );
}

#[test]
fn refused_credentials_stop_the_sink_at_the_first_request_and_keep_every_event_pending() {
    let server = Server::start(|_, _| {
        Reply::json(401, json!({"error": {"message": "User Not Authenticated"}}))
    });
    let w = workdir(&sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,",
            "A2,Ordered,RITM2,2026-11-01T10:00:00Z,,,,",
            "A3,Ordered,RITM3,2026-11-01T10:00:00Z,,,,",
        ],
    );
    let out = run(&w, &["run", "--summary-json", "s.json"], 2);
    assert!(
        stdout(&out).contains("HTTP 401: User Not Authenticated: check the sink's credentials"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        server.requests().len(),
        1,
        "one refused login, not one per event"
    );
    assert!(outcomes(&w).is_empty(), "nothing failed for good");
    assert_eq!(w.summary("s.json")["sinks"][1]["pending"], 3);
}

#[test]
fn a_403_for_one_record_fails_that_event_only() {
    // ServiceNow answers 403 for a record an ACL protects: the sink itself is fine.
    let server = Server::start(|r, _| {
        if r.json()["number"] == "RITM1" {
            Reply::json(
                403,
                json!({"error": {"message": "Operation Failed: ACL Exception"}}),
            )
        } else {
            import_ok()
        }
    });
    let w = workdir(&sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,",
            "A2,Ordered,RITM2,2026-11-01T10:00:00Z,,,,",
        ],
    );
    run(&w, &["run"], 2);
    let statuses: Vec<String> = outcomes(&w).into_iter().map(|(_, s)| s).collect();
    assert_eq!(statuses, ["failed", "delivered"]);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_2xx_whose_answer_is_cut_off_delivers_unless_the_answer_is_needed() {
    // A webhook's answer is not read: its 2xx delivers, and sending again would repeat it.
    let server = Server::start(|_, _| Reply::CutOff(200));
    let w = workdir(&sink(&server, "webhook", "/hook", BASIC));
    w.report(
        "r_2026-11-01.csv",
        &["A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,"],
    );
    run(&w, &["run"], 0);
    assert_eq!(server.requests().len(), 1, "not sent again");
    assert_eq!(outcomes(&w).len(), 1);

    // An Import Set's answer says whether the row was applied: a cut-off one is asked again.
    let server = Server::start(|_, n| {
        if n == 0 {
            Reply::CutOff(201)
        } else {
            import_ok()
        }
    });
    let w = workdir(&sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &["A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,"],
    );
    run(&w, &["run"], 0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].key(), reqs[1].key(), "the same idempotency key");
}

const MIRROR_MAPPING: &str = r#"
[states]
ordered = "2"
completed = "3"
cancelled = "4"

[fields]
number = "{{ itsm_number }}"
state = "{{ state_code }}"
work_notes = "Tangoe activity {{ activity_id }} is {{ state }}."

[create]
short_description = "Tangoe mobility request {{ activity_id }}"
correlation_id = "{{ activity_id }}"
state = "{{ state_code }}"
"#;

#[test]
fn mirroring_creates_the_ticket_once_then_updates_it() {
    let server = table_server();
    let w = workdir(&sink(
        &server,
        "servicenow_table",
        TABLE_PATH,
        &format!("{BASIC}\ncreate_missing = true"),
    ));
    w.write("mapping.toml", MIRROR_MAPPING);
    w.report(
        "r_2026-11-01.csv",
        &["A1,Ordered,,2026-11-01T10:00:00Z,,,,"],
    );
    run(&w, &["run"], 0);
    w.report(
        "r_2026-11-02.csv",
        &["A1,Completed,,2026-11-02T10:00:00Z,,,,"],
    );
    run(&w, &["run"], 0);
    let reqs = server.requests();
    let seen: Vec<String> = reqs
        .iter()
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    assert_eq!(
        seen,
        vec![
            format!("POST {TABLE_PATH}"),
            format!("PATCH {TABLE_PATH}/new-sys-1")
        ]
    );
    assert_eq!(
        reqs[0].json(),
        json!({"short_description": "Tangoe mobility request A1", "correlation_id": "A1", "state": "2"})
    );
    assert_eq!(
        reqs[1].json(),
        json!({"number": "RITM0010001", "state": "3", "work_notes": "Tangoe activity A1 is completed."})
    );
    let (number, sys_id): (String, String) = w
        .ledger()
        .query_row(
            "SELECT a.itsm_number, t.sys_id FROM activities a JOIN tickets t USING (activity_id) WHERE activity_id = 'A1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (number.as_str(), sys_id.as_str()),
        ("RITM0010001", "new-sys-1")
    );
    assert_eq!(
        w.events()[1]["itsm_number"],
        "RITM0010001",
        "later events carry the created number"
    );
}

#[test]
fn without_create_missing_events_lacking_a_number_are_skipped_and_counted() {
    let server = table_server();
    let w = workdir(&sink(&server, "servicenow_table", TABLE_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,,2026-11-01T10:00:00Z,,,,",
            "A2,Ordered,RITM2,2026-11-01T10:00:00Z,,,,",
        ],
    );
    let out = run(&w, &["run", "--summary-json", "s.json"], 0);
    assert!(
        stdout(&out).contains("skipped 1: no itsm_number to update and create_missing is off"),
        "{}",
        stdout(&out)
    );
    let s = w.summary("s.json");
    assert_eq!(s["sinks"][1]["skipped"], 1);
    assert_eq!(
        s["sinks"][1]["skip_reasons"]["no itsm_number to update and create_missing is off"],
        1
    );
    assert_eq!(s["sinks"][1]["delivered"], 1);
    assert!(server.requests().iter().all(|r| r.method != "POST"));
    assert_eq!(
        server.requests().len(),
        2,
        "lookup and PATCH for RITM2 only"
    );
}

#[test]
fn a_permanently_failed_event_blocks_nothing_and_is_not_sent_after_a_newer_one() {
    let server = Server::start(|r, _| {
        if r.json()["state"] == "2" {
            Reply::json(
                400,
                json!({"error": {"message": "Invalid value for state"}}),
            )
        } else {
            import_ok()
        }
    });
    let w = workdir(&sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &["A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,"],
    );
    let out = run(&w, &["run"], 2);
    assert!(
        stdout(&out).contains("HTTP 400: Invalid value for state"),
        "{}",
        stdout(&out)
    );
    w.report(
        "r_2026-11-02.csv",
        &["A1,Completed,RITM1,2026-11-02T10:00:00Z,,,,"],
    );
    run(&w, &["run"], 0);
    let ids = event_ids(&w);
    assert_eq!(
        keys(&server.requests()),
        ids,
        "the later event went out although the earlier one failed"
    );
    assert_eq!(
        outcomes(&w),
        vec![
            (ids[0].clone(), "failed".into()),
            (ids[1].clone(), "delivered".into())
        ]
    );

    // Re-queued, the old "ordered" would turn the closed ticket back: it is skipped.
    server.set(|_, _| import_ok());
    run(&w, &["retry", "--failed"], 0);
    let out = run(&w, &["deliver"], 0);
    assert!(stdout(&out).contains("superseded"), "{}", stdout(&out));
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn webhook_body_equals_the_mapping_with_bearer_auth_and_put() {
    let server = Server::start(|_, _| Reply::json(200, json!({"ok": true})));
    let w = workdir(&sink(
        &server,
        "webhook",
        "/hooks/tangoe",
        "method = \"PUT\"\nbearer_token_file = \"secrets/token\"\nmapping = \"webhook.toml\"",
    ));
    w.write("secrets/token", "tok-123\n");
    w.write(
        "webhook.toml",
        r#"
[states]
completed = "Done"

[fields]
key = "{{ itsm_number }}"
status = "{{ state_code }}"
idempotency = "{{ event_id }}"
comment = "Activity {{ activity_id }}: {{ previous_state }} -> {{ state }} on {{ updated_at }}; device {{ device }}"
cost_center = "{{ extra['Cost Center'] | default('') }}"
"#,
    );
    w.report(
        "r_2026-11-01.csv",
        &["A7,Completed,SD-42,2026-11-01T10:00:00Z,5551234567,Pixel 9,,CC-100"],
    );
    run(&w, &["run"], 0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "PUT");
    assert_eq!(reqs[0].path(), "/hooks/tangoe");
    assert_eq!(reqs[0].header("Authorization"), Some("Bearer tok-123"));
    assert_eq!(reqs[0].json()["idempotency"], reqs[0].key());
    insta::assert_snapshot!(
        "webhook_body",
        serde_json::to_string_pretty(&reqs[0].json()).unwrap()
    );
}

#[test]
fn the_password_appears_in_no_output_and_dry_run_shows_requests_redacted() {
    let server = Server::start(|_, i| {
        if i == 0 {
            Reply::json(401, json!({"error": {"message": "User Not Authenticated"}}))
        } else {
            import_ok()
        }
    });
    let w = workdir(&sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC));
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,",
            "A2,Ordered,RITM2,2026-11-01T10:00:00Z,,,,",
        ],
    );

    // Dry run first: no request, the first requests shown, the secret redacted.
    let dry = run(&w, &["run", "--dry-run", "--summary-json", "dry.json"], 0);
    assert!(server.requests().is_empty(), "a dry run sends nothing");
    let text = stdout(&dry);
    assert!(
        text.contains(&format!("POST {}", server.url(IMPORT_PATH))),
        "{text}"
    );
    assert!(text.contains("Authorization: Basic <redacted>"), "{text}");
    assert!(text.contains("\"number\": \"RITM1\""), "{text}");
    let dry_summary = w.summary("dry.json");
    assert_eq!(dry_summary["sinks"][1]["previews"][0]["method"], "POST");
    assert_eq!(
        dry_summary["sinks"][1]["previews"][0]["body"]["number"],
        "RITM1"
    );

    let real = run(&w, &["-vv", "run", "--summary-json", "s.json"], 2);
    let stderr = String::from_utf8_lossy(&real.stderr).into_owned();
    assert!(
        stderr.contains("Basic <redacted>"),
        "debug logs show the Authorization header redacted:\n{stderr}"
    );
    assert!(
        stdout(&real).contains("HTTP 401: User Not Authenticated"),
        "{}",
        stdout(&real)
    );
    let status = run(&w, &["status", "--json"], 0);
    let deliver = run(&w, &["-vv", "deliver", "--dry-run"], 0);

    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("svc_tangoe:{PASSWORD}"));
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("dry-run stdout".into(), dry.stdout.clone()),
        ("dry-run stderr".into(), dry.stderr.clone()),
        ("run stdout".into(), real.stdout.clone()),
        ("run stderr".into(), real.stderr.clone()),
        ("status".into(), status.stdout.clone()),
        (
            "deliver --dry-run".into(),
            [deliver.stdout.clone(), deliver.stderr.clone()].concat(),
        ),
        (
            "summary".into(),
            std::fs::read(w.path().join("s.json")).unwrap(),
        ),
        (
            "dry-run summary".into(),
            std::fs::read(w.path().join("dry.json")).unwrap(),
        ),
    ];
    for f in ["state/ledger.sqlite", "state/ledger.sqlite-wal"] {
        if let Ok(bytes) = std::fs::read(w.path().join(f)) {
            places.push((f.into(), bytes));
        }
    }
    for f in w.files("out") {
        places.push((
            f.clone(),
            std::fs::read(w.path().join("out").join(&f)).unwrap(),
        ));
    }
    for (name, bytes) in &places {
        for secret in [PASSWORD, encoded.as_str()] {
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|win| win == secret.as_bytes()),
                "{name} contains the secret {secret:?}"
            );
        }
    }
}

#[test]
fn a_missing_password_keeps_events_pending_and_names_the_variable() {
    let server = Server::ok();
    let w = workdir(&sink(
        &server,
        "servicenow_import_set",
        IMPORT_PATH,
        &BASIC.replace("SN_PASSWORD", "SN_NOT_SET"),
    ));
    w.report(
        "r_2026-11-01.csv",
        &["A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,"],
    );
    let out = run(&w, &["run"], 2);
    assert!(
        stdout(&out).contains("the environment variable SN_NOT_SET is not set"),
        "{}",
        stdout(&out)
    );
    assert!(server.requests().is_empty());
    assert_eq!(
        w.events().len(),
        1,
        "the report is committed and the file sink delivered"
    );
}

#[test]
fn a_misspelt_http_sink_key_is_an_error_naming_it() {
    let server = Server::ok();
    let w = workdir(&sink(
        &server,
        "servicenow_import_set",
        IMPORT_PATH,
        &format!("{BASIC}\nmax_attempt = 3"),
    ));
    let out = run(&w, &["run"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_attempt"), "{stderr}");
}

#[test]
fn rate_limit_spaces_the_requests() {
    let server = Server::ok();
    let w = workdir(&sink(
        &server,
        "servicenow_import_set",
        IMPORT_PATH,
        &format!("{BASIC}\nrate_limit = \"4/s\""),
    ));
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,",
            "A2,Ordered,RITM2,2026-11-01T10:00:00Z,,,,",
            "A3,Ordered,RITM3,2026-11-01T10:00:00Z,,,,",
        ],
    );
    run(&w, &["run"], 0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    for pair in reqs.windows(2) {
        let gap = pair[1].at - pair[0].at;
        // 4/s: a request starts 250 ms after the one before; unpaced they come a few ms
        // apart. The margin absorbs a slow first connection on a loaded machine.
        assert!(
            gap >= Duration::from_millis(150),
            "requests {gap:?} apart under rate_limit = \"4/s\""
        );
    }
}

#[test]
fn one_record_the_itsm_keeps_refusing_for_now_holds_back_only_its_own_activity() {
    // ServiceNow answers 503 for RITM1 only (say, a locked record); everything else goes in.
    let server = Server::start(|r, _| {
        if r.body.contains("\"RITM1\"") {
            Reply::json(503, json!({"error": {"message": "record locked"}}))
        } else {
            import_ok()
        }
    });
    let w = workdir(
        &sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC)
            .replace("max_attempts = 3", "max_attempts = 2"),
    );
    w.report(
        "r_2026-11-01.csv",
        &[
            "A1,Ordered,RITM1,2026-11-01T10:00:00Z,,,,",
            "A2,Ordered,RITM2,2026-11-01T10:00:00Z,,,,",
            "A3,Ordered,RITM3,2026-11-01T10:00:00Z,,,,",
        ],
    );
    w.report(
        "r_2026-11-02.csv",
        &["A1,Completed,RITM1,2026-11-02T10:00:00Z,,,,"],
    );
    run(&w, &["run", "--summary-json", "s.json"], 2);
    let ids = event_ids(&w);
    let sent = keys(&server.requests());
    // A1's first event tried twice, A2 and A3 delivered, A1's later event held back.
    assert_eq!(
        sent,
        vec![
            ids[0].clone(),
            ids[0].clone(),
            ids[1].clone(),
            ids[2].clone()
        ]
    );
    assert_eq!(w.summary("s.json")["sinks"][1]["pending"], 2);
}
