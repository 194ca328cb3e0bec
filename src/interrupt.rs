//! SIGTERM and SIGINT (systemd's stop, Ctrl-C): the first asks the job to stop at the next
//! safe point; a second ends the process at once.
//!
//! Guarantees: after the first signal no new report is read and no new request is sent;
//! the report being read is rolled back (it is read again by the next run, not marked
//! failed); the request in flight is finished and recorded; the run is recorded with exit
//! code 128 + the signal (143 for SIGTERM, 130 for SIGINT). A second signal exits with that
//! code straight away: the ledger stays consistent (every write is a transaction), and the
//! next run closes the run as interrupted, as after a kill.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::signal::{SIGINT, SIGTERM};

/// Set by the first signal; arms the second's immediate exit.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// The signal received (0: none).
static SIGNAL: AtomicUsize = AtomicUsize::new(0);

/// Installs the handlers (the binary does, first thing). Without them, the job never sees
/// a stop request and the signals act as the system's default.
pub fn install() -> std::io::Result<()> {
    for signal in [SIGTERM, SIGINT] {
        // The exit first: it acts only when an earlier signal has set `STOPPING`.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, &STOPPING)?;
        signal_hook::flag::register_usize(signal, &SIGNAL, signal as usize)?;
        signal_hook::flag::register(signal, &STOPPING)?;
    }
    Ok(())
}

/// The exit code for the stop requested, if one was: 128 + the signal.
pub(crate) fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        s => Some(128 + s as i32),
    }
}

/// The job was asked to stop: the error that unwinds the work in progress.
#[derive(Debug)]
pub(crate) struct Interrupted(pub(crate) i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 - 128 {
            SIGTERM => "SIGTERM",
            SIGINT => "SIGINT",
            _ => "a signal",
        };
        write!(f, "stopped by {name}")
    }
}

impl std::error::Error for Interrupted {}

/// `Err(Interrupted)` once a stop was requested: called at each safe point.
pub(crate) fn check() -> anyhow::Result<()> {
    match requested() {
        Some(code) => Err(Interrupted(code).into()),
        None => Ok(()),
    }
}

/// Whether `e` (or what caused it) is a stop request.
pub(crate) fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Interrupted>())
}
