//! What the ledger records of every Activity, held in memory for one run: a compact hash
//! table from Activity ID to its state and position, so that each report row is judged
//! without a look-up in SQLite.
//!
//! Guarantees: built from `activities` when a run starts and thrown away with the run;
//! never stored. The planner keeps it equal to `activities` as it writes; after a report is
//! rolled back it is built again from `activities`. About 24 bytes an Activity plus its ID
//! and the table's slots (~5 bytes): ~40 bytes for IDs of a dozen characters.

use std::hash::BuildHasher;

use anyhow::{Result, bail};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::ledger::Ledger;
use crate::ledger::activities::{Position, Recorded};
use crate::state::State;

/// One Activity: where its ID ends in [`KnownActivities::ids`] (it starts where the one
/// before it ends), its position and its state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: i64,
    id_end: u32,
    report: u32,
    row: u32,
    state: State,
}

/// Every Activity the ledger knows (see the module's documentation).
pub(crate) struct KnownActivities {
    /// Indices into `entries`, by the hash of the Activity's ID.
    table: HashTable<u32>,
    entries: Vec<Entry>,
    /// Every ID, one after another, in the order of `entries`.
    ids: Vec<u8>,
    hasher: DefaultHashBuilder,
}

/// A known Activity's place in the table, to update it after a look-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(u32);

impl KnownActivities {
    fn empty(capacity: usize) -> Self {
        KnownActivities {
            table: HashTable::with_capacity(capacity),
            entries: Vec::with_capacity(capacity),
            ids: Vec::with_capacity(capacity * 12),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// Every Activity `activities` holds.
    pub(crate) fn load(ledger: &Ledger) -> Result<Self> {
        let started = std::time::Instant::now();
        let mut known = KnownActivities::empty(ledger.count_activities()? as usize);
        ledger.each_activity(|id, recorded| known.insert(id, recorded).map(drop))?;
        tracing::debug!(
            activities = known.entries.len(),
            ms = started.elapsed().as_millis() as u64,
            "Activities loaded"
        );
        Ok(known)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn id(&self, i: usize) -> &[u8] {
        let start = match i {
            0 => 0,
            _ => self.entries[i - 1].id_end as usize,
        };
        &self.ids[start..self.entries[i].id_end as usize]
    }

    /// The Activity's slot and what the ledger records of it, if it knows it.
    pub(crate) fn get(&self, id: &str) -> Option<(Slot, Recorded)> {
        let hash = self.hasher.hash_one(id.as_bytes());
        let &i = self
            .table
            .find(hash, |&i| self.id(i as usize) == id.as_bytes())?;
        let e = self.entries[i as usize];
        Some((
            Slot(i),
            Recorded {
                state: e.state,
                position: Position {
                    at: e.at,
                    report: i64::from(e.report),
                    row: u64::from(e.row),
                },
            },
        ))
    }

    /// Adds an Activity the table does not hold yet.
    pub(crate) fn insert(&mut self, id: &str, recorded: Recorded) -> Result<Slot> {
        let i = u32::try_from(self.entries.len())
            .map_err(|_| anyhow::anyhow!("more than 4 billion Activities"))?;
        self.ids.extend_from_slice(id.as_bytes());
        let Ok(id_end) = u32::try_from(self.ids.len()) else {
            bail!("the Activity IDs take more than 4 GB");
        };
        self.entries.push(entry(id_end, recorded)?);
        let hash = self.hasher.hash_one(id.as_bytes());
        let (entries, ids, hasher) = (&self.entries, &self.ids, &self.hasher);
        self.table.insert_unique(hash, i, |&j| {
            let j = j as usize;
            let start = if j == 0 {
                0
            } else {
                entries[j - 1].id_end as usize
            };
            hasher.hash_one(&ids[start..entries[j].id_end as usize])
        });
        Ok(Slot(i))
    }

    /// Records a known Activity's new state and position.
    pub(crate) fn update(&mut self, slot: Slot, recorded: Recorded) -> Result<()> {
        let e = &mut self.entries[slot.0 as usize];
        *e = entry(e.id_end, recorded)?;
        Ok(())
    }
}

fn entry(id_end: u32, r: Recorded) -> Result<Entry> {
    let (Ok(report), Ok(row)) = (
        u32::try_from(r.position.report),
        u32::try_from(r.position.row),
    ) else {
        bail!(
            "a position past what the ledger holds in memory (report {}, row {})",
            r.position.report,
            r.position.row
        );
    };
    Ok(Entry {
        at: r.position.at,
        id_end,
        report,
        row,
        state: r.state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: State, at: i64, report: i64, row: u64) -> Recorded {
        Recorded {
            state,
            position: Position { at, report, row },
        }
    }

    #[test]
    fn activities_are_found_by_id_and_updated_in_place() {
        let mut k = KnownActivities::empty(0);
        let ids: Vec<String> = (0..10_000).map(|i| format!("ACT-{i:07}")).collect();
        for (i, id) in ids.iter().enumerate() {
            k.insert(id, rec(State::Ordered, i as i64, 1, i as u64))
                .unwrap();
        }
        k.insert("", rec(State::Cancelled, 0, 2, 0)).unwrap();
        k.insert("Zoë", rec(State::Completed, -5, 3, 9)).unwrap();
        assert_eq!(k.len(), 10_002);
        for (i, id) in ids.iter().enumerate() {
            let (_, r) = k.get(id).unwrap();
            assert_eq!(r, rec(State::Ordered, i as i64, 1, i as u64));
        }
        assert_eq!(k.get("").unwrap().1, rec(State::Cancelled, 0, 2, 0));
        assert_eq!(k.get("Zoë").unwrap().1, rec(State::Completed, -5, 3, 9));
        assert!(k.get("ACT-0010000").is_none());
        assert!(k.get("Zo").is_none());
        let (slot, _) = k.get("ACT-0000042").unwrap();
        k.update(slot, rec(State::Completed, 99, 7, 3)).unwrap();
        assert_eq!(
            k.get("ACT-0000042").unwrap().1,
            rec(State::Completed, 99, 7, 3)
        );
        assert_eq!(
            k.get("ACT-0000043").unwrap().1,
            rec(State::Ordered, 43, 1, 43)
        );
    }
}
