//! HTTP sink: one request per event to a ServiceNow Import Set, the ServiceNow Table API
//! (with optional ticket mirroring), or a generic webhook.
//!
//! Kept apart like vector's http sink: [`config`] (what the TOML says), [`encode`] (event →
//! body, and reading the ITSM's answers) and [`transport`] (ureq, auth, pace, retries).
//!
//! Invariants:
//! - An event is recorded `delivered` for the sink only after its 2xx (for an Import Set,
//!   also a row status that is not `error`), right after the answer, before the next event.
//! - Events go out oldest first. An event the endpoint cannot take now (retries exhausted,
//!   rate limited past a run's patience) stays pending and holds back the later events of
//!   its Activity, so one Activity's events always arrive in order; other Activities go on.
//!   Three such events in a row stop the sink for the run (the endpoint is down). A
//!   permanently failed event is settled (listed by `status`, re-queued by `retry --failed`)
//!   and blocks nothing.
//! - An event already delivered is never sent again, and an older event is never sent after
//!   a newer one of the same Activity was delivered (it would turn the ticket back).

pub(crate) mod config;
mod encode;
mod probe;
pub(crate) mod transport;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use anyhow::Result;

use config::Api;
pub(crate) use config::HttpSinkConfig;
use encode::RowOutcome;
pub(crate) use probe::{Probe, probe};
use transport::{Failure, Request, Transport};

use super::summary::{FailureNote, RequestPreview, SinkSummary};
use crate::ledger::deliveries::Outcome;
use crate::ledger::{Ledger, StoredEvent};

const CHUNK: usize = 1000;
/// Events in a row the endpoint could not take before the sink stops for the run.
const UNAVAILABLE_STOP: u32 = 3;
/// Failures listed in a run's summary (all of them are in `status`).
const KEEP_FAILURES: usize = 20;

const SKIP_NO_NUMBER: &str = "no itsm_number to update and create_missing is off";
pub(crate) const SKIP_SUPERSEDED: &str =
    "superseded: a later event of the same Activity was already delivered";

/// sys_ids found by number, for the life of the process (one run): (table URL, number).
fn sys_id_cache() -> &'static Mutex<HashMap<(String, String), String>> {
    static CACHE: OnceLock<Mutex<HashMap<(String, String), String>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// What became of one event.
enum Done {
    Delivered,
    /// Not sent: a field the ITSM needs is empty (the reason is recorded with the event).
    Incomplete(String),
    Failed(String),
    /// The endpoint cannot take events now: this one stays pending and the sink stops.
    Unavailable(String),
    /// The endpoint refuses the sink itself: this event and the rest stay pending, now.
    Refused(String),
}

/// Events not yet settled for the sink.
pub(crate) fn pending(ledger: &Ledger, cfg: &HttpSinkConfig) -> Result<u64> {
    ledger.count_unsettled(&cfg.name)
}

/// Calls `f` with each pending event, oldest first, until it returns `false`.
fn each_pending(
    ledger: &Ledger,
    sink: &str,
    f: &mut dyn FnMut(StoredEvent) -> Result<bool>,
) -> Result<()> {
    let mark = ledger.sink_mark(sink)?;
    let settled = ledger.settled_after(sink, mark)?;
    let mut after = mark;
    loop {
        let batch = ledger.events_after(after, CHUNK)?;
        if batch.is_empty() {
            return Ok(());
        }
        for e in batch {
            after = e.id;
            if settled.contains(&e.id) {
                continue;
            }
            if !f(e)? {
                return Ok(());
            }
        }
    }
}

/// The ITSM number an event is about: its own, else the one the ledger learned since
/// (from a later report, or a ticket a mirroring sink created).
fn with_number(ledger: &Ledger, mut e: StoredEvent) -> Result<StoredEvent> {
    if e.itsm_number.is_empty()
        && let Some(n) = ledger.activity_number(&e.activity_id)?
    {
        e.itsm_number = n;
    }
    Ok(e)
}

