//! Ledger schema migrations, versioned by `PRAGMA user_version`.
//!
//! Each step runs in its own transaction together with the version bump, so a ledger is
//! always at exactly one version. Steps are only ever appended.

use anyhow::{Context, Result, bail};
use rusqlite::Connection;

const STEPS: &[&str] = &[
    // 1: the initial ledger.
    r#"
    CREATE TABLE reports (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        mtime       INTEGER NOT NULL,
        sha256      TEXT NOT NULL,
        report_date TEXT NOT NULL,
        status      TEXT NOT NULL,            -- processed | failed
        mode        TEXT NOT NULL,            -- run | backfill
        run_id      INTEGER,
        columns     TEXT NOT NULL DEFAULT '[]', -- JSON: names of the values in events.attrs
        rows        INTEGER NOT NULL DEFAULT 0,
        accepted    INTEGER NOT NULL DEFAULT 0,
        rejected    INTEGER NOT NULL DEFAULT 0,
        skipped     INTEGER NOT NULL DEFAULT 0,
        unchanged   INTEGER NOT NULL DEFAULT 0,
        stale       INTEGER NOT NULL DEFAULT 0,
        events      INTEGER NOT NULL DEFAULT 0,
        warnings    INTEGER NOT NULL DEFAULT 0,
        error       TEXT,
        processed_at TEXT NOT NULL
    );
    CREATE INDEX reports_sha256 ON reports(sha256, status);
    CREATE INDEX reports_name ON reports(name);

    -- Compact on purpose: one lookup per report row lands here.
    CREATE TABLE activities (
        activity_id TEXT PRIMARY KEY,
        state       INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,          -- effective time: updated_at, else report date
        report_id   INTEGER NOT NULL,          -- the report that last moved it forward
        event_id    INTEGER,                   -- its latest event (which holds the attributes)
        events      INTEGER NOT NULL DEFAULT 0,
        itsm_number TEXT
    ) WITHOUT ROWID;

    -- The outbox: every state change, with the attributes of the row that made it.
    CREATE TABLE events (
        id             INTEGER PRIMARY KEY,
        event_key      TEXT NOT NULL,
        activity_id    TEXT NOT NULL,
        previous_state INTEGER,
        state          INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL,
        report_id      INTEGER NOT NULL,
        row            INTEGER NOT NULL,
        itsm_number    TEXT NOT NULL DEFAULT '',
        attrs          BLOB NOT NULL,           -- values (ledger/attrs.rs), names in reports.columns
        prev_event_id  INTEGER,
        kind           TEXT NOT NULL DEFAULT 'change', -- change | resend
        run_id         INTEGER NOT NULL,
        created_at     INTEGER NOT NULL
    );

    -- Delivery per sink: events up to `delivered_through` are settled for the sink; the
    -- `deliveries` rows record per-event outcomes beyond that (failures, out-of-order).
    CREATE TABLE sinks (
        name              TEXT PRIMARY KEY,
        delivered_through INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE deliveries (
        sink       TEXT NOT NULL,
        event_id   INTEGER NOT NULL,
        status     TEXT NOT NULL,               -- delivered | failed
        attempts   INTEGER NOT NULL DEFAULT 0,
        error      TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (sink, event_id)
    ) WITHOUT ROWID;

    CREATE TABLE rejects (
        id        INTEGER PRIMARY KEY,
        report_id INTEGER NOT NULL,
        file      TEXT NOT NULL,
        row       INTEGER NOT NULL,
        col       TEXT NOT NULL,
        reason    TEXT NOT NULL,
        raw       TEXT NOT NULL
    );
    CREATE INDEX rejects_report ON rejects(report_id);

    CREATE TABLE runs (
        id         INTEGER PRIMARY KEY,
        started_at TEXT NOT NULL,
        ended_at   TEXT,
        mode       TEXT NOT NULL,
        reports    INTEGER NOT NULL DEFAULT 0,
        rows       INTEGER NOT NULL DEFAULT 0,
        rejected   INTEGER NOT NULL DEFAULT 0,
        events     INTEGER NOT NULL DEFAULT 0,
        delivered  INTEGER NOT NULL DEFAULT 0,
        pending    INTEGER NOT NULL DEFAULT 0,
        exit_code  INTEGER
    );
    "#,
    // 2: HTTP sinks. Tickets a mirroring sink created for an Activity (number and sys_id
    // together, so a number a later report brings never pairs with a stale sys_id).
    r#"
    CREATE TABLE tickets (
        activity_id TEXT PRIMARY KEY,
        number      TEXT NOT NULL,
        sys_id      TEXT NOT NULL,
        sink        TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 3: the compact Activity index (ledger/index.rs), persisted in blocks, and settings.
    r#"
    CREATE TABLE activity_index (
        block INTEGER PRIMARY KEY,
        slots BLOB NOT NULL
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value
    ) WITHOUT ROWID;
    "#,
    // 4: the log of index slots changed since the blocks were written (ledger/index.rs).
    r#"
    CREATE TABLE activity_index_delta (
        seq   INTEGER PRIMARY KEY,
        slots BLOB NOT NULL
    );
    "#,
    // 5: the index in 256 parts, each its own table, loaded and saved alone
    // (ledger/index.rs); the single table of step 3 is rebuilt into them.
    r#"
    CREATE TABLE activity_index_part (
        part   INTEGER PRIMARY KEY,
        bits   INTEGER NOT NULL,
        len    INTEGER NOT NULL,
        logged INTEGER NOT NULL,
        rows   INTEGER NOT NULL
    );
    DELETE FROM activity_index;
    DELETE FROM activity_index_delta;
    DELETE FROM meta WHERE key IN ('index_bits', 'index_len');
    "#,
    // 6: `activities` is the one stored record of an Activity's state. The persisted index
    // of steps 3-5 goes (look-ups are built in memory from `activities` at each run), and
    // `activities` becomes a rowid table (its changes are written by rowid, in rowid order)
    // whose rows record the row of their position (its time, report and row: see
    // the dedupe module). Where the report that set the position also wrote the Activity's
    // latest event, that event's row is the position's; otherwise 0 (before any row of that
    // report, so a replay of it changes nothing).
    r#"
    DROP TABLE activity_index;
    DROP TABLE activity_index_delta;
    DROP TABLE activity_index_part;
    DELETE FROM meta WHERE key IN ('index_parts', 'index_bits', 'index_len');
    CREATE TABLE activities_v6 (
        id          INTEGER PRIMARY KEY,
        activity_id TEXT NOT NULL UNIQUE,
        state       INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,      -- the position: effective time,
        report_id   INTEGER NOT NULL,      -- report (its place in the dedupe order)
        row         INTEGER NOT NULL,      -- and row of the greatest row applied
        event_id    INTEGER,               -- its latest event (which holds the attributes)
        events      INTEGER NOT NULL DEFAULT 0,
        itsm_number TEXT
    );
    INSERT INTO activities_v6
        (activity_id, state, updated_at, report_id, row, event_id, events, itsm_number)
    SELECT a.activity_id, a.state, a.updated_at, a.report_id,
           COALESCE((SELECT e.row FROM events e
                     WHERE e.id = a.event_id AND e.report_id = a.report_id), 0),
           a.event_id, a.events, a.itsm_number
    FROM activities a ORDER BY a.activity_id;
    DROP TABLE activities;
    ALTER TABLE activities_v6 RENAME TO activities;
    "#,
    // 7: a report's unfinished attempts, by its listing (name, size, mtime), recorded
    // before it is read: one that kills the process every time is not tried forever.
    r#"
    CREATE TABLE attempts (
        name     TEXT NOT NULL,
        size     INTEGER NOT NULL,
        mtime    INTEGER NOT NULL,
        tries    INTEGER NOT NULL,
        last_try TEXT NOT NULL,
        PRIMARY KEY (name, size, mtime)
    );
    "#,
    // 8: failed reports an operator acknowledged (`reports ignore`): the version of the file
    // (name, size, mtime) that failed is not tried again until `reports retry` or the file
    // changes. Who, when and why are kept.
    r#"
    CREATE TABLE ignored_reports (
        name       TEXT NOT NULL,
        size       INTEGER NOT NULL,
        mtime      INTEGER NOT NULL,
        ignored_by TEXT NOT NULL,
        ignored_at TEXT NOT NULL,
        reason     TEXT,
        PRIMARY KEY (name, size, mtime)
    );
    "#,
    // 9: why a run's exit code is not 0: the error that failed it, or its problems.
    r#"
    ALTER TABLE runs ADD COLUMN reason TEXT;
    "#,
];

/// The version this build writes.
pub(crate) const VERSION: i64 = STEPS.len() as i64;

/// Brings the ledger up to [`VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > VERSION {
        bail!(
            "the ledger is at schema version {current}, newer than this build knows ({VERSION}): \
             use a newer tangoe-ingest"
        );
    }
    for (i, step) in STEPS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)
            .with_context(|| format!("ledger migration {} failed", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
