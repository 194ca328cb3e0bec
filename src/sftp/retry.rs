//! Which failures another try on a new connection can fix, and the trying.
//!
//! Invariant: a [`Final`] error, and the server's "no such file" and "permission denied",
//! end the tries at once; anything else (a dropped or timed-out connection, a corrupted
//! packet) is tried again, up to the caller's number of tries, 1 s then 2 s apart.

use std::cell::Cell;
use std::time::Duration;

use anyhow::Result;
use backon::{BlockingRetryable, ExponentialBuilder};

/// An error that trying again cannot fix: the server refused (host key not trusted, login
/// failed), the file changed under the download, or the local copy cannot be written.
#[derive(Debug)]
pub(crate) struct Final(pub(crate) String);

impl std::fmt::Display for Final {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Final {}

/// Whether trying `e` again on a new connection cannot help: a [`Final`] error, or the
/// server's "no such file" or "permission denied", or a stop request (SIGTERM, SIGINT).
pub(crate) fn is_final(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Final>().is_some())
        || sftp_status(e, &[2, 3])
        || crate::interrupt::is_interrupted(e)
}

/// The server's "no such file".
pub(crate) fn is_missing(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::SFTP(2)
}

/// Whether `e` carries one of these SFTP status codes (2: no such file, 3: permission
/// denied).
pub(crate) fn sftp_status(e: &anyhow::Error, codes: &[i32]) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ssh2::Error>()
            .is_some_and(|s| matches!(s.code(), ssh2::ErrorCode::SFTP(n) if codes.contains(&n)))
    })
}

/// The wait before the second try; each later wait is twice the one before.
const FIRST_WAIT: Duration = Duration::from_secs(1);

/// Runs `f` up to `tries` times, waiting 1 s, 2 s, 4 s... between tries; a [`Final`]
/// error ends at once. `f` gets the attempt number (1-based).
pub(crate) fn with_retries<T>(
    what: &str,
    tries: u32,
    mut f: impl FnMut(u32) -> Result<T>,
) -> Result<T> {
    let attempt = Cell::new(0u32);
    let waits = ExponentialBuilder::default()
        .with_min_delay(FIRST_WAIT)
        .with_factor(2.0)
        .without_max_delay()
        .with_max_times(tries.saturating_sub(1) as usize);
    (|| {
        attempt.set(attempt.get() + 1);
        f(attempt.get())
    })
    .retry(waits)
    .sleep(std::thread::sleep)
    .when(|e| !is_final(e))
    .notify(|e, wait| {
        tracing::warn!(
            "{what} failed (try {} of {tries}), retrying in {}s: {e:#}",
            attempt.get(),
            wait.as_secs()
        );
    })
    .call()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    #[test]
    fn retries_stop_at_a_final_error_or_after_the_tries() {
        let mut calls = Vec::new();
        let r: Result<()> = with_retries("test", 3, |a| {
            calls.push(a);
            bail!(Final("refused".into()))
        });
        assert!(r.is_err());
        assert_eq!(calls, [1], "a final error is not tried again");

        let mut calls = Vec::new();
        let r = with_retries("test", 2, |a| {
            calls.push(a);
            if a < 2 { bail!("dropped") } else { Ok(a) }
        });
        assert_eq!(r.unwrap(), 2);
        assert_eq!(calls, [1, 2]);

        let mut calls = 0;
        let r: Result<()> = with_retries("test", 2, |_| {
            calls += 1;
            bail!("dropped")
        });
        assert!(r.is_err());
        assert_eq!(calls, 2, "gives up after `tries`");
    }
}
