//! Command-line arguments (clap derive). Plain data only: no I/O here.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes:
  0   everything processed and delivered
  1   the run failed (command line, configuration, ledger, source unreachable)
  2   data problem: rows or reports were rejected (look at the report)
  3   delivery problem: events pending or failed at a sink (the ITSM side)
  4   the source is silent: no new report within [source] expect_new_within
  75  another run holds the ledger lock; nothing was done
  130, 143  stopped by SIGINT / SIGTERM (the report being read is rolled back)
When several apply, the lowest wins; --summary-json lists them all under `problems`.";

/// Keeps an ITSM (e.g. ServiceNow) in step with Tangoe Mobile activity reports.
#[derive(Debug, Parser)]
#[command(name = "tangoe-ingest", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// The configuration file (TOML).
    #[arg(
        long,
        global = true,
        env = "TANGOE_INGEST_CONFIG",
        default_value = "tangoe-ingest.toml"
    )]
    pub config: PathBuf,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less log output: warnings and errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The nightly job: take the reports not processed before, record state changes and
    /// deliver them.
    ///
    /// Example: tangoe-ingest --config /etc/tangoe-ingest.toml run
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),

    /// Replay every report whose report date lies in [FROM, TO] (inclusive), seen before or
    /// not, oldest first. Dedupe still applies: only changes the ledger has not recorded go
    /// out, unless --resend.
    ///
    /// Example: tangoe-ingest backfill --from 2026-11-01 --to 2026-11-07 --dry-run
    #[command(after_help = EXIT_CODES)]
    Backfill(BackfillArgs),

    /// Recent runs, reports processed, Activities by state, undelivered events, rejects.
    ///
    /// Example: tangoe-ingest status
    Status(StatusArgs),

    /// Send the events pending in the ledger to every sink, without reading any report
    /// (e.g. once the ITSM is back). Oldest first; nothing delivered is sent again.
    ///
    /// Example: tangoe-ingest deliver
    #[command(after_help = EXIT_CODES)]
    Deliver(RunArgs),

    /// Make events that failed for good pending again, once the cause is fixed; the next
    /// `run` or `deliver` sends them.
    ///
    /// Example: tangoe-ingest retry --failed --sink servicenow
    Retry(RetryArgs),

    /// Print an SFTP server's host keys as known_hosts lines, each after a comment with its
    /// SHA256 fingerprint, without logging in. Check the fingerprints with the site's operator,
    /// then add the lines to known_hosts (or pin one with host_key_fingerprint): nothing is
    /// ever trusted automatically.
    ///
    /// Example: tangoe-ingest hostkey >> ~/.ssh/known_hosts
    Hostkey(HostkeyArgs),

    /// Reports the ledger knows, each with its latest status and last error; `ignore` stops
    /// retrying a failed one (it then never counts towards the exit code), `retry` undoes it.
    ///
    /// Example: tangoe-ingest reports ignore r_2026-11-01.csv --reason "renamed column; Tangoe resends"
    Reports(ReportsArgs),

    /// Every rejected row the ledger holds (report, row, column, reason), of one run, one
    /// report or all; --csv to export them, --raw to add the rows' text (personal data).
    ///
    /// Example: tangoe-ingest rejects --run 7 --csv > rejects-run-7.csv
    Rejects(RejectsArgs),
    /// Check the set-up without changing anything: the configuration (paths, schema, each
    /// mapping on a sample event), the source (host key, login, which files would be taken
    /// and why the others would not), each sink (an HTTP sink's credentials, with a request
    /// that writes nothing). One ✓ or ✗ line per check; exit 0 only when all pass, else 1.
    #[command(
        after_help = "Example: tangoe-ingest --config /etc/tangoe-ingest/tangoe-ingest.toml check"
    )]
    Check,

    /// Audit report files against the schema, with no configuration and no ledger: format,
    /// encoding, delimiter, header row, which column feeds which field, rows accepted and
    /// rejected (each with its reason), Activities by state.
    #[command(
        after_help = "Examples:\n  tangoe-ingest inspect drop/tangoe_activity_report_2026-11-02.csv --rows 5\n  tangoe-ingest inspect --json --schema my-schema.toml drop/*.xlsx"
    )]
    Inspect(InspectArgs),

    /// Write a commented starter configuration, and editable copies of the bundled report
    /// schema and output mappings, into DIR (default: the current folder). Never
    /// overwrites a file.
    #[command(
        after_help = "Example: tangoe-ingest init /etc/tangoe-ingest && tangoe-ingest --config /etc/tangoe-ingest/tangoe-ingest.toml check"
    )]
    Init(InitArgs),

    /// Print a shell completion script to stdout.
    #[command(
        after_help = "Example: tangoe-ingest completions bash > /etc/bash_completion.d/tangoe-ingest"
    )]
    Completions(CompletionsArgs),

    /// Print the manual page (roff) to stdout.
    #[command(
        after_help = "Example: tangoe-ingest man > /usr/local/share/man/man1/tangoe-ingest.1"
    )]
    Man,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The report files (CSV or XLSX).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// The report schema (TOML); default: the bundled schema.
    #[arg(long, value_name = "PATH")]
    pub schema: Option<PathBuf>,

    /// The time zone of date-times without an offset (IANA name).
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub timezone: String,

    /// Also show the first N Activities of each file as a table.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub rows: usize,

    /// Print the audit as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to write into (made if missing).
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read the sources and the ledger, write nothing anywhere, print what would happen.
    #[arg(long)]
    pub dry_run: bool,

    /// Write the run's summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,

    /// With --dry-run: also write the audit as one self-contained HTML page (mode 0600).
    #[arg(long, value_name = "PATH", requires = "dry_run")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// First report date (YYYY-MM-DD), inclusive.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date)]
    pub from: NaiveDate,

    /// Last report date (YYYY-MM-DD), inclusive.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date)]
    pub to: NaiveDate,

    /// Emit the current state of every Activity in those reports again (e.g. to fill a new
    /// ITSM instance), even where nothing changed.
    #[arg(long)]
    pub resend: bool,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HostkeyArgs {
    /// The server to ask; default: the configured SFTP source.
    #[arg(value_name = "HOST")]
    pub host: Option<String>,

    /// The server's SSH port (with HOST).
    #[arg(long, default_value_t = 22, requires = "host")]
    pub port: u16,

    /// Ask the server this file sink uploads to, instead of the source.
    #[arg(long, value_name = "NAME", conflicts_with = "host")]
    pub sink: Option<String>,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Re-queue the events that failed permanently (the ones `status` lists as failed).
    #[arg(long, required = true)]
    pub failed: bool,

    /// Only this sink (by its `name`); all sinks when absent.
    #[arg(long, value_name = "NAME")]
    pub sink: Option<String>,
}

