//! What the ledger records of every Activity, held in memory for one run: a compact hash
//! table from Activity ID to its [`Record`], so that each report row is judged without a
//! look-up in SQLite, and each Activity's changes are written to `activities` later, in ID
//! order, a walk over the table instead of a jump per row.
//!
//! Guarantees: built from `activities` when a run starts and thrown away with the run;
//! never stored. Every change made here is marked until it is written ([`drain_fresh`],
//! [`drain_dirty`]); after a report is rolled back the table is built again from
//! `activities`. 28 bytes an Activity, plus its ID and about 5 bytes of hash table.
//!
//! [`drain_fresh`]: KnownActivities::drain_fresh
//! [`drain_dirty`]: KnownActivities::drain_dirty

use std::hash::BuildHasher;

use anyhow::{Result, bail};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::ledger::Ledger;
use crate::ledger::activities::{Position, Record};
use crate::state::State;

/// One Activity, packed: where its ID ends in [`KnownActivities::ids`] (it starts where
/// the one before it ends), its position, its latest event, and in `meta` its event count
/// (the low 24 bits), state and flags.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
struct Entry {
    at: i64,
    id_end: u32,
    report: u32,
    row: u32,
    /// 0 for none (event ids start at 1).
    event_id: u32,
    meta: u32,
}

const EVENTS: u32 = (1 << 24) - 1;
const STATE_SHIFT: u32 = 24;
const STATE: u32 = 0b111 << STATE_SHIFT;
const HAS_ITSM: u32 = 1 << 27;
/// Changed since it was last written to `activities`.
const DIRTY: u32 = 1 << 28;
/// Not in `activities` yet.
const FRESH: u32 = 1 << 29;

impl Entry {
    fn new(id_end: u32, r: &Record, flags: u32) -> Result<Entry> {
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
        let (Ok(event_id), Ok(events)) = (
            u32::try_from(r.event_id.unwrap_or(0)),
            u32::try_from(r.events),
        ) else {
            bail!(
                "an event number past what the ledger holds in memory ({:?}, {} events)",
                r.event_id,
                r.events
            );
        };
        if events > EVENTS {
            bail!("an Activity with more than {EVENTS} events");
        }
        let itsm = if r.has_itsm_number { HAS_ITSM } else { 0 };
        Ok(Entry {
            at: r.position.at,
            id_end,
            report,
            row,
            event_id,
            meta: events | ((r.state.code() as u32) << STATE_SHIFT) | itsm | flags,
        })
    }

    fn record(&self) -> Record {
        let meta = self.meta;
        Record {
            state: State::from_code(i64::from((meta & STATE) >> STATE_SHIFT))
                .expect("a state stored by Entry::new"),
            position: Position {
                at: self.at,
                report: i64::from(self.report),
                row: u64::from(self.row),
            },
            event_id: match self.event_id {
                0 => None,
                id => Some(i64::from(id)),
            },
            events: i64::from(meta & EVENTS),
            has_itsm_number: meta & HAS_ITSM != 0,
        }
    }
}

/// Every Activity the ledger knows (see the module's documentation).
pub(crate) struct KnownActivities {
    /// Indices into `entries`, by the hash of the Activity's ID.
    table: HashTable<u32>,
    entries: Vec<Entry>,
    /// Every ID, one after another, in the order of `entries`.
    ids: Vec<u8>,
    hasher: DefaultHashBuilder,
    /// Slots of Activities not in `activities` yet.
    fresh: Vec<Slot>,
    /// How many entries are marked [`DIRTY`], and where [`KnownActivities::drain_dirty`]
    /// goes on from.
    dirty: usize,
    cursor: usize,
}

/// An Activity's place in the table. Those loaded from the ledger take theirs in ID order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Slot(u32);

impl KnownActivities {
    fn with_capacity(capacity: usize) -> Self {
        KnownActivities {
            table: HashTable::with_capacity(capacity),
            entries: Vec::with_capacity(capacity),
            ids: Vec::with_capacity(capacity * 12),
            hasher: DefaultHashBuilder::default(),
            fresh: Vec::new(),
            dirty: 0,
            cursor: 0,
        }
    }

    /// Every Activity `activities` holds.
    pub(crate) fn load(ledger: &Ledger) -> Result<Self> {
        let started = std::time::Instant::now();
        let mut known = KnownActivities::with_capacity(ledger.count_activities()? as usize);
        ledger.each_activity(|id, record| known.push(id, &record, 0).map(drop))?;
        tracing::debug!(
            activities = known.entries.len(),
            ms = started.elapsed().as_millis() as u64,
            "Activities loaded"
        );
        Ok(known)
    }

    fn id(&self, i: usize) -> &[u8] {
        let start = match i {
            0 => 0,
            _ => self.entries[i - 1].id_end as usize,
        };
        &self.ids[start..self.entries[i].id_end as usize]
    }

    /// The ID of the Activity in `slot`.
    pub(crate) fn id_of(&self, slot: Slot) -> &str {
        // Every ID went in as a `str`, and IDs are stored one after another whole.
        std::str::from_utf8(self.id(slot.0 as usize)).unwrap_or_default()
    }

    /// The Activity's slot, if the table holds it.
    pub(crate) fn find(&self, id: &str) -> Option<Slot> {
        let hash = self.hasher.hash_one(id.as_bytes());
        self.table
            .find(hash, |&i| self.id(i as usize) == id.as_bytes())
            .map(|&i| Slot(i))
    }

