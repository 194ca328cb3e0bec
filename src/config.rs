//! Configuration: TOML → a validated [`Config`] (paths resolved, schema and mappings
//! loaded, globs compiled).
//!
//! Relative paths resolve against the configuration file's folder. Unknown keys are errors
//! naming the key and the file: a misspelt key must never be silently ignored.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bytesize::ByteSize;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::Deserialize;

use crate::report::reading::{Encoding, Limits, Reading};
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
    #[serde(default)]
    encoding: Encoding,
    max_shared_strings: Option<u64>,
    max_shared_strings_size: Option<ByteSize>,
    max_styles_size: Option<ByteSize>,
    max_sheet_size: Option<ByteSize>,
    max_cell: Option<ByteSize>,
    max_cells: Option<u64>,
    max_record: Option<ByteSize>,
}

impl RawReport {
    /// The encoding and the caps, each cap its default unless set (and then more than 0).
    fn reading(&self, origin: &str) -> Result<Reading> {
        let d = Limits::default();
        let cap = |key: &str, set: Option<u64>, default: u64| match set {
            Some(0) => bail!("{origin}: [report] {key} must be more than 0"),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let bytes = |b: Option<ByteSize>| b.map(|b| b.as_u64());
        Ok(Reading {
            encoding: self.encoding,
            limits: Limits {
                max_shared_strings: cap(
                    "max_shared_strings",
                    self.max_shared_strings,
                    d.max_shared_strings,
                )?,
                max_shared_strings_size: cap(
                    "max_shared_strings_size",
                    bytes(self.max_shared_strings_size),
                    d.max_shared_strings_size,
                )?,
                max_styles_size: cap(
                    "max_styles_size",
                    bytes(self.max_styles_size),
                    d.max_styles_size,
                )?,
                max_sheet_size: cap(
                    "max_sheet_size",
                    bytes(self.max_sheet_size),
                    d.max_sheet_size,
                )?,
                max_cell: cap("max_cell", bytes(self.max_cell), d.max_cell)?,
                max_cells: cap("max_cells", self.max_cells, d.max_cells)?,
                max_record: cap("max_record", bytes(self.max_record), d.max_record)?,
            },
        })
    }
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

pub(crate) fn compile_patterns(patterns: &[String], origin: &str) -> Result<GlobSet> {
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
        let mut schema = match &raw.report.schema {
            Some(p) => Schema::load(&resolve(&base, p))?,
            None if matches!(source, SourceConfig::Api(_)) => Schema::bundled_api()?,
            None => Schema::bundled()?,
        };
        schema.reading = raw.report.reading(&origin)?;
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

/// What the read-only commands (`status`, `reports`, `rejects`) need of the configuration:
/// the ledger's path and the sinks' names. Read leniently: a broken mapping path, a bad
/// sink or source setting does not stop them; only an unreadable file or `[ledger]` does.
pub(crate) struct LedgerView {
    pub(crate) ledger: PathBuf,
    pub(crate) sinks: Vec<String>,
}

impl LedgerView {
    pub(crate) fn load(path: &Path) -> Result<LedgerView> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the configuration {} (give one with --config or TANGOE_INGEST_CONFIG)",
                path.display()
            )
        })?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
            .with_context(|| format!("invalid configuration {}", path.display()))?;
        let ledger = table
            .get("ledger")
            .and_then(|l| l.get("path"))
            .and_then(toml::Value::as_str)
            .with_context(|| format!("{}: no [ledger] path", path.display()))?;
        let base = match path.parent() {
            Some(b) if !b.as_os_str().is_empty() => b.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tables = table.get("sink").and_then(toml::Value::as_array);
        let sinks = tables
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, s)| sink_name(s, i))
            .collect();
        Ok(LedgerView {
            ledger: resolve(&base, ledger),
            sinks,
        })
    }
}

/// A `[[sink]]` table's name, as [`sink::config::sinks`] names it (`file`, `http-2`...).
fn sink_name(table: &toml::Value, i: usize) -> String {
    if let Some(n) = table.get("name").and_then(toml::Value::as_str) {
        return n.to_string();
    }
    let kind = table
        .get("type")
        .and_then(toml::Value::as_str)
        .unwrap_or("file");
    if i == 0 {
        kind.to_string()
    } else {
        format!("{kind}-{}", i + 1)
    }
}
