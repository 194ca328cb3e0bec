//! The command layer: turns parsed arguments into library calls, prints results, and maps
//! the outcome to an exit code. The only place that prints to stdout.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::cli::{Cli, Command, HostkeyArgs, LogFormat, RunArgs};
use crate::config::{Config, SourceConfig};
use crate::lock::Locked;
use crate::pipeline::{self, Mode, Options};
use crate::sftp::Endpoint;
use crate::sink::config::SinkConfig;
use crate::summary::{EXIT_FAILED, EXIT_LOCKED, Summary, render};

/// Runs the command; returns the process exit code.
pub fn execute(cli: Cli) -> i32 {
    let result = match &cli.command {
        Command::Run(args) => run(&cli.config, Mode::Run, args),
        Command::Backfill(b) => run(
            &cli.config,
            Mode::Backfill {
                from: b.from,
                to: b.to,
                resend: b.resend,
            },
            &b.run,
        ),
        Command::Status(s) => status(&cli.config, s.json),
        Command::Deliver(args) => deliver(&cli.config, args),
        Command::Retry(args) => retry(&cli.config, args.sink.as_deref()),
        Command::Hostkey(h) => hostkey(&cli.config, h),
        Command::Rejects(r) => {
            crate::cmd::rejects::execute(&cli.config, r, &mut std::io::stdout().lock()).map(|()| 0)
        }
        Command::Reports(r) => crate::cmd::reports::execute(&cli.config, r).map(|o| {
            print!("{o}");
            0
        }),
        Command::Check => crate::cmd::check::run(&cli.config),
        Command::Inspect(args) => crate::cmd::inspect::run(args),
        Command::Init(args) => crate::cmd::init::run(&args.dir),
        Command::Completions(args) => crate::cmd::completions::completions(args.shell),
        Command::Man => crate::cmd::completions::man(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let locked = e.downcast_ref::<Locked>().is_some();
            let message = if locked {
                e.to_string()
            } else {
                format!("{e:#}")
            };
            if cli.log_format == LogFormat::Json {
                // One JSON line like the rest of the log, for collectors that parse stderr.
                let line = serde_json::json!({
                    "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "level": "ERROR",
                    "fields": { "message": message },
                    "target": "tangoe_ingest",
                });
                eprintln!("{line}");
            } else {
                eprintln!("error: {}", crate::printable::printable(&message));
            }
            if locked { EXIT_LOCKED } else { EXIT_FAILED }
        }
    }
}

/// Every file and folder the job creates from here on is its owner's alone (0600, 0700),
/// whatever umask it was started with: ledgers, import files and downloads hold personal
/// data. A file sink's `mode` loosens its import files on purpose. Process-wide: the
/// binary calls it first thing.
pub fn owner_only() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

fn load(path: &Path) -> Result<Config> {
    Config::load(path)
}

/// The summary file of a run or delivery that failed as a whole.
fn failure_json(mode: &str, dry_run: bool, e: &anyhow::Error) -> serde_json::Value {
    serde_json::json!({
        "mode": mode,
        "dry_run": dry_run,
        "rows": 0, "rejected": 0, "events": 0, "delivered": 0, "pending": 0,
        "reports": [],
        "exit_code": if e.downcast_ref::<Locked>().is_some() { EXIT_LOCKED } else { EXIT_FAILED },
        "error": format!("{e:#}"),
    })
}

/// Writes the summary file (`--summary-json`) for a command's outcome, after printing the
/// summary itself: a summary file that cannot be written fails the command (exit 1) but
/// never hides what was done.
fn finish(mode: &str, args: &RunArgs, result: Result<Summary>) -> Result<i32> {
    if let Ok(summary) = &result {
        print!("{}", render(summary));
    }
    if let Some(path) = &args.summary_json {
        let json = match &result {
            Ok(summary) => serde_json::to_value(summary)?,
            Err(e) => failure_json(mode, args.dry_run, e),
        };
        write_file(path, &serde_json::to_string_pretty(&json)?)?;
    }
    if let (Ok(summary), Some(path)) = (&result, &args.html) {
        crate::html::write(path, &crate::html::render(summary))?;
    }
    result.map(|summary| summary.exit_code)
}

