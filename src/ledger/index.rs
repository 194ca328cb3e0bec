//! The Activity index: what every report row must look up, kept compact.
//!
//! For each Activity the ledger knows, 16 bytes: a 64-bit hash of its ID and a packed word
//! holding its state, its effective time, a 17-bit check from a second hash of the ID, and
//! the generation of the report that last changed it. Most rows of a daily report repeat a
//! state the ledger already has; the index answers those (unchanged, stale) without
//! touching SQLite, and tells a brand-new Activity apart without a look-up. Rows that change
//! something go on to the `activities` table, which stays the source of truth.
//!
//! The index is split by the top byte of the hash into [`PARTS`] parts, each its own hash
//! table (at most 80 % full) that grows on its own. A CSV report never holds more than one
//! part in memory: its rows' keys are spilled to disk by part and settled a part at a time
//! (`crate::deferred`), so memory does not grow with the ledger. An XLSX report loads every
//! part ([`ActivityIndex`]) and looks rows up as they come (`plan::Triage`).
//!
//! Each part is persisted inside the ledger, in the report's transaction, so it is never
//! out of step with `activities`: as blocks of slots (`activity_index`), a log of the slots
//! later reports changed (`activity_index_delta`), and a row saying what it holds
//! (`activity_index_part`). A report that changes 100,000 Activities scattered over a large
//! index logs 2 MB of slots instead of rewriting every block; a save that would take a
//! part's log past a quarter of its slots rewrites the part's changed blocks instead, and
//! empties its log. A ledger without a current index gets it rebuilt from `activities`
//! (in memory, once); a single damaged part is rebuilt alone.
//!
//! Hash collisions: a look-up matches only when both the 64-bit key and the 17-bit check
//! agree (81 bits). "Unchanged", "stale" and "new" are taken on the index's word (a key the
//! table lacks is an ID the ledger lacks); a change is confirmed against `activities` by ID
//! before its report commits.

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

use crate::activity::State;

/// Parts of the index: an Activity's part is the top byte of its key.
pub(crate) const PARTS: usize = 256;
/// A part never has fewer slots than this (2^MIN_BITS: one block).
const MIN_BITS: u32 = 9;
/// Slots a persisted block holds (8 KiB: a block fits in one 16 KiB ledger page).
const BLOCK: usize = 512;
/// Bytes of one logged slot: its position (u32), key and word (u64 each), little-endian.
const DELTA_ENTRY: usize = 20;
/// Logged slots per `activity_index_delta` row.
const DELTA_ROW: usize = 4096;
const TS_BIAS: i64 = 1 << 35;
const TS_MASK: u64 = (1 << 36) - 1;

/// Two independent 64-bit hashes of an Activity ID (FNV-1a, then a splitmix finaliser).
pub(crate) fn hash_id(id: &str) -> (u64, u64) {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for &byte in id.as_bytes() {
        a = (a ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ u64::from(byte))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(5);
    }
    (mix(a), mix(b ^ 0x5851_f42d_4c95_7f2d))
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What the index says of an Activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) state: State,
    pub(crate) updated_at: i64,
    /// The (8-bit, wrapping) generation of the report that last wrote it.
    pub(crate) generation: u8,
}

/// What the index says of an Activity a row names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Indexed {
    /// Not in the ledger.
    Absent,
    Found(Entry),
    /// The index cannot tell (a hash collision, a time it can only hold clamped): ask
    /// `activities`.
    Unsure,
}

fn pack(e: Entry, check: u64) -> u64 {
    let ts = ((e.updated_at.clamp(-TS_BIAS, TS_BIAS - 1) + TS_BIAS) as u64) & TS_MASK;
    ts | ((e.state.code() as u64) << 36)
        | (u64::from(e.generation) << 39)
        | ((check & 0x1_ffff) << 47)
}

fn unpack(v: u64) -> Option<Entry> {
    Some(Entry {
        updated_at: (v & TS_MASK) as i64 - TS_BIAS,
        state: State::from_code(((v >> 36) & 7) as i64)?,
        generation: ((v >> 39) & 0xff) as u8,
    })
}

fn check_of(v: u64) -> u64 {
    v >> 47
}

/// An Activity's key in the index (never 0, which marks an empty slot) and its 17-bit check.
pub(crate) fn key_check(id: &str) -> (u64, u64) {
    let (h, check) = hash_id(id);
    (key_of(h), check & 0x1_ffff)
}

fn key_of(h: u64) -> u64 {
    if h == 0 { 1 } else { h }
}

