//! What a run is asked to do: which reports it takes ([`Mode`]) and whether it may change
//! anything ([`Options::dry_run`]).

use chrono::NaiveDate;

/// Which reports a run takes.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The nightly job: reports not processed before.
    Run,
    /// Every report whose date is in `[from, to]`, seen before or not.
    Backfill {
        from: NaiveDate,
        to: NaiveDate,
        resend: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub dry_run: bool,
}