    pub(crate) fn get(&self, slot: Slot) -> Record {
        self.entries[slot.0 as usize].record()
    }

    /// Adds an Activity the ledger does not know yet (see [`KnownActivities::drain_fresh`]).
    pub(crate) fn add(&mut self, id: &str, record: &Record) -> Result<Slot> {
        let slot = self.push(id, record, FRESH)?;
        self.fresh.push(slot);
        Ok(slot)
    }

    fn push(&mut self, id: &str, record: &Record, flags: u32) -> Result<Slot> {
        let i = u32::try_from(self.entries.len())
            .map_err(|_| anyhow::anyhow!("more than 4 billion Activities"))?;
        self.ids.extend_from_slice(id.as_bytes());
        let Ok(id_end) = u32::try_from(self.ids.len()) else {
            bail!("the Activity IDs take more than 4 GB");
        };
        self.entries.push(Entry::new(id_end, record, flags)?);
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

    /// Records a known Activity's new record, to be written (see
    /// [`KnownActivities::drain_dirty`]).
    pub(crate) fn set(&mut self, slot: Slot, record: &Record) -> Result<()> {
        let e = &mut self.entries[slot.0 as usize];
        let old = e.meta;
        let flags = old & (FRESH | DIRTY);
        let flags = if flags == 0 {
            self.dirty += 1;
            DIRTY
        } else {
            flags
        };
        *e = Entry::new(e.id_end, record, flags)?;
        Ok(())
    }

    /// How many Activities were added since [`KnownActivities::drain_fresh`] last ran.
    pub(crate) fn fresh_len(&self) -> usize {
        self.fresh.len()
    }

    /// The Activities added since the last call, in ID order; they count as written.
    pub(crate) fn drain_fresh(&mut self) -> Vec<Slot> {
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.sort_unstable_by(|a, b| self.id(a.0 as usize).cmp(self.id(b.0 as usize)));
        for s in &fresh {
            self.entries[s.0 as usize].meta &= !FRESH;
        }
        fresh
    }

    /// Whether changes to known Activities wait to be written.
    pub(crate) fn has_dirty(&self) -> bool {
        self.dirty > 0
    }

    /// Up to `budget` known Activities whose changes wait to be written, in slot order from
    /// where the last call stopped (wrapping around: a walk over the table); they count as
    /// written.
    pub(crate) fn drain_dirty(&mut self, budget: usize) -> Vec<Slot> {
        let mut out = Vec::with_capacity(budget.min(self.dirty));
        let n = self.entries.len();
        let mut scanned = 0;
        while self.dirty > 0 && out.len() < budget && scanned < n {
            if self.cursor >= n {
                self.cursor = 0;
            }
            let e = &mut self.entries[self.cursor];
            if e.meta & DIRTY != 0 {
                e.meta &= !DIRTY;
                self.dirty -= 1;
                out.push(Slot(self.cursor as u32));
            }
            self.cursor += 1;
            scanned += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
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
            k.push(id, &rec(State::Ordered, i as i64, 1, i as u64), 0)
                .unwrap();
        }
        k.add("", &rec(State::Cancelled, 0, 2, 0)).unwrap();
        k.add("Zoë", &rec(State::Completed, -5, 3, 9)).unwrap();
        for (i, id) in ids.iter().enumerate() {
            let slot = k.find(id).unwrap();
            assert_eq!(k.id_of(slot), id);
            assert_eq!(k.get(slot), rec(State::Ordered, i as i64, 1, i as u64));
        }
        assert_eq!(k.get(k.find("").unwrap()), rec(State::Cancelled, 0, 2, 0));
        assert_eq!(
            k.get(k.find("Zoë").unwrap()),
            rec(State::Completed, -5, 3, 9)
        );
        assert!(k.find("ACT-0010000").is_none());
        assert!(k.find("Zo").is_none());
        let mut none = rec(State::OnBackOrder, i64::MIN, 7, 0);
        none.event_id = None;
        none.events = 0;
        let slot = k.find("ACT-0000042").unwrap();
        k.set(slot, &none).unwrap();
        assert_eq!(k.get(slot), none);
        assert_eq!(
            k.get(k.find("ACT-0000043").unwrap()),
            rec(State::Ordered, 43, 1, 43)
        );
    }

    #[test]
    fn changes_are_drained_once_fresh_ones_in_id_order_known_ones_in_slot_order() {
        let mut k = KnownActivities::with_capacity(0);
        for i in 0..100 {
            k.push(&format!("A{i:03}"), &rec(State::Ordered, 0, 1, 0), 0)
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
        let fresh: Vec<&str> = k.drain_fresh().iter().map(|&s| k.id_of(s)).collect();
        assert_eq!(fresh, ["B1", "B2"]);
        assert!(k.drain_fresh().is_empty());
        let first: Vec<&str> = k.drain_dirty(2).iter().map(|&s| k.id_of(s)).collect();
        assert_eq!(first, ["A010", "A040"]);
        // Changed again behind the walk: found when it wraps around.
        let s = k.find("A005").unwrap();
        k.set(s, &rec(State::Cancelled, 2, 1, 1)).unwrap();
        let rest: Vec<&str> = k.drain_dirty(10).iter().map(|&s| k.id_of(s)).collect();
        assert_eq!(rest, ["A070", "A005"]);
        assert!(!k.has_dirty());
        assert!(k.drain_dirty(10).is_empty());
    }
}
