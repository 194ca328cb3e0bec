//! What a sink reports of a run: counts, files written, failures, and in a dry run the
//! requests it would send. The summary's `sinks` entries are these, as JSON.
//!
//! Guarantees: nothing here holds a secret (previews are redacted before they get here).

use serde::Serialize;

/// A request a dry run would send, secrets redacted.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestPreview {
    pub(crate) event_id: String,
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<serde_json::Value>,
}

/// An event that failed for good in this run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FailureNote {
    pub(crate) event_id: String,
    pub(crate) activity_id: String,
    pub(crate) error: String,
}

/// What one sink did in a run.
#[derive(Debug, Clone, Default, Serialize)]
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
    /// Of the skipped, the events not sent because a field the ITSM needs is empty (a
    /// mapping's `required`, the Table API's number): a data problem someone should fix.
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) incomplete: u64,
    /// The first events that failed for good in this run (HTTP sinks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) failures: Vec<FailureNote>,
    /// Dry run: the first requests the sink would send (HTTP sinks), secrets redacted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) previews: Vec<RequestPreview>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SinkSummary {
    pub(crate) fn count_skip(&mut self, reason: &str) {
        self.skipped += 1;
        *self.skip_reasons.entry(reason.to_string()).or_default() += 1;
    }

    /// Counts an event not sent because a field it needs is empty (see `incomplete`).
    pub(crate) fn count_incomplete(&mut self, reason: &str) {
        self.count_skip(reason);
        self.incomplete += 1;
    }
}
