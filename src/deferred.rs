//! A CSV report in two passes, so that memory grows neither with the ledger nor with the
//! report.
//!
//! Every row must be judged against what the ledger knows of its Activity (the five rules
//! of [`crate::plan`]), and rows come in any Activity order. Holding the whole Activity
//! index in memory for that costs 20–40 bytes per Activity in the ledger; instead:
//!
//! 1. **Pass 1** reads and checks every row (rejects and warnings are reported then, in
//!    row order) and spills, for each accepted row, its Activity's key, its state and time
//!    and its row number (24 bytes) into a temporary file, grouped by index part
//!    ([`crate::ledger::index`]). Where each row's record lies in the file goes into a
//!    second temporary file, in row order.
//! 2. **Settling** ([`Deferred::settle`], in the report's transaction) loads one index part
//!    at a time, judges that part's rows in row order exactly as the one-pass triage would
//!    (rows of one Activity always share a part), saves the part, and keeps one byte per
//!    row: settled (unchanged or stale), or the hint the ledger side needs.
//! 3. **Pass 2** (`report::csv::reread`) reads again, in row order, only the records of the
//!    rows the ledger side must see, and hands them on with their hints: the ledger side
//!    then sees the same rows, in the same order, as in one pass. It reads the file the
//!    first pass opened (a file put under its name meanwhile is not seen), and a record that
//!    no longer checks out, or names another Activity, fails the report as a file that
//!    changed while it was read.
//!
//! A report is read in up to 8 pieces of the file (`report::read_twice`): while the ledger
//! side works through one piece's rows, the first pass reads the next. Each piece is
//! settled in turn against the index as the pieces before it left it.
//!
//! Memory: one part (16 bytes a slot, ~1/256 of the index), 12 KiB of spill buffer per part,
//! and the byte per row of a piece. The temporary files sit beside the ledger, unnamed: they vanish
//! with the process, however it ends.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::Connection;

use crate::activity::State;
use crate::ledger::index::{self, ActivityIndex, PARTS, Part, key_check, part_of};
use crate::plan::{Verdict, judge, recorded};

/// Bytes of a spilled row: key (u64), time (i64), row number (u32), check and state (u32).
const REC: usize = 24;
/// Rows a part's spill buffer holds before it is written out (12 KiB).
const CHUNK: usize = 512;
/// Bytes of a row's place: where its record starts (u64), its length and its line (u32),
/// and its Activity's key (u64), which the second pass checks it finds again.
pub(crate) const PLACE: usize = 24;

/// Pass 1's side of the two-pass read: the spilled rows and their places.
pub(crate) struct Deferred {
    /// Effective time of rows without `updated_at`: the report's date.
    report_time: i64,
    spill: File,
    spill_len: u64,
    /// Per part: rows not yet written out.
    bufs: Vec<Vec<u8>>,
    /// Per part: where its full chunks start in `spill`.
    chunks: Vec<Vec<u64>>,
    places: BufWriter<File>,
    rows: u32,
    /// The record of the row about to be checked: start and length.
    next: (u64, u64),
    dir: std::path::PathBuf,
    /// Rows whose record starts here or later go to the report's next piece (see
    /// [`Deferred::cut`]), and so on every `cut_every` bytes.
    cut_at: u64,
    cut_every: u64,
    /// The report's first piece: the only one settled before the ledger side changed any
    /// Activity (see [`Deferred::settle`]).
    first: bool,
}

impl Deferred {
    /// `dir`: where the temporary files go (the ledger's folder: a disk, not memory).
    pub(crate) fn new(dir: &Path, report_time: i64) -> Result<Deferred> {
        let tmp = || {
            tempfile::tempfile_in(dir)
                .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
        };
        Ok(Deferred {
            report_time,
            spill: tmp()?,
            spill_len: 0,
            bufs: (0..PARTS).map(|_| Vec::new()).collect(),
            chunks: vec![Vec::new(); PARTS],
            places: BufWriter::with_capacity(64 * 1024, tmp()?),
            rows: 0,
            next: (0, 0),
            dir: dir.to_path_buf(),
            cut_at: u64::MAX,
            cut_every: u64::MAX,
            first: true,
        })
    }

    /// Cuts the report in pieces of about `every` bytes of the file: a piece is settled and
    /// read again while the next is still read (see [`Deferred::cut`]).
    pub(crate) fn cut_every(mut self, every: u64) -> Self {
        self.cut_every = every.max(1);
        self.cut_at = self.cut_every;
        self
    }