/// Delivers the sink's pending events, oldest first.
pub(crate) fn deliver(
    ledger: &Ledger,
    cfg: &HttpSinkConfig,
    schema_fields: &[String],
) -> Result<SinkSummary> {
    let mut summary = SinkSummary {
        name: cfg.name.clone(),
        ..SinkSummary::default()
    };
    let unsettled = ledger.count_unsettled(&cfg.name)?;
    if unsettled == 0 {
        return Ok(summary);
    }
    let bar = crate::progress::delivery(&cfg.name, unsettled);
    let mut transport = Transport::new(cfg)?;
    // At error level, so that the sink's name is on every message under `-q` too.
    let span = tracing::error_span!("sink", name = %cfg.name);
    let _enter = span.enter();
    // An event the endpoint cannot take now holds back the later events of its Activity
    // (they must arrive in order), not everybody's: one record ServiceNow keeps answering
    // 503 for must not stall the whole outbox. Several in a row mean the endpoint is down.
    let mut held: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut unavailable_in_a_row = 0;
    each_pending(ledger, &cfg.name, &mut |e| {
        if crate::interrupt::requested().is_some() {
            // Stopping: no new request; the rest stay pending.
            return Ok(false);
        }
        if held.contains(&e.activity_id) {
            return Ok(true);
        }
        if ledger.later_delivered(&cfg.name, &e.activity_id, e.id)? {
            ledger.record_delivery(&cfg.name, e.id, Outcome::Skipped, 0, Some(SKIP_SUPERSEDED))?;
            summary.count_skip(SKIP_SUPERSEDED);
            return Ok(true);
        }
        let e = with_number(ledger, e)?;
        let done = deliver_one(ledger, cfg, &mut transport, &e, schema_fields)?;
        bar.inc(1);
        if !matches!(done, Done::Unavailable(_) | Done::Refused(_)) {
            unavailable_in_a_row = 0;
        }
        match done {
            Done::Delivered => summary.delivered += 1,
            Done::Incomplete(reason) => summary.count_incomplete(&reason),
            Done::Failed(error) => {
                tracing::error!(event = %e.key, activity = %e.activity_id, "delivery failed: {error}");
                summary.failed += 1;
                if summary.failures.len() < KEEP_FAILURES {
                    summary.failures.push(FailureNote {
                        event_id: e.key.clone(),
                        activity_id: e.activity_id.clone(),
                        error,
                    });
                }
            }
            Done::Refused(error) => {
                tracing::error!(event = %e.key, "the endpoint refuses this sink: {error}; every event stays pending");
                summary.error = Some(format!(
                    "{error}; undelivered events stay pending for the next run"
                ));
                return Ok(false);
            }
            Done::Unavailable(error) => {
                summary.error = Some(format!(
                    "{error}; undelivered events stay pending for the next run"
                ));
                unavailable_in_a_row += 1;
                if unavailable_in_a_row >= UNAVAILABLE_STOP {
                    tracing::error!(event = %e.key, "the endpoint cannot take events now: {error}; the rest stay pending");
                    return Ok(false);
                }
                tracing::error!(event = %e.key, activity = %e.activity_id, "not delivered now: {error}; the Activity's later events wait with it");
                held.insert(e.activity_id.clone());
            }
        }
        Ok(true)
    })?;
    ledger.advance_mark(&cfg.name)?;
    summary.pending = ledger.count_unsettled(&cfg.name)?;
    tracing::info!(
        delivered = summary.delivered,
        failed = summary.failed,
        skipped = summary.skipped,
        pending = summary.pending,
        "delivery finished"
    );
    Ok(summary)
}

fn failed(
    ledger: &Ledger,
    cfg: &HttpSinkConfig,
    e: &StoredEvent,
    attempts: u32,
    error: String,
) -> Result<Done> {
    ledger.record_delivery(&cfg.name, e.id, Outcome::Failed, attempts, Some(&error))?;
    Ok(Done::Failed(error))
}

fn delivered(
    ledger: &Ledger,
    cfg: &HttpSinkConfig,
    e: &StoredEvent,
    attempts: u32,
) -> Result<Done> {
    ledger.record_delivery(&cfg.name, e.id, Outcome::Delivered, attempts, None)?;
    Ok(Done::Delivered)
}

/// Maps a transport failure: permanent → the event fails; unavailable → it stays pending.
fn not_sent(
    ledger: &Ledger,
    cfg: &HttpSinkConfig,
    e: &StoredEvent,
    f: Failure,
    spent: u32,
) -> Result<Done> {
    match f {
        Failure::Permanent {
            message, attempts, ..
        } => failed(ledger, cfg, e, spent + attempts, message),
        Failure::Unavailable { message, .. } => Ok(Done::Unavailable(message)),
        Failure::Refused { message } => Ok(Done::Refused(message)),
    }
}

/// Sends one event as the sink's API wants it and records the outcome.
fn deliver_one(
    ledger: &Ledger,
    cfg: &HttpSinkConfig,
    t: &mut Transport,
    e: &StoredEvent,
    schema_fields: &[String],
) -> Result<Done> {
    let creates = cfg.api == Api::Table && e.itsm_number.is_empty() && cfg.create_missing;
    if let Some(reason) = incomplete(cfg, e) {
        ledger.record_delivery(&cfg.name, e.id, Outcome::Skipped, 0, Some(&reason))?;
        return Ok(Done::Incomplete(reason));
    }
    match cfg.api {
        Api::ImportSet | Api::Webhook => send_row(ledger, cfg, t, e, schema_fields),
        Api::Table if creates => create_ticket(ledger, cfg, t, e),
        Api::Table => update_ticket(ledger, cfg, t, e, schema_fields),
    }
}

