//! Hostile input: files that expand to far more than they weigh (XLSX bombs, a 50 MB CSV
//! line, a tail of NUL bytes) and bytes that are not the text they claim to be. Each file
//! is built here, small on disk; each run is the real binary under a memory guard (its
//! address space capped, so a reader that holds what a file expands to is killed), beside
//! a good report that must still be processed.

use std::io::Write;

use crate::support::{Case, Ran, csv, row};

/// The address space a guarded run may take. The reader keeps within it on every file
/// here; one that held a bomb's expansion (a 300 MB string, ten million strings) would not.
const GUARD: u64 = 256 << 20;

/// `run` under the memory guard.
fn run_guarded(c: &Case) -> Ran {
    c.memory_limit(GUARD).run()
}

/// A case with a good report (Activity `GOOD`) beside the hostile files, and `report`
/// keys added to the default `[report]` table.
fn case(report: &str) -> Case {
    let c = Case::new();
    c.config(&Case::default_config("").replace("[report]\n", &format!("[report]\n{report}\n")));
    c.report(
        "good_2026-11-01.csv",
        &[row("GOOD", "Ordered").at("2026-11-01T10:00:00Z")],
    );
    c
}

/// The Activities events were written for, in order.
fn ids(c: &Case) -> Vec<String> {
    c.events()
        .iter()
        .map(|e| e["activity_id"].as_str().unwrap().to_string())
        .collect()
}

