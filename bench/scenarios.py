"""What each scenario sends: per request an entry (token, method, path, alternate path, body),
chosen from the seeded data. wrk walks the entries (bench/wrk.py); on each visit to an entry it
sends its path, on the next visit the alternate one (a stage is reopened, then completed again:
every write changes something)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.seed import HEAVY_EMAIL
from goaltrack.auth.security import create_access_token
from goaltrack.config import Settings
from goaltrack.pagination import Cursor

PAGE_SIZE = 20


@dataclass(frozen=True, slots=True)
class Entry:
    token: str
    method: str
    path: str
    alternate: str | None = None
    body: str | None = None


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
        "SELECT id FROM users WHERE email <> $1 ORDER BY created_at LIMIT $2", HEAVY_EMAIL, users
    )
    user_ids = [row["id"] for row in user_rows]
    heavy_id = await conn.fetchval("SELECT id FROM users WHERE email = $1", HEAVY_EMAIL)
    tokens = await _sessions(conn, settings, [*user_ids, heavy_id])
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

    return [
        Scenario("goals_list", True, True, [Entry(t, "GET", "/goals") for t in everyone]),
        Scenario("goal_detail", True, True, details),
        Scenario(
            "notifications_page1", True, True, [Entry(t, "GET", "/notifications") for t in heavy]
        ),
        Scenario("notifications_page500", True, True, [Entry(t, "GET", page500) for t in heavy]),
        Scenario("achievements", True, True, [Entry(t, "GET", "/achievements") for t in everyone]),
        Scenario("complete_stage", False, False, toggles, slices=write_slices),
        Scenario("create_goal", False, False, creates, expected_status=201),
    ]
