//! Sinks deliver committed events from the ledger's outbox to the client's ITSM.
//!
//! Invariant: an event is marked delivered for a sink only after the sink has really
//! delivered it (for a file sink: the file holding it is in place under its final name).
//! Each sink keeps its own delivery state, so sinks never wait on each other.

pub(crate) mod file;

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
}

/// Delivers every pending event to `sink`; a failure leaves the events pending.
pub(crate) fn deliver(ledger: &Ledger, sink: &SinkConfig, schema_fields: &[String]) -> SinkSummary {
    let name = sink.name().to_string();
    let result: Result<SinkSummary> = match sink {
        SinkConfig::File(f) => file::deliver(ledger, f, schema_fields),
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
    let mark = ledger.sink_mark(sink.name())?;
    ledger.count_events_after(mark)
}
