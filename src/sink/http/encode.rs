//! Encoding: an event → the request body each API expects, and the reading of what the
//! ITSM answers. No I/O here.

use anyhow::{Context, Result};
use indexmap::IndexMap;
use serde_json::Value;

use super::config::{Api, HttpSinkConfig, WebhookMethod};
use super::transport::{Method, Request};
use crate::ledger::StoredEvent;
use crate::sink::canonical::canonical;

/// The event's fields as a JSON object: the sink's mapping, else the canonical event.
pub(crate) fn body(
    cfg: &HttpSinkConfig,
    e: &StoredEvent,
    schema_fields: &[String],
) -> Result<String> {
    let fields: IndexMap<String, Value> = match &cfg.mapping {
        Some(m) => m
            .render(e)
            .with_context(|| {
                format!(
                    "event {} (activity {}): the mapping does not render",
                    e.key, e.activity_id
                )
            })?
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect(),
        None => canonical(e, schema_fields),
    };
    Ok(serde_json::to_string(&fields)?)
}

/// The fields of a new ticket (the mapping's `[create]`).
pub(crate) fn create_body(cfg: &HttpSinkConfig, e: &StoredEvent) -> Result<String> {
    let m = cfg
        .mapping
        .as_ref()
        .context("create_missing needs a mapping")?;
    let fields = m.render_create(e).with_context(|| {
        format!(
            "event {} (activity {}): the mapping's [create] does not render",
            e.key, e.activity_id
        )
    })?;
    Ok(serde_json::to_string(&fields)?)
}

/// The one request that delivers an event to an Import Set or a webhook.
pub(crate) fn send_request(
    cfg: &HttpSinkConfig,
    e: &StoredEvent,
    schema_fields: &[String],
) -> Result<Request> {
    let method = match (cfg.api, cfg.method) {
        (Api::Webhook, WebhookMethod::Put) => Method::Put,
        _ => Method::Post,
    };
    Ok(Request {
        method,
        url: cfg.url.clone(),
        query: Vec::new(),
        body: Some(body(cfg, e, schema_fields)?),
        idempotency_key: e.key.clone(),
        answer_needed: cfg.api == Api::ImportSet,
    })
}

/// Whether `s` can stand in a Table API query or URL as it is: a ticket number
/// (`RITM0001234`) or a sys_id (32 hex digits) has letters, digits, `-`, `_` and `.` only.
/// Anything else (`^`, `=`, spaces) would change the query ServiceNow runs (an encoded query
/// joins conditions with `^`), or the path the update goes to.
pub(crate) fn plain_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `GET {table}?sysparm_query=number=...&sysparm_fields=sys_id,number` (`number` must be a
/// [`plain_token`]).
pub(crate) fn lookup_request(cfg: &HttpSinkConfig, number: &str, key: &str) -> Request {
    Request {
        method: Method::Get,
        url: cfg.url.clone(),
        query: vec![
            ("sysparm_query".into(), format!("number={number}")),
            ("sysparm_fields".into(), "sys_id,number".into()),
            ("sysparm_limit".into(), "1".into()),
        ],
        body: None,
        idempotency_key: key.to_string(),
        answer_needed: true,
    }
}

/// `PATCH {table}/{sys_id}` with the mapped fields.
pub(crate) fn update_request(
    cfg: &HttpSinkConfig,
    sys_id: &str,
    e: &StoredEvent,
    schema_fields: &[String],
) -> Result<Request> {
    Ok(Request {
        method: Method::Patch,
        url: format!("{}/{sys_id}", cfg.url),
        query: Vec::new(),
        body: Some(body(cfg, e, schema_fields)?),
        idempotency_key: e.key.clone(),
        answer_needed: false,
    })
}

/// `POST {table}` with the `[create]` fields.
pub(crate) fn create_request(cfg: &HttpSinkConfig, e: &StoredEvent) -> Result<Request> {
    Ok(Request {
        method: Method::Post,
        url: cfg.url.clone(),
        query: Vec::new(),
        body: Some(create_body(cfg, e)?),
        idempotency_key: e.key.clone(),
        answer_needed: true,
    })
}

/// What an Import Set's 2xx says about the row.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RowOutcome {
    /// Inserted or updated.
    Accepted,
    /// Accepted by the API but not applied (e.g. `ignored` by an "updates only" transform).
    Note(String),
    /// The transform failed for the row: a failed delivery, with ServiceNow's message.
    Error(String),
    /// Not a ServiceNow answer at all (e.g. the HTML page of a hibernating instance).
    NotServiceNow(String),
}