/// Why the event may not be sent, if it may not: a field the ITSM needs is empty — the
/// Table API's number (unless the sink creates missing tickets), or a `required` field of
/// the sink's mapping. A mapping that does not render is not this: sending fails with its
/// error.
fn incomplete(cfg: &HttpSinkConfig, e: &StoredEvent) -> Option<String> {
    if cfg.api == Api::Table && e.itsm_number.is_empty() {
        return (!cfg.create_missing).then(|| SKIP_NO_NUMBER.to_string());
    }
    let m = cfg.mapping.as_ref().filter(|m| !m.required.is_empty())?;
    m.render(e).ok().and_then(|rec| m.missing_required(&rec))
}

/// Import Set or webhook: one request with the mapped row; an Import Set's answer says
/// whether ServiceNow applied it.
fn send_row(
    ledger: &Ledger,
    cfg: &HttpSinkConfig,
    t: &mut Transport,
    e: &StoredEvent,
    schema_fields: &[String],
) -> Result<Done> {
    let req = match encode::send_request(cfg, e, schema_fields) {
        Ok(r) => r,
        Err(err) => return failed(ledger, cfg, e, 0, format!("{err:#}")),
    };
    let reply = match t.send(&req) {
        Ok(r) => r,
        Err(f) => return not_sent(ledger, cfg, e, f, 0),
    };
    if cfg.api == Api::Webhook {
        return delivered(ledger, cfg, e, reply.attempts);
    }
    match encode::import_set_outcome(&reply.body) {
        RowOutcome::Accepted => delivered(ledger, cfg, e, reply.attempts),
        RowOutcome::Note(note) => {
            tracing::warn!(event = %e.key, activity = %e.activity_id, "ServiceNow took the row without applying it: {note}");
            delivered(ledger, cfg, e, reply.attempts)
        }
        RowOutcome::Error(msg) => failed(
            ledger,
            cfg,
            e,
            reply.attempts,
            format!("ServiceNow rejected the row (HTTP {}): {msg}", reply.status),
        ),
        RowOutcome::NotServiceNow(msg) => Ok(Done::Unavailable(format!(
            "POST {}: HTTP {} but {msg} (is the instance hibernating or behind a login page?)",
            cfg.url, reply.status
        ))),
    }
}

/// Mirroring: an event of an Activity without an ITSM number creates its ticket, recorded
/// with the Activity.
fn create_ticket(
    ledger: &Ledger,
    cfg: &HttpSinkConfig,
    t: &mut Transport,
    e: &StoredEvent,
) -> Result<Done> {
    let req = match encode::create_request(cfg, e) {
        Ok(r) => r,
        Err(err) => return failed(ledger, cfg, e, 0, format!("{err:#}")),
    };
    let reply = match t.send(&req) {
        Ok(r) => r,
        Err(f) => return not_sent(ledger, cfg, e, f, 0),
    };
    match encode::created_ticket(&reply.body) {
        Ok((number, sys_id)) => {
            tracing::info!(activity = %e.activity_id, number = %number, "ticket created");
            ledger.record_ticket(
                &cfg.name,
                &e.activity_id,
                &number,
                &sys_id,
                e.id,
                reply.attempts,
            )?;
            Ok(Done::Delivered)
        }
        Err(err) => failed(
            ledger,
            cfg,
            e,
            reply.attempts,
            format!(
                "POST {}: HTTP {}, {err:#}: a ticket may have been created; check before `retry --failed`",
                cfg.url, reply.status
            ),
        ),
    }
}

/// Table API: finds the ticket's sys_id by its number, then updates it.
fn update_ticket(
    ledger: &Ledger,
    cfg: &HttpSinkConfig,
    t: &mut Transport,
    e: &StoredEvent,
    schema_fields: &[String],
) -> Result<Done> {
    let number = e.itsm_number.as_str();
    if !encode::plain_token(number) {
        return failed(
            ledger,
            cfg,
            e,
            0,
            format!(
                "the ITSM number {number:?} is not a ticket number (letters, digits, - _ . only): \
                 not looked up, so that it cannot change the query"
            ),
        );
    }
    let (sys_id, spent) = match find_sys_id(ledger, cfg, t, e)? {
        Ok(found) => found,
        Err(done) => return Ok(done),
    };
    let req = match encode::update_request(cfg, &sys_id, e, schema_fields) {
        Ok(r) => r,
        Err(err) => return failed(ledger, cfg, e, spent, format!("{err:#}")),
    };
    match t.send(&req) {
        Ok(reply) => delivered(ledger, cfg, e, spent + reply.attempts),
        Err(f) => not_sent(ledger, cfg, e, f, spent),
    }
}