/// The part of the index a key belongs to (its top byte).
pub(crate) fn part_of(key: u64) -> usize {
    (key >> 56) as usize
}

/// The meta key whose presence says the persisted parts are current.
const CURRENT: &str = "index_parts";

/// Whether the persisted index is current (else it is rebuilt from `activities`).
pub(crate) fn is_current(conn: &Connection) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM meta WHERE key = ?1", [CURRENT], |_| Ok(()))
        .optional()?
        .is_some())
}

fn mark_current(conn: &Connection) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        params![CURRENT, PARTS as i64],
    )?;
    Ok(())
}

/// The bytes of the persisted parts' tables (what loading them all reads).
pub(crate) fn stored_bytes(conn: &Connection) -> Result<u64> {
    let slots: i64 = conn.query_row(
        "SELECT COALESCE(SUM(1 << bits), 0) FROM activity_index_part",
        [],
        |r| r.get(0),
    )?;
    Ok(slots as u64 * 16)
}

/// Removes every persisted part (before a rebuild is saved).
fn wipe(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DELETE FROM activity_index; DELETE FROM activity_index_delta;
         DELETE FROM activity_index_part;",
    )?;
    Ok(())
}

/// Marks the persisted index out of date: the next load rebuilds it from `activities`.
pub(crate) fn invalidate(conn: &Connection) -> Result<()> {
    conn.execute(
        "DELETE FROM meta WHERE key IN (?1, 'index_bits', 'index_len')",
        [CURRENT],
    )?;
    Ok(())
}

/// One part of the index: an open-addressing hash table (linear probing, key 0 marks an
/// empty slot, at most 80 % full) of the Activities whose key has its top byte, persisted
/// as 8 KiB blocks of slots and a log of the slots changed since.
pub(crate) struct Part {
    part: usize,
    bits: u32,
    slots: Vec<(u64, u64)>,
    /// Per block: it differs from the block persisted (the log holds the difference).
    dirty: Vec<bool>,
    /// Slots changed since the last save, each once (`changed_bits` marks them).
    changed: Vec<u32>,
    changed_bits: Vec<u64>,
    /// Entries in the persisted log, and the rows holding them.
    logged: usize,
    log_rows: usize,
    /// The layout changed: every block is rewritten on save.
    relaid: bool,
    len: usize,
}

/// The persisted blocks of part `p` have ids `p << 32 | block`; its log rows `p << 40 | n`.
fn block_ids(part: usize) -> (i64, i64) {
    let lo = (part as i64) << 32;
    (lo, lo | 0xffff_ffff)
}

fn log_ids(part: usize) -> (i64, i64) {
    let lo = (part as i64) << 40;
    (lo, lo | 0xff_ffff_ffff)
}

impl Part {
    fn with_bits(part: usize, bits: u32) -> Self {
        let n = 1usize << bits;
        let slots = vec![(0, 0); n];
        advise_huge_pages(&slots);
        Part {
            part,
            bits,
            slots,
            dirty: vec![false; n.div_ceil(BLOCK)],
            changed: Vec::new(),
            changed_bits: vec![0; n.div_ceil(64)],
            logged: 0,
            log_rows: 0,
            relaid: false,
            len: 0,
        }
    }

