//! `inspect FILE...`: audits local report files against the schema, with no configuration
//! and no ledger — the same reading a run does, and nothing else.
//!
//! Guarantees: nothing is written anywhere. For each file it says how it was read (format,
//! encoding, delimiter or sheet, header row), which column feeds which schema field and
//! which columns no field names, the row counts, *every* rejected row with its row, column
//! and reason (never the row's raw text: it holds personal data), and the Activities by
//! state. Exit 0 when every file reads with no rejected row, 2 when a file fails or rejects
//! a row (a data problem, as for `run`), 1 when the schema or the time zone is wrong.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::cli::InspectArgs;
use crate::printable::printable;
use crate::report::cell::DateContext;
use crate::report::schema::Schema;
use crate::report::{self, Batch, FileLayout, Format, Outcome};
use crate::state::State;
use crate::summary::{EXIT_DATA, EXIT_OK};
use crate::timestamp::rfc3339;

/// The audit of one file (its JSON is `--json`'s).
#[derive(Debug, Default, Serialize)]
struct Audit {
    file: String,
    format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delimiter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sheet: Option<String>,
    header_row: u64,
    columns: Vec<Column>,
    /// Columns no schema field names (their values travel as `extra`).
    unmapped: Vec<String>,
    /// Schema fields the file has no column for.
    missing_fields: Vec<String>,
    rows: u64,
    accepted: u64,
    rejected: u64,
    skipped: u64,
    warnings: u64,
    /// Accepted rows by state, in the states' order.
    states: indexmap::IndexMap<String, u64>,
    rejects: Vec<Rejected>,
    notes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    activities: Vec<Activity>,
    /// Why the file could not be read as a whole, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Column {
    column: usize,
    header: String,
    field: Option<String>,
}

#[derive(Debug, Serialize)]
struct Rejected {
    row: u64,
    column: String,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Activity {
    row: u64,
    activity_id: String,
    state: String,
    updated_at: String,
    itsm_number: String,
}

/// Audits every file; prints the audits as text or JSON.
pub(crate) fn run(args: &InspectArgs) -> Result<i32> {
    let schema = match &args.schema {
        Some(p) => Schema::load(p)?,
        None => Schema::bundled()?,
    };
    let tz: chrono_tz::Tz = args.timezone.parse().map_err(|_| {
        anyhow!(
            "--timezone {:?} is not an IANA time zone (e.g. \"America/New_York\")",
            args.timezone
        )
    })?;
    let mut audits = Vec::new();
    for path in &args.files {
        audits.push(audit(path, &schema, tz, args.rows));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&audits)?);
    } else {
        for a in &audits {
            print!("{}", render(a));
        }
    }
    let clean = audits.iter().all(|a| a.error.is_none() && a.rejected == 0);
    Ok(if clean { EXIT_OK } else { EXIT_DATA })
}

/// Reads one file as a run would, keeping what the audit shows.
fn audit(path: &Path, schema: &Schema, tz: chrono_tz::Tz, show: usize) -> Audit {
    let mut a = Audit {
        file: path.display().to_string(),
        states: State::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect(),
        ..Audit::default()
    };
    let read = (|| -> Result<report::Summary> {
        a.format = match Format::detect(path)? {
            Format::Csv => "CSV".into(),
            Format::Xlsx => "XLSX".into(),
            Format::JsonLines => "JSON Lines".into(),
        };
        let ctx = DateContext::new(schema, tz)?;
        let mut on_batch = |b: Batch| {
            take(&mut a, &b, show);
            Ok(())
        };
        report::read(path, schema, ctx, &mut on_batch)
    })();
    match read {
        Ok(summary) => {
            a.rows = summary.counts.rows;
            a.accepted = summary.counts.accepted;
            a.rejected = summary.counts.rejected;
            a.skipped = summary.counts.skipped;
            a.warnings = summary.counts.warnings;
            a.notes = summary.notes;
            describe(&mut a, summary.layout, schema);
        }
        Err(e) => a.error = Some(format!("{e:#}")),
    }
    a
}

