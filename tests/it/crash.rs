//! Crashes at any moment: a run killed with SIGKILL part-way leaves a ledger the next run
//! completes, with the same events as an undisturbed run and none twice.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{HEADER, Workdir};

const STATES: [&str; 4] = ["Ordered", "On Back Order", "Completed", "Cancelled"];

/// Two daily reports of `n` Activities; the second changes every third one.
fn write_reports(w: &Workdir, n: usize) {
    for (day, shift) in [("2026-11-01", 0usize), ("2026-11-02", 1)] {
        let mut s = String::from(HEADER);
        s.push('\n');
        for i in 0..n {
            let state = if i % 3 == 0 {
                STATES[(i + shift) % 4]
            } else {
                STATES[i % 4]
            };
            s.push_str(&format!(
                "A{i:06},{state},RITM{i:07},{day}T{:02}:00:00Z,555{:07},Pixel 9,\"{i} Main St\nSpringfield\",CC-{}\n",
                i % 24,
                i,
                i % 50
            ));
        }
        w.write(&format!("drop/r_{day}.csv"), s);
    }
}

/// Every event written to `out/`, by event id; panics on an event written twice.
fn events_by_id(w: &Workdir) -> BTreeMap<String, (String, String, String)> {
    let mut out = BTreeMap::new();
    for e in w.events() {
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
    let calm = Workdir::new();
    write_reports(&calm, n);
    let t0 = std::time::Instant::now();
    calm.run_ok(&["run"], 0);
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
        let w = Workdir::new();
        write_reports(&w, n);
        let mut child = w.process().arg("run").spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Whatever the moment, the rerun finishes the job.
        w.run_ok(&["run"], 0);
        assert_eq!(events_by_id(&w), expected, "killed after {delay_ms} ms");
        let state_of = |w: &Workdir| -> Vec<(String, i64)> {
            w.ledger()
                .prepare("SELECT activity_id, state FROM activities ORDER BY activity_id")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(state_of(&w), state_of(&calm), "killed after {delay_ms} ms");
        // No half-written import file is left visible.
        assert!(w.files("out").iter().all(|f| f.ends_with(".jsonl")));
    }
    assert!(
        interrupted >= 2,
        "only {interrupted} kills landed while the run was working"
    );
}
