//! What the ledger records of every Activity, held in memory for one run: a hash table
//! from Activity ID to its [`Record`], so that each report row is judged without a look-up
//! in SQLite, and each Activity's changes are written to `activities` later, in rowid
//! order: a walk over the table instead of a jump per row.
//!
//! Guarantees: built from `activities` when a run starts and thrown away with the run;
//! never stored. Every change made here stays marked until it is written ([`drain_fresh`],
//! [`drain_dirty`]); after a report is rolled back the table is built again from
//! `activities`.
//!
//! Layout: the Activities lie one after another in one buffer, each as the length of its
//! ID (2 bytes), the ID, then its record in 28 bytes (rowid, position, latest event, and
//! in one word its event count, state and flags); a hash table of 4-byte offsets into the
//! buffer finds them. A look-up touches the table and one place in the
//! buffer. With IDs of a dozen characters that is ~47 bytes an Activity.
//!
//! [`drain_fresh`]: KnownActivities::drain_fresh
//! [`drain_dirty`]: KnownActivities::drain_dirty

use std::hash::BuildHasher;

use anyhow::{Result, bail};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::ledger::Ledger;
use crate::ledger::activities::{Position, Record};
use crate::state::State;

/// The bytes of an Activity's record after its ID: rowid, at, report, row, event id, meta.
const RECORD: usize = 4 + 8 + 4 + 4 + 4 + 4;
/// The longest ID the table holds (an Activity ID is far shorter: see `report::row`).
const MAX_ID: usize = u16::MAX as usize;

// `meta`: the event count (24 bits), the state code (3 bits) and flags.
const EVENTS: u32 = (1 << 24) - 1;
const STATE_SHIFT: u32 = 24;
const STATE: u32 = 0b111 << STATE_SHIFT;
const HAS_ITSM: u32 = 1 << 27;
/// Changed since it was last written to `activities`.
const DIRTY: u32 = 1 << 28;
/// Not in `activities` yet.
const FRESH: u32 = 1 << 29;

/// Below this many Activities, one thread reads them all.
const PARALLEL_LOAD: u64 = 100_000;
/// Threads reading the Activities of a larger ledger.
const READERS: usize = 2;
/// The most Activities the table is sized for before it is filled. It is sized from the
/// range of rowids (Activities are never deleted, so that is how many there are, but for a
/// ledger edited by hand); past this it grows as it fills.
const PRESIZE_MAX: u64 = 1 << 22;

/// Activities read on another thread, laid out as [`KnownActivities`] holds them, with
/// each one's hash and offset in the chunk.
struct Chunk {
    data: Vec<u8>,
    entries: Vec<(u64, u32)>,
}

/// Rowids a chunk covers (it holds an Activity for each rowid in use).
const CHUNK: usize = 4096;

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            data: Vec::with_capacity(CHUNK * (2 + 12 + RECORD)),
            entries: Vec::with_capacity(CHUNK),
        }
    }

    /// Reads the Activities of each block of rowids in `blocks`, each hashed by `hasher`
    /// (the table's own), and sends them on: one chunk per block, empty or not, so that the
    /// taker knows which block each chunk is.
    fn read_blocks(
        ledger: &Ledger,
        blocks: impl Iterator<Item = std::ops::Range<i64>>,
        hasher: &DefaultHashBuilder,
        tx: &std::sync::mpsc::SyncSender<Chunk>,
    ) -> Result<()> {
        for block in blocks {
            let mut chunk = Chunk::new();
            ledger.each_activity(block, |rowid, id, record| {
                let offset = write_entry(&mut chunk.data, id, row_id(rowid)?, &record, 0)?;
                chunk.entries.push((hasher.hash_one(id.as_bytes()), offset));
                Ok(())
            })?;
            tx.send(chunk).map_err(|_| TableStopped)?;
        }
        Ok(())
    }
}

/// A reader stopped because the table stopped taking its chunks: whatever stopped the
/// table is the error to report.
#[derive(Debug)]
struct TableStopped;

impl std::fmt::Display for TableStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the table stopped taking Activities")
    }
}

impl std::error::Error for TableStopped {}

/// `rowids` cut into blocks of [`CHUNK`] rowids, in order.
fn blocks(rowids: std::ops::Range<i64>) -> impl Iterator<Item = std::ops::Range<i64>> + Clone {
    rowids
        .clone()
        .step_by(CHUNK)
        .map(move |start| start..(start + CHUNK as i64).min(rowids.end))
}

