//! `[source] type = "tangoe_api"`: the raw TOML table and its validated form.
//!
//! Guarantees: a configuration that validates names one way to log in with every secret it
//! needs (from an environment variable or a file, as the HTTP sinks take theirs); secrets
//! are only named here and read when a pull starts, so `status` and `--help` work without
//! them. `filters` never override the parameters the source sets itself (paging and the
//! `updated_at` window).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::secret::Secret;
use crate::sink::http::config::{
    RequestKeys, check_url, parse_rate, plain_http_to_another_host, request_keys, secret_keys,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    base_url: String,
    auth: String,
    api_token_env: Option<String>,
    api_token_file: Option<String>,
    client_id: Option<String>,
    client_secret_env: Option<String>,
    client_secret_file: Option<String>,
    subject: Option<String>,
    per_page: Option<u32>,
    records_key: Option<String>,
    #[serde(default)]
    filters: toml::Table,
    rate_limit: Option<String>,
    timeout: Option<String>,
    ca_file: Option<String>,
    max_attempts: Option<u32>,
}

/// How the source logs in.
#[derive(Debug, Clone)]
pub(crate) enum ApiAuth {
    /// v1: every request carries `API-Token: <token>`.
    ApiToken(Secret),
    /// v2: `POST /v2/token` answers a bearer token valid until its `expires_at`.
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
        subject: String,
    },
}

/// A validated `[source] type = "tangoe_api"`.
#[derive(Debug, Clone)]
pub(crate) struct ApiSourceConfig {
    /// The site's root, e.g. `https://acme.thefutureis.mobi` (no trailing `/`).
    pub(crate) base_url: String,
    pub(crate) auth: ApiAuth,
    pub(crate) per_page: u32,
    /// The key of the answer's object that holds the records; `None`: the answer is the
    /// array of records itself (or an object with one array of objects).
    pub(crate) records_key: Option<String>,
    /// Extra query parameters sent with every page, in the configured order.
    pub(crate) filters: Vec<(String, String)>,
    /// The least time between two requests (from `rate_limit`, default `100/m`).
    pub(crate) min_interval: Duration,
    /// Timeout, tries, backoff and extra trusted CA certificates.
    pub(crate) request: RequestKeys,
}

/// Query parameters the source sets itself.
const OWN_PARAMS: &[&str] = &["page", "per_page", "updated_at_gte", "updated_at_lte"];