    /// An empty part, as a ledger without Activities in it has.
    pub(crate) fn empty(part: usize) -> Self {
        Part::with_bits(part, MIN_BITS)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn probe(&self, key: u64) -> usize {
        let mask = self.mask();
        let mut i = (mix(key) as usize) & mask;
        loop {
            let k = self.slots[i].0;
            if k == key || k == 0 {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    fn prefetch(&self, key: u64) {
        let slot: *const (u64, u64) = &self.slots[(mix(key) as usize) & self.mask()];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch only hints the cache; the address is inside the table.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                slot.cast::<i8>(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// What the part knows of the key: `Err(true)` when another ID holds it.
    fn lookup(&self, key: u64, check: u64) -> std::result::Result<Entry, bool> {
        let (k, v) = self.slots[self.probe(key)];
        if k == 0 {
            return Err(false);
        }
        if check_of(v) != check {
            return Err(true);
        }
        match unpack(v) {
            // A time the entry could only hold clamped: let `activities` answer.
            Some(e) if e.updated_at <= -TS_BIAS || e.updated_at >= TS_BIAS - 1 => Err(true),
            Some(e) => Ok(e),
            None => Err(true),
        }
    }

    /// What the part says of an Activity's key and check (see [`key_check`]).
    pub(crate) fn find(&self, key: u64, check: u64) -> Indexed {
        match self.lookup(key, check) {
            Ok(e) => Indexed::Found(e),
            Err(false) => Indexed::Absent,
            Err(true) => Indexed::Unsure,
        }
    }

    /// Records an Activity's entry. One whose key another ID holds is left out (look-ups
    /// of it then always go to `activities`).
    pub(crate) fn put(&mut self, key: u64, check: u64, e: Entry) {
        let i = self.probe(key);
        let (k, v) = self.slots[i];
        if k != 0 && check_of(v) != check {
            return; // collision: the other ID keeps the slot
        }
        if k == 0 {
            self.len += 1;
        }
        self.slots[i] = (key, pack(e, check));
        self.dirty[i / BLOCK] = true;
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        // A relaid table is written whole: no need to remember which slots changed.
        if !self.relaid && self.changed_bits[word] & bit == 0 {
            self.changed_bits[word] |= bit;
            self.changed.push(i as u32);
        }
        if self.len * 5 > self.slots.len() * 4 {
            self.grow();
        }
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        *self = Part {
            relaid: true,
            len: self.len,
            logged: self.logged,
            log_rows: self.log_rows,
            ..Part::with_bits(self.part, self.bits + 1)
        };
        for (k, v) in old {
            if k != 0 {
                let i = self.probe(k);
                self.slots[i] = (k, v);
            }
        }
    }

    /// Copies a persisted block in; false when it does not fit this part.
    fn fill_block(&mut self, id: i64, blob: &[u8]) -> bool {
        let b = (id - block_ids(self.part).0) as usize;
        if b >= self.dirty.len() || blob.len() != BLOCK * 16 {
            return false;
        }
        let base = b * BLOCK;
        for (j, c) in blob.chunks_exact(16).enumerate() {
            let k = u64::from_le_bytes(c[..8].try_into().expect("16-byte chunk"));
            let v = u64::from_le_bytes(c[8..].try_into().expect("16-byte chunk"));
            if self.slots[base + j].0 != 0 {
                self.len -= 1;
            }
            self.slots[base + j] = (k, v);
            if k != 0 {
                self.len += 1;
            }
        }
        true
    }

    /// Applies one persisted row of the log; false when an entry does not fit this part.
    fn replay(&mut self, blob: &[u8]) -> bool {
        if !blob.len().is_multiple_of(DELTA_ENTRY) {
            return false;
        }
        for e in blob.chunks_exact(DELTA_ENTRY) {
            let pos = u32::from_le_bytes(e[..4].try_into().expect("4 bytes")) as usize;
            let k = u64::from_le_bytes(e[4..12].try_into().expect("8 bytes"));
            let v = u64::from_le_bytes(e[12..].try_into().expect("8 bytes"));
            if pos >= self.slots.len() || k == 0 || part_of(k) != self.part {
                return false;
            }
            if self.slots[pos].0 == 0 {
                self.len += 1;
            }
            self.slots[pos] = (k, v);
            self.dirty[pos / BLOCK] = true;
            self.logged += 1;
        }
        self.log_rows += 1;
        true
    }

    /// A part as its stored row (`bits, len, logged, rows`) describes it, before its blocks.
    fn described(part: usize, stored: Option<(i64, i64, i64, i64)>) -> Option<(Part, Stored)> {
        match stored {
            None => Some((Part::empty(part), Stored::default())),
            Some((bits, len, logged, rows)) if (MIN_BITS as i64..=32).contains(&bits) => Some((
                Part::with_bits(part, bits as u32),
                Stored {
                    len: len as usize,
                    logged: logged as usize,
                    rows: rows as usize,
                },
            )),
            Some(_) => None,
        }
    }

    /// Whether the blocks and log read match what the part's row says.
    fn matches(&self, stored: &Stored) -> bool {
        self.len == stored.len && self.logged == stored.logged && self.log_rows == stored.rows
    }

    /// Loads one part; None when what is stored does not match (it is then rebuilt).
    pub(crate) fn load(conn: &Connection, part: usize) -> Result<Option<Part>> {
        let stored = conn
            .prepare_cached(
                "SELECT bits, len, logged, rows FROM activity_index_part WHERE part = ?1",
            )?
            .query_row([part as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((mut p, stored)) = Part::described(part, stored) else {
            return Ok(None);
        };
        let (lo, hi) = block_ids(part);
        let blocks = feed(
            conn,
            "SELECT block, slots FROM activity_index WHERE block BETWEEN ?1 AND ?2",
            [lo, hi],
            |id, blob| p.fill_block(id, blob),
        )?;
        let (lo, hi) = log_ids(part);
        let logs = blocks
            && feed(
                conn,
                "SELECT seq, slots FROM activity_index_delta WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
                [lo, hi],
                |_, blob| p.replay(blob),
            )?;
        if !logs {
            return Ok(None);
        }
        Ok(p.matches(&stored).then_some(p))
    }

    /// Builds one part from `activities` (a damaged part of a current index).
    pub(crate) fn rebuild(conn: &Connection, part: usize) -> Result<Part> {
        let mut p = Part::empty(part);
        p.relaid = true;
        let mut stmt = conn.prepare("SELECT activity_id, state, updated_at FROM activities")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (key, check) = key_check(r.get_ref(0)?.as_str()?);
            if part_of(key) == part {
                p.put(key, check, rebuilt_entry(r.get(1)?, r.get(2)?)?);
            }
        }
        Ok(p)
    }

    /// Persists what changed (inside the caller's transaction): the changed slots go to
    /// the log, or, when the layout changed or the log would grow past a quarter of the
    /// slots, the changed blocks are rewritten and the log emptied.
    pub(crate) fn save(&mut self, conn: &Connection) -> Result<()> {
        if !self.relaid && self.changed.is_empty() {
            return Ok(());
        }
        let rewrite = self.relaid || (self.logged + self.changed.len()) * 4 > self.slots.len();
        if rewrite {
            self.write_blocks(conn)?;
        } else {
            self.write_log(conn)?;
        }
        for &i in &self.changed {
            self.changed_bits[i as usize / 64] = 0;
        }
        self.changed.clear();
        conn.prepare_cached(
            "INSERT OR REPLACE INTO activity_index_part (part, bits, len, logged, rows)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            self.part as i64,
            self.bits as i64,
            self.len as i64,
            self.logged as i64,
            self.log_rows as i64
        ])?;
        Ok(())
    }

    /// Rewrites every block that differs from the persisted one, and empties the log.
    fn write_blocks(&mut self, conn: &Connection) -> Result<()> {
        let (lo, hi) = block_ids(self.part);
        if self.relaid {
            conn.prepare_cached("DELETE FROM activity_index WHERE block BETWEEN ?1 AND ?2")?
                .execute([lo, hi])?;
        }
        // The whole range: a part rebuilt alone knows nothing of the log it replaces.
        let (llo, lhi) = log_ids(self.part);
        conn.prepare_cached("DELETE FROM activity_index_delta WHERE seq BETWEEN ?1 AND ?2")?
            .execute([llo, lhi])?;
        let mut stmt = conn.prepare_cached(
            "INSERT OR REPLACE INTO activity_index (block, slots) VALUES (?1, ?2)",
        )?;
        let mut blob = Vec::with_capacity(BLOCK * 16);
        for (b, chunk) in self.slots.chunks(BLOCK).enumerate() {
            let empty = chunk.iter().all(|s| s.0 == 0);
            if !(self.dirty[b] || (self.relaid && !empty)) {
                continue;
            }
            blob.clear();
            for (k, v) in chunk {
                blob.extend_from_slice(&k.to_le_bytes());
                blob.extend_from_slice(&v.to_le_bytes());
            }
            stmt.execute(params![lo + b as i64, blob])?;
            self.dirty[b] = false;
        }
        self.relaid = false;
        self.logged = 0;
        self.log_rows = 0;
        Ok(())
    }

    /// Appends the slots changed since the last save to the log.
    fn write_log(&mut self, conn: &Connection) -> Result<()> {
        let mut stmt =
            conn.prepare_cached("INSERT INTO activity_index_delta (seq, slots) VALUES (?1, ?2)")?;
        let mut blob = Vec::with_capacity(DELTA_ROW * DELTA_ENTRY);
        for rows in self.changed.chunks(DELTA_ROW) {
            blob.clear();
            for &i in rows {
                let (k, v) = self.slots[i as usize];
                blob.extend_from_slice(&i.to_le_bytes());
                blob.extend_from_slice(&k.to_le_bytes());
                blob.extend_from_slice(&v.to_le_bytes());
            }
            stmt.execute(params![log_ids(self.part).0 + self.log_rows as i64, blob])?;
            self.log_rows += 1;
        }
        self.logged += self.changed.len();
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn is_dirty(&self) -> bool {
        self.relaid || !self.changed.is_empty()
    }
}

/// What a part's row in `activity_index_part` says it holds.
#[derive(Default)]
struct Stored {
    len: usize,
    logged: usize,
    rows: usize,
}

fn rebuilt_entry(state: i64, updated_at: i64) -> Result<Entry> {
    Ok(Entry {
        state: State::from_code(state).context("ledger: bad state code")?,
        updated_at,
        generation: 0,
    })
}

/// Hands each row of `sql` (an id, a blob) to `f`; false when a value is not a blob or `f`
/// refuses it (the index is then damaged).
fn feed(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut f: impl FnMut(i64, &[u8]) -> bool,
) -> Result<bool> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        if !r.get_ref(1)?.as_blob().is_ok_and(|blob| f(id, blob)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The part the bits of `id` from `shift` up name, if any.
fn part_at(parts: &mut [Part], id: i64, shift: u32) -> Option<&mut Part> {
    usize::try_from(id >> shift)
        .ok()
        .and_then(|p| parts.get_mut(p))
}

/// The whole Activity index in memory, all [`PARTS`] parts: for a report read in one pass
/// (XLSX), whose rows look it up as they come.
pub(crate) struct ActivityIndex {
    parts: Vec<Part>,
    /// Built from `activities`: the persisted parts are replaced whole on save.
    rebuilt: bool,
}

impl ActivityIndex {
    /// Loads the index from the ledger, rebuilding it from `activities` when it is missing
    /// or does not match.
    pub(crate) fn load(conn: &Connection) -> Result<ActivityIndex> {
        // The blocks are read once: they would only fill the page cache.
        let cache: i64 = conn.pragma_query_value(None, "cache_size", |r| r.get(0))?;
        conn.pragma_update(None, "cache_size", 16)?;
        let loaded = Self::load_all(conn);
        conn.pragma_update(None, "cache_size", cache)?;
        match loaded? {
            Some(idx) => Ok(idx),
            None => Self::rebuild(conn),
        }
    }

    fn load_all(conn: &Connection) -> Result<Option<ActivityIndex>> {
        if !is_current(conn)? {
            return Ok(None);
        }
        let mut stored: Vec<Option<(i64, i64, i64, i64)>> = vec![None; PARTS];
        let mut stmt =
            conn.prepare("SELECT part, bits, len, logged, rows FROM activity_index_part")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let p: i64 = r.get(0)?;
            let Some(slot) = usize::try_from(p).ok().and_then(|p| stored.get_mut(p)) else {
                return Ok(None);
            };
            *slot = Some((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?));
        }
        drop(rows);
        let mut parts = Vec::with_capacity(PARTS);
        let mut want = Vec::with_capacity(PARTS);
        for (p, s) in stored.into_iter().enumerate() {
            let Some((part, s)) = Part::described(p, s) else {
                return Ok(None);
            };
            parts.push(part);
            want.push(s);
        }
        let blocks = feed(
            conn,
            "SELECT block, slots FROM activity_index",
            [],
            |id, blob| part_at(&mut parts, id, 32).is_some_and(|part| part.fill_block(id, blob)),
        )?;
        let logs = blocks
            && feed(
                conn,
                "SELECT seq, slots FROM activity_index_delta ORDER BY seq",
                [],
                |seq, blob| part_at(&mut parts, seq, 40).is_some_and(|part| part.replay(blob)),
            )?;
        if !logs {
            return Ok(None);
        }
        if parts.iter().zip(&want).all(|(p, s)| p.matches(s)) {
            Ok(Some(ActivityIndex {
                parts,
                rebuilt: false,
            }))
        } else {
            tracing::warn!("the ledger's Activity index does not match: rebuilding it");
            Ok(None)
        }
    }

    /// Builds the index from `activities` (every part is rewritten on save).
    pub(crate) fn rebuild(conn: &Connection) -> Result<ActivityIndex> {
        let mut parts: Vec<Part> = (0..PARTS)
            .map(|p| {
                let mut part = Part::empty(p);
                part.relaid = true;
                part
            })
            .collect();
        let mut stmt = conn.prepare("SELECT activity_id, state, updated_at FROM activities")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (key, check) = key_check(r.get_ref(0)?.as_str()?);
            parts[part_of(key)].put(key, check, rebuilt_entry(r.get(1)?, r.get(2)?)?);
        }
        Ok(ActivityIndex {
            parts,
            rebuilt: true,
        })
    }

    /// Starts loading the slot where a look-up of `id` begins into the CPU cache: a hint
    /// for a [`ActivityIndex::find`] of the same ID a little later, which then need not
    /// wait for memory.
    pub(crate) fn prefetch(&self, id: &str) {
        let (key, _) = key_check(id);
        self.parts[part_of(key)].prefetch(key);
    }

    /// What the index says of `id`: known, absent from the ledger, or unsure.
    pub(crate) fn find(&self, id: &str) -> Indexed {
        let (key, check) = key_check(id);
        self.parts[part_of(key)].find(key, check)
    }

    /// Records `id`'s entry (see [`Part::put`]).
    pub(crate) fn put(&mut self, id: &str, e: Entry) {
        let (key, check) = key_check(id);
        self.parts[part_of(key)].put(key, check, e);
    }

    /// Takes part `p` out (an empty one is left in its place), for a caller that works
    /// through the parts one at a time.
    pub(crate) fn take_part(&mut self, p: usize) -> Part {
        std::mem::replace(&mut self.parts[p], Part::empty(p))
    }

    /// Before parts of a rebuilt index are saved one at a time: removes every persisted
    /// part, and marks the index current (in the same transaction as the saves).
    pub(crate) fn prepare_rebuilt(&mut self, conn: &Connection) -> Result<()> {
        if self.rebuilt {
            wipe(conn)?;
            mark_current(conn)?;
            self.rebuilt = false;
        }
        Ok(())
    }

    /// Persists what changed (inside the caller's transaction).
    pub(crate) fn save(&mut self, conn: &Connection) -> Result<()> {
        self.prepare_rebuilt(conn)?;
        for p in &mut self.parts {
            p.save(conn)?;
        }
        mark_current(conn)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len).sum()
    }

    #[cfg(test)]
    pub(crate) fn get(&self, id: &str) -> Option<Entry> {
        match self.find(id) {
            Indexed::Found(e) => Some(e),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn is_dirty(&self) -> bool {
        self.rebuilt || self.parts.iter().any(Part::is_dirty)
    }
}

/// Every row looks up a random slot: with 4 KiB pages, nearly every look-up in a large table
/// also misses the TLB. Asks Linux for transparent huge pages (2 MiB) on the table, before
/// its pages are first touched. Only a hint: nothing changes where the kernel declines.
fn advise_huge_pages(slots: &[(u64, u64)]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = std::mem::size_of_val(slots);
        if bytes < 2 * HUGE {
            return;
        }
        let start = slots.as_ptr() as usize;
        let page = 4096;
        let aligned = start.next_multiple_of(page);
        let len = (start + bytes - aligned) / page * page;
        // SAFETY: the range lies inside the live allocation `slots`; MADV_HUGEPAGE changes
        // no contents, only how the kernel backs the pages.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = slots;
}

/// The tables the index reads and writes (and `activities`, which it is rebuilt from), for
/// tests of the index and of what uses it.
#[cfg(test)]
pub(crate) const TEST_TABLES: &str =
    "CREATE TABLE activities (activity_id TEXT PRIMARY KEY, state INTEGER, updated_at INTEGER);
     CREATE TABLE activity_index (block INTEGER PRIMARY KEY, slots BLOB NOT NULL);
     CREATE TABLE activity_index_delta (seq INTEGER PRIMARY KEY, slots BLOB NOT NULL);
     CREATE TABLE activity_index_part (part INTEGER PRIMARY KEY, bits INTEGER NOT NULL,
         len INTEGER NOT NULL, logged INTEGER NOT NULL, rows INTEGER NOT NULL);
     CREATE TABLE meta (key TEXT PRIMARY KEY, value);";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips() {
        for ts in [0, 1_793_000_000, -86_400, 4_102_444_800] {
            let e = Entry {
                state: State::OnBackOrder,
                updated_at: ts,
                generation: 200,
            };
            let v = pack(e, 0x1_2345);
            assert_eq!(unpack(v), Some(e));
            assert_eq!(check_of(v), 0x1_2345 & 0x1_ffff);
        }
    }

    #[test]
    fn put_get_relay_and_persist() {
        let conn = ledger();
        let mut idx = ActivityIndex::load(&conn).unwrap();
        for i in 0..100_000 {
            idx.put(
                &format!("ACT-{i}"),
                Entry {
                    state: State::Ordered,
                    updated_at: i,
                    generation: 1,
                },
            );
        }
        idx.put(
            "ACT-7",
            Entry {
                state: State::Completed,
                updated_at: 9,
                generation: 2,
            },
        );
        assert_eq!(idx.len(), 100_000);
        assert!(idx.parts.iter().any(|p| p.bits > MIN_BITS), "grew");
        assert_eq!(idx.get("ACT-7").unwrap().state, State::Completed);
        assert_eq!(idx.get("ACT-99999").unwrap().updated_at, 99_999);
        assert_eq!(idx.get("ACT-100000"), None);
        idx.save(&conn).unwrap();
        let again = ActivityIndex::load(&conn).unwrap();
        assert_eq!(again.len(), 100_000);
        assert_eq!(again.get("ACT-7").unwrap().state, State::Completed);
        assert_eq!(again.get("ACT-123").unwrap().updated_at, 123);
        assert!(!again.is_dirty());
    }

    use super::TEST_TABLES as TABLES;

    fn ledger() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(TABLES).unwrap();
        conn
    }

    fn entry(state: State, updated_at: i64, generation: u8) -> Entry {
        Entry {
            state,
            updated_at,
            generation,
        }
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// The blob of every persisted block, by block number.
    fn blocks(conn: &Connection) -> Vec<(i64, Vec<u8>)> {
        let mut stmt = conn
            .prepare("SELECT block, slots FROM activity_index ORDER BY block")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    fn slots_of(idx: &ActivityIndex) -> Vec<Vec<(u64, u64)>> {
        idx.parts.iter().map(|p| p.slots.clone()).collect()
    }

    #[test]
    fn later_changes_are_logged_replayed_and_folded_into_the_blocks() {
        let conn = ledger();
        let mut idx = ActivityIndex::load(&conn).unwrap();
        for i in 0..20_000 {
            idx.put(&format!("ACT-{i}"), entry(State::Ordered, i, 1));
        }
        idx.save(&conn).unwrap();
        let base = blocks(&conn);
        assert!(!base.is_empty());
        assert_eq!(
            count(&conn, "activity_index_delta"),
            0,
            "a new layout writes blocks"
        );

        // A report that changes some Activities and adds others: logged, blocks untouched.
        let mut idx = ActivityIndex::load(&conn).unwrap();
        let bits: Vec<u32> = idx.parts.iter().map(|p| p.bits).collect();
        for i in (0..20_000).step_by(10) {
            idx.put(&format!("ACT-{i}"), entry(State::Completed, i + 7, 2));
        }
        for i in 20_000..20_050 {
            idx.put(&format!("ACT-{i}"), entry(State::Cancelled, i, 2));
        }
        assert_eq!(
            idx.parts.iter().map(|p| p.bits).collect::<Vec<_>>(),
            bits,
            "no growth"
        );
        idx.save(&conn).unwrap();
        assert!(!idx.is_dirty());
        assert_eq!(blocks(&conn), base, "blocks are not rewritten");
        assert!(count(&conn, "activity_index_delta") > 0);

        // The next load sees blocks and log together, exactly as the table was, and so does
        // a part loaded alone.
        let mut again = ActivityIndex::load(&conn).unwrap();
        assert!(!again.is_dirty(), "loaded, not rebuilt");
        assert_eq!(again.len(), 20_050);
        assert_eq!(slots_of(&again), slots_of(&idx));
        for p in [0, 17, 255] {
            let alone = Part::load(&conn, p).unwrap().expect("the part matches");
            assert_eq!(alone.slots, idx.parts[p].slots, "part {p}");
            assert!(!alone.is_dirty());
        }
        assert_eq!(again.get("ACT-30"), Some(entry(State::Completed, 37, 2)));
        assert_eq!(again.get("ACT-31"), Some(entry(State::Ordered, 31, 1)));
        assert_eq!(
            again.get("ACT-20049"),
            Some(entry(State::Cancelled, 20_049, 2))
        );

        // Later reports log on until a part's log would pass a quarter of its slots; then
        // that part's changed blocks are rewritten and its log emptied.
        for generation in 3..40u8 {
            for i in 0..2_000 {
                let id = format!("ACT-{}", (i * 7 + usize::from(generation) * 13) % 20_000);
                again.put(&id, entry(State::OnBackOrder, 100 + i as i64, generation));
            }
            again.save(&conn).unwrap();
            for p in &again.parts {
                assert!(p.logged * 4 <= p.slots.len(), "{} > a quarter", p.logged);
            }
        }
        assert!(again.parts.iter().any(|p| p.logged == 0 && p.log_rows == 0));
        assert_ne!(blocks(&conn), base, "changed blocks were rewritten");
        let folded = ActivityIndex::load(&conn).unwrap();
        assert_eq!(slots_of(&folded), slots_of(&again));
        assert!(!folded.is_dirty());
    }

    #[test]
    fn a_damaged_log_rebuilds_the_index_from_activities() {
        let conn = ledger();
        let mut idx = ActivityIndex::load(&conn).unwrap();
        for i in 0..100 {
            conn.execute(
                "INSERT INTO activities VALUES (?1, ?2, ?3)",
                params![format!("ACT-{i}"), State::Ordered.code(), i],
            )
            .unwrap();
            idx.put(&format!("ACT-{i}"), entry(State::Ordered, i, 0));
        }
        idx.save(&conn).unwrap();
        idx.put("ACT-5", entry(State::Completed, 5, 1));
        idx.save(&conn).unwrap();
        assert_eq!(count(&conn, "activity_index_delta"), 1);
        // An entry whose slot lies beyond its part's table.
        let (key, _) = key_check("ACT-5");
        let mut bad = Vec::new();
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        bad.extend_from_slice(&[1; 16]);
        conn.execute(
            "INSERT INTO activity_index_delta (seq, slots) VALUES (?1, ?2)",
            params![log_ids(part_of(key)).0 + 1, &bad],
        )
        .unwrap();
        assert!(
            Part::load(&conn, part_of(key)).unwrap().is_none(),
            "damaged"
        );
        let mut alone = Part::rebuild(&conn, part_of(key)).unwrap();
        assert_eq!(
            alone.find(key, key_check("ACT-5").1),
            Indexed::Found(entry(State::Ordered, 5, 0))
        );
        // Saved, the part rebuilt alone replaces the damaged log too: it loads as saved.
        alone.save(&conn).unwrap();
        let loaded = Part::load(&conn, part_of(key))
            .unwrap()
            .expect("loads after its rebuild");
        assert_eq!(loaded.slots, alone.slots);
        // The damage again, for the whole index's rebuild below.
        conn.execute(
            "INSERT INTO activity_index_delta (seq, slots) VALUES (?1, ?2)",
            params![log_ids(part_of(key)).0 + 1, bad],
        )
        .unwrap();
        assert!(
            Part::load(&conn, part_of(key)).unwrap().is_none(),
            "damaged again"
        );
        let mut rebuilt = ActivityIndex::load(&conn).unwrap();
        assert!(rebuilt.rebuilt, "rebuilt from activities");
        assert_eq!(rebuilt.get("ACT-5"), Some(entry(State::Ordered, 5, 0)));
        rebuilt.save(&conn).unwrap();
        assert_eq!(
            count(&conn, "activity_index_delta"),
            0,
            "the rebuild empties the log"
        );
        let again = ActivityIndex::load(&conn).unwrap();
        assert!(!again.is_dirty());
        assert_eq!(again.len(), 100);
    }

    #[test]
    fn an_invalidated_or_older_index_is_rebuilt() {
        let conn = ledger();
        let mut idx = ActivityIndex::load(&conn).unwrap();
        idx.put("ACT-1", entry(State::Ordered, 1, 1));
        idx.save(&conn).unwrap();
        assert!(is_current(&conn).unwrap());
        invalidate(&conn).unwrap();
        assert!(!is_current(&conn).unwrap());
        let rebuilt = ActivityIndex::load(&conn).unwrap();
        assert!(rebuilt.rebuilt);
        assert_eq!(rebuilt.len(), 0, "activities is empty");
    }

    /// Bytes SQLite's page cache holds for this connection.
    fn cache_used(conn: &Connection) -> i64 {
        let (mut cur, mut high) = (0, 0);
        // SAFETY: the handle is this open connection's; the out-pointers are valid.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED,
                &mut cur,
                &mut high,
                0,
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
        i64::from(cur)
    }

    #[test]
    fn loading_reads_the_blocks_past_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let open = || {
            let conn = Connection::open(&path).unwrap();
            super::super::configure(&conn).unwrap();
            conn
        };
        let conn = open();
        conn.execute_batch(TABLES).unwrap();
        let mut idx = ActivityIndex::load(&conn).unwrap();
        for i in 0..300_000 {
            idx.put(&format!("ACT-{i}"), entry(State::Ordered, i, 0));
        }
        idx.save(&conn).unwrap();
        let stored: usize = idx.parts.iter().map(|p| p.slots.len() * 16).sum();
        drop(conn);

        let conn = open();
        let cache_size: i64 = conn
            .pragma_query_value(None, "cache_size", |r| r.get(0))
            .unwrap();
        let loaded = ActivityIndex::load(&conn).unwrap();
        assert_eq!(loaded.len(), 300_000);
        assert_eq!(
            loaded.get("ACT-299999"),
            Some(entry(State::Ordered, 299_999, 0))
        );
        assert!(
            stored > 4 << 20,
            "the index is larger than the cache would keep"
        );
        let used = cache_used(&conn);
        assert!(
            used < 1 << 20,
            "the page cache kept {used} bytes of the {stored}-byte index"
        );
        assert_eq!(
            conn.pragma_query_value(None, "cache_size", |r| r.get::<_, i64>(0))
                .unwrap(),
            cache_size,
            "the connection's cache size is restored"
        );
    }
}
