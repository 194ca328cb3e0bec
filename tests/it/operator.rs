//! The operator's commands beside the pipeline, over the real binary: `inspect`, `init`,
//! `completions`, `man`, every command's `--help`; and a mapping's `required` fields.

use crate::server::Server;
use crate::support::{Case, HEADER, X, row, write_xlsx};

/// A report with a preamble, a `;` delimiter, an extra column, an unknown state and a bad
/// date.
fn audited_report() -> String {
    let header = HEADER.replace(',', ";");
    format!(
        "Tangoe Activity Report;;\nGenerated 2026-11-02;;\n{header}\n\
         A1;Ordered;RITM1;2026-11-01T10:00:00Z;5551234567;Pixel 9;1 Main St;CC1\n\
         A2;Completed;;2026-11-01T11:00:00Z;;;;CC2\n\
         A3;Exploded;RITM3;2026-11-01T12:00:00Z;;;;\n\
         A4;Cancelled;RITM4;13/45/2026;;;;\n\
         A5;On Back Order;RITM5;2026-11-01T13:00:00Z;;;;\n"
    )
}

/// A case without a configuration file: `inspect` needs none.
fn without_config() -> Case {
    let c = Case::new();
    std::fs::remove_file(c.path().join("tangoe-ingest.toml")).unwrap();
    c
}

#[test]
fn inspect_audits_a_csv_without_config_or_ledger() {
    let c = without_config();
    c.file("drop/r_2026-11-02.csv", audited_report());
    let out = c
        .exec(&["inspect", "drop/r_2026-11-02.csv", "--rows", "2"])
        .code(2)
        .stdout();
    insta::assert_snapshot!("inspect_csv", out);
    assert!(!c.path().join("state").exists(), "no ledger");
}

#[test]
fn inspect_json_lists_every_reject_and_the_column_mapping() {
    let c = without_config();
    c.file("drop/r_2026-11-02.csv", audited_report());
    let out = c
        .exec(&["inspect", "--json", "drop/r_2026-11-02.csv"])
        .code(2)
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    insta::assert_json_snapshot!("inspect_json", v);
    let a = &v[0];
    assert_eq!(a["delimiter"], ";");
    assert_eq!(a["header_row"], 3);
    assert_eq!(a["unmapped"], serde_json::json!(["Cost Center"]));
    assert_eq!(a["rejects"].as_array().unwrap().len(), 2);
    assert_eq!(a["states"]["on_back_order"], 1);
}

#[test]
fn inspect_passes_a_clean_workbook_and_says_which_sheet_and_fails_a_file_without_header() {
    let c = without_config();
    let head: Vec<X> = ["Activity ID", "Status", "Remote Activity ID"]
        .into_iter()
        .map(X::S)
        .collect();
    write_xlsx(
        &c.path().join("drop/r_2026-11-03.xlsx"),
        "Activities",
        &[head, vec![X::S("B1"), X::S("Completed"), X::S("RITM9")]],
    );
    c.exec(&["inspect", "drop/r_2026-11-03.xlsx", "--rows", "5"])
        .code(0)
        .prints("format     XLSX, sheet \"Activities\"")
        .prints("rows       1: accepted 1, rejected 0")
        .prints("B1           completed");
    c.file("drop/bad.csv", "Name,Colour\nx,y\n");
    c.exec(&["inspect", "drop/r_2026-11-03.xlsx", "drop/bad.csv"])
        .code(2)
        .prints("drop/bad.csv\n  ✗ cannot be read: ");
}

#[test]
fn inspect_takes_another_schema() {
    let c = without_config();
    c.file(
        "schema.toml",
        "[fields.activity_id]\nrequired = true\naliases = ['Order']\n\
         [fields.state]\nrequired = true\naliases = ['Where']\n",
    );
    c.file("drop/r.csv", "Order,Where,Colour\nO1,Ordered,red\n");
    c.exec(&["inspect", "--schema", "schema.toml", "drop/r.csv"])
        .code(0)
        .prints("Order  → activity_id")
        .prints("Colour → (no field: kept as extra)");
}

/// A case set up by `init` in its own folder (its configuration removed first).
fn initialised() -> Case {
    let c = without_config();
    c.exec(&["init"]).code(0).prints("wrote ");
    c
}

#[test]
fn init_writes_a_starter_that_check_and_a_dry_run_take() {
    let c = initialised();
    for f in [
        "tangoe-ingest.toml",
        "tangoe-activity-report.toml",
        "servicenow-ritm.toml",
        "servicenow-ritm-mirror.toml",
    ] {
        assert!(c.path().join(f).is_file(), "{f}");
    }
    assert!(c.read("tangoe-ingest.toml").contains("# "), "commented");
    assert!(c.read("servicenow-ritm-mirror.toml").contains("[create]"));
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered")
            .itsm("RITM1")
            .at("2026-11-01T10:00:00Z")],
    );
    c.exec(&["check"])
        .code(0)
        .prints("take  r_2026-11-01.csv")
        .prints("all checks passed");
    c.exec(&["run", "--dry-run"])
        .code(0)
        .prints("would emit: none → ordered: 1");
    assert!(!c.path().join("state").exists());
}

