//! The HTTP sink against a real server on 127.0.0.1: ServiceNow Import Set and Table API,
//! webhooks, retries, the durable outbox, ticket mirroring, and secrets kept out of sight.

use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

use crate::server::{Recorded, Reply, Server, import_ok};
use crate::support::{Case, Row, row};

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

/// A case with the sink table `sink_toml` added to the default config, ServiceNow's mapping
/// as `mapping.toml`, and runs that get the sink's password and short retry waits.
fn case(sink_toml: &str) -> Case {
    let c = Case::with_config(sink_toml);
    c.env("SN_PASSWORD", PASSWORD)
        .env("TANGOE_INGEST_HTTP_BACKOFF", "10ms")
        .file(
            "mapping.toml",
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/schemas/servicenow-ritm.toml"
            ))
            .unwrap(),
        );
    c
}

/// A case whose HTTP sink is the server's Import Set API, with basic auth.
fn import_set(server: &Server) -> Case {
    case(&sink(server, "servicenow_import_set", IMPORT_PATH, BASIC))
}

/// A server that answers `status` with `message` to the requests whose JSON body has
/// `value` at `key`, and takes the others.
fn refusing(key: &'static str, value: &'static str, status: u16, message: &'static str) -> Server {
    Server::start(move |r, _| {
        if r.json()[key] == value {
            Reply::json(status, json!({"error": {"message": message}}))
        } else {
            import_ok()
        }
    })
}

/// The row of Activity `A{n}` in `state` on `day` at 10:00, with its ITSM number `RITM{n}`.
fn ticket(n: u32, state: &str, day: &str) -> Row {
    row(&format!("A{n}"), state)
        .itsm(&format!("RITM{n}"))
        .at(&format!("{day}T10:00:00Z"))
}

/// (event_id, status) of each event the ledger has an outcome for, for the sink, in order.
fn outcomes(c: &Case) -> Vec<(String, String)> {
    let db = c.ledger();
    let mut stmt = db
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
fn event_ids(c: &Case) -> Vec<String> {
    c.events()
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
    let c = import_set(&server);
    c.report(
        "r_2026-11-01.csv",
        &[
            ticket(1, "Ordered", "2026-11-01"),
            ticket(2, "Completed", "2026-11-01"),
        ],
    );
    c.run().code(0);
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
        event_ids(&c),
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
        outcomes(&c)
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>(),
        ["delivered", "delivered"]
    );

    // Nothing delivered is sent again: not by a run, not by `deliver`.
    c.run().code(0);
    c.exec(&["deliver"]).code(0);
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
    let c = import_set(&server);
    c.report(
        "r_2026-11-01.csv",
        &[
            ticket(1, "Ordered", "2026-11-01"),
            ticket(2, "Ordered", "2026-11-01"),
        ],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(3)
        .prints("Unable to resolve target record, coalesce values not present: number")
        .summary();
    assert_eq!(server.requests().len(), 2, "the row error is not retried");
    assert_eq!(s["sinks"][1]["name"], "servicenow");
    assert_eq!(s["sinks"][1]["delivered"], 1);
    assert_eq!(s["sinks"][1]["failed"], 1);
    assert_eq!(s["sinks"][1]["pending"], 0);
    let ids = event_ids(&c);
    assert_eq!(
        outcomes(&c),
        vec![
            (ids[0].clone(), "failed".into()),
            (ids[1].clone(), "delivered".into())
        ]
    );

    c.exec(&["status"])
        .code(0)
        .prints(&format!("failed  #1 {}", ids[0]))
        .prints("Unable to resolve target record")
        .prints("retry --failed --sink servicenow");

    // A failed event stays failed: neither `deliver` nor `run` sends it again...
    c.exec(&["deliver"]).code(0);
    c.run().code(0);
    assert_eq!(server.requests().len(), 2);
    // ...until a person re-queues it.
    server.set(|_, _| import_ok());
    c.exec(&["retry", "--failed", "--sink", "servicenow"])
        .code(0)
        .prints("sink servicenow: 1 failed events are pending again");
    c.exec(&["deliver"]).code(0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].key(), ids[0]);
    assert_eq!(
        outcomes(&c),
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
    let c = import_set(&server);
    c.report("r_2026-11-01.csv", &[ticket(1, "Ordered", "2026-11-01")]);
    c.run().code(0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].key(), reqs[1].key());
    // The retry backoff is 10 ms here: only Retry-After explains a gap of a second.
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, before Retry-After: 1"
    );
    assert_eq!(outcomes(&c).len(), 1);
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
    let c = import_set(&server);
    c.report("r_2026-11-01.csv", &[ticket(1, "Ordered", "2026-11-01")]);
    c.run().code(0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|r| r.key() == reqs[0].key()));
    assert_eq!(
        outcomes(&c),
        vec![(event_ids(&c)[0].clone(), "delivered".into())]
    );
    let attempts: i64 = c.ledger_value(
        "SELECT attempts FROM deliveries WHERE sink = 'servicenow'",
        [],
    );
    assert_eq!(attempts, 3);
}

