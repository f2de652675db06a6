"""The cost of the achievements feature at scale: GET /achievements (statistics cache hit and
miss) and awarding on a stage completion.

    uv run python -m bench.achievements_cost [--users 1000000] [--target 10000000]
                                             [--runs 3] [--iterations 200]

Starts a throwaway PostgreSQL (LocalStack's, under /dev/shm) and a Redis (redis-server
subprocess), migrates (the catalogue of 11 achievements comes with the migration), and seeds
set-based on the server: `--users` users (~1 % soft-deleted) with settings and counters, and
user_achievements with a skewed share per achievement (first_goal ~90 %, first_stage ~70 %,
stages_10 ~30 %, ... the rarest ~3–5 %): about 3.2 holdings per user. Then measures

1. EXPLAIN (ANALYZE, BUFFERS) of the statements `compute_stats` sends (captured from a real run
   with a SQLAlchemy event listener, so exactly as built), and `compute_stats` itself (`--runs`
   times) — the cost of a statistics cache miss; plus `list_for_user` on a miss end to end;
2. a cache hit: `list_for_user` with the statistics key in Redis, `--iterations` times, with the
   statements it sends (expected: the per-user catalogue query only) and that query's plans;
3. `record` for a stage completion, `--iterations` times each in rolled-back transactions, for a
   user at 9 stages (crosses stages_10: one award + notification + outbox row) and one at 20
   (nothing to award).

11 catalogue rows cap the holdings at 11 per user, so 10 M user_achievements over 1 M users
cannot keep that skew (it would need ~10 of 11 per user). With `--target` > the skewed total,
a second phase tops the table up to `--target` rows (random extra holdings, the same users),
re-ANALYZEs and measures everything again: the realistic shape first, then the issue's volume.
The report is printed and written to /tmp/achievements_cost.out.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.explain import _explain, _live_session
from bench.scheduler_tick import NullProducer, loadavg
from bench.seed import PASSWORD_HASH, asyncpg_dsn
from goaltrack.achievements import queries, service
from goaltrack.auth.caller import caller_params
from goaltrack.auth.security import AccessClaims
from goaltrack.db import create_sessionmaker
from goaltrack.dev.localstack import Postgres, RedisServer
from goaltrack.migrations import upgrade
from goaltrack.reads import PoolReader, SessionReader

OUT = Path("/tmp/achievements_cost.out")
_out_file: Any = None


def say(text: str = "") -> None:
    print(text, flush=True)
    if _out_file is not None:
        _out_file.write(text + "\n")
        _out_file.flush()


# --- seeding -----------------------------------------------------------------------------------

# Share of users holding each achievement (the catalogue's codes).
SHARES = {
    "first_goal": 0.90,
    "first_stage": 0.70,
    "stages_10": 0.30,
    "stages_50": 0.08,
    "stages_100": 0.03,
    "first_goal_completed": 0.40,
    "goals_completed_5": 0.10,
    "before_deadline": 0.20,
    "first_result": 0.25,
    "first_ai_plan": 0.15,
    "three_in_progress": 0.05,
}

USERS_SQL = """
INSERT INTO users (id, email, password_hash, token_version, created_at, deleted_at)
SELECT gen_random_uuid(), 'user' || n || '@bench.goaltrack.example.com', $1, 0,
       now() - interval '800 days' + n * interval '1 second',
       CASE WHEN random() < 0.01 THEN now() - random() * interval '20 days' END
FROM generate_series(1, $2::int) AS n
"""

SETTINGS_SQL = """
INSERT INTO user_settings (id, user_id, timezone, locale)
SELECT gen_random_uuid(), u.id, 'UTC', CASE WHEN random() < 0.3 THEN 'ru' ELSE 'en' END
FROM users u
"""

# Counters with a long tail (most users small, a few large).
STATS_SQL = """
INSERT INTO user_stats (user_id, goals_created, stages_completed, goals_completed,
                        goals_completed_before_deadline, attachments_added, ai_plans_applied)
