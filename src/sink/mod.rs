//! Sinks deliver committed events from the ledger's outbox to the client's ITSM.
//!
//! Invariant: an event is marked delivered for a sink only after the sink has really
//! delivered it (for a file sink: the file holding it is in place under its final name).
//! Each sink keeps its own delivery state, so sinks never wait on each other.

pub(crate) mod canonical;
pub(crate) mod file;
pub(crate) mod http;

use anyhow::Result;

use crate::config::SinkConfig;
use crate::ledger::Ledger;

/// What one sink did in a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct SinkSummary {
    pub(crate) name: String,
    pub(crate) delivered: u64,
    pub(crate) pending: u64,
    pub(crate) failed: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// Events deliberately not sent, and why (HTTP sinks).
    pub(crate) skipped: u64,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) skip_reasons: std::collections::BTreeMap<String, u64>,
    /// The first events that failed for good in this run (HTTP sinks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) failures: Vec<http::FailureNote>,
    /// Dry run: the first requests the sink would send (HTTP sinks), secrets redacted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) previews: Vec<http::RequestPreview>,
}

impl SinkSummary {
    pub(crate) fn count_skip(&mut self, reason: &str) {
        self.skipped += 1;
        *self.skip_reasons.entry(reason.to_string()).or_default() += 1;
    }
}

/// Delivers every pending event to `sink`; a failure leaves the events pending.
pub(crate) fn deliver(ledger: &Ledger, sink: &SinkConfig, schema_fields: &[String]) -> SinkSummary {
    let name = sink.name().to_string();
    let result: Result<SinkSummary> = match sink {
        SinkConfig::File(f) => file::deliver(ledger, f, schema_fields),
        SinkConfig::Http(h) => http::deliver(ledger, h, schema_fields),
    };
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
) -> Result<Vec<http::RequestPreview>> {
    match sink {
        SinkConfig::File(_) => Ok(Vec::new()),
        SinkConfig::Http(h) => http::preview(ledger, h, schema_fields, PREVIEW_REQUESTS),
    }
}