/// The sys_id of the event's ticket (a created ticket's, a cached look-up's, or a new
/// look-up's) and the attempts spent finding it; or, when it cannot be found, what became
/// of the event.
fn find_sys_id(
    ledger: &Ledger,
    cfg: &HttpSinkConfig,
    t: &mut Transport,
    e: &StoredEvent,
) -> Result<std::result::Result<(String, u32), Done>> {
    let number = e.itsm_number.as_str();
    let cache_key = (cfg.url.clone(), number.to_string());
    let known = match ledger.ticket_sys_id(&e.activity_id, number)? {
        Some(s) => Some(s),
        None => sys_id_cache()
            .lock()
            .map_err(|_| anyhow::anyhow!("sys_id cache poisoned"))?
            .get(&cache_key)
            .cloned(),
    };
    if let Some(s) = known {
        return Ok(Ok((s, 0)));
    }
    let reply = match t.send(&encode::lookup_request(cfg, number, &e.key)) {
        Ok(r) => r,
        Err(f) => return not_sent(ledger, cfg, e, f, 0).map(Err),
    };
    let spent = reply.attempts;
    let fail = |message: String| failed(ledger, cfg, e, spent, message).map(Err);
    let found = match encode::lookup_sys_id(&reply.body) {
        Ok(Some(found)) => found,
        Ok(None) => return fail(format!("no {number} in {}", cfg.table())),
        Err(err) => {
            return Ok(Err(Done::Unavailable(format!(
                "GET {}: HTTP {}: {err:#}",
                cfg.url, reply.status
            ))));
        }
    };
    // The record must be the one asked for, and its sys_id fit a URL.
    if let Some(other) = found
        .number
        .as_deref()
        .filter(|n| !n.eq_ignore_ascii_case(number))
    {
        return fail(format!(
            "the lookup of {number} in {} returned {other}",
            cfg.table()
        ));
    }
    if !encode::plain_token(&found.sys_id) {
        return fail(format!(
            "the lookup of {number} returned the sys_id {:?}, which cannot be a sys_id",
            found.sys_id
        ));
    }
    sys_id_cache()
        .lock()
        .map_err(|_| anyhow::anyhow!("sys_id cache poisoned"))?
        .insert(cache_key, found.sys_id.clone());
    Ok(Ok((found.sys_id, spent)))
}

fn preview_of(cfg: &HttpSinkConfig, req: &Request) -> RequestPreview {
    let mut headers = Vec::new();
    if let Some(scheme) = cfg.auth.scheme() {
        headers.push(format!("Authorization: {scheme} <redacted>"));
    }
    headers.push(format!("X-Idempotency-Key: {}", req.idempotency_key));
    RequestPreview {
        event_id: req.idempotency_key.clone(),
        method: req.method.as_str().to_string(),
        url: req.full_url(),
        headers,
        body: req
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok()),
    }
}

/// The first `limit` requests a delivery would send now, without sending anything.
pub(crate) fn preview(
    ledger: &Ledger,
    cfg: &HttpSinkConfig,
    schema_fields: &[String],
    limit: usize,
) -> Result<Vec<RequestPreview>> {
    let mut out = Vec::new();
    each_pending(ledger, &cfg.name, &mut |e| {
        let e = with_number(ledger, e)?;
        if incomplete(cfg, &e).is_some() {
            return Ok(true); // not sent
        }
        let reqs: Vec<Request> = match cfg.api {
            Api::ImportSet | Api::Webhook => vec![encode::send_request(cfg, &e, schema_fields)?],
            // (Not incomplete: the sink creates the ticket.)
            Api::Table if e.itsm_number.is_empty() => vec![encode::create_request(cfg, &e)?],
            Api::Table => match ledger.ticket_sys_id(&e.activity_id, &e.itsm_number)? {
                Some(sys_id) => vec![encode::update_request(cfg, &sys_id, &e, schema_fields)?],
                None => vec![
                    encode::lookup_request(cfg, &e.itsm_number, &e.key),
                    encode::update_request(
                        cfg,
                        &format!("<sys_id of {}>", e.itsm_number),
                        &e,
                        schema_fields,
                    )?,
                ],
            },
        };
        for r in &reqs {
            if out.len() < limit {
                out.push(preview_of(cfg, r));
            }
        }
        Ok(out.len() < limit)
    })?;
    Ok(out)
}