/// A rowid as the table holds it.
fn row_id(rowid: i64) -> Result<u32> {
    u32::try_from(rowid).map_err(|_| anyhow::anyhow!("more than 4 billion Activities"))
}

/// Appends an Activity (its ID's length, its ID, its record) to `data`; returns its offset.
fn write_entry(
    data: &mut Vec<u8>,
    id: &str,
    rowid: u32,
    record: &Record,
    flags: u32,
) -> Result<u32> {
    if id.len() > MAX_ID {
        bail!("an Activity ID of {} bytes (at most {MAX_ID})", id.len());
    }
    let Ok(offset) = u32::try_from(data.len()) else {
        bail!("the Activities take more than 4 GB of memory");
    };
    data.extend_from_slice(&(id.len() as u16).to_le_bytes());
    data.extend_from_slice(id.as_bytes());
    let at = data.len();
    data.resize(at + RECORD, 0);
    Packed::new(rowid, record, flags)?.write(&mut data[at..]);
    Ok(offset)
}

/// An Activity's place in the table (its offset in the buffer). Those loaded from the
/// ledger lie in rowid order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Slot(u32);

/// Every Activity the ledger knows (see the module's documentation).
pub(crate) struct KnownActivities {
    /// Offsets into `data`, by the hash of the Activity's ID.
    table: HashTable<u32>,
    data: Vec<u8>,
    hasher: DefaultHashBuilder,
    /// Activities not in `activities` yet.
    fresh: Vec<Slot>,
    /// How many Activities are marked [`DIRTY`], and where [`KnownActivities::drain_dirty`]
    /// goes on from.
    dirty: usize,
    cursor: usize,
}

/// A record as the buffer holds it.
struct Packed {
    rowid: u32,
    at: i64,
    report: u32,
    row: u32,
    event_id: u32,
    meta: u32,
}

impl Packed {
    fn new(rowid: u32, r: &Record, flags: u32) -> Result<Packed> {
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
        Ok(Packed {
            rowid,
            at: r.position.at,
            report,
            row,
            event_id,
            meta: events | ((r.state.code() as u32) << STATE_SHIFT) | itsm | flags,
        })
    }

    fn read(b: &[u8]) -> Packed {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Packed {
            rowid: u32_at(0),
            at: i64::from_le_bytes(b[4..12].try_into().expect("8 bytes")),
            report: u32_at(12),
            row: u32_at(16),
            event_id: u32_at(20),
            meta: u32_at(24),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&self.rowid.to_le_bytes());
        b[4..12].copy_from_slice(&self.at.to_le_bytes());
        b[12..16].copy_from_slice(&self.report.to_le_bytes());
        b[16..20].copy_from_slice(&self.row.to_le_bytes());
        b[20..24].copy_from_slice(&self.event_id.to_le_bytes());
        b[24..28].copy_from_slice(&self.meta.to_le_bytes());
    }

    fn record(&self) -> Record {
        Record {
            state: State::from_code(i64::from((self.meta & STATE) >> STATE_SHIFT))
                .expect("a state stored by Packed::new"),
            position: Position {
                at: self.at,
                report: i64::from(self.report),
                row: u64::from(self.row),
            },
            event_id: match self.event_id {
                0 => None,
                id => Some(i64::from(id)),
            },
            events: i64::from(self.meta & EVENTS),
            has_itsm_number: self.meta & HAS_ITSM != 0,
        }
    }
}

impl KnownActivities {
    fn with_capacity(capacity: usize) -> Self {
        KnownActivities {
            table: HashTable::with_capacity(capacity),
            data: Vec::with_capacity(capacity * (2 + 12 + RECORD)),
            hasher: DefaultHashBuilder::default(),
            fresh: Vec::new(),
            dirty: 0,
            cursor: 0,
        }
    }