/// Marks the summary file (if asked for) as unfinished before the command starts: what it
/// says if the command is killed, and a file that cannot be written is found before
/// anything is done.
fn start(mode: &str, args: &RunArgs) -> Result<()> {
    let Some(path) = &args.summary_json else {
        return Ok(());
    };
    let json = serde_json::json!({
        "mode": mode,
        "dry_run": args.dry_run,
        "exit_code": null,
        "error": "the command did not finish (still running, or killed)",
    });
    write_file(path, &serde_json::to_string_pretty(&json)?)
}

fn run(config: &Path, mode: Mode, args: &RunArgs) -> Result<i32> {
    let name = match mode {
        Mode::Run => "run",
        Mode::Backfill { .. } => "backfill",
    };
    let result = (|| {
        if let Mode::Backfill { from, to, .. } = mode
            && from > to
        {
            anyhow::bail!("--from {from} is after --to {to}");
        }
        let cfg = load(config)?;
        start(name, args)?;
        let opts = Options {
            mode,
            dry_run: args.dry_run,
        };
        pipeline::run(&cfg, &opts)
    })();
    finish(name, args, result)
}

fn deliver(config: &Path, args: &RunArgs) -> Result<i32> {
    let result = (|| {
        let cfg = load(config)?;
        start("deliver", args)?;
        pipeline::deliver(&cfg, args.dry_run)
    })();
    finish("deliver", args, result)
}

fn retry(config: &Path, sink: Option<&str>) -> Result<i32> {
    let cfg = load(config)?;
    let requeued = pipeline::retry_failed(&cfg, sink)?;
    let total: u64 = requeued.iter().map(|(_, n)| n).sum();
    for (name, n) in &requeued {
        println!("sink {name}: {n} failed events are pending again");
    }
    if total > 0 {
        println!("`tangoe-ingest deliver` (or the next run) sends them.");
    }
    Ok(0)
}

fn hostkey(config: &Path, args: &HostkeyArgs) -> Result<i32> {
    let cfg = match &args.host {
        Some(_) => None,
        None => Some(load(config)?),
    };
    let endpoint = hostkey_endpoint(cfg.as_ref(), args)?;
    print!("{}", crate::sftp::hostkey_report(&endpoint)?);
    eprintln!(
        "Check these fingerprints with the site's operator before you add a line to known_hosts \
         (or set host_key_fingerprint)."
    );
    Ok(0)
}

/// The server `tangoe-ingest hostkey` asks: HOST if given, else a sink's upload server
/// (`--sink`), else the configured SFTP source.
fn hostkey_endpoint(cfg: Option<&Config>, args: &HostkeyArgs) -> Result<Endpoint> {
    if let Some(host) = &args.host {
        return Ok(Endpoint::bare(host, args.port));
    }
    let cfg = cfg.context("no HOST given and no configuration")?;
    if let Some(name) = &args.sink {
        let upload = cfg.sinks.iter().find_map(|s| match s {
            SinkConfig::File(f) if &f.name == name => Some(&f.upload),
            _ => None,
        });
        return match upload {
            Some(Some(u)) => Ok(u.endpoint.clone()),
            Some(None) => bail!("the sink {name:?} has no `upload`"),
            None => bail!("no sink is named {name:?}"),
        };
    }
    match &cfg.source {
        SourceConfig::Sftp(s) => Ok(s.endpoint.clone()),
        _ => bail!(
            "the configured [source] is not SFTP: give a HOST (e.g. `tangoe-ingest hostkey sftp.example.com --port 22`)"
        ),
    }
}

/// Writes a summary file whole: under a temporary name in its folder, then renamed, so a
/// reader never sees half of one.
fn write_file(path: &Path, text: &str) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".summary-")
            .tempfile_in(dir)?;
        // Owner-only, as the temporary file is made: it names reports and rows' columns.
        std::io::Write::write_all(&mut tmp, text.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().with_context(|| format!("cannot write the summary file {}", path.display()))
}

fn status(config: &Path, json: bool) -> Result<i32> {
    let cfg = crate::config::LedgerView::load(config)?;
    let s = crate::status::collect(&cfg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", crate::status::render(&s));
    }
    Ok(0)
}
