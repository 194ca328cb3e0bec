//! `run --dry-run --html PATH`: one self-contained page, rendered here in headless
//! Chromium (Debian's `chromium`, installed by `.ci/run`), with per report the counts, the
//! rejected rows, the transitions as a bar chart and the first requests, secrets redacted.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::server::Server;
use crate::support::{Case, row};

const TOKEN: &str = "s3cret-bearer-token-4711";

/// Runs headless Chromium on the page `page` of the case with `extra` (what to produce).
fn chromium(c: &Case, page: &str, extra: &str) -> std::process::Output {
    let url = format!("file://{}", c.path().join(page).display());
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
}

/// The page as Chromium renders it: printed to PDF and read back as text (`pdftotext`,
/// which `.ci/run` installs with Chromium), so only what a person sees is there; and its
/// DOM after layout. A screenshot goes to the case's temp folder, never into the
/// repository.
fn rendered(c: &Case, page: &str) -> (String, String) {
    let shot = c.path().join("audit.png");
    let out = chromium(c, page, &format!("--screenshot={}", shot.display()));
    assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let pdf = c.path().join("audit.pdf");
    let out = chromium(c, page, &format!("--print-to-pdf={}", pdf.display()));
    assert!(pdf.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = Command::new("pdftotext")
        .args(["-layout".as_ref(), pdf.as_os_str(), "-".as_ref()])
        .output()
        .expect("pdftotext is installed (Debian's poppler-utils)");
    assert!(text.status.success());
    let dom = chromium(c, page, "--dump-dom");
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    (
        String::from_utf8_lossy(&text.stdout).into_owned(),
        String::from_utf8_lossy(&dom.stdout).into_owned(),
    )
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

    let (text, dom) = rendered(&c, "audit.html");
    for seen in [
        "r_2026-11-01.csv",
        "Events by transition",
        "none → ordered",
        "none → completed",
        "ordered → completed",
        "r_2026-11-02.csv",
        "Rejected rows of r_2026-11-01.csv",
        "unknown state \"Lost <in> the post\"",
        "Sink hook: the first requests of 4 pending events",
        "Authorization: Bearer <redacted>",
        "exit 2: 1 row rejected",
    ] {
        assert!(text.contains(seen), "{seen:?} not rendered:\n{text}");
    }
    assert!(!text.contains(TOKEN));
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
