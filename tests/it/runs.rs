//! Whole runs: which reports are taken, backfill, dry run, the run lock, summaries, and
//! the ServiceNow mapping over the sample reports.

use std::path::Path;

use crate::support::{Case, row, set_mtime};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn identical_report_under_a_new_name_is_skipped_as_duplicate() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    std::fs::copy(
        c.path().join("drop/r_2026-11-01.csv"),
        c.path().join("drop/copy_2026-11-02.csv"),
    )
    .unwrap();
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(s["already_processed"], 1);
    assert_eq!(s["reports"].as_array().unwrap().len(), 1);
    assert_eq!(s["reports"][0]["name"], "copy_2026-11-02.csv");
    assert_eq!(s["reports"][0]["status"], "duplicate");
    assert_eq!(s["reports"][0]["duplicate_of"], "r_2026-11-01.csv");
    assert_eq!(c.events().len(), 1);
    let n: i64 = c.ledger_value(
        "SELECT COUNT(*) FROM reports WHERE status = 'processed'",
        [],
    );
    assert_eq!(n, 1, "a duplicate is not processed again");
    // Nor read, nor listed, again: it is a file the source already gave.
    let s = c
        .exec(&["run", "--summary-json", "s2.json"])
        .code(0)
        .summary();
    assert_eq!(s["already_processed"], 2, "{s}");
    assert!(s["reports"].as_array().unwrap().is_empty(), "{s}");
}

