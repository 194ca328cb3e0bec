//! `rejects`: every rejected row the ledger holds (report, row, column, reason), of one
//! run, one report or all; as text or CSV (`--csv`).
//!
//! Guarantee: never writes the ledger; the row's raw text (personal data) is printed only
//! with `--raw`. Output is streamed: any number of rejects fits.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use crate::cli::RejectsArgs;
use crate::config::LedgerView;
use crate::ledger::Ledger;
use crate::ledger::rejects::{RejectFilter, StoredReject};
use crate::printable::printable;

/// Writes the rejects `args` select to `out`. A reader that stops early (`| head`) is not
/// an error.
pub(crate) fn execute(config: &Path, args: &RejectsArgs, out: &mut dyn Write) -> Result<()> {
    match list(config, args, out) {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn list(config: &Path, args: &RejectsArgs, out: &mut dyn Write) -> Result<()> {
    let view = LedgerView::load(config)?;
    if !view.ledger.exists() {
        anyhow::bail!(
            "no ledger at {} yet: nothing has run",
            view.ledger.display()
        );
    }
    let ledger = Ledger::read_only(&view.ledger)?;
    if let Some(run) = args.run
        && !ledger.has_run(run)?
    {
        anyhow::bail!("no run {run} in the ledger (`tangoe-ingest status` lists the last ones)");
    }
    let filter = RejectFilter {
        run: args.run,
        report: args.report.clone(),
        raw: args.raw,
    };
    if args.csv {
        return write_csv(&ledger, &filter, out);
    }
    let mut n = 0u64;
    ledger.each_reject(&filter, &mut |r: StoredReject| {
        n += 1;
        writeln!(
            out,
            "{} row {} column {:?}: {}",
            printable(&r.report),
            r.row,
            printable(&r.column),
            printable(&r.reason)
        )?;
        if let Some(raw) = &r.raw {
            writeln!(out, "  raw: {}", printable(raw))?;
        }
        Ok(())
    })?;
    if n == 0 {
        writeln!(out, "(no rejected rows)")?;
    }
    out.flush()?;
    Ok(())
}

/// The rejects as CSV: `report,row,column,reason` (and `raw` with `--raw`), values as
/// stored (no escaping beyond CSV's).
fn write_csv(ledger: &Ledger, filter: &RejectFilter, out: &mut dyn Write) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let mut header = vec!["report", "row", "column", "reason"];
    if filter.raw {
        header.push("raw");
    }
    w.write_record(&header)?;
    ledger.each_reject(filter, &mut |r: StoredReject| {
        let row = r.row.to_string();
        let mut rec = vec![r.report.as_str(), &row, &r.column, &r.reason];
        if let Some(raw) = &r.raw {
            rec.push(raw);
        }
        w.write_record(&rec)?;
        Ok(())
    })?;
    w.flush()?;
    Ok(())
}
