#!/usr/bin/env python3
"""The naive script people write instead of tangoe-ingest, for the benchmark's comparison.

    peer_pandas.py REPORT.csv LEDGER.sqlite OUT.jsonl

pandas reads the whole report, then one sqlite3 look-up and upsert per row, and every state
change appended to a JSON-lines file. No preamble, encoding, date or stale-row handling:
this is the floor of what such a script does, not a replacement.
"""
import json
import sqlite3
import sys

import pandas as pd


def main() -> None:
    report, ledger, out = sys.argv[1:4]
    df = pd.read_csv(report, dtype=str, keep_default_na=False)
    con = sqlite3.connect(ledger)
    con.execute(
        "CREATE TABLE IF NOT EXISTS activities (activity_id TEXT PRIMARY KEY, state TEXT, updated_at TEXT, attrs TEXT)"
    )
    cols = list(df.columns)
    events = 0
    with open(out, "a", encoding="utf-8") as f:
        for row in df.itertuples(index=False, name=None):
            rec = dict(zip(cols, row))
            aid, state, updated = rec["Activity ID"], rec["Status"], rec["Last Updated"]
            cur = con.execute("SELECT state FROM activities WHERE activity_id = ?", (aid,)).fetchone()
            if cur is not None and cur[0] == state:
                continue
            con.execute(
                "INSERT INTO activities VALUES (?, ?, ?, ?) ON CONFLICT(activity_id) DO UPDATE SET "
                "state = excluded.state, updated_at = excluded.updated_at, attrs = excluded.attrs",
                (aid, state, updated, json.dumps(rec)),
            )
            f.write(json.dumps({"activity_id": aid, "previous_state": cur[0] if cur else "", "state": state, **rec}))
            f.write("\n")
            events += 1
    con.commit()
    print(f"{len(df)} rows, {events} events")


if __name__ == "__main__":
    main()