impl RawApi {
    pub(crate) fn resolve(self, base: &Path, origin: &str) -> Result<ApiSourceConfig> {
        let what = format!("{origin}: [source] (tangoe_api)");
        let base_url = check_url(&self.base_url, &what)?;
        let auth = self.auth(base, &what)?;
        if plain_http_to_another_host(&base_url) {
            tracing::warn!(
                "[source] base_url: credentials would travel unencrypted over plain http: use https://"
            );
        }
        let per_page = self.per_page.unwrap_or(100);
        if !(1..1000).contains(&per_page) {
            bail!("{what}: per_page is {per_page}; Tangoe takes 1 to 999");
        }
        let records_key = match self.records_key {
            Some(k) if k.trim().is_empty() => bail!("{what}: records_key is empty"),
            other => other,
        };
        let mut filters = Vec::new();
        for (k, v) in self.filters {
            if OWN_PARAMS.contains(&k.as_str()) {
                bail!(
                    "{what}: filters.{k} is set by the source itself (paging and the updated_at \
                     window); remove it (use `backfill --from --to` for a window of your own)"
                );
            }
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => bail!(
                    "{what}: filters.{k} is {other}; a filter is a string, a number or a boolean"
                ),
            };
            filters.push((k, v));
        }
        let min_interval = parse_rate(self.rate_limit.as_deref().unwrap_or("100/m"))
            .with_context(|| what.clone())?;
        let request = request_keys(
            self.timeout.as_deref(),
            self.max_attempts,
            self.ca_file.as_deref(),
            base,
            &what,
        )?;
        Ok(ApiSourceConfig {
            base_url,
            auth,
            per_page,
            records_key,
            filters,
            min_interval,
            request,
        })
    }

    /// The way to log in `auth` names, with the keys it needs and none of the other's.
    fn auth(&self, base: &Path, what: &str) -> Result<ApiAuth> {
        let secret = |env: &Option<String>, file: &Option<String>, key: &str| {
            secret_keys(base, what, env.as_deref(), file.as_deref(), key)
        };
        let token = secret(&self.api_token_env, &self.api_token_file, "api_token")?;
        let client_secret = secret(
            &self.client_secret_env,
            &self.client_secret_file,
            "client_secret",
        )?;
        match self.auth.as_str() {
            "api_token" => {
                if client_secret.is_some() || self.client_id.is_some() || self.subject.is_some() {
                    bail!(
                        "{what}: client_id, client_secret_* and subject go with auth = \"client_credentials\""
                    );
                }
                let token = token.with_context(|| {
                    format!("{what}: auth = \"api_token\" needs api_token_env or api_token_file")
                })?;
                Ok(ApiAuth::ApiToken(token))
            }
            "client_credentials" => {
                if token.is_some() {
                    bail!("{what}: api_token_* goes with auth = \"api_token\"");
                }
                let need = |v: &Option<String>, key: &str| -> Result<String> {
                    match v {
                        Some(s) if !s.trim().is_empty() => Ok(s.clone()),
                        _ => bail!("{what}: auth = \"client_credentials\" needs `{key}`"),
                    }
                };
                Ok(ApiAuth::ClientCredentials {
                    client_id: need(&self.client_id, "client_id")?,
                    client_secret: client_secret.with_context(|| {
                        format!(
                            "{what}: auth = \"client_credentials\" needs client_secret_env or client_secret_file"
                        )
                    })?,
                    subject: need(&self.subject, "subject")?,
                })
            }
            other => {
                bail!("{what}: auth {other:?} must be \"api_token\" or \"client_credentials\"")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(toml: &str) -> Result<ApiSourceConfig> {
        let raw: RawApi = toml::from_str(toml)?;
        raw.resolve(Path::new("/etc"), "t.toml")
    }

    #[test]
    fn a_minimal_table_takes_the_documented_defaults() {
        let c = read(
            "base_url = \"https://acme.thefutureis.mobi/\"\nauth = \"api_token\"\napi_token_env = \"T\"",
        )
        .unwrap();
        assert_eq!(c.base_url, "https://acme.thefutureis.mobi");
        assert_eq!(c.per_page, 100);
        assert_eq!(c.min_interval, Duration::from_millis(600));
        assert_eq!(c.request.timeout, Duration::from_secs(30));
        assert!(c.filters.is_empty());
    }

    #[test]
    fn mistakes_are_named() {
        let base = "base_url = \"https://x\"\n";
        for (toml, says) in [
            ("auth = \"api_token\"", "needs api_token_env"),
            (
                "auth = \"client_credentials\"\nclient_id = \"c\"\nclient_secret_env = \"S\"",
                "needs `subject`",
            ),
            (
                "auth = \"oauth\"\napi_token_env = \"T\"",
                "must be \"api_token\"",
            ),
            (
                "auth = \"api_token\"\napi_token_env = \"T\"\nper_page = 1000",
                "1 to 999",
            ),
            (
                "auth = \"api_token\"\napi_token_env = \"T\"\nfilters = { page = 2 }",
                "filters.page is set by the source",
            ),
            (
                "auth = \"api_token\"\napi_token_env = \"T\"\napi_token_file = \"f\"",
                "not both",
            ),
        ] {
            let e = format!("{:#}", read(&format!("{base}{toml}")).unwrap_err());
            assert!(e.contains(says), "{toml}: {e}");
        }
    }
}
