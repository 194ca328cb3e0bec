//! Progress on a terminal (indicatif): downloads (bytes, rate, ETA), pulls from the API
//! (records), parsing (rows read) and delivery (events sent, rate, ETA).
//!
//! Guarantees: nothing is drawn when stderr is not a terminal (cron, systemd, a pipe), and
//! `TANGOE_INGEST_PROGRESS=0` turns it off on one; log lines go through [`LogWriter`],
//! which hides the bars while a line is written, so that logs and bars never tear each
//! other. A bar is removed from the screen when dropped.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars' home: `Some` only when stderr is a terminal.
fn multi() -> Option<&'static MultiProgress> {
    static MULTI: OnceLock<Option<MultiProgress>> = OnceLock::new();
    MULTI
        .get_or_init(|| {
            let off = std::env::var("TANGOE_INGEST_PROGRESS").is_ok_and(|v| v == "0");
            (std::io::stderr().is_terminal() && !off)
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        })
        .as_ref()
}

/// Whether bars are drawn (to spare counting what no bar shows).
pub(crate) fn shown() -> bool {
    multi().is_some()
}

/// One bar, or nothing when there is no terminal. Removed from the screen when dropped.
pub(crate) struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(len: Option<u64>, template: &str, message: String) -> Bar {
        let Some(multi) = multi() else {
            return Bar(None);
        };
        // Hidden until added to the bars' home: a bar drawn on its own first would leave
        // a stray copy on the screen.
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", s.per_sec());
                },
            )
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(message);
        let bar = multi.add(bar);
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar(Some(bar))
    }

    /// `n` more bytes, rows or events.
    pub(crate) fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// The position, for a count that may go back (a resumed download).
    pub(crate) fn set(&self, pos: u64) {
        if let Some(b) = &self.0 {
            b.set_position(pos);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
            if let Some(m) = multi() {
                m.remove(&b);
            }
        }
    }
}

/// A report's download: bytes of `size`, rate and time left.
pub(crate) fn download(name: &str, size: u64) -> Bar {
    Bar::new(
        Some(size),
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}, ETA {eta}",
        format!("downloading {}", crate::printable::printable(name)),
    )
}

/// A pull from the Tangoe API: records so far and the rate (the API does not say how many
/// there are until the last page).
pub(crate) fn pull() -> Bar {
    Bar::new(
        None,
        "{spinner} {msg}: {human_pos} records pulled ({rate})",
        "pulling from the Tangoe API".to_string(),
    )
}

/// A report being read: rows so far and the rate.
pub(crate) fn parsing(name: &str) -> Bar {
    Bar::new(
        None,
        "{spinner} {msg}: {human_pos} rows read ({rate})",
        format!("reading {}", crate::printable::printable(name)),
    )
}

/// A sink's delivery: events sent of `events`, rate and time left.
pub(crate) fn delivery(sink: &str, events: u64) -> Bar {
    Bar::new(
        Some(events),
        "{msg} [{bar:30}] {human_pos}/{human_len} events sent ({rate}), ETA {eta}",
        format!("sink {}", crate::printable::printable(sink)),
    )
}

/// Writes log lines to stderr with the bars hidden meanwhile (a `MakeWriter`).
#[derive(Clone, Copy)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match multi() {
            Some(m) => m.suspend(|| std::io::stderr().lock().write_all(buf)),
            None => std::io::stderr().lock().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}
