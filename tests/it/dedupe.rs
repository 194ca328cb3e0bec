//! The five dedupe rules, seen from the outside: import files and the ledger.

use crate::support::{Case, Row, X, row, set_mtime, t, write_xlsx};

#[test]
fn new_activity_emits_none_to_state() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered")
                .itsm("RITM1")
                .at("2026-11-01T10:00:00Z"),
            row("A2", "On Back Order").at("2026-11-01T10:00:00Z"),
        ],
    );
    c.run().code(0);
    assert_eq!(
        c.transitions(),
        vec![t("A1", "", "ordered"), t("A2", "", "on_back_order")]
    );
    let e = &c.events()[0];
    assert_eq!(e["itsm_number"], "RITM1");
    assert_eq!(e["updated_at"], "2026-11-01T10:00:00Z");
    assert_eq!(e["report"], "r_2026-11-01.csv");
    assert_eq!(e["row"], 2);
    assert_eq!(e["event_id"].as_str().unwrap().len(), 32);
}

#[test]
fn changed_state_emits_old_to_new_and_same_state_emits_nothing() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered").at("2026-11-01T10:00:00Z"),
            row("A2", "Ordered").at("2026-11-01T10:00:00Z"),
        ],
    );
    c.run().code(0);
    c.report(
        "r_2026-11-02.csv",
        &[
            row("A1", "Completed").at("2026-11-02T10:00:00Z"),
            row("A2", "Ordered").at("2026-11-01T10:00:00Z"),
        ],
    );
    // Different content (a device filled in), same states.
    c.report(
        "r_2026-11-03.csv",
        &[
            row("A1", "Completed")
                .at("2026-11-02T10:00:00Z")
                .device("Pixel 9"),
            row("A2", "Ordered").at("2026-11-01T10:00:00Z"),
        ],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(
        c.transitions(),
        vec![
            t("A1", "", "ordered"),
            t("A2", "", "ordered"),
            t("A1", "ordered", "completed")
        ]
    );
    assert_eq!(s["reports"][0]["unchanged"], 1);
    assert_eq!(s["reports"][1]["unchanged"], 2);
    assert_eq!(s["reports"][1]["events"], 0);
}

#[test]
fn stale_report_never_regresses_state() {
    let c = Case::new();
    c.report(
        "r_2026-11-05.csv",
        &[row("A1", "Completed").at("2026-11-05T10:00:00Z")],
    );
    c.run().code(0);
    // An older report arrives late (its rows carry older updated_at values).
    c.report(
        "r_2026-11-02.csv",
        &[row("A1", "Ordered").at("2026-11-02T10:00:00Z")],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(c.transitions(), vec![t("A1", "", "completed")]);
    assert_eq!(s["reports"][0]["stale"], 1);
    let state: i64 = c.ledger_value("SELECT state FROM activities WHERE activity_id='A1'", []);
    assert_eq!(state, 3, "completed stays completed");
}

#[test]
fn without_updated_at_the_report_date_decides_staleness() {
    let c = Case::new();
    let header = "Activity ID,Status\n";
    c.file("drop/r_2026-11-05.csv", format!("{header}A1,Completed\n"));
    c.run().code(0);
    c.file("drop/r_2026-11-02.csv", format!("{header}A1,Ordered\n"));
    c.run().code(0);
    c.file("drop/r_2026-11-06.csv", format!("{header}A1,Cancelled\n"));
    c.run().code(0);
    assert_eq!(
        c.transitions(),
        vec![t("A1", "", "completed"), t("A1", "completed", "cancelled")]
    );
    assert_eq!(c.events()[1]["updated_at"], "2026-11-06T00:00:00Z");
}

#[test]
fn same_activity_twice_in_one_report_latest_wins_one_event() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    c.report(
        "r_2026-11-02.csv",
        &[
            // later by updated_at, though listed first
            row("A1", "Completed")
                .at("2026-11-02T12:00:00Z")
                .device("Pixel 9"),
            row("A1", "On Back Order").at("2026-11-02T09:00:00Z"),
            // no updated_at ordering between these two: the last row wins
            row("A2", "Ordered").at("2026-11-02T09:00:00Z"),
            row("A2", "Cancelled").at("2026-11-02T09:00:00Z"),
            // new and changed twice: still one event, from none
            row("A3", "Ordered").at("2026-11-02T08:00:00Z"),
            row("A3", "Completed").at("2026-11-02T09:00:00Z"),
        ],
    );
    let ran = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .prints("events 3, merged 2");
    // A1's second row is older (stale); A2's and A3's later rows fold into their events.
    let r = &ran.summary()["reports"][0];
    assert_eq!(
        [&r["accepted"], &r["events"], &r["stale"], &r["merged"]],
        [6, 3, 1, 2],
        "{r}"
    );
    assert_eq!(
        c.transitions(),
        vec![
            t("A1", "", "ordered"),
            t("A1", "ordered", "completed"),
            t("A2", "", "cancelled"),
            t("A3", "", "completed"),
        ]
    );
    assert_eq!(c.events()[1]["device"], "Pixel 9");
}

