//! Configuration: TOML → a validated [`Config`] (paths resolved, schema and mappings
//! loaded, globs compiled).
//!
//! Relative paths resolve against the configuration file's folder. Unknown keys are errors
//! naming the key and the file: a misspelt key must never be silently ignored.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::Deserialize;

use crate::report::schema::Schema;
use crate::setting::{parse_duration, resolve, typed};
use crate::sftp::config::{RawSftp, SftpSourceConfig};
use crate::sink;
use crate::sink::config::SinkConfig;
use crate::source::api::config::{ApiSourceConfig, RawApi};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Read as a table first, then as the struct its `type` names (see [`typed`]).
    source: toml::Table,
    #[serde(default)]
    report: RawReport,
    ledger: RawLedger,
    #[serde(default)]
    sink: Vec<toml::Table>,
}

enum RawSource {
    Local(RawLocal),
    Sftp(Box<RawSftp>),
    Api(Box<RawApi>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    #[serde(default = "dot")]
    dir: String,
    #[serde(default = "default_patterns")]
    patterns: Vec<String>,
}

fn dot() -> String {
    ".".into()
}

fn default_patterns() -> Vec<String> {
    vec!["*.csv".into(), "*.xlsx".into()]
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReport {
    schema: Option<String>,
    timezone: Option<String>,
    date_from_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    path: String,
}

/// Where reports come from.
pub(crate) enum SourceConfig {
    Local {
        dir: PathBuf,
    },
    Sftp(Box<SftpSourceConfig>),
    /// Tangoe's REST API (`type = "tangoe_api"`).
    Api(Box<ApiSourceConfig>),
}

pub(crate) struct Config {
    pub(crate) source: SourceConfig,
    pub(crate) patterns: GlobSet,
    pub(crate) schema: Schema,
    pub(crate) timezone: chrono_tz::Tz,
    pub(crate) date_from_name: Option<Regex>,
    pub(crate) ledger: PathBuf,
    pub(crate) sinks: Vec<SinkConfig>,
    /// `[source] expect_new_within`: no new report for longer is a problem (exit 4).
    pub(crate) expect_new_within: Option<std::time::Duration>,
}

fn compile_patterns(patterns: &[String], origin: &str) -> Result<GlobSet> {
    if patterns.is_empty() {
        bail!("{origin}: `patterns` is empty: no report would ever be taken");
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .case_insensitive(true)
            .literal_separator(true)
            .build()
            .with_context(|| format!("{origin}: bad pattern {p:?}"))?;
        b.add(glob);
    }
    Ok(b.build()?)
}

impl Config {
    pub(crate) fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the configuration {} (give one with --config or TANGOE_INGEST_CONFIG)",
                path.display()
            )
        })?;
        let raw: RawConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
            .with_context(|| format!("invalid configuration {}", path.display()))?;
        let origin = path.display().to_string();
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };

        let mut source_table = raw.source;
        // A key every kind of source has, read before the table is read as its kind.
        let expect_new_within = match source_table.remove("expect_new_within") {
            None => None,
            Some(toml::Value::String(d)) => Some(
                parse_duration(&d)
                    .with_context(|| format!("{origin}: [source] expect_new_within"))?,
            ),
            Some(other) => bail!(
                "{origin}: [source] expect_new_within is {other}, expected a duration such as \"36h\""
            ),
        };
        let raw_source = typed(
            source_table,
            &format!("{origin}: [source]"),
            &["local", "sftp", "tangoe_api"],
            |kind, v| {
                Ok(match kind {
                    "local" => RawSource::Local(v.try_into()?),
                    "tangoe_api" => RawSource::Api(Box::new(v.try_into()?)),
                    _ => RawSource::Sftp(Box::new(v.try_into()?)),
                })
            },
        )?;
        let (source, patterns) = match raw_source {
            RawSource::Local(l) => (
                SourceConfig::Local {
                    dir: resolve(&base, &l.dir),
                },
                compile_patterns(&l.patterns, &format!("{origin} [source]"))?,
            ),
            RawSource::Sftp(s) => (
                SourceConfig::Sftp(Box::new(s.resolve(
                    &base,
                    &origin,
                    &resolve(&base, &raw.ledger.path),
                )?)),
                compile_patterns(&s.patterns, &format!("{origin} [source]"))?,
            ),
            RawSource::Api(a) => (
                SourceConfig::Api(Box::new(a.resolve(&base, &origin)?)),
                compile_patterns(&default_patterns(), &origin)?,
            ),
        };
        let schema = match &raw.report.schema {
            Some(p) => Schema::load(&resolve(&base, p))?,
            None if matches!(source, SourceConfig::Api(_)) => Schema::bundled_api()?,
            None => Schema::bundled()?,
        };
        let tz_name = raw.report.timezone.as_deref().unwrap_or("UTC");
        let timezone: chrono_tz::Tz = tz_name.parse().map_err(|_| {
            anyhow::anyhow!("{origin}: [report] timezone {tz_name:?} is not an IANA time zone (e.g. \"America/New_York\")")
        })?;
        let date_from_name = match &raw.report.date_from_name {
            None => None,
            Some(r) => Some(Regex::new(r).with_context(|| {
                format!("{origin}: [report] date_from_name is not a valid regex")
            })?),
        };
        let schema_fields: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        let sinks = sink::config::sinks(raw.sink, &base, &origin, &schema_fields)?;
        Ok(Config {
            source,
            patterns,
            schema,
            timezone,
            date_from_name,
            ledger: resolve(&base, &raw.ledger.path),
            sinks,
            expect_new_within,
        })
    }
}