    /// Every Activity `activities` holds. When there are many, [`READERS`] threads step
    /// through SQLite, each taking every `READERS`-th block of rowids, and lay them out in
    /// chunks; this one takes the chunks in, from each reader in turn: in rowid order.
    pub(crate) fn load(ledger: &Ledger) -> Result<Self> {
        let started = std::time::Instant::now();
        let rowids = ledger.activity_rowids()?;
        if !rowids.is_empty() {
            row_id(rowids.end - 1)?;
        }
        let count = rowids.end.saturating_sub(rowids.start) as u64;
        let mut known = KnownActivities::with_capacity(count.min(PRESIZE_MAX) as usize);
        let readers = match count >= PARALLEL_LOAD {
            true => (0..READERS)
                .map(|_| ledger.reader())
                .collect::<Result<Option<Vec<Ledger>>>>()?,
            false => None,
        };
        match readers {
            Some(readers) => known.load_in_parallel(readers, rowids)?,
            _ => ledger.each_activity(rowids, |rowid, id, record| {
                known.push(id, row_id(rowid)?, &record, 0).map(drop)
            })?,
        }
        tracing::debug!(
            activities = known.table.len(),
            ms = started.elapsed().as_millis() as u64,
            "Activities loaded"
        );
        Ok(known)
    }

    /// Reads the Activities of `rowids` on one thread per reader, reader `k` taking blocks
    /// `k`, `k + n`...; appends each block's chunk in order, on this thread. (Each block is
    /// read in a transaction of its own: they agree because the run's lock keeps every
    /// other writer out of the ledger, and this run writes nothing meanwhile.)
    fn load_in_parallel(
        &mut self,
        readers: Vec<Ledger>,
        rowids: std::ops::Range<i64>,
    ) -> Result<()> {
        let n = readers.len();
        std::thread::scope(|scope| -> Result<()> {
            let mut taken = Vec::with_capacity(n);
            let mut reading = Vec::with_capacity(n);
            for (k, reader) in readers.into_iter().enumerate() {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
                let (hasher, blocks) = (self.hasher.clone(), blocks(rowids.clone()));
                reading.push(scope.spawn(move || {
                    Chunk::read_blocks(&reader, blocks.skip(k).step_by(n), &hasher, &tx)
                }));
                taken.push(rx);
            }
            // Block i comes from reader i mod n; the first reader out of blocks (or failed)
            // ends it.
            let mut taking = Ok(());
            for rx in taken.iter().cycle() {
                let Ok(chunk) = rx.recv() else { break };
                if let Err(e) = self.append(chunk) {
                    taking = Err(e);
                    break;
                }
            }
            drop(taken);
            // Every reader is joined. A reader's own failure is the one to report: the
            // others then only stopped, as the table did.
            let mut failed = None;
            for r in reading {
                let read = r.join().unwrap_or_else(|_| {
                    Err(anyhow::anyhow!("a thread reading Activities panicked"))
                });
                if let Err(e) = read
                    && !e.is::<TableStopped>()
                {
                    failed.get_or_insert(e);
                }
            }
            failed.map_or(taking, Err)
        })
    }

    /// Adds Activities laid out on another thread, after those the table holds.
    fn append(&mut self, chunk: Chunk) -> Result<()> {
        let Ok(shift) = u32::try_from(self.data.len()) else {
            bail!("the Activities take more than 4 GB of memory");
        };
        if u32::try_from(self.data.len() + chunk.data.len()).is_err() {
            bail!("the Activities take more than 4 GB of memory");
        }
        self.data.extend_from_slice(&chunk.data);
        let (data, hasher) = (&self.data, &self.hasher);
        for (hash, offset) in chunk.entries {
            self.table.insert_unique(hash, offset + shift, |&o| {
                hasher.hash_one(Self::id_at(data, o as usize).0)
            });
        }
        Ok(())
    }

    /// The ID at `offset` and where the record after it starts.
    fn id_at(data: &[u8], offset: usize) -> (&[u8], usize) {
        let len = u16::from_le_bytes([data[offset], data[offset + 1]]) as usize;
        (&data[offset + 2..offset + 2 + len], offset + 2 + len)
    }

    fn packed(&self, slot: Slot) -> Packed {
        let (_, at) = Self::id_at(&self.data, slot.0 as usize);
        Packed::read(&self.data[at..at + RECORD])
    }

    fn store(&mut self, slot: Slot, p: &Packed) {
        let (_, at) = Self::id_at(&self.data, slot.0 as usize);
        p.write(&mut self.data[at..at + RECORD]);
    }

    /// The ID of the Activity in `slot`.
    pub(crate) fn id_of(&self, slot: Slot) -> &str {
        // Every ID went in as a `str`, whole.
        std::str::from_utf8(Self::id_at(&self.data, slot.0 as usize).0).unwrap_or_default()
    }

