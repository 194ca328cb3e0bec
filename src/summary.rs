//! The summary of a command: what became of each report and each sink, and the exit code
//! that follows. One structure, printed for a person ([`render`]) and written as JSON
//! (`--summary-json`): the two never disagree.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDate;
use serde::Serialize;

use crate::ledger::ReportCounts;
use crate::printable::printable;
use crate::sink::summary::SinkSummary;

/// Exit codes: the contract with cron and the operator. When several problems are found,
/// the lowest code wins; `problems` in the summary lists them all.
pub const EXIT_OK: i32 = 0;
/// The command could not run (configuration, ledger, source unreachable...).
pub const EXIT_FAILED: i32 = 1;
/// Rows or reports were rejected: someone should look at a report.
pub const EXIT_DATA: i32 = 2;
/// Events are pending or failed at a sink: the ITSM side.
pub const EXIT_DELIVERY: i32 = 3;
/// No new report for longer than `[source] expect_new_within`.
pub const EXIT_SILENT: i32 = 4;
/// Another run holds the ledger: try later.
pub const EXIT_LOCKED: i32 = 75;

/// A reason for a non-zero exit code.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `data`, `delivery` or `source`.
    pub kind: &'static str,
    /// The exit code this problem gives (the lowest of all wins).
    pub exit_code: i32,
    pub message: String,
}

impl Problem {
    fn data(message: String) -> Problem {
        Problem {
            kind: "data",
            exit_code: EXIT_DATA,
            message,
        }
    }

    fn delivery(message: String) -> Problem {
        Problem {
            kind: "delivery",
            exit_code: EXIT_DELIVERY,
            message,
        }
    }
}

/// `n thing` or `n things`.
fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// What became of a listed report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    /// Read and committed to the ledger.
    Processed,
    /// Its content was processed before (under this name or another): skipped.
    Duplicate,
    /// It could not be read whole; nothing of it was committed. Tried again next run.
    Failed,
    /// Left for a later run (still being uploaded, or gone from the server meanwhile).
    Deferred,
    /// It matches the patterns but cannot be taken (its name, or what the source's listing
    /// lacks; `error` says why): never read. Counted as a report that failed.
    Skipped,
    /// A failed report an operator acknowledged (`reports ignore`): not read, not a problem.
    Ignored,
}