SELECT u.id, floor(random() * random() * 20)::int, floor(random() * random() * random() * 150)::int,
       floor(random() * random() * 8)::int, floor(random() * random() * 3)::int,
       floor(random() * random() * 5)::int, floor(random() * random() * 3)::int
FROM users u
"""

# One row per (user, achievement) kept with the achievement's share; earned some time after
# the account was created. The draw sits in a LATERAL naming both sides, so that it is made per
# pair (a bare `random() < share` gets pushed down to the 11 catalogue rows).
HOLDINGS_SQL = """
INSERT INTO user_achievements (user_id, achievement_id, earned_at)
SELECT u.id, a.id, u.created_at + random() * (now() - u.created_at)
FROM users u
CROSS JOIN (achievements a JOIN unnest($1::text[], $2::float8[]) AS s(code, share)
            ON s.code = a.code)
CROSS JOIN LATERAL (SELECT random() AS r WHERE u.id IS NOT NULL AND a.id IS NOT NULL) AS x
WHERE x.r < s.share
"""

TOPUP_SQL = """
INSERT INTO user_achievements (user_id, achievement_id, earned_at)
SELECT u.id, a.id, u.created_at + random() * (now() - u.created_at)
FROM users u
CROSS JOIN achievements a
CROSS JOIN LATERAL (SELECT random() AS r WHERE u.id IS NOT NULL AND a.id IS NOT NULL) AS x
WHERE x.r < $1::float8
ON CONFLICT DO NOTHING
"""


async def timed(conn: asyncpg.Connection, what: str, sql: str, *args: Any) -> float:
    started = time.monotonic()
    status = await conn.execute(sql, *args)
    took = time.monotonic() - started
    say(f"  {what:<28} {took:7.1f} s  ({status})")
    return took


async def seed(conn: asyncpg.Connection, users: int) -> float:
    started = time.monotonic()
    await conn.execute("SELECT setseed(0.42)")
    await timed(conn, "users", USERS_SQL, PASSWORD_HASH, users)
    await timed(conn, "user_settings", SETTINGS_SQL)
    await timed(conn, "user_stats", STATS_SQL)
    await timed(
        conn,
        "user_achievements (skewed)",
        HOLDINGS_SQL,
        list(SHARES),
        list(SHARES.values()),
    )
    started_v = time.monotonic()
    await conn.execute("VACUUM ANALYZE")
    say(f"  {'VACUUM ANALYZE':<28} {time.monotonic() - started_v:7.1f} s")
    return time.monotonic() - started


async def topup(conn: asyncpg.Connection, users: int, target: int) -> float:
    started = time.monotonic()
    have = int(await conn.fetchval("SELECT count(*) FROM user_achievements"))
    slots = users * int(await conn.fetchval("SELECT count(*) FROM achievements"))
    # Probability over all pairs such that the new (not yet held) ones add target - have.
    p = min(1.0, (target - have) / max(1, slots - have))
    await conn.execute("SELECT setseed(0.17)")
    await timed(conn, f"top-up (p={p:.3f})", TOPUP_SQL, p)
    started_v = time.monotonic()
    await conn.execute("VACUUM ANALYZE")
    say(f"  {'VACUUM ANALYZE':<28} {time.monotonic() - started_v:7.1f} s")
    return time.monotonic() - started


async def _caller(conn: asyncpg.Connection, user_id: uuid.UUID) -> AccessClaims:
    """The user as a logged-in caller: a live session (refresh-token family) at their version."""
    family_id = await _live_session(conn, user_id)
    version = await conn.fetchval("SELECT token_version FROM users WHERE id = $1", user_id)
    return AccessClaims(
        user_id=user_id, token_version=version, session_id=family_id, issued_at=int(time.time())
    )


async def prepare_record_users(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    """Two live users: one at 9 stages holding first_goal and first_stage only (the next stage
    earns stages_10), one at 20 holding first_goal, first_stage and stages_10 (nothing next)."""
    rows = await conn.fetch(
        "SELECT id FROM users WHERE deleted_at IS NULL ORDER BY created_at LIMIT 2 OFFSET (SELECT count(*) / 2 FROM users)"
    )
    at9, at20 = rows[0]["id"], rows[1]["id"]
    async with conn.transaction():
        for user_id, stages, held in (
            (at9, 9, ["first_goal", "first_stage"]),
            (at20, 20, ["first_goal", "first_stage", "stages_10"]),
        ):
            await conn.execute("DELETE FROM user_achievements WHERE user_id = $1", user_id)
            await conn.execute(
                "INSERT INTO user_achievements (user_id, achievement_id, earned_at) "
                "SELECT $1, id, now() - interval '10 days' FROM achievements "
                "WHERE code = ANY($2::text[])",
                user_id,
                held,
            )
            await conn.execute(
                "UPDATE user_stats SET stages_completed = $2 WHERE user_id = $1", user_id, stages
            )
    await conn.execute("VACUUM ANALYZE user_achievements, user_stats")
    return at9, at20


# --- measuring ---------------------------------------------------------------------------------


class Recorder:
    """Every statement the engine sends (SQL text and parameters), while `on`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.on = False
        self.statements: list[tuple[str, list[Any]]] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if self.on:
            self.statements.append((statement, list(parameters or ())))

    def start(self) -> None:
        self.statements = []
        self.on = True

    def stop(self) -> list[tuple[str, list[Any]]]:
        self.on = False
        return self.statements


