//! `[[sink]] type = "http"`: the raw TOML table and its validated form.
//!
//! Secrets are not read here: the configuration names where they are (an environment
//! variable or a file) and they are loaded only when the sink is about to send, so `status`
//! and dry runs work without them and no secret sits in memory longer than needed.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::secret::Secret;
use crate::setting::{parse_duration, resolve};
use crate::template::Mapping;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpSink {
    name: Option<String>,
    api: String,
    url: String,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    bearer_token_env: Option<String>,
    bearer_token_file: Option<String>,
    mapping: Option<String>,
    timeout: Option<String>,
    max_attempts: Option<u32>,
    rate_limit: Option<String>,
    ca_file: Option<String>,
    create_missing: Option<bool>,
    method: Option<String>,
}

/// Which API the sink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `POST /api/now/import/{staging_table}`, one flat object per event.
    ImportSet,
    /// `GET` the record's sys_id by number, then `PATCH /api/now/table/{table}/{sys_id}`.
    Table,
    /// The mapped JSON as is, `POST` or `PUT`.
    Webhook,
}

impl Api {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Api::ImportSet => "servicenow_import_set",
            Api::Table => "servicenow_table",
            Api::Webhook => "webhook",
        }
    }
}

/// How requests authenticate.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    None,
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

impl Auth {
    pub(crate) fn scheme(&self) -> Option<&'static str> {
        match self {
            Auth::None => None,
            Auth::Basic { .. } => Some("Basic"),
            Auth::Bearer(_) => Some("Bearer"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookMethod {
    Post,
    Put,
}

pub(crate) struct HttpSinkConfig {
    pub(crate) name: String,
    pub(crate) api: Api,
    /// The endpoint: the import set URL, the table URL, or the webhook URL.
    pub(crate) url: String,
    pub(crate) auth: Auth,
    pub(crate) mapping: Option<Mapping>,
    /// Timeout, tries, backoff and extra trusted CA certificates.
    pub(crate) request: RequestKeys,
    /// The least time between two requests (from `rate_limit`).
    pub(crate) min_interval: Option<Duration>,
    pub(crate) create_missing: bool,
    pub(crate) method: WebhookMethod,
}

impl HttpSinkConfig {
    /// The table a `servicenow_table` URL points at (its last path segment).
    pub(crate) fn table(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or("")
    }
}

/// The environment variable that sets the first retry's wait (tests keep it short).
pub(crate) const BACKOFF_ENV: &str = "TANGOE_INGEST_HTTP_BACKOFF";

/// Parses "5/s", "100/m", "1000/h" into the least time between two requests.
pub(crate) fn parse_rate(s: &str) -> Result<Duration> {
    let (n, unit) = s
        .trim()
        .split_once('/')
        .with_context(|| format!("bad rate_limit {s:?} (e.g. \"5/s\", \"100/m\")"))?;
    let n: u32 = n
        .trim()
        .parse()
        .with_context(|| format!("bad rate_limit {s:?} (e.g. \"5/s\", \"100/m\")"))?;
    if n == 0 {
        bail!("rate_limit {s:?} allows no request at all");
    }
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => bail!("bad rate_limit unit {other:?} in {s:?} (use s, m or h)"),
    };
    Ok(per / n)
}

pub(crate) fn check_url(url: &str, what: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/').to_string();
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        bail!("{what}: url {url:?} must start with https:// (or http://)");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        bail!("{what}: url {url:?} has no host");
    }
    if authority.contains('@') {
        bail!(
            "{what}: the url must not carry credentials: use `username` and `password_env` or `password_file`"
        );
    }
    if url.contains(char::is_whitespace) {
        bail!("{what}: url {url:?} contains spaces");
    }
    Ok(url)
}

impl RawHttpSink {
    /// Validates the table; `index` is the sink's position (for names and messages).
    pub(crate) fn validate(
        self,
        base: &Path,
        origin: &str,
        index: usize,
        schema_fields: &[String],
    ) -> Result<HttpSinkConfig> {
        let name = self.name.clone().unwrap_or_else(|| {
            if index == 0 {
                "http".into()
            } else {
                format!("http-{}", index + 1)
            }
        });
        let what = format!("{origin}: [[sink]] {name:?}");
        let api = match self.api.as_str() {
            "servicenow_import_set" => Api::ImportSet,
            "servicenow_table" => Api::Table,
            "webhook" => Api::Webhook,
            other => bail!(
                "{what}: api {other:?} must be \"servicenow_import_set\", \"servicenow_table\" or \"webhook\""
            ),
        };
        let url = check_url(&self.url, &what)?;
        let auth = self.auth(base, &what, &name, &url)?;
        let mapping = match &self.mapping {
            Some(m) => Some(Mapping::named(m, base, schema_fields)?),
            None if api == Api::Webhook => None,
            None => bail!(
                "{what}: api {:?} needs a `mapping` (e.g. schemas/servicenow-ritm.toml)",
                api.as_str()
            ),
        };
        let create_missing = self.create_missing.unwrap_or(false);
        if create_missing {
            if api != Api::Table {
                bail!("{what}: create_missing applies to api \"servicenow_table\" only");
            }
            if mapping.as_ref().is_none_or(|m| m.create_fields.is_empty()) {
                bail!(
                    "{what}: create_missing = true needs a [create] section in the mapping (the new ticket's fields)"
                );
            }
        }
        let method = match self
            .method
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("POST") => WebhookMethod::Post,
            Some("PUT") => WebhookMethod::Put,
            Some(other) => bail!("{what}: method {other:?} must be \"POST\" or \"PUT\""),
        };
        if self.method.is_some() && api != Api::Webhook {
            bail!("{what}: `method` applies to api \"webhook\" only");
        }
        let request = request_keys(
            self.timeout.as_deref(),
            self.max_attempts,
            self.ca_file.as_deref(),
            base,
            &what,
        )?;
        let min_interval = match &self.rate_limit {
            Some(r) => Some(parse_rate(r).with_context(|| what.clone())?),
            None => None,
        };
        Ok(HttpSinkConfig {
            name,
            api,
            url,
            auth,
            mapping,
            request,
            min_interval,
            create_missing,
            method,
        })
    }