    /// The Activity's slot, if the table holds it.
    pub(crate) fn find(&self, id: &str) -> Option<Slot> {
        let hash = self.hasher.hash_one(id.as_bytes());
        self.table
            .find(hash, |&o| {
                Self::id_at(&self.data, o as usize).0 == id.as_bytes()
            })
            .map(|&o| Slot(o))
    }

    pub(crate) fn get(&self, slot: Slot) -> Record {
        self.packed(slot).record()
    }

    /// The Activity's rowid in `activities` (0 while it is not there yet).
    pub(crate) fn rowid(&self, slot: Slot) -> i64 {
        i64::from(self.packed(slot).rowid)
    }

    /// Adds an Activity the ledger does not know yet (see [`KnownActivities::drain_fresh`]).
    pub(crate) fn add(&mut self, id: &str, record: &Record) -> Result<Slot> {
        let slot = self.push(id, 0, record, FRESH)?;
        self.fresh.push(slot);
        Ok(slot)
    }

    fn push(&mut self, id: &str, rowid: u32, record: &Record, flags: u32) -> Result<Slot> {
        let offset = write_entry(&mut self.data, id, rowid, record, flags)?;
        let hash = self.hasher.hash_one(id.as_bytes());
        let (data, hasher) = (&self.data, &self.hasher);
        self.table.insert_unique(hash, offset, |&o| {
            hasher.hash_one(Self::id_at(data, o as usize).0)
        });
        Ok(Slot(offset))
    }

    /// Records a known Activity's new record, to be written (see
    /// [`KnownActivities::drain_dirty`]).
    pub(crate) fn set(&mut self, slot: Slot, record: &Record) -> Result<()> {
        let old = self.packed(slot);
        let flags = match old.meta & (FRESH | DIRTY) {
            0 => {
                self.dirty += 1;
                DIRTY
            }
            flags => flags,
        };
        self.store(slot, &Packed::new(old.rowid, record, flags)?);
        Ok(())
    }

    /// How many Activities the table holds, new ones included.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// How many Activities were added since [`KnownActivities::drain_fresh`] last ran.
    pub(crate) fn fresh_len(&self) -> usize {
        self.fresh.len()
    }

    /// The Activities added since the last call, in ID order; they count as written once
    /// [`KnownActivities::set_rowid`] gives each its rowid.
    pub(crate) fn drain_fresh(&mut self) -> Vec<Slot> {
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.sort_unstable_by(|a, b| self.id_of(*a).cmp(self.id_of(*b)));
        fresh
    }

    /// Records the rowid a fresh Activity was inserted under.
    pub(crate) fn set_rowid(&mut self, slot: Slot, rowid: i64) -> Result<()> {
        let mut p = self.packed(slot);
        p.rowid = row_id(rowid)?;
        p.meta &= !FRESH;
        self.store(slot, &p);
        Ok(())
    }

    /// Whether changes to known Activities wait to be written.
    pub(crate) fn has_dirty(&self) -> bool {
        self.dirty > 0
    }

    /// How many known Activities have changes waiting to be written.
    pub(crate) fn dirty_len(&self) -> usize {
        self.dirty
    }

    /// Up to `budget` known Activities whose changes wait to be written, in the buffer's
    /// order from where the last call stopped (wrapping around: a walk over the table);
    /// they count as written.
    pub(crate) fn drain_dirty(&mut self, budget: usize) -> Vec<Slot> {
        let mut out = Vec::with_capacity(budget.min(self.dirty));
        let end = self.data.len();
        let mut wrapped = false;
        while self.dirty > 0 && out.len() < budget {
            if self.cursor >= end {
                if wrapped {
                    break;
                }
                self.cursor = 0;
                wrapped = true;
            }
            let slot = Slot(self.cursor as u32);
            let (_, at) = Self::id_at(&self.data, self.cursor);
            let mut p = Packed::read(&self.data[at..at + RECORD]);
            if p.meta & DIRTY != 0 {
                p.meta &= !DIRTY;
                p.write(&mut self.data[at..at + RECORD]);
                self.dirty -= 1;
                out.push(slot);
            }
            self.cursor = at + RECORD;
        }
        out
    }
}

#[cfg(test)]
#[path = "known_tests.rs"]
mod tests;