#[derive(Debug, Args)]
pub struct RejectsArgs {
    /// Only the rows rejected in this run's reports (runs are numbered in `status`).
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,

    /// Only the rows of reports of this file name.
    #[arg(long, value_name = "NAME")]
    pub report: Option<String>,

    /// Write CSV (report,row,column,reason[,raw]) instead of text.
    #[arg(long)]
    pub csv: bool,

    /// Add each row's raw text. It holds personal data: keep the output safe.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Args)]
pub struct ReportsArgs {
    #[command(subcommand)]
    pub action: Option<ReportsAction>,

    /// Only the reports whose latest attempt failed (ignored ones included).
    #[arg(long)]
    pub failed: bool,

    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReportsAction {
    /// Stop retrying the failed report NAME (the version of the file that failed): it is
    /// not read again and never counts towards the exit code. Recorded with who, when, why.
    ///
    /// Example: tangoe-ingest reports ignore r_2026-11-01.csv --reason "ticket 4711"
    Ignore {
        /// The report's file name, as `reports` lists it.
        name: String,
        /// Why (kept in the ledger, shown by `status` and `reports`).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Undo `reports ignore NAME`: the next run reads the report again.
    ///
    /// Example: tangoe-ingest reports retry r_2026-11-01.csv
    Retry {
        /// The report's file name.
        name: String,
    },
}

/// A date as `--from` and `--to` take it.
fn date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|e| format!("{e}: a date is written YYYY-MM-DD (e.g. 2026-11-01)"))
}