#[test]
fn dropped_connection_and_hang_past_the_timeout_are_retried() {
    let server = Server::start(|_, i| match i {
        0 => Reply::Drop,
        1 => Reply::Hang(Duration::from_secs(4)),
        _ => import_ok(),
    });
    let c = case(
        &sink(
            &server,
            "servicenow_import_set",
            IMPORT_PATH,
            &format!("{BASIC}\n"),
        )
        .replace("timeout = \"5s\"", "timeout = \"1s\""),
    );
    c.report("r_2026-11-01.csv", &[ticket(1, "Ordered", "2026-11-01")]);
    c.run().code(0).logs("timed out");
    assert_eq!(server.requests().len(), 3);
    assert_eq!(outcomes(&c).len(), 1);
}

#[test]
fn endpoint_down_for_a_whole_run_leaves_events_pending_and_the_next_run_delivers_them_once_in_order()
 {
    let server = Server::start(|_, _| {
        Reply::json(503, json!({"error": {"message": "instance unavailable"}}))
    });
    let c = case(
        &sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC)
            .replace("max_attempts = 3", "max_attempts = 2"),
    );
    c.report(
        "r_2026-11-01.csv",
        &[
            ticket(1, "Ordered", "2026-11-01"),
            ticket(2, "Ordered", "2026-11-01"),
        ],
    );
    c.report("r_2026-11-02.csv", &[ticket(1, "Completed", "2026-11-02")]);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(3)
        .prints("HTTP 503: instance unavailable")
        .summary();
    let ids = event_ids(&c);
    assert_eq!(
        ids.len(),
        3,
        "the file sink has its own delivery state and got every event"
    );
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
    assert!(outcomes(&c).is_empty());
    // Pending events are what a dry run audits, not a failure of it: both dry runs exit 0
    // and send nothing.
    let sent = server.requests().len();
    c.exec(&["run", "--dry-run"]).code(0);
    c.exec(&["deliver", "--dry-run"]).code(0);
    assert_eq!(server.requests().len(), sent);
    c.exec(&["status"])
        .code(0)
        .prints(&format!("pending #1 {}", ids[0]));

    // The ITSM is back: the next run sends the pending events first, oldest first, once each.
    server.set(|_, _| import_ok());
    c.run().code(0);
    let sent: Vec<String> = keys(&server.requests()[4..]);
    assert_eq!(sent, ids);
    c.exec(&["deliver"]).code(0);
    c.run().code(0);
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
    let c = case(
        &sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC)
            .replace("timeout = \"5s\"", "timeout = \"60s\""),
    );
    let rows: Vec<Row> = (1..=6)
        .map(|i| ticket(i, "Ordered", "2026-11-01"))
        .collect();
    c.report("r_2026-11-01.csv", &rows);
    let mut run = c.start(&["run"]);
    // The fourth request is in flight: kill -9.
    let got = rx.recv_timeout(Duration::from_secs(60));
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    got.expect("the fourth request never came");
    let first_run = keys(&server.requests());
    let recorded: Vec<String> = outcomes(&c)
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
    c.run().code(0);
    let ids = event_ids(&c);
    assert_eq!(ids.len(), 6);
    let rerun = keys(&server.requests()[first_run.len()..]);
    assert_eq!(
        rerun,
        ids[3..].to_vec(),
        "the rerun sends exactly the events without a recorded 2xx"
    );
    assert_eq!(outcomes(&c).len(), 6);
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
    let c = case(&sink(&server, "servicenow_table", TABLE_PATH, BASIC));
    c.report(
        "r_2026-11-01.csv",
        &[
            ticket(1, "Ordered", "2026-11-01"),
            ticket(2, "Ordered", "2026-11-01"),
        ],
    );
    c.report("r_2026-11-02.csv", &[ticket(1, "Completed", "2026-11-02")]);
    c.run().code(0);
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
    let ids = event_ids(&c);
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
    assert_eq!(outcomes(&c).len(), 3);
}