    /// Who the sink logs in as: basic (`username` and a password), a bearer token, or no
    /// one. Warns when credentials would go over plain http to another host.
    fn auth(&self, base: &Path, what: &str, name: &str, url: &str) -> Result<Auth> {
        let secret = |env: &Option<String>, file: &Option<String>, key: &str| {
            secret_keys(base, what, env.as_deref(), file.as_deref(), key)
        };
        let password = secret(&self.password_env, &self.password_file, "password")?;
        let bearer = secret(
            &self.bearer_token_env,
            &self.bearer_token_file,
            "bearer_token",
        )?;
        let auth = match (self.username.clone(), password, bearer) {
            (_, Some(_), Some(_)) => bail!("{what}: give a password or a bearer token, not both"),
            (Some(_), None, Some(_)) => {
                bail!("{what}: `username` goes with a password, not with a bearer token")
            }
            (Some(username), Some(password), None) => Auth::Basic { username, password },
            (None, Some(_), None) => bail!("{what}: a password needs a `username`"),
            (Some(_), None, None) => {
                bail!("{what}: `username` needs password_env or password_file")
            }
            (None, None, Some(token)) => Auth::Bearer(token),
            (None, None, None) => Auth::None,
        };
        if !matches!(auth, Auth::None) && plain_http_to_another_host(url) {
            tracing::warn!(sink = %name, "credentials would travel unencrypted over plain http: use https://");
        }
        Ok(auth)
    }
}

