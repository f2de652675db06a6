"""EXPLAIN (ANALYZE, BUFFERS) of every statement a hot path sends, on the benchmark's data, into
bench/plans/ (refreshed by `make bench`): the list and detail reads, the feed's page 1 and page
500 with its unread count, the achievements catalogue, a sync delta (the last 10 of the heavy
user's 100,000+ changes), and the scheduler's claim queries. Each
plan is taken as a fresh statement gets it (custom) and as a prepared statement reused many times
may (generic). A sequential scan on a large table in any of them is reported."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.explain import _explain, _live_session
from bench.scheduler_tick import compiled, digest_claim, reminder_claim
from bench.seed import HEAVY_EMAIL, REGULAR_USERS
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
    "habit_checkins",
)
# A delta sync: the cursor stands this many changes before the end of the heavy user's history.
DELTA = 10
SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")
# A plan node and how many times it ran ("loops"): in a list's plan, a node that runs more than
# once runs once per listed row.
NODE_LOOPS = re.compile(r"^[\s>-]*(.+?)  \(cost=.*\(actual .*loops=(\d+)\)$", re.MULTILINE)
# Plans of a list: GET /goals must read no check-in and run nothing once per goal (#21).
LISTS = ("goals_list_page1", "goals_list_page2", "goals_list_habits")


async def _caller(conn: asyncpg.Connection, email_filter: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT id, token_version FROM users WHERE {email_filter} ORDER BY email LIMIT 1"
    )
    if row is None:
        return None
    return {
        "user_id": row["id"],
        "token_version": row["token_version"],
        "session_id": await _live_session(conn, row["id"]),
    }


def _args(read: PreparedStatement, values: dict[str, Any]) -> list[Any]:
    return [values.get(name, read.fixed.get(name)) for name in read.names]


async def collect(conn: asyncpg.Connection) -> dict[str, tuple[str, list[Any]]]:
    """Each statement's SQL and arguments, for a typical user and for the heavy feed user."""
    typical = await _caller(conn, REGULAR_USERS)
    heavy = await _caller(conn, f"email = '{HEAVY_EMAIL}'")
    assert typical is not None
    assert heavy is not None
    # A user whose 20 goals are 5-year-old habits (bench.seed.seed_habit_twins), when seeded.
    habits = await _caller(conn, "email LIKE 'habits%'")
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
    if habits is not None:
        statements["goals_list_habits"] = (GOAL_LIST, habits | page)
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
    checkins = await conn.fetchval(
        "SELECT count(*) FROM habit_checkins c JOIN goals g ON g.id = c.goal_id "
        "JOIN users u ON u.id = g.user_id WHERE u.email = ("
        "SELECT email FROM users WHERE email LIKE 'habits%' ORDER BY email LIMIT 1)"
    )
    return {
        "sync_delta_heavy_user": f"-- the heavy user's change rows (sync_changes): {history:,}; "
        f"the cursor stands {DELTA} before the last\n",
        "goals_list_habits": f"-- a user whose 20 goals are daily habits with {checkins:,} "
        "check-ins between them (habit_checkins); no check-in may be read, nothing run per goal\n",
    }


@dataclass(frozen=True, slots=True)
class PlanFindings:
    # Sequential scans on large tables, and lists that read check-ins.
    problems: list[str] = field(default_factory=list)
    # Nodes of a list's plan that ran more than once: once per listed goal.
    per_row: list[str] = field(default_factory=list)


async def write_plans(conn: asyncpg.Connection, directory: Path = PLANS) -> PlanFindings:
    """Writes one file per statement; returns what the plans show that they should not."""
    found = PlanFindings()
    notes = await _notes(conn)
    for name, (sql, args) in (await collect(conn)).items():
        sections = [f"-- {name}\n{notes.get(name, '')}{sql.strip()}\n"]
        for generic in (False, True):
            plan = await _explain(conn, sql, args, generic=generic)
            which = f"{name} ({'generic' if generic else 'custom'})"
            sections.append(f"-- {'generic' if generic else 'custom'} plan\n{plan}\n")
            for table in SEQ_SCAN.findall(plan):
                if table in LARGE_TABLES:
                    found.problems.append(f"{which}: Seq Scan on {table}")
            if name in LISTS:
                if "habit_checkins" in plan:
                    found.problems.append(f"{which}: reads habit_checkins")
                found.per_row.extend(
                    f"{which}: {node} × {loops}"
                    for node, loops in NODE_LOOPS.findall(plan)
                    if int(loops) > 1
                )
        _write(directory, name, "\n".join(sections))
    return found
