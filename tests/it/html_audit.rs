//! `run --dry-run --html PATH`: one self-contained page, rendered here in headless
//! Chromium (Debian's `chromium`, installed by `.ci/run`), with per report the counts, the
//! rejected rows, the transitions as a bar chart and the first requests, secrets redacted.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::server::Server;
use crate::support::{Case, row};

const TOKEN: &str = "s3cret-bearer-token-4711";

/// The page as Chromium renders it (`--dump-dom`: the DOM after layout); a screenshot goes
/// to the case's temp folder, never into the repository.
fn rendered(c: &Case, page: &str) -> String {
    let url = format!("file://{}", c.path().join(page).display());
    let shot = c.path().join("audit.png");
    let chromium = |extra: &str| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                &format!("--user-data-dir={}", c.path().join("chromium").display()),
                extra,
                &url,
            ])
            .output()
            .expect("chromium is installed (.ci/run installs Debian's `chromium`)")
    };
    let shot_out = chromium(&format!("--screenshot={}", shot.display()));
    assert!(
        shot.exists(),
        "{}",
        String::from_utf8_lossy(&shot_out.stderr)
    );
    let out = chromium("--dump-dom");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_dry_runs_html_audit_renders_counts_rejects_chart_and_redacted_requests() {
    let server = Server::ok();
    let c = Case::with_config(&format!(
        "[[sink]]\ntype = \"http\"\nname = \"hook\"\napi = \"webhook\"\nurl = \"{}\"\n\
         bearer_token_env = \"HOOK_TOKEN\"\n",
        server.url("/hook")
    ));
    c.env("HOOK_TOKEN", TOKEN);
    c.report(
        "r_2026-11-01.csv",
        &[
            row("A1", "Ordered").at("2026-11-01T10:00:00Z"),
            row("A2", "Ordered").at("2026-11-01T10:00:00Z"),
            row("A3", "Completed").at("2026-11-01T10:00:00Z"),
            row("A4", "Lost <in> the post").at("2026-11-01T10:00:00Z"),
        ],
    );
    c.report(
        "r_2026-11-02.csv",
        &[row("A1", "Completed").at("2026-11-02T10:00:00Z")],
    );
    c.exec(&["run", "--dry-run", "--html", "audit.html"])
        .code(2);
    let mode = std::fs::metadata(c.path().join("audit.html"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the page holds personal data");
    let page = c.read("audit.html");
    assert!(
        !page.contains("<script") && !page.contains("src="),
        "self-contained"
    );
    assert!(!page.contains(TOKEN), "the secret is redacted");

    let dom = rendered(&c, "audit.html");
    for text in [
        "r_2026-11-01.csv",
        "Events by transition",
        "none → ordered",
        "none → completed",
        "ordered → completed",
        "<h3>r_2026-11-02.csv</h3>",
        "Rejected rows of r_2026-11-01.csv",
        "unknown state \"Lost &lt;in&gt; the post\"",
        "Sink hook: the first requests of 4 pending events",
        "Authorization: Bearer &lt;redacted&gt;",
        "exit 2: 1 row rejected",
    ] {
        assert!(dom.contains(text), "{text:?} not rendered:\n{dom}");
    }
    assert!(dom.contains("<rect"), "the chart's bars: {dom}");
    assert!(server.requests().is_empty(), "a dry run sends nothing");
    assert!(
        !c.path().join("state/ledger.sqlite").exists(),
        "and writes no ledger"
    );
}

#[test]
fn html_needs_a_dry_run() {
    let c = Case::new();
    c.exec(&["run", "--html", "audit.html"])
        .code(1)
        .says("--dry-run");
    c.exec(&[
        "backfill",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
        "--dry-run",
        "--html",
        "b.html",
    ])
    .code(0);
    assert!(c.read("b.html").contains("tangoe-ingest backfill dry run"));
}