#[test]
fn init_never_overwrites_and_writes_nothing_when_a_file_exists() {
    let c = initialised();
    c.file("tangoe-activity-report.toml", "# mine");
    std::fs::remove_file(c.path().join("servicenow-ritm.toml")).unwrap();
    c.exec(&["init", "."])
        .code(1)
        .says("init writes nothing over existing files")
        .says("tangoe-activity-report.toml");
    assert_eq!(c.read("tangoe-activity-report.toml"), "# mine");
    assert!(!c.path().join("servicenow-ritm.toml").exists());
    // Another folder is fine, made if missing.
    c.exec(&["init", "other/site"]).code(0);
    assert!(c.path().join("other/site/tangoe-ingest.toml").is_file());
}

#[test]
fn an_event_whose_required_number_is_empty_is_not_written_and_is_counted() {
    let c = initialised();
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered").itsm("RITM1"),
            row("A2", "Ordered"),
            row("A3", "Completed").itsm("RITM3"),
        ],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .prints("skipped 1: the required field `number` is empty")
        .prints("exit 2: sink servicenow: 1 event not sent, a field the ITSM needs is empty")
        .summary();
    assert_eq!(s["sinks"][0]["incomplete"], 1);
    assert_eq!(s["sinks"][0]["delivered"], 2);
    assert_eq!(s["problems"][0]["kind"], "data");
    let files = c.files("out/servicenow");
    assert_eq!(files.len(), 1);
    let text = c.read(&format!("out/servicenow/{}", files[0]));
    let numbers: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .filter(|n| n.starts_with("RITM") || n.is_empty())
        .collect();
    assert_eq!(numbers, ["RITM1", "RITM3"], "{text}");
    c.exec(&["status"])
        .code(0)
        .prints("skipped 1: the required field `number` is empty")
        .prints("not sent #2")
        .prints("activity A2 none → ordered: the required field `number` is empty");
    // Settled: the next run neither writes it nor counts it again.
    c.run().code(0);
}

#[test]
fn no_import_file_is_written_when_every_event_lacks_a_required_field() {
    let c = initialised();
    c.report("r_2026-11-01.csv", &[row("A2", "Ordered")]);
    c.run()
        .code(2)
        .prints("skipped 1: the required field `number` is empty");
    assert!(c.files("out/servicenow").is_empty(), "no empty import file");
    c.run().code(0);
}

#[test]
fn an_http_sink_does_not_send_an_event_whose_required_number_is_empty() {
    let server = Server::ok();
    let c = Case::with_config(&format!(
        "[[sink]]\ntype = \"http\"\nname = \"sn\"\napi = \"servicenow_import_set\"\n\
         url = \"{}\"\nmapping = \"builtin:servicenow-ritm\"\n",
        server.url("/api/now/import/u_tangoe_activity")
    ));
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Ordered").itsm("RITM1"), row("A2", "Ordered")],
    );
    // A dry run previews only what would be sent.
    let dry = c
        .exec(&["run", "--dry-run", "--summary-json", "dry.json"])
        .summary();
    let previewed: Vec<&str> = dry["sinks"][1]["previews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["body"]["number"].as_str().unwrap())
        .collect();
    assert_eq!(previewed, ["RITM1"]);
    assert!(server.requests().is_empty());
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .prints("skipped 1: the required field `number` is empty")
        .summary();
    assert_eq!(s["sinks"][1]["incomplete"], 1);
    let sent: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.json()["number"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent, ["RITM1"]);
    // Settled, not pending: `deliver` sends nothing more.
    c.exec(&["deliver"]).code(0);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_required_field_that_is_not_an_output_field_is_a_configuration_error() {
    let c = Case::with_config("mapping = \"m.toml\"\n");
    c.file(
        "m.toml",
        "required = [\"numbr\"]\n[fields]\nnumber = \"{{ itsm_number }}\"\n",
    );
    c.run()
        .code(1)
        .says("`required` names \"numbr\", which is not one of its [fields] (number)");
}

#[test]
fn completions_for_each_shell_name_every_command() {
    let c = Case::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = c.exec(&["completions", shell]).code(0).stdout();
        for cmd in ["run", "backfill", "check", "inspect", "init", "man"] {
            assert!(out.contains(cmd), "{shell}: {cmd}");
        }
    }
    c.exec(&["completions", "tcsh"]).code(1);
}

#[test]
fn man_prints_a_roff_page_of_the_command() {
    let out = Case::new().exec(&["man"]).code(0).stdout();
    assert!(
        out.starts_with(".ie") || out.contains(".TH tangoe-ingest"),
        "{out}"
    );
    assert!(out.contains(".SH"), "{out}");
    assert!(out.contains("tangoe\\-ingest"), "{out}");
    assert!(out.contains("inspect"), "{out}");
}

#[test]
fn every_command_help_shows_an_example() {
    let c = Case::new();
    for cmd in [
        "run",
        "backfill",
        "status",
        "deliver",
        "retry",
        "hostkey",
        "check",
        "inspect",
        "init",
        "completions",
        "man",
    ] {
        let out = c.exec(&[cmd, "--help"]).code(0).stdout();
        assert!(out.contains("Example"), "{cmd} --help:\n{out}");
    }
}