    /// The rows spilled so far, when the record about to be checked (just
    /// [`Deferred::locate`]d) begins the next piece: they are handed back, and this one
    /// goes on with the next piece.
    pub(crate) fn cut(&mut self) -> Result<Option<Deferred>> {
        if self.next.0 < self.cut_at || self.rows == 0 {
            return Ok(None);
        }
        let mut rest = Deferred::new(&self.dir, self.report_time)?;
        rest.next = self.next;
        rest.cut_every = self.cut_every;
        rest.first = false;
        rest.cut_at = (self.next.0 / self.cut_every + 1).saturating_mul(self.cut_every);
        Ok(Some(std::mem::replace(self, rest)))
    }

    /// The effective time of a row.
    pub(crate) fn at(&self, updated_at: Option<i64>) -> i64 {
        updated_at.unwrap_or(self.report_time)
    }

    /// Where the record of the row checked next lies in the (decoded) file.
    pub(crate) fn locate(&mut self, start: u64, len: u64) {
        self.next = (start, len);
    }

    /// Spills an accepted row (its record is the one last [`Deferred::locate`]d).
    pub(crate) fn push(&mut self, id: &str, state: State, at: i64, line: u64) -> Result<()> {
        let (key, check) = key_check(id);
        let p = part_of(key);
        let buf = &mut self.bufs[p];
        if buf.capacity() == 0 {
            buf.reserve_exact(CHUNK * REC);
        }
        buf.extend_from_slice(&key.to_le_bytes());
        buf.extend_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&self.rows.to_le_bytes());
        buf.extend_from_slice(&((check as u32) | ((state.code() as u32) << 17)).to_le_bytes());
        if buf.len() == CHUNK * REC {
            self.spill
                .write_all_at(buf, self.spill_len)
                .context("cannot write the temporary spill file")?;
            self.chunks[p].push(self.spill_len);
            self.spill_len += buf.len() as u64;
            buf.clear();
        }
        let (start, len) = self.next;
        let too_big = || anyhow::anyhow!("line {line}: a record of {len} bytes is too large");
        self.places.write_all(&start.to_le_bytes())?;
        self.places
            .write_all(&u32::try_from(len).map_err(|_| too_big())?.to_le_bytes())?;
        self.places
            .write_all(&u32::try_from(line).unwrap_or(u32::MAX).to_le_bytes())?;
        self.places.write_all(&key.to_le_bytes())?;
        self.rows = self
            .rows
            .checked_add(1)
            .context("more than 4,294,967,295 rows in one report")?;
        Ok(())
    }

    /// Judges every spilled row, one index part at a time, and saves each part (inside the
    /// caller's transaction). `generation` marks the Activities this report moves.
    pub(crate) fn settle(self, conn: &Connection, generation: u8, resend: bool) -> Result<Settled> {
        let Deferred {
            spill,
            bufs,
            chunks,
            places,
            rows,
            first,
            ..
        } = self;
        let mut places = places.into_inner().map_err(|e| e.into_error())?;
        places.rewind()?;
        // No current index: rebuilt from `activities` (in memory, once), then saved part by
        // part. A damaged part is rebuilt alone (a scan of `activities`); past a few of
        // them, in a report's first piece, the whole index is, in one scan, and the judging
        // starts over.
        let mut whole = None;
        if !index::is_current(conn)? {
            whole = Some(ActivityIndex::rebuild(conn)?);
        }
        let mut damaged = 0;
        'judging: loop {
            if let Some(idx) = whole.as_mut() {
                idx.prepare_rebuilt(conn)?;
            }
            let mut settled = Settled {
                hints: vec![0; rows as usize],
                places: places.try_clone()?,
                unchanged: 0,
                stale: 0,
            };
            let mut chunk = vec![0u8; CHUNK * REC];
            for p in 0..PARTS {
                if chunks[p].is_empty() && bufs[p].is_empty() && whole.is_none() {
                    continue; // no row of this report falls in it
                }
                let mut part = match whole.as_mut() {
                    Some(idx) => idx.take_part(p),
                    None => match Part::load(conn, p)? {
                        Some(part) => part,
                        // A later piece rebuilds only what it finds damaged: those parts hold
                        // no row of an earlier piece, whose changes `activities` may not
                        // have yet, unlike the parts the earlier pieces saved.
                        None if damaged < MAX_DAMAGED || !first => {
                            damaged += 1;
                            tracing::warn!(
                                part = p,
                                "a part of the ledger's Activity index does not match: rebuilding it"
                            );
                            Part::rebuild(conn, p)?
                        }
                        None => {
                            tracing::warn!(
                                "the ledger's Activity index does not match: rebuilding it"
                            );
                            whole = Some(ActivityIndex::rebuild(conn)?);
                            continue 'judging;
                        }
                    },
                };
                for &at in &chunks[p] {
                    spill
                        .read_exact_at(&mut chunk, at)
                        .context("cannot read the temporary spill file")?;
                    settled.judge(&chunk, &mut part, generation, resend)?;
                }
                settled.judge(&bufs[p], &mut part, generation, resend)?;
                part.save(conn)?;
            }
            return Ok(settled);
        }
    }
}