def ms(values: list[float]) -> list[float]:
    return sorted(v * 1000 for v in values)


def summary(values: list[float]) -> str:
    v = ms(values)
    p99 = v[min(len(v) - 1, max(0, round(0.99 * len(v)) - 1))]
    return (
        f"min {v[0]:.2f} / median {statistics.median(v):.2f} / p99 {p99:.2f} / "
        f"max {v[-1]:.2f} ms (n={len(v)})"
    )


def short(sql: str) -> str:
    return " ".join(sql.split())


async def repeat(n: int, warmup: int, once: Callable[[], Awaitable[None]]) -> list[float]:
    for _ in range(warmup):
        await once()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await once()
        times.append(time.perf_counter() - started)
    return times


async def measure(
    url: str, redis_url: str, label: str, runs: int, iterations: int, users: tuple[uuid.UUID, ...]
) -> dict[str, Any]:
    result: dict[str, Any] = {"label": label}
    conn = await asyncpg.connect(asyncpg_dsn(url))
    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM users) AS users,"
        " (SELECT count(*) FROM users WHERE deleted_at IS NULL) AS live,"
        " (SELECT count(*) FROM user_achievements) AS ua,"
        " pg_size_pretty(pg_total_relation_size('user_achievements')) AS ua_size,"
        " pg_size_pretty(pg_total_relation_size('users')) AS users_size"
    )
    settings = await conn.fetchrow(
        "SELECT current_setting('shared_buffers') AS sb, current_setting('work_mem') AS wm,"
        " current_setting('max_parallel_workers_per_gather') AS par,"
        " current_setting('server_version') AS v"
    )
    result["counts"] = dict(counts)
    say(
        f"\n=== {label}: {counts['users']:,} users ({counts['live']:,} live), "
        f"{counts['ua']:,} user_achievements ({counts['ua'] / counts['users']:.2f}/user; "
        f"table+indexes {counts['ua_size']}; users {counts['users_size']})"
    )
    say(
        f"PostgreSQL {settings['v']}: shared_buffers {settings['sb']}, work_mem {settings['wm']}, "
        f"max_parallel_workers_per_gather {settings['par']}"
    )
    shares = await conn.fetch(
        "SELECT a.code, count(ua.user_id) AS n FROM achievements a "
        "LEFT JOIN user_achievements ua ON ua.achievement_id = a.id "
        "GROUP BY a.code, a.position ORDER BY a.position"
    )
    say(
        "holders: "
        + ", ".join(f"{r['code']} {100 * r['n'] / counts['users']:.0f}%" for r in shares)
    )

    engine = create_async_engine(
        url, pool_size=2, connect_args={"server_settings": {"timezone": "UTC"}}
    )
    recorder = Recorder(engine)
    producer = NullProducer()
    sessionmaker = create_sessionmaker(engine, producer)
    redis = Redis.from_url(redis_url)
    try:
        # --- 1. cache miss: compute_stats -----------------------------------------------------
        async with sessionmaker() as session:
            recorder.start()
            stats = await service.compute_stats(session)
            sent = recorder.stop()
        say(
            f"\n--- compute_stats sends {len(sent)} statements; users={stats.users:,}, "
            f"holders: " + ", ".join(f"{k} {stats.percent(k)}%" for k in stats.holders)
        )
        for i, (sql, args) in enumerate(sent):
            plan = await _explain(conn, sql, args, generic=False)
            say(f"\n[{i + 1}] {short(sql)}\n{plan}")
            result.setdefault("plans", []).append((short(sql), plan))

        async def one_compute() -> None:
            async with sessionmaker() as session:
                await service.compute_stats(session)

        miss = await repeat(runs, 0, one_compute)
        result["compute_stats"] = miss
        say(f"\ncompute_stats (cache-miss cost), {runs} runs: {summary(miss)}")

        # list_for_user end to end on a miss (the lock's holder computes and stores).
        user_id = users[0]
        caller = await _caller(conn, user_id)

        async def one_list_miss() -> None:
            await redis.delete(service.STATS_KEY, service.STATS_LOCK_KEY)
            async with sessionmaker() as session:
                out = await service.list_for_user(
                    SessionReader(session), sessionmaker, redis, caller=caller
                )
                assert out["stats_available"]
                await session.rollback()

        list_miss = await repeat(runs, 0, one_list_miss)
        result["list_miss"] = list_miss
        say(
            f"list_for_user on a miss (GET, SET NX lock, compute, SET), {runs} runs: "
            f"{summary(list_miss)}"
        )

        # --- 2. cache hit: the API's hot read (one statement + one Redis GET) ---------------
        assert await redis.get(service.STATS_KEY) is not None
        read_pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=2)

        async def one_list_hit() -> None:
            out = await service.list_for_user(PoolReader(read_pool), None, redis, caller=caller)
            assert out["stats_available"]
            assert len(out["items"]) == 11

        try:
            hit = await repeat(iterations, 20, one_list_hit)
        finally:
            await read_pool.close()
        result["list_hit"] = hit
        catalogue = queries.CATALOGUE
        args = [caller_params(caller).get(name) for name in catalogue.names]
        say(
            f"\n--- list_for_user, cache hit, {iterations} runs: {summary(hit)}; "
            "statements per call: 1"
        )
        for generic in (False, True):
            plan = await _explain(conn, catalogue.sql, args, generic=generic)
            say(f"\nper-user catalogue query ({'generic' if generic else 'custom'} plan):\n{plan}")
            result.setdefault("hit_plans", []).append(plan)
        # Redis alone (GET + JSON decode), for the split.
        redis_only = await repeat(
            iterations,
            20,
            lambda: service.cached_stats(None, redis),
        )
        result["redis_only"] = redis_only
        say(f"cached_stats alone (Redis GET + decode): {summary(redis_only)}")

        # --- 3. awarding on a stage completion ------------------------------------------------
        for who, uid, expect in (
            ("at 9 stages (awards stages_10)", users[0], 1),
            ("at 20 stages (nothing to award)", users[1], 0),
        ):
            n_statements: list[int] = []
            awarded_n: list[int] = []

            async def one_record(
                uid: uuid.UUID = uid,
                n_statements: list[int] = n_statements,
                awarded_n: list[int] = awarded_n,
            ) -> None:
                async with sessionmaker() as session:
                    recorder.start()
                    awarded = await service.record(
                        session,
                        user_id=uid,
                        counters={"stages_completed": 1},
                        metrics=("stages_completed",),
                        now=datetime.now(UTC),
                    )
                    n_statements.append(len(recorder.stop()))
                    awarded_n.append(len(awarded))
                    await session.rollback()

            times = await repeat(iterations, 10, one_record)
            sql_seen = recorder.statements
            result[f"record {expect}"] = times
            say(
                f"\n--- record(stages_completed +1), user {who}, {iterations} rolled-back runs: "
                f"{summary(times)}; awarded per run {sorted(set(awarded_n))}; statements per run "
                f"{sorted(set(n_statements))}"
            )
            for sql, _ in sql_seen:
                say(f"  {short(sql)[:200]}")
        state = await conn.fetch(
            "SELECT s.user_id, s.stages_completed, count(ua.*) AS held FROM user_stats s "
            "LEFT JOIN user_achievements ua ON ua.user_id = s.user_id "
            "WHERE s.user_id = ANY($1::uuid[]) GROUP BY 1, 2",
            list(users),
        )
        say(
            "after the rolled-back runs: "
            + ", ".join(f"{r['stages_completed']} stages / {r['held']} held" for r in state)
        )
    finally:
        await redis.aclose()
        await engine.dispose()
        await conn.close()
    return result


