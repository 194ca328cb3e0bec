use std::process::ExitCode;

use clap::Parser;
use tangoe_ingest::cli::Cli;

fn main() -> ExitCode {
    tangoe_ingest::app::owner_only();
    // A command line clap cannot take is a configuration error (exit 1): clap's own code, 2,
    // means "finished with rejects or undelivered events" here. Help and version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    tangoe_ingest::logging::init(cli.log_format, level);
    if let Err(e) = tangoe_ingest::interrupt::install() {
        tracing::warn!("SIGTERM and SIGINT will end the job at once: {e}");
    }
    let code = tangoe_ingest::app::execute(cli);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
