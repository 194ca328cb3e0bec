//! The `[[sink]]` tables: each read as the sink its `type` names, then checked together
//! (names distinct, no two file sinks writing or uploading the same file names).
//!
//! Guarantees: an error names the sink by its number and `name`, and the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::setting::{resolve, typed};
use crate::sftp::config::{RawUpload, UploadConfig};
use crate::sink::http::config::{HttpSinkConfig, RawHttpSink};
use crate::template::Mapping;

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
    pub(crate) upload: Option<UploadConfig>,
    /// The import files' permissions (`mode`); owner-only (0600) when `None`.
    pub(crate) mode: Option<u32>,
}

pub(crate) enum SinkConfig {
    File(FileSinkConfig),
    Http(HttpSinkConfig),
}

impl SinkConfig {
    pub(crate) fn name(&self) -> &str {
        match self {
            SinkConfig::File(f) => &f.name,
            SinkConfig::Http(h) => &h.name,
        }
    }
}

enum RawSink {
    File(RawFileSink),
    Http(Box<RawHttpSink>),
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
    upload: Option<Box<RawUpload>>,
    /// The import files' permissions, in octal (e.g. "0640"); owner-only when absent.
    mode: Option<String>,
}

fn jsonl() -> String {
    "jsonl".into()
}

impl RawFileSink {
    /// The file sink this table describes (the `i`th `[[sink]]`, from 0).
    fn validate(
        self,
        base: &Path,
        origin: &str,
        i: usize,
        schema_fields: &[String],
    ) -> Result<FileSinkConfig> {
        let format = match self.format.as_str() {
            "jsonl" => FileFormat::Jsonl,
            "csv" => FileFormat::Csv,
            other => bail!(
                "{origin}: [[sink]] #{}: format {other:?} must be \"jsonl\" or \"csv\"",
                i + 1
            ),
        };
        let mapping = match &self.mapping {
            Some(m) => Some(Mapping::named(m, base, schema_fields)?),
            None => None,
        };
        let name = self.name.unwrap_or_else(|| {
            if i == 0 {
                "file".into()
            } else {
                format!("file-{}", i + 1)
            }
        });
        let prefix = self.prefix.unwrap_or_else(|| "tangoe-events".into());
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
        let upload = match &self.upload {
            Some(u) => Some(u.resolve(base, &format!("{origin}: [[sink]] #{}", i + 1))?),
            None => None,
        };
        let mode = match &self.mode {
            Some(m) => {
                Some(file_mode(m).with_context(|| format!("{origin}: [[sink]] #{}", i + 1))?)
            }
            None => None,
        };
        Ok(FileSinkConfig {
            name,
            dir: resolve(base, &self.dir),
            format,
            mapping,
            prefix,
            upload,
            mode,
        })
    }
}

/// The sinks the `[[sink]]` tables describe, in order.
pub(crate) fn sinks(
    tables: Vec<toml::Table>,
    base: &Path,
    origin: &str,
    schema_fields: &[String],
) -> Result<Vec<SinkConfig>> {
    if tables.is_empty() {
        bail!("{origin}: no [[sink]]: say where events go (type = \"file\" or \"http\")");
    }
    let mut sinks = Vec::new();
    for (i, table) in tables.into_iter().enumerate() {
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
        sinks.push(match s {
            RawSink::File(f) => SinkConfig::File(f.validate(base, origin, i, schema_fields)?),
            RawSink::Http(h) => SinkConfig::Http(h.validate(base, origin, i, schema_fields)?),
        });
    }
    check_together(&sinks, origin)?;
    Ok(sinks)
}

/// What no two sinks may share: a name, or the file names they write or upload.
fn check_together(sinks: &[SinkConfig], origin: &str) -> Result<()> {
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
    Ok(())
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
