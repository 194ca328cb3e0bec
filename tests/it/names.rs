//! File names in a local drop folder: which are taken (hidden ones are not), and how a name
//! that is not UTF-8 is read and shown.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::support::{Case, csv, row, t};

/// A file name that is not UTF-8 is taken: read by its real name, and known in the ledger,
/// the logs and the summary by its name with each byte that is not UTF-8 as `\xNN`.
#[test]
fn a_local_name_that_is_not_utf8_is_taken_and_shown_with_its_bytes_escaped() {
    let c = Case::new();
    let raw = OsStr::from_bytes(b"r_2026-11-01_\xe9.csv");
    std::fs::write(
        c.path().join("drop").join(raw),
        csv(&[row("A1", "Ordered").at("2026-11-01T10:00:00Z")]),
    )
    .unwrap();
    let shown = "r_2026-11-01_\\xe9.csv";
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .prints(&format!("{shown} [2026-11-01] processed"))
        .logs(shown)
        .never_says("not valid UTF-8")
        .summary();
    assert_eq!(s["reports"][0]["name"], shown);
    assert_eq!(s["reports"][0]["status"], "processed");
    assert_eq!(
        c.ledger_column::<String>("SELECT name FROM reports"),
        [shown]
    );
    assert_eq!(c.transitions(), [t("A1", "", "ordered")]);

    // The next run knows it: not read again.
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    assert_eq!(s["already_processed"], 1);
    assert_eq!(c.events().len(), 1);
}

/// A name that starts with one dot is hidden, a report being copied in under a temporary
/// name: never taken. One that starts with two dots is an ordinary name: taken.
#[test]
fn a_hidden_name_is_left_and_one_starting_with_two_dots_is_taken() {
    let c = Case::new();
    c.report(
        ".r_2026-11-01.csv",
        &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.report(
        "..dots_2026-11-01.csv",
        &[row("A2", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c.run().code(0);
    assert_eq!(
        c.ledger_column::<String>("SELECT name FROM reports"),
        ["..dots_2026-11-01.csv"]
    );
    assert_eq!(c.transitions(), [t("A2", "", "ordered")]);
}