#[test]
fn table_api_unknown_number_is_a_permanent_failure() {
    let server = table_server();
    let c = case(&sink(&server, "servicenow_table", TABLE_PATH, BASIC));
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered")
            .itsm("RITM404")
            .at("2026-11-01T10:00:00Z")],
    );
    c.run().code(3).prints("no RITM404 in sc_req_item");
    assert_eq!(
        server.requests().len(),
        1,
        "one lookup, not retried, no PATCH"
    );
    let error: String = c.ledger_value("SELECT error FROM deliveries WHERE status = 'failed'", []);
    assert_eq!(error, "no RITM404 in sc_req_item");
    c.run().code(0);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn table_api_numbers_that_could_change_the_query_or_find_another_ticket_update_nothing() {
    let server = table_server();
    let c = case(&sink(&server, "servicenow_table", TABLE_PATH, BASIC));
    // `^` joins conditions in a ServiceNow encoded query: this number would match any ticket.
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered")
                .itsm("RITM1^ORnumberISNOTEMPTY")
                .at("2026-11-01T10:00:00Z"),
            row("A2", "Ordered")
                .itsm("RITM77")
                .at("2026-11-01T10:00:00Z"),
            ticket(3, "Ordered", "2026-11-01"),
        ],
    );
    c.run().code(3);
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
    let errors: Vec<String> =
        c.ledger_column("SELECT error FROM deliveries WHERE status = 'failed' ORDER BY event_id");
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
    let c = import_set(&server);
    c.report(
        "r_2026-11-01.csv",
        &[
            ticket(1, "Ordered", "2026-11-01"),
            ticket(2, "Ordered", "2026-11-01"),
            ticket(3, "Ordered", "2026-11-01"),
        ],
    );
    c.exec(&["run", "--summary-json", "s.json"])
        .code(3)
        .prints("HTTP 401: User Not Authenticated: check the sink's credentials");
    assert_eq!(
        server.requests().len(),
        1,
        "one refused login, not one per event"
    );
    assert!(outcomes(&c).is_empty(), "nothing failed for good");
    assert_eq!(c.summary("s.json")["sinks"][1]["pending"], 3);
}

