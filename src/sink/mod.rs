//! Sinks deliver committed events from the ledger's outbox to the client's ITSM.
//!
//! Invariant: an event is marked delivered for a sink only after the sink has really
//! delivered it (for a file sink: the file holding it is in place under its final name).
//! Each sink keeps its own delivery state, so sinks never wait on each other. Every mark is
//! on disk (synced) before the next event is sent: a power loss never loses one.

pub(crate) mod canonical;
pub(crate) mod config;
pub(crate) mod file;
pub(crate) mod http;
pub(crate) mod summary;

use anyhow::Result;

use crate::ledger::Ledger;
use config::SinkConfig;
use summary::RequestPreview;
pub(crate) use summary::SinkSummary;

/// Delivers every pending event to `sink`; a failure leaves the events pending.
pub(crate) fn deliver(ledger: &Ledger, sink: &SinkConfig, schema_fields: &[String]) -> SinkSummary {
    let name = sink.name().to_string();
    // The marks of what was delivered must survive a power loss (see `Ledger::durably`).
    let result: Result<SinkSummary> = ledger.durably(|| match sink {
        SinkConfig::File(f) => file::deliver(ledger, f, schema_fields),
        SinkConfig::Http(h) => http::deliver(ledger, h, schema_fields),
    });
    match result {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(sink = %name, "delivery failed: {e:#}");
            let pending = pending(ledger, sink).unwrap_or(0);
            SinkSummary {
                name,
                pending,
                error: Some(format!("{e:#}")),
                ..SinkSummary::default()
            }
        }
    }
}

/// Events not yet delivered to `sink`.
pub(crate) fn pending(ledger: &Ledger, sink: &SinkConfig) -> Result<u64> {
    match sink {
        SinkConfig::File(_) => {
            let mark = ledger.sink_mark(sink.name())?;
            ledger.count_events_after(mark)
        }
        SinkConfig::Http(h) => http::pending(ledger, h),
    }
}

/// How many requests a dry run shows per sink.
pub(crate) const PREVIEW_REQUESTS: usize = 3;

/// The first requests `sink` would send now (none for a file sink), secrets redacted.
pub(crate) fn preview(
    ledger: &Ledger,
    sink: &SinkConfig,
    schema_fields: &[String],
) -> Result<Vec<RequestPreview>> {
    match sink {
        SinkConfig::File(_) => Ok(Vec::new()),
        SinkConfig::Http(h) => http::preview(ledger, h, schema_fields, PREVIEW_REQUESTS),
    }
}
