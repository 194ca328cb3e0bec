//! `status` says why runs did not exit 0, and reads the ledger with nothing of the
//! configuration but `[ledger]` in working order.

use crate::support::{Case, row};

#[test]
fn status_says_why_a_run_failed_as_a_whole() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    std::fs::remove_dir_all(c.path().join("drop")).unwrap();
    c.run().code(1).says("cannot list the drop folder");
    let status = c.exec(&["status"]).code(0).stdout();
    assert!(
        status.contains("exit 1\n        why: cannot list the drop folder"),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&c.exec(&["status", "--json"]).code(0).stdout()).unwrap();
    assert!(
        json["runs"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot list the drop folder"),
        "{json}"
    );
    assert!(
        json["runs"][1].get("reason").is_none(),
        "a clean run has no reason: {json}"
    );
}

#[test]
fn status_says_why_a_run_exited_2() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Lost in the post").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(2).prints("exit 2: 1 row rejected");
    c.exec(&["status"]).code(0).prints("why: 1 row rejected");
}

#[test]
fn status_reads_the_ledger_when_the_rest_of_the_config_is_broken() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    // A mapping that is not there and a source of an unknown type: a run cannot start...
    c.config(
        &Case::default_config("mapping = \"no-such-mapping.toml\"\n")
            .replace("type = \"local\"", "type = \"carrier-pigeon\""),
    );
    c.run().code(1);
    // ...but status still shows what the ledger holds, with the sink by its name.
    c.exec(&["status"])
        .code(0)
        .prints("Reports: 1 processed")
        .prints("  file ");
    c.exec(&["reports"])
        .code(0)
        .prints("r_2026-11-01.csv [2026-11-01] processed");
}

/// A report that failed in two versions (the file changed, still failing) and was then
/// acknowledged is no longer counted as failed, in either version.
#[test]
fn an_acknowledged_report_is_not_counted_failed_for_its_earlier_versions() {
    let c = Case::new();
    c.file("drop/bad_2026-11-01.csv", "Status,Device\nOrdered,Pixel\n");
    c.run().code(2);
    c.file(
        "drop/bad_2026-11-01.csv",
        "Status,Device\nOrdered,Pixel\nCompleted,Pixel\n",
    );
    c.run().code(2);
    c.exec(&["reports", "ignore", "bad_2026-11-01.csv"]).code(0);
    c.run().code(0);
    c.exec(&["status"])
        .code(0)
        .prints("Reports: 0 processed, 0 failed, 1 ignored")
        .never_says("  failed bad_2026-11-01.csv");
}
