//! Progress on a terminal: drawn under a pseudo-terminal (`script`), absent when stderr is
//! not one, and never torn by log lines.

use std::process::Command;

use crate::server::{Reply, Server};
use crate::support::{Case, Row, row};

fn rows(n: usize) -> Vec<Row> {
    (1..=n)
        .map(|i| row(&format!("A{i}"), "Ordered").at("2026-11-01T10:00:00Z"))
        .collect()
}

/// Runs `tangoe-ingest ARGS` on the case with a pseudo-terminal for its stdin, stdout and
/// stderr (util-linux `script`); returns everything written to the terminal.
pub fn in_terminal(c: &Case, args: &str, env: &[(&str, &str)]) -> String {
    let bin = assert_cmd::cargo::cargo_bin!("tangoe-ingest");
    let line = format!(
        "{} --config {} {args}",
        bin.display(),
        c.path().join("tangoe-ingest.toml").display()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(c.path())
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("util-linux `script` runs the command under a pseudo-terminal");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines as a terminal shows them: for each line, what follows its last carriage
/// return, without escape sequences.
fn visible_lines(tty: &str) -> Vec<String> {
    let strip = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    tty.split('\n')
        .map(|l| {
            strip
                .replace_all(
                    l.trim_end_matches('\r').rsplit('\r').next().unwrap_or(""),
                    "",
                )
                .into_owned()
        })
        .collect()
}

#[test]
fn progress_shows_rows_read_and_events_sent_on_a_terminal() {
    let c = Case::new();
    c.report("r_2026-11-01.csv", &rows(3000));
    let tty = in_terminal(&c, "run", &[]);
    assert!(tty.contains("reading r_2026-11-01.csv: "), "{tty}");
    assert!(tty.contains(" rows read ("), "{tty}");
    assert!(tty.contains("events sent ("), "{tty}");
    assert!(
        tty.contains("Total: 1 reports, 3000 rows"),
        "the run finished: {tty}"
    );
}

#[test]
fn no_progress_is_drawn_when_stderr_is_not_a_terminal() {
    let c = Case::new();
    c.report("r_2026-11-01.csv", &rows(3000));
    c.run()
        .code(0)
        .never_says("rows read")
        .never_says("events sent")
        .never_says("\x1b[2K");
}

#[test]
fn log_lines_written_while_a_bar_is_drawn_never_share_its_line() {
    let server = Server::start(|_, _| Reply::json(400, serde_json::json!({"error": "no"})));
    let c = Case::with_config(&format!(
        "[[sink]]\ntype = \"http\"\nname = \"hook\"\napi = \"webhook\"\nurl = \"{}\"\nmax_attempts = 1\n",
        server.url("/hook")
    ));
    c.report("r_2026-11-01.csv", &rows(30));
    let tty = in_terminal(&c, "run", &[("TANGOE_INGEST_HTTP_BACKOFF", "1ms")]);
    assert!(tty.contains("events sent ("), "a bar was drawn: {tty}");
    let failures: Vec<String> = visible_lines(&tty)
        .into_iter()
        .filter(|l| l.contains("delivery failed"))
        .collect();
    assert!(!failures.is_empty(), "{tty}");
    for l in &failures {
        assert!(
            !l.contains("events sent") && l.trim_start().starts_with("20"),
            "a log line shares a bar's line: {l:?}\n{tty}"
        );
    }
}

#[test]
fn progress_can_be_turned_off_on_a_terminal() {
    let c = Case::new();
    c.report("r_2026-11-01.csv", &rows(300));
    let tty = in_terminal(&c, "run", &[("TANGOE_INGEST_PROGRESS", "0")]);
    assert!(tty.contains("Total: 1 reports, 300 rows"), "{tty}");
    assert!(
        !tty.contains("rows read") && !tty.contains("events sent"),
        "{tty}"
    );
}
