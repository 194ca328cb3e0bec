//! The Activity index: what every report row must look up, kept compact.
//!
//! For each Activity the ledger knows, 16 bytes: a 64-bit hash of its ID and a packed word
//! holding its state, its effective time, a 17-bit check from a second hash of the ID, and
//! the generation of the report that last changed it (in a hash table at most 80 % full).
//! Most rows of a daily report repeat a state the ledger already has; the index answers
//! those (unchanged, stale) without touching SQLite, and tells a brand-new Activity apart
//! without a look-up. Rows that change something go on to the `activities` table, which
//! stays the source of truth. While a report is read, the index belongs to the parsing
//! thread (`plan::Triage`), which keeps it in step row by row.
//!
//! The index is persisted inside the ledger, in that report's transaction, so it is never
//! out of step with `activities`: as blocks of slots (`activity_index`), and after them a
//! log of the slots later reports changed (`activity_index_delta`). A report that changes
//! 100,000 Activities scattered over a large index logs 2 MB of slots instead of rewriting
//! every block; a save that would take the log past a quarter of the slots rewrites every
//! block that differs from its stored copy instead, and empties the log. A ledger without
//! an index (or with a damaged one) gets it rebuilt from `activities`.
//!
//! Hash collisions: a look-up matches only when both the 64-bit key and the 17-bit check
//! agree (81 bits). "Unchanged", "stale" and "new" are taken on the index's word (a key the
//! table lacks is an ID the ledger lacks); a change is confirmed against `activities` by ID
//! before its report commits.

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

use crate::activity::State;

/// The table never has fewer slots than this (2^MIN_BITS).
const MIN_BITS: u32 = 10;
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

/// The in-memory Activity index: an open-addressing hash table (linear probing, key 0
/// marks an empty slot, at most 80 % full), persisted as 4 KiB blocks of slots.
pub(crate) struct ActivityIndex {
    bits: u32,
    slots: Vec<(u64, u64)>,
    /// Per block: it differs from the block persisted (the log holds the difference).
    dirty: Vec<bool>,
    /// Slots changed since the last save, each once (`changed_bits` marks them).
    changed: Vec<u32>,
    changed_bits: Vec<u64>,
    /// Entries in the persisted log.
    logged: usize,
    /// The layout changed: every block is rewritten on save.
    relaid: bool,
    len: usize,
}

fn key_of(h: u64) -> u64 {
    if h == 0 { 1 } else { h }
}

