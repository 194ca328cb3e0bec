//! Tests of the in-memory table of Activities (`known.rs`).

use super::*;

fn rec(state: State, at: i64, report: i64, row: u64) -> Record {
    Record {
        state,
        position: Position { at, report, row },
        event_id: Some(row as i64 + 1),
        events: 3,
        has_itsm_number: row.is_multiple_of(2),
    }
}

#[test]
fn activities_are_found_by_id_and_read_back_as_recorded() {
    let mut k = KnownActivities::with_capacity(0);
    let ids: Vec<String> = (0..10_000).map(|i| format!("ACT-{i:07}")).collect();
    for (i, id) in ids.iter().enumerate() {
        k.push(
            id,
            i as u32 + 1,
            &rec(State::Ordered, i as i64, 1, i as u64),
            0,
        )
        .unwrap();
    }
    k.add("", &rec(State::Cancelled, 0, 2, 0)).unwrap();
    k.add("Zoë", &rec(State::Completed, -5, 3, 9)).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let slot = k.find(id).unwrap();
        assert_eq!(k.id_of(slot), id);
        assert_eq!(k.rowid(slot), i as i64 + 1);
        assert_eq!(k.get(slot), rec(State::Ordered, i as i64, 1, i as u64));
    }
    assert_eq!(k.get(k.find("").unwrap()), rec(State::Cancelled, 0, 2, 0));
    let zoe = k.find("Zoë").unwrap();
    assert_eq!(k.get(zoe), rec(State::Completed, -5, 3, 9));
    assert_eq!(k.rowid(zoe), 0);
    assert!(k.find("ACT-0010000").is_none());
    assert!(k.find("Zo").is_none());
    let mut none = rec(State::OnBackOrder, i64::MIN, 7, 0);
    none.event_id = None;
    none.events = 0;
    let slot = k.find("ACT-0000042").unwrap();
    k.set(slot, &none).unwrap();
    assert_eq!(k.get(slot), none);
    assert_eq!(k.rowid(slot), 43);
    assert_eq!(
        k.get(k.find("ACT-0000043").unwrap()),
        rec(State::Ordered, 43, 1, 43)
    );
}

#[test]
fn changes_are_drained_once_fresh_ones_in_id_order_known_ones_in_table_order() {
    let mut k = KnownActivities::with_capacity(0);
    for i in 0..100 {
        k.push(&format!("A{i:03}"), i + 1, &rec(State::Ordered, 0, 1, 0), 0)
            .unwrap();
    }
    let b = k.add("B2", &rec(State::Ordered, 0, 1, 0)).unwrap();
    k.add("B1", &rec(State::Ordered, 0, 1, 0)).unwrap();
    // A fresh Activity changed again is still fresh, not dirty.
    k.set(b, &rec(State::Completed, 1, 1, 1)).unwrap();
    for i in [70, 10, 40, 10] {
        let s = k.find(&format!("A{i:03}")).unwrap();
        k.set(s, &rec(State::Completed, 1, 1, 1)).unwrap();
    }
    let fresh = k.drain_fresh();
    let ids: Vec<&str> = fresh.iter().map(|&s| k.id_of(s)).collect();
    assert_eq!(ids, ["B1", "B2"]);
    for (i, s) in fresh.into_iter().enumerate() {
        k.set_rowid(s, 101 + i as i64).unwrap();
    }
    assert_eq!(k.rowid(b), 102);
    assert!(k.drain_fresh().is_empty());
    // Written, B2 is known: a change to it is dirty now.
    k.set(b, &rec(State::Cancelled, 2, 1, 1)).unwrap();
    let first: Vec<&str> = k.drain_dirty(2).iter().map(|&s| k.id_of(s)).collect();
    assert_eq!(first, ["A010", "A040"]);
    // Changed again behind the walk: found when it wraps around.
    let s = k.find("A005").unwrap();
    k.set(s, &rec(State::Cancelled, 2, 1, 1)).unwrap();
    let rest: Vec<&str> = k.drain_dirty(10).iter().map(|&s| k.id_of(s)).collect();
    assert_eq!(rest, ["A070", "B2", "A005"]);
    assert!(!k.has_dirty());
    assert!(k.drain_dirty(10).is_empty());
}

