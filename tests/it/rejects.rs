//! `rejects`: every rejected row, past the 20 a run's output shows, as text or CSV; the raw
//! row (personal data) only with `--raw`; a backfill stores no reject twice.

use crate::support::{Case, Row, row};

/// `n` rows with an unknown state (rejected), each with a phone number to find in raw text.
fn bad_rows(n: usize) -> Vec<Row> {
    (1..=n)
        .map(|i| {
            row(&format!("B{i}"), "Lost in the post")
                .at("2026-11-01T10:00:00Z")
                .phone(&format!("555000{i:04}"))
        })
        .collect()
}

#[test]
fn a_run_that_truncates_its_rejects_says_which_command_lists_them_all() {
    let c = Case::new();
    let mut rows = bad_rows(25);
    rows.push(row("A1", "Ordered").at("2026-11-01T10:00:00Z"));
    c.report("r_2026-11-01.csv", &rows);
    c.run()
        .code(2)
        .prints("… 5 more rejected rows: tangoe-ingest rejects --run 1 --report r_2026-11-01.csv");
    let all = c.exec(&["rejects", "--run", "1"]).code(0).stdout();
    assert_eq!(all.lines().count(), 25, "{all}");
    assert!(
        all.contains("r_2026-11-01.csv row 26 column \"Status\": unknown state"),
        "{all}"
    );
    assert!(
        !all.contains("5550000001"),
        "no raw text without --raw: {all}"
    );
    let raw = c
        .exec(&["rejects", "--report", "r_2026-11-01.csv", "--raw"])
        .code(0)
        .stdout();
    assert!(
        raw.contains("  raw: ") && raw.contains("5550000025"),
        "{raw}"
    );
    c.exec(&["rejects", "--report", "other.csv"])
        .code(0)
        .prints("(no rejected rows)");
    c.exec(&["rejects", "--run", "99"])
        .code(1)
        .says("no run 99");
    c.exec(&["status"])
        .code(0)
        .prints("… 5 more: tangoe-ingest rejects (--run ID, --report NAME, --csv)");
}

#[test]
fn rejects_export_as_csv_with_the_raw_text_only_when_asked() {
    let c = Case::new();
    c.report("r_2026-11-01.csv", &bad_rows(3));
    c.run().code(2);
    let out = c.exec(&["rejects", "--csv"]).code(0).stdout();
    let mut r = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(
        r.headers().unwrap(),
        vec!["report", "row", "column", "reason"]
    );
    let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 3);
    assert_eq!(&recs[0][0], "r_2026-11-01.csv");
    assert_eq!(&recs[0][1], "2");
    assert!(!out.contains("5550000001"), "{out}");

    let out = c.exec(&["rejects", "--csv", "--raw"]).code(0).stdout();
    let mut r = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(
        r.headers().unwrap(),
        vec!["report", "row", "column", "reason", "raw"]
    );
    let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert!(recs[2][4].contains("5550000003"), "{out}");
}

#[test]
fn a_backfill_stores_no_reject_twice_and_still_lists_its_own() {
    let c = Case::new();
    c.report("r_2026-11-01.csv", &bad_rows(4));
    c.run().code(2);
    c.exec(&["backfill", "--from", "2026-11-01", "--to", "2026-11-01"])
        .code(2);
    let stored: i64 = c.ledger_value("SELECT COUNT(*) FROM rejects", []);
    assert_eq!(stored, 4, "each reject stored once");
    let listed = c.exec(&["rejects", "--run", "2"]).code(0).stdout();
    assert_eq!(
        listed.lines().count(),
        4,
        "the backfill's rejects: {listed}"
    );
    let all = c.exec(&["rejects"]).code(0).stdout();
    assert_eq!(all.lines().count(), 4, "{all}");
}