impl ActivityIndex {
    fn with_bits(bits: u32) -> Self {
        let n = 1usize << bits;
        let slots = vec![(0, 0); n];
        advise_huge_pages(&slots);
        ActivityIndex {
            bits,
            slots,
            dirty: vec![false; n.div_ceil(BLOCK)],
            changed: Vec::new(),
            changed_bits: vec![0; n.div_ceil(64)],
            logged: 0,
            relaid: false,
            len: 0,
        }
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

    /// Starts loading the slot where a look-up of `id` begins into the CPU cache: a hint
    /// for a [`ActivityIndex::find`] of the same ID a little later, which then need not
    /// wait for memory.
    pub(crate) fn prefetch(&self, id: &str) {
        let (h, _) = hash_id(id);
        let slot: *const (u64, u64) = &self.slots[(mix(key_of(h)) as usize) & self.mask()];
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

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Loads the index from the ledger, rebuilding it from `activities` when it is missing
    /// or does not match.
    pub(crate) fn load(conn: &Connection) -> Result<ActivityIndex> {
        // The blocks are read once: they would only fill the page cache.
        let cache: i64 = conn.pragma_query_value(None, "cache_size", |r| r.get(0))?;
        conn.pragma_update(None, "cache_size", 16)?;
        let loaded = Self::load_blocks(conn);
        conn.pragma_update(None, "cache_size", cache)?;
        loaded
    }

    fn load_blocks(conn: &Connection) -> Result<ActivityIndex> {
        let meta = |key: &str| -> Result<Option<i64>> {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        };
        if let (Some(bits), Some(stored_len)) = (meta("index_bits")?, meta("index_len")?)
            && (MIN_BITS as i64..=32).contains(&bits)
        {
            let mut idx = ActivityIndex::with_bits(bits as u32);
            let mut stmt = conn.prepare("SELECT block, slots FROM activity_index")?;
            let mut rows = stmt.query([])?;
            let mut ok = true;
            let blocks = idx.dirty.len();
            while let Some(r) = rows.next()? {
                let b: i64 = r.get(0)?;
                let blob = r.get_ref(1)?.as_blob()?;
                if b < 0 || b as usize >= blocks || blob.len() != BLOCK.min(idx.slots.len()) * 16 {
                    ok = false;
                    break;
                }
                let base = b as usize * BLOCK;
                for (j, c) in blob.chunks_exact(16).enumerate() {
                    let k = u64::from_le_bytes(c[..8].try_into().expect("16-byte chunk"));
                    let v = u64::from_le_bytes(c[8..].try_into().expect("16-byte chunk"));
                    idx.slots[base + j] = (k, v);
                    if k != 0 {
                        idx.len += 1;
                    }
                }
            }
            drop(rows);
            if ok {
                ok = idx.replay_log(conn)?;
            }
            if ok && idx.len as i64 == stored_len {
                return Ok(idx);
            }
            tracing::warn!("the ledger's Activity index does not match: rebuilding it");
        }
        Self::rebuild(conn)
    }

    /// Applies the persisted log of changed slots over the loaded blocks; false when an
    /// entry does not fit this table (the index is then rebuilt).
    fn replay_log(&mut self, conn: &Connection) -> Result<bool> {
        let mut stmt = conn.prepare("SELECT slots FROM activity_index_delta ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let blob = r.get_ref(0)?.as_blob()?;
            if blob.len() % DELTA_ENTRY != 0 {
                return Ok(false);
            }
            for e in blob.chunks_exact(DELTA_ENTRY) {
                let pos = u32::from_le_bytes(e[..4].try_into().expect("4 bytes")) as usize;
                let k = u64::from_le_bytes(e[4..12].try_into().expect("8 bytes"));
                let v = u64::from_le_bytes(e[12..].try_into().expect("8 bytes"));
                if pos >= self.slots.len() || k == 0 {
                    return Ok(false);
                }
                if self.slots[pos].0 == 0 {
                    self.len += 1;
                }
                self.slots[pos] = (k, v);
                self.dirty[pos / BLOCK] = true;
                self.logged += 1;
            }
        }
        Ok(true)
    }

    /// Builds the index from `activities` (marked for a full rewrite on save).
    pub(crate) fn rebuild(conn: &Connection) -> Result<ActivityIndex> {
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM activities", [], |r| r.get(0))?;
        let mut idx = ActivityIndex::with_bits(bits_for(count as usize));
        idx.relaid = true;
        let mut stmt = conn.prepare("SELECT activity_id, state, updated_at FROM activities")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id = r.get_ref(0)?.as_str()?;
            let state = State::from_code(r.get(1)?).context("ledger: bad state code")?;
            idx.put(
                id,
                Entry {
                    state,
                    updated_at: r.get(2)?,
                    generation: 0,
                },
            );
        }
        Ok(idx)
    }

    /// What the index knows of `id`: `Err(true)` when another ID holds its key.
    fn lookup(&self, id: &str) -> std::result::Result<Entry, bool> {
        let (h, check) = hash_id(id);
        let key = key_of(h);
        let (k, v) = self.slots[self.probe(key)];
        if k == 0 {
            return Err(false);
        }
        if check_of(v) != check & 0x1_ffff {
            return Err(true);
        }
        match unpack(v) {
            // A time the entry could only hold clamped: let `activities` answer.
            Some(e) if e.updated_at <= -TS_BIAS || e.updated_at >= TS_BIAS - 1 => Err(true),
            Some(e) => Ok(e),
            None => Err(true),
        }
    }

    /// What the index knows of `id`.
    #[cfg(test)]
    pub(crate) fn get(&mut self, id: &str) -> Option<Entry> {
        self.lookup(id).ok()
    }

    /// What the index says of `id`: known, absent from the ledger, or unsure.
    pub(crate) fn find(&self, id: &str) -> Indexed {
        match self.lookup(id) {
            Ok(e) => Indexed::Found(e),
            Err(false) => Indexed::Absent,
            Err(true) => Indexed::Unsure,
        }
    }

    /// Records `id`'s entry. An Activity whose key another ID holds is left out of the
    /// index (lookups of it then always go to `activities`).
    pub(crate) fn put(&mut self, id: &str, e: Entry) {
        let (h, check) = hash_id(id);
        let key = key_of(h);
        let i = self.probe(key);
        let (k, v) = self.slots[i];
        if k != 0 && check_of(v) != check & 0x1_ffff {
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
        *self = ActivityIndex {
            relaid: true,
            len: self.len,
            ..ActivityIndex::with_bits(self.bits + 1)
        };
        for (k, v) in old {
            if k != 0 {
                let i = self.probe(k);
                self.slots[i] = (k, v);
            }
        }
    }

    /// Marks the persisted index out of date: the next load rebuilds it from `activities`.
    pub(crate) fn invalidate(conn: &Connection) -> Result<()> {
        conn.execute(
            "DELETE FROM meta WHERE key IN ('index_bits', 'index_len')",
            [],
        )?;
        Ok(())
    }

    /// Persists what changed (inside the caller's transaction): the changed slots go to
    /// the log, or, when the layout changed or the log would grow past a quarter of the
    /// slots, the changed blocks are rewritten and the log emptied.
    pub(crate) fn save(&mut self, conn: &Connection) -> Result<()> {
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
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('index_bits', ?1), ('index_len', ?2)",
            params![self.bits as i64, self.len as i64],
        )?;
        Ok(())
    }

    /// Rewrites every block that differs from the persisted one, and empties the log.
    fn write_blocks(&mut self, conn: &Connection) -> Result<()> {
        if self.relaid {
            conn.execute("DELETE FROM activity_index", [])?;
        }
        conn.execute("DELETE FROM activity_index_delta", [])?;
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
            stmt.execute(params![b as i64, blob])?;
            self.dirty[b] = false;
        }
        self.relaid = false;
        self.logged = 0;
        Ok(())
    }

