//! Test support: a [`Case`] is a temp folder with a config, report files and a ledger, and
//! the real binary run on it; each run gives a [`Ran`] to assert on. Reports are written
//! from [`Row`]s named field by field:
//!
//! ```ignore
//! let c = Case::new();
//! c.report("r_2026-11-01.csv", &[row("A1", "Ordered").at("2026-11-01T10:00:00Z")]);
//! c.run().code(0);
//! assert_eq!(c.transitions(), [t("A1", "", "ordered")]);
//! ```

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

/// The header every generated CSV report uses (a subset of the bundled schema's aliases).
pub const HEADER: &str = "Activity ID,Status,Remote Activity ID,Last Updated,Phone Number,Device,Shipping Address,Cost Center";

/// One row of a generated report, by field (the columns of [`HEADER`]); fields not set
/// are empty.
#[derive(Clone, Debug, Default)]
pub struct Row {
    id: String,
    state: String,
    itsm: String,
    at: String,
    phone: String,
    device: String,
    address: String,
    cost_center: String,
}

/// A row of Activity `id` in `state` (as a report writes it: "Ordered", "Completed"...).
pub fn row(id: &str, state: &str) -> Row {
    Row {
        id: id.into(),
        state: state.into(),
        ..Row::default()
    }
}

impl Row {
    /// `Remote Activity ID` (the ITSM number).
    pub fn itsm(mut self, v: &str) -> Row {
        self.itsm = v.into();
        self
    }
    /// `Last Updated`.
    pub fn at(mut self, v: &str) -> Row {
        self.at = v.into();
        self
    }
    /// `Phone Number`.
    pub fn phone(mut self, v: &str) -> Row {
        self.phone = v.into();
        self
    }
    /// `Device`.
    pub fn device(mut self, v: &str) -> Row {
        self.device = v.into();
        self
    }
    /// `Shipping Address`.
    pub fn address(mut self, v: &str) -> Row {
        self.address = v.into();
        self
    }
    /// `Cost Center` (an extra column: the schema has no field for it).
    pub fn cost_center(mut self, v: &str) -> Row {
        self.cost_center = v.into();
        self
    }

    /// The row as a CSV line under [`HEADER`] (quoted where a value needs it).
    pub fn line(&self) -> String {
        [
            &self.id,
            &self.state,
            &self.itsm,
            &self.at,
            &self.phone,
            &self.device,
            &self.address,
            &self.cost_center,
        ]
        .iter()
        .map(|v| quote(v))
        .collect::<Vec<_>>()
        .join(",")
    }
}

fn quote(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// A CSV report: [`HEADER`], then `rows`.
pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from(HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(&r.line());
        s.push('\n');
    }
    s
}

/// A test case: a temp folder with `drop/` as the source, `state/ledger.sqlite` and a JSONL
/// file sink in `out/`; the binary run on it; and what its runs left (events, files, the
/// ledger).
pub struct Case {
    dir: tempfile::TempDir,
    env: RefCell<Vec<(String, Option<String>)>>,
    timeout: Cell<Option<Duration>>,
    memory: Cell<Option<u64>>,
}

impl Case {
    /// The default set-up: `drop/` as the source, a JSONL sink in `out/`.
    pub fn new() -> Case {
        let c = Case {
            dir: tempfile::Builder::new()
                .prefix("tangoe-it-")
                .tempdir()
                .unwrap(),
            env: RefCell::new(Vec::new()),
            timeout: Cell::new(None),
            memory: Cell::new(None),
        };
        std::fs::create_dir_all(c.path().join("drop")).unwrap();
        c.config(&Case::default_config(""));
        c
    }

    /// The default configuration with `toml` appended (more `[[sink]]` tables...).
    pub fn with_config(toml: &str) -> Case {
        let c = Case::new();
        c.config(&Case::default_config(toml));
        c
    }

    /// The text of the default configuration, with `extra` appended.
    pub fn default_config(extra: &str) -> String {
        format!(
            r#"[source]
type = "local"
dir = "drop"
patterns = ["*.csv", "*.xlsx"]

[report]
timezone = "UTC"
date_from_name = '(\d{{4}}-\d{{2}}-\d{{2}})'

[ledger]
path = "state/ledger.sqlite"

[[sink]]
type = "file"
dir = "out"
format = "jsonl"
{extra}"#
        )
    }

    /// Replaces the configuration file with `toml`.
    pub fn config(&self, toml: &str) -> &Case {
        self.file("tangoe-ingest.toml", toml)
    }

    /// Every later run gets `key=value` in its environment.
    pub fn env(&self, key: &str, value: &str) -> &Case {
        self.set_env(key, Some(value.into()));
        self
    }

