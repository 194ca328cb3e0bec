//! What a broken file or host can still do to a run, and what it cannot: a report that
//! kills the process every time it is read is given up after two tries, and the reports
//! after it go through.

use std::time::{Duration, Instant};

use crate::support::{Case, csv, row, t};

/// Tries of the report `name` that never finished, as the ledger records them.
fn unfinished_tries(c: &Case, name: &str) -> Option<i64> {
    if !c.path().join("state/ledger.sqlite").exists() {
        return None;
    }
    c.ledger()
        .query_row("SELECT tries FROM attempts WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .ok()
}

/// Starts `run` and kills it (SIGKILL, as the kernel's OOM killer does) once the ledger
/// records its attempt number `tries` at `name`, while it reads the report.
fn run_killed_while_reading(c: &Case, name: &str, tries: i64) {
    let mut child = c.start(&["run"]).child;
    let deadline = Instant::now() + Duration::from_secs(120);
    while unfinished_tries(c, name) != Some(tries) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its attempt at {name} was recorded"
        );
        assert!(
            Instant::now() < deadline,
            "no attempt recorded (hang guard)"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_report_that_kills_the_process_is_given_up_after_two_tries_and_later_reports_go_through() {
    let c = Case::new();
    // Big enough to take a while to read, so the kill lands in the middle of it.
    let big: Vec<_> = (0..300_000)
        .map(|i| {
            row(&format!("A{i:07}"), "Ordered")
                .itsm(&format!("RITM{i}"))
                .at("2026-11-01T10:00:00Z")
        })
        .collect();
    c.file("drop/a_2026-11-01.csv", csv(&big));
    c.report(
        "b_2026-11-02.csv",
        &[row("B1", "Ordered").at("2026-11-02T10:00:00Z")],
    );

    run_killed_while_reading(&c, "a_2026-11-01.csv", 1);
    run_killed_while_reading(&c, "a_2026-11-01.csv", 2);
    assert!(c.events().is_empty(), "nothing was committed");

    // The third run does not read it again: it is failed, and the next report goes through.
    c.exec(&["run", "--summary-json", "s.json"]).code(2);
    let s = c.summary("s.json");
    assert_eq!(s["reports"][0]["name"], "a_2026-11-01.csv");
    assert_eq!(s["reports"][0]["status"], "failed");
    assert_eq!(s["reports"][0]["rows"], 0, "it was not read");
    let error = s["reports"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("processing did not finish twice (killed or out of memory?)"),
        "{error}"
    );
    assert_eq!(s["reports"][1]["status"], "processed");
    assert_eq!(c.transitions(), [t("B1", "", "ordered")]);

    // Later runs leave it alone too, until the file changes.
    c.run().code(2).says("processing did not finish twice");
    assert_eq!(c.events().len(), 1);
    c.file(
        "drop/a_2026-11-01.csv",
        csv(&[row("A1", "Ordered").at("2026-11-01T10:00:00Z")]),
    );
    c.run().code(0);
    assert_eq!(
        c.transitions(),
        [t("B1", "", "ordered"), t("A1", "", "ordered")]
    );
    assert_eq!(unfinished_tries(&c, "a_2026-11-01.csv"), None);
}

/// The same under a real memory limit (`ulimit -v`): a report the operator let past the
/// record cap (`max_record = "1 GiB"`) holds a 300 MB line, more than the process may take;
/// each run reading it aborts on the failed allocation, and the third gives it up.
#[test]
fn a_report_that_aborts_under_a_memory_limit_is_given_up_by_the_third_run() {
    let c = Case::new();
    c.config(&Case::default_config("").replace("[report]\n", "[report]\nmax_record = \"1 GiB\"\n"));
    c.memory_limit(256 << 20);
    let mut huge = csv(&[]).into_bytes();
    huge.extend_from_slice(b"A1,Ordered,,,,");
    huge.resize(huge.len() + (300 << 20), b'x');
    huge.extend_from_slice(b",,\n");
    c.file("drop/a_2026-11-01.csv", huge);
    c.report(
        "b_2026-11-02.csv",
        &[row("B1", "Ordered").at("2026-11-02T10:00:00Z")],
    );
    for tries in 1..=2 {
        let ran = c.run();
        assert_ne!(ran.exit_code(), Some(0), "{}", ran.text());
        assert_ne!(
            ran.exit_code(),
            Some(2),
            "it failed cleanly:\n{}",
            ran.text()
        );
        assert_eq!(unfinished_tries(&c, "a_2026-11-01.csv"), Some(tries));
        assert!(c.events().is_empty(), "nothing was committed");
    }
    c.run()
        .code(2)
        .says("a_2026-11-01.csv [2026-11-01] failed")
        .says("processing did not finish twice (killed or out of memory?)")
        .says("b_2026-11-02.csv [2026-11-02] processed");
    assert_eq!(c.transitions(), [t("B1", "", "ordered")]);
}

#[test]
fn a_report_that_fails_cleanly_is_tried_again_at_every_run() {
    let c = Case::new();
    // A report the schema cannot read (no Activity ID column): it fails, and its attempt
    // ends; it is not given up, however often it fails.
    c.file("drop/a_2026-11-01.csv", "Status,Device\nOrdered,Pixel\n");
    for _ in 0..3 {
        c.run()
            .code(2)
            .never_says("processing did not finish twice");
    }
    assert_eq!(unfinished_tries(&c, "a_2026-11-01.csv"), None);
}

/// A report of `n` new Activities, big enough that reading it takes a while.
fn big_report(c: &Case, name: &str, n: usize) {
    let rows: Vec<_> = (0..n)
        .map(|i| {
            row(&format!("A{i:07}"), "Ordered")
                .itsm(&format!("RITM{i}"))
                .at("2026-11-01T10:00:00Z")
        })
        .collect();
    c.file(&format!("drop/{name}"), csv(&rows));
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits for the child to end (a guard against a hang, not a timing); its exit code.
fn exit_code(mut child: std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            Instant::now() < deadline,
            "the run did not stop (hang guard)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last run's exit code as the ledger records it (`None` while it is unfinished).
fn last_run_exit(c: &Case) -> Option<i64> {
    c.ledger()
        .query_row(
            "SELECT exit_code FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// A stop signal while a report is read: the report is rolled back (not failed), the run
/// is recorded with 128 + the signal and exits with it, and the next run reads it whole.
fn stop_while_reading(sig: i32, code: i32) {
    let c = Case::new();
    big_report(&c, "a_2026-11-01.csv", 300_000);
    c.report(
        "b_2026-11-02.csv",
        &[row("B1", "Ordered").at("2026-11-02T10:00:00Z")],
    );
    let child = c.start(&["run", "--summary-json", "s.json"]).child;
    let deadline = Instant::now() + Duration::from_secs(60);
    while unfinished_tries(&c, "a_2026-11-01.csv") != Some(1) {
        assert!(
            Instant::now() < deadline,
            "no attempt recorded (hang guard)"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(&child, sig);
    assert_eq!(exit_code(child), Some(code));

    let events: i64 = c
        .ledger()
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        events, 0,
        "the report was rolled back, the next one not read"
    );
    let failed: i64 = c
        .ledger()
        .query_row(
            "SELECT count(*) FROM reports WHERE status = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(failed, 0, "a stopped report is not a failed one");
    assert_eq!(
        unfinished_tries(&c, "a_2026-11-01.csv"),
        None,
        "its attempt ended"
    );
    assert_eq!(last_run_exit(&c), Some(i64::from(code)));
    let s = c.summary("s.json");
    assert_eq!(s["exit_code"], code);
    assert_eq!(s["reports"][0]["status"], "deferred");

    c.run().code(0);
    let events: i64 = c
        .ledger()
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(events, 300_001);
}

#[test]
fn sigterm_while_a_report_is_read_rolls_it_back_and_exits_143() {
    stop_while_reading(libc::SIGTERM, 143);
}

#[test]
fn sigint_while_a_report_is_read_rolls_it_back_and_exits_130() {
    stop_while_reading(libc::SIGINT, 130);
}

#[test]
fn a_second_signal_ends_the_run_at_once_even_with_a_request_in_flight() {
    use crate::server::{Reply, Server};
    // The endpoint takes the request and never answers (the sink waits up to a minute).
    let server = Server::start(|_, _| Reply::Hang(Duration::from_secs(120)));
    let c = Case::with_config(&format!(
        "[[sink]]\ntype = \"http\"\nname = \"hook\"\napi = \"webhook\"\nurl = \"{}\"\ntimeout = \"60s\"\n",
        server.url("/hook")
    ));
    c.report(
        "a_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    let child = c.start(&["run"]).child;
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.requests().is_empty() {
        assert!(Instant::now() < deadline, "no request sent (hang guard)");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The first asks the run to finish the request in flight (up to its timeout); the
    // second ends it now.
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGTERM);
    let started = Instant::now();
    assert_eq!(exit_code(child), Some(143));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the second signal did not end the run before the request's timeout"
    );
    // The run never finished: the next one closes it as interrupted; the event is pending.
    assert_eq!(last_run_exit(&c), None);
    let pending: i64 = c
        .ledger()
        .query_row(
            "SELECT count(*) FROM deliveries WHERE sink = 'hook'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pending, 0, "nothing is recorded delivered");
}

#[test]
fn each_delivery_mark_is_synced_to_disk_before_the_next_request() {
    use crate::server::Server;
    let server = Server::ok();
    let c = Case::with_config(&format!(
        "[[sink]]\ntype = \"http\"\nname = \"hook\"\napi = \"webhook\"\nurl = \"{}\"\n",
        server.url("/hook")
    ));
    let rows: Vec<_> = (0..20)
        .map(|i| row(&format!("A{i}"), "Ordered").at("2026-11-01T10:00:00Z"))
        .collect();
    c.report("a_2026-11-01.csv", &rows);
    // strace counts the process's syncs: each of the 20 marks is one (a power loss after
    // a request can then never take its mark back and send the event again).
    let out = std::process::Command::new("strace")
        .args(["-f", "-c", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(c.path().join("syncs.txt"))
        .arg(assert_cmd::cargo::cargo_bin!("tangoe-ingest"))
        .arg("--config")
        .arg(c.path().join("tangoe-ingest.toml"))
        .arg("run")
        .current_dir(c.path())
        .output()
        .expect("strace runs (the CI installs it)");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.requests().len(), 20);
    let syncs: u64 = c
        .read("syncs.txt")
        .lines()
        .filter(|l| l.trim_end().ends_with("fsync") || l.trim_end().ends_with("fdatasync"))
        .map(|l| l.split_whitespace().nth(3).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        syncs >= 20,
        "{syncs} syncs for 20 delivery marks:\n{}",
        c.read("syncs.txt")
    );
}
