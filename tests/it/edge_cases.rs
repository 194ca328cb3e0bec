//! Edge cases found in review, each kept as the guarantee it now gives: resend folding,
//! the ITSM number's fallback, far-future times, CR line ends, DST gaps, a BOM on a
//! Windows-1252 file, a ledger edited by hand, unreadable drop-folder entries, import
//! files of a ledger started afresh.

use crate::support::{Case, HEADER, row, t};

fn reject_rows(c: &Case) -> Vec<i64> {
    c.ledger_column("SELECT row FROM rejects ORDER BY id")
}

/// A later row folded into the report's event (rule 5) keeps the ITSM number the ledger
/// knows when the row has none.
#[test]
fn amended_event_keeps_the_known_itsm_number() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered")
            .itsm("RITM1")
            .at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    c.report(
        "r_2026-11-02.csv",
        &[
            row("A1", "Completed").at("2026-11-02T10:00:00Z"),
            row("A1", "Cancelled").at("2026-11-02T11:00:00Z"),
        ],
    );
    c.run().code(0);
    let ev = c.events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[1]["state"], "cancelled");
    assert_eq!(ev[1]["itsm_number"], "RITM1", "{:?}", ev[1]);
}

/// `backfill --resend` over 2026-11-03.
const RESEND_11_03: &[&str] = &[
    "backfill",
    "--from",
    "2026-11-03",
    "--to",
    "2026-11-03",
    "--resend",
];

/// A1 ordered on 11-01 and completed on 11-02 (both run), then a report of 11-03 that
/// repeats the completed row and moves A1 on to `later`, replayed with `--resend`.
fn resend_then(later: &str) -> Case {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.report(
        "r_2026-11-02.csv",
        &[row("A1", "Completed").at("2026-11-02T10:00:00Z")],
    );
    c.run().code(0);
    c.report(
        "r_2026-11-03.csv",
        &[
            row("A1", "Completed").at("2026-11-02T10:00:00Z"),
            row("A1", later).at("2026-11-03T10:00:00Z"),
        ],
    );
    c.exec(RESEND_11_03).code(0);
    c
}

/// backfill --resend: a later row of the same report that moves the Activity back to the
/// state before its last change replaces the report's resend with that real change
/// (completed → ordered), which the ledger records too.
#[test]
fn resend_then_change_back_in_one_report_emits_the_change() {
    let c = resend_then("Ordered");
    let state: i64 = c.ledger_value("SELECT state FROM activities WHERE activity_id = 'A1'", []);
    assert_eq!(state, 1, "the ledger moved A1 to ordered");
    assert!(
        c.transitions().contains(&t("A1", "completed", "ordered")),
        "the ledger moved A1 completed → ordered but no event says so: {:?}",
        c.transitions()
    );
}

/// Same, with another later state: the change goes out from the state the Activity was
/// in (completed → cancelled), not as a resend.
#[test]
fn resend_then_change_in_one_report_starts_from_the_state_it_was_in() {
    let c = resend_then("Cancelled");
    let ev = c.events();
    let last = ev.last().unwrap();
    assert_eq!(last["state"], "cancelled");
    assert_eq!(last["previous_state"], "completed", "{last:?}");
}

/// A lone CR inside a quoted cell counts as a line break: the reject names the line the
/// row starts on.
#[test]
fn lone_cr_in_a_cell_gives_the_right_row_number() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Shipped?")
            .at("2026-11-01T10:00:00Z")
            .address("1 Main St\rSpringfield")],
    );
    c.run().code(2);
    assert_eq!(reject_rows(&c), vec![2]);
}

/// CR-only line endings (classic Mac Excel): rejects name each row's own line.
#[test]
fn cr_only_line_endings_give_the_right_row_numbers() {
    let c = Case::new();
    let s = format!(
        "{HEADER}\rA1,Ordered,,2026-11-01T10:00:00Z,,,,\rA2,Shipped?,,2026-11-01T10:00:00Z,,,,\r"
    );
    c.file("drop/r_2026-11-01.csv", s);
    c.run().code(2);
    assert_eq!(reject_rows(&c), vec![3]);
}

/// Times far in the future (year 3100) are compared exactly: an older row never moves
/// the recorded time back, and a later older row stays stale.
#[test]
fn far_future_times_do_not_break_rule_4() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("3100-01-02T00:00:00Z")],
    );
    c.run().code(0);
    c.report(
        "r_2026-11-02.csv",
        &[row("A1", "Ordered").at("3100-01-01T00:00:00Z")],
    );
    c.run().code(0);
    let at: i64 = c.ledger_value(
        "SELECT updated_at FROM activities WHERE activity_id = 'A1'",
        [],
    );
    assert_eq!(at, at_expected(), "updated_at regressed");
    c.report(
        "r_2026-11-03.csv",
        &[row("A1", "Completed").at("3100-01-01T12:00:00Z")],
    );
    c.run().code(0);
    assert_eq!(c.transitions(), vec![t("A1", "", "ordered")]);
}

