//! Logging set-up: text or JSON lines on stderr, the level from `-v`/`-q` or `RUST_LOG`.
//!
//! Guarantee: a log line is one line. In text logs every field's value is written with its
//! control characters escaped (see [`crate::printable`]), so a file name, header or value
//! holding a line break or an escape sequence cannot forge a line; JSON logs escape them as
//! JSON does.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use crate::cli::LogFormat;
use crate::printable::printable;

/// Installs the global subscriber: `level` unless `RUST_LOG` says otherwise.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::progress::LogWriter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .fmt_fields(Escaped)
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
    }
}

/// Formats an event's or span's fields as the default text format does (`message`, then
/// `name=value`), every value printable.
struct Escaped;

impl<'w> FormatFields<'w> for Escaped {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = Visitor {
            writer: &mut writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: std::fmt::Result,
    first: bool,
}

impl tracing::field::Visit for Visitor<'_, '_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let text = format!("{value:?}");
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = match field.name() {
            "message" => write!(self.writer, "{sep}{}", printable(&text)),
            name => write!(self.writer, "{sep}{name}={}", printable(&text)),
        };
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // A `&str` field is written as the default format does: quoted, escaped.
        self.record_debug(field, &value);
    }
}