/// Damaged index parts rebuilt one by one in a report before the whole index is.
const MAX_DAMAGED: usize = 2;

/// What settling found: a byte per accepted row (0: settled from the index, else the
/// [`crate::plan::Hint`]'s code), and the rows' places, in row order.
pub(crate) struct Settled {
    pub(crate) hints: Vec<u8>,
    /// [`PLACE`] bytes per accepted row, read from the start.
    pub(crate) places: File,
    pub(crate) unchanged: u64,
    pub(crate) stale: u64,
}

impl Settled {
    /// Applies the rules to spilled rows of one part, in row order, keeping the part in step.
    fn judge(&mut self, recs: &[u8], part: &mut Part, generation: u8, resend: bool) -> Result<()> {
        for r in recs.chunks_exact(REC) {
            let key = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
            let at = i64::from_le_bytes(r[8..16].try_into().expect("8 bytes"));
            let row = u32::from_le_bytes(r[16..20].try_into().expect("4 bytes")) as usize;
            let w = u32::from_le_bytes(r[20..24].try_into().expect("4 bytes"));
            let check = u64::from(w & 0x1_ffff);
            let state = State::from_code(i64::from(w >> 17)).context("spill: bad state code")?;
            let found = part.find(key, check);
            let verdict = judge(found, state, at, generation, resend);
            match verdict {
                Verdict::Unchanged => self.unchanged += 1,
                Verdict::Stale => self.stale += 1,
                Verdict::Forward(hint) => self.hints[row] = hint.code(),
            }
            if let Some(e) = recorded(verdict, found, state, at, generation) {
                part.put(key, check, e);
            }
        }
        Ok(())
    }