/// A ledger large enough to be read on two threads: every Activity is found, with its
/// record and rowid, whichever reader took its block; the buffer lies in rowid order,
/// even past blocks of rowids no Activity holds.
#[test]
fn a_large_ledger_is_read_whole_and_in_order_on_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
    let n = 2 * PARALLEL_LOAD as i64 + 7;
    ledger
        .conn()
        .execute_batch(&format!(
            "WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < {n})
             INSERT INTO activities
                 (id, activity_id, state, updated_at, report_id, row, event_id, events, itsm_number)
             SELECT x, 'ACT-' || x, 1 + x % 4, x * 10, 1 + x % 3, x % 50, x, 1 + x % 5,
                    CASE WHEN x % 2 = 0 THEN 'RITM' || x END
             FROM i;"
        ))
        .unwrap();
    // Two blocks of rowids without Activities (one for each reader) between two blocks
    // cut short.
    let gone = |x: i64| (10_000..10_000 + 3 * CHUNK as i64 + 100).contains(&x);
    ledger
        .conn()
        .execute(
            "DELETE FROM activities WHERE id >= ?1 AND id < ?2",
            [10_000, 10_000 + 3 * CHUNK as i64 + 100],
        )
        .unwrap();
    let kept: Vec<i64> = (1..=n).filter(|&x| !gone(x)).collect();
    let k = KnownActivities::load(&ledger).unwrap();
    assert_eq!(k.table.len(), kept.len());
    assert!(k.find("ACT-10000").is_none());
    for x in [
        1,
        2,
        PARALLEL_LOAD as i64,
        PARALLEL_LOAD as i64 + 1,
        n - 1,
        n,
    ] {
        let slot = k.find(&format!("ACT-{x}")).unwrap();
        assert_eq!(k.rowid(slot), x);
        assert_eq!(
            k.get(slot),
            Record {
                state: State::from_code(1 + x % 4).unwrap(),
                position: Position {
                    at: x * 10,
                    report: 1 + x % 3,
                    row: (x % 50) as u64,
                },
                event_id: Some(x),
                events: 1 + x % 5,
                has_itsm_number: x % 2 == 0,
            },
            "ACT-{x}"
        );
    }
    assert!(k.find(&format!("ACT-{}", n + 1)).is_none());
    // The buffer lies in rowid order: a walk over it walks the table in order.
    let mut rowids = Vec::new();
    let mut at = 0;
    while at < k.data.len() {
        let (_, record_at) = KnownActivities::id_at(&k.data, at);
        rowids.push(k.rowid(Slot(at as u32)));
        at = record_at + RECORD;
    }
    assert_eq!(rowids, kept);
}

/// A ledger of `n` Activities `ACT-1`.. at rowids 1..=n.
fn ledger_of(dir: &std::path::Path, n: i64) -> Ledger {
    let ledger = Ledger::open(&dir.join("ledger.sqlite")).unwrap();
    ledger
        .conn()
        .execute_batch(&format!(
            "WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < {n})
             INSERT INTO activities (id, activity_id, state, updated_at, report_id, row, events)
             SELECT x, 'ACT-' || x, 1, 0, 1, x, 1 FROM i;"
        ))
        .unwrap();
    ledger
}

/// Whichever reader meets a record the table cannot hold, its own error is the one
/// reported, not that another reader stopped.
#[test]
fn a_reader_that_fails_is_reported_by_its_own_error() {
    for rowid in [CHUNK as i64 + 10, 2 * CHUNK as i64 + 10] {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_of(dir.path(), PARALLEL_LOAD as i64 + 1);
        ledger
            .conn()
            .execute(
                "UPDATE activities SET activity_id = ?1 WHERE id = ?2",
                rusqlite::params!["x".repeat(70_000), rowid],
            )
            .unwrap();
        let Err(e) = KnownActivities::load(&ledger) else {
            panic!("an ID of 70,000 bytes was taken")
        };
        assert!(
            format!("{e:#}").contains("an Activity ID of 70000 bytes"),
            "rowid {rowid}: {e:#}"
        );
    }
}

/// A rowid past what the table holds is an error, before anything is sized from the range
/// of rowids.
#[test]
fn a_rowid_past_four_billion_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_of(dir.path(), 3);
    ledger
        .conn()
        .execute(
            "INSERT INTO activities (id, activity_id, state, updated_at, report_id, row, events)
             VALUES (5000000000, 'ACT-far', 1, 0, 1, 1, 1)",
            [],
        )
        .unwrap();
    let Err(e) = KnownActivities::load(&ledger) else {
        panic!("a rowid past 4 billion was taken")
    };
    assert!(
        format!("{e:#}").contains("more than 4 billion Activities"),
        "{e:#}"
    );
}
