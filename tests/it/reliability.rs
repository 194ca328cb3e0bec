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
    let mut child = c.process().arg("run").spawn().unwrap();
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