#[test]
fn a_change_undone_within_one_report_emits_nothing() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    c.report(
        "r_2026-11-02.csv",
        &[
            row("A1", "On Back Order").at("2026-11-02T09:00:00Z"),
            row("A1", "Ordered").at("2026-11-02T10:00:00Z"),
        ],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    let r = &s["reports"][0];
    assert_eq!([&r["events"], &r["merged"]], [0, 1], "{r}");
    c.report(
        "r_2026-11-03.csv",
        &[row("A1", "Completed").at("2026-11-03T10:00:00Z")],
    );
    c.run().code(0);
    assert_eq!(
        c.transitions(),
        vec![t("A1", "", "ordered"), t("A1", "ordered", "completed")]
    );
}

/// Rule 5 with equal times: the last row wins even when it puts a known Activity back
/// where the ledger had it, at the very time the ledger has.
#[test]
fn a_flip_back_at_the_same_time_within_one_report_emits_nothing() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered").at("2026-11-01T10:00:00Z"),
            row("A2", "Ordered").at("2026-11-01T10:00:00Z"),
        ],
    );
    c.run().code(0);
    c.report(
        "r_2026-11-02.csv",
        &[
            row("A1", "Completed").at("2026-11-01T10:00:00Z"),
            row("A2", "Ordered").at("2026-11-01T10:00:00Z"),
            row("A1", "Ordered").at("2026-11-01T10:00:00Z"),
        ],
    );
    c.run().code(0);
    c.report(
        "r_2026-11-03.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    assert_eq!(
        c.transitions(),
        vec![t("A1", "", "ordered"), t("A2", "", "ordered")]
    );
}

/// Events come in the order of the report's rows, whether the Activity is new or known,
/// also across many rows (changes to known Activities are looked up in batches).
#[test]
fn events_follow_the_report_row_order() {
    let c = Case::new();
    let n = 40_000;
    let first: Vec<Row> = (0..n)
        .filter(|i| i % 2 == 0)
        .map(|i| row(&format!("A{i:06}"), "Ordered").at("2026-11-01T10:00:00Z"))
        .collect();
    c.report("r_2026-11-01.csv", &first);
    c.run().code(0);
    // Every Activity, in a scrambled order: the known ones complete, the others are new.
    let order: Vec<usize> = (0..n).map(|i| (i * 7919) % n).collect();
    let second: Vec<Row> = order
        .iter()
        .map(|i| {
            let state = if i % 2 == 0 { "Completed" } else { "Ordered" };
            row(&format!("A{i:06}"), state).at("2026-11-02T10:00:00Z")
        })
        .collect();
    c.report("r_2026-11-02.csv", &second);
    c.run().code(0);
    let got: Vec<(String, String, String)> = c.transitions().split_off(n / 2);
    let want: Vec<(String, String, String)> = order
        .iter()
        .map(|i| {
            let (p, s) = if i % 2 == 0 {
                ("ordered", "completed")
            } else {
                ("", "ordered")
            };
            t(&format!("A{i:06}"), p, s)
        })
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "events are not in row order");
}