impl ReportStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Processed => "processed",
            ReportStatus::Duplicate => "duplicate",
            ReportStatus::Failed => "failed",
            ReportStatus::Deferred => "deferred",
            ReportStatus::Skipped => "skipped",
            ReportStatus::Ignored => "ignored",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectSummary {
    pub row: u64,
    pub column: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    pub name: String,
    pub status: ReportStatus,
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub skipped: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub events: u64,
    /// Rows folded into an earlier row of the same Activity in this report (rule 5).
    pub merged: u64,
    pub warnings: u64,
    pub report_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    /// Events by transition, e.g. "ordered → completed": 12.
    pub transitions: BTreeMap<String, u64>,
    /// The first rejected rows (row, column, reason; never the row's contents).
    pub rejects: Vec<RejectSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ReportSummary {
    pub(crate) fn set_counts(&mut self, c: &ReportCounts) {
        self.rows = c.rows;
        self.accepted = c.accepted;
        self.rejected = c.rejected;
        self.skipped = c.skipped;
        self.unchanged = c.unchanged;
        self.stale = c.stale;
        self.events = c.events;
        self.warnings = c.warnings;
    }

    pub(crate) fn new(name: &str, status: ReportStatus, date: NaiveDate) -> Self {
        ReportSummary {
            name: name.to_string(),
            status,
            rows: 0,
            accepted: 0,
            rejected: 0,
            skipped: 0,
            unchanged: 0,
            stale: 0,
            events: 0,
            merged: 0,
            warnings: 0,
            report_date: date.to_string(),
            sha256: None,
            error: None,
            duplicate_of: None,
            transitions: BTreeMap::new(),
            rejects: Vec::new(),
            notes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: String,
    pub dry_run: bool,
    pub rows: u64,
    pub rejected: u64,
    pub events: u64,
    pub delivered: u64,
    pub pending: u64,
    pub failed_reports: u64,
    /// Files in the source that match the patterns but cannot be taken (status `skipped`).
    pub skipped_reports: u64,
    /// Files still in the source that an earlier run processed (same name, size, mtime):
    /// not read again and not listed in `reports`.
    pub already_processed: u64,
    pub reports: Vec<ReportSummary>,
    /// Reports an earlier run committed before it was interrupted (killed), so that its
    /// summary never came out: reported once, here. Not in this run's totals.
    #[serde(rename = "interrupted_reports", skip_serializing_if = "Vec::is_empty")]
    pub interrupted: Vec<ReportSummary>,
    pub sinks: Vec<SinkSummary>,
    /// Why the exit code is not 0: every problem found, the lowest code first.
    pub problems: Vec<Problem>,
    pub exit_code: i32,
    /// The run's number in the ledger (`status`, `rejects --run`); none for a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    /// Set when the source sent nothing new for too long (see [`Summary::source_silent`]).
    #[serde(skip)]
    silent: Option<String>,
}

impl Summary {
    /// An empty summary for a command in `mode`, with a line for each sink.
    pub(crate) fn new<'a>(
        mode: &str,
        dry_run: bool,
        sinks: impl Iterator<Item = &'a str>,
    ) -> Summary {
        Summary {
            mode: mode.to_string(),
            dry_run,
            rows: 0,
            rejected: 0,
            events: 0,
            delivered: 0,
            pending: 0,
            failed_reports: 0,
            skipped_reports: 0,
            already_processed: 0,
            reports: Vec::new(),
            interrupted: Vec::new(),
            sinks: sinks
                .map(|name| SinkSummary {
                    name: name.to_string(),
                    ..Default::default()
                })
                .collect(),
            problems: Vec::new(),
            exit_code: EXIT_OK,
            run: None,
            silent: None,
        }
    }

    /// Records that no new report arrived for too long (`[source] expect_new_within`).
    pub(crate) fn source_silent(&mut self, message: String) {
        self.silent = Some(message);
    }

    /// Adds a report's counts to the totals and lists it.
    pub(crate) fn add_report(&mut self, rs: ReportSummary) {
        self.rows += rs.rows;
        self.rejected += rs.rejected;
        self.events += rs.events;
        match rs.status {
            ReportStatus::Failed => self.failed_reports += 1,
            ReportStatus::Skipped => self.skipped_reports += 1,
            _ => {}
        }
        self.reports.push(rs);
    }

    /// Why the exit code is not 0, in one line (`None` when it is 0).
    pub(crate) fn why(&self) -> Option<String> {
        if self.exit_code == EXIT_OK {
            return None;
        }
        let mut why: Vec<&str> = self.problems.iter().map(|p| p.message.as_str()).collect();
        match self.exit_code {
            130 => why.insert(
                0,
                "stopped by SIGINT; the report being read is read again next run",
            ),
            143 => why.insert(
                0,
                "stopped by SIGTERM; the report being read is read again next run",
            ),
            _ => {}
        }
        Some(why.join("; "))
    }

    /// Lists the problems found and sets the exit code from them: the lowest problem's
    /// code, else 0; a stop request (SIGTERM, SIGINT) gives 128 + the signal. A dry run
    /// delivers nothing by design: its pending events are the audit, not a problem.
    pub(crate) fn set_exit_code(&mut self) {
        let mut problems = Vec::new();
        if self.failed_reports > 0 {
            problems.push(Problem::data(format!(
                "{} failed",
                count(self.failed_reports, "report")
            )));
        }
        if self.skipped_reports > 0 {
            problems.push(Problem::data(format!(
                "{} could not be taken",
                count(self.skipped_reports, "file")
            )));
        }
        if self.rejected > 0 {
            problems.push(Problem::data(format!(
                "{} rejected",
                count(self.rejected, "row")
            )));
        }
        let earlier: u64 = self.interrupted.iter().map(|r| r.rejected).sum();
        if earlier > 0 {
            problems.push(Problem::data(format!(
                "{} rejected in the reports of an interrupted run",
                count(earlier, "row")
            )));
        }
        for s in &self.sinks {
            if let Some(e) = &s.error {
                problems.push(Problem::delivery(format!("sink {}: {e}", s.name)));
            }
            if s.incomplete > 0 {
                problems.push(Problem::data(format!(
                    "sink {}: {} not sent, a field the ITSM needs is empty (see skipped)",
                    s.name,
                    count(s.incomplete, "event")
                )));
            }
            if s.failed > 0 {
                problems.push(Problem::delivery(format!(
                    "sink {}: {} failed for good (`tangoe-ingest retry` sends them again)",
                    s.name,
                    count(s.failed, "event")
                )));
            }
        }
        if self.pending > 0 && !self.dry_run {
            problems.push(Problem::delivery(format!(
                "{} not delivered yet",
                count(self.pending, "event")
            )));
        }
        if let Some(message) = &self.silent {
            problems.push(Problem {
                kind: "source",
                exit_code: EXIT_SILENT,
                message: message.clone(),
            });
        }
        problems.sort_by_key(|p| p.exit_code);
        self.exit_code = match crate::interrupt::requested() {
            Some(code) => code,
            None => problems.first().map_or(EXIT_OK, |p| p.exit_code),
        };
        self.problems = problems;
    }
}

/// The human summary; for a dry run, the audit of what would happen.
pub(crate) fn render(s: &Summary) -> String {
    let mut o = String::new();
    if s.dry_run {
        let _ = writeln!(
            o,
            "DRY RUN: nothing was written; this is what the {} would do.",
            s.mode
        );
    }
    if !s.interrupted.is_empty() {
        let _ = writeln!(
            o,
            "An earlier run was interrupted before it could report these reports it processed:"
        );
    }
    for (i, r) in s.interrupted.iter().chain(&s.reports).enumerate() {
        if i == s.interrupted.len() && i > 0 {
            let _ = writeln!(o, "This run:");
        }
        render_report(&mut o, r, s.dry_run);
        if r.rejected > r.rejects.len() as u64 {
            let more = r.rejected - r.rejects.len() as u64;
            let _ = writeln!(
                o,
                "  … {more} more rejected rows: {}",
                where_rejects(s, r, i)
            );
        }
    }
    let mut by_transition: std::collections::BTreeMap<&str, u64> = Default::default();
    for r in &s.reports {
        for (t, n) in &r.transitions {
            *by_transition.entry(t).or_default() += n;
        }
    }
    if s.already_processed > 0 {
        let _ = writeln!(
            o,
            "{} files in the source were processed by earlier runs",
            s.already_processed
        );
    }
    let _ = writeln!(
        o,
        "Total: {} reports, {} rows, {} rejected, {} events{}",
        s.reports.len(),
        s.rows,
        s.rejected,
        s.events,
        if s.dry_run {
            " would be emitted".to_string()
        } else {
            format!(", {} delivered, {} pending", s.delivered, s.pending)
        }
    );
    for (t, n) in by_transition {
        let _ = writeln!(o, "  {t}: {n}");
    }
    for k in &s.sinks {
        if let Some(e) = &k.error {
            let _ = writeln!(o, "sink {}: delivery failed: {}", k.name, printable(e));
        }
        for f in &k.files {
            let _ = writeln!(o, "sink {}: wrote {f}", k.name);
        }
        render_http_sink(&mut o, s, k);
    }
    if let Some(why) = s.why() {
        let _ = writeln!(o, "exit {}: {}", s.exit_code, printable(&why));
    }
    o
}

/// The HTTP sinks' part of the summary: outcomes, failures, and a dry run's requests.
fn render_http_sink(o: &mut String, s: &Summary, k: &SinkSummary) {
    if k.failed > 0 || k.skipped > 0 || (s.mode == "deliver" && !s.dry_run) {
        let _ = writeln!(
            o,
            "sink {}: delivered {}, failed {}, skipped {}, pending {}",
            k.name, k.delivered, k.failed, k.skipped, k.pending
        );
    }
    for (reason, n) in &k.skip_reasons {
        let _ = writeln!(o, "  skipped {n}: {}", printable(reason));
    }
    for f in &k.failures {
        let _ = writeln!(
            o,
            "  failed event {} (activity {}): {}",
            f.event_id,
            printable(&f.activity_id),
            printable(&f.error)
        );
    }
    if k.failed > k.failures.len() as u64 {
        let _ = writeln!(
            o,
            "  ... and {} more failed events (see `tangoe-ingest status`)",
            k.failed - k.failures.len() as u64
        );
    }
    if !k.previews.is_empty() {
        let _ = writeln!(
            o,
            "sink {}: would send requests for {} pending events; the first requests:",
            k.name, k.pending
        );
        for p in &k.previews {
            let _ = writeln!(o, "  {} {}", p.method, p.url);
            for h in &p.headers {
                let _ = writeln!(o, "    {h}");
            }
            if let Some(b) = &p.body {
                let text = serde_json::to_string_pretty(b).unwrap_or_default();
                for line in text.lines() {
                    let _ = writeln!(o, "    {line}");
                }
            }
        }
    }
}

/// Where all of a report's rejected rows are: the `rejects` command that lists them.
fn where_rejects(s: &Summary, r: &ReportSummary, i: usize) -> String {
    if s.dry_run {
        return "a dry run stores none; the real run stores them all for `tangoe-ingest rejects`"
            .into();
    }
    let name = shell_word(&printable(&r.name));
    match s.run.filter(|_| i >= s.interrupted.len()) {
        Some(run) => format!("tangoe-ingest rejects --run {run} --report {name}"),
        None => format!("tangoe-ingest rejects --report {name}"),
    }
}

/// `word` as one shell word: as it is when plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-+,:@%/".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// One report's part of the summary: its counts, notes, first rejects and transitions.
fn render_report(o: &mut String, r: &ReportSummary, dry_run: bool) {
    let _ = writeln!(
        o,
        "{} [{}] {}",
        printable(&r.name),
        r.report_date,
        r.status.as_str()
    );
    match r.status {
        ReportStatus::Duplicate => {
            if let Some(d) = &r.duplicate_of {
                let _ = writeln!(o, "  same content as {}, already processed", printable(d));
            }
            return;
        }
        ReportStatus::Failed => {
            let _ = writeln!(
                o,
                "  error: {}",
                printable(r.error.as_deref().unwrap_or(""))
            );
            return;
        }
        ReportStatus::Skipped => {
            let _ = writeln!(
                o,
                "  not taken: {}",
                printable(r.error.as_deref().unwrap_or(""))
            );
            return;
        }
        ReportStatus::Deferred => {
            for n in &r.notes {
                let _ = writeln!(o, "  left for a later run: {}", printable(n));
            }
            return;
        }
        ReportStatus::Ignored => {
            for n in &r.notes {
                let _ = writeln!(o, "  {}", printable(n));
            }
            return;
        }
        ReportStatus::Processed => {}
    }
    let _ = writeln!(
        o,
        "  rows {}, accepted {}, rejected {}, skipped {}, unchanged {}, stale {}, events {}{}{}",
        r.rows,
        r.accepted,
        r.rejected,
        r.skipped,
        r.unchanged,
        r.stale,
        r.events,
        if r.merged > 0 {
            format!(", merged {}", r.merged)
        } else {
            String::new()
        },
        if r.warnings > 0 {
            format!(", warnings {}", r.warnings)
        } else {
            String::new()
        }
    );
    for n in &r.notes {
        let _ = writeln!(o, "  note: {}", printable(n));
    }
    for rej in &r.rejects {
        let _ = writeln!(
            o,
            "  rejected row {}, column {:?}: {}",
            rej.row,
            printable(&rej.column),
            printable(&rej.reason)
        );
    }
    for (t, n) in &r.transitions {
        let _ = writeln!(
            o,
            "  {}: {t}: {n}",
            if dry_run { "would emit" } else { "emitted" }
        );
    }
}
