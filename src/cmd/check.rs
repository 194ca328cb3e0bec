//! `check`: tries the set-up end to end without changing anything, one ✓ or ✗ line per
//! check with its reason.
//!
//! Checks, in order: the configuration (read and validated whole: paths, the report schema,
//! each mapping rendering a sample event), the ledger (readable, or its folder can be made),
//! the source (for SFTP: reaching the server and its host key, the login, then the listing;
//! each file is listed as taken, waiting or skipped, with why), and each sink (a file sink's
//! folder and upload server; an HTTP sink's credentials, with a `GET` that writes nothing;
//! a webhook is said to be untested, since only sending tests it).
//!
//! Guarantees: nothing is written — not the ledger, not a sink's folder, not the server.
//! Exit 0 only when every check passes, else 1.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{Config, SourceConfig};
use crate::ledger::{Ledger, StoredEvent};
use crate::printable::printable;
use crate::sftp::{Connection, Endpoint, Step};
use crate::sink::config::{FileSinkConfig, SinkConfig};
use crate::sink::http::{HttpSinkConfig, Probe, probe};
use crate::source::local::LocalSource;
use crate::source::sftp::SftpSource;
use crate::source::{Listed, Source};
use crate::summary::{EXIT_FAILED, EXIT_OK};
use crate::template::Mapping;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Pass,
    Fail,
    /// Not tested (and not a failure): the line says why.
    Untested,
}

/// Prints the check lines as they come, and remembers whether one failed.
#[derive(Default)]
struct Checks {
    failed: usize,
}

impl Checks {
    fn line(&mut self, mark: Mark, what: &str, why: &str) {
        let sign = match mark {
            Mark::Pass => "✓",
            Mark::Fail => {
                self.failed += 1;
                "✗"
            }
            Mark::Untested => "–",
        };
        // A reason of several lines (a host key to add...) goes on indented.
        let why: Vec<String> = why.lines().map(|l| printable(l).into_owned()).collect();
        println!("{sign} {}: {}", printable(what), why.join("\n    "));
    }

    fn pass(&mut self, what: &str, why: &str) {
        self.line(Mark::Pass, what, why);
    }

    fn fail(&mut self, what: &str, why: &str) {
        self.line(Mark::Fail, what, why);
    }

    /// A ✓ with `ok`'s text, or a ✗ with the error's chain.
    fn result(&mut self, what: &str, r: Result<String>) {
        match r {
            Ok(why) => self.pass(what, &why),
            Err(e) => self.fail(what, &format!("{e:#}")),
        }
    }
}

/// Runs every check; see the module's guarantees.
pub(crate) fn run(config: &Path) -> Result<i32> {
    let mut checks = Checks::default();
    let what = format!("configuration {}", config.display());
    let cfg = match Config::load(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            checks.fail(&what, &format!("{e:#}"));
            println!("1 check failed: fix the configuration, then check again");
            return Ok(EXIT_FAILED);
        }
    };
    checks.pass(&what, "read; every key known and valid");
    let schema_fields: Vec<String> = cfg.schema.fields.iter().map(|f| f.name.clone()).collect();
    let required = cfg.schema.fields.iter().filter(|f| f.required).count();
    checks.pass(
        "report schema",
        &format!(
            "{} fields, {required} of them required",
            schema_fields.len()
        ),
    );
    for sink in &cfg.sinks {
        if let Some(m) = mapping_of(sink) {
            let what = format!("sink {} mapping", sink.name());
            checks.result(&what, renders(m, &schema_fields));
        }
    }
    let ledger = check_ledger(&mut checks, &cfg.ledger);
    if let SourceConfig::Sftp(s) = &cfg.source {
        let what = format!("source download folder {}", s.download_dir.display());
        let why = if s.download_dir.is_dir() {
            "exists, writable"
        } else {
            "not there yet: the first download makes it"
        };
        checks.result(&what, creatable(&s.download_dir).map(|_| why.to_string()));
    }
    check_source(&mut checks, &cfg, ledger.as_ref());
    for sink in &cfg.sinks {
        match sink {
            SinkConfig::File(f) => check_file_sink(&mut checks, f),
            SinkConfig::Http(h) => check_http_sink(&mut checks, h),
        }
    }
    if checks.failed == 0 {
        println!("all checks passed");
        Ok(EXIT_OK)
    } else {
        let n = checks.failed;
        println!("{n} check{} failed", if n == 1 { "" } else { "s" });
        Ok(EXIT_FAILED)
    }
}

