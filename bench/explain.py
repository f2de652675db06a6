"""EXPLAIN (ANALYZE, BUFFERS) of GET /goals' SQL: page 1 and a page deep into one heavy user's list.

Used by `python -m bench --explain-goals N` on the benchmark's database (seeded with one extra
user with N goals, left out of the load), or on its own:

    uv run python -m bench.explain --users 50000 --goals-per-user 20 --heavy-goals 10000

which starts a local stack, seeds users × goals of background data plus one user with N goals
(rows in random heap order), and prints the plans both as a fresh statement gets them (custom
plan) and as a prepared statement reused many times may (generic plan: the app's asyncpg
connections prepare their statements, and PostgreSQL may switch to it after five executions).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from bench.seed import HEAVY_EMAIL, asyncpg_dsn, seed
from bench.sql import list_param_names, list_sql
from bench.stack import scratch_stack

INDEX_NAME = "ix_goals_user_id_is_archived_created_at_id"


def _literal(value: Any) -> str:
    """A SQL literal for EXECUTE (values come from our own database: booleans, numbers, uuids, times)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    return f"'{value}'"


async def _explain(conn: asyncpg.Connection, sql: str, args: list[Any], *, generic: bool) -> str:
    """The plan a fresh statement gets (custom: parameters known), or the generic plan that a
    prepared statement reused many times may switch to (asyncpg and SQLAlchemy prepare theirs)."""
    async with conn.transaction():
        if not generic:
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
            return "\n".join(row[0] for row in rows)
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE bench_list AS {sql}")
        try:
            literals = ", ".join(_literal(value) for value in args)
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_list({literals})")
        finally:
            await conn.execute("DEALLOCATE bench_list")
    return "\n".join(row[0] for row in rows)


def _args(names: tuple[str, ...], values: dict[str, Any]) -> list[Any]:
    return [values[name] for name in names]


async def _live_session(conn: asyncpg.Connection, user_id: Any) -> uuid.UUID:
    """A session (refresh-token family) with a live token, as a login leaves one."""
    family_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at) "
        "VALUES ($1, $2, $3, $4, now() + interval '7 days')",
        uuid.uuid4(),
        user_id,
        family_id,
        uuid.uuid4().hex * 2,
    )
    return family_id


async def explain_list(conn: asyncpg.Connection) -> dict[str, str]:
    """The plans of a typical user's page 1, and of page 1 and a page ~90 % deep into the list of
    the heavy user (seeded with `seed(..., heavy_goals=N)`)."""
    heavy = await conn.fetchrow(
        "SELECT u.id, u.token_version, count(g.id) AS goals FROM users u "
        "JOIN goals g ON g.user_id = u.id AND NOT g.is_archived "
        "WHERE u.email = $1 GROUP BY u.id",
        HEAVY_EMAIL,
    )
    if heavy is None:
        raise RuntimeError("no heavy user: seed with heavy_goals > 0")
    user_id, token_version, heavy_goals = heavy["id"], heavy["token_version"], heavy["goals"]
    values: dict[str, Any] = {
        "user_id": user_id,
        "token_version": token_version,
        "session_id": await _live_session(conn, user_id),
        "archived": False,
        "limit": 21,
    }
    deep = await conn.fetchrow(
        """
        SELECT created_at, id FROM goals WHERE user_id = $1 AND NOT is_archived
        ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1
        """,
        user_id,
        heavy_goals * 9 // 10,
    )
    assert deep is not None
    after_created_at: datetime = deep["created_at"]
    deep_values = values | {"after_created_at": after_created_at, "after_id": deep["id"]}
    first_sql, first_names = list_sql(), list_param_names()
    after_sql, after_names = list_sql(after_cursor=True), list_param_names(after_cursor=True)
    typical = await conn.fetchrow(
        "SELECT id, token_version FROM users WHERE email <> $1 ORDER BY email LIMIT 1", HEAVY_EMAIL
    )
    plans: dict[str, str] = {}
    for generic in (False, True):
        kind = "generic" if generic else "custom"
        if typical is not None:
            typical_values = values | {
                "user_id": typical["id"],
                "token_version": typical["token_version"],
                "session_id": await _live_session(conn, typical["id"]),
            }
            plans[f"typical user, page 1 ({kind} plan)"] = await _explain(
                conn, first_sql, _args(first_names, typical_values), generic=generic
            )
        plans[f"heavy user ({heavy_goals:,} goals), page 1 ({kind} plan)"] = await _explain(
            conn, first_sql, _args(first_names, values), generic=generic
        )
        plans[
            f"heavy user, deep page after goal #{heavy_goals * 9 // 10:,} ({kind} plan)"
        ] = await _explain(conn, after_sql, _args(after_names, deep_values), generic=generic)
    return plans


def print_plans(plans: dict[str, str], totals: dict[str, int]) -> bool:
    """Print every plan; True when each uses the index and none has a Seq Scan on goals or a Sort."""
    print(
        f"\nEXPLAIN (ANALYZE, BUFFERS) of GET /goals' SQL — {totals['goals']:,} goals, "
        f"{totals['users']:,} users"
    )
    ok = True
    for name, plan in plans.items():
        uses_index = INDEX_NAME in plan
        bad = "Seq Scan on goals" in plan or re.search(r"\bSort\s+\(cost", plan) is not None
        ok = ok and uses_index and not bad
        verdict = "index scan" if uses_index and not bad else "NOT AN INDEX RANGE SCAN"
        print(f"\n--- {name}: {verdict}\n{plan}")
    return ok


async def _totals(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        "users": int(await conn.fetchval("SELECT count(*) FROM users")),
        "goals": int(await conn.fetchval("SELECT count(*) FROM goals")),
    }


async def run_on(database_url: str) -> bool:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        plans = await explain_list(conn)
        return print_plans(plans, await _totals(conn))
    finally:
        await conn.close()


async def _seed_and_explain(
    database_url: str, users: int, goals_per_user: int, heavy_goals: int
) -> bool:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        started = time.monotonic()
        seeded = await seed(
            conn, users=users, goals_per_user=goals_per_user, heavy_goals=heavy_goals
        )
        print(
            f"seeded {seeded.users:,} users, {seeded.goals:,} goals "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )
    finally:
        await conn.close()
    return await run_on(database_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--goals-per-user", type=int, default=20)
    parser.add_argument("--heavy-goals", type=int, default=10_000)
    args = parser.parse_args(argv)
    with scratch_stack("goaltrack-explain-") as stack:
        ok = asyncio.run(
            _seed_and_explain(stack.postgres.url, args.users, args.goals_per_user, args.heavy_goals)
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