/// The ledger's rejects: (file, row, column, reason).
fn rejects(c: &Case) -> Vec<(String, i64, String, String)> {
    c.ledger()
        .prepare("SELECT file, row, col, reason FROM rejects ORDER BY file, row")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Writes `n` bytes, `block` again and again (its last copy cut).
fn repeat(w: &mut dyn Write, block: &[u8], n: usize) {
    let big = block.repeat((1 << 20) / block.len() + 1);
    let mut left = n;
    while left > 0 {
        let k = left.min(big.len());
        w.write_all(&big[..k]).unwrap();
        left -= k;
    }
}

/// A workbook of one sheet: a header row, a row for Activity `X1`, then what `rows`
/// writes; its shared strings table holds what `strings` writes, inside `<sst {sst}>`.
/// Each part is deflated as a stream: the file stays small however much it inflates to.
fn workbook(
    sst: &str,
    strings: impl FnOnce(&mut dyn Write),
    rows: impl FnOnce(&mut dyn Write),
) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let ns = r#"xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main""#;
    let rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    let small = [
        (
            "[Content_Types].xml",
            r#"<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/></Types>"#.to_string(),
        ),
        (
            "_rels/.rels",
            format!(r#"<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#),
        ),
        (
            "xl/workbook.xml",
            format!(r#"<workbook {ns} xmlns:r="{rel}"><sheets><sheet name="Report" sheetId="1" r:id="rId1"/></sheets></workbook>"#),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            format!(r#"<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{rel}/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#),
        ),
    ];
    for (name, text) in small {
        z.start_file(name, opts).unwrap();
        z.write_all(text.as_bytes()).unwrap();
    }
    z.start_file("xl/sharedStrings.xml", opts).unwrap();
    write!(z, "<sst {ns} {sst}>").unwrap();
    strings(&mut z);
    z.write_all(b"</sst>").unwrap();
    z.start_file("xl/worksheets/sheet1.xml", opts).unwrap();
    let cell = |r: &str, v: &str| format!(r#"<c r="{r}" t="inlineStr"><is><t>{v}</t></is></c>"#);
    write!(
        z,
        r#"<worksheet {ns}><sheetData><row r="1">{}{}</row><row r="2">{}{}</row>"#,
        cell("A1", "Activity ID"),
        cell("B1", "Status"),
        cell("A2", "X1"),
        cell("B2", "Ordered"),
    )
    .unwrap();
    rows(&mut z);
    z.write_all(b"</sheetData></worksheet>").unwrap();
    z.finish().unwrap().into_inner()
}

fn nothing(_: &mut dyn Write) {}

/// One shared string of 300 MB (a 3 MB file): calamine would hold it whole, twice over.
#[test]
fn a_shared_string_of_300_mb_fails_its_workbook_within_the_memory_guard() {
    let c = case("");
    let bomb = workbook(
        "",
        |w| {
            w.write_all(b"<si><t>").unwrap();
            repeat(w, b"a", 300 << 20);
            w.write_all(b"</t></si>").unwrap();
        },
        nothing,
    );
    assert!(bomb.len() < 4 << 20, "{} bytes", bomb.len());
    c.file("drop/bomb_2026-11-01.xlsx", bomb);
    run_guarded(&c)
        .code(2)
        .says("bomb_2026-11-01.xlsx: xl/sharedStrings.xml: shared string 1 is longer than 1.0 MiB")
        .says("[report] max_cell = 1.0 MiB");
    assert_eq!(ids(&c), ["GOOD"]);
}

/// Ten million tiny shared strings, and a table declaring four billion (calamine reserves
/// room for as many as `uniqueCount` declares).
#[test]
fn millions_of_tiny_shared_strings_fail_their_workbook_within_the_memory_guard() {
    let c = case("");
    let tiny = b"<si><t>x</t></si>";
    c.file(
        "drop/tiny_2026-11-01.xlsx",
        workbook("", |w| repeat(w, tiny, tiny.len() * 10_000_000), nothing),
    );
    c.file(
        "drop/declared_2026-11-01.xlsx",
        workbook(
            r#"count="1" uniqueCount="4000000000""#,
            |w| repeat(w, tiny, tiny.len()),
            nothing,
        ),
    );
    run_guarded(&c)
        .code(2)
        .says("tiny_2026-11-01.xlsx: xl/sharedStrings.xml: the shared strings table holds more than 2,000,000 strings")
        .says("declared_2026-11-01.xlsx: xl/sharedStrings.xml: the shared strings table declares 4,000,000,000 strings (uniqueCount), more than 2,000,000")
        .says("[report] max_shared_strings = 2,000,000");
    assert_eq!(ids(&c), ["GOOD"]);
}

/// 300 MB of white space between two rows of a sheet: one text the XML parser would hold
/// whole; and a 10 MB cell, which Excel could not have written (32,767 characters at most).
#[test]
fn a_sheet_xml_bomb_and_a_10_mb_cell_fail_their_workbooks_within_the_memory_guard() {
    let c = case("");
    c.file(
        "drop/spaces_2026-11-01.xlsx",
        workbook("", nothing, |w| repeat(w, b" ", 300 << 20)),
    );
    c.file(
        "drop/cell_2026-11-01.xlsx",
        workbook("", nothing, |w| {
            w.write_all(br#"<row r="3"><c r="A3" t="inlineStr"><is><t>"#)
                .unwrap();
            repeat(w, b"0123456789", 10 << 20);
            w.write_all(b"</t></is></c></row>").unwrap();
        }),
    );
    run_guarded(&c)
        .code(2)
        .says("spaces_2026-11-01.xlsx: xl/worksheets/sheet1.xml: a value or tag in row 2 is longer than 1.0 MiB")
        .says("cell_2026-11-01.xlsx: xl/worksheets/sheet1.xml: a value or tag in row 3 is longer than 1.0 MiB")
        .says("[report] max_cell = 1.0 MiB");
    assert_eq!(ids(&c), ["GOOD"]);
}

/// The caps on a sheet's size and cells are kept as configured, and a workbook within
/// them is read.
#[test]
fn the_sheet_caps_are_the_configured_ones() {
    let c = case("max_sheet_size = \"1 MiB\"\nmax_cells = 1000");
    let cells = |n: usize| {
        move |w: &mut dyn Write| {
            for i in 0..n {
                write!(
                    w,
                    r#"<row r="{}"><c r="A{}"><v>1</v></c></row>"#,
                    i + 3,
                    i + 3
                )
                .unwrap();
            }
        }
    };
    c.file(
        "drop/cells_2026-11-01.xlsx",
        workbook("", nothing, cells(1000)),
    );
    c.file(
        "drop/within_2026-11-01.xlsx",
        workbook("", nothing, cells(990)),
    );
    c.file(
        "drop/rows_2026-11-01.xlsx",
        workbook("", nothing, |w| repeat(w, b"<row/>", 2 << 20)),
    );
    run_guarded(&c)
        .code(2)
        .says("cells_2026-11-01.xlsx: xl/worksheets/sheet1.xml: the sheet holds more than 1,000 cells")
        .says("[report] max_cells = 1,000")
        .says("rows_2026-11-01.xlsx: xl/worksheets/sheet1.xml inflates to more than 1.0 MiB")
        .says("[report] max_sheet_size = 1.0 MiB");
    assert_eq!(ids(&c), ["GOOD", "X1"]);
}

/// A 50 MB line: its row is rejected, naming the file, row and column; the rows after it
/// are read, and memory follows the cap, not the line.
#[test]
fn a_50_mb_csv_line_rejects_its_row_and_the_rows_after_it_are_read() {
    let c = case("");
    let mut report = csv(&[row("L1", "Ordered")]).into_bytes();
    report.extend_from_slice(b"L2,Ordered,,,,,");
    repeat(&mut report, b"Long Street ", 50 << 20);
    report.extend_from_slice(b",\n");
    report.extend_from_slice(row("L3", "Ordered").line().as_bytes());
    report.push(b'\n');
    c.file("drop/long_2026-11-01.csv", report);
    run_guarded(&c)
        .code(2)
        .says("[report] max_record = 16.0 MiB");
    assert_eq!(ids(&c), ["GOOD", "L1", "L3"]);
    let r = rejects(&c);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].0.as_str(), r[0].1, r[0].2.as_str()),
        ("long_2026-11-01.csv", 3, "Shipping Address")
    );
    assert!(r[0].3.starts_with("the row is 50.0 MiB long"), "{}", r[0].3);
}

/// A report whose tail is 20 MB of NUL bytes (a file padded with zeros after a crash): one
/// record to the end of the file, so the report fails; the good one beside it does not.
#[test]
fn a_csv_ending_in_20_mb_of_nul_bytes_fails_naming_max_record() {
    let c = case("");
    let mut report = csv(&[row("N1", "Ordered")]).into_bytes();
    report.resize(report.len() + (20 << 20), 0);
    c.file("drop/zeros_2026-11-01.csv", report);
    run_guarded(&c)
        .code(2)
        .says("zeros_2026-11-01.csv: cannot read the CSV: the record starting at line 3 runs to the end of the file")
        .says("[report] max_record = 16.0 MiB");
    assert_eq!(ids(&c), ["GOOD"]);
}

/// A UTF-8 report with one byte that is not UTF-8, and one NUL byte: only those rows are
/// rejected, each naming its column; every accented name around them is read as written.
/// A Windows-1252 export beside it (even with a pair of bytes that happens to be UTF-8)
/// is still read as Windows-1252.
#[test]
fn one_bad_byte_rejects_its_row_and_a_windows_1252_export_still_reads_as_one() {
    let c = case("");
    let mut utf8 = csv(&[
        row("U1", "Ordered").device("Zoë Müller"),
        row("U2", "Ordered").device("Ren_e"),
        row("U3", "Ordered").device("Dev_ice"),
        row("U4", "Ordered").device("Chloé Brontë"),
    ])
    .into_bytes();
    let at = |b: &[u8], pat: &[u8]| b.windows(pat.len()).position(|w| w == pat).unwrap();
    let p = at(&utf8, b"Ren_e") + 3;
    utf8[p] = 0xe9; // Windows-1252 "é" pasted into a UTF-8 file
    let p = at(&utf8, b"Dev_ice") + 3;
    utf8[p] = 0;
    c.file("drop/utf8_2026-11-01.csv", utf8);
    let mut cp1252 = csv(&[
        row("W1", "Ordered").device("Zo_ M_ller"),
        row("W2", "Ordered").device("Ã©"),
    ])
    .into_bytes();
    let p = at(&cp1252, b"Zo_ M_ller");
    cp1252[p + 2] = 0xeb;
    cp1252[p + 5] = 0xfc;
    let p = at(&cp1252, "Ã©".as_bytes());
    cp1252.splice(p..p + 4, [0xc3, 0xa9]); // "Ã©" in Windows-1252: valid UTF-8 ("é")
    c.file("drop/w_2026-11-01.csv", cp1252);
    run_guarded(&c)
        .code(2)
        .says("the file is UTF-8 but for 1 byte:")
        .says("read as Windows-1252");
    let devices: Vec<(String, String)> = c
        .events()
        .iter()
        .map(|e| {
            (
                e["activity_id"].as_str().unwrap().into(),
                e["device"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("GOOD", ""),
        ("U1", "Zoë Müller"),
        ("U4", "Chloé Brontë"),
        ("W1", "Zoë Müller"),
        ("W2", "Ã©"),
    ];
    assert_eq!(devices, want.map(|(a, b)| (a.to_string(), b.to_string())));
    let r = rejects(&c);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!((r[0].1, r[0].2.as_str()), (3, "Device"));
    assert!(
        r[0].3
            .starts_with("byte 0xE9 (character 4 of the value) is not UTF-8"),
        "{}",
        r[0].3
    );
    assert_eq!((r[1].1, r[1].2.as_str()), (4, "Device"));
    assert!(
        r[1].3.starts_with("a NUL byte (character 4 of the value)"),
        "{}",
        r[1].3
    );
}

/// `[report] encoding` overrides the guess: a UTF-8 file read as Windows-1252 when told
/// so, a Windows-1252 file read as UTF-8 (its accented rows rejected).
#[test]
fn the_encoding_key_overrides_the_guess() {
    let c = case("encoding = \"windows-1252\"");
    c.report("r_2026-11-02.csv", &[row("E1", "Ordered").device("Zoë")]);
    run_guarded(&c).code(0);
    assert_eq!(c.events()[1]["device"], "ZoÃ«");

    let c = case("encoding = \"utf-8\"");
    let mut cp1252 = csv(&[row("E2", "Ordered").device("Zo_"), row("E3", "Ordered")]).into_bytes();
    let p = cp1252.windows(3).position(|w| w == b"Zo_").unwrap();
    cp1252[p + 2] = 0xeb;
    c.file("drop/r_2026-11-02.csv", cp1252);
    run_guarded(&c)
        .code(2)
        .says("byte 0xEB (character 3 of the value) is not UTF-8");
    assert_eq!(ids(&c), ["GOOD", "E3"]);

    let c = case("encoding = \"latin-9\"");
    let _ = c.run().code(1).says("latin-9");
    let c = case("max_record = 0");
    let _ = c
        .run()
        .code(1)
        .says("[report] max_record must be more than 0");
    let c = case("max_cell = \"lots\"");
    let _ = c.run().code(1).says("max_cell");
}

/// The bad-input corpus: files cut short, empty, misnamed, or built to make an XML parser
/// fetch or expand what they do not hold. Each gets a message naming the file and what is
/// wrong with it (16,384 columns, and a header repeating one name 6,000 times, are read);
/// the good report beside them is processed, and nothing panics.
#[test]
fn each_file_of_the_bad_input_corpus_gets_its_own_message_and_the_good_report_goes_through() {
    let c = case("");
    c.file("drop/empty_2026-11-01.csv", "");
    c.file("drop/header_2026-11-01.csv", csv(&[]));
    let mut cut = csv(&[row("Q1", "Ordered")]);
    cut.push_str("Q2,Ordered,,,,,\"12 Main St");
    c.file("drop/cut_2026-11-01.csv", cut);
    let book = workbook("", nothing, nothing);
    c.file("drop/half_2026-11-01.xlsx", &book[..book.len() / 2]);
    c.file("drop/renamed_2026-11-01.xlsx", csv(&[row("R1", "Ordered")]));
    c.file("drop/zero_2026-11-01.xlsx", "");
    c.file("drop/xxe_2026-11-01.xlsx", workbook("", nothing, |w| {
        w.write_all(br#"<row r="3"><c r="A3" t="inlineStr"><is><t>X3</t></is></c><c r="B3" t="inlineStr"><is><t>&xxe;</t></is></c></row>"#).unwrap();
    }));
    crate::support::patch_zip(
        &c.path().join("drop/xxe_2026-11-01.xlsx"),
        "xl/worksheets/sheet1.xml",
        |x| {
            format!(
                "<?xml version=\"1.0\"?><!DOCTYPE worksheet [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{x}"
            )
        },
    );
    let wide: Vec<String> = (0..16_384 - 8).map(|i| format!("Extra {i}")).collect();
    let mut cols = csv(&[]).trim_end().to_string();
    cols.push(',');
    cols.push_str(&wide.join(","));
    cols.push('\n');
    cols.push_str(&row("W1", "Ordered").line());
    cols.push_str(&",".repeat(wide.len()));
    cols.push('\n');
    c.file("drop/wide_2026-11-01.csv", cols);
    let mut repeated = csv(&[]).trim_end().to_string();
    repeated.push_str(&",Dup".repeat(6_000));
    repeated.push('\n');
    repeated.push_str(&row("D1", "Ordered").line());
    repeated.push_str(&",".repeat(6_000));
    repeated.push('\n');
    c.file("drop/repeated_2026-11-01.csv", repeated);
    let _ = run_guarded(&c).code(2)
        .says("empty_2026-11-01.csv: the report holds no rows at all (empty file?)")
        .says("cut_2026-11-01.csv [2026-11-01] processed")
        .says("rejected row 3, column \"Cost Center\": the row has 7 cells where the header has 8 and the file ends inside it: the file was cut short")
        .says("half_2026-11-01.xlsx: not a readable XLSX workbook (truncated or corrupt?)")
        .says("header_2026-11-01.csv [2026-11-01] processed\n  rows 0,")
        .says("renamed_2026-11-01.xlsx: the file is named like an XLSX workbook but holds text (a CSV saved under an .xlsx name?)")
        .says("zero_2026-11-01.xlsx: the file is named like an XLSX workbook but is empty (0 bytes)")
        .says("wide_2026-11-01.csv [2026-11-01] processed")
        .says("repeated_2026-11-01.csv [2026-11-01] processed")
        .says("xxe_2026-11-01.xlsx: cannot read the sheet \"Report\": Xml error: at 0..0: unrecognized entity `&xxe;`")
        .never_says("root:")
        .never_says("panicked");
    let mut ids = ids(&c);
    ids.sort();
    assert_eq!(ids, ["D1", "GOOD", "Q1", "W1"]);
}