    /// Later runs get no `key` in their environment.
    pub fn env_remove(&self, key: &str) -> &Case {
        self.set_env(key, None);
        self
    }

    fn set_env(&self, key: &str, value: Option<String>) {
        let mut env = self.env.borrow_mut();
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value));
    }

    /// Later runs are killed after `limit` (a guard against hangs).
    pub fn timeout(&self, limit: Duration) -> &Case {
        self.timeout.set(Some(limit));
        self
    }

    /// Later runs get at most `bytes` of address space (`ulimit -v`): a run that tries to
    /// hold more fails its allocation and aborts. A memory guard, not a measurement.
    /// glibc's malloc reserves 64 MiB of address space per thread arena; one arena keeps
    /// the address space close to what the run really uses.
    pub fn memory_limit(&self, bytes: u64) -> &Case {
        self.memory.set(Some(bytes));
        self.env("MALLOC_ARENA_MAX", "1")
    }

    /// Writes the CSV report `name` into the drop folder.
    pub fn report(&self, name: &str, rows: &[Row]) -> &Case {
        self.file(&format!("drop/{name}"), csv(rows))
    }

    /// Writes any file (relative to the case's folder), making its folders.
    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>) -> &Case {
        let p = self.path().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        self
    }

    /// The case's folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The text of a file of the case.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    /// Files in `out/` (or another folder), sorted by name, hidden files excluded.
    pub fn files(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = match std::fs::read_dir(self.path().join(rel)) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Every event written to the JSONL sink in `out/`, in file order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for f in self.files("out") {
            if !f.ends_with(".jsonl") {
                continue;
            }
            for line in self.read(&format!("out/{f}")).lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
        out
    }

    /// (activity_id, previous_state, state) of every event, for compact assertions.
    pub fn transitions(&self) -> Vec<(String, String, String)> {
        self.events()
            .iter()
            .map(|e| {
                (
                    e["activity_id"].as_str().unwrap().to_string(),
                    e["previous_state"].as_str().unwrap().to_string(),
                    e["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The case's ledger, opened.
    pub fn ledger(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path().join("state/ledger.sqlite")).unwrap()
    }

    /// What `sql` selects from the ledger: the first column of its one row.
    pub fn ledger_value<T: rusqlite::types::FromSql>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> T {
        self.ledger().query_row(sql, params, |r| r.get(0)).unwrap()
    }

    /// What `sql` selects from the ledger: the first column of each row.
    pub fn ledger_column<T: rusqlite::types::FromSql>(&self, sql: &str) -> Vec<T> {
        let db = self.ledger();
        let mut stmt = db.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// A summary file (`--summary-json`) of the case, parsed.
    pub fn summary(&self, rel: &str) -> serde_json::Value {
        serde_json::from_str(&self.read(rel)).unwrap()
    }

    /// `tangoe-ingest run`.
    #[must_use = "assert on the run (`.code(0)`)"]
    pub fn run(&self) -> Ran {
        self.exec(&["run"])
    }

    /// `tangoe-ingest ARGS`.
    #[must_use = "assert on the run (`.code(0)`)"]
    pub fn exec(&self, args: &[&str]) -> Ran {
        let mut cmd = assert_cmd::Command::from_std(self.command(args));
        if let Some(limit) = self.timeout.get() {
            cmd.timeout(limit);
        }
        Ran {
            args: args.iter().map(|a| a.to_string()).collect(),
            out: cmd.output().unwrap(),
            dir: self.path().to_path_buf(),
        }
    }

    /// `tangoe-ingest ARGS` started in the background, to watch, interrupt or kill.
    pub fn start(&self, args: &[&str]) -> Started {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Started {
            child,
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: self.path().to_path_buf(),
        }
    }

    /// The binary in the case's folder, with its config and environment, and `args`.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin!("tangoe-ingest"));
        c.current_dir(self.path());
        c.env_remove("TANGOE_INGEST_CONFIG");
        c.env_remove("RUST_LOG");
        for (k, v) in self.env.borrow().iter() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.arg("--config")
            .arg(self.path().join("tangoe-ingest.toml"));
        c.args(args);
        if let Some(bytes) = self.memory.get() {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            // SAFETY: between fork and exec, only the async-signal-safe setrlimit runs.
            unsafe {
                c.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c
    }
}

/// What one run of the binary did: its exit code and output, to assert on.
pub struct Ran {
    args: Vec<String>,
    out: Output,
    dir: PathBuf,
}

impl Ran {
    /// Asserts the exit code (showing the command's output when it differs).
    #[track_caller]
    pub fn code(self, code: i32) -> Ran {
        assert_eq!(
            self.out.status.code(),
            Some(code),
            "args {:?}\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// Asserts that stdout or stderr holds `text`.
    #[track_caller]
    pub fn says(self, text: &str) -> Ran {
        assert!(
            self.text().contains(text),
            "expected {text:?} in the output of {:?}:\n{}",
            self.args,
            self.text()
        );
        self
    }

    /// Asserts that neither stdout nor stderr holds `text`.
    #[track_caller]
    pub fn never_says(self, text: &str) -> Ran {
        assert!(
            !self.text().contains(text),
            "{text:?} must not appear in the output of {:?}:\n{}",
            self.args,
            self.text()
        );
        self
    }

    /// Asserts that stdout (the run's report to the operator) holds `text`.
    #[track_caller]
    pub fn prints(self, text: &str) -> Ran {
        assert!(
            self.stdout().contains(text),
            "expected {text:?} on the stdout of {:?}:\n{}",
            self.args,
            self.stdout()
        );
        self
    }

    /// Asserts that stderr (the log) holds `text`.
    #[track_caller]
    pub fn logs(self, text: &str) -> Ran {
        assert!(
            self.stderr().contains(text),
            "expected {text:?} on the stderr of {:?}:\n{}",
            self.args,
            self.stderr()
        );
        self
    }

    /// The run's stdout.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    /// The run's stderr.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// stdout then stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// The exit code (`None` when killed by a signal).
    pub fn exit_code(&self) -> Option<i32> {
        self.out.status.code()
    }

    /// The summary file the run was asked for (`--summary-json FILE`), parsed.
    pub fn summary(&self) -> serde_json::Value {
        let i = self
            .args
            .iter()
            .position(|a| a == "--summary-json")
            .unwrap_or_else(|| panic!("no --summary-json in {:?}", self.args));
        let text = std::fs::read_to_string(self.dir.join(&self.args[i + 1])).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// A run going on in the background ([`Case::start`]); its output is kept for
/// [`Started::wait`].
pub struct Started {
    /// The process, to watch (`try_wait`, `id`) or kill.
    pub child: Child,
    args: Vec<String>,
    dir: PathBuf,
}

impl Started {
    /// Waits for the run to end.
    pub fn wait(self) -> Ran {
        Ran {
            args: self.args,
            out: self.child.wait_with_output().unwrap(),
            dir: self.dir,
        }
    }
}

/// Sets a file's modification time (seconds since the epoch).
pub fn set_mtime(path: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(t).unwrap();
}

/// A cell of a test workbook.
#[derive(Clone, Debug)]
pub enum X {
    /// A text cell.
    S(&'static str),
    /// A number cell.
    N(f64),
    /// A date-time cell (typed, with a date format): y, m, d, h, min, s.
    D(u16, u8, u8, u8, u8, u8),
    /// A number shown with a date format (how a serial in a 1904 workbook is written here).
    Serial(f64),
    /// An empty cell.
    Blank,
}

/// A transition as [`Case::transitions`] lists it: (activity_id, previous_state, state).
pub fn t(a: &str, p: &str, s: &str) -> (String, String, String) {
    (a.to_string(), p.to_string(), s.to_string())
}

/// Writes an XLSX workbook with one sheet named `sheet` holding `rows`.
pub fn write_xlsx(path: &Path, sheet: &str, rows: &[Vec<X>]) {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name(sheet).unwrap();
    let date_fmt = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let (r, c) = (r as u32, c as u16);
            match cell {
                X::S(s) => {
                    ws.write_string(r, c, *s).unwrap();
                }
                X::N(n) => {
                    ws.write_number(r, c, *n).unwrap();
                }
                X::D(y, m, d, h, mi, s) => {
                    let dt = ExcelDateTime::from_ymd(*y, *m, *d)
                        .unwrap()
                        .and_hms(u16::from(*h), *mi, f64::from(*s))
                        .unwrap();
                    ws.write_datetime_with_format(r, c, &dt, &date_fmt).unwrap();
                }
                X::Serial(n) => {
                    ws.write_number_with_format(r, c, *n, &date_fmt).unwrap();
                }
                X::Blank => {}
            }
        }
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    wb.save(path).unwrap();
}

/// Rewrites one member of a ZIP archive (an XLSX part) with `edit`.
pub fn patch_zip(path: &Path, member: &str, edit: impl Fn(String) -> String) {
    use std::io::{Read, Write};
    let bytes = std::fs::read(path).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        if name == member {
            data = edit(String::from_utf8(data).unwrap()).into_bytes();
        }
        let opts: zip::write::SimpleFileOptions = zip::write::SimpleFileOptions::default();
        out.start_file(name, opts).unwrap();
        out.write_all(&data).unwrap();
    }
    let cursor = out.finish().unwrap();
    std::fs::write(path, cursor.into_inner()).unwrap();
}
