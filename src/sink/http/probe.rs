//! Testing an HTTP sink's endpoint and credentials with a request that writes nothing
//! (`tangoe-ingest check`).
//!
//! Guarantees: only `GET`s are sent, one try each, with the sink's own authentication,
//! TLS settings and timeout; a webhook is never sent anything (any request to it may act).

use super::config::{Api, HttpSinkConfig};
use super::encode::lookup_sys_id;
use super::transport::{Failure, Method, Request, Transport, detail};

/// What a probe found.
pub(crate) enum Probe {
    /// The endpoint took the sink's credentials: what it answered.
    Passed(String),
    /// The endpoint or the credentials do not work: why.
    Failed(String),
    /// It cannot be tested without sending: why.
    Untested(String),
}

/// Where a read-only `GET` goes for the sink: the Table API's table itself; for an Import
/// Set, its staging table through the Table API.
fn read_url(cfg: &HttpSinkConfig) -> Option<String> {
    match cfg.api {
        Api::Table => Some(cfg.url.clone()),
        Api::ImportSet => cfg
            .url
            .split_once("/api/now/import/")
            .map(|(base, table)| format!("{base}/api/now/table/{table}")),
        Api::Webhook => None,
    }
}

/// Tests the sink's endpoint and credentials; see the module's guarantees.
pub(crate) fn probe(cfg: &HttpSinkConfig) -> Probe {
    let Some(url) = read_url(cfg) else {
        return Probe::Untested(match cfg.api {
            Api::Webhook => "a webhook cannot be tested without sending it an event".into(),
            _ => format!(
                "{} is not a ServiceNow Import Set URL (…/api/now/import/TABLE): not tested",
                cfg.url
            ),
        });
    };
    let mut transport = match Transport::new(cfg) {
        Ok(t) => t.single_try(),
        Err(e) => return Probe::Failed(format!("{e:#}")),
    };
    let req = Request {
        method: Method::Get,
        url,
        query: vec![
            ("sysparm_limit".into(), "1".into()),
            ("sysparm_fields".into(), "sys_id".into()),
        ],
        body: None,
        idempotency_key: "tangoe-ingest-check".into(),
        answer_needed: true,
    };
    let what = format!("GET {}", req.full_url());
    match transport.send(&req) {
        // A page that is not the Table API's JSON (a login page, a hibernating instance)
        // answers 200 too.
        Ok(reply) => match lookup_sys_id(&reply.body) {
            Ok(_) => Probe::Passed(format!(
                "{what}: HTTP {}, the account can read the table",
                reply.status
            )),
            Err(e) => Probe::Failed(format!(
                "{what}: HTTP {} but {e:#}{} (is the instance hibernating or behind a login page?)",
                reply.status,
                detail(&reply.body)
            )),
        },
        Err(Failure::Permanent { message, .. })
        | Err(Failure::Unavailable { message })
        | Err(Failure::Refused { message }) => Probe::Failed(message),
    }
}