/// The secret named by the keys `{key}_env` (an environment variable) or `{key}_file` (a
/// file, relative to `base`): one or neither, not both.
pub(crate) fn secret_keys(
    base: &Path,
    what: &str,
    env: Option<&str>,
    file: Option<&str>,
    key: &str,
) -> Result<Option<Secret>> {
    match (env, file) {
        (Some(_), Some(_)) => bail!("{what}: give {key}_env or {key}_file, not both"),
        (Some(v), None) => {
            if v.is_empty() {
                bail!("{what}: {key}_env is empty: name the environment variable that holds it");
            }
            Ok(Some(Secret::env(&format!("{key}_env"), v)))
        }
        (None, Some(f)) => Ok(Some(Secret::file(&format!("{key}_file"), resolve(base, f)))),
        (None, None) => Ok(None),
    }
}

/// Whether `url` is plain `http://` to a host other than this one (credentials sent there
/// travel unencrypted).
pub(crate) fn plain_http_to_another_host(url: &str) -> bool {
    url.strip_prefix("http://").is_some_and(|rest| {
        let host = rest.split(['/', ':']).next().unwrap_or("");
        !matches!(host, "127.0.0.1" | "localhost" | "[::1]")
    })
}

/// How every HTTP client here sends a request (an HTTP sink, the API source).
#[derive(Debug, Clone)]
pub(crate) struct RequestKeys {
    /// Per request (`timeout`, default 30 s; more than zero).
    pub(crate) timeout: Duration,
    /// Tries per request, the first included (`max_attempts`, default 5; at least 1).
    pub(crate) max_attempts: u32,
    /// Certificates trusted on top of the bundled roots (`ca_file`).
    pub(crate) ca_certs: Vec<ureq::tls::Certificate<'static>>,
    /// The first retry's wait; later waits double (with jitter). 1 s, or
    /// `TANGOE_INGEST_HTTP_BACKOFF` (for tests).
    pub(crate) backoff: Duration,
}

/// Reads `timeout`, `max_attempts` and `ca_file` (relative to `base`), and the backoff;
/// `what` names the table in errors.
pub(crate) fn request_keys(
    timeout: Option<&str>,
    max_attempts: Option<u32>,
    ca_file: Option<&str>,
    base: &Path,
    what: &str,
) -> Result<RequestKeys> {
    let timeout = match timeout {
        Some(t) => parse_duration(t).with_context(|| format!("{what}: timeout"))?,
        None => Duration::from_secs(30),
    };
    if timeout.is_zero() {
        bail!("{what}: timeout must be more than zero");
    }
    let max_attempts = max_attempts.unwrap_or(5);
    if max_attempts == 0 {
        bail!("{what}: max_attempts must be at least 1");
    }
    let ca_certs = match ca_file {
        None => Vec::new(),
        Some(f) => ca_certs(&resolve(base, f), what)?,
    };
    let backoff = match std::env::var(BACKOFF_ENV) {
        Ok(v) => parse_duration(&v).context(BACKOFF_ENV)?,
        Err(_) => Duration::from_secs(1),
    };
    Ok(RequestKeys {
        timeout,
        max_attempts,
        ca_certs,
        backoff,
    })
}

/// The certificates in the PEM file at `path` (`ca_file`), at least one.
pub(crate) fn ca_certs(path: &Path, what: &str) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("{what}: cannot read ca_file {}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.with_context(|| format!("{what}: ca_file {} is not valid PEM", path.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        bail!("{what}: ca_file {} holds no certificate", path.display());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("5/s").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_rate("120/m").unwrap(), Duration::from_millis(500));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("5").is_err());
        assert!(parse_rate("5/d").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            check_url("https://x.service-now.com/api/now/table/sc_req_item/", "s").unwrap(),
            "https://x.service-now.com/api/now/table/sc_req_item"
        );
        assert!(check_url("ftp://x", "s").is_err());
        assert!(check_url("https://user:pw@x/", "s").is_err());
        assert!(check_url("https:///path", "s").is_err());
    }
}