/// Two reports of one day without `updated_at` (every row's time is its report's date),
/// taken on two nights: the morning one says ordered, the afternoon one completed. A
/// backfill over that day afterwards emits nothing, and leaves the Activity completed.
#[test]
fn a_backfill_of_two_same_day_reports_without_times_emits_nothing() {
    let c = Case::new();
    let header = "Activity ID,Status\n";
    let (morning, afternoon) = ("drop/r_2026-11-05_am.csv", "drop/r_2026-11-05_pm.csv");
    c.file(morning, format!("{header}A1,Ordered\n"));
    set_mtime(&c.path().join(morning), DAY5 + 8 * 3600);
    c.run().code(0);
    c.file(afternoon, format!("{header}A1,Completed\n"));
    set_mtime(&c.path().join(afternoon), DAY5 + 15 * 3600);
    c.run().code(0);
    let before = c.transitions();
    assert_eq!(
        before,
        vec![t("A1", "", "ordered"), t("A1", "ordered", "completed")]
    );
    for _ in 0..2 {
        c.exec(&["backfill", "--from", "2026-11-05", "--to", "2026-11-05"])
            .code(0);
        assert_eq!(c.transitions(), before, "a backfill emitted events");
    }
    assert_eq!(state_of(&c, "A1"), 3, "completed");
}

/// The afternoon report first, then the morning one of the same date arriving late
/// (older mtime): the Activity stays completed and nothing is emitted.
#[test]
fn a_late_morning_report_never_moves_the_afternoons_state_back() {
    let c = Case::new();
    let header = "Activity ID,Status\n";
    let (morning, afternoon) = ("drop/r_2026-11-05_am.csv", "drop/r_2026-11-05_pm.csv");
    c.file(afternoon, format!("{header}A1,Completed\n"));
    set_mtime(&c.path().join(afternoon), DAY5 + 15 * 3600);
    c.run().code(0);
    c.file(morning, format!("{header}A1,Ordered\n"));
    set_mtime(&c.path().join(morning), DAY5 + 8 * 3600);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(c.transitions(), vec![t("A1", "", "completed")]);
    assert_eq!(s["reports"][0]["stale"], 1);
    assert_eq!(state_of(&c, "A1"), 3, "completed");
}

