"""Delta sync, `GET /sync`: the caller's whole state, then every change after a cursor.

The change log (goaltrack.changes) holds one row per synced object with its latest change; the
triggers that write it stand in PostgreSQL, so every write path feeds it.

Why no change is ever skipped: a row carries its writing transaction's id (`xid`), and a read
returns only rows whose transaction is older than every transaction still running (the
snapshot's xmin, the *visibility horizon*). Every transaction below the horizon has finished, so
no row can appear there later: a cursor past a row never passes a change that commits later,
whatever order transactions commit in and whichever API process, worker or psql session wrote
it. A change waits at most as long as the oldest writing transaction still running.
"""