fn at_expected() -> i64 {
    chrono::NaiveDate::from_ymd_opt(3100, 1, 2)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
}

/// Control: CRLF, a BOM, a multi-line cell and a blank line keep row numbers right.
#[test]
fn crlf_bom_multiline_row_numbers() {
    let c = Case::new();
    let s = format!(
        "\u{feff}{HEADER}\r\nA1,Ordered,,2026-11-01T10:00:00Z,,,\"1 Main St\r\nSpringfield\",\r\n\r\nA2,Shipped?,,2026-11-01T10:00:00Z,,,,\r\n"
    );
    c.file("drop/r_2026-11-01.csv", s);
    c.run().code(2);
    assert_eq!(reject_rows(&c), vec![5]);
}

/// A resend built from an older report's payload, then replaced by a later row's change:
/// the event names its values by the new report's columns, under the new report.
#[test]
fn a_change_replacing_a_resend_names_its_values_by_its_own_reports_columns() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered")
            .at("2026-11-02T10:00:00Z")
            .cost_center("CC1")],
    );
    c.run().code(0);
    c.file(
        "drop/r_2026-11-03.csv",
        "Activity ID,Status,Last Updated,Region,Cost Center\n\
         A1,Ordered,2026-11-01T00:00:00Z,EU,CC9\n\
         A1,Cancelled,2026-11-03T10:00:00Z,EU,CC9\n",
    );
    c.exec(RESEND_11_03).code(0);
    let ev = c.events();
    let last = ev.last().unwrap();
    assert_eq!(last["state"], "cancelled");
    assert_eq!(last["report"], "r_2026-11-03.csv", "{last:?}");
    assert_eq!(last["extra"]["Cost Center"], "CC9", "{last:?}");
}

/// A local time in the DST gap is read as the same wall time an hour later, in the
/// report's zone.
#[test]
fn local_time_in_the_dst_gap_converts_in_the_report_zone() {
    let c = Case::new();
    c.config(
        &Case::default_config("").replace("timezone = \"UTC\"", "timezone = \"America/New_York\""),
    );
    c.report(
        "r_2026-03-08.csv",
        &[row("A1", "Ordered").at("2026-03-08 02:30:00")],
    );
    c.run().code(0);
    // 02:30 does not exist; 03:30 EDT is 07:30Z (the code's intent: one hour later, local).
    assert_eq!(c.events()[0]["updated_at"], "2026-03-08T07:30:00Z");
}

/// A UTF-8 BOM on a file that is otherwise Windows-1252: the BOM is dropped, the header
/// found and the row read.
#[test]
fn bom_on_a_windows_1252_file_still_finds_the_header() {
    let c = Case::new();
    let mut b = b"\xef\xbb\xbf".to_vec();
    b.extend_from_slice(HEADER.as_bytes());
    b.extend_from_slice(b"\nA1,Ordered,,2026-11-01T10:00:00Z,,M\xfcller,,\n");
    c.file("drop/r_2026-11-01.csv", b);
    c.run().code(0);
    assert_eq!(c.events().len(), 1);
}

/// `activities` is the one record of each Activity's state: a ledger edited by hand is
/// judged as it now stands, in both directions (a change it already records is unchanged;
/// a state it no longer records is a change from the one it does).
#[test]
fn a_hand_edited_ledger_is_decided_from_activities() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered").at("2026-11-01T10:00:00Z"),
            row("A2", "Ordered").at("2026-11-01T10:00:00Z"),
            row("A3", "Ordered")
                .itsm("RITM3")
                .at("2026-11-01T10:00:00Z"),
        ],
    );
    c.run().code(0);
    // Completed (3), and on back order (2), by hand.
    c.ledger()
        .execute_batch(
            "UPDATE activities SET state = 3 WHERE activity_id = 'A1';
             UPDATE activities SET state = 2 WHERE activity_id = 'A3';",
        )
        .unwrap();
    c.report(
        "r_2026-11-02.csv",
        &[
            row("A1", "Completed")
                .itsm("RITM1")
                .at("2026-11-02T10:00:00Z"),
            row("A2", "Completed")
                .itsm("RITM2")
                .at("2026-11-02T10:00:00Z"),
            row("A3", "Completed")
                .at("2026-11-02T10:00:00Z")
                .phone("555 0100")
                .device("Pixel 9")
                .address("1 Main St\nApt 2")
                .cost_center("CC-3"),
        ],
    );
    c.run().code(0).prints("unchanged 1");
    assert_eq!(
        c.transitions(),
        vec![
            t("A1", "", "ordered"),
            t("A2", "", "ordered"),
            t("A3", "", "ordered"),
            t("A2", "ordered", "completed"),
            t("A3", "on_back_order", "completed"),
        ]
    );
    let ev = c.events();
    assert_eq!(ev[3]["itsm_number"], "RITM2");
    // A3's change carries the row's values and the Activity's ITSM number.
    assert_eq!(ev[4]["itsm_number"], "RITM3");
    assert_eq!(ev[4]["device"], "Pixel 9");
    assert_eq!(ev[4]["shipping_address"], "1 Main St\nApt 2");
    assert_eq!(ev[4]["extra"]["Cost Center"], "CC-3");
    // The ledger now also moves A2 far into the future by hand: the next row is stale
    // against it, and a later one is a change from the state it records.
    c.ledger()
        .execute(
            "UPDATE activities SET state = 4, updated_at = 4102444800 WHERE activity_id = 'A2'",
            [],
        )
        .unwrap();
    c.report(
        "r_2026-11-03.csv",
        &[row("A2", "Ordered").at("2026-11-03T10:00:00Z")],
    );
    c.run().code(0);
    c.report(
        "r_2100-01-02.csv",
        &[row("A2", "Ordered").at("2100-01-02T10:00:00Z")],
    );
    c.run().code(0);
    assert_eq!(
        c.transitions().last().unwrap(),
        &t("A2", "cancelled", "ordered"),
        "the change after the hand edit was missed"
    );
}