fn mapping_of(sink: &SinkConfig) -> Option<&Mapping> {
    match sink {
        SinkConfig::File(f) => f.mapping.as_ref(),
        SinkConfig::Http(h) => h.mapping.as_ref(),
    }
}

/// Renders the sample event through the mapping (loading it did too; said here).
fn renders(m: &Mapping, schema_fields: &[String]) -> Result<String> {
    let sample = StoredEvent::sample(schema_fields);
    let fields = m
        .render(&sample)
        .context("does not render a sample event")?;
    let mut why = format!(
        "renders a sample event into {}",
        fields.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    if !m.create_fields.is_empty() {
        m.render_create(&sample)
            .context("its [create] does not render a sample event")?;
        why.push_str(&format!("; [create] into {}", m.create_fields.join(", ")));
    }
    if !m.required.is_empty() {
        why.push_str(&format!("; required: {}", m.required.join(", ")));
    }
    Ok(why)
}

/// The ledger, opened for reading when it exists; else whether the first run can make it.
fn check_ledger(checks: &mut Checks, path: &Path) -> Option<Ledger> {
    let what = format!("ledger {}", path.display());
    if path.exists() {
        return match Ledger::read_only(path) {
            Ok(l) => {
                checks.pass(&what, "readable");
                Some(l)
            }
            Err(e) => {
                checks.fail(&what, &format!("{e:#}"));
                None
            }
        };
    }
    checks.result(
        &what,
        creatable(path.parent().unwrap_or(Path::new("."))).map(|_| {
            "not there yet: the first run creates it (its folder can be made)".to_string()
        }),
    );
    None
}

/// Whether `dir` exists as a folder this user can write in, or could be made: its nearest
/// existing ancestor is a folder this user can write in. Nothing is created.
fn creatable(dir: &Path) -> Result<()> {
    let mut at: PathBuf = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    };
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p.to_path_buf(),
            _ => at = PathBuf::from("."),
        }
    }
    if !at.is_dir() {
        anyhow::bail!("{} is not a folder", at.display());
    }
    if !writable(&at) {
        anyhow::bail!("cannot write in {}", at.display());
    }
    Ok(())
}

/// Whether this user may write in the folder (access(2), which knows root and ACLs).
fn writable(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `c` is a valid NUL-terminated path; access only reads it.
        unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
    }
    #[cfg(not(unix))]
    {
        !std::fs::metadata(dir).is_ok_and(|m| m.permissions().readonly())
    }
}

/// Every name in a folder, and whether it is a regular file.
type Names = Vec<(String, bool)>;

/// The source: connects (SFTP: step by step), lists, and says what a run would take.
fn check_source(checks: &mut Checks, cfg: &Config, ledger: Option<&Ledger>) {
    let (what, names, mut source): (String, Result<Names>, Box<dyn Source>) = match &cfg.source {
        SourceConfig::Local { dir } => (
            format!("source {}", dir.display()),
            local_names(dir),
            Box::new(LocalSource::new(dir.clone(), cfg.patterns.clone())),
        ),
        SourceConfig::Sftp(s) => {
            let what = format!(
                "source sftp://{}/{}",
                s.endpoint.label(),
                s.remote_dir.trim_start_matches('/')
            );
            let Some(conn) = connect(checks, &what, &s.endpoint) else {
                return;
            };
            let names = remote_names(&conn, &s.remote_dir);
            drop(conn);
            let source = SftpSource::new((**s).clone(), cfg.patterns.clone(), false, true);
            (what, names, Box::new(source))
        }
        SourceConfig::Api(a) => {
            let what = format!("source {}", a.base_url);
            match crate::source::api::probe(a) {
                Ok(said) => checks.pass(&what, &said),
                Err(e) => checks.fail(&what, &format!("{e:#}")),
            }
            return;
        }
    };
    let listed = names.and_then(|names| Ok((names, source.list()?)));
    match listed {
        Ok((names, listed)) => {
            let lines = verdicts(&names, &listed, ledger, cfg);
            let taken = lines.iter().filter(|l| l.starts_with("take")).count();
            checks.pass(
                &what,
                &format!(
                    "listed {} files; a run would take {taken}",
                    names.iter().filter(|(_, file)| *file).count()
                ),
            );
            for l in lines {
                println!("    {}", printable(&l));
            }
        }
        Err(e) => checks.fail(&what, &format!("{e:#}")),
    }
}

