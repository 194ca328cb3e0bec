//! The wire: one blocking `ureq` agent per sink, authentication, a client-side pace, and
//! retries with exponential backoff and jitter (`backon`).
//!
//! Retried: connection failures, timeouts, 408, 429 (waiting as `Retry-After` says, in
//! seconds or as an HTTP date) and 500/502/503/504. Any other non-2xx answer is a permanent
//! failure of the request. The `Authorization` value is built here and never leaves this
//! module: logs show it as `<redacted>`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use backon::{BackoffBuilder, ExponentialBuilder};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

use super::config::{Auth, HttpSinkConfig};

/// A `Retry-After` longer than this is not waited for: the request fails for this run (an
/// HTTP sink's events stay pending; a pull is asked again by the next run).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// The longest wait between two attempts, whatever the backoff says.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The waits between the tries of one request: from `backoff`, doubling with jitter up to
/// a minute, `max_attempts - 1` of them; or what the server's `Retry-After` asks.
pub(crate) struct Retries {
    delays: backon::ExponentialBackoff,
    tries: u32,
}

impl Retries {
    pub(crate) fn new(backoff: Duration, max_attempts: u32) -> Retries {
        Retries {
            delays: ExponentialBuilder::default()
                .with_min_delay(backoff)
                .with_max_delay(MAX_BACKOFF.max(backoff))
                .with_jitter()
                .with_max_times(max_attempts.saturating_sub(1) as usize)
                .build(),
            tries: 0,
        }
    }

    /// After a try that failed with `message` (and the server's `Retry-After`, if any):
    /// how long to wait before the next one, or why there is none.
    pub(crate) fn wait(
        &mut self,
        message: &str,
        after: Option<Duration>,
    ) -> Result<Duration, String> {
        self.tries += 1;
        let Some(backoff) = self.delays.next() else {
            return Err(format!("{message} (gave up after {} attempts)", self.tries));
        };
        match after {
            Some(a) if a > MAX_RETRY_AFTER => Err(format!(
                "{message}; the server asks to wait {}s, longer than a run waits",
                a.as_secs()
            )),
            Some(a) => Ok(a),
            None => Ok(backoff),
        }
    }
}
/// Response bodies are read up to this size (ServiceNow answers are small).
const MAX_BODY: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Put,
    Patch,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// One request, as the encoder built it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) query: Vec<(String, String)>,
    /// JSON.
    pub(crate) body: Option<String>,
    /// The event's id, sent as `X-Idempotency-Key`.
    pub(crate) idempotency_key: String,
    /// The answer's body is read for what it says (an Import Set's row status, a lookup).
    /// Otherwise a 2xx alone delivers, even when its body is cut off: sending again would
    /// repeat what the endpoint already did.
    pub(crate) answer_needed: bool,
}

impl Request {
    /// The URL with its query, percent-encoded as sent.
    pub(crate) fn full_url(&self) -> String {
        with_query(&self.url, &self.query)
    }
}

/// `url` with `query` appended, percent-encoded as sent.
pub(crate) fn with_query(url: &str, query: &[(String, String)]) -> String {
    if query.is_empty() {
        return url.to_string();
    }
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("{url}?{}", q.join("&"))
}

/// Percent-encodes a query component (RFC 3986 unreserved characters pass).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A 2xx answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
    /// Attempts it took.
    pub(crate) attempts: u32,
}

/// Why a request did not get a 2xx.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The ITSM refused this request for good (4xx, a redirect...): the event fails.
    Permanent { message: String, attempts: u32 },
    /// The endpoint could not take it now (retries exhausted, a long Retry-After, TLS or
    /// configuration trouble): the event stays pending and the sink stops for this run.
    Unavailable { message: String },
    /// The endpoint refused the sink itself (credentials, a redirecting `url`): every event
    /// would get the same answer. The event stays pending and the sink stops at once.
    Refused { message: String },
}

enum Attempt {
    Retry {
        message: String,
        after: Option<Duration>,
    },
    Permanent {
        message: String,
    },
    Unavailable(String),
    Refused(String),
}

pub(crate) struct Transport {
    agent: ureq::Agent,
    authorization: Option<SecretString>,
    auth_scheme: Option<&'static str>,
    max_attempts: u32,
    backoff: Duration,
    pace: Pace,
}