    /// Appends the slots changed since the last save to the log.
    fn write_log(&mut self, conn: &Connection) -> Result<()> {
        let mut stmt =
            conn.prepare_cached("INSERT INTO activity_index_delta (slots) VALUES (?1)")?;
        let mut blob = Vec::with_capacity(DELTA_ROW * DELTA_ENTRY);
        for rows in self.changed.chunks(DELTA_ROW) {
            blob.clear();
            for &i in rows {
                let (k, v) = self.slots[i as usize];
                blob.extend_from_slice(&i.to_le_bytes());
                blob.extend_from_slice(&k.to_le_bytes());
                blob.extend_from_slice(&v.to_le_bytes());
            }
            stmt.execute(params![blob])?;
        }
        self.logged += self.changed.len();
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn is_dirty(&self) -> bool {
        self.relaid || !self.changed.is_empty()
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

fn bits_for(n: usize) -> u32 {
    let mut bits = MIN_BITS;
    while (1usize << bits) * 4 < n * 5 + 4 && bits < 32 {
        bits += 1;
    }
    bits
}

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
        assert!(idx.bits > MIN_BITS, "grew");
        assert_eq!(idx.get("ACT-7").unwrap().state, State::Completed);
        assert_eq!(idx.get("ACT-99999").unwrap().updated_at, 99_999);
        assert_eq!(idx.get("ACT-100000"), None);
        idx.save(&conn).unwrap();
        let mut again = ActivityIndex::load(&conn).unwrap();
        assert_eq!(again.len(), 100_000);
        assert_eq!(again.get("ACT-7").unwrap().state, State::Completed);
        assert_eq!(again.get("ACT-123").unwrap().updated_at, 123);
        assert!(!again.is_dirty());
    }

    /// The tables the index reads and writes.
    const TABLES: &str =
        "CREATE TABLE activities (activity_id TEXT PRIMARY KEY, state INTEGER, updated_at INTEGER);
         CREATE TABLE activity_index (block INTEGER PRIMARY KEY, slots BLOB NOT NULL);
         CREATE TABLE activity_index_delta (seq INTEGER PRIMARY KEY, slots BLOB NOT NULL);
         CREATE TABLE meta (key TEXT PRIMARY KEY, value);";

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
        for i in (0..20_000).step_by(10) {
            idx.put(&format!("ACT-{i}"), entry(State::Completed, i + 7, 2));
        }
        for i in 20_000..20_500 {
            idx.put(&format!("ACT-{i}"), entry(State::Cancelled, i, 2));
        }
        assert_eq!(
            idx.bits,
            ActivityIndex::load(&conn).unwrap().bits,
            "no growth"
        );
        idx.save(&conn).unwrap();
        assert!(!idx.is_dirty());
        assert_eq!(blocks(&conn), base, "blocks are not rewritten");
        assert!(count(&conn, "activity_index_delta") > 0);

        // The next load sees blocks and log together, exactly as the table was.
        let mut again = ActivityIndex::load(&conn).unwrap();
        assert!(!again.relaid, "loaded, not rebuilt");
        assert_eq!(again.len(), 20_500);
        assert_eq!(again.slots, idx.slots);
        assert_eq!(again.get("ACT-30"), Some(entry(State::Completed, 37, 2)));
        assert_eq!(again.get("ACT-31"), Some(entry(State::Ordered, 31, 1)));
        assert_eq!(
            again.get("ACT-20499"),
            Some(entry(State::Cancelled, 20_499, 2))
        );

        // Later reports log on until the log passes a quarter of the slots; then the changed
        // blocks are rewritten and the log emptied.
        let quarter = again.slots.len() / 4;
        let mut generation = 3;
        while count(&conn, "activity_index_delta") > 0 {
            for i in 0..2_000 {
                let id = format!("ACT-{}", (i * 7 + usize::from(generation) * 13) % 20_000);
                again.put(&id, entry(State::OnBackOrder, 100 + i as i64, generation));
            }
            again.save(&conn).unwrap();
            assert!(again.logged <= quarter, "{} > {quarter}", again.logged);
            generation += 1;
            assert!(generation < 100, "the log was never folded into the blocks");
        }
        assert_eq!(again.logged, 0);
        assert_ne!(blocks(&conn), base, "changed blocks were rewritten");
        let folded = ActivityIndex::load(&conn).unwrap();
        assert_eq!(folded.slots, again.slots);
        assert!(folded.dirty.iter().all(|d| !d));
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
        // An entry whose slot lies beyond the table.
        let mut bad = Vec::new();
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        bad.extend_from_slice(&[1; 16]);
        conn.execute(
            "INSERT INTO activity_index_delta (slots) VALUES (?1)",
            [bad],
        )
        .unwrap();
        let mut rebuilt = ActivityIndex::load(&conn).unwrap();
        assert!(rebuilt.relaid, "rebuilt from activities");
        assert_eq!(rebuilt.get("ACT-5"), Some(entry(State::Ordered, 5, 0)));
        rebuilt.save(&conn).unwrap();
        assert_eq!(
            count(&conn, "activity_index_delta"),
            0,
            "the rebuild empties the log"
        );
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
        let stored = idx.slots.len() * 16;
        drop(conn);

        let conn = open();
        let cache_size: i64 = conn
            .pragma_query_value(None, "cache_size", |r| r.get(0))
            .unwrap();
        let mut loaded = ActivityIndex::load(&conn).unwrap();
        assert_eq!(loaded.len, 300_000);
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