#[test]
fn a_403_for_one_record_fails_that_event_only() {
    // ServiceNow answers 403 for a record an ACL protects: the sink itself is fine.
    let server = refusing("number", "RITM1", 403, "Operation Failed: ACL Exception");
    let c = import_set(&server);
    c.report(
        "r_2026-11-01.csv",
        &[
            ticket(1, "Ordered", "2026-11-01"),
            ticket(2, "Ordered", "2026-11-01"),
        ],
    );
    c.run().code(3);
    let statuses: Vec<String> = outcomes(&c).into_iter().map(|(_, s)| s).collect();
    assert_eq!(statuses, ["failed", "delivered"]);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_2xx_whose_answer_is_cut_off_delivers_unless_the_answer_is_needed() {
    // A webhook's answer is not read: its 2xx delivers, and sending again would repeat it.
    let server = Server::start(|_, _| Reply::CutOff(200));
    let c = case(&sink(&server, "webhook", "/hook", BASIC));
    c.report("r_2026-11-01.csv", &[ticket(1, "Ordered", "2026-11-01")]);
    c.run().code(0);
    assert_eq!(server.requests().len(), 1, "not sent again");
    assert_eq!(outcomes(&c).len(), 1);

    // An Import Set's answer says whether the row was applied: a cut-off one is asked again.
    let server = Server::start(|_, n| {
        if n == 0 {
            Reply::CutOff(201)
        } else {
            import_ok()
        }
    });
    let c = import_set(&server);
    c.report("r_2026-11-01.csv", &[ticket(1, "Ordered", "2026-11-01")]);
    c.run().code(0);
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
    let c = case(&sink(
        &server,
        "servicenow_table",
        TABLE_PATH,
        &format!("{BASIC}\ncreate_missing = true"),
    ));
    c.file("mapping.toml", MIRROR_MAPPING);
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    c.report(
        "r_2026-11-02.csv",
        &[row("A1", "Completed").at("2026-11-02T10:00:00Z")],
    );
    c.run().code(0);
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
    let (number, sys_id): (String, String) = c
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
        c.events()[1]["itsm_number"],
        "RITM0010001",
        "later events carry the created number"
    );
}

