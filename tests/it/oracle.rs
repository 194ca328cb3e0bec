//! The dedupe rules against an oracle written from the README's plain words, not from the
//! code: random reports (1-8 over 1-3 days, 1-20 Activities, with and without
//! `updated_at`, equal times, same-day reports with different mtimes, repeated rows,
//! identical re-uploads under new names) arrive in any order over several runs, between
//! backfills over random ranges and `backfill --resend`, some ops first as dry runs. After
//! every op, the events written, the Activities' states and the dry run's counts must be
//! what the rules say.
//!
//! The pipeline runs in-process through the library's public entry point (the same one
//! the binary calls) against a real ledger file. `ORACLE_CASES=100000` runs a long
//! version; failing cases proptest finds are kept in `proptest-regressions/`.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use tangoe_ingest::app;
use tangoe_ingest::cli::Cli;

use crate::support::{Case, set_mtime};

const STATES: [(&str, &str); 4] = [
    ("ordered", "Ordered"),
    ("on_back_order", "On Back Order"),
    ("completed", "Completed"),
    ("cancelled", "Cancelled"),
];

/// 2026-11-01T00:00:00Z.
const DAY0: i64 = 1_793_491_200;
const DAY: i64 = 86_400;

/// A generated row: (Activity, state, `updated_at` as day and hour, or empty).
type GenRow = (u8, usize, Option<(i64, i64)>);

/// A generated report.
#[derive(Debug, Clone)]
struct Report {
    /// Day 1 to 3 of November 2026: its date (in its name).
    day: i64,
    /// Its mtime: that day at this hour.
    hour: i64,
    /// Whether it has an `updated_at` column.
    timed: bool,
    rows: Vec<GenRow>,
    /// An identical re-upload of an earlier report (its content, another name).
    copy_of: Option<usize>,
}

#[derive(Debug, Clone)]
enum Op {
    /// These reports arrive in the drop folder, then the nightly run.
    Run { arrive: Vec<usize>, dry_first: bool },
    Backfill {
        from: i64,
        to: i64,
        resend: bool,
        dry_first: bool,
    },
}

fn report() -> impl Strategy<Value = Report> {
    let time = prop_oneof![
        1 => Just(None),
        4 => (1i64..=3, prop::sample::select(vec![0i64, 6, 12])).prop_map(Some),
    ];
    (
        1i64..=3,
        0i64..24,
        any::<bool>(),
        prop::collection::vec((0u8..20, 0usize..4, time), 1..12),
        prop::option::weighted(0.2, 0usize..8),
    )
        .prop_map(|(day, hour, timed, rows, copy_of)| Report {
            day,
            hour,
            timed,
            rows,
            copy_of,
        })
}

fn op(reports: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (prop::collection::vec(0..reports, 0..reports + 1), any::<bool>())
            .prop_map(|(arrive, dry_first)| Op::Run { arrive, dry_first }),
        2 => (1i64..=3, 0i64..=2, prop::bool::weighted(0.3), any::<bool>()).prop_map(
            |(from, len, resend, dry_first)| Op::Backfill {
                from,
                to: (from + len).min(3),
                resend,
                dry_first,
            }
        ),
    ]
}

fn case() -> impl Strategy<Value = (Vec<Report>, Vec<Op>)> {
    prop::collection::vec(report(), 1..=8).prop_flat_map(|reports| {
        let n = reports.len();
        (Just(reports), prop::collection::vec(op(n), 1..=6))
    })
}

fn name(k: usize, r: &Report) -> String {
    format!("r{k}_2026-11-{:02}.csv", r.day)
}

/// The report's file: its own rows, or those of the report it re-uploads.
fn content(reports: &[Report], k: usize) -> String {
    let r = match reports[k].copy_of {
        Some(c) if c < k => &reports[c],
        _ => &reports[k],
    };
    let mut s = String::from(if r.timed {
        "Activity ID,Status,Last Updated\n"
    } else {
        "Activity ID,Status\n"
    });
    for (a, state, time) in &r.rows {
        s.push_str(&format!("A{a},{}", STATES[*state].1));
        if r.timed {
            s.push(',');
            if let Some((d, h)) = time {
                s.push_str(&format!("2026-11-{d:02}T{h:02}:00:00Z"));
            }
        }
        s.push('\n');
    }
    s
}

/// A row's place in the order of all rows (README, "The dedupe rules"): effective time,
/// report date, report mtime, report name, row number.
type Position = (i64, (i64, i64, String), u64);