#[test]
fn same_name_with_new_content_is_processed() {
    let c = Case::new();
    let daily = c.path().join("drop/daily.csv");
    c.report(
        "daily.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    set_mtime(&daily, 1_793_000_000);
    c.run().code(0);
    c.report(
        "daily.csv",
        &[row("A1", "Completed").at("2026-11-02T10:00:00Z")],
    );
    set_mtime(&daily, 1_793_086_400);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(s["reports"][0]["status"], "processed");
    assert_eq!(c.events().len(), 2);
    assert_eq!(c.events()[1]["previous_state"], "ordered");
}

#[test]
fn reports_are_processed_oldest_first() {
    let c = Case::new();
    // Listed in another order on disk; the report date in the name decides.
    c.report("b_2026-11-03.csv", &[row("A1", "Completed")]);
    c.report("a_2026-11-04.csv", &[row("A1", "Cancelled")]);
    c.report("c_2026-11-02.csv", &[row("A1", "Ordered")]);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    let names: Vec<String> = s["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["c_2026-11-02.csv", "b_2026-11-03.csv", "a_2026-11-04.csv"]
    );
    let states: Vec<String> = c.transitions().into_iter().map(|t| t.2).collect();
    assert_eq!(states, ["ordered", "completed", "cancelled"]);
}

#[test]
fn backfill_emits_nothing_already_sent_and_resend_does() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered")
                .itsm("RITM1")
                .at("2026-11-01T10:00:00Z"),
            row("A2", "Ordered").at("2026-11-01T10:00:00Z"),
        ],
    );
    c.report(
        "r_2026-11-02.csv",
        &[row("A1", "Completed")
            .itsm("RITM1")
            .at("2026-11-02T10:00:00Z")],
    );
    c.run().code(0);
    assert_eq!(c.events().len(), 3);
    // A report for 11-03 the nightly run has not seen yet, outside the backfill range.
    c.report(
        "r_2026-11-03.csv",
        &[row("A2", "Cancelled").at("2026-11-03T10:00:00Z")],
    );

    let b = c
        .exec(&[
            "backfill",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
            "--summary-json",
            "b.json",
        ])
        .code(0)
        .summary();
    assert_eq!(
        b["reports"].as_array().unwrap().len(),
        2,
        "both reports replayed, seen before or not"
    );
    assert_eq!(b["events"], 0);
    assert_eq!(
        c.events().len(),
        3,
        "nothing the ITSM has seen goes out again"
    );

    c.exec(&[
        "backfill",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
        "--resend",
        "--summary-json",
        "r.json",
    ])
    .code(0);
    let ev = c.events();
    assert_eq!(ev.len(), 5, "one re-sent event per Activity in range");
    let resent: Vec<(&str, &str)> = ev[3..]
        .iter()
        .map(|e| {
            (
                e["activity_id"].as_str().unwrap(),
                e["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(resent, [("A1", "completed"), ("A2", "ordered")]);
    assert!(ev[3..].iter().all(|e| e["kind"] == "resend"));
    assert_eq!(ev[3]["itsm_number"], "RITM1");
    // The 11-03 report was outside the range: A2 is still ordered.
    let a2: i64 = c.ledger_value("SELECT state FROM activities WHERE activity_id='A2'", []);
    assert_eq!(a2, 1);
}

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn dry_run_leaves_the_ledger_byte_identical_and_writes_no_file() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    let ledger = c.path().join("state/ledger.sqlite");
    let before = file_bytes(&ledger);
    let state_files: Vec<String> = std::fs::read_dir(c.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let out_before = c.files("out");

    c.report(
        "r_2026-11-02.csv",
        &[
            row("A1", "Completed").at("2026-11-02T10:00:00Z"),
            row("A2", "Bogus"),
            row("A3", "On Back Order").at("2026-11-02T10:00:00Z"),
        ],
    );
    let d = c
        .exec(&["run", "--dry-run", "--summary-json", "d.json"])
        .code(2)
        .prints("DRY RUN")
        .prints("ordered → completed: 1")
        .prints("none → on_back_order: 1")
        .prints("rejected row 3, column \"Status\": unknown state \"Bogus\"")
        .summary();
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["events"], 2);

    assert_eq!(file_bytes(&ledger), before, "ledger byte-identical");
    let state_after: Vec<String> = std::fs::read_dir(c.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        state_after, state_files,
        "no -wal/-shm or other files appear"
    );
    assert_eq!(c.files("out"), out_before, "no import file");

    // A dry backfill too.
    c.exec(&[
        "backfill",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
        "--dry-run",
        "--resend",
    ])
    .code(2);
    assert_eq!(file_bytes(&ledger), before);
    assert_eq!(c.files("out"), out_before);

    // And the real run afterwards does what the dry run said.
    let real = c.exec(&["run", "--summary-json", "real.json"]).code(2);
    assert_eq!(real.summary()["events"], 2);
}

#[test]
fn dry_run_on_a_fresh_install_creates_nothing() {
    let c = Case::new();
    c.report("r_2026-11-01.csv", &[row("A1", "Ordered")]);
    c.exec(&["run", "--dry-run"])
        .code(0)
        .prints("none → ordered: 1");
    assert!(!c.path().join("state").exists());
    assert!(!c.path().join("out").exists());
}

#[test]
fn a_second_concurrent_run_exits_75_and_a_dry_run_goes_on() {
    let c = Case::new();
    c.report("r_2026-11-01.csv", &[row("A1", "Ordered")]);
    c.run().code(0);
    // Another run holds the lock (the same lock a run takes).
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(c.path().join("state/ledger.sqlite.lock"))
        .unwrap();
    lock.lock().unwrap();
    c.report("r_2026-11-02.csv", &[row("A1", "Completed")]);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(75)
        .logs("another tangoe-ingest run holds the ledger lock")
        .summary();
    assert_eq!(s["exit_code"], 75);
    assert_eq!(c.events().len(), 1, "nothing was done");
    // A dry run needs no lock: it audits a copy of the ledger, and says a run is going on.
    c.exec(&["run", "--dry-run"])
        .code(0)
        .says("ordered → completed: 1")
        .says("a run is in progress");
    c.exec(&["deliver", "--dry-run"]).code(0);
    assert_eq!(c.events().len(), 1);
    drop(lock);
    c.run().code(0);
    assert_eq!(c.events().len(), 2);
}

#[test]
fn summary_json_has_the_documented_fields() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered"), row("A2", "Nope")],
    );
    c.file("drop/bad_2026-11-01.csv", "just,some,columns\n1,2,3\n");
    let s = c
        .exec(&["run", "--summary-json", "out/summary.json"])
        .code(2)
        .summary();
    for k in ["rows", "rejected", "events", "delivered", "pending"] {
        assert!(s[k].is_u64(), "{k} in {s}");
    }
    assert_eq!(
        (
            s["rows"].as_u64(),
            s["rejected"].as_u64(),
            s["events"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(
        (s["delivered"].as_u64(), s["pending"].as_u64()),
        (Some(1), Some(0))
    );
    let reports = s["reports"].as_array().unwrap();
    for r in reports {
        for k in [
            "name",
            "status",
            "rows",
            "accepted",
            "rejected",
            "unchanged",
            "stale",
            "events",
        ] {
            assert!(!r[k].is_null(), "{k} in {r}");
        }
    }
    let statuses: Vec<&str> = reports
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "processed"]);
}

#[test]
fn import_file_name_is_deterministic_and_written_whole() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered"), row("A2", "Ordered")],
    );
    c.run().code(0);
    assert_eq!(
        c.files("out"),
        ["tangoe-events-000000000001-000000000002.jsonl"]
    );
    // No events → no file.
    c.report("r_2026-11-02.csv", &[row("A1", "Ordered")]);
    c.run().code(0);
    assert_eq!(c.files("out").len(), 1);
    // Output folder unwritable → events stay pending (exit 3) and go out on the next run.
    c.report("r_2026-11-03.csv", &[row("A1", "Completed")]);
    std::fs::remove_dir_all(c.path().join("out")).unwrap();
    c.file("out", "not a folder");
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(3)
        .summary();
    assert_eq!(
        (s["pending"].as_u64(), s["delivered"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(
        s["sinks"][0]["error"]
            .as_str()
            .unwrap()
            .contains("output folder"),
        "{s}"
    );
    std::fs::remove_file(c.path().join("out")).unwrap();
    // The next run, with nothing new, delivers what was left.
    let s = c
        .exec(&["run", "--summary-json", "s2.json"])
        .code(0)
        .summary();
    assert_eq!(s["delivered"], 1);
    assert_eq!(
        c.files("out"),
        ["tangoe-events-000000000003-000000000003.jsonl"]
    );
    assert_eq!(
        c.transitions(),
        [(
            "A1".to_string(),
            "ordered".to_string(),
            "completed".to_string()
        )]
    );
}

#[test]
fn unknown_config_keys_are_errors_naming_key_and_file() {
    let c = Case::new();
    c.config(&Case::default_config("colour = \"blue\"\n"));
    c.run().code(1).logs("colour").logs("tangoe-ingest.toml");
}

#[test]
fn status_lists_runs_states_pending_and_rejects() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered"),
            row("A2", "Completed"),
            row("A3", "Huh"),
        ],
    );
    c.run().code(2);
    let before = file_bytes(&c.path().join("state/ledger.sqlite"));
    c.exec(&["status"])
        .code(0)
        .prints("ordered        1")
        .prints("completed      1")
        .prints("Reports: 1 processed")
        .prints("row 4 column \"Status\": unknown state \"Huh\"")
        .prints("pending       0");
    assert_eq!(file_bytes(&c.path().join("state/ledger.sqlite")), before);
    // A sink added since: the ledger's events are not pending for it (the next run does
    // not send them either).
    c.config(&Case::default_config(
        "[[sink]]\ntype = \"file\"\nname = \"archive\"\ndir = \"out2\"\n",
    ));
    c.exec(&["status"])
        .code(0)
        .prints("archive          new: starts with the events after event 2");
    let json: serde_json::Value =
        serde_json::from_str(&c.exec(&["status", "--json"]).code(0).stdout()).unwrap();
    let archive = &json["sinks"][1];
    assert_eq!(
        (&archive["new"], &archive["pending"]),
        (&true.into(), &0.into()),
        "{json}"
    );
    c.run().code(0);
    assert!(c.files("out2").is_empty());
}