/// Adds one batch's outcomes: states, rejects, the first `show` Activities.
fn take(a: &mut Audit, b: &Batch, show: usize) {
    for item in b.items() {
        match item {
            Outcome::Accepted(r) => {
                *a.states.entry(r.state.as_str().to_string()).or_default() += 1;
                if a.activities.len() < show {
                    a.activities.push(Activity {
                        row: r.number,
                        activity_id: r.id.to_string(),
                        state: r.state.as_str().to_string(),
                        updated_at: r.updated_at.map(rfc3339).unwrap_or_default(),
                        itsm_number: r.itsm_number.to_string(),
                    });
                }
            }
            Outcome::Rejected(r) => a.rejects.push(Rejected {
                row: r.row,
                column: r.column.clone(),
                reason: r.reason.clone(),
            }),
            Outcome::Warning(_) => {}
        }
    }
}

/// Fills in the file's layout: how it was read, its columns, what the schema misses.
fn describe(a: &mut Audit, layout: FileLayout, schema: &Schema) {
    a.encoding = layout.encoding.map(str::to_string);
    a.delimiter = layout.delimiter.map(|d| match d {
        b'\t' => "tab".to_string(),
        d => (d as char).to_string(),
    });
    a.sheet = layout.sheet;
    a.header_row = layout.header_row;
    for (i, (header, field)) in layout.columns.into_iter().enumerate() {
        if field.is_none() {
            a.unmapped.push(header.clone());
        }
        a.columns.push(Column {
            column: i + 1,
            header,
            field,
        });
    }
    a.missing_fields = schema
        .fields
        .iter()
        .filter(|f| !a.columns.iter().any(|c| c.field.as_ref() == Some(&f.name)))
        .map(|f| f.name.clone())
        .collect();
}

/// The audit as a person reads it.
fn render(a: &Audit) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", printable(&a.file));
    if let Some(e) = &a.error {
        let _ = writeln!(o, "  ✗ cannot be read: {}", printable(e));
        return o;
    }
    let how = match (&a.encoding, &a.delimiter, &a.sheet) {
        (Some(enc), Some(d), _) => format!("{}, {enc}, delimiter {d:?}", a.format),
        (_, _, Some(sheet)) => format!("{}, sheet {:?}", a.format, printable(sheet)),
        _ => a.format.clone(),
    };
    let _ = writeln!(o, "  format     {how}");
    let _ = writeln!(o, "  header     row {}", a.header_row);
    let width = a
        .columns
        .iter()
        .map(|c| printable(&c.header).chars().count())
        .max()
        .unwrap_or(0);
    for (i, c) in a.columns.iter().enumerate() {
        let label = if i == 0 { "columns" } else { "" };
        let field = c.field.as_deref().unwrap_or("(no field: kept as extra)");
        let header = printable(&c.header);
        let _ = writeln!(o, "  {label:<10} {header:<width$} → {field}");
    }
    if !a.missing_fields.is_empty() {
        let _ = writeln!(o, "  no column  {}", a.missing_fields.join(", "));
    }
    let _ = writeln!(
        o,
        "  rows       {}: accepted {}, rejected {}, skipped {}, warnings {}",
        a.rows, a.accepted, a.rejected, a.skipped, a.warnings
    );
    let states: Vec<String> = State::ALL
        .iter()
        .map(|s| format!("{} {}", s.as_str(), a.states[s.as_str()]))
        .collect();
    let _ = writeln!(o, "  states     {}", states.join(", "));
    for r in &a.rejects {
        let _ = writeln!(
            o,
            "  rejected   row {}, column {:?}: {}",
            r.row,
            printable(&r.column),
            printable(&r.reason)
        );
    }
    for n in &a.notes {
        let _ = writeln!(o, "  note       {}", printable(n));
    }
    if !a.activities.is_empty() {
        o.push_str(&table(&a.activities));
    }
    o
}

/// The first Activities as an aligned table.
fn table(activities: &[Activity]) -> String {
    let head = ["row", "activity_id", "state", "updated_at", "itsm_number"];
    let rows: Vec<[String; 5]> = activities
        .iter()
        .map(|r| {
            [
                r.row.to_string(),
                printable(&r.activity_id).to_string(),
                r.state.clone(),
                r.updated_at.clone(),
                printable(&r.itsm_number).to_string(),
            ]
        })
        .collect();
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("    {}\n", padded.join("  ").trim_end())
    };
    let mut o = line(&head);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        o.push_str(&line(&cells));
    }
    o
}
