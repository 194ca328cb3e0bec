//! `[source] type = "tangoe_api"` against a fake Tangoe API on 127.0.0.1 (`tangoe.rs`):
//! paging, both ways to log in, 429s, failed and cut-off pages, the schema over JSON
//! records, incremental pulls from the ledger's watermark, a kill and a stop mid-pull, the
//! rate limit, and a ledger that moves from CSV reports to the API.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::server::{Recorded, Reply};
use crate::support::{Case, row, t};
use crate::tangoe::{Tangoe, many, rec};

fn ids(c: &Case) -> Vec<String> {
    c.transitions().into_iter().map(|(a, _, _)| a).collect()
}

#[test]
fn api_pull_takes_every_page_as_one_report() {
    let api = Tangoe::start();
    api.records(many(7));
    let c =
        api.case("per_page = 3\nfilters = { activity_type_id_eq = 3, order = \"updated_at asc\" }");
    c.run().code(0);
    assert!(api.pages().iter().all(|r| {
        r.query("activity_type_id_eq").as_deref() == Some("3")
            && r.query("order").as_deref() == Some("updated_at asc")
    }));
    let pages: Vec<(String, String)> = api
        .pages()
        .iter()
        .map(|r| (r.query("page").unwrap(), r.query("per_page").unwrap()))
        .collect();
    assert_eq!(
        pages,
        [("1", "3"), ("2", "3"), ("3", "3")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(
        api.pages()
            .iter()
            .all(|r| r.header("API-Token") == Some("tok-1"))
    );
    assert_eq!(ids(&c), ["A1", "A2", "A3", "A4", "A5", "A6", "A7"]);
    assert_eq!(c.events()[0]["itsm_number"], "RITMA1");
    let names: Vec<String> = c.ledger_column("SELECT name FROM reports WHERE status = 'processed'");
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("api-20"), "{names:?}");
    let sha: String = c.ledger_value("SELECT sha256 FROM reports", []);
    assert_eq!(sha.len(), 64);
    // A page exactly full is followed by an empty one.
    let api = Tangoe::start();
    api.records(many(6));
    let c = api.case("per_page = 3");
    c.run().code(0);
    assert_eq!(api.pages().len(), 3);
    assert_eq!(c.events().len(), 6);
}

#[test]
fn api_token_refused_fails_the_run_and_names_the_credentials() {
    let api = Tangoe::start();
    api.records(many(2));
    let c = api.case("");
    c.env("TANGOE_TOKEN", "wrong");
    c.run()
        .code(1)
        .says("HTTP 401")
        .says("check the source's credentials")
        .never_says("wrong");
    assert!(c.events().is_empty());
}

#[test]
fn client_credentials_token_is_renewed_before_it_expires() {
    let api = Tangoe::start();
    api.records(many(12)).token_life(Duration::from_secs(2));
    let c = api.client_credentials_case("5/s", "per_page = 1");
    c.run().code(0).never_says("s3cret").never_says("jwt-");
    assert_eq!(c.events().len(), 12);
    // 13 pages at 5 a second outlive a 2-second token: it was renewed, and no request
    // ever carried an expired one.
    let tokens = api
        .server
        .requests()
        .iter()
        .filter(|r| r.path() == "/v2/token")
        .count();
    assert!(tokens >= 2, "{tokens} token(s) for a pull of ~2.6s");
    assert_eq!(api.refused(), 0);
    let used: std::collections::HashSet<String> = api
        .pages()
        .iter()
        .map(|r| r.header("Authorization").unwrap().to_string())
        .collect();
    assert!(used.len() >= 2, "{used:?}");
}

/// A retry after a long `Retry-After` carries a token fresh at that moment, never the one
/// that expired while it waited.
#[test]
fn a_retry_after_a_long_wait_carries_a_fresh_token() {
    let api = Tangoe::start();
    api.records(many(4)).token_life(Duration::from_secs(2));
    api.fault(|page, before| {
        (page == 2 && before == 0)
            .then(|| Reply::Send(429, vec![("Retry-After", "3".into())], "{}".into()))
    });
    let c = api.client_credentials_case("100/s", "per_page = 2");
    c.run().code(0);
    assert_eq!(c.events().len(), 4);
    assert_eq!(api.refused(), 0, "a request carried an expired token");
}

#[test]
fn a_429_waits_as_retry_after_says() {
    let api = Tangoe::start();
    api.records(many(4));
    api.fault(|page, before| {
        (page == 2 && before == 0)
            .then(|| Reply::Send(429, vec![("Retry-After", "1".into())], "{}".into()))
    });
    let c = api.case("per_page = 2");
    c.run().code(0);
    let pages = api.pages();
    let twice: Vec<&Recorded> = pages
        .iter()
        .filter(|r| r.query("page").as_deref() == Some("2"))
        .collect();
    assert_eq!(twice.len(), 2);
    let waited = twice[1].at - twice[0].at;
    // Retry-After: 1, less the server's own lag in noting the times (a backoff is 20 ms).
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert_eq!(c.events().len(), 4);
}

#[test]
fn a_429_without_retry_after_backs_off_and_retries() {
    let api = Tangoe::start();
    api.records(many(4));
    api.fault(|page, before| (page == 1 && before < 2).then(|| Reply::json(429, json!({}))));
    let c = api.case("per_page = 2");
    c.run().code(0).logs("HTTP 429");
    let firsts = api
        .pages()
        .iter()
        .filter(|r| r.query("page").as_deref() == Some("1"))
        .count();
    assert_eq!(firsts, 3);
    assert_eq!(c.events().len(), 4);
}

#[test]
fn a_500_on_page_3_fails_the_whole_pull_and_the_next_run_asks_again() {
    let api = Tangoe::start();
    api.records(vec![
        rec("A1", "ordered", "2026-12-01T10:00:00Z"),
        rec("A2", "ordered", "2026-12-03T10:00:00Z"),
    ]);
    let c = api.case("per_page = 2");
    c.run().code(0);
    assert_eq!(c.events().len(), 2);
    let reports: i64 = c.ledger_value("SELECT COUNT(*) FROM reports", []);

    // Five pages now; page 3 fails every time.
    api.records(
        [
            vec![
                rec("A1", "completed", "2026-12-04T10:00:00Z"),
                rec("A2", "ordered", "2026-12-03T10:00:00Z"),
            ],
            many(8)
                .into_iter()
                .map(|mut r| {
                    r["updated_at"] = json!("2026-12-04T11:00:00Z");
                    r["id"] = json!(format!("B{}", r["id"].as_str().unwrap()));
                    r
                })
                .collect(),
        ]
        .concat(),
    );
    api.fault(|page, _| (page == 3).then(|| Reply::json(500, json!({"error": "boom"}))));
    c.run().code(1).says("HTTP 500").says("nothing was taken");
    assert_eq!(c.events().len(), 2, "nothing of the failed pull went out");
    assert_eq!(
        c.ledger_value::<i64>("SELECT COUNT(*) FROM reports", []),
        reports
    );
    let asked_3 = api
        .pages()
        .iter()
        .filter(|r| r.query("page").as_deref() == Some("3"))
        .count();
    assert_eq!(asked_3, 5, "page 3 is tried max_attempts times");
    assert!(
        !api.pages()
            .iter()
            .any(|r| r.query("page").as_deref() == Some("4")),
        "no page after the failed one"
    );

    api.no_fault();
    c.run().code(0);
    // The failed pull moved nothing: the third pull starts where the second did.
    assert_eq!(api.pulls_from(), ["", "2026-12-02", "2026-12-02"]);
    let mut got = c.transitions();
    got.sort();
    assert_eq!(got.len(), 2 + 1 + 8);
    assert!(got.contains(&t("A1", "ordered", "completed")));
}

#[test]
fn a_page_cut_off_mid_body_is_asked_again() {
    let api = Tangoe::start();
    api.records(many(4));
    api.fault(|page, before| (page == 2 && before == 0).then_some(Reply::CutOff(200)));
    let c = api.case("per_page = 2");
    c.run().code(0).logs("cut off");
    assert_eq!(ids(&c), ["A1", "A2", "A3", "A4"]);
    assert_eq!(c.ledger_value::<i64>("SELECT accepted FROM reports", []), 4);
}

#[test]
fn a_page_that_is_not_whole_json_is_asked_again() {
    let api = Tangoe::start();
    api.records(many(2));
    api.fault(|page, before| {
        (page == 1 && before == 0).then(|| Reply::Send(200, Vec::new(), "[{\"id\": \"A1\"".into()))
    });
    let c = api.case("");
    c.run().code(0).logs("not whole JSON");
    assert_eq!(ids(&c), ["A1", "A2"]);
}

#[test]
fn an_unknown_state_rejects_its_record_not_the_pull() {
    let api = Tangoe::start();
    api.records(vec![
        rec("A1", "ordered", "2026-12-01T10:00:00Z"),
        rec("A2", "teleported", "2026-12-01T10:01:00Z"),
        rec("A3", "in_progress", "2026-12-01T10:02:00Z"),
        rec("A4", "on_back_order", "2026-12-01T10:03:00Z"),
    ]);
    let c = api.case("");
    c.run().code(2);
    assert_eq!(
        c.transitions(),
        [t("A1", "", "ordered"), t("A4", "", "on_back_order")]
    );
    let (row, reason): (i64, String) = c
        .ledger()
        .query_row("SELECT row, reason FROM rejects", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(row, 2);
    assert!(reason.contains("teleported"), "{reason}");
    assert_eq!(c.ledger_value::<i64>("SELECT skipped FROM reports", []), 1);
}

#[test]
fn a_dotted_alias_reaches_a_nested_value() {
    let api = Tangoe::start();
    let mut r = rec("A1", "completed", "2026-12-01T10:00:00Z");
    r["shipping_address"] = json!({"street": "1 Main St", "city": "Austin", "zip": "78701"});
    r["device"] = json!({"name": "iPhone 17", "id": 99});
    r["cost_center"] = json!("CC-7");
    api.records(vec![r]);
    let c = api.case("");
    c.run().code(0);
    let e = &c.events()[0];
    assert_eq!(e["shipping_city"], "Austin");
    assert_eq!(e["shipping_address"], "1 Main St");
    assert_eq!(e["shipping_zip"], "78701");
    assert_eq!(e["device"], "iPhone 17");
    assert_eq!(e["extra"]["cost_center"], "CC-7");
    assert_eq!(e["extra"]["device.id"], "99");
}

#[test]
fn records_out_of_updated_at_order_are_placed_by_their_time() {
    let api = Tangoe::start();
    // Newest first, across pages: A1 completed, then its older ordered row.
    api.records(vec![
        rec("A1", "completed", "2026-12-02T10:00:00Z"),
        rec("A2", "ordered", "2026-12-01T09:00:00Z"),
        rec("A1", "ordered", "2026-12-01T10:00:00Z"),
    ]);
    let c = api.case("per_page = 2");
    c.run().code(0);
    assert_eq!(
        c.transitions(),
        [t("A1", "", "completed"), t("A2", "", "ordered")]
    );
    assert_eq!(c.ledger_value::<i64>("SELECT stale FROM reports", []), 1);
}

#[test]
fn an_empty_result_is_no_report_and_moves_nothing() {
    let api = Tangoe::start();
    let c = api.case("");
    c.run().code(0);
    c.run().code(0);
    assert!(c.events().is_empty());
    assert_eq!(c.ledger_value::<i64>("SELECT COUNT(*) FROM reports", []), 0);
    assert_eq!(api.pulls_from(), ["", ""]);
}

#[test]
fn the_next_pull_asks_from_the_watermark_and_takes_only_changes() {
    let api = Tangoe::start();
    api.records(vec![
        rec("A1", "ordered", "2026-12-01T10:00:00Z"),
        rec("A2", "ordered", "2026-12-02T10:00:00Z"),
        rec("A3", "ordered", "2026-12-03T10:00:00Z"),
    ]);
    let c = api.case("");
    c.run().code(0);
    assert_eq!(ids(&c), ["A1", "A2", "A3"]);

    api.records(vec![
        rec("A1", "ordered", "2026-12-01T10:00:00Z"),
        rec("A2", "completed", "2026-12-05T08:00:00Z"),
        rec("A3", "ordered", "2026-12-03T10:00:00Z"),
        rec("A9", "ordered", "2026-12-05T09:00:00Z"),
    ]);
    c.run().code(0);
    // The newest update the ledger holds is of 3 December: from the 2nd (a day's overlap).
    assert_eq!(api.pulls_from(), ["", "2026-12-02"]);
    assert_eq!(
        c.transitions()[3..],
        [t("A2", "ordered", "completed"), t("A9", "", "ordered")]
    );
    // A3 came again, unchanged; then the watermark moved to 5 December.
    assert_eq!(
        c.ledger_column::<i64>("SELECT unchanged FROM reports ORDER BY id"),
        [0, 1]
    );
    c.run().code(0);
    assert_eq!(api.pulls_from(), ["", "2026-12-02", "2026-12-04"]);
    assert_eq!(c.events().len(), 5, "nothing new, nothing twice");
}

#[test]
fn a_pull_that_brings_the_same_records_again_is_a_duplicate() {
    let api = Tangoe::start();
    api.records(vec![rec("A1", "ordered", "2026-12-01T10:00:00Z")]);
    let c = api.case("");
    c.run().code(0);
    c.run().code(0);
    assert_eq!(
        c.ledger_column::<String>("SELECT status FROM reports ORDER BY id"),
        ["processed", "duplicate"]
    );
    assert_eq!(c.events().len(), 1);
    // The duplicate moved nothing: the next pull asks from the same day.
    c.run().code(0);
    assert_eq!(api.pulls_from(), ["", "2026-11-30", "2026-11-30"]);
}

#[test]
fn killed_mid_pull_the_next_run_loses_nothing_and_sends_nothing_twice() {
    let api = Tangoe::start();
    api.records(vec![
        rec("A1", "ordered", "2026-12-01T10:00:00Z"),
        rec("A2", "ordered", "2026-12-01T11:00:00Z"),
    ]);
    let c = api.case("per_page = 2");
    c.run().code(0);

    let mut changed = many(5);
    changed.push(rec("A1", "completed", "2026-12-03T10:00:00Z"));
    api.records(changed);
    api.fault(|page, _| (page == 2).then_some(Reply::Hang(Duration::from_secs(20))));
    let mut started = c.start(&["run"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // The first run asked for page 2 once; the second stalls on it.
    while api
        .pages()
        .iter()
        .filter(|r| r.query("page").as_deref() == Some("2"))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "page 2 was never asked for");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.child.kill().unwrap(); // SIGKILL
    started.wait();
    assert_eq!(c.events().len(), 2, "nothing of the killed pull went out");

    api.no_fault();
    c.run().code(0);
    let targets: Vec<String> = api
        .server
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(
        api.pulls_from(),
        ["", "2026-11-30", "2026-11-30"],
        "{targets:?}"
    );
    let mut got = c.transitions();
    got.sort();
    let mut want = vec![
        t("A1", "", "ordered"),
        t("A2", "", "ordered"),
        t("A1", "ordered", "completed"),
        t("A3", "", "ordered"),
        t("A4", "", "ordered"),
        t("A5", "", "ordered"),
    ];
    want.sort();
    assert_eq!(got, want);
    c.run().code(0);
    assert_eq!(c.events().len(), want.len());
}

#[test]
fn sigterm_mid_pull_stops_without_taking_anything() {
    let api = Tangoe::start();
    api.records(many(4));
    api.fault(|page, _| (page == 2).then_some(Reply::Hang(Duration::from_secs(2))));
    let c = api.case("per_page = 2");
    let started = c.start(&["run"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api
        .pages()
        .iter()
        .any(|r| r.query("page").as_deref() == Some("2"))
    {
        assert!(Instant::now() < deadline, "page 2 was never asked for");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        unsafe { libc::kill(started.child.id() as i32, libc::SIGTERM) },
        0
    );
    started.wait().code(143).logs("the pull is abandoned");
    let asked_2 = api
        .pages()
        .iter()
        .filter(|r| r.query("page").as_deref() == Some("2"))
        .count();
    assert_eq!(asked_2, 1, "no request after the stop");
    assert!(c.events().is_empty());
    assert_eq!(c.ledger_value::<i64>("SELECT COUNT(*) FROM reports", []), 0);
    api.no_fault();
    c.run().code(0);
    assert_eq!(c.events().len(), 4);
}

#[test]
fn the_rate_limit_is_never_exceeded() {
    let api = Tangoe::start();
    // Token requests and the retries of two 429s (no Retry-After, a 1 ms backoff) count
    // against the limit too.
    api.records(many(12)).token_life(Duration::from_secs(1));
    api.fault(|page, before| (page == 4 && before < 2).then(|| Reply::json(429, json!({}))));
    let c = api.client_credentials_case("5/s", "per_page = 1");
    c.env("TANGOE_INGEST_HTTP_BACKOFF", "1ms");
    c.run().code(0);
    assert_eq!(c.events().len(), 12);
    let mut at: Vec<Instant> = api.server.requests().iter().map(|r| r.at).collect();
    at.sort();
    let tokens = api
        .server
        .requests()
        .iter()
        .filter(|r| r.path() == "/v2/token")
        .count();
    assert!(tokens >= 2, "{tokens} token request(s)");
    // 13 pages, 2 retries, and the token requests.
    assert_eq!(at.len(), 15 + tokens);
    // No second holds more than 5 requests: the 6th after any request comes a second
    // after it, or later. The server notes a request's time once it has read it, on a
    // thread of its own: on a busy machine that lags by up to ~40 ms (seen), so a window
    // is allowed 100 ms of it. A burst (a token bucket that starts full) or no limit at
    // all puts 6 requests within a few milliseconds.
    let spans: Vec<Duration> = at.windows(6).map(|w| w[5] - w[0]).collect();
    assert!(
        spans.iter().all(|s| *s >= Duration::from_millis(900)),
        "6 requests within less than a second: {spans:?}"
    );
    // Over the whole pull: N requests take N - 1 intervals of 200 ms (less the lag at both
    // ends); a pace even 10 % too fast fails here.
    let n = at.len() as u32;
    let whole = at[at.len() - 1] - at[0];
    assert!(
        whole >= Duration::from_millis(200) * (n - 1) - Duration::from_millis(100),
        "{whole:?} for {n} requests"
    );
}

#[test]
fn a_ledger_that_took_reports_takes_the_api_without_sending_what_it_knew() {
    let api = Tangoe::start();
    let c = api.case("");
    c.config(&Case::default_config(""));
    c.report(
        "r_2026-12-01.csv",
        &[
            row("1001", "Ordered").at("2026-12-01T10:00:00Z"),
            row("1002", "Completed").at("2026-12-01T10:05:00Z"),
        ],
    );
    c.run().code(0);
    assert_eq!(c.events().len(), 2);

    c.config(&api.config(""));
    api.records(vec![
        rec("1001", "ordered", "2026-12-01T10:00:00Z"),
        rec("1002", "completed", "2026-12-01T10:05:00Z"),
        rec("1003", "ordered", "2026-12-02T08:00:00Z"),
    ]);
    c.run().code(0);
    assert_eq!(
        c.transitions(),
        [
            t("1001", "", "ordered"),
            t("1002", "", "completed"),
            t("1003", "", "ordered")
        ]
    );
    api.records(vec![rec("1001", "completed", "2026-12-03T08:00:00Z")]);
    c.run().code(0);
    assert_eq!(c.transitions()[3], t("1001", "ordered", "completed"));
}

#[test]
fn backfill_asks_for_its_window_and_dry_run_writes_nothing() {
    let api = Tangoe::start();
    api.records(vec![
        rec("A1", "ordered", "2026-11-10T10:00:00Z"),
        rec("A2", "ordered", "2026-12-01T10:00:00Z"),
    ]);
    let c = api.case("");
    c.exec(&[
        "backfill",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--dry-run",
    ])
    .code(0);
    assert!(c.files("out").is_empty());
    assert!(
        !c.path().join("state/ledger.sqlite").exists() || {
            c.ledger_value::<i64>("SELECT COUNT(*) FROM reports", []) == 0
        }
    );
    c.exec(&["backfill", "--from", "2026-11-01", "--to", "2026-11-30"])
        .code(0);
    assert_eq!(ids(&c), ["A1"]);
    let windows: Vec<(String, String)> = api
        .pages()
        .iter()
        .map(|r| {
            (
                r.query("updated_at_gte").unwrap_or_default(),
                r.query("updated_at_lte").unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        windows
            .iter()
            .all(|w| *w == ("2026-11-01".into(), "2026-11-30".into()))
    );
    // The same window again: content already processed, nothing sent again.
    c.exec(&["backfill", "--from", "2026-11-01", "--to", "2026-11-30"])
        .code(0);
    assert_eq!(ids(&c), ["A1"]);
    // A dry nightly run pulls and writes nothing either.
    let before = api.pages().len();
    c.exec(&["run", "--dry-run"]).code(0);
    assert!(api.pages().len() > before);
    assert_eq!(ids(&c), ["A1"]);
    assert_eq!(c.ledger_value::<i64>("SELECT COUNT(*) FROM reports", []), 2);
    // A backfill does not move the nightly watermark: the first nightly pull asks for
    // everything, and so takes A2, which lies after the backfill's window.
    let pulls = api.pulls_from().len();
    c.run().code(0);
    assert_eq!(api.pulls_from()[pulls..], [""]);
    assert_eq!(ids(&c), ["A1", "A2"]);
}

/// `check` tests the API's credentials with one request that takes nothing (`per_page=1`),
/// and fails with the reason when the token is refused; neither writes a ledger.
#[test]
fn check_asks_the_api_for_one_record_and_fails_a_refused_token() {
    let api = Tangoe::start();
    api.records(many(5));
    let c = api.case("");
    c.exec(&["check"])
        .code(0)
        .prints("✓ source http://127.0.0.1")
        .prints("per_page=1 answered with 1 Activity");
    let pages = api.pages();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].query("per_page").as_deref(), Some("1"));
    c.env("TANGOE_TOKEN", "wrong");
    c.exec(&["check"])
        .code(1)
        .prints("✗ source http://127.0.0.1")
        .prints("HTTP 401")
        .never_says("wrong");
    assert!(!c.path().join("state/ledger.sqlite").exists());

    // An API that does not answer: one ✗ line, after one try.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(c.path().join("tangoe-ingest.toml")).unwrap();
    let url = api.server.url("");
    c.config(&text.replace(
        url.trim_end_matches('/'),
        &format!("http://127.0.0.1:{port}"),
    ));
    c.env("TANGOE_TOKEN", "tok-1");
    c.timeout(Duration::from_secs(60));
    c.exec(&["check"])
        .code(1)
        .prints(&format!("✗ source http://127.0.0.1:{port}"))
        .never_says("retrying");
}

/// A record dated in the future does not move the next pull past today.
#[test]
fn a_record_dated_in_the_future_does_not_move_the_watermark_past_the_pull() {
    let api = Tangoe::start();
    api.records(vec![
        rec("A1", "ordered", "2026-11-10T10:00:00Z"),
        rec("A2", "ordered", "2099-01-01T00:00:00Z"),
    ]);
    let c = api.case("");
    c.run().code(0);
    c.run().code(0);
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .date_naive()
        .to_string();
    let pulls = api.pulls_from();
    assert_eq!(pulls[0], "");
    assert!(pulls[1] <= yesterday, "{pulls:?}");
}

/// A pull shows the records pulled so far on a terminal.
#[test]
fn a_pull_shows_its_progress_on_a_terminal() {
    let api = Tangoe::start();
    api.records(many(59));
    let c = api.case("per_page = 2");
    let tty = crate::progress::in_terminal(&c, "run", &[("TANGOE_TOKEN", "tok-1")]);
    assert!(tty.contains("pulling from the Tangoe API: "), "{tty}");
    assert!(tty.contains(" records pulled ("), "{tty}");
    assert_eq!(c.events().len(), 59);
}
