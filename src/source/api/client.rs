//! The wire to the Tangoe API: one blocking `ureq` agent built as the HTTP sinks build
//! theirs, the `rate_limit` pace before every request, and retries with exponential backoff
//! and jitter (`backon`).
//!
//! Guarantees: no request (a retry or a token request included) starts sooner after the one
//! before it than `rate_limit` allows; a 2xx whose body is not whole JSON (a page cut off
//! mid-body) is never taken as an answer: it is retried like a 5xx; a 429 waits as
//! `Retry-After` says (seconds or an HTTP date), else backs off; after the last attempt the
//! request fails. Credentials and request bodies never reach the log.

use std::time::Duration;

use anyhow::Result;
use secrecy::{ExposeSecret, SecretString};

use super::config::ApiSourceConfig;
use crate::sink::http::transport::{
    Pace, Retries, agent, detail, parse_retry_after, transient, with_query,
};

/// A page is read up to this size (1,000 records of a few KiB each fit many times over).
const MAX_BODY: u64 = 64 << 20;

/// One request.
pub(crate) struct Call<'a> {
    pub(crate) post: bool,
    pub(crate) url: &'a str,
    pub(crate) query: &'a [(String, String)],
    /// A header that logs in (`API-Token`, `Authorization`).
    pub(crate) login: Option<(&'static str, &'a SecretString)>,
    /// A JSON body (the token request's; it holds a secret).
    pub(crate) body: Option<&'a SecretString>,
}

impl Call<'_> {
    /// The URL with its query, percent-encoded as sent.
    pub(crate) fn full_url(&self) -> String {
        with_query(self.url, self.query)
    }

    fn method(&self) -> &'static str {
        if self.post { "POST" } else { "GET" }
    }
}

/// The API refused the credentials (HTTP 401): a token may have expired early.
#[derive(Debug)]
pub(crate) struct Unauthorized(pub(crate) String);

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unauthorized {}

pub(crate) enum Attempt {
    Retry {
        message: String,
        after: Option<Duration>,
    },
    Fail(anyhow::Error),
}

pub(crate) struct Http {
    agent: ureq::Agent,
    pace: Pace,
    max_attempts: u32,
    backoff: Duration,
}

impl Http {
    pub(crate) fn new(cfg: &ApiSourceConfig) -> Http {
        Http {
            agent: agent(cfg.request.timeout, &cfg.request.ca_certs),
            pace: Pace::new(Some(cfg.min_interval)),
            max_attempts: cfg.request.max_attempts,
            backoff: cfg.request.backoff,
        }
    }

    /// The same client trying each request once (`check`: a quick answer, one request).
    pub(crate) fn single_try(mut self) -> Http {
        self.max_attempts = 1;
        self
    }

    /// Sends `call` until a 2xx with a whole JSON body, retrying what may pass on a second
    /// try; fails with [`Unauthorized`] on a 401, at once on any other 4xx.
    pub(crate) fn json(&mut self, call: &Call<'_>) -> Result<serde_json::Value> {
        self.json_each_try(|http| http.attempt(call))
    }

    /// As [`Http::json`], building the request anew for each try (`try_once` sends one),
    /// so that a retry after a long wait logs in with a header fresh at that moment.
    pub(crate) fn json_each_try(
        &mut self,
        mut try_once: impl FnMut(&mut Http) -> Result<serde_json::Value, Attempt>,
    ) -> Result<serde_json::Value> {
        let mut retries = Retries::new(self.backoff, self.max_attempts);
        let mut attempts = 0u32;
        loop {
            crate::interrupt::check()?;
            attempts += 1;
            let (message, after) = match try_once(self) {
                Ok(v) => return Ok(v),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry { message, after }) => (message, after),
            };
            let wait = retries.wait(&message, after).map_err(anyhow::Error::msg)?;
            tracing::warn!(
                attempt = attempts,
                wait_ms = wait.as_millis() as u64,
                "{message}: retrying"
            );
            std::thread::sleep(wait);
        }
    }

    /// Sends `call` once (after the pace allows it).
    pub(crate) fn attempt(&mut self, call: &Call<'_>) -> Result<serde_json::Value, Attempt> {
        self.pace.wait();
        let url = call.full_url();
        let what = format!("{} {url}", call.method());
        tracing::debug!(method = call.method(), url = %url, "request");
        let mut builder = ureq::http::Request::builder()
            .method(call.method())
            .uri(&url)
            .header("Accept", "application/json");
        if let Some((name, value)) = call.login {
            builder = builder.header(name, value.expose_secret());
        }
        let fail = |e: ureq::http::Error| {
            Attempt::Fail(anyhow::anyhow!("cannot build the request {what}: {e}"))
        };
        let result = match call.body {
            Some(body) => {
                let r = builder
                    .header("Content-Type", "application/json")
                    .body(body.expose_secret().to_string())
                    .map_err(fail)?;
                self.agent.run(r)
            }
            None => self.agent.run(builder.body(()).map_err(fail)?),
        };
        let mut resp = result.map_err(|e| classify(e, &what))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp.body_mut().with_config().limit(MAX_BODY).read_to_vec();
        tracing::debug!(status, url = %url, "response");
        match status {
            200..=299 => {
                let body = body.map_err(|e| Attempt::Retry {
                    message: format!("{what}: the answer was cut off ({e})"),
                    after: None,
                })?;
                serde_json::from_slice(&body).map_err(|e| Attempt::Retry {
                    message: format!("{what}: the answer is not whole JSON ({e})"),
                    after: None,
                })
            }
            408 | 429 | 500 | 502 | 503 | 504 => Err(Attempt::Retry {
                message: format!("{what}: HTTP {status}{}", body_detail(body)),
                after: retry_after,
            }),
            401 => Err(Attempt::Fail(anyhow::Error::new(Unauthorized(format!(
                "{what}: HTTP 401{}: check the source's credentials",
                body_detail(body)
            ))))),
            _ => Err(Attempt::Fail(anyhow::anyhow!(
                "{what}: HTTP {status}{}",
                body_detail(body)
            ))),
        }
    }
}

fn body_detail(body: Result<Vec<u8>, ureq::Error>) -> String {
    body.map(|b| detail(&String::from_utf8_lossy(&b)))
        .unwrap_or_default()
}

fn classify(e: ureq::Error, what: &str) -> Attempt {
    match transient(&e, what) {
        Some(message) => Attempt::Retry {
            message,
            after: None,
        },
        None => Attempt::Fail(anyhow::anyhow!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_percent_encoded() {
        let q = vec![
            ("updated_at_gte".to_string(), "2026-12-05".to_string()),
            ("order".to_string(), "updated_at asc".to_string()),
        ];
        let c = Call {
            post: false,
            url: "https://x/1/activities",
            query: &q,
            login: None,
            body: None,
        };
        assert_eq!(
            c.full_url(),
            "https://x/1/activities?updated_at_gte=2026-12-05&order=updated_at%20asc"
        );
    }
}