#[test]
fn servicenow_mapping_of_the_sample_reports() {
    let c = Case::new();
    let samples = repo().join("sample_reports");
    let mapping = repo().join("schemas/servicenow-ritm.toml");
    c.config(&format!(
        r#"[source]
type = "local"
dir = "{}"
[report]
timezone = "America/New_York"
date_from_name = '(\d{{4}}-\d{{2}}-\d{{2}})'
[ledger]
path = "state/ledger.sqlite"
[[sink]]
type = "file"
dir = "out"
mapping = "{}"
"#,
        samples.display(),
        mapping.display()
    ));
    c.run().code(2);
    let files = c.files("out");
    assert_eq!(files.len(), 1);
    let text = c.read(&format!("out/{}", files[0]));
    let payloads: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    insta::assert_json_snapshot!("servicenow_sample_payloads", payloads);
}

#[test]
fn config_can_follow_the_command_or_come_from_the_environment() {
    let c = Case::new();
    c.report("r_2026-11-01.csv", &[row("A1", "Ordered")]);
    let cfg = c.path().join("tangoe-ingest.toml");
    #[allow(deprecated)]
    let bin = assert_cmd::cargo::cargo_bin("tangoe-ingest");
    let after = std::process::Command::new(&bin)
        .current_dir(std::env::temp_dir())
        .env_remove("TANGOE_INGEST_CONFIG")
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        after.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    let env = std::process::Command::new(&bin)
        .current_dir(std::env::temp_dir())
        .env("TANGOE_INGEST_CONFIG", &cfg)
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(
        env.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&env.stderr)
    );
    assert!(String::from_utf8_lossy(&env.stdout).contains("ordered        1"));
    // And with neither, the default is ./tangoe-ingest.toml in the working folder.
    let default = std::process::Command::new(&bin)
        .current_dir(c.path())
        .env_remove("TANGOE_INGEST_CONFIG")
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(default.status.code(), Some(0));
}