def plan_root_time(plan: str) -> str:
    for line in plan.splitlines():
        if line.startswith("Execution Time"):
            return line.split(":", 1)[1].strip()
    return "?"


async def run(args: argparse.Namespace, pg: Postgres, redis_url: str) -> list[dict[str, Any]]:
    pg.create_database("achievements")
    url = pg.url_for("achievements")
    started = time.monotonic()
    await asyncio.to_thread(upgrade, url)
    say(f"migrated in {time.monotonic() - started:.1f} s")
    conn = await asyncpg.connect(asyncpg_dsn(url))
    results = []
    try:
        say(f"\nseeding {args.users:,} users, skewed holdings:")
        seed_s = await seed(conn, args.users)
        users = await prepare_record_users(conn)
        say(f"seeded in {seed_s:.1f} s")
        r = await measure(url, redis_url, "skewed", args.runs, args.iterations, users)
        r["seed_s"] = seed_s
        results.append(r)
        have = int(await conn.fetchval("SELECT count(*) FROM user_achievements"))
        if args.target > have:
            say(f"\ntopping user_achievements up from {have:,} to ~{args.target:,}:")
            top_s = await topup(conn, args.users, args.target)
            users = await prepare_record_users(conn)
            say(f"topped up in {top_s:.1f} s")
            r = await measure(url, redis_url, "topped up", args.runs, args.iterations, users)
            r["seed_s"] = seed_s + top_s
            results.append(r)
    finally:
        await conn.close()
    return results


