//! `reports`: every report the ledger knows with its latest status and last error;
//! `reports ignore NAME` acknowledges a failed report so that it is not read again (nor
//! counted towards the exit code); `reports retry NAME` takes the acknowledgement back.
//!
//! Guarantee: listing never writes the ledger; `ignore` and `retry` take the run lock and
//! record who (`$USER`, else the uid), when and why in the ledger.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::cli::{ReportsAction, ReportsArgs};
use crate::config::LedgerView;
use crate::ledger::Ledger;
use crate::lock::lock;
use crate::printable::printable;

/// Runs `reports` and its sub-commands; returns the text to print.
pub(crate) fn execute(config: &Path, args: &ReportsArgs) -> Result<String> {
    let view = LedgerView::load(config)?;
    if !view.ledger.exists() {
        anyhow::bail!(
            "no ledger at {} yet: nothing has run",
            view.ledger.display()
        );
    }
    match &args.action {
        None => list(&view, args.failed, args.json),
        Some(ReportsAction::Ignore { name, reason }) => {
            let _lock = lock(&view.ledger, false)?;
            let ledger = Ledger::open(&view.ledger)?;
            ledger.ignore_report(name, &operator(), reason.as_deref())?;
            ledger.checkpoint()?;
            Ok(format!(
                "{}: ignored; it is not read again and no longer counts towards the exit code \
                 (`tangoe-ingest reports retry {}` takes it back)\n",
                printable(name),
                printable(name)
            ))
        }
        Some(ReportsAction::Retry { name }) => {
            let _lock = lock(&view.ledger, false)?;
            let ledger = Ledger::open(&view.ledger)?;
            let n = ledger.unignore_report(name)?;
            ledger.checkpoint()?;
            if n == 0 {
                anyhow::bail!(
                    "the report {name:?} is not ignored (`tangoe-ingest reports` lists them)"
                );
            }
            Ok(format!(
                "{}: no longer ignored; the next run reads it again\n",
                printable(name)
            ))
        }
    }
}

/// Who runs the command: `$USER`, else `uid N`.
fn operator() -> String {
    match std::env::var("USER") {
        Ok(u) if !u.trim().is_empty() => u,
        // SAFETY: getuid cannot fail and touches no memory.
        _ => format!("uid {}", unsafe { libc::getuid() }),
    }
}

fn list(view: &LedgerView, failed: bool, json: bool) -> Result<String> {
    let ledger = Ledger::read_only(&view.ledger)?;
    let lines = ledger.report_lines(failed)?;
    if json {
        return Ok(serde_json::to_string_pretty(&lines)? + "\n");
    }
    let mut o = String::new();
    if lines.is_empty() {
        let _ = writeln!(o, "(no reports)");
    }
    for r in &lines {
        let _ = writeln!(
            o,
            "{} [{}] {} at {}: rows {}, rejected {}",
            printable(&r.name),
            r.report_date,
            r.status,
            r.at,
            r.rows,
            r.rejected
        );
        if r.status == "failed" || r.status == "ignored" {
            let _ = writeln!(
                o,
                "  {} failed attempt(s); last error: {}",
                r.failures,
                printable(r.error.as_deref().unwrap_or(""))
            );
        }
        if let Some(ig) = &r.ignored {
            let _ = writeln!(o, "  {}", printable(&ig.describe()));
        } else if r.status == "failed" {
            let _ = writeln!(
                o,
                "  to stop retrying it: tangoe-ingest reports ignore {} --reason TEXT",
                printable(&r.name)
            );
        }
    }
    Ok(o)
}