#[test]
fn logs_carry_no_row_contents_above_debug() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Shipped-Zoë"),
            row("A2", "Ordered").at("31/12/2026"),
        ],
    );
    let ran = c
        .exec(&["run", "--log-format", "json"])
        .code(2)
        .logs("row rejected");
    let stderr = ran.stderr();
    assert!(
        !stderr.contains("Shipped-Zoë") && !stderr.contains("31/12/2026"),
        "{stderr}"
    );
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("JSON log lines");
    }
    // The operator still sees the values where they belong: the run's own output.
    ran.prints("Shipped-Zoë");
}

#[test]
fn temporary_files_a_killed_run_left_are_removed() {
    let c = Case::new();
    c.file("out/.tangoe-ingest-abc123.part", "half a file");
    c.report("r_2026-11-01.csv", &[row("A1", "Ordered")]);
    c.run().code(0);
    assert!(!c.path().join("out/.tangoe-ingest-abc123.part").exists());
    assert_eq!(c.events().len(), 1);
}

#[test]
fn a_run_that_fails_as_a_whole_is_recorded_with_exit_1_not_left_unfinished() {
    let c = Case::new();
    c.config(&Case::default_config("").replace("dir = \"drop\"", "dir = \"no-such-folder\""));
    c.run().code(1).logs("no-such-folder");
    let (ended, code): (Option<String>, Option<i64>) = c
        .ledger()
        .query_row("SELECT ended_at, exit_code FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(ended.is_some(), "the run has ended");
    assert_eq!(code, Some(1));
}

/// Whatever ends a run, the summary file says so: never last night's content, never
/// missing; and a summary file that cannot be written is found before anything is done.
#[test]
fn the_summary_file_reports_every_failure_and_an_unwritable_one_stops_the_run_first() {
    let c = Case::new();
    c.report("r_2026-11-01.csv", &[row("A1", "Ordered")]);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(s["exit_code"], 0);
    // Its owner's alone: it names reports and columns.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.path().join("s.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    // A configuration mistake.
    c.config(&Case::default_config("bogus_key = 1\n"));
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(1)
        .summary();
    assert_eq!(s["exit_code"], 1, "{s}");
    assert!(s["error"].as_str().unwrap().contains("bogus_key"), "{s}");
    c.config(&Case::default_config(""));
    // A backfill whose range is backwards.
    let b = c
        .exec(&[
            "backfill",
            "--from",
            "2026-11-05",
            "--to",
            "2026-11-01",
            "--summary-json",
            "b.json",
        ])
        .code(1)
        .summary();
    assert!(b["error"].as_str().unwrap().contains("after --to"));
    // A summary file that cannot be written: exit 1, naming it, and nothing done.
    c.report("r_2026-11-02.csv", &[row("A1", "Completed")]);
    c.file("blocker", "a file, not a folder");
    c.exec(&["run", "--summary-json", "blocker/s.json"])
        .code(1)
        .logs("blocker/s.json");
    assert_eq!(c.events().len(), 1, "nothing was done");
    // Under --log-format json, the fatal error is a JSON line like the rest of the log.
    std::fs::remove_file(c.path().join("tangoe-ingest.toml")).unwrap();
    let err = c.exec(&["--log-format", "json", "run"]).code(1).stderr();
    let last: serde_json::Value =
        serde_json::from_str(err.lines().last().unwrap()).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(last["level"], "ERROR");
    assert!(
        last["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("tangoe-ingest.toml"),
        "{err}"
    );
}

/// A run killed after it committed its reports, before its summary: the next run reports
/// those reports once (with their rejects, exit 2), and the killed run is recorded as
/// interrupted rather than left "unfinished".
#[test]
fn reports_of_an_interrupted_run_are_reported_by_the_next_run_once() {
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered"), row("A2", "Huh")],
    );
    c.run().code(2);
    // The state a SIGKILL between the report's commit and the run's end leaves.
    c.ledger()
        .execute_batch("UPDATE runs SET ended_at = NULL, exit_code = NULL, reports = 0, rows = 0")
        .unwrap();
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .prints("interrupted before it could report")
        .prints("unknown state \"Huh\"")
        .summary();
    let r = &s["interrupted_reports"][0];
    assert_eq!(
        (&r["name"], &r["rejected"]),
        (&"r_2026-11-01.csv".into(), &1.into()),
        "{s}"
    );
    assert_eq!(s["reports"].as_array().unwrap().len(), 0, "not this run's");
    assert_eq!(s["rejected"], 0, "not this run's");
    let status = c.exec(&["status"]).code(0).prints("(interrupted)").stdout();
    assert!(!status.contains("unfinished"), "{status}");
    // Reported once.
    let again = c.exec(&["run", "--summary-json", "s2.json"]).code(0);
    let out = again.stdout();
    assert!(!out.contains("interrupted"), "{out}");
    assert!(again.summary().get("interrupted_reports").is_none());
}

/// A wrong value in a `[source]` or `[[sink]]` table names the table and the key.
#[test]
fn configuration_mistakes_name_their_table_and_key() {
    let c = Case::new();
    for (config, expected) in [
        (
            Case::default_config("")
                .replace("patterns = [\"*.csv\", \"*.xlsx\"]", "patterns = \"*.csv\""),
            &["[source]", "expected a sequence", "`patterns`"][..],
        ),
        (
            Case::default_config(
                "[[sink]]\ntype = \"http\"\nname = \"sn\"\napi = \"webhook\"\n\
                 url = \"http://127.0.0.1:9/x\"\nmax_attempts = \"5\"\n",
            ),
            &["[[sink]] #2 (\"sn\")", "`max_attempts`"][..],
        ),
        (
            Case::default_config("[[sink]]\ntype = \"fiel\"\ndir = \"x\"\n"),
            &["[[sink]] #2", "\"fiel\"", "expected \"file\" or \"http\""][..],
        ),
    ] {
        c.config(&config);
        let stderr = c.run().code(1).stderr();
        for e in expected {
            assert!(stderr.contains(e), "{e}: {stderr}");
        }
    }
}

#[test]
fn file_sinks_that_would_overwrite_each_other_or_write_outside_their_folder_are_refused() {
    let c = Case::new();
    for (extra, expected) in [
        (
            "[[sink]]\ntype = \"file\"\nname = \"second\"\ndir = \"out\"\nformat = \"jsonl\"\n",
            "would write the same file names",
        ),
        (
            "[[sink]]\ntype = \"file\"\nname = \"up\"\ndir = \"out2\"\nprefix = \"../escaped/x\"\n",
            "must be a plain file name start",
        ),
        (
            "[[sink]]\ntype = \"file\"\nname = \"\"\ndir = \"out3\"\n",
            "has an empty `name`",
        ),
    ] {
        c.config(&Case::default_config(extra));
        c.run().code(1).logs(expected);
    }
    assert!(!c.path().join("escaped").exists());
}

#[test]
fn a_command_line_mistake_exits_1_like_any_configuration_error() {
    let c = Case::new();
    for args in [
        &["--bogus"][..],
        &["backfill", "--from", "2026-13-01", "--to", "2026-11-01"],
        &["backfill", "--from", "2026-11-01"],
        &["no-such-command"],
    ] {
        let stderr = c.exec(args).code(1).stderr();
        assert!(!stderr.is_empty(), "{args:?}: says why");
    }
    c.exec(&["backfill", "--from", "11/01/2026", "--to", "2026-11-02"])
        .code(1)
        .logs("YYYY-MM-DD");
    c.exec(&["--help"]).code(0);
}

#[test]
fn status_counts_a_failed_report_until_it_is_processed_and_names_the_latest_one() {
    let c = Case::new();
    c.report(
        "r_2026-11-03.csv",
        &[row("A1", "Ordered").at("2026-11-03T10:00:00Z")],
    );
    // No state column: fails, twice.
    c.file("drop/r_2026-11-02.csv", "Activity ID,Device\nA2,Pixel\n");
    c.run().code(2);
    c.run().code(2);
    c.exec(&["status"])
        .code(0)
        .prints("Reports: 1 processed, 1 failed")
        // Which one, how often, and why.
        .prints("failed r_2026-11-02.csv (report date 2026-11-02): 2 attempt(s)")
        .prints("missing required column(s): state");
    // Fixed under the same name: processed, and no longer failed.
    c.report(
        "r_2026-11-02.csv",
        &[row("A2", "Ordered").at("2026-11-02T10:00:00Z")],
    );
    c.run().code(0);
    let out = c
        .exec(&["status"])
        .code(0)
        .prints("Reports: 2 processed, 0 failed")
        .prints("last: r_2026-11-02.csv")
        .stdout();
    assert!(!out.contains("failed r_2026-11-02.csv"), "{out}");
}

/// A file name holding a line break and an escape sequence cannot forge a log line or drive
/// the terminal: text logs and the printed summary show it escaped, on one line.
#[test]
fn control_characters_in_a_file_name_are_escaped_in_logs_and_the_summary() {
    let c = Case::new();
    let name = "r_2026-11-01\n2026-12-06T00:00:00Z ERROR forged\u{1b}[31m.csv";
    c.report(name, &[row("A1", "Shipped?").at("2026-11-01T10:00:00Z")]);
    let ran = c.run();
    for text in [ran.stdout(), ran.stderr()] {
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("2026-12-06T00:00:00Z ERROR forged")),
            "{text}"
        );
        assert!(
            text.contains("\\n2026-12-06T00:00:00Z ERROR forged\\u{1b}[31m.csv"),
            "{text}"
        );
    }
}