/// The rules in plain words, applied a report at a time.
#[derive(Default)]
struct Model {
    /// Activity → (state, position of its greatest row).
    activities: BTreeMap<String, (&'static str, Position)>,
    /// Content → the (date, mtime, name) its first processing gave it.
    processed: HashMap<String, (i64, i64, String)>,
    /// Files already taken by a run: (name, size, mtime).
    listed: std::collections::HashSet<(String, usize, i64)>,
}

/// An expected event: (Activity, previous state, state, kind); a resend's previous state
/// is not checked.
type Expected = (String, String, String, &'static str);

impl Model {
    /// The reports an op takes, in the order they are processed: date, mtime, name.
    fn taken(&self, reports: &[Report], present: &[usize], op: &Op) -> Vec<usize> {
        let mut taken: Vec<usize> = present
            .iter()
            .copied()
            .filter(|&k| match op {
                Op::Run { .. } => true,
                Op::Backfill { from, to, .. } => (*from..=*to).contains(&reports[k].day),
            })
            .collect();
        taken.sort_by_key(|&k| (reports[k].day, reports[k].hour, name(k, &reports[k])));
        taken
    }

    /// Applies an op; returns the events it emits.
    fn apply(&mut self, reports: &[Report], present: &[usize], op: &Op) -> Vec<Expected> {
        let backfill = matches!(op, Op::Backfill { .. });
        let resend = matches!(op, Op::Backfill { resend: true, .. });
        let mut events = Vec::new();
        // Activities with an event in this run (a resend goes out once per run).
        let mut sent = std::collections::HashSet::new();
        for k in self.taken(reports, present, op) {
            let r = &reports[k];
            let text = content(reports, k);
            let listing = (name(k, r), text.len(), mtime(r));
            if !backfill && self.listed.contains(&listing) {
                continue; // already taken by an earlier run
            }
            let own = (r.day, mtime(r), name(k, r));
            let place = match self.processed.get(&text) {
                // Content processed before: a duplicate for a run, a replay for a backfill.
                Some(_) if !backfill => {
                    self.listed.insert(listing);
                    continue;
                }
                Some(first) => first.clone(),
                None => own,
            };
            self.processed.entry(text.clone()).or_insert(place.clone());
            self.listed.insert(listing);
            // The rows of this content, in file order, each with its position.
            let source = match r.copy_of {
                Some(c) if c < k => &reports[c],
                _ => r,
            };
            let mut by_activity: BTreeMap<String, Vec<(&'static str, Position)>> = BTreeMap::new();
            for (i, (a, state, time)) in source.rows.iter().enumerate() {
                let at = match time {
                    Some((d, h)) if source.timed => DAY0 + (d - 1) * DAY + h * 3600,
                    _ => DAY0 + (place.0 - 1) * DAY,
                };
                let row = i as u64 + 2; // line 1 is the header
                by_activity
                    .entry(format!("A{a}"))
                    .or_default()
                    .push((STATES[*state].0, (at, place.clone(), row)));
            }
            for (id, rows) in by_activity {
                let before = self.activities.get(&id).cloned();
                // The greatest row wins, the recorded one included.
                let mut after = before.clone();
                for (state, pos) in rows {
                    if after.as_ref().is_none_or(|(_, p)| pos > *p) {
                        after = Some((state, pos));
                    }
                }
                let after = after.expect("the report has a row of it");
                // One event per Activity and report, from where it was to where it ends.
                match &before {
                    None => events.push((id.clone(), String::new(), after.0.into(), "change")),
                    Some(b) if b.0 != after.0 => {
                        events.push((id.clone(), b.0.into(), after.0.into(), "change"))
                    }
                    _ if resend && !sent.contains(&id) => {
                        events.push((id.clone(), "?".into(), after.0.into(), "resend"))
                    }
                    _ => {}
                }
                if events.last().is_some_and(|e| e.0 == id) {
                    sent.insert(id.clone());
                }
                self.activities.insert(id, after);
            }
        }
        events
    }
}

fn mtime(r: &Report) -> i64 {
    DAY0 + (r.day - 1) * DAY + r.hour * 3600
}

/// Runs the command in-process through the library, as the binary does; returns its exit
/// code and its summary.
fn execute(c: &Case, args: &[&str]) -> (i32, serde_json::Value) {
    let config = c.path().join("tangoe-ingest.toml");
    let summary = c.path().join("summary.json");
    let mut argv = vec![
        "tangoe-ingest".to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv.extend(["--summary-json".into(), summary.display().to_string()]);
    let cli = <Cli as clap::Parser>::try_parse_from(argv).expect("arguments");
    let code = app::execute(cli);
    (code, c.summary("summary.json"))
}

/// Every event in the import files: (Activity, previous state, state, kind).
fn written(c: &Case) -> Vec<(String, String, String, String)> {
    c.events()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (
                s("activity_id"),
                s("previous_state"),
                s("state"),
                e["kind"].as_str().unwrap_or("change").to_string(),
            )
        })
        .collect()
}

fn op_args(op: &Op) -> Vec<String> {
    match op {
        Op::Run { .. } => vec!["run".into()],
        Op::Backfill {
            from, to, resend, ..
        } => {
            let mut a = vec![
                "backfill".into(),
                "--from".into(),
                format!("2026-11-{from:02}"),
                "--to".into(),
                format!("2026-11-{to:02}"),
            ];
            if *resend {
                a.push("--resend".into());
            }
            a
        }
    }
}

fn check(reports: Vec<Report>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let c = Case::new();
    let mut model = Model::default();
    let mut present: Vec<usize> = Vec::new();
    let mut seen_events = 0;
    for op in &ops {
        if let Op::Run { arrive, .. } = op {
            for &k in arrive {
                if !present.contains(&k) {
                    let r = &reports[k];
                    let rel = format!("drop/{}", name(k, r));
                    c.file(&rel, content(&reports, k));
                    set_mtime(&c.path().join(rel), mtime(r));
                    present.push(k);
                }
            }
        }
        let args = op_args(op);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let dry_first = match op {
            Op::Run { dry_first, .. } | Op::Backfill { dry_first, .. } => *dry_first,
        };
        let dry = dry_first.then(|| {
            let mut dry_args = args.clone();
            dry_args.push("--dry-run");
            execute(&c, &dry_args)
        });
        let (code, summary) = execute(&c, &args);
        prop_assert_eq!(code, 0, "{:?}: {}", op, summary);
        let expected = model.apply(&reports, &present, op);
        let all = written(&c);
        let mut got: Vec<Expected> = all[seen_events..]
            .iter()
            .map(|(a, p, s, k)| {
                let kind = if k == "resend" { "resend" } else { "change" };
                let p = if kind == "resend" {
                    "?".into()
                } else {
                    p.clone()
                };
                (a.clone(), p, s.clone(), kind)
            })
            .collect();
        seen_events = all.len();
        let mut want = expected.clone();
        got.sort();
        want.sort();
        prop_assert_eq!(&got, &want, "events of {:?}", op);
        if let Some((dry_code, dry)) = dry {
            prop_assert_eq!(dry_code, 0, "dry run of {:?}: {}", op, dry);
            prop_assert_eq!(&dry["events"], &summary["events"], "dry run of {:?}", op);
            let transitions = |s: &serde_json::Value| -> Vec<serde_json::Value> {
                s["reports"]
                    .as_array()
                    .map(|r| r.iter().map(|r| r["transitions"].clone()).collect())
                    .unwrap_or_default()
            };
            prop_assert_eq!(
                transitions(&dry),
                transitions(&summary),
                "dry run of {:?}",
                op
            );
        }
        // Each Activity's change events form a chain, each from the state the one before
        // it set; a resend repeats the state the Activity is in.
        let mut last: HashMap<&str, &str> = HashMap::new();
        for (a, p, s, k) in &all {
            let before = last.get(a.as_str()).copied().unwrap_or("");
            if k == "resend" {
                prop_assert_eq!(s.as_str(), before, "resend of {}", a);
                continue;
            }
            prop_assert_eq!(p.as_str(), before, "chain of {}", a);
            prop_assert_ne!(p, s, "a change of {} to its own state", a);
            last.insert(a, s);
        }
        // Each Activity is in the state of its greatest row.
        let db = c.ledger();
        let mut states: BTreeMap<String, &'static str> = BTreeMap::new();
        let mut stmt = db
            .prepare("SELECT activity_id, state FROM activities")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .unwrap();
        for row in rows {
            let (id, code) = row.unwrap();
            states.insert(id, STATES[code as usize - 1].0);
        }
        let want: BTreeMap<String, &'static str> = model
            .activities
            .iter()
            .map(|(a, (s, _))| (a.clone(), *s))
            .collect();
        prop_assert_eq!(states, want, "states after {:?}", op);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("ORACLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2_000,
        .. ProptestConfig::default()
    })]

    /// Whatever order reports come in and however often anything is replayed: each op's
    /// events are those the rules give, a backfill of processed reports emits nothing, a
    /// dry run counts the events of the real op after it, events chain, and each Activity
    /// ends in the state of its greatest row.
    #[test]
    fn the_pipeline_follows_the_rules_whatever_the_order_and_the_replays((reports, ops) in case()) {
        check(reports, ops)?;
    }
}
