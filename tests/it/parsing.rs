//! Reading real-world reports: preambles, footers, encodings, XLSX quirks, bad rows.

use crate::support::{Case, HEADER, X, patch_zip, row, write_xlsx};

/// Events without `report` (the file name) and `row` (a CSV line and a spreadsheet row
/// differ where a cell spans lines).
fn events_without_report(c: &Case) -> Vec<serde_json::Value> {
    c.events()
        .into_iter()
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("report");
            e.as_object_mut().unwrap().remove("row");
            e
        })
        .collect()
}

/// The ledger's rejects: (row, column, reason), by row.
fn rejects(c: &Case) -> Vec<(i64, String, String)> {
    c.ledger()
        .prepare("SELECT row, col, reason FROM rejects ORDER BY row")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn report_missing_a_required_column_fails_alone() {
    let c = Case::new();
    c.file(
        "drop/a_2026-11-01.csv",
        "Activity ID,Remote Activity ID,Device\nA1,RITM1,Pixel\n",
    );
    c.report(
        "b_2026-11-01.csv",
        &[row("B1", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    // No header row at all: the first row is data, and its values are not shown.
    c.file(
        "drop/c_2026-11-01.csv",
        "C1,Ordered,Jane Roe,jane.roe@example.com\nC2,Completed,John Doe,john@example.com\n",
    );
    let ran = c.exec(&["run", "--summary-json", "s.json"]).code(2);
    let s = ran.summary();
    let third = &s["reports"][2];
    assert_eq!(
        (&third["name"], &third["status"]),
        (&"c_2026-11-01.csv".into(), &"failed".into())
    );
    let err = third["error"].as_str().unwrap();
    assert!(
        err.contains("no header row found") && err.contains(r#""Activity ID" (activity_id)"#),
        "{err}"
    );
    let everything = format!("{}{s}", ran.text());
    assert!(!everything.contains("jane.roe"), "{everything}");
    let a = &s["reports"][0];
    assert_eq!(a["name"], "a_2026-11-01.csv");
    assert_eq!(a["status"], "failed");
    let err = a["error"].as_str().unwrap();
    assert!(err.contains("missing required column(s): state"), "{err}");
    assert!(
        err.contains("headers found: [Activity ID, Remote Activity ID, Device]"),
        "{err}"
    );
    assert_eq!(s["reports"][1]["status"], "processed");
    assert_eq!(c.transitions().len(), 1);
    // The failed report is not marked processed: it is tried again next run.
    let processed: i64 = c.ledger_value(
        "SELECT COUNT(*) FROM reports WHERE name='a_2026-11-01.csv' AND status='processed'",
        [],
    );
    assert_eq!(processed, 0);
    c.exec(&["run", "--summary-json", "s2.json"]).code(2);
    assert_eq!(c.summary("s2.json")["reports"][0]["status"], "failed");
}

#[test]
fn rows_that_do_not_line_up_with_the_header_are_rejected_not_guessed() {
    let c = Case::new();
    // Line 2 opens a quote it never closes: the next quote (line 3's) ends the cell, so A2
    // would be swallowed into A1's address and A2's Cost Center taken as A1's. Line 4 has a
    // value past the header; line 5 only empty ones (trailing delimiters are fine); lines
    // 6-7 are a real two-line address with commas; line 8 leaves out its trailing empty
    // cells (as Excel writes such rows: read as empty, with a warning); line 9 is cut short,
    // the end of a truncated file.
    let csv = format!(
        "{HEADER}\n\
         A1,Ordered,RITM1,2026-11-01T10:00:00Z,5551234567,Pixel 9,\"1 Main St, Apt 4,CC-1\n\
         A2,Ordered,RITM2,2026-11-01T10:00:00Z,,,\"2 Elm St\",CC-2\n\
         A3,Completed,RITM3,2026-11-01T11:00:00Z,,,,CC-3,stray\n\
         A4,Ordered,RITM4,2026-11-01T10:00:00Z,,,,CC-4,,\n\
         A5,Completed,RITM5,2026-11-01T12:00:00Z,,,\"5 Oak St\nSpringfield, IL, 62701\",CC-5\n\
         A7,Cancelled,RITM7,2026-11-01T12:00:00Z\n\
         A6,Ordered,RIT"
    );
    c.file("drop/r_2026-11-01.csv", csv);
    let ran = c.exec(&["-q", "run", "--summary-json", "s.json"]).code(2);
    // Under -q too, each reject's warning names its file.
    let err = ran.stderr();
    let warned: Vec<&str> = err.lines().filter(|l| l.contains("row rejected")).collect();
    assert_eq!(warned.len(), 3, "{err}");
    assert!(
        warned.iter().all(|l| l.contains("file=r_2026-11-01.csv")),
        "{err}"
    );
    let s = ran.summary();
    let r = &s["reports"][0];
    assert_eq!(r["status"], "processed");
    assert_eq!(
        (r["accepted"].as_i64(), r["rejected"].as_i64()),
        (Some(3), Some(3)),
        "{r}"
    );
    assert_eq!(r["warnings"], 1, "{r}");
    let rejects = rejects(&c);
    assert_eq!(
        (rejects[0].0, rejects[0].1.as_str()),
        (2, "Shipping Address")
    );
    // The reason names the swallowed row by its ID and state; its other values (personal
    // data) are only in the reject's raw row, never in summaries or logs.
    assert!(
        rejects[0].2.contains("reads as a row of its own")
            && rejects[0]
                .2
                .contains(r#"Activity ID "A2", state "Ordered""#)
            && !rejects[0].2.contains("RITM2"),
        "{rejects:?}"
    );
    let raw: String = c.ledger_value("SELECT raw FROM rejects WHERE row = 2", []);
    assert!(raw.contains("A2,Ordered,RITM2"), "{raw}");
    assert_eq!((rejects[1].0, rejects[1].1.as_str()), (4, "column 9"));
    assert!(
        rejects[1].2.contains("past the header's 8 columns"),
        "{rejects:?}"
    );
    assert_eq!((rejects[2].0, rejects[2].1.as_str()), (9, "Last Updated"));
    assert!(
        rejects[2]
            .2
            .contains("3 cells where the header has 8 and the file ends inside it"),
        "{rejects:?}"
    );
    let ev = c.events();
    let ids: Vec<&str> = ev
        .iter()
        .map(|e| e["activity_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["A4", "A5", "A7"]);
    assert_eq!(ev[2]["extra"]["Cost Center"], "");
    assert_eq!(
        ev[1]["shipping_address"],
        "5 Oak St\nSpringfield, IL, 62701"
    );
    assert_eq!(ev[1]["extra"]["Cost Center"], "CC-5");
}

#[test]
fn notes_in_a_narrow_report_that_look_like_a_row_are_not_taken_for_one() {
    let c = Case::new();
    c.file(
        "drop/r_2026-11-01.csv",
        "Activity ID,Status,Notes\nB1,Completed,\"Shipped today\nTracking 1Z999,Completed\"\n",
    );
    c.run().code(0);
    let ev = c.events();
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0]
            .to_string()
            .contains(r#""Shipped today\nTracking 1Z999,Completed""#),
        "{}",
        ev[0]
    );
}

#[test]
fn two_columns_naming_one_field_follow_the_schemas_alias_order_and_the_same_header_twice_fails() {
    let c = Case::new();
    // "Activity ID" comes before "Ticket Number" in activity_id's aliases: it holds the
    // field wherever it stands, and the other column is kept as an extra.
    c.file(
        "drop/a_2026-11-01.csv",
        "Ticket Number,Activity ID,Status,Last Updated\nRITM1,A1,Ordered,2026-11-01T10:00:00Z\n",
    );
    // Two "Status" columns that disagree: which one is right cannot be told.
    c.file(
        "drop/b_2026-11-01.csv",
        "Activity ID,Status,Last Updated,Status\nB1,Ordered,2026-11-01T10:00:00Z,Completed\n",
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .summary();
    assert_eq!(s["reports"][0]["status"], "processed", "{s}");
    let ev = c.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["activity_id"], "A1");
    assert_eq!(ev[0]["extra"]["Ticket Number"], "RITM1");
    let b = &s["reports"][1];
    assert_eq!(b["status"], "failed");
    let err = b["error"].as_str().unwrap();
    assert!(
        err.contains("\"Status\" (column 2) and \"Status\" (column 4) both name the field state"),
        "{err}"
    );
}

#[test]
fn bad_rows_are_rejected_with_their_line_and_column_while_good_rows_go_through() {
    let c = Case::new();
    let csv = format!(
        "\u{feff}Tangoe Mobile - Activity Report\r\nFilters: Status in (all)\r\n\r\n{HEADER}\r\n\
         A1,Ordered,RITM1,2026-11-01T10:00:00Z,5551234567,Pixel 9,\"1 Main St\nApt 2\nSpringfield\",CC-1\r\n\
         A2,Shipped?,,2026-11-01T10:00:00Z,,,,\r\n\
         A3,Completed,,31/12/2026,,,,\r\n\
         ,Completed,,2026-11-01T10:00:00Z,,,,\r\n\
         A4,Cancelled,,11/01/2026 3:15 PM,,,,\r\n\
         {HEADER}\r\n\
         A5,In Progress,,,,,,\r\n\
         \r\n\
         Generated by Tangoe Mobile on 11/01/2026\r\n"
    );
    c.file("drop/r_2026-11-01.csv", csv);
    c.exec(&["run", "--summary-json", "s.json"]).code(2);
    let r = &c.summary("s.json")["reports"][0];
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["rejected"], 3);
    // repeated header, ignored state, blank line and footer
    assert_eq!(r["skipped"], 4, "{r}");
    let rejects = rejects(&c);
    // Lines as a person counts them: A1 spans lines 5-7.
    assert_eq!(rejects[0].0, 8);
    assert_eq!(rejects[0].1, "Status");
    assert!(
        rejects[0].2.contains("unknown state \"Shipped?\""),
        "{rejects:?}"
    );
    assert_eq!((rejects[1].0, rejects[1].1.as_str()), (9, "Last Updated"));
    assert!(rejects[1].2.contains("31/12/2026"));
    assert_eq!(
        (rejects[2].0, rejects[2].1.as_str(), rejects[2].2.as_str()),
        (10, "Activity ID", "empty activity_id")
    );
    let raw: String = c.ledger_value("SELECT raw FROM rejects WHERE row = 8", []);
    assert!(raw.starts_with("A2,Shipped?"), "{raw}");
    let ev = c.events();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["shipping_address"], "1 Main St\nApt 2\nSpringfield");
    assert_eq!(ev[0]["extra"]["Cost Center"], "CC-1");
    assert_eq!(ev[1]["activity_id"], "A4");
    assert_eq!(ev[1]["updated_at"], "2026-11-01T15:15:00Z");
}

#[test]
fn windows_1252_semicolon_report_with_decimal_commas() {
    let c = Case::new();
    let mut bytes = b"Activity ID;Status;User Name;Plan Costs\r\n".to_vec();
    bytes.extend_from_slice(b"A1;Ordered;Zo\xeb M\xfcller;45,00 \x80\r\n");
    c.file("drop/r_2026-11-01.csv", bytes);
    c.exec(&["run", "--summary-json", "s.json"]).code(0);
    let ev = c.events();
    assert_eq!(ev[0]["user_name"], "Zoë Müller");
    assert_eq!(ev[0]["plan_cost"], "45,00 €");
    let notes = c.summary("s.json")["reports"][0]["notes"].to_string();
    assert!(notes.contains("Windows-1252"), "{notes}");
}

/// Windows-1252 bytes that happen to make valid UTF-8 only across a field boundary ("É" at
/// the end of one field, "€" at the start of the next): still not UTF-8.
#[test]
fn windows_1252_that_is_utf8_only_across_a_delimiter() {
    let c = Case::new();
    let mut bytes = b"Activity ID,Status,Device,Shipping Address\r\n".to_vec();
    bytes.extend_from_slice(b"A1,Ordered,Jos\xc9,\x80 Street 1\r\n");
    c.file("drop/r_2026-11-01.csv", bytes);
    c.exec(&["run", "--summary-json", "s.json"]).code(0);
    let ev = c.events();
    assert_eq!(ev[0]["device"], "JosÉ");
    assert_eq!(ev[0]["shipping_address"], "€ Street 1");
    let notes = c.summary("s.json")["reports"][0]["notes"].to_string();
    assert!(notes.contains("Windows-1252"), "{notes}");
}

#[test]
fn headers_match_despite_case_spacing_nbsp_and_punctuation() {
    let c = Case::new();
    c.file("drop/r_2026-11-01.csv", "\u{feff}ACTIVITY_ID,  status ,Phone\u{a0}Number,Ship-To Address\nA1,canceled,555 123 4567,Here\n");
    c.run().code(0);
    let ev = c.events();
    assert_eq!(ev[0]["state"], "cancelled");
    assert_eq!(ev[0]["phone_number"], "555 123 4567");
    assert_eq!(ev[0]["shipping_address"], "Here");
}

#[test]
fn empty_and_truncated_files_fail_clearly_and_alone() {
    let c = Case::new();
    c.file("drop/empty_2026-11-01.csv", "");
    c.file("drop/trunc_2026-11-01.xlsx", b"PK\x03\x04garbage");
    c.report("good_2026-11-01.csv", &[row("A1", "Ordered")]);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .summary();
    let by_name = |n: &str| {
        s["reports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("empty_2026-11-01.csv")["status"], "failed");
    assert!(
        by_name("empty_2026-11-01.csv")["error"]
            .as_str()
            .unwrap()
            .contains("no rows")
    );
    assert_eq!(by_name("trunc_2026-11-01.xlsx")["status"], "failed");
    // Said once: calamine's error and its source say the same.
    let err = by_name("trunc_2026-11-01.xlsx")["error"]
        .as_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = err.split(": ").collect();
    assert!(
        parts.windows(2).all(|w| w[0] != w[1]) && err.matches("EOCD").count() <= 1,
        "{err}"
    );
    assert_eq!(by_name("good_2026-11-01.csv")["status"], "processed");
    assert_eq!(c.events().len(), 1);
}

#[test]
fn an_xlsx_without_a_header_says_so_even_when_its_sheet_breaks_further_down() {
    // The rows are checked on one thread while calamine reads on another: the first error
    // in row order is the one reported, as when both ran one after the other.
    let c = Case::new();
    let path = c.path().join("drop/noheader_2026-11-01.xlsx");
    let rows: Vec<Vec<X>> = (0..80).map(|_| vec![X::S("junk"), X::N(1.0)]).collect();
    write_xlsx(&path, "Sheet1", &rows);
    patch_zip(&path, "xl/worksheets/sheet1.xml", |xml| {
        assert!(xml.contains("<c r=\"A80\" t=\"s\">"), "{xml}");
        xml.replace("<c r=\"A80\" t=\"s\">", "<c r=\"A80\" t=\"zz\">")
    });
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .summary();
    let r = &s["reports"][0];
    assert_eq!(r["status"], "failed", "{s}");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("no header row found"), "{err}");
    assert!(!err.contains("cannot read the sheet"), "{err}");
}

fn sample_rows() -> (String, Vec<Vec<X>>) {
    let csv = format!(
        "Activity Report\n{HEADER}\n\
         A1,Ordered,RITM1,2026-11-01T10:00:00Z,5551234567,Pixel 9,\"1 Main St\nSpringfield\",CC-1\n\
         A2,On Back Order,RITM2,2026-11-02T08:30:00Z,5559876543,iPhone 17,,CC-2\n\
         A3,Canceled,,2026-11-03T23:59:59Z,,,,\n"
    );
    let header: Vec<X> = HEADER
        .split(',')
        .map(|h| X::S(Box::leak(h.to_string().into_boxed_str())))
        .collect();
    let rows = vec![
        vec![X::S("Activity Report")],
        header,
        vec![
            X::S("A1"),
            X::S("Ordered"),
            X::S("RITM1"),
            X::D(2026, 11, 1, 10, 0, 0),
            X::N(5551234567.0),
            X::S("Pixel 9"),
            X::S("1 Main St\nSpringfield"),
            X::S("CC-1"),
        ],
        vec![
            X::S("A2"),
            X::S("On Back Order"),
            X::S("RITM2"),
            X::D(2026, 11, 2, 8, 30, 0),
            X::N(5559876543.0),
            X::S("iPhone 17"),
            X::Blank,
            X::S("CC-2"),
        ],
        vec![
            X::S("A3"),
            X::S("Canceled"),
            X::Blank,
            X::D(2026, 11, 3, 23, 59, 59),
        ],
    ];
    (csv, rows)
}

#[test]
fn the_same_data_as_csv_and_as_xlsx_gives_identical_events() {
    let (csv, rows) = sample_rows();
    let a = Case::new();
    a.file("drop/r_2026-11-03.csv", csv).run().code(0);
    let b = Case::new();
    write_xlsx(
        &b.path().join("drop/r_2026-11-03.xlsx"),
        "Activities",
        &rows,
    );
    b.run().code(0);
    let (ea, eb) = (events_without_report(&a), events_without_report(&b));
    assert_eq!(ea.len(), 3);
    assert_eq!(ea, eb);
    // Phone numbers stored as XLSX numbers come out as digits.
    assert_eq!(eb[0]["phone_number"], "5551234567");
    assert_eq!(eb[2]["updated_at"], "2026-11-03T23:59:59Z");
}

#[test]
fn xlsx_1904_date_system_is_honoured() {
    let c = Case::new();
    // 2026-11-02 10:00 is serial 46328.41667 in the 1900 system, 1462 days less in 1904.
    let serial_1904 = 46328.0 - 1462.0 + 10.0 / 24.0;
    let path = c.path().join("drop/r_2026-11-02.xlsx");
    write_xlsx(
        &path,
        "Sheet1",
        &[
            vec![
                X::S("Activity ID"),
                X::S("Status"),
                X::S("Last Updated"),
                X::S("Submitted At"),
            ],
            vec![
                X::S("A1"),
                X::S("Ordered"),
                X::Serial(serial_1904),
                X::N(serial_1904 - 1.0),
            ],
        ],
    );
    patch_zip(&path, "xl/workbook.xml", |xml| {
        let xml = xml.replace("<workbookPr/>", "<workbookPr date1904=\"1\"/>");
        if xml.contains("date1904") {
            xml
        } else {
            xml.replacen("<workbookPr ", "<workbookPr date1904=\"1\" ", 1)
        }
    });
    c.run().code(0);
    let ev = c.events();
    assert_eq!(ev[0]["updated_at"], "2026-11-02T10:00:00Z");
    // A plain number in a date column is a serial too, in the same date system.
    assert_eq!(ev[0]["submitted_at"], "2026-11-01T10:00:00Z");
}

#[test]
fn xlsx_quirks_lossy_numbers_error_cells_and_huge_declared_dimensions() {
    let c = Case::new();
    let path = c.path().join("drop/r_2026-11-02.xlsx");
    write_xlsx(
        &path,
        "Sheet1",
        &[
            vec![
                X::S("Activity ID"),
                X::S("Status"),
                X::S("Phone Number"),
                X::S("Account Number"),
                X::S("Device"),
            ],
            vec![
                X::S("A1"),
                X::S("Ordered"),
                X::S("5.55123E+09"),
                X::N(1234567890123456789.0),
                X::S("#N/A"),
            ],
            vec![
                X::N(1002.0),
                X::S("Completed"),
                X::N(5551234567.0),
                X::S("00123"),
                X::S("Pixel"),
            ],
        ],
    );
    patch_zip(&path, "xl/worksheets/sheet1.xml", |xml| {
        // A sheet that declares a million columns and rows.
        let start = xml.find("<dimension ref=\"").unwrap();
        let end = start + xml[start..].find("/>").unwrap() + 2;
        let mut x = xml.clone();
        x.replace_range(start..end, "<dimension ref=\"A1:XFD1048576\"/>");
        // An error cell where the device is.
        x.replace(
            "<c r=\"E2\" t=\"s\"><v>",
            "<c r=\"E2\" t=\"e\"><v>#N/A</v></c><c r=\"Z2\" t=\"s\"><v>",
        )
    });
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(0)
        .summary();
    let r = &s["reports"][0];
    assert_eq!(r["accepted"], 2, "{s}");
    assert_eq!(r["warnings"], 3, "{r}");
    // Allocating for the declared 16,384 × 1,048,576 cells would need terabytes: the run
    // succeeding is the proof that memory follows the cells present.
    let ev = c.events();
    assert_eq!(ev[0]["device"], "");
    assert_eq!(ev[1]["activity_id"], "1002");
    assert_eq!(ev[1]["phone_number"], "5551234567");
    assert_eq!(ev[1]["account_number"], "00123");
}

/// Formulas saved without their computed value (openpyxl and other writers that do not
/// calculate): their cells are unknown, and the reject or warning says why, rather than
/// "empty".
#[test]
fn formulas_without_a_computed_value_are_named_as_such() {
    let c = Case::new();
    let path = c.path().join("drop/r_2026-11-02.xlsx");
    let row = |id: &'static str, state: &'static str, device: &'static str| {
        vec![X::S(id), X::S(state), X::S(device), X::S("x")]
    };
    write_xlsx(
        &path,
        "Sheet1",
        &[
            vec![
                X::S("Activity ID"),
                X::S("Status"),
                X::S("Device"),
                X::S("Note"),
            ],
            row("A1", "Ordered", "Pixel"),
            row("A2", "Ordered", "Pixel"),
            row("A3", "Completed", "Pixel"),
            row("A4", "Ordered", "Pixel"),
        ],
    );
    patch_zip(&path, "xl/worksheets/sheet1.xml", |xml| {
        let mut x = xml;
        for (cell, with) in [
            // No value at all; an empty one (openpyxl); computed ones, kept (the empty
            // string is how Excel saves a formula whose value is "").
            ("B2", r#"<c r="B2"><f>IF(1=1,"Completed","x")</f></c>"#),
            ("A3", r#"<c r="A3"><f>"A"&amp;3</f><v /></c>"#),
            ("C4", r#"<c r="C4"><f>UPPER("pixel")</f></c>"#),
            (
                "D5",
                r#"<c r="D5" t="str"><f>IF(1=1,"","x")</f><v></v></c>"#,
            ),
            (
                "C5",
                r#"<c r="C5" t="str"><f>UPPER("pixel")</f><v>PIXEL</v></c>"#,
            ),
        ] {
            let start = x.find(&format!("<c r=\"{cell}\"")).unwrap();
            let end = start + x[start..].find("</c>").unwrap() + 4;
            x.replace_range(start..end, with);
        }
        x
    });
    c.exec(&["run", "--summary-json", "s.json"]).code(2);
    assert_eq!(c.summary("s.json")["reports"][0]["warnings"], 1);
    let rejects = rejects(&c);
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert_eq!((rejects[0].0, rejects[0].1.as_str()), (2, "Status"));
    assert_eq!((rejects[1].0, rejects[1].1.as_str()), (3, "Activity ID"));
    for r in &rejects {
        assert!(
            r.2.contains("a formula saved without its computed value"),
            "{rejects:?}"
        );
    }
    let ev = c.events();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        (&ev[0]["activity_id"], &ev[0]["device"]),
        (&"A3".into(), &"".into())
    );
    assert_eq!(ev[1]["device"], "PIXEL");
    let err = c
        .exec(&[
            "backfill",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-02",
            "--dry-run",
        ])
        .stderr();
    assert!(
        err.contains("a formula saved without its computed value") && err.contains("column=Device"),
        "the device cell's warning: {err}"
    );
}

#[test]
fn excel_unicode_text_utf16_with_tabs_is_read() {
    let c = Case::new();
    let text = "Activity ID\tStatus\tUser Name\r\nA1\tOn Back Order\tZoë Müller\r\nA2\tCompleted\t李雷\r\n";
    for (name, bytes) in [
        ("le_2026-11-01.txt", {
            let mut b = vec![0xff, 0xfe];
            b.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
            b
        }),
        ("be_2026-11-02.txt", {
            let mut b = vec![0xfe, 0xff];
            b.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
            b
        }),
    ] {
        c.file(&format!("drop/{name}"), bytes);
    }
    c.config(&Case::default_config("").replace(
        "patterns = [\"*.csv\", \"*.xlsx\"]",
        "patterns = [\"*.txt\"]",
    ));
    c.exec(&["run", "--summary-json", "s.json"]).code(0);
    let ev = c.events();
    assert_eq!(ev.len(), 2, "the second file repeats the first's states");
    assert_eq!(ev[0]["user_name"], "Zoë Müller");
    assert_eq!(ev[0]["state"], "on_back_order");
    assert_eq!(ev[1]["user_name"], "李雷");
    assert!(
        c.summary("s.json")["reports"][0]["notes"]
            .to_string()
            .contains("UTF-16LE")
    );
}

#[test]
fn utf16_without_a_bom_is_told_by_its_zero_bytes() {
    let c = Case::new();
    let text =
        "Activity ID\tStatus\tUser Name\r\nA1\tOrdered\tZoë Müller\r\nA2\tCompleted\tLi Lei\r\n";
    c.file(
        "drop/le_2026-11-01.txt",
        text.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>(),
    );
    c.file(
        "drop/be_2026-11-02.txt",
        text.replace("A2\tCompleted", "A2\tCancelled")
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect::<Vec<u8>>(),
    );
    c.config(&Case::default_config("").replace(
        "patterns = [\"*.csv\", \"*.xlsx\"]",
        "patterns = [\"*.txt\"]",
    ));
    c.exec(&["run", "--summary-json", "s.json"]).code(0);
    let ev = c.events();
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert_eq!(ev[0]["user_name"], "Zoë Müller");
    assert_eq!(
        (ev[2]["activity_id"].as_str(), ev[2]["state"].as_str()),
        (Some("A2"), Some("cancelled"))
    );
    let s = c.summary("s.json");
    assert!(s["reports"][0]["notes"].to_string().contains("UTF-16LE"));
    assert!(s["reports"][1]["notes"].to_string().contains("UTF-16BE"));
}

#[test]
fn two_exports_joined_into_one_file_are_read_as_one() {
    let c = Case::new();
    let part = |rows: &str| {
        format!(
            "\u{feff}Tangoe Mobile - Activity Report\r\nRun date: 11/01/2026\r\n\r\n{HEADER}\r\n{rows}"
        )
    };
    let csv = part("A1,Ordered,,2026-11-01T10:00:00Z,,,,\r\n")
        + &part("A2,Completed,,2026-11-01T11:00:00Z,,,,\r\n");
    c.file("drop/r_2026-11-01.csv", csv);
    c.exec(&["run", "--summary-json", "s.json"]).code(0);
    let r = &c.summary("s.json")["reports"][0];
    assert_eq!(
        (r["accepted"].as_i64(), r["rejected"].as_i64()),
        (Some(2), Some(0)),
        "{r}"
    );
    assert_eq!(c.transitions().len(), 2);
}

#[test]
fn a_value_under_a_column_with_no_header_is_a_warning_not_silently_dropped() {
    let c = Case::new();
    c.file(
        "drop/r_2026-11-01.csv",
        "Activity ID,Status,,Device,\nA1,Ordered,lost value,Pixel,\nA2,Ordered,,Pixel,\n",
    );
    c.exec(&["run", "--summary-json", "s.json"]).code(0);
    let r = &c.summary("s.json")["reports"][0];
    assert_eq!(
        (r["accepted"].as_i64(), r["warnings"].as_i64()),
        (Some(2), Some(1)),
        "{r}"
    );
    assert_eq!(c.events()[0]["device"], "Pixel");
}

#[test]
fn excel_sep_line_names_the_delimiter() {
    let c = Case::new();
    // Commas inside values would fool a guess; Excel's `sep=` line settles it.
    c.file(
        "drop/r_2026-11-01.csv",
        "sep=;\r\nActivity ID;Status;Shipping Address\r\nA1;Ordered;1 Main St, Springfield, IL\r\n",
    );
    c.run().code(0);
    let ev = c.events();
    assert_eq!(ev[0]["shipping_address"], "1 Main St, Springfield, IL");
}

/// With several bad values in a row, the reject names the first bad column in the schema's
/// order, whichever the tool checks first.
#[test]
fn a_reject_names_the_first_bad_column_in_schema_order() {
    let c = Case::new();
    let bundled = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas/tangoe-activity-report.toml"),
    )
    .unwrap();
    // The same schema with submitted_at moved in front of updated_at.
    let start = bundled.find("[fields.updated_at]").unwrap();
    let mid = bundled.find("[fields.submitted_at]").unwrap();
    let end = bundled.find("[fields.assigned_to]").unwrap();
    let reordered = format!(
        "{}{}{}{}",
        &bundled[..start],
        &bundled[mid..end],
        &bundled[start..mid],
        &bundled[end..]
    );
    c.file("schema.toml", reordered);
    c.config(
        &Case::default_config("").replace("[report]\n", "[report]\nschema = \"schema.toml\"\n"),
    );
    c.file(
        "drop/r_2026-11-01.csv",
        "Activity ID,Status,Submitted Date,Last Updated\nA1,Ordered,not a date,nor this\nA2,Ordered,,nor this\n",
    );
    c.run().code(2);
    let cols: Vec<(i64, String)> = c
        .ledger()
        .prepare("SELECT row, col FROM rejects ORDER BY row")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        cols,
        vec![
            (2, "Submitted Date".to_string()),
            (3, "Last Updated".to_string())
        ]
    );
}

/// A long report, read in many batches: CRLF, LF and lone-CR line ends, multi-line cells
/// with every kind of break, blank lines, and one Windows-1252 byte near the end (so the
/// file is read again as Windows-1252 after most of it was read as UTF-8). Every rejected
/// row is named by the line an editor shows.
#[test]
fn a_long_report_with_every_line_end_keeps_exact_line_numbers() {
    let c = Case::new();
    let mut bytes = format!("{HEADER}\r\n").into_bytes();
    let mut line = 2u64; // the line the next record starts on
    let mut bad_lines = Vec::new();
    let rows = 12_000;
    for i in 0..rows {
        let end: &[u8] = match i % 3 {
            0 => b"\r\n",
            1 => b"\n",
            _ => b"\r",
        };
        let (cell, cell_breaks): (&str, u64) = match i % 5 {
            0 => ("\"1 Main St\r\nApt 2\rSpringfield\nUSA\"", 3),
            1 => ("\"one line\"", 0),
            _ => ("Here", 0),
        };
        if i % 997 == 5 {
            bytes.extend_from_slice(format!("B{i},Shipped?,,,,,{cell},").as_bytes());
            bad_lines.push(line);
        } else {
            bytes.extend_from_slice(format!("A{i},Ordered,,,,,{cell},").as_bytes());
        }
        if i == rows - 100 {
            bytes.extend_from_slice(b"Caf\xe9"); // Windows-1252 "é"
        }
        bytes.extend_from_slice(end);
        line += 1 + cell_breaks;
        if i % 1500 == 7 {
            bytes.extend_from_slice(b"\r\n\n"); // two blank lines
            line += 2;
        }
    }
    c.file("drop/r_2026-11-01.csv", bytes);
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .summary();
    let notes = s["reports"][0]["notes"].to_string();
    assert!(notes.contains("Windows-1252"), "{notes}");
    let got: Vec<u64> = c
        .ledger_column::<i64>("SELECT row FROM rejects ORDER BY row")
        .into_iter()
        .map(|r| r as u64)
        .collect();
    assert_eq!(got, bad_lines);
    let ev = c.events();
    assert_eq!(ev.len(), rows - bad_lines.len());
    let cafe = ev
        .iter()
        .find(|e| e["activity_id"] == format!("A{}", rows - 100))
        .unwrap();
    assert_eq!(cafe["extra"]["Cost Center"], "Café");
}

/// How long a malformed header may take before the test calls it a hang (a guard, not a
/// timing: it takes well under a second).
const HANG: std::time::Duration = std::time::Duration::from_secs(30);

/// A header of 100,000 columns, one unknown name repeated: matched and named in linear
/// time; the report is processed, its extra columns named apart.
#[test]
fn a_header_of_100000_repeats_of_one_unknown_name_is_read() {
    let c = Case::new();
    let n = 100_000;
    let mut text = String::from("Activity ID,Status");
    text.push_str(&",Note".repeat(n));
    text.push_str("\nA1,Ordered");
    text.push_str(&",x".repeat(n));
    text.push('\n');
    c.file("drop/r_2026-11-01.csv", text);
    c.timeout(HANG)
        .exec(&["run", "--summary-json", "s.json"])
        .code(0);
    let e = &c.events()[0];
    let extra = e["extra"].as_object().unwrap();
    assert_eq!(extra.len(), n);
    assert_eq!(extra["Note"], "x");
    assert_eq!(extra["Note (100000)"], "x");
}

/// A report repeating one field's header 3,000 times fails as a whole, saying which
/// columns name the same field; the run goes on.
#[test]
fn a_report_of_3000_repeats_of_one_header_fails_with_a_clear_message() {
    let c = Case::new();
    let mut text = String::from("Activity ID");
    text.push_str(&",Status".repeat(3_000));
    text.push_str("\nA1");
    text.push_str(&",Ordered".repeat(3_000));
    text.push('\n');
    c.file("drop/r_2026-11-01.csv", text);
    c.report(
        "r_2026-11-02.csv",
        &[row("A2", "Ordered").at("2026-11-02T10:00:00Z")],
    );
    let s = c
        .timeout(HANG)
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .summary();
    assert_eq!(s["reports"][0]["status"], "failed");
    let error = s["reports"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("\"Status\" (column 2) and \"Status\" (column 3) both name the field state"),
        "{error}"
    );
    assert_eq!(s["reports"][1]["status"], "processed");
    assert_eq!(c.transitions().len(), 1);
}

/// An "Activity ID" of thousands of characters (a cell from another column) rejects its
/// row alone, saying why.
#[test]
fn an_activity_id_longer_than_255_bytes_rejects_its_row() {
    let c = Case::new();
    let long = "A".repeat(300);
    c.report(
        "r_2026-11-01.csv",
        &[
            row(&long, "Ordered").at("2026-11-01T10:00:00Z"),
            row("A2", "Ordered").at("2026-11-01T10:00:00Z"),
        ],
    );
    c.run().code(2);
    let r = rejects(&c);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, 2);
    assert!(
        r[0].2.contains("an activity_id of 300 bytes (at most 255)"),
        "{r:?}"
    );
    assert_eq!(c.transitions().len(), 1);
}

/// A quote left open to the end of the file: the reject names the line its row starts on
/// (the file's last line break is the cell's, not a row's end), with LF and CRLF endings.
#[test]
fn a_quote_left_open_to_the_end_names_the_line_its_row_starts_on() {
    for eol in ["\n", "\r\n"] {
        let c = Case::new();
        let lines = [
            "Activity ID,Status,Remote Activity ID,Last Updated,Phone Number,Device",
            "A1,Ordered,,2026-11-01T10:00:00Z,,x",
            "A2,Ordered,,2026-11-01T10:00:00Z,,\"Pixel 9",
            "A3,Ordered,,2026-11-01T10:00:00Z,,y",
            "A4,Ordered,,2026-11-01T10:00:00Z,,z",
        ];
        let mut text = lines.join(eol);
        text.push_str(eol);
        c.file("drop/r_2026-11-01.csv", text);
        c.run().code(2);
        let r = rejects(&c);
        assert_eq!(r.len(), 1, "{eol:?}: {r:?}");
        assert_eq!(r[0].0, 3, "{eol:?}: {r:?}");
        assert!(r[0].2.contains("a quote left open"), "{r:?}");
    }
}

/// A rejected row keeps at most about a kilobyte of its raw text, saying it was cut: one
/// bad report cannot swell the ledger.
#[test]
fn a_rejects_raw_text_is_cut_to_a_kilobyte_saying_so() {
    let c = Case::new();
    let big = "é".repeat(20_000);
    c.report(
        "r_2026-11-01.csv",
        &[row("A1", "Shipped?")
            .at("2026-11-01T10:00:00Z")
            .device(&big)],
    );
    c.run().code(2);
    let raw: String = c.ledger_value("SELECT raw FROM rejects", []);
    assert!(raw.len() < 1_100, "{}", raw.len());
    assert!(raw.starts_with("A1,Shipped?,"), "{raw}");
    assert!(raw.ends_with("bytes in all]"), "{raw}");
}

/// A password-protected workbook (`fixtures/encrypted.xlsx`, made by msoffcrypto-tool from
/// a two-row sheet) fails alone, saying it is encrypted and how to save it.
#[test]
fn an_encrypted_workbook_fails_saying_it_is_encrypted() {
    let c = Case::new();
    let encrypted = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/fixtures/encrypted.xlsx"
    ))
    .unwrap();
    c.file("drop/r_2026-11-01.xlsx", encrypted);
    c.report(
        "r_2026-11-02.csv",
        &[row("A2", "Ordered").at("2026-11-02T10:00:00Z")],
    );
    let s = c
        .exec(&["run", "--summary-json", "s.json"])
        .code(2)
        .summary();
    let error = s["reports"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("the workbook is encrypted (password-protected)"),
        "{error}"
    );
    assert!(error.contains("without a password"), "{error}");
    assert_eq!(s["reports"][1]["status"], "processed");
}
