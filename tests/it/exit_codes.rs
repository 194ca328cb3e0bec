//! Exit codes an alert can act on: 2 for data (a report to look at), 3 for delivery (the
//! ITSM side), 4 for a silent source; the lowest wins, and `problems` lists them all.

use crate::server::{Reply, Server};
use crate::support::{Case, row};

/// A case whose webhook sink answers every request with `status`.
fn with_webhook(server: &Server) -> Case {
    let c = Case::with_config(&format!(
        "[[sink]]\ntype = \"http\"\nname = \"hook\"\napi = \"webhook\"\nurl = \"{}\"\nmax_attempts = 1\n",
        server.url("/hook")
    ));
    c.env("TANGOE_INGEST_HTTP_BACKOFF", "1ms");
    c
}

fn kinds(s: &serde_json::Value) -> Vec<(String, i64)> {
    s["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["exit_code"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn rejected_rows_exit_2_and_say_so() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered").at("2026-11-01T10:00:00Z"),
            row("A2", "Lost in the post").at("2026-11-01T10:00:00Z"),
        ],
    );
    let ran = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .prints("exit 2: 1 row rejected");
    let s = ran.summary();
    assert_eq!(kinds(&s), [("data".to_string(), 2)]);
}

#[test]
fn events_the_itsm_did_not_take_exit_3() {
    let server = Server::start(|_, _| Reply::json(503, serde_json::json!({})));
    let c = with_webhook(&server);
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(3)
        .summary();
    assert!(
        kinds(&s)
            .iter()
            .all(|(k, code)| k == "delivery" && *code == 3),
        "{s}"
    );
    assert!(
        s["problems"]
            .to_string()
            .contains("1 event not delivered yet"),
        "{s}"
    );
    // Once the ITSM takes them, the run is clean.
    server.set(|_, _| Reply::json(201, serde_json::json!({})));
    c.exec(&["deliver"]).code(0);
}

#[test]
fn data_and_delivery_problems_together_exit_2_and_list_both() {
    let server = Server::start(|_, _| Reply::json(503, serde_json::json!({})));
    let c = with_webhook(&server);
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered").at("2026-11-01T10:00:00Z"),
            row("A2", "Lost in the post").at("2026-11-01T10:00:00Z"),
        ],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .summary();
    let kinds = kinds(&s);
    assert_eq!(
        kinds.first(),
        Some(&("data".to_string(), 2)),
        "lowest first: {s}"
    );
    assert!(kinds.iter().any(|(k, _)| k == "delivery"), "{s}");
}

/// Every report the ledger holds arrived two days ago, as far as it records.
fn arrived_two_days_ago(c: &Case) {
    c.ledger()
        .execute(
            "UPDATE reports SET processed_at = \
             replace(datetime('now', '-2 days'), ' ', 'T') || 'Z'",
            [],
        )
        .unwrap();
}

#[test]
fn a_source_silent_past_expect_new_within_exits_4_and_is_off_by_default() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    arrived_two_days_ago(&c);
    // Off by default: an empty drop folder is not a problem.
    c.run().code(0);

    let text = std::fs::read_to_string(c.path().join("tangoe-ingest.toml")).unwrap();
    let silent = text.replace(
        "dir = \"drop\"",
        "dir = \"drop\"\nexpect_new_within = \"36h\"",
    );
    c.config(&silent);
    let ran = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(4)
        .prints("the source is silent: no new report for");
    assert_eq!(kinds(&ran.summary()), [("source".to_string(), 4)]);

    // A new report ends it.
    c.report(
        "r_2026-11-03.csv",
        &[row("A1", "Completed").at("2026-11-03T10:00:00Z")],
    );
    c.run().code(0);

    // A ledger that never saw a report counts from its first run.
    let fresh = Case::new();
    fresh.config(&silent);
    fresh.run().code(0);
}

#[test]
fn a_bad_expect_new_within_is_a_configuration_error() {
    let c = Case::new();
    let text = std::fs::read_to_string(c.path().join("tangoe-ingest.toml")).unwrap();
    c.config(&text.replace(
        "dir = \"drop\"",
        "dir = \"drop\"\nexpect_new_within = \"soon\"",
    ));
    c.run().code(1).says("expect_new_within");
}

/// A file that fails again every night is not a new report each night: the source still
/// counts as silent, and the run lists both problems (exit 2, the lowest).
#[test]
fn a_report_failing_every_night_does_not_hide_a_silent_source() {
    let c = Case::with_config("");
    c.file("drop/bad_2026-11-01.csv", "Status,Device\nOrdered,Pixel\n");
    c.run().code(2);
    arrived_two_days_ago(&c);
    let text = std::fs::read_to_string(c.path().join("tangoe-ingest.toml")).unwrap();
    c.config(&text.replace(
        "dir = \"drop\"",
        "dir = \"drop\"\nexpect_new_within = \"36h\"",
    ));
    let ran = c.exec(&["run", "--summary-json", "s.json"]).code(2);
    assert_eq!(
        kinds(&ran.summary()),
        [("data".to_string(), 2), ("source".to_string(), 4)]
    );
}