/// Whatever umask the job starts with, what it creates is its owner's alone: the state
/// folder, the ledger and its lock, the output folder, import files and the summary; a
/// file sink's `mode` loosens its import files on purpose.
#[test]
fn files_and_folders_are_created_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let c = Case::new();
    c.config(&Case::default_config(
        "\n[[sink]]\ntype = \"file\"\nname = \"shared\"\ndir = \"shared\"\nmode = \"0640\"\n",
    ));
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    let bin = assert_cmd::cargo::cargo_bin!("tangoe-ingest");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000; exec "$0" --config tangoe-ingest.toml run --summary-json s.json"#)
        .arg(bin)
        .current_dir(c.path())
        .env_remove("TANGOE_INGEST_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mode = |rel: &str| {
        std::fs::metadata(c.path().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for dir in ["state", "out", "shared"] {
        assert_eq!(mode(dir), 0o700, "{dir}");
    }
    let file = c.files("out").remove(0);
    let shared = c.files("shared").remove(0);
    for (rel, want) in [
        ("state/ledger.sqlite", 0o600),
        ("state/ledger.sqlite.lock", 0o600),
        ("s.json", 0o600),
        (&format!("out/{file}"), 0o600),
        (&format!("shared/{shared}"), 0o640),
    ] {
        assert_eq!(mode(rel), want, "{rel}: {:o}", mode(rel));
    }
}

/// A ledger an earlier release left readable by others is made its owner's alone.
#[test]
fn a_ledger_readable_by_others_is_made_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let c = Case::new();
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    let ledger = c.path().join("state/ledger.sqlite");
    std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o644)).unwrap();
    c.run().code(0);
    let mode = std::fs::metadata(&ledger).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}
