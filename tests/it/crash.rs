//! Crashes at any moment: a run killed with SIGKILL part-way leaves a ledger the next run
//! completes, with the same events as an undisturbed run and none twice.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{Case, Row, row};

const STATES: [&str; 4] = ["Ordered", "On Back Order", "Completed", "Cancelled"];

/// Two daily reports of `n` Activities; the second changes every third one.
fn write_reports(c: &Case, n: usize) {
    for (day, shift) in [("2026-11-01", 0usize), ("2026-11-02", 1)] {
        let rows: Vec<Row> = (0..n)
            .map(|i| {
                let state = if i % 3 == 0 {
                    STATES[(i + shift) % 4]
                } else {
                    STATES[i % 4]
                };
                row(&format!("A{i:06}"), state)
                    .itsm(&format!("RITM{i:07}"))
                    .at(&format!("{day}T{:02}:00:00Z", i % 24))
                    .phone(&format!("555{i:07}"))
                    .device("Pixel 9")
                    .address(&format!("{i} Main St\nSpringfield"))
                    .cost_center(&format!("CC-{}", i % 50))
            })
            .collect();
        c.report(&format!("r_{day}.csv"), &rows);
    }
}

/// Every event written to `out/`, by event id; panics on an event written twice.
fn events_by_id(c: &Case) -> BTreeMap<String, (String, String, String)> {
    let mut out = BTreeMap::new();
    for e in c.events() {
        let id = e["event_id"].as_str().unwrap().to_string();
        let t = (
            e["activity_id"].as_str().unwrap().to_string(),
            e["previous_state"].as_str().unwrap().to_string(),
            e["state"].as_str().unwrap().to_string(),
        );
        assert!(
            out.insert(id.clone(), t).is_none(),
            "event {id} delivered twice"
        );
    }
    out
}

#[test]
fn killed_runs_are_completed_by_the_next_run_with_the_same_events() {
    let n = 20_000;
    let calm = Case::new();
    write_reports(&calm, n);
    let t0 = std::time::Instant::now();
    calm.run().code(0);
    let calm_ms = t0.elapsed().as_millis() as u64;
    let expected = events_by_id(&calm);
    assert_eq!(
        expected.len(),
        n + n.div_ceil(3),
        "every Activity, then the changed third"
    );

    let mut interrupted = 0;
    // Kills spread over the time an undisturbed run takes on this machine.
    for percent in [3u64, 20, 45, 75] {
        let delay_ms = calm_ms * percent / 100;
        let c = Case::new();
        write_reports(&c, n);
        let mut run = c.start(&["run"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        if run.child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = run.child.kill(); // SIGKILL
        let _ = run.child.wait();
        // Whatever the moment, the rerun finishes the job.
        c.run().code(0);
        assert_eq!(events_by_id(&c), expected, "killed after {delay_ms} ms");
        let state_of = |c: &Case| -> Vec<(String, i64)> {
            c.ledger()
                .prepare("SELECT activity_id, state FROM activities ORDER BY activity_id")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(state_of(&c), state_of(&calm), "killed after {delay_ms} ms");
        // No half-written import file is left visible.
        assert!(c.files("out").iter().all(|f| f.ends_with(".jsonl")));
    }
    assert!(
        interrupted >= 2,
        "only {interrupted} kills landed while the run was working"
    );
}