#[test]
fn an_unreadable_entry_in_the_drop_folder_fails_alone_and_the_run_goes_on() {
    let c = Case::new();
    c.report(
        "b_2026-11-01.csv",
        &[row("B1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    std::os::unix::fs::symlink(
        c.path().join("nowhere/a.csv"),
        c.path().join("drop/a_2026-11-01.csv"),
    )
    .unwrap();
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .summary();
    let a = &s["reports"][0];
    assert_eq!(
        (a["name"].as_str(), a["status"].as_str()),
        (Some("a_2026-11-01.csv"), Some("failed")),
        "{s}"
    );
    assert!(
        a["error"].as_str().unwrap().contains("a_2026-11-01.csv"),
        "{s}"
    );
    assert_eq!(s["reports"][1]["status"], "processed");
    assert_eq!(c.transitions(), vec![t("B1", "", "ordered")]);
}

#[test]
fn a_ledger_started_afresh_never_overwrites_an_import_file_of_the_same_name() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    let first = c.files("out");
    assert_eq!(first, vec!["tangoe-events-000000000001-000000000001.jsonl"]);
    let before = c.read(&format!("out/{}", first[0]));
    // The ledger is lost; its next event is numbered 1 again, with other content.
    std::fs::remove_dir_all(c.path().join("state")).unwrap();
    std::fs::remove_file(c.path().join("drop/r_2026-11-01.csv")).unwrap();
    c.report(
        "r_2026-11-02.csv",
        &[row("B1", "Completed").at("2026-11-02T10:00:00Z")],
    );
    c.run().code(0);
    assert_eq!(
        c.files("out"),
        vec![
            "tangoe-events-000000000001-000000000001-2.jsonl",
            "tangoe-events-000000000001-000000000001.jsonl"
        ]
    );
    assert_eq!(
        c.read(&format!("out/{}", first[0])),
        before,
        "left as it was"
    );
    assert!(
        c.read("out/tangoe-events-000000000001-000000000001-2.jsonl")
            .contains("\"B1\"")
    );
}

#[test]
fn a_rerun_after_a_crash_between_rename_and_mark_replaces_its_own_file_even_if_changed() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    let name = "tangoe-events-000000000001-000000000001.jsonl";
    // As if the run had died after the rename, before its delivery mark, and the file's
    // rendering had changed since (a mapping edited before the rerun).
    let crash = |value: &str| {
        let db = c.ledger();
        db.execute("UPDATE sinks SET delivered_through = 0", [])
            .unwrap();
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('file_in_flight:file', ?1)",
            [value],
        )
        .unwrap();
    };
    c.file(&format!("out/{name}"), "rendered differently\n");
    crash(name);
    c.run().code(0);
    assert_eq!(c.files("out"), vec![name], "replaced, not a second copy");
    assert!(c.read(&format!("out/{name}")).contains("\"A1\""));

    // The same crash, but the sink's settings changed before the rerun: recorded under
    // other settings (another folder, say), the name is not this sink's to replace, and
    // under another format it would hold the wrong kind of content.
    c.file(&format!("out/{name}"), "someone else's\n");
    crash(&format!("1:00000000deadbeef:{name}"));
    c.run().code(0);
    assert_eq!(c.read(&format!("out/{name}")), "someone else's\n");
    let second = "tangoe-events-000000000001-000000000001-2.jsonl";
    assert_eq!(c.files("out"), vec![second, name]);
    assert!(c.read(&format!("out/{second}")).contains("\"A1\""));
    crash(second);
    c.config(&Case::default_config("").replace("format = \"jsonl\"", "format = \"csv\""));
    c.run().code(0);
    let csv = "tangoe-events-000000000001-000000000001.csv";
    assert!(
        c.files("out").contains(&csv.to_string()),
        "{:?}",
        c.files("out")
    );
    assert!(c.read(&format!("out/{csv}")).starts_with("event_id,"));
    assert!(
        c.read(&format!("out/{second}")).contains("\"A1\""),
        "left as it was"
    );
}