    /// Rows the ledger side must see.
    pub(crate) fn forwarded(&self) -> usize {
        self.hints.iter().filter(|&&h| h != 0).count()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::ledger::index::Entry;
    use crate::plan::{Hint, Triage};

    use crate::ledger::index::TEST_TABLES as TABLES;

    const STATES: [State; 4] = [
        State::Ordered,
        State::OnBackOrder,
        State::Completed,
        State::Cancelled,
    ];

    /// A ledger of 40,000 Activities, and a report of 300,000 rows over 60,000 (a third of
    /// them new): repeats, older and newer times, the same and other states. Enough rows
    /// that every part writes chunks to the spill file and keeps a tail in memory.
    fn ledger_and_rows() -> (Connection, Vec<(String, State, i64)>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(TABLES).unwrap();
        let mut idx = ActivityIndex::load(&conn).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..40_000 {
            let e = Entry {
                state: STATES[i % 4],
                updated_at: 1_000 + (i % 7) as i64,
                generation: 1,
            };
            idx.put(&format!("ACT-{i}"), e);
            tx.execute(
                "INSERT INTO activities VALUES (?1, ?2, ?3)",
                rusqlite::params![format!("ACT-{i}"), e.state.code(), e.updated_at],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        idx.save(&conn).unwrap();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let rows = (0..300_000)
            .map(|_| {
                let id = format!("ACT-{}", next() % 60_000);
                let state = STATES[(next() % 4) as usize];
                (id, state, 1_000 + (next() % 9) as i64)
            })
            .collect();
        (conn, rows)
    }

    fn one_pass(
        conn: &Connection,
        rows: &[(String, State, i64)],
        resend: bool,
    ) -> (Vec<u8>, ActivityIndex) {
        let mut triage = Triage::new(ActivityIndex::load(conn).unwrap(), 7, 0, resend);
        let hints = rows
            .iter()
            .map(|(id, state, at)| {
                let (verdict, found) = triage.verdict(id, *state, *at);
                triage.record(id, *state, *at, verdict, found);
                match verdict {
                    Verdict::Forward(h) => h.code(),
                    _ => 0,
                }
            })
            .collect();
        (hints, triage.into_index())
    }

    fn two_passes(conn: &Connection, rows: &[(String, State, i64)], resend: bool) -> Settled {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Deferred::new(dir.path(), 0).unwrap();
        for (n, (id, state, at)) in rows.iter().enumerate() {
            d.locate(n as u64 * 100, 90);
            d.push(id, *state, *at, n as u64 + 2).unwrap();
        }
        if rows.len() >= 300_000 {
            assert!(
                d.chunks.iter().all(|c| !c.is_empty()),
                "every part spilled chunks"
            );
        }
        d.settle(conn, 7, resend).unwrap()
    }

    /// The two-pass hints are the one pass's, row for row.
    fn assert_same_hints(got: &[u8], want: &[u8], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{what}: rows judged otherwise than in one pass");
    }

    #[test]
    fn settling_part_by_part_judges_every_row_as_the_one_pass_triage_does() {
        let (conn, rows) = ledger_and_rows();
        let (want, index) = one_pass(&conn, &rows, false);
        let mut settled = two_passes(&conn, &rows, false);
        assert_eq!(settled.hints.len(), rows.len());
        assert_same_hints(&settled.hints, &want, "");
        let settled_rows = want.iter().filter(|&&h| h == 0).count() as u64;
        assert!(settled_rows > 0 && settled.forwarded() > 0);
        assert_eq!(settled.unchanged + settled.stale, settled_rows);
        // Every kind of hint occurs.
        for h in [Hint::New, Hint::Touch, Hint::Ask] {
            assert!(want.contains(&h.code()), "{h:?}");
        }
        assert!(want.iter().any(|&h| h >= 8), "a change");

        // The parts saved hold what the one-pass index holds.
        let saved = ActivityIndex::load(&conn).unwrap();
        for i in 0..60_000 {
            let id = format!("ACT-{i}");
            assert_eq!(saved.get(&id), index.get(&id), "{id}");
        }

        // The places, in row order.
        let mut places = Vec::new();
        settled.places.read_to_end(&mut places).unwrap();
        assert_eq!(places.len(), rows.len() * PLACE);
        let last = &places[(rows.len() - 1) * PLACE..];
        assert_eq!(
            u64::from_le_bytes(last[..8].try_into().unwrap()),
            (rows.len() as u64 - 1) * 100
        );
        assert_eq!(u32::from_le_bytes(last[8..12].try_into().unwrap()), 90);
        assert_eq!(
            u32::from_le_bytes(last[12..16].try_into().unwrap()) as usize,
            rows.len() + 1
        );
        let (key, _) = key_check(&rows[rows.len() - 1].0);
        assert_eq!(u64::from_le_bytes(last[16..].try_into().unwrap()), key);
    }

    #[test]
    fn a_resend_forwards_every_row_and_a_ledger_without_an_index_gets_one() {
        let (conn, rows) = ledger_and_rows();
        let (want, _) = one_pass(&conn, &rows, true);
        assert!(want.iter().all(|&h| h == Hint::Ask.code()));
        let settled = two_passes(&conn, &rows, true);
        assert_eq!(settled.hints, want);

        // No current index (an older ledger, or one marked for a rebuild): rebuilt from
        // `activities`, then settled and saved part by part, judging as the one pass does.
        index::invalidate(&conn).unwrap();
        let (want, index) = one_pass(&conn, &rows[..1_000], false);
        let settled = two_passes(&conn, &rows[..1_000], false);
        assert!(index::is_current(&conn).unwrap());
        assert_eq!(settled.hints, want);
        let saved = ActivityIndex::load(&conn).unwrap();
        assert!(!saved.is_dirty(), "loaded as saved, not rebuilt");
        for i in 0..60_000 {
            let id = format!("ACT-{i}");
            assert_eq!(saved.get(&id), index.get(&id), "{id}");
        }
    }

    /// Damaged parts of the index (a block of the wrong size): one is rebuilt alone, three
    /// make the whole index rebuilt; either way every row is judged as it would have been.
    #[test]
    fn damaged_parts_are_rebuilt_and_every_row_judged_as_before() {
        for damaged in [vec![7], vec![1, 2, 3]] {
            let (conn, rows) = ledger_and_rows();
            let (want, _) = one_pass(&conn, &rows, false);
            for p in &damaged {
                let changed = conn
                    .execute(
                        "UPDATE activity_index SET slots = zeroblob(100) WHERE block = ?1",
                        [(*p as i64) << 32],
                    )
                    .unwrap();
                assert_eq!(changed, 1);
                assert!(Part::load(&conn, *p).unwrap().is_none());
            }
            let settled = two_passes(&conn, &rows, false);
            assert_same_hints(&settled.hints, &want, &format!("damaged {damaged:?}"));
            for p in 0..PARTS {
                assert!(
                    Part::load(&conn, p).unwrap().is_some(),
                    "part {p} after {damaged:?}"
                );
            }
            assert!(index::is_current(&conn).unwrap());
        }
    }
}
