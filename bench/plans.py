"""EXPLAIN (ANALYZE, BUFFERS) of every statement a hot path sends, on the benchmark's data, into
bench/plans/ (refreshed by `make bench`): the list and detail reads, the feed's page 1 and page
500 with its unread count, the achievements catalogue, a sync delta (the last 10 of the heavy
user's 100,000+ changes), and the scheduler's claim queries. Each
plan is taken as a fresh statement gets it (custom) and as a prepared statement reused many times
may (generic). A sequential scan on a large table in any of them is reported."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.explain import _explain, _live_session
from bench.scheduler_tick import compiled, digest_claim, reminder_claim
from bench.seed import HEAVY_EMAIL
from goaltrack.achievements.queries import CATALOGUE
from goaltrack.goals.queries import GOAL_DETAIL, GOAL_LIST, GOAL_LIST_AFTER
from goaltrack.notifications.queries import FEED, FEED_AFTER
from goaltrack.reads import PreparedStatement
from goaltrack.sync.queries import CHANGES
from goaltrack.sync.service import DEFAULT_LIMIT

PLANS = Path("bench/plans")
LARGE_TABLES = (
    "users",
    "goals",
    "goal_stages",
    "goal_attachments",
    "goal_reminders",
    "notifications",
    "user_achievements",
    "refresh_tokens",
    "user_settings",
    "sync_changes",
)
# A delta sync: the cursor stands this many changes before the end of the heavy user's history.
DELTA = 10
SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")


async def _caller(conn: asyncpg.Connection, email_filter: str) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"SELECT id, token_version FROM users WHERE {email_filter} ORDER BY email LIMIT 1",
        HEAVY_EMAIL,
    )
    assert row is not None
    return {
        "user_id": row["id"],
        "token_version": row["token_version"],
        "session_id": await _live_session(conn, row["id"]),
    }


def _args(read: PreparedStatement, values: dict[str, Any]) -> list[Any]:
    return [values.get(name, read.fixed.get(name)) for name in read.names]


async def collect(conn: asyncpg.Connection) -> dict[str, tuple[str, list[Any]]]:
    """Each statement's SQL and arguments, for a typical user and for the heavy feed user."""
    typical = await _caller(conn, "email <> $1")
    heavy = await _caller(conn, "email = $1")
    page = {"archived": False, "limit": 21}
    second = await conn.fetchrow(
        "SELECT created_at, id FROM goals WHERE user_id = $1 AND NOT is_archived "
        "ORDER BY created_at DESC, id DESC OFFSET 19 LIMIT 1",
        typical["user_id"],
    )
    goal = await conn.fetchval(
        "SELECT id FROM goals WHERE user_id = $1 ORDER BY stage_count DESC LIMIT 1",
        typical["user_id"],
    )
    deep = await conn.fetchrow(
        "SELECT created_at, id FROM notifications WHERE user_id = $1 "
        "ORDER BY created_at DESC, id DESC OFFSET 9979 LIMIT 1",
        heavy["user_id"],
    )
    statements = {
        "goals_list_page1": (GOAL_LIST, typical | page),
        "goal_detail": (GOAL_DETAIL, typical | {"goal_id": goal}),
        "notifications_page1_heavy_user": (FEED, heavy | {"limit": 21}),
        "achievements_catalogue": (CATALOGUE, typical),
    }
    if second is not None:
        statements["goals_list_page2"] = (
            GOAL_LIST_AFTER,
            typical | page | {"after_created_at": second["created_at"], "after_id": second["id"]},
        )
    if deep is not None:
        statements["notifications_page500_heavy_user"] = (
            FEED_AFTER,
            heavy | {"limit": 21, "after_created_at": deep["created_at"], "after_id": deep["id"]},
        )
    # The heavy user's cursor DELTA changes before the end of their history (one row per
    # notification: 100,000+), as GET /sync left it: a keyset read of DELTA rows, not a scan.
    behind = await conn.fetchrow(
        "SELECT xid, seq FROM sync_changes WHERE user_id = $1 "
        "ORDER BY xid DESC, seq DESC OFFSET $2 LIMIT 1",
        heavy["user_id"],
        DELTA,
    )
    if behind is not None:
        statements["sync_delta_heavy_user"] = (
            CHANGES,
            heavy
            | {
                "after_xid": behind["xid"],
                "after_seq": behind["seq"],
                "floor": behind["xid"],
                "limit": DEFAULT_LIMIT + 1,
            },
        )
    collected = {
        name: (read.sql, _args(read, values)) for name, (read, values) in statements.items()
    }
    now = datetime.now(UTC)
    collected["scheduler_claim_reminders"] = compiled(reminder_claim(now))
    collected["scheduler_claim_digests"] = compiled(digest_claim(now))
    return collected


def _write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.txt").write_text(text)


async def _notes(conn: asyncpg.Connection) -> dict[str, str]:
    """What a plan is read against, in its file's first lines."""
    history = await conn.fetchval(
        "SELECT count(*) FROM sync_changes c JOIN users u ON u.id = c.user_id WHERE u.email = $1",
        HEAVY_EMAIL,
    )
    return {
        "sync_delta_heavy_user": f"-- the heavy user's change rows (sync_changes): {history:,}; "
        f"the cursor stands {DELTA} before the last\n"
    }


async def write_plans(conn: asyncpg.Connection, directory: Path = PLANS) -> list[str]:
    """Writes one file per statement; returns the problems (sequential scans on large tables)."""
    problems = []
    notes = await _notes(conn)
    for name, (sql, args) in (await collect(conn)).items():
        sections = [f"-- {name}\n{notes.get(name, '')}{sql.strip()}\n"]
        for generic in (False, True):
            plan = await _explain(conn, sql, args, generic=generic)
            sections.append(f"-- {'generic' if generic else 'custom'} plan\n{plan}\n")
            for table in SEQ_SCAN.findall(plan):
                if table in LARGE_TABLES:
                    problems.append(
                        f"{name} ({'generic' if generic else 'custom'}): Seq Scan on {table}"
                    )
        _write(directory, name, "\n".join(sections))
    return problems
