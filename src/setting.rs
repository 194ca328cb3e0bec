//! What every configuration section reads alike: a table whose `type` names its kind,
//! durations ("30s", "2m", "90d") and paths relative to the configuration file. A leaf
//! module: the sections (`config`, `sftp::config`, `sink::config`, `sink::http::config`)
//! use it and it uses none of them.
//!
//! Guarantees: an error names the key and the section it is in.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A table with a `type` key, read as the struct of its type: the type's name, and the
/// rest of the table for `read`. (Serde's internally tagged enums would do this too, but
/// lose which key a wrong value is under; read this way, the error names it.)
pub(crate) fn typed<T>(
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
