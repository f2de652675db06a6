"""What each scenario sends: per request an entry (token, method, path, alternate path, body,
extra headers), chosen from the seeded data. wrk walks the entries (bench/wrk.py); on each visit
to an entry it sends its path, on the next visit the alternate one (a stage is reopened, then
completed again: every write changes something).

The conditional and sync scenarios carry what a client holds (an ETag in `If-None-Match`, a
caught-up sync cursor). Both name the data's current version, which the write scenarios move:
such a scenario has a `refresh` that reads the versions again from `sync_changes` (the app's own
`etag()` of the row's `seq`) right before each of its runs."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.seed import HABIT_TWINS_DOMAIN, HEAVY_EMAIL, REGULAR_USERS
from goaltrack.auth.security import create_access_token
from goaltrack.changes import etag
from goaltrack.config import Settings
from goaltrack.pagination import Cursor
from goaltrack.sync.service import SyncCursor

PAGE_SIZE = 20
GZIP = (("Accept-Encoding", "gzip"),)

# A goal's version is its change row's seq (goaltrack.changes.etag); a goal list's is the newest
# among the user's goal rows (changes.GOALS_VERSION); a caught-up sync cursor stands at the user's
# last change below the visibility horizon (goaltrack.sync), as paging GET /sync to the end leaves it.
GOAL_VERSIONS = """
SELECT object_id, seq FROM sync_changes
WHERE user_id = ANY($1::uuid[]) AND kind = 'goal' AND object_id = ANY($2::uuid[])
"""
LIST_VERSIONS = """
SELECT user_id, max(seq) AS seq FROM sync_changes
WHERE user_id = ANY($1::uuid[]) AND kind = 'goal'
GROUP BY user_id
"""
SYNC_POSITIONS = """
SELECT u.id AS user_id, last.xid, last.seq, h.horizon
FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon) AS h
CROSS JOIN unnest($1::uuid[]) AS u(id)
CROSS JOIN LATERAL (
    SELECT c.xid, c.seq FROM sync_changes c
    WHERE c.user_id = u.id AND c.xid < h.horizon
    ORDER BY c.xid DESC, c.seq DESC
    LIMIT 1
) AS last
"""


@dataclass(frozen=True, slots=True)
class Entry:
    token: str
    method: str
    path: str
    alternate: str | None = None
    body: str | None = None
    # Sent with every request of this entry, besides the bearer token.
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    hot_read: bool
    # Apps that serve it: the peer only serves the hot reads.
    with_peer: bool
    entries: list[Entry]
    # Writes get a fresh slice of entries per run: a run never finds another's changes.
    slices: int = 1
    expected_status: int = 200
    # The ceiling (bench/baseline.py) serves it: not the conditional requests or sync, which it
    # does not implement; these are measured against our own 200 of the same resource instead.
    with_ceiling: bool = True
    # The build before this one (--before) serves it: not what that build did not have yet.
    with_before: bool = True
    # A part of the body every answer must hold (checked before the runs, beside the status).
    expected_in_body: bytes | None = None
    # Reads the data's current versions again (ETags, cursors) before each run; see the module.
    refresh: Callable[[asyncpg.Connection], Awaitable[list[Entry]]] | None = None
    # Run on the durable server (fsync and synchronous commit on): a write's other measurement.
    durable: bool = False
    # The scenario whose entries (and so whose slices) this one shares, when not its own.
    entries_of: str | None = None

    def on_durable_server(self) -> Scenario:
        """The same requests, run once the server flushes every commit to disk."""
        return replace(self, name=f"{self.name}_durable", durable=True, entries_of=self.name)

    async def refreshed(self, conn: asyncpg.Connection) -> Scenario:
        if self.refresh is None:
            return self
        return replace(self, entries=await self.refresh(conn))

    def slice(self, index: int) -> list[Entry]:
        if self.slices == 1:
            return self.entries
        size = len(self.entries) // self.slices
        return self.entries[(index % self.slices) * size : (index % self.slices + 1) * size]


async def _sessions(
    conn: asyncpg.Connection, settings: Settings, user_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """One real access token per user, each in a session with a live refresh token, as a login
    leaves it (the app's own `create_access_token`)."""
    rows = await conn.fetch(
        "SELECT id, token_version FROM users WHERE id = ANY($1::uuid[])", user_ids
    )
    now = datetime.now(UTC)
    families = {row["id"]: uuid.uuid4() for row in rows}
    await conn.executemany(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        [
            (uuid.uuid4(), user_id, family_id, uuid.uuid4().hex * 2, now + timedelta(days=7))
            for user_id, family_id in families.items()
        ],
    )
    return {
        row["id"]: create_access_token(
            settings, row["id"], row["token_version"], now, session_id=families[row["id"]]
        )
        for row in rows
    }


async def build(
    conn: asyncpg.Connection, settings: Settings, *, users: int, write_slices: int
) -> list[Scenario]:
    user_rows = await conn.fetch(
        f"SELECT id FROM users WHERE {REGULAR_USERS} ORDER BY created_at LIMIT $1", users
    )
    user_ids = [row["id"] for row in user_rows]
    heavy_id = await conn.fetchval("SELECT id FROM users WHERE email = $1", HEAVY_EMAIL)
    # The habit twins (bench.seed.seed_habit_twins), pair by pair: habitsN beside plainN.
    twin_rows = await conn.fetch(
        "SELECT id, email FROM users WHERE email LIKE '%' || $1::text "
        "ORDER BY substring(email FROM '([0-9]+)@')::int, email",
        HABIT_TWINS_DOMAIN,
    )
    twins = {
        twin: [row["id"] for row in twin_rows if row["email"].startswith(twin)]
        for twin in ("habits", "plain")
    }
    tokens = await _sessions(conn, settings, [*user_ids, heavy_id, *(r["id"] for r in twin_rows)])
    everyone = [tokens[user_id] for user_id in user_ids]

    # One goal per user with stages, and where there is one, an attachment and reminders.
    detail_rows = await conn.fetch(
        """
        SELECT DISTINCT ON (g.user_id) g.user_id, g.id
        FROM goals g
        WHERE g.user_id = ANY($1::uuid[]) AND NOT g.is_archived
        ORDER BY g.user_id,
                 EXISTS (SELECT 1 FROM goal_attachments a WHERE a.goal_id = g.id) DESC,
                 g.stage_count DESC
        """,
        user_ids,
    )
    details = [Entry(tokens[r["user_id"]], "GET", f"/goals/{r['id']}") for r in detail_rows]

    # Completed stages of goals that stay open either way (reopening and completing one never
    # completes its goal): every request is a real change, on the same path through the code.
    stage_rows = await conn.fetch(
        """
        SELECT g.user_id, g.id AS goal_id, s.id AS stage_id
        FROM goals g JOIN goal_stages s ON s.goal_id = g.id AND s.is_completed
        WHERE g.user_id = ANY($1::uuid[]) AND NOT g.is_archived
          AND g.completed_stage_count BETWEEN 1 AND g.stage_count - 1
        ORDER BY s.id
        """,
        user_ids,
    )
    toggles = [
        Entry(
            tokens[r["user_id"]],
            "PUT",
            f"/goals/{r['goal_id']}/stages/{r['stage_id']}/uncomplete",
            f"/goals/{r['goal_id']}/stages/{r['stage_id']}/complete",
        )
        for r in stage_rows
    ]
    creates = [
        Entry(token, "POST", "/goals", body='{"title":"Bench goal","description":"From wrk."}')
        for token in everyone
    ]

    heavy = [tokens[heavy_id]]
    # The last row of page 499 of the heavy feed: its cursor asks for page 500.
    offset = PAGE_SIZE * 499 - 1
    last = await conn.fetchrow(
        "SELECT created_at, id FROM notifications WHERE user_id = $1 "
        "ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1",
        heavy_id,
        offset,
    )
    if last is None:
        raise RuntimeError("the heavy feed has fewer than 500 pages")
    page500 = f"/notifications?cursor={Cursor(last['created_at'], last['id']).encode()}"

    async def goal_etags(conn: asyncpg.Connection) -> list[Entry]:
        goals = [(r["user_id"], r["id"]) for r in detail_rows]
        versions = dict(
            await conn.fetch(GOAL_VERSIONS, [u for u, _ in goals], [g for _, g in goals])
        )
        return [
            Entry(
                tokens[user_id],
                "GET",
                f"/goals/{goal_id}",
                headers=(("If-None-Match", etag(versions[goal_id])),),
            )
            for user_id, goal_id in goals
        ]

    async def list_etags(conn: asyncpg.Connection) -> list[Entry]:
        versions = dict(await conn.fetch(LIST_VERSIONS, user_ids))
        return [
            Entry(tokens[u], "GET", "/goals", headers=(("If-None-Match", etag(versions[u])),))
            for u in user_ids
        ]

    async def caught_up(conn: asyncpg.Connection) -> list[Entry]:
        now = int(datetime.now(UTC).timestamp())
        rows = await conn.fetch(SYNC_POSITIONS, user_ids)
        if len(rows) != len(user_ids):
            raise RuntimeError("a user without any change row: the seed's triggers did not run")
        return [
            Entry(
                tokens[r["user_id"]],
                "GET",
                "/sync?cursor="
                + SyncCursor(
                    xid=r["xid"], seq=r["seq"], floor=r["horizon"], caught_up=now
                ).encode(),
            )
            for r in rows
        ]

    # Ours only (no peer, no ceiling, not the build before them): each holds its own check.
    conditional = {"with_peer": False, "with_ceiling": False, "with_before": False}
    writes = [
        Scenario("complete_stage", False, False, toggles, slices=write_slices),
        Scenario("create_goal", False, False, creates, expected_status=201),
    ]
    return [
        Scenario("goals_list", True, True, [Entry(t, "GET", "/goals") for t in everyone]),
        # GET /goals of 20 five-year-old daily habits (1,800 check-ins each) beside the same
        # user with 20 plain goals (#21: within 10 % of its CPU per request; CPU_CHECKS).
        *(
            Scenario(
                f"goals_list_{twin}",
                True,
                False,
                [Entry(tokens[user_id], "GET", "/goals") for user_id in twins[twin]],
                with_before=False,
            )
            for twin in ("habits", "plain")
            if twins[twin]
        ),
        Scenario("goal_detail", True, True, details),
        # A 304 costs at most half its 200 (the version alone is read; nothing is rendered).
        Scenario(
            "goal_detail_304",
            True,
            entries=await goal_etags(conn),
            expected_status=304,
            refresh=goal_etags,
            **conditional,
        ),
        Scenario(
            "goals_list_304",
            True,
            entries=await list_etags(conn),
            expected_status=304,
            refresh=list_etags,
            **conditional,
        ),
        # A caught-up client's GET /sync costs no more than GET /goals.
        Scenario(
            "sync_idle",
            True,
            entries=await caught_up(conn),
            expected_in_body=b'"changes":[]',
            refresh=caught_up,
            **conditional,
        ),
        # The build before compression answers the same request uncompressed: its cost.
        Scenario(
            "goals_list_gzip",
            True,
            False,
            [Entry(t, "GET", "/goals", headers=GZIP) for t in everyone],
            with_ceiling=False,
        ),
        Scenario(
            "notifications_page1", True, True, [Entry(t, "GET", "/notifications") for t in heavy]
        ),
        Scenario("notifications_page500", True, True, [Entry(t, "GET", page500) for t in heavy]),
        Scenario("achievements", True, True, [Entry(t, "GET", "/achievements") for t in everyone]),
        *writes,
        *(write.on_durable_server() for write in writes),
    ]
