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
use crate::template::Mapping;

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
    Sftp(Box<crate::sftp::config::RawSftp>),
}

/// The first two file sinks with the same `key` (sinks without one never clash).
fn clash<'a, K: PartialEq>(
    files: &[&'a FileSinkConfig],
    key: impl Fn(&'a FileSinkConfig) -> Option<K>,
) -> Option<(&'a FileSinkConfig, &'a FileSinkConfig)> {
    let keys: Vec<Option<K>> = files.iter().map(|f| key(f)).collect();
    for (i, a) in keys.iter().enumerate() {
        if let Some(a) = a
            && let Some(j) = keys[i + 1..].iter().position(|b| b.as_ref() == Some(a))
        {
            return Some((files[i], files[i + 1 + j]));
        }
    }
    None
}

/// A table with a `type` key, read as the struct of its type: the type's name, and the
/// rest of the table for `read`. (Serde's internally tagged enums would do this too, but
/// lose which key a wrong value is under; read this way, the error names it.)
fn typed<T>(
    mut table: toml::Table,
    what: &str,
    types: &[&str],
    read: impl FnOnce(&str, toml::Value) -> std::result::Result<T, toml::de::Error>,
) -> Result<T> {
    let expected = types
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let kind = match table.remove("type") {
        Some(toml::Value::String(k)) if types.contains(&k.as_str()) => k,
        Some(other) => anyhow::bail!("{what}: `type` is {other}, expected {expected}"),
        None => anyhow::bail!("{what}: `type` is missing ({expected})"),
    };
    read(&kind, toml::Value::Table(table))
        .map_err(|e| anyhow::anyhow!("{what}: {}", e.to_string().trim_end().replace('\n', " ")))
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

enum RawSink {
    File(RawFileSink),
    Http(Box<crate::sink::http::RawHttpSink>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSink {
    name: Option<String>,
    dir: String,
    #[serde(default = "jsonl")]
    format: String,
    mapping: Option<String>,
    /// File name prefix of the import files.
    prefix: Option<String>,
    /// Also upload each import file to an SFTP folder.
    upload: Option<Box<crate::sftp::config::RawUpload>>,
    /// The import files' permissions, in octal (e.g. "0640"); owner-only when absent.
    mode: Option<String>,
}

fn jsonl() -> String {
    "jsonl".into()
}

/// Where reports come from.
pub(crate) enum SourceConfig {
    Local { dir: PathBuf },
    Sftp(Box<crate::sftp::config::SftpSourceConfig>),
}

/// Output format of a file sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormat {
    Jsonl,
    Csv,
}

pub(crate) struct FileSinkConfig {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) format: FileFormat,
    pub(crate) mapping: Option<Mapping>,
    pub(crate) prefix: String,
    pub(crate) upload: Option<crate::sftp::config::UploadConfig>,
    /// The import files' permissions (`mode`); owner-only (0600) when `None`.
    pub(crate) mode: Option<u32>,
}

pub(crate) enum SinkConfig {
    File(FileSinkConfig),
    Http(crate::sink::http::HttpSinkConfig),
}

impl SinkConfig {
    pub(crate) fn name(&self) -> &str {
        match self {
            SinkConfig::File(f) => &f.name,
            SinkConfig::Http(h) => &h.name,
        }
    }
}

pub(crate) struct Config {
    pub(crate) source: SourceConfig,
    pub(crate) patterns: GlobSet,
    pub(crate) schema: Schema,
    pub(crate) timezone: chrono_tz::Tz,
    pub(crate) date_from_name: Option<Regex>,
    pub(crate) ledger: PathBuf,
    pub(crate) sinks: Vec<SinkConfig>,
}

/// Resolves `p` against `base` (the config file's folder); `~/` is the home folder.
pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
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

        let raw_source = typed(
            raw.source,
            &format!("{origin}: [source]"),
            &["local", "sftp"],
            |kind, v| {
                Ok(match kind {
                    "local" => RawSource::Local(v.try_into()?),
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
        };
        let schema = match &raw.report.schema {
            Some(p) => Schema::load(&resolve(&base, p))?,
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
        if raw.sink.is_empty() {
            bail!("{origin}: no [[sink]]: say where events go (type = \"file\" or \"http\")");
        }
        let mut sinks = Vec::new();
        for (i, table) in raw.sink.into_iter().enumerate() {
            let named = match table.get("name") {
                Some(toml::Value::String(n)) => format!(" ({n:?})"),
                _ => String::new(),
            };
            let s = typed(
                table,
                &format!("{origin}: [[sink]] #{}{named}", i + 1),
                &["file", "http"],
                |kind, v| {
                    Ok(match kind {
                        "file" => RawSink::File(v.try_into()?),
                        _ => RawSink::Http(Box::new(v.try_into()?)),
                    })
                },
            )?;
            match s {
                RawSink::File(f) => {
                    let format = match f.format.as_str() {
                        "jsonl" => FileFormat::Jsonl,
                        "csv" => FileFormat::Csv,
                        other => bail!(
                            "{origin}: [[sink]] #{}: format {other:?} must be \"jsonl\" or \"csv\"",
                            i + 1
                        ),
                    };
                    let mapping = match &f.mapping {
                        Some(m) => Some(Mapping::load(&resolve(&base, m), &schema_fields)?),
                        None => None,
                    };
                    let name = f.name.unwrap_or_else(|| {
                        if i == 0 {
                            "file".into()
                        } else {
                            format!("file-{}", i + 1)
                        }
                    });
                    let prefix = f.prefix.unwrap_or_else(|| "tangoe-events".into());
                    // The prefix starts a file name in `dir`: never a path out of it.
                    if prefix.is_empty()
                        || prefix.starts_with('.')
                        || prefix.contains(['/', '\\'])
                        || prefix.chars().any(char::is_control)
                    {
                        bail!(
                            "{origin}: [[sink]] #{}: prefix {prefix:?} must be a plain file name \
                             start (no `/`, `\\`, leading `.` or control characters, not empty)",
                            i + 1
                        );
                    }
                    let upload = match &f.upload {
                        Some(u) => {
                            Some(u.resolve(&base, &format!("{origin}: [[sink]] #{}", i + 1))?)
                        }
                        None => None,
                    };
                    let mode = match &f.mode {
                        Some(m) => Some(
                            file_mode(m)
                                .with_context(|| format!("{origin}: [[sink]] #{}", i + 1))?,
                        ),
                        None => None,
                    };
                    sinks.push(SinkConfig::File(FileSinkConfig {
                        name,
                        dir: resolve(&base, &f.dir),
                        format,
                        mapping,
                        prefix,
                        upload,
                        mode,
                    }));
                }
                RawSink::Http(h) => sinks.push(SinkConfig::Http(h.validate(
                    &base,
                    &origin,
                    i,
                    &schema_fields,
                )?)),
            }
        }
        if sinks.iter().any(|s| s.name().trim().is_empty()) {
            bail!("{origin}: a sink has an empty `name`");
        }
        // Two file sinks writing the same names in one folder would overwrite each other's
        // files (their events numbered alike).
        let files: Vec<&FileSinkConfig> = sinks
            .iter()
            .filter_map(|s| match s {
                SinkConfig::File(f) => Some(f),
                _ => None,
            })
            .collect();
        if let Some((a, b)) = clash(&files, |f| Some((&f.dir, &f.prefix, f.format))) {
            bail!(
                "{origin}: the file sinks {:?} and {:?} would write the same file names in {}: \
                 give one another `dir` or `prefix`",
                a.name,
                b.name,
                a.dir.display()
            );
        }
        // Likewise in the folder they upload to: the second upload would replace the first's
        // file, and both would count their events delivered.
        let upload_key = |f: &FileSinkConfig| {
            f.upload.as_ref().map(|u| {
                (
                    u.endpoint.host.to_ascii_lowercase(),
                    u.endpoint.port,
                    u.remote_dir.trim_end_matches('/').to_string(),
                    f.prefix.clone(),
                    f.format,
                )
            })
        };
        if let Some((a, b)) = clash(&files, upload_key) {
            bail!(
                "{origin}: the file sinks {:?} and {:?} would upload the same file names to \
                 {}: give one another `prefix` or `upload.remote_dir`",
                a.name,
                b.name,
                a.upload.as_ref().map_or("", |u| u.remote_dir.as_str())
            );
        }
        let mut names: Vec<&str> = sinks.iter().map(SinkConfig::name).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!(
                "{origin}: two sinks are named {:?}: give each a distinct `name`",
                w[0]
            );
        }
        Ok(Config {
            source,
            patterns,
            schema,
            timezone,
            date_from_name,
            ledger: resolve(&base, &raw.ledger.path),
            sinks,
        })
    }
}

/// A file sink's `mode`: permissions in octal ("0640"), never more than read and write for
/// the owner and read for the group and others, and never less than the owner's own.
fn file_mode(s: &str) -> Result<u32> {
    let mode = u32::from_str_radix(s.trim(), 8)
        .with_context(|| format!("mode {s:?} is not octal permissions (e.g. \"0640\")"))?;
    if mode & !0o644 != 0 || mode & 0o600 != 0o600 {
        bail!(
            "mode {s:?}: import files are read and written by their owner and at most read by \
             others (0600 to 0644)"
        );
    }
    Ok(mode)
}

/// Parses durations such as "30s", "2m", "1h", "90d".
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("bad duration {s:?} (e.g. \"30s\", \"2m\", \"90d\")"))?;
    let secs = match unit.trim() {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => bail!("bad duration unit {other:?} in {s:?} (use ms, s, m, h or d)"),
    };
    Ok(std::time::Duration::from_secs(secs))
}