/// Two reports whose rows carry the same `updated_at` with different states: the later
/// report wins the tie once, and backfills over both send nothing again.
#[test]
fn equal_times_with_different_states_are_sent_once_however_often_backfilled() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.report(
        "r_2026-11-02.csv",
        &[row("A1", "Completed").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    let once = vec![t("A1", "", "ordered"), t("A1", "ordered", "completed")];
    assert_eq!(c.transitions(), once);
    for _ in 0..3 {
        c.exec(&["backfill", "--from", "2026-11-01", "--to", "2026-11-02"])
            .code(0);
    }
    assert_eq!(c.transitions(), once);
    assert_eq!(state_of(&c, "A1"), 3, "completed");
}

/// `activities` is the one record a row is judged against: set an Activity's state there
/// and a later row in the state it had before is a change from the state it now records.
#[test]
fn a_row_is_judged_against_the_state_activities_records() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    c.ledger()
        .execute(
            "UPDATE activities SET state = 3 WHERE activity_id = 'A1'",
            [],
        )
        .unwrap();
    c.report(
        "r_2026-11-02.csv",
        &[row("A1", "Ordered").at("2026-11-02T10:00:00Z")],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(
        c.transitions(),
        vec![t("A1", "", "ordered"), t("A1", "completed", "ordered")]
    );
    assert_eq!(s["reports"][0]["unchanged"], 0);
}

/// A report with rows both with and without `updated_at` for one Activity: a row without a
/// time counts as written at the start of its report's date, so a row with a time later
/// that day wins over it, and one without a time wins over a row of the day before,
/// whatever their order in the file.
#[test]
fn in_one_report_a_row_without_a_time_counts_as_the_start_of_its_reports_date() {
    let c = Case::new();
    c.report(
        "r_2026-11-02.csv",
        &[
            row("A1", "Completed").at("2026-11-02T09:00:00Z"),
            row("A1", "Ordered"),
            row("A2", "Ordered").at("2026-11-01T23:00:00Z"),
            row("A2", "Cancelled"),
            row("A3", "Cancelled"),
            row("A3", "Completed").at("2026-11-02T00:00:00Z"),
        ],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(
        c.transitions(),
        vec![
            t("A1", "", "completed"),
            t("A2", "", "cancelled"),
            t("A3", "", "completed"),
        ]
    );
    let r = &s["reports"][0];
    // A1's second row is older than its first; A2's and A3's later rows win (A3's by its
    // place in the file, at the same instant).
    assert_eq!([&r["stale"], &r["merged"]], [1, 2], "{r}");
    assert_eq!(c.events()[2]["updated_at"], "2026-11-02T00:00:00Z");
}

/// 2026-11-05T00:00:00Z.
const DAY5: i64 = 1_793_836_800;

fn state_of(c: &Case, id: &str) -> i64 {
    c.ledger_value("SELECT state FROM activities WHERE activity_id = ?1", [id])
}

/// A report of thousands of rows, in no Activity order: each rule holds row by row, the
/// events keep the order of the report's rows, and the next report finds every Activity
/// where this one left it.
#[test]
fn a_large_report_is_judged_row_by_row_in_row_order() {
    let c = Case::new();
    let first: Vec<Row> = (0..5_000)
        .map(|i| row(&format!("A{i}"), "Ordered").at("2026-11-01T10:00:00Z"))
        .collect();
    c.report("r_2026-11-01.csv", &first);
    c.run().code(0);
    assert_eq!(c.events().len(), 5_000);

    // Activities in a scattered order (7 is prime to 5,000), ten kinds of row; the second
    // rows of rule 5 come at the end of the file.
    let mut rows = Vec::new();
    let mut later = Vec::new();
    let mut want = Vec::new();
    for k in 0..5_000 {
        let i = (k * 7) % 5_000;
        let a = format!("A{i}");
        match i % 10 {
            0 => {
                rows.push(row(&a, "Completed").at("2026-11-02T10:00:00Z"));
                want.push(t(&a, "ordered", "completed"));
            }
            // A newer time, the same state: no event.
            1 => rows.push(row(&a, "Ordered").at("2026-11-02T10:00:00Z")),
            // Older than the ledger: stale.
            2 => rows.push(row(&a, "Cancelled").at("2026-10-30T10:00:00Z")),
            // Twice, changing again: one event, to the last state (rule 5).
            3 => {
                rows.push(row(&a, "Completed").at("2026-11-02T10:00:00Z"));
                later.push(row(&a, "Cancelled").at("2026-11-03T10:00:00Z"));
                want.push(t(&a, "ordered", "cancelled"));
            }
            // Twice, back where it started: no event.
            4 => {
                rows.push(row(&a, "Completed").at("2026-11-02T10:00:00Z"));
                later.push(row(&a, "Ordered").at("2026-11-03T10:00:00Z"));
            }
            _ => rows.push(row(&a, "Ordered").at("2026-11-01T10:00:00Z")),
        }
        if k % 5 == 0 {
            let b = format!("B{k}");
            rows.push(row(&b, "On Back Order").at("2026-11-02T10:00:00Z"));
            want.push(t(&b, "", "on_back_order"));
        }
    }
    rows.extend(later);
    c.report("r_2026-11-02.csv", &rows);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    let got: Vec<_> = c.transitions().into_iter().skip(5_000).collect();
    // The first rows of rule 5 take the events' places: rows order them.
    assert_eq!(got, want);
    let r = &s["reports"][0];
    assert_eq!(r["events"], 2_000, "{r}");
    assert_eq!(r["stale"], 500, "{r}");
    assert_eq!(r["merged"], 1_000, "{r}");
    assert_eq!(r["unchanged"], 3_000, "{r}");

    // The next report finds the Activities where the last one left them: the same rows
    // again change nothing; each Activity moved back to "ordered" is one event.
    c.report("r_2026-11-04.csv", &rows);
    let back: Vec<Row> = (0..5_000)
        .filter(|i| i % 10 == 0 || i % 10 == 3)
        .map(|i| row(&format!("A{i}"), "Ordered").at("2026-11-05T10:00:00Z"))
        .collect();
    c.report("r_2026-11-05.csv", &back);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(s["reports"][0]["events"], 0, "{s}");
    assert_eq!(s["reports"][1]["events"], 1_000, "{s}");
}

/// A ledger made by the release before this one (schema version 5, with the persisted
/// Activity index of that release), kept zipped in `fixtures/ledger-v5.zip`. It was made by
/// two runs over `r_2026-11-01.csv` (A1, A2, A3 ordered) and `r_2026-11-02.csv` (A1
/// completed, A2 ordered again, A3 cancelled then ordered later in the report). Migrated,
/// it has no index tables left, its Activities keep their states, a backfill over its
/// reports emits nothing, and a new report moves on from what it recorded.
#[test]
fn a_ledger_of_the_release_before_is_migrated_without_its_index() {
    let c = Case::new();
    let zipped = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/fixtures/ledger-v5.zip"
    ))
    .unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    let mut ledger = Vec::new();
    std::io::Read::read_to_end(&mut archive.by_name("ledger.sqlite").unwrap(), &mut ledger)
        .unwrap();
    c.file("state/ledger.sqlite", ledger);
    let header = "Activity ID,Status,Remote Activity ID,Last Updated\n";
    c.file(
        "drop/r_2026-11-01.csv",
        format!(
            "{header}A1,Ordered,RITM1,2026-11-01T10:00:00Z\nA2,Ordered,,2026-11-01T10:00:00Z\n\
             A3,Ordered,,2026-11-01T10:00:00Z\n"
        ),
    );
    c.file(
        "drop/r_2026-11-02.csv",
        format!(
            "{header}A1,Completed,,2026-11-02T10:00:00Z\nA2,Ordered,,2026-11-02T10:00:00Z\n\
             A3,Cancelled,,2026-11-02T09:00:00Z\nA3,Ordered,,2026-11-02T11:00:00Z\n"
        ),
    );
    c.exec(&["backfill", "--from", "2026-11-01", "--to", "2026-11-02"])
        .code(0);
    assert_eq!(
        c.events(),
        Vec::<serde_json::Value>::new(),
        "a replay emits nothing"
    );
    let version: i64 = c.ledger_value("PRAGMA user_version", []);
    assert_eq!(version, 9, "migrated to the version this build writes");
    let index_tables: i64 = c.ledger_value(
        "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'activity_index%'",
        [],
    );
    assert_eq!(index_tables, 0);
    let states: Vec<(String, i64)> = c
        .ledger()
        .prepare("SELECT activity_id, state FROM activities ORDER BY activity_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        states,
        [("A1".into(), 3), ("A2".into(), 1), ("A3".into(), 1)]
    );
    c.report(
        "r_2026-11-03.csv",
        &[
            row("A1", "Completed").at("2026-11-02T10:00:00Z"),
            row("A2", "Completed").at("2026-11-03T10:00:00Z"),
            row("A3", "Cancelled").at("2026-11-02T10:00:00Z"),
        ],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(c.transitions(), vec![t("A2", "ordered", "completed")]);
    let r = &s["reports"][0];
    assert_eq!(
        [&r["unchanged"], &r["stale"], &r["events"]],
        [1, 1, 1],
        "{r}"
    );
}

/// XLSX, CSV, XLSX and CSV reports in one run: each report sees what the one before it
/// left.
#[test]
fn xlsx_and_csv_reports_in_one_run_each_see_what_the_last_one_left() {
    let c = Case::new();
    let xlsx = |name: &str, a1: &'static str, day: u8| {
        write_xlsx(
            &c.path().join(format!("drop/{name}")),
            "Sheet1",
            &[
                vec![X::S("Activity ID"), X::S("Status"), X::S("Last Updated")],
                vec![X::S("A1"), X::S(a1), X::D(2026, 11, day, 10, 0, 0)],
                vec![X::S("A2"), X::S("Ordered"), X::D(2026, 11, 1, 10, 0, 0)],
            ],
        );
    };
    xlsx("r_2026-11-01.xlsx", "Ordered", 1);
    c.report(
        "r_2026-11-02.csv",
        &[
            row("A1", "Completed").at("2026-11-02T10:00:00Z"),
            row("A2", "Ordered").at("2026-11-01T10:00:00Z"),
        ],
    );
    // What the CSV report left: nothing to do. Then A2 moves on, in a last CSV report.
    xlsx("r_2026-11-03.xlsx", "Completed", 2);
    c.report(
        "r_2026-11-04.csv",
        &[row("A2", "Cancelled").at("2026-11-04T10:00:00Z")],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(
        c.transitions(),
        vec![
            t("A1", "", "ordered"),
            t("A2", "", "ordered"),
            t("A1", "ordered", "completed"),
            t("A2", "ordered", "cancelled"),
        ]
    );
    let r = &s["reports"];
    assert_eq!([&r[2]["unchanged"], &r[2]["events"]], [2, 0], "{s}");
    assert_eq!(r[3]["events"], 1, "{s}");
}
