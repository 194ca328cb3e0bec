//! The rules of the dedupe module's documentation, as code: the order of rows
//! ([`Order`]), what a row does to an Activity ([`verdict`]), and an event's stable id
//! ([`event_key`]). Pure: nothing here reads or writes the ledger.

use std::cmp::Ordering;
use std::collections::HashMap;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::ledger::Ledger;
use crate::ledger::activities::Position;
use crate::ledger::reports::ReportKey;
use crate::state::State;

/// What one accepted row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Rule 1: an event `none → state`.
    New,
    /// Rule 2: an event `from → state`.
    Change { from: State },
    /// Rules 3 and 4: no event; `newer` when the recorded position moves to the row.
    Unchanged { newer: bool },
    /// Rule 4: a row before the recorded position.
    Stale,
    /// Rule 5: the row replaces this report's event for the Activity.
    Amend,
    /// Rule 5: the row puts the Activity back where it was before this report: the
    /// report's event for it is withdrawn.
    Withdraw,
}

/// The rules for one row in `state`.
///
/// `known`: the state the ledger records for the row's Activity and where the row stands
/// against the recorded position (`None`: the Activity is new). `own`: when this report
/// already emitted a change for the Activity, the state that change started from (`None`
/// inside for a new Activity).
pub(crate) fn verdict(
    state: State,
    known: Option<(State, Ordering)>,
    own: Option<Option<State>>,
) -> Verdict {
    let Some((recorded, ordering)) = known else {
        return Verdict::New;
    };
    match (ordering, own) {
        (Ordering::Less, _) => Verdict::Stale,
        (Ordering::Equal, _) => Verdict::Unchanged { newer: false },
        (Ordering::Greater, Some(before)) if before == Some(state) => Verdict::Withdraw,
        (Ordering::Greater, Some(_)) => Verdict::Amend,
        (Ordering::Greater, None) if state == recorded => Verdict::Unchanged { newer: true },
        (Ordering::Greater, None) => Verdict::Change { from: recorded },
    }
}

/// The order of rows across reports (see the module's documentation): each processed
/// report's date, mtime, name and content hash, by the id positions name it with, and its
/// rank in that order.
#[derive(Debug, Default)]
pub(crate) struct Order {
    reports: HashMap<i64, ReportKey>,
    /// By report id: its rank among the reports (from 1; 0 for an id that is no processed
    /// report's). Two records of one report's content under one name (a replay recorded by
    /// an earlier release) share a rank.
    rank: Vec<u32>,
}

impl Order {
    /// The places of the reports the ledger holds as processed.
    pub(crate) fn load(ledger: &Ledger) -> Result<Order> {
        let mut order = Order::default();
        for key in ledger.processed_reports()? {
            order.reports.insert(key.id, key);
        }
        order.rank();
        Ok(order)
    }

    /// Adds (or replaces) a report's place.
    pub(crate) fn insert(&mut self, key: ReportKey) {
        self.reports.insert(key.id, key);
        self.rank();
    }

    fn rank(&mut self) {
        let mut keys: Vec<&ReportKey> = self.reports.values().collect();
        keys.sort_by(|a, b| place(a).cmp(&place(b)));
        let top = keys.iter().map(|k| k.id).max().unwrap_or(0);
        let mut rank = vec![0u32; usize::try_from(top).unwrap_or(0) + 1];
        let mut r = 0;
        for (i, k) in keys.iter().enumerate() {
            if i == 0 || place(keys[i - 1]) != place(k) {
                r += 1;
            }
            if let Ok(id) = usize::try_from(k.id) {
                rank[id] = r;
            }
        }
        self.rank = rank;
    }

    /// Whether a report's place among those known needs its content hash: another report
    /// has the same date, mtime and name.
    pub(crate) fn needs_hash(&self, date: &str, mtime: i64, name: &str) -> bool {
        self.reports
            .values()
            .any(|k| k.date == date && k.mtime == mtime && k.name == name)
    }

    /// Where position `a` stands against `b`.
    pub(crate) fn cmp(&self, a: &Position, b: &Position) -> Ordering {
        a.at.cmp(&b.at)
            .then_with(|| self.cmp_reports(a.report, b.report))
            .then(a.row.cmp(&b.row))
    }

    /// Reports by date, mtime, name, then content hash. A report the ledger does not hold
    /// as processed (an edited ledger) comes before all others.
    fn cmp_reports(&self, a: i64, b: i64) -> Ordering {
        if a == b {
            return Ordering::Equal;
        }
        let rank = |id: i64| {
            usize::try_from(id)
                .ok()
                .and_then(|i| self.rank.get(i))
                .copied()
                .unwrap_or(0)
        };
        rank(a).cmp(&rank(b))
    }
}