/// Reads `{"result": [{"status": "inserted" | "updated" | "ignored" | "error", ...}]}`.
pub(crate) fn import_set_outcome(body: &str) -> RowOutcome {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => {
            let start: String = body.trim().chars().take(120).collect();
            return RowOutcome::NotServiceNow(format!("the answer is not JSON: {start:?}"));
        }
    };
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let msg = err["message"]
            .as_str()
            .or_else(|| err.as_str())
            .unwrap_or("error");
        return RowOutcome::Error(match err["detail"].as_str().filter(|d| !d.is_empty()) {
            Some(d) => format!("{msg} ({d})"),
            None => msg.to_string(),
        });
    }
    let rows: Vec<&Value> = match &v["result"] {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![&v["result"]],
        _ => return RowOutcome::NotServiceNow("the answer has no `result`".into()),
    };
    let mut notes = Vec::new();
    for row in rows {
        let status = row["status"].as_str().unwrap_or("");
        let message = row["error_message"]
            .as_str()
            .or_else(|| row["status_message"].as_str())
            .filter(|m| !m.is_empty())
            .unwrap_or("")
            .to_string();
        match status {
            "error" => {
                let table = row["table"].as_str().unwrap_or("");
                let mut m = if message.is_empty() {
                    "the transform reported an error".to_string()
                } else {
                    message
                };
                if !table.is_empty() {
                    m = format!("{m} (target table {table})");
                }
                return RowOutcome::Error(m);
            }
            "inserted" | "updated" | "" => {}
            other => notes.push(if message.is_empty() {
                other.to_string()
            } else {
                format!("{other}: {message}")
            }),
        }
    }
    if notes.is_empty() {
        RowOutcome::Accepted
    } else {
        RowOutcome::Note(notes.join("; "))
    }
}

/// What a Table API lookup found: the record's sys_id, and its number when the answer
/// gives it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) sys_id: String,
    pub(crate) number: Option<String>,
}

/// The record in a Table API lookup's answer, if it exists.
pub(crate) fn lookup_sys_id(body: &str) -> Result<Option<Found>> {
    let v: Value = serde_json::from_str(body).context("the lookup's answer is not JSON")?;
    let result = v
        .get("result")
        .context("the lookup's answer has no `result`")?;
    let first = match result {
        Value::Array(a) => a.first(),
        Value::Object(_) => Some(result),
        _ => None,
    };
    Ok(first.and_then(|r| {
        let sys_id = r["sys_id"].as_str().filter(|s| !s.is_empty())?;
        Some(Found {
            sys_id: sys_id.to_string(),
            number: r["number"].as_str().map(str::to_string),
        })
    }))
}

/// The number and sys_id of a record the Table API created.
pub(crate) fn created_ticket(body: &str) -> Result<(String, String)> {
    let v: Value = serde_json::from_str(body).context("the answer to the create is not JSON")?;
    let r = &v["result"];
    let value = |k: &str| match &r[k] {
        Value::String(s) => Some(s.clone()),
        // `sysparm_display_value=all` shape
        Value::Object(o) => o.get("value").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    match (value("number"), value("sys_id")) {
        (Some(n), Some(s)) if !n.is_empty() && !s.is_empty() => Ok((n, s)),
        _ => anyhow::bail!("the answer to the create lacks result.number or result.sys_id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_set_rows() {
        assert_eq!(
            import_set_outcome(
                r#"{"import_set":"ISET1","staging_table":"u_x","result":[{"transform_map":"t","table":"sc_req_item","display_name":"number","display_value":"RITM1","record_link":"x","status":"updated","sys_id":"abc"}]}"#
            ),
            RowOutcome::Accepted
        );
        assert_eq!(
            import_set_outcome(r#"{"result":[{"status":"error","error_message":"Unable to resolve target record, coalesce values not present: number","table":"sc_req_item"}]}"#),
            RowOutcome::Error("Unable to resolve target record, coalesce values not present: number (target table sc_req_item)".into())
        );
        assert_eq!(
            import_set_outcome(
                r#"{"error":{"message":"Invalid table u_nope","detail":null},"status":"failure"}"#
            ),
            RowOutcome::Error("Invalid table u_nope".into())
        );
        assert_eq!(
            import_set_outcome(
                r#"{"result":[{"status":"ignored","status_message":"No field values changed"}]}"#
            ),
            RowOutcome::Note("ignored: No field values changed".into())
        );
        assert!(matches!(
            import_set_outcome("<html>Your instance is hibernating</html>"),
            RowOutcome::NotServiceNow(_)
        ));
    }

    #[test]
    fn lookups_and_creates() {
        assert_eq!(
            lookup_sys_id(r#"{"result":[{"sys_id":"a1","number":"RITM1"}]}"#).unwrap(),
            Some(Found {
                sys_id: "a1".into(),
                number: Some("RITM1".into())
            })
        );
        for ok in [
            "RITM0001234",
            "a1b2c3d4e5f60718293a4b5c6d7e8f90",
            "INC-1.2_3",
        ] {
            assert!(plain_token(ok), "{ok}");
        }
        for bad in [
            "RITM1^ORnumberISNOTEMPTY",
            "RITM1 2",
            "a/b",
            "",
            "x=y",
            "sys#1",
        ] {
            assert!(!plain_token(bad), "{bad}");
        }
        assert_eq!(lookup_sys_id(r#"{"result":[]}"#).unwrap(), None);
        assert!(lookup_sys_id("nope").is_err());
        assert_eq!(
            created_ticket(r#"{"result":{"sys_id":"s1","number":"RITM0010001","state":"1"}}"#)
                .unwrap(),
            ("RITM0010001".into(), "s1".into())
        );
        assert!(created_ticket(r#"{"result":{}}"#).is_err());
    }
}
