//! Logging in to the Tangoe API: the header each request carries.
//!
//! - `api_token` (v1): `API-Token: <token>` on every request.
//! - `client_credentials` (v2): `POST /v2/token` with `client_id`, `client_secret`,
//!   `subject` and `grant_type`, answered by `{access_token, token_type, expires_at}`; every
//!   request carries `Authorization: Bearer <access_token>`.
//!
//! Guarantees: a bearer token is used only until shortly before its `expires_at` (a minute
//! before, or half its life when it lives less than two minutes), then a new one is asked
//! for; secrets are read when the first request needs them, held as [`SecretString`] and
//! never logged.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use secrecy::{ExposeSecret, SecretString};

use super::client::{Call, Http};
use super::config::ApiAuth;

/// How long a token is taken to live when the answer gives no `expires_at` (Tangoe's
/// documented lifetime).
const DEFAULT_LIFE: Duration = Duration::from_secs(30 * 60);
/// A token is renewed this long before it expires (at most half its life).
const RENEW_MARGIN: Duration = Duration::from_secs(60);

/// A bearer token and when to stop using it.
struct Bearer {
    header: SecretString,
    renew_at: Instant,
}

enum How {
    Token(SecretString),
    Client {
        url: String,
        /// The token request's JSON body (it holds the client secret).
        body: SecretString,
        current: Option<Bearer>,
    },
}

pub(crate) struct Login {
    how: How,
    /// Tokens asked for so far (for the log).
    issued: u32,
}

impl Login {
    /// Reads the secrets `auth` names.
    pub(crate) fn new(auth: &ApiAuth, base_url: &str) -> Result<Login> {
        let how = match auth {
            ApiAuth::ApiToken(secret) => {
                let token = secret
                    .read()
                    .context("cannot load the source's API token")?;
                How::Token(SecretString::from(token.expose_secret().trim().to_string()))
            }
            ApiAuth::ClientCredentials {
                client_id,
                client_secret,
                subject,
            } => {
                let secret = client_secret
                    .read()
                    .context("cannot load the source's client secret")?;
                let body = serde_json::json!({
                    "client_id": client_id,
                    "client_secret": secret.expose_secret(),
                    "subject": subject,
                    "grant_type": "client_credentials",
                });
                How::Client {
                    url: format!("{base_url}/v2/token"),
                    body: SecretString::from(body.to_string()),
                    current: None,
                }
            }
        };
        Ok(Login { how, issued: 0 })
    }

    /// The header the next request carries; asks for a token first when the one held is
    /// about to expire (or there is none).
    pub(crate) fn header(&mut self, http: &mut Http) -> Result<(&'static str, SecretString)> {
        match &mut self.how {
            How::Token(t) => Ok(("API-Token", t.clone())),
            How::Client { url, body, current } => {
                if current
                    .as_ref()
                    .is_none_or(|b| Instant::now() >= b.renew_at)
                {
                    let fresh = ask_token(http, url, body)?;
                    self.issued += 1;
                    tracing::debug!(tokens = self.issued, "got a bearer token");
                    *current = Some(fresh);
                }
                let b = current.as_ref().expect("set above");
                Ok(("Authorization", b.header.clone()))
            }
        }
    }

    /// Drops the token held (the API refused it): the next header asks for a new one.
    /// Whether there was a token to drop (an API token cannot be renewed).
    pub(crate) fn forget(&mut self) -> bool {
        match &mut self.how {
            How::Token(_) => false,
            How::Client { current, .. } => current.take().is_some(),
        }
    }
}

fn ask_token(http: &mut Http, url: &str, body: &SecretString) -> Result<Bearer> {
    let answer = http
        .json(&Call {
            post: true,
            url,
            query: &[],
            login: None,
            body: Some(body),
        })
        .context("cannot get a token (auth = \"client_credentials\")")?;
    let token = answer["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .with_context(|| format!("POST {url}: the answer holds no access_token"))?;
    let life = match expires_in(&answer["expires_at"]) {
        Some(life) => life,
        None => {
            tracing::warn!(
                "POST {url}: no readable expires_at in the answer: taking the token to live 30 minutes"
            );
            DEFAULT_LIFE
        }
    };
    let margin = RENEW_MARGIN.min(life / 2);
    Ok(Bearer {
        header: SecretString::from(format!("Bearer {token}")),
        renew_at: Instant::now() + life.saturating_sub(margin),
    })
}

/// How long from now until `expires_at`: an RFC 3339 time, or seconds (or milliseconds)
/// since the epoch, as a number or a string. Zero when it has passed.
fn expires_in(v: &serde_json::Value) -> Option<Duration> {
    let now = chrono::Utc::now();
    let at = match v {
        serde_json::Value::Number(n) => epoch(n.as_f64()?)?,
        serde_json::Value::String(s) => match s.trim().parse::<f64>() {
            Ok(n) => epoch(n)?,
            Err(_) => chrono::DateTime::parse_from_rfc3339(s.trim())
                .ok()?
                .to_utc(),
        },
        _ => return None,
    };
    let ms = (at - now).num_milliseconds().max(0);
    Some(Duration::from_millis(ms as u64))
}

fn epoch(n: f64) -> Option<chrono::DateTime<chrono::Utc>> {
    // Past the year 33658 in seconds: milliseconds.
    let ms = if n > 1e12 { n } else { n * 1000.0 };
    chrono::DateTime::from_timestamp_millis(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_at_reads_as_a_time_or_epoch_seconds() {
        let in_90s = chrono::Utc::now() + chrono::Duration::seconds(90);
        for v in [
            serde_json::json!(in_90s.to_rfc3339()),
            serde_json::json!(in_90s.timestamp()),
            serde_json::json!(in_90s.timestamp().to_string()),
            serde_json::json!(in_90s.timestamp_millis()),
        ] {
            let d = expires_in(&v).unwrap();
            assert!(
                d > Duration::from_secs(85) && d <= Duration::from_secs(90),
                "{v}: {d:?}"
            );
        }
        assert_eq!(
            expires_in(&serde_json::json!("2000-01-01T00:00:00Z")),
            Some(Duration::ZERO)
        );
        assert_eq!(expires_in(&serde_json::json!("soon")), None);
        assert_eq!(expires_in(&serde_json::Value::Null), None);
    }
}
