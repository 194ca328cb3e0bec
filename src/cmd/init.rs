//! `init [DIR]`: writes a commented starter configuration and editable copies of the
//! bundled report schema and the built-in output mappings into DIR, and the drop folder
//! the configuration names.
//!
//! Guarantees: an existing file is never overwritten — when any of the files is already
//! there, nothing is written and the command fails naming them (exit 1). The starter
//! configuration is valid as written: `check` and `run --dry-run` take it as it is.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::report::schema::BUNDLED;
use crate::template::{BUILTIN, builtin};

/// The starter configuration's file name.
const CONFIG: &str = "tangoe-ingest.toml";
/// The schema copy's file name.
const SCHEMA: &str = "tangoe-activity-report.toml";
/// The drop folder the starter configuration reads.
const DROP: &str = "drop";

/// The starter configuration: a local drop folder, the schema copy, and a CSV file sink
/// with the RITM mapping copy; an SFTP source and a mirroring HTTP sink commented out.
const STARTER: &str = r#"# tangoe-ingest configuration, written by `tangoe-ingest init`.
# Every key: docs/configuration.md. Relative paths resolve against this file's folder.
# Try it: tangoe-ingest --config THIS_FILE check, then run --dry-run.

[source]
type = "local"
dir = "drop"                             # where Tangoe's reports arrive (not recursive)
patterns = ["*.csv", "*.xlsx"]
# expect_new_within = "36h"              # exit 4 when no new report came for this long
#
# An SFTP drop site instead (`tangoe-ingest hostkey HOST` prints its host keys):
# type = "sftp"
# host = "sftp.example.com"
# username = "acme"
# private_key = "~/.ssh/id_ed25519"      # or password_env = "TANGOE_SFTP_PASSWORD"
# known_hosts = "~/.ssh/known_hosts"     # or host_key_fingerprint = "SHA256:..."
# remote_dir = "/reports"
# after = "leave"                        # or "delete", "move:processed"

[report]
schema = "tangoe-activity-report.toml"   # a copy of the bundled schema, to edit
timezone = "UTC"                         # for date-times without an offset, e.g. "America/New_York"
date_from_name = '(\d{4}-\d{2}-\d{2})'   # a report's date from its name (else its mtime)

[ledger]
path = "state/ledger.sqlite"             # created, with its folder, on the first run

# ServiceNow-ready CSV import files. An event without a RITM number is not written
# (`required = ["number"]` in the mapping) and is counted (exit 2).
[[sink]]
type = "file"
name = "servicenow"
dir = "out/servicenow"
format = "csv"                           # or "jsonl"
mapping = "servicenow-ritm.toml"         # a copy of builtin:servicenow-ritm, to edit

# The ServiceNow Table API instead, creating the RITM of an Activity that has none
# (`check` tests the credentials with a GET that writes nothing):
# [[sink]]
# type = "http"
# name = "servicenow-api"
# api = "servicenow_table"
# url = "https://INSTANCE.service-now.com/api/now/table/sc_req_item"
# username = "svc_tangoe"
# password_env = "SN_PASSWORD"
# mapping = "servicenow-ritm-mirror.toml"  # a copy of builtin:servicenow-ritm-mirror
# create_missing = true
"#;

/// The files `init` writes: (name, content).
fn files() -> Result<Vec<(String, &'static str)>> {
    let mut out = vec![(CONFIG.to_string(), STARTER), (SCHEMA.to_string(), BUNDLED)];
    for (name, _) in BUILTIN {
        out.push((format!("{name}.toml"), builtin(name)?));
    }
    Ok(out)
}

/// Writes the starter files into `dir`; see the module's guarantees.
pub(crate) fn run(dir: &Path) -> Result<i32> {
    let files = files()?;
    let taken: Vec<PathBuf> = files
        .iter()
        .map(|(name, _)| dir.join(name))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    if !taken.is_empty() {
        let names: Vec<String> = taken.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "init writes nothing over existing files, and these exist: {}; move them away or \
             choose another folder",
            names.join(", ")
        );
    }
    std::fs::create_dir_all(dir.join(DROP))
        .with_context(|| format!("cannot create the folder {}", dir.join(DROP).display()))?;
    for (name, text) in &files {
        let path = dir.join(name);
        // `create_new`: a file that appeared since the check above is not replaced either.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::io::Write::write_all(&mut f, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    let config = dir.join(CONFIG);
    println!(
        "Next: put a report in {}, then `tangoe-ingest --config {} check` and `run --dry-run`.",
        dir.join(DROP).display(),
        config.display()
    );
    Ok(0)
}
