//! A pull: every page of `GET /1/activities` for one `updated_at` window, written to one
//! report file (JSON Lines: one record a line, in the order the pages gave them), hashed as
//! it is written.
//!
//! Guarantees: all pages or nothing: a page that still fails after its retries fails the
//! whole pull and no report comes of it. Pages are asked for one after another from 1 until
//! one holds fewer than `per_page` records. A 401 under `client_credentials` asks for a new
//! token once before the page fails.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use super::auth::Login;
use super::client::{Attempt, Call, Http, Unauthorized};
use super::config::ApiSourceConfig;
use super::page;

/// The most pages one pull asks for (999 records a page: about ten million records).
const MAX_PAGES: u32 = 10_000;

/// Which `updated_at` dates a pull asks for (inclusive; `None`: no bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) gte: Option<NaiveDate>,
    pub(crate) lte: Option<NaiveDate>,
}

/// A pull that brought records.
#[derive(Debug, Clone)]
pub(crate) struct Pulled {
    pub(crate) path: PathBuf,
    pub(crate) sha256: String,
    pub(crate) size: u64,
    pub(crate) records: u64,
    /// The newest `updated_at` among the records, seconds since the epoch.
    pub(crate) newest: Option<i64>,
}

/// Pulls every page of `window` into the file `path`; `None` when the API has no record
/// in it (no file is left then).
pub(crate) fn pull(cfg: &ApiSourceConfig, window: Window, path: &Path) -> Result<Option<Pulled>> {
    let mut http = Http::new(cfg);
    let mut login = Login::new(&cfg.auth, &cfg.base_url)?;
    let url = format!("{}/1/activities", cfg.base_url);
    let mut out = Output::create(path)?;
    let mut previous: Option<Vec<u8>> = None;
    let bar = crate::progress::pull();
    for number in 1..=MAX_PAGES {
        let query = query(cfg, window, number);
        let answer = get(&mut http, &mut login, &url, &query)?;
        let fingerprint = Sha256::digest(answer.to_string().as_bytes()).to_vec();
        let records = page::records(answer, cfg.records_key.as_deref())
            .with_context(|| format!("GET {url}, page {number}"))?;
        if !records.is_empty() && previous.as_ref() == Some(&fingerprint) {
            bail!(
                "GET {url}: page {number} holds the same records as page {}: the API does not \
                 page as asked (`page`, `per_page`); nothing was taken",
                number - 1
            );
        }
        previous = Some(fingerprint);
        let count = records.len();
        for r in &records {
            out.record(r)?;
        }
        bar.inc(count as u64);
        tracing::debug!(page = number, records = count, "page read");
        if count < cfg.per_page as usize {
            let pages = number;
            return out.finish(pages);
        }
    }
    bail!(
        "GET {url}: more than {MAX_PAGES} pages: narrow the pull with `backfill --from --to` or `filters`"
    )
}

/// One request that takes nothing (`page=1`, `per_page=1`, the filters), for `check`: what
/// the API answered, or why it did not.
pub(crate) fn probe(cfg: &ApiSourceConfig) -> Result<String> {
    let mut http = Http::new(cfg).single_try();
    let mut login = Login::new(&cfg.auth, &cfg.base_url)?;
    let url = format!("{}/1/activities", cfg.base_url);
    let mut q = cfg.filters.clone();
    q.push(("page".into(), "1".into()));
    q.push(("per_page".into(), "1".into()));
    let answer = get(&mut http, &mut login, &url, &q)?;
    let records =
        page::records(answer, cfg.records_key.as_deref()).with_context(|| format!("GET {url}"))?;
    Ok(format!(
        "GET {url}?per_page=1 answered with {} Activit{}",
        records.len(),
        if records.len() == 1 { "y" } else { "ies" }
    ))
}

/// The query of page `number`: the filters, the window, then the paging.
fn query(cfg: &ApiSourceConfig, window: Window, number: u32) -> Vec<(String, String)> {
    let mut q = cfg.filters.clone();
    if let Some(d) = window.gte {
        q.push(("updated_at_gte".into(), d.to_string()));
    }
    if let Some(d) = window.lte {
        q.push(("updated_at_lte".into(), d.to_string()));
    }
    q.push(("page".into(), number.to_string()));
    q.push(("per_page".into(), cfg.per_page.to_string()));
    q
}

/// One page's answer; a refused bearer token is renewed once. Each try (a retry after a
/// 429's wait too) carries the header of that moment: a token about to expire is renewed
/// before it is sent.
fn get(
    http: &mut Http,
    login: &mut Login,
    url: &str,
    query: &[(String, String)],
) -> Result<serde_json::Value> {
    let mut renewed = false;
    loop {
        let answer = http.json_each_try(|http| {
            let (name, value) = login.header(http).map_err(Attempt::Fail)?;
            http.attempt(&Call {
                post: false,
                url,
                query,
                login: Some((name, &value)),
                body: None,
            })
        });
        match answer {
            Err(e) if e.is::<Unauthorized>() && !renewed && login.forget() => {
                tracing::warn!("{e}: asking for a new token");
                renewed = true;
            }
            other => return other,
        }
    }
}

/// The pull's file, hashed as it is written.
struct Output {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    size: u64,
    records: u64,
    newest: Option<i64>,
    line: Vec<u8>,
}

impl Output {
    fn create(path: &Path) -> Result<Output> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Output {
            path: path.to_path_buf(),
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            size: 0,
            records: 0,
            newest: None,
            line: Vec::new(),
        })
    }

    fn record(&mut self, r: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, r)?;
        self.line.push(b'\n');
        self.file
            .write_all(&self.line)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.hasher.update(&self.line);
        self.size += self.line.len() as u64;
        self.records += 1;
        if let Some(t) = page::updated_at(r) {
            self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        }
        Ok(())
    }

    fn finish(mut self, pages: u32) -> Result<Option<Pulled>> {
        self.file
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        tracing::info!(pages, records = self.records, "pulled the API");
        if self.records == 0 {
            drop(self.file);
            let _ = std::fs::remove_file(&self.path);
            return Ok(None);
        }
        Ok(Some(Pulled {
            path: self.path,
            sha256: hex::encode(self.hasher.finalize()),
            size: self.size,
            records: self.records,
            newest: self.newest,
        }))
    }
}