/// A client-side cap on the request rate (`rate_limit`): consecutive requests start at
/// least `min_interval` apart, so no span shorter than `n` intervals holds more than `n`
/// request starts.
/// Shared with the Tangoe API source.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    min_interval: Option<Duration>,
    next_slot: Option<Instant>,
}

impl Pace {
    pub(crate) fn new(min_interval: Option<Duration>) -> Pace {
        Pace {
            min_interval,
            next_slot: None,
        }
    }

    /// Waits until the next request may start, and books the slot after it.
    pub(crate) fn wait(&mut self) {
        let Some(interval) = self.min_interval else {
            return;
        };
        let now = Instant::now();
        if let Some(slot) = self.next_slot
            && slot > now
        {
            std::thread::sleep(slot - now);
        }
        self.next_slot = Some(Instant::now().max(self.next_slot.unwrap_or(now)) + interval);
    }
}

/// A blocking agent as every HTTP client of the job uses it: a global `timeout` per
/// request, no redirects followed, non-2xx answers as answers (not errors), the bundled
/// Mozilla roots plus `ca_certs`.
pub(crate) fn agent(
    timeout: Duration,
    ca_certs: &[ureq::tls::Certificate<'static>],
) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if !ca_certs.is_empty() {
        let mut roots: Vec<ureq::tls::Certificate<'static>> =
            webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()))
                .collect();
        roots.extend(ca_certs.iter().cloned());
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent(concat!("tangoe-ingest/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build())
        .build()
        .into()
}

impl Transport {
    /// Builds the agent and loads the sink's secret.
    pub(crate) fn new(cfg: &HttpSinkConfig) -> Result<Transport> {
        let authorization = match &cfg.auth {
            Auth::None => None,
            Auth::Basic { username, password } => {
                let password = password.read().context("cannot load the sink's password")?;
                let raw = format!("{username}:{}", password.expose_secret());
                Some(SecretString::from(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )))
            }
            Auth::Bearer(token) => {
                let token = token
                    .read()
                    .context("cannot load the sink's bearer token")?;
                Some(SecretString::from(format!(
                    "Bearer {}",
                    token.expose_secret().trim()
                )))
            }
        };
        let agent = agent(cfg.request.timeout, &cfg.request.ca_certs);
        Ok(Transport {
            agent,
            authorization,
            auth_scheme: cfg.auth.scheme(),
            max_attempts: cfg.request.max_attempts,
            backoff: cfg.request.backoff,
            pace: Pace::new(cfg.min_interval),
        })
    }

    /// One try per request, however many the sink's `max_attempts` allows (a probe).
    pub(crate) fn single_try(mut self) -> Transport {
        self.max_attempts = 1;
        self
    }

    /// Sends with retries until a 2xx, a permanent failure, or the attempts run out.
    pub(crate) fn send(&mut self, req: &Request) -> Result<Reply, Failure> {
        let mut retries = Retries::new(self.backoff, self.max_attempts);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.attempt(req) {
                Ok((status, body)) => {
                    return Ok(Reply {
                        status,
                        body,
                        attempts,
                    });
                }
                Err(Attempt::Permanent { message }) => {
                    return Err(Failure::Permanent { message, attempts });
                }
                Err(Attempt::Unavailable(message)) => return Err(Failure::Unavailable { message }),
                Err(Attempt::Refused(message)) => return Err(Failure::Refused { message }),
                Err(Attempt::Retry { message, after }) => {
                    let wait = retries
                        .wait(&message, after)
                        .map_err(|message| Failure::Unavailable { message })?;
                    tracing::warn!(url = %req.url, attempt = attempts, wait_ms = wait.as_millis() as u64, "{message}: retrying");
                    std::thread::sleep(wait);
                }
            }
        }
    }

    fn attempt(&mut self, req: &Request) -> Result<(u16, String), Attempt> {
        self.pace.wait();
        let url = req.full_url();
        tracing::debug!(
            method = req.method.as_str(),
            url = %url,
            authorization = self.auth_scheme.map(|s| format!("{s} <redacted>")).unwrap_or_default(),
            x_idempotency_key = %req.idempotency_key,
            "request"
        );
        let builder = ureq::http::Request::builder()
            .method(req.method.as_str())
            .uri(&url)
            .header("Accept", "application/json")
            .header("X-Idempotency-Key", &req.idempotency_key);
        let builder = match &self.authorization {
            Some(a) => builder.header("Authorization", a.expose_secret()),
            None => builder,
        };
        let result = match &req.body {
            Some(body) => {
                let r = builder
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .map_err(|e| {
                        Attempt::Unavailable(format!("cannot build the request to {url}: {e}"))
                    })?;
                self.agent.run(r)
            }
            None => {
                let r = builder.body(()).map_err(|e| {
                    Attempt::Unavailable(format!("cannot build the request to {url}: {e}"))
                })?;
                self.agent.run(r)
            }
        };
        let mut resp = result.map_err(|e| classify(&e, req))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match resp.body_mut().with_config().limit(MAX_BODY).read_to_vec() {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) if (200..300).contains(&status) && !req.answer_needed => String::new(),
            Err(e) if (200..300).contains(&status) => {
                return Err(Attempt::Retry {
                    message: format!(
                        "{} {url}: reading the answer failed: {e}",
                        req.method.as_str()
                    ),
                    after: None,
                });
            }
            Err(_) => String::new(),
        };
        tracing::debug!(status, url = %url, "response");
        let what = format!("{} {url}", req.method.as_str());
        match status {
            200..=299 => Ok((status, body)),
            408 | 429 | 500 | 502 | 503 | 504 => Err(Attempt::Retry {
                message: format!("{what}: HTTP {status}{}", detail(&body)),
                after: retry_after,
            }),
            // The sink's configuration, not the event: every event would get the same answer
            // (and each refused login counts against the account). The sink stops for this
            // run and the events stay pending for when it is fixed.
            300..=399 => Err(Attempt::Refused(format!(
                "{what}: HTTP {status}, redirected to {}: set `url` to the final address",
                location.as_deref().unwrap_or("(no Location)")
            ))),
            // 403 stays the event's: ServiceNow answers it for one record an ACL protects.
            401 => Err(Attempt::Refused(format!(
                "{what}: HTTP {status}{}: check the sink's credentials and the account's roles",
                detail(&body)
            ))),
            403 => Err(Attempt::Permanent {
                message: format!(
                    "{what}: HTTP {status}{}: check the account's roles and the record's ACLs",
                    detail(&body)
                ),
            }),
            _ => Err(Attempt::Permanent {
                message: format!("{what}: HTTP {status}{}", detail(&body)),
            }),
        }
    }
}