/// A report's place: date, mtime, name, content hash.
fn place(k: &ReportKey) -> (&str, i64, &str, &str) {
    (&k.date, k.mtime, &k.name, &k.sha256)
}

/// The stable id of an event: the same history gives the same id, in any ledger.
pub(crate) fn event_key(
    activity_id: &str,
    seq: i64,
    previous: Option<State>,
    state: State,
    at: i64,
) -> String {
    let mut h = Sha256::new();
    h.update(activity_id.as_bytes());
    h.update([0]);
    h.update(seq.to_le_bytes());
    h.update([previous.map_or(0, |s| s.code() as u8), state.code() as u8]);
    h.update(at.to_le_bytes());
    let digest = h.finalize();
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};
    use State::{Cancelled, Completed, OnBackOrder, Ordered};

    #[test]
    fn the_five_rules() {
        assert_eq!(verdict(Ordered, None, None), Verdict::New);
        assert_eq!(
            verdict(Completed, Some((Ordered, Greater)), None),
            Verdict::Change { from: Ordered }
        );
        assert_eq!(
            verdict(Ordered, Some((Ordered, Greater)), None),
            Verdict::Unchanged { newer: true }
        );
        assert_eq!(
            verdict(Ordered, Some((Ordered, Equal)), None),
            Verdict::Unchanged { newer: false }
        );
        assert_eq!(
            verdict(Ordered, Some((Completed, Less)), None),
            Verdict::Stale
        );
        // This report moved it ordered → completed; a later row:
        let own = Some(Some(Ordered));
        assert_eq!(
            verdict(Cancelled, Some((Completed, Greater)), own),
            Verdict::Amend
        );
        assert_eq!(
            verdict(Completed, Some((Completed, Greater)), own),
            Verdict::Amend
        );
        assert_eq!(
            verdict(Ordered, Some((Completed, Greater)), own),
            Verdict::Withdraw
        );
        assert_eq!(
            verdict(Ordered, Some((Completed, Less)), own),
            Verdict::Stale
        );
        // A new Activity this report added, changed again by a later row.
        assert_eq!(
            verdict(OnBackOrder, Some((Ordered, Greater)), Some(None)),
            Verdict::Amend
        );
    }

    fn key(id: i64, date: &str, mtime: i64, name: &str, sha: &str) -> ReportKey {
        ReportKey {
            id,
            date: date.into(),
            mtime,
            name: name.into(),
            sha256: sha.into(),
        }
    }

    #[test]
    fn rows_are_ordered_by_time_then_report_then_row() {
        let mut order = Order::default();
        order.insert(key(1, "2026-11-02", 50, "b.csv", "aa"));
        order.insert(key(2, "2026-11-01", 90, "a.csv", "bb"));
        order.insert(key(3, "2026-11-02", 50, "b.csv", "ab"));
        order.insert(key(4, "2026-11-02", 50, "b.csv", "aa"));
        order.insert(key(5, "2026-11-02", 60, "a.csv", "aa"));
        let p = |at, report, row| Position { at, report, row };
        // Time first, whatever the report.
        assert_eq!(order.cmp(&p(10, 2, 9), &p(9, 1, 1)), Greater);
        // Equal times: the report's date, then mtime, then name, then hash.
        assert_eq!(order.cmp(&p(10, 2, 9), &p(10, 1, 1)), Less);
        assert_eq!(order.cmp(&p(10, 5, 1), &p(10, 1, 9)), Greater);
        assert_eq!(order.cmp(&p(10, 3, 1), &p(10, 1, 9)), Greater);
        // The same content recorded twice under one name is one place: rows decide.
        assert_eq!(order.cmp(&p(10, 4, 3), &p(10, 1, 3)), Equal);
        assert_eq!(order.cmp(&p(10, 4, 2), &p(10, 1, 3)), Less);
        // A report the ledger does not hold comes first.
        assert_eq!(order.cmp(&p(10, 99, 9), &p(10, 2, 1)), Less);
        assert!(order.needs_hash("2026-11-02", 50, "b.csv"));
        assert!(!order.needs_hash("2026-11-02", 51, "b.csv"));
    }

    #[test]
    fn event_keys_are_stable_and_distinct() {
        let a = event_key("A1", 1, None, State::Ordered, 100);
        assert_eq!(a, event_key("A1", 1, None, State::Ordered, 100));
        assert_ne!(a, event_key("A1", 2, None, State::Ordered, 100));
        assert_ne!(a, event_key("A2", 1, None, State::Ordered, 100));
        assert_eq!(a.len(), 32);
    }
}