#[test]
fn without_create_missing_events_lacking_a_number_are_skipped_and_counted_as_a_data_problem() {
    let server = table_server();
    let c = case(&sink(&server, "servicenow_table", TABLE_PATH, BASIC));
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered").at("2026-11-01T10:00:00Z"),
            ticket(2, "Ordered", "2026-11-01"),
        ],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .prints("skipped 1: no itsm_number to update and create_missing is off")
        .summary();
    assert_eq!(s["sinks"][1]["skipped"], 1);
    assert_eq!(
        s["sinks"][1]["incomplete"], 1,
        "someone should fill in the ticket"
    );
    assert_eq!(s["problems"][0]["kind"], "data");
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
    let server = refusing("state", "2", 400, "Invalid value for state");
    let c = import_set(&server);
    c.report("r_2026-11-01.csv", &[ticket(1, "Ordered", "2026-11-01")]);
    c.run().code(3).prints("HTTP 400: Invalid value for state");
    c.report("r_2026-11-02.csv", &[ticket(1, "Completed", "2026-11-02")]);
    c.run().code(0);
    let ids = event_ids(&c);
    assert_eq!(
        keys(&server.requests()),
        ids,
        "the later event went out although the earlier one failed"
    );
    assert_eq!(
        outcomes(&c),
        vec![
            (ids[0].clone(), "failed".into()),
            (ids[1].clone(), "delivered".into())
        ]
    );

    // Re-queued, the old "ordered" would turn the closed ticket back: it is skipped.
    server.set(|_, _| import_ok());
    c.exec(&["retry", "--failed"]).code(0);
    c.exec(&["deliver"]).code(0).prints("superseded");
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn webhook_body_equals_the_mapping_with_bearer_auth_and_put() {
    let server = Server::start(|_, _| Reply::json(200, json!({"ok": true})));
    let c = case(&sink(
        &server,
        "webhook",
        "/hooks/tangoe",
        "method = \"PUT\"\nbearer_token_file = \"secrets/token\"\nmapping = \"webhook.toml\"",
    ));
    c.file("secrets/token", "tok-123\n");
    c.file(
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
    c.report(
        "r_2026-11-01.csv",
        &[row("A7", "Completed")
            .itsm("SD-42")
            .at("2026-11-01T10:00:00Z")
            .phone("5551234567")
            .device("Pixel 9")
            .cost_center("CC-100")],
    );
    c.run().code(0);
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
    let c = import_set(&server);
    c.report(
        "r_2026-11-01.csv",
        &[
            ticket(1, "Ordered", "2026-11-01"),
            ticket(2, "Ordered", "2026-11-01"),
        ],
    );

    // Dry run first: no request, the first requests shown, the secret redacted.
    let dry = c
        .exec(&["run", "--dry-run", "--summary-json", "dry.json"])
        .code(0)
        .prints(&format!("POST {}", server.url(IMPORT_PATH)))
        .prints("Authorization: Basic <redacted>")
        .prints("\"number\": \"RITM1\"");
    assert!(server.requests().is_empty(), "a dry run sends nothing");
    let dry_summary = dry.summary();
    assert_eq!(dry_summary["sinks"][1]["previews"][0]["method"], "POST");
    assert_eq!(
        dry_summary["sinks"][1]["previews"][0]["body"]["number"],
        "RITM1"
    );

    let real = c
        .exec(&["-vv", "run", "--summary-json", "s.json"])
        .code(3)
        // Debug logs show the Authorization header redacted.
        .logs("Basic <redacted>")
        .prints("HTTP 401: User Not Authenticated");
    let status = c.exec(&["status", "--json"]).code(0);
    let deliver = c.exec(&["-vv", "deliver", "--dry-run"]).code(0);

    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("svc_tangoe:{PASSWORD}"));
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("dry-run stdout".into(), dry.stdout().into_bytes()),
        ("dry-run stderr".into(), dry.stderr().into_bytes()),
        ("run stdout".into(), real.stdout().into_bytes()),
        ("run stderr".into(), real.stderr().into_bytes()),
        ("status".into(), status.stdout().into_bytes()),
        ("deliver --dry-run".into(), deliver.text().into_bytes()),
        (
            "summary".into(),
            std::fs::read(c.path().join("s.json")).unwrap(),
        ),
        (
            "dry-run summary".into(),
            std::fs::read(c.path().join("dry.json")).unwrap(),
        ),
    ];
    for f in ["state/ledger.sqlite", "state/ledger.sqlite-wal"] {
        if let Ok(bytes) = std::fs::read(c.path().join(f)) {
            places.push((f.into(), bytes));
        }
    }
    for f in c.files("out") {
        places.push((
            f.clone(),
            std::fs::read(c.path().join("out").join(&f)).unwrap(),
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
    let c = case(&sink(
        &server,
        "servicenow_import_set",
        IMPORT_PATH,
        &BASIC.replace("SN_PASSWORD", "SN_NOT_SET"),
    ));
    c.report("r_2026-11-01.csv", &[ticket(1, "Ordered", "2026-11-01")]);
    c.run()
        .code(3)
        .prints("the environment variable SN_NOT_SET is not set");
    assert!(server.requests().is_empty());
    assert_eq!(
        c.events().len(),
        1,
        "the report is committed and the file sink delivered"
    );
}

#[test]
fn a_misspelt_http_sink_key_is_an_error_naming_it() {
    let server = Server::ok();
    let c = case(&sink(
        &server,
        "servicenow_import_set",
        IMPORT_PATH,
        &format!("{BASIC}\nmax_attempt = 3"),
    ));
    c.run().code(1).logs("max_attempt");
}

#[test]
fn rate_limit_spaces_the_requests() {
    let server = Server::ok();
    let c = case(&sink(
        &server,
        "servicenow_import_set",
        IMPORT_PATH,
        &format!("{BASIC}\nrate_limit = \"4/s\""),
    ));
    c.report(
        "r_2026-11-01.csv",
        &[
            ticket(1, "Ordered", "2026-11-01"),
            ticket(2, "Ordered", "2026-11-01"),
            ticket(3, "Ordered", "2026-11-01"),
        ],
    );
    c.run().code(0);
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
    let c = case(
        &sink(&server, "servicenow_import_set", IMPORT_PATH, BASIC)
            .replace("max_attempts = 3", "max_attempts = 2"),
    );
    c.report(
        "r_2026-11-01.csv",
        &[
            ticket(1, "Ordered", "2026-11-01"),
            ticket(2, "Ordered", "2026-11-01"),
            ticket(3, "Ordered", "2026-11-01"),
        ],
    );
    c.report("r_2026-11-02.csv", &[ticket(1, "Completed", "2026-11-02")]);
    c.exec(&["run", "--summary-json", "s.json"]).code(3);
    let ids = event_ids(&c);
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
    assert_eq!(c.summary("s.json")["sinks"][1]["pending"], 2);
}