fn classify(e: &ureq::Error, req: &Request) -> Attempt {
    let what = format!("{} {}", req.method.as_str(), req.url);
    match transient(e, &what) {
        Some(message) => Attempt::Retry {
            message,
            after: None,
        },
        None => Attempt::Unavailable(format!("{what}: {e}")),
    }
}

/// For an error a second try may not meet (a timeout, a connection refused or cut, a
/// stalled body): what to say of it. `None` for the others (TLS, a bad URL...).
pub(crate) fn transient(e: &ureq::Error, what: &str) -> Option<String> {
    match e {
        ureq::Error::Timeout(t) => Some(format!("{what}: timed out ({t})")),
        ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled => Some(format!("{what}: {e}")),
        _ => None,
    }
}

/// ServiceNow's `{"error": {"message", "detail"}}`, or the start of any other body.
pub(crate) fn detail(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return String::new();
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let err = &v["error"];
        let msg = err["message"]
            .as_str()
            .or_else(|| err.as_str())
            .or_else(|| v["message"].as_str());
        if let Some(msg) = msg {
            return match err["detail"].as_str().filter(|d| !d.is_empty()) {
                Some(d) => format!(": {msg} ({d})"),
                None => format!(": {msg}"),
            };
        }
    }
    let mut s: String = body.chars().take(300).collect();
    if s.len() < body.len() {
        s.push('…');
    }
    format!(": {}", s.replace(['\r', '\n'], " "))
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110).
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
    Some(Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn servicenow_error_bodies() {
        assert_eq!(
            detail(
                r#"{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}"#
            ),
            ": User Not Authenticated (Required to provide Auth information)"
        );
        assert_eq!(detail(""), "");
        assert_eq!(detail("<html>\nbusy</html>"), ": <html> busy</html>");
    }

    #[test]
    fn query_is_percent_encoded() {
        let r = Request {
            method: Method::Get,
            url: "https://x/api/now/table/sc_req_item".into(),
            query: vec![("sysparm_query".into(), "number=RITM1234".into())],
            body: None,
            idempotency_key: "k".into(),
            answer_needed: true,
        };
        assert_eq!(
            r.full_url(),
            "https://x/api/now/table/sc_req_item?sysparm_query=number%3DRITM1234"
        );
    }
}