def main(argv: list[str] | None = None) -> int:
    global _out_file
    parser = argparse.ArgumentParser(prog="python -m bench.achievements_cost", description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--target", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args(argv)
    _out_file = OUT.open("w")
    started = time.monotonic()
    say(f"loadavg before: {loadavg()}")
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="goaltrack-achievements-", dir=base))
    root.chmod(0o755)
    pg = Postgres(root / "postgres")
    redis_server = RedisServer(root / "redis")
    results: list[dict[str, Any]] = []
    try:
        pg.start()
        redis_server.start()
        results = asyncio.run(run(args, pg, redis_server.url))
    finally:
        redis_server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    say("\n=== summary")
    for r in results:
        c = r["counts"]
        hit = statistics.median(r["list_hit"])
        miss = statistics.median(r["compute_stats"])
        say(
            f"{r['label']:>9}: {c['users']:,} users / {c['ua']:,} user_achievements "
            f"(seeded in {r['seed_s']:.0f} s)"
        )
        say(
            f"    grouped query EXPLAIN ANALYZE {plan_root_time(r['plans'][0][1])}; users count "
            f"{plan_root_time(r['plans'][-1][1])}"
        )
        say(f"    compute_stats (miss)  {summary(r['compute_stats'])}")
        say(f"    list_for_user miss    {summary(r['list_miss'])}")
        say(f"    list_for_user hit     {summary(r['list_hit'])}")
        say(f"    record → award        {summary(r['record 1'])}")
        say(f"    record → nothing      {summary(r['record 0'])}")
        say(
            f"    ratios: miss/hit {miss / hit:,.0f}×; award/nothing "
            f"{statistics.median(r['record 1']) / statistics.median(r['record 0']):.2f}×"
        )
    say(f"total {time.monotonic() - started:.1f} s; loadavg after: {loadavg()}")
    _out_file.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
