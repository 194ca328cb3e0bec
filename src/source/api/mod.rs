//! `[source] type = "tangoe_api"`: Activities pulled from Tangoe's REST API
//! (`GET /1/activities`) instead of reports on a drop site. A pull is one report: listed as
//! `api-<pull time>` (RFC 3339 in UTC, to the millisecond: no two pulls share a name, so a
//! pull is never taken for an earlier one by its listing), its records one JSON object a line, read through the
//! same report schema as CSV and XLSX reports (aliases match JSON keys; a dotted path such
//! as `shipping_address.city` reaches a nested value), so that duplicate detection, dedupe,
//! the outbox, `status`, summaries and sinks work unchanged.
//!
//! Guarantees:
//! - All pages or nothing: a failed page fails the pull, and the run, before anything is
//!   listed; nothing is committed. A stop request (SIGTERM, SIGINT) abandons the pull: no
//!   request more, nothing listed, and the run ends with its signal's exit code.
//! - Incremental without a stored watermark: a pull's report records as its mtime the
//!   newest `updated_at` among its records, and the next run asks for `updated_at_gte` =
//!   that date (UTC) of the newest report from this source the ledger holds as processed,
//!   minus one day (the filter takes dates; rows seen again are unchanged). The watermark
//!   therefore moves only when a pull's report commits: after a crash or a failed page the
//!   next run asks again from the old one.
//! - `backfill --from --to` asks for exactly that window (`updated_at_gte`/`_lte`).
//! - The pull's file lives in a temporary folder removed when the source is dropped: the
//!   source itself writes nothing that outlives the run (a dry run writes nothing at all).

mod auth;
mod client;
pub(crate) mod config;
mod page;
mod pull;

use anyhow::{Context, Result};
use chrono::NaiveDate;

use super::{Fetched, Listed, Source};
use config::ApiSourceConfig;
use pull::{Pulled, Window};

/// The start of every pull's report name: the ledger's reports from this source.
pub(crate) const NAME_PREFIX: &str = "api-";

pub(crate) struct ApiSource {
    cfg: ApiSourceConfig,
    window: Window,
    dir: Option<tempfile::TempDir>,
    pulled: Option<Pulled>,
}

impl ApiSource {
    /// A nightly pull: from one day before the date of `watermark` (the newest `updated_at`
    /// of a processed pull, seconds since the epoch); everything when there is none.
    pub(crate) fn incremental(cfg: ApiSourceConfig, watermark: Option<i64>) -> ApiSource {
        let gte = watermark
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .and_then(|t| t.date_naive().pred_opt());
        ApiSource::new(cfg, Window { gte, lte: None })
    }

    /// A backfill: the records updated from `from` to `to` (dates, inclusive).
    pub(crate) fn backfill(cfg: ApiSourceConfig, from: NaiveDate, to: NaiveDate) -> ApiSource {
        ApiSource::new(
            cfg,
            Window {
                gte: Some(from),
                lte: Some(to),
            },
        )
    }

    fn new(cfg: ApiSourceConfig, window: Window) -> ApiSource {
        ApiSource {
            cfg,
            window,
            dir: None,
            pulled: None,
        }
    }
}

pub(crate) use pull::probe;

impl Source for ApiSource {
    fn list(&mut self) -> Result<Vec<Listed>> {
        let started = chrono::Utc::now();
        let name = format!(
            "{NAME_PREFIX}{}",
            started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        tracing::info!(
            updated_at_gte = ?self.window.gte.map(|d| d.to_string()),
            updated_at_lte = ?self.window.lte.map(|d| d.to_string()),
            "pulling Activities from the Tangoe API"
        );
        let dir = tempfile::Builder::new()
            .prefix("tangoe-ingest-pull-")
            .tempdir()
            .context("cannot create a temporary folder for the pull")?;
        let pulled = match pull::pull(&self.cfg, self.window, &dir.path().join("pull.jsonl")) {
            // Asked to stop: no request more, nothing listed; the next run asks again.
            Err(e) if crate::interrupt::is_interrupted(&e) => {
                tracing::warn!("{e}: the pull is abandoned; the next run asks again");
                return Ok(Vec::new());
            }
            other => {
                other.context("the pull from the Tangoe API failed; nothing was taken from it")?
            }
        };
        self.dir = Some(dir);
        let Some(pulled) = pulled else {
            tracing::info!("the API has no Activity in the window: nothing to read");
            return Ok(Vec::new());
        };
        // The newest record's time: the next pull starts from it once this commits.
        // A record dated in the future (a wrong clock or zone at Tangoe) must not move the
        // next pull past what exists: the watermark never passes the pull's own time.
        let mtime = pulled
            .newest
            .map_or(started.timestamp(), |n| n.min(started.timestamp()));
        let listed = Listed::new(name.into(), pulled.size, mtime);
        tracing::info!(report = %listed.name, records = pulled.records, "the pull is one report");
        self.pulled = Some(pulled);
        Ok(vec![listed])
    }

    fn fetch(&mut self, _report: &Listed) -> Result<Fetched> {
        let pulled = self
            .pulled
            .as_ref()
            .context("nothing was pulled: the API source lists before it fetches")?;
        Ok(Fetched {
            path: pulled.path.clone(),
            sha256: Some(pulled.sha256.clone()),
        })
    }

    fn selects_by_date(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_pull_starts_a_day_before_the_newest_update() {
        let cfg: config::RawApi = toml::from_str(
            "base_url = \"http://127.0.0.1:1\"\nauth = \"api_token\"\napi_token_env = \"T\"",
        )
        .unwrap();
        let cfg = cfg.resolve(std::path::Path::new("."), "t").unwrap();
        // 2026-12-05T10:00:00Z
        let s = ApiSource::incremental(cfg.clone(), Some(1_796_464_800));
        assert_eq!(s.window.gte, NaiveDate::from_ymd_opt(2026, 12, 4));
        assert_eq!(s.window.lte, None);
        let s = ApiSource::incremental(cfg, None);
        assert_eq!(s.window, Window::default());
    }
}
