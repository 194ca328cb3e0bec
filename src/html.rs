//! The dry run's audit as one self-contained HTML page (`run --dry-run --html PATH`): per
//! report its counts and rejected rows with their reasons, the transitions as a bar chart,
//! and the first requests each HTTP sink would send.
//!
//! Guarantees: the page loads nothing (inline CSS and SVG, no script, no link out); every
//! text from a report, a file name or a server is HTML-escaped; request previews come
//! redacted (see `sink::summary`); the file is written whole (a temporary file renamed)
//! with mode 0600, as it holds personal data.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::summary::{ReportStatus, ReportSummary, Summary};

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}h3{font-size:1em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.num{text-align:right}
.failed{color:#a00}.muted{color:#666}
pre{background:#f7f7f7;padding:.6em;overflow:auto}
svg text{font:12px system-ui,sans-serif}
";

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The page for a dry run's summary.
pub(crate) fn render(s: &Summary) -> String {
    let mut o = String::new();
    let title = format!("tangoe-ingest {} dry run", s.mode);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let _ = writeln!(
        o,
        "<p>Nothing was written: this is what the {} would do. {} reports, {} rows, \
         {} rejected, {} events would be emitted.</p>",
        esc(&s.mode),
        s.reports.len(),
        s.rows,
        s.rejected,
        s.events
    );
    if let Some(why) = s.why() {
        let _ = writeln!(
            o,
            "<p class=\"failed\">exit {}: {}</p>",
            s.exit_code,
            esc(&why)
        );
    }
    reports_table(&mut o, &s.reports);
    transitions_charts(&mut o, &s.reports);
    for r in s.reports.iter().filter(|r| !r.rejects.is_empty()) {
        rejects_table(&mut o, r);
    }
    requests(&mut o, s);
    o.push_str("</body></html>\n");
    o
}

fn reports_table(o: &mut String, reports: &[ReportSummary]) {
    o.push_str(
        "<h2>Reports</h2>\n<table><tr><th>report</th><th>date</th><th>status</th>\
         <th>rows</th><th>accepted</th><th>rejected</th><th>skipped</th><th>unchanged</th>\
         <th>stale</th><th>events</th><th>notes</th></tr>\n",
    );
    for r in reports {
        let class = if r.status == ReportStatus::Failed {
            " class=\"failed\""
        } else {
            ""
        };
        let mut notes: Vec<String> = r.notes.clone();
        if let Some(e) = &r.error {
            notes.insert(0, e.clone());
        }
        if let Some(d) = &r.duplicate_of {
            notes.insert(0, format!("same content as {d}"));
        }
        let _ = writeln!(
            o,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&r.name),
            esc(&r.report_date),
            r.status.as_str(),
            r.rows,
            r.accepted,
            r.rejected,
            r.skipped,
            r.unchanged,
            r.stale,
            r.events,
            esc(&notes.join("; "))
        );
    }
    o.push_str("</table>\n");
}

/// The events by transition over all reports, then per report, as bar charts.
fn transitions_charts(o: &mut String, reports: &[ReportSummary]) {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for r in reports {
        for (t, n) in &r.transitions {
            *by.entry(t).or_default() += n;
        }
    }
    o.push_str("<h2>Events by transition</h2>\n");
    if by.is_empty() {
        o.push_str("<p class=\"muted\">No event would be emitted.</p>\n");
        return;
    }
    bar_chart(o, &by);
    if reports.iter().filter(|r| !r.transitions.is_empty()).count() > 1 {
        for r in reports.iter().filter(|r| !r.transitions.is_empty()) {
            let _ = writeln!(o, "<h3>{}</h3>", esc(&r.name));
            let by: BTreeMap<&str, u64> = r
                .transitions
                .iter()
                .map(|(t, n)| (t.as_str(), *n))
                .collect();
            bar_chart(o, &by);
        }
    }
}

/// Counts by label as horizontal bars (inline SVG).
fn bar_chart(o: &mut String, by: &BTreeMap<&str, u64>) {
    let max = by.values().copied().max().unwrap_or(1).max(1);
    let (label_w, bar_w, row_h) = (220.0, 400.0, 22.0);
    let height = row_h * by.len() as f64;
    let _ = writeln!(
        o,
        "<svg role=\"img\" aria-label=\"events by transition\" width=\"{}\" height=\"{height}\">",
        label_w + bar_w + 80.0
    );
    for (i, (t, n)) in by.iter().enumerate() {
        let y = row_h * i as f64;
        let w = bar_w * (*n as f64) / (max as f64);
        let _ = writeln!(
            o,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"{label_w}\" y=\"{}\" width=\"{w:.1}\" \
             height=\"{}\" fill=\"#4a7ebb\"></rect><text x=\"{:.1}\" y=\"{}\">{n}</text>",
            y + 15.0,
            esc(t),
            y + 3.0,
            row_h - 6.0,
            label_w + w + 6.0,
            y + 15.0
        );
    }
    o.push_str("</svg>\n");
}

fn rejects_table(o: &mut String, r: &ReportSummary) {
    let _ = writeln!(
        o,
        "<h2>Rejected rows of {}</h2>\n<table><tr><th>row</th><th>column</th><th>reason</th></tr>",
        esc(&r.name)
    );
    for rej in &r.rejects {
        let _ = writeln!(
            o,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            rej.row,
            esc(&rej.column),
            esc(&rej.reason)
        );
    }
    o.push_str("</table>\n");
    let more = r.rejected.saturating_sub(r.rejects.len() as u64);
    if more > 0 {
        let _ = writeln!(
            o,
            "<p class=\"muted\">… and {more} more rejected rows (the real run stores them \
             all: <code>tangoe-ingest rejects</code>).</p>"
        );
    }
}

/// The first requests each HTTP sink would send, secrets already redacted.
fn requests(o: &mut String, s: &Summary) {
    for k in &s.sinks {
        if k.previews.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "<h2>Sink {}: the first requests of {} pending events</h2>",
            esc(&k.name),
            k.pending
        );
        for p in &k.previews {
            let mut text = format!("{} {}\n", p.method, p.url);
            for h in &p.headers {
                let _ = writeln!(text, "{h}");
            }
            if let Some(b) = &p.body {
                text.push('\n');
                text.push_str(&serde_json::to_string_pretty(b).unwrap_or_default());
            }
            let _ = writeln!(o, "<pre>{}</pre>", esc(&text));
        }
    }
}

/// Writes the page to `path` whole, owner-only (0600).
pub(crate) fn write(path: &Path, page: &str) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".audit-")
            .tempfile_in(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        std::io::Write::write_all(&mut tmp, page.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().with_context(|| format!("cannot write the HTML audit {}", path.display()))
}