/// Connects to an SFTP server, one check line per step; the connection if all passed.
fn connect(checks: &mut Checks, what: &str, endpoint: &Endpoint) -> Option<Connection> {
    let trust = match (&endpoint.known_hosts, &endpoint.fingerprint) {
        (Some(kh), _) => format!("matches known_hosts {}", kh.display()),
        (None, Some(fp)) => format!("matches the pinned {fp}"),
        (None, None) => "verified".to_string(),
    };
    match endpoint.connect_by_step() {
        Ok(conn) => {
            checks.pass(&format!("{what} host key"), &trust);
            checks.pass(
                &format!("{what} login"),
                &format!("logged in as {}", endpoint.username),
            );
            Some(conn)
        }
        Err((step, e)) => {
            let e = format!("{e:#}");
            match step {
                Step::HostKey => checks.fail(&format!("{what} host key"), &e),
                Step::Login | Step::Sftp => {
                    checks.pass(&format!("{what} host key"), &trust);
                    checks.fail(&format!("{what} login"), &e);
                }
            }
            None
        }
    }
}

/// Every name in a local folder, and whether it is a regular file.
fn local_names(dir: &Path) -> Result<Names> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the drop folder {}", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("cannot list the drop folder {}", dir.display()))?;
        let is_file = std::fs::metadata(e.path()).is_ok_and(|m| m.is_file());
        out.push((e.file_name().to_string_lossy().into_owned(), is_file));
    }
    out.sort();
    Ok(out)
}

/// Every name in a remote folder, and whether it is a regular file.
fn remote_names(conn: &Connection, dir: &str) -> Result<Names> {
    let entries = conn
        .sftp()
        .readdir(Path::new(dir))
        .with_context(|| format!("cannot list the remote folder {dir}"))?;
    let mut out: Names = entries
        .into_iter()
        .filter_map(|(p, st)| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, st.is_file()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// One line per name in the folder: `take`, `wait` or `skip`, with why.
fn verdicts(
    names: &[(String, bool)],
    listed: &[Listed],
    ledger: Option<&Ledger>,
    cfg: &Config,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, is_file) in names {
        let line = match listed.iter().find(|l| &l.name == name) {
            Some(l) => match (&l.deferred, processed(ledger, l)) {
                (Some(why), _) => format!("wait  {name}: {why}"),
                (None, true) => format!("skip  {name}: processed before (same name, size, mtime)"),
                (None, false) => format!("take  {name} ({} bytes)", l.size),
            },
            None if name.starts_with('.') => format!("skip  {name}: a hidden name"),
            None if !is_file => format!("skip  {name}: not a regular file"),
            None if !cfg.patterns.is_match(name) => {
                format!("skip  {name}: matches none of the source's patterns")
            }
            None => format!("skip  {name}: its name cannot be used safely (see the log)"),
        };
        out.push(line);
    }
    out
}

fn processed(ledger: Option<&Ledger>, l: &Listed) -> bool {
    ledger.is_some_and(|led| matches!(led.processed_listing(&l.name, l.size, l.mtime), Ok(Some(_))))
}

/// A file sink: its folder can be written (or made), and its upload server is reachable.
fn check_file_sink(checks: &mut Checks, f: &FileSinkConfig) {
    let what = format!("sink {} folder {}", f.name, f.dir.display());
    let why = if f.dir.is_dir() {
        "exists, writable"
    } else {
        "not there yet: the first delivery makes it"
    };
    checks.result(&what, creatable(&f.dir).map(|_| why.to_string()));
    let Some(up) = &f.upload else {
        return;
    };
    let what = format!(
        "sink {} upload sftp://{}/{}",
        f.name,
        up.endpoint.label(),
        up.remote_dir.trim_start_matches('/')
    );
    if let Some(conn) = connect(checks, &what, &up.endpoint) {
        let folder = conn
            .sftp()
            .stat(Path::new(&up.remote_dir))
            .map_err(anyhow::Error::from)
            .and_then(|st| {
                anyhow::ensure!(st.is_dir(), "{} is not a folder", up.remote_dir);
                Ok("the upload folder exists".to_string())
            })
            .with_context(|| format!("cannot find the upload folder {}", up.remote_dir));
        checks.result(&format!("{what} folder"), folder);
    }
}

/// An HTTP sink: its credentials, by a request that writes nothing.
fn check_http_sink(checks: &mut Checks, h: &HttpSinkConfig) {
    let what = format!("sink {} ({})", h.name, h.api.as_str());
    match probe(h) {
        Probe::Passed(why) => checks.pass(&what, &why),
        Probe::Failed(why) => checks.fail(&what, &why),
        Probe::Untested(why) => checks.line(Mark::Untested, &what, &why),
    }
}
