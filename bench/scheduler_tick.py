"""The reminder scheduler's tick: its claim queries' plans and one full tick's wall time, on a
small and a large schedule with the same number of due rows.

    uv run python -m bench.scheduler_tick [--sizes 10000 1000000] [--runs 3] [--due 1000]

Starts a throwaway PostgreSQL (LocalStack's, under /dev/shm), and for each size creates a
database, migrates it, seeds it set-based on the server (users with settings in UTC, active goals,
one reminder per goal with `next_fire_at` spread over the next 7 days; exactly `--due` of them
due within the last 5 minutes; the same number of users with a digest due; a third of the goals,
and so of the reminders, due or not, daily habits begun 14 days ago with 10 check-ins each, some
done today, their summaries from the product's `habits.summarize`, their reminders only while the
day is not done; a quarter of the other reminders on weekdays), ANALYZEs, prints
EXPLAIN (ANALYZE, BUFFERS) of both claim queries (the scheduler's own SQLAlchemy statements,
compiled for asyncpg; custom and generic plan), then times full ticks: `dispatch_reminders` in
fresh committed sessions until a batch claims fewer than BATCH rows, then the same for
`dispatch_digests`. Between runs the due rows are put back into the past and the ledger,
notifications and outbox rows the tick wrote are deleted (then VACUUM).

The cost of a tick should follow the number of due rows, not the size of the schedule: the
ratio large/small of the median tick is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from bench.explain import _explain
from bench.seed import (
    HISTORIES,
    PASSWORD_HASH,
    TITLES,
    asyncpg_dsn,
    checkin_histories,
    make_habits,
)
from goaltrack.db import create_sessionmaker
from goaltrack.defer import send_deferred
from goaltrack.dev.localstack import Postgres
from goaltrack.migrations import upgrade
from goaltrack.scheduling import dispatcher as scheduler

MAX_LATENESS = timedelta(minutes=60)  # the default REMINDER_MAX_LATENESS_MINUTES


class NullProducer:
    """Stands in for the Celery app: deferred tasks go nowhere (and are counted)."""

    def __init__(self) -> None:
        self.sent = 0

    def send_task(self, name: str, args: tuple[Any, ...] = (), **options: Any) -> None:
        self.sent += 1


# The claim statements are the dispatcher's own (scheduler.reminder_claim, digest_claim).
reminder_claim = scheduler.reminder_claim
digest_claim = scheduler.digest_claim


def compiled(stmt: Any) -> tuple[str, list[Any]]:
    """The SQL the app sends through asyncpg ($n parameters) and its positional arguments."""
    c = stmt.compile(dialect=PGDialect_asyncpg())
    names = c.positiontup or []
    return str(c), [c.params[name] for name in names]


# --- seeding -----------------------------------------------------------------------------------

USERS_SQL = """
INSERT INTO users (id, email, password_hash, token_version, created_at)
SELECT gen_random_uuid(), 'user' || n || '@bench.goaltrack.example.com', $1, 0,
       now() - interval '800 days' + n * interval '1 second'
FROM generate_series(1, $2::int) AS n
"""

# Every user: UTC, a daily digest at one time, next one within the next 24 h (due ones later).
SETTINGS_SQL = """
INSERT INTO user_settings (id, user_id, notification_frequency, notification_times, timezone,
                           locale, next_digest_at, next_digest_date, next_digest_time)
SELECT gen_random_uuid(), u.id, 'daily', ARRAY[(t.at)::time], 'UTC', 'en',
       t.at, (t.at)::date, (t.at)::time
FROM users u
CROSS JOIN LATERAL (
    SELECT date_trunc('minute', now() + interval '2 hours'
                                + random() * interval '24 hours'
                                + (u.created_at - u.created_at))
           AS at
) AS t
"""

GOALS_SQL = """
INSERT INTO goals (id, user_id, title, deadline, progress, stage_count, completed_stage_count,
                   is_archived, ai_status, created_at, updated_at)
SELECT gen_random_uuid(), u.id,
       ($2::text[])[1 + floor(random() * cardinality($2::text[]))::int],
       CASE WHEN random() < 0.5 THEN current_date + 30 + floor(random() * 365)::int END,
       0, 0, 0, false, 'idle', c, c
FROM users u
CROSS JOIN generate_series(1, $1::int) AS g
CROSS JOIN LATERAL (SELECT now() - random() * interval '365 days' + g * interval '0 s' AS c) AS x
"""

# One reminder per goal, in random heap order; the next occurrence within the next 7 days (never
# within the next 2 hours: nothing but the seeded due rows comes due during a run, however long
# the 1 M seed takes on a busy machine).
REMINDERS_SQL = """
INSERT INTO goal_reminders (id, goal_id, remind_time, frequency_days, anchor_date,
                            next_fire_at, next_fire_date, created_at)
SELECT gen_random_uuid(), g.id, (r.at)::time, r.freq, (r.at)::date - r.freq, r.at, (r.at)::date,
       g.created_at
FROM goals g
CROSS JOIN LATERAL (
    SELECT date_trunc('minute', now() + interval '2 hours'
                                + random() * interval '7 days'
                                + (g.created_at - g.created_at)) AS at,
           1 + floor(random() * 3)::int AS freq
) AS r
ORDER BY random()
"""


# Which goals are habits: a third of them, by a hash of the id (independent of their history's).
HABIT_GOALS = "SELECT id FROM goals WHERE abs(hashtext(id::text || 'habit')) % 3 = 0"
# A habit's reminder only while its day is not done: a habit's default (migration 0015's backfill).
HABIT_REMINDERS_SQL = """
UPDATE goal_reminders r SET only_if_not_done = true
FROM goals g WHERE g.id = r.goal_id AND g.kind = 'habit'
"""
# A quarter of the other reminders on chosen weekdays (all but one, never today) instead of every
# 1-3 days: the due ones fire today, and their next occurrence is a weekday's.
WEEKDAYS_SQL = """
UPDATE goal_reminders r SET frequency_days = NULL, weekdays = $1::smallint[]
FROM goals g
WHERE g.id = r.goal_id AND g.kind = 'goal' AND abs(hashtext(r.id::text || 'weekdays')) % 4 = 0
"""


def _weekdays_but(day: int) -> list[int]:
    return [weekday for weekday in range(7) if weekday != day]


HABIT_DAYS = 14
HABIT_CHECKINS = 10


@dataclass
class Dataset:
    reminders: int
    users: int
    goals_per_user: int
    seed_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


def shape(reminders: int) -> Dataset:
    """10 goals (one reminder each) per user from 100k reminders up; 2 per user below."""
    per_user = 10 if reminders >= 100_000 else 2
    return Dataset(reminders=reminders, users=reminders // per_user, goals_per_user=per_user)


async def seed(conn: asyncpg.Connection, ds: Dataset, due: int) -> None:
    started = time.monotonic()
    async with conn.transaction():
        await conn.execute("SELECT setseed(0.42)")
        await conn.execute(USERS_SQL, PASSWORD_HASH, ds.users)
        await conn.execute(SETTINGS_SQL)
        await conn.execute(GOALS_SQL, ds.goals_per_user, TITLES)
        await conn.execute(REMINDERS_SQL)
        # The due rows, remembered so that each run can put them back.
        await conn.execute(
            "CREATE TABLE bench_due_reminders AS "
            "SELECT id FROM goal_reminders ORDER BY random() LIMIT $1",
            due,
        )
        await conn.execute(
            "CREATE TABLE bench_due_digests AS "
            "SELECT user_id FROM user_settings ORDER BY random() LIMIT $1",
            due,
        )
    today = datetime.now(UTC).date()
    await make_habits(
        conn,
        HABIT_GOALS,
        checkin_histories(
            HISTORIES,
            start=today - timedelta(days=HABIT_DAYS - 1),
            today=today,
            checkins=HABIT_CHECKINS,
        ),
    )
    async with conn.transaction():
        # No row triggers: the change log's rows exist since the inserts (see make_habits).
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(HABIT_REMINDERS_SQL)
        await conn.execute(WEEKDAYS_SQL, _weekdays_but((today.weekday() + 3) % 7))
    await make_due(conn)
    await conn.execute("VACUUM ANALYZE")
    ds.seed_s = time.monotonic() - started
    for table in ("users", "user_settings", "goals", "goal_reminders", "habit_checkins"):
        ds.counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    ds.counts["habits"] = int(
        await conn.fetchval("SELECT count(*) FROM goals WHERE kind = 'habit'")
    )
    ds.counts["due_on_habits"] = int(
        await conn.fetchval(
            "SELECT count(*) FROM bench_due_reminders d JOIN goal_reminders r ON r.id = d.id "
            "JOIN goals g ON g.id = r.goal_id WHERE g.kind = 'habit'"
        )
    )


async def make_due(conn: asyncpg.Connection) -> None:
    """The due rows' next occurrence within the last 5 minutes; nothing the ticks wrote left."""
    async with conn.transaction():
        await conn.execute(
            """
            UPDATE goal_reminders r
            SET next_fire_at = x.at, next_fire_date = (x.at)::date, remind_time = (x.at)::time,
                anchor_date = (x.at)::date, last_sent_date = NULL
            FROM (SELECT id, now() - random() * interval '5 minutes' AS at
                  FROM bench_due_reminders) AS x
            WHERE r.id = x.id
            """
        )
        await conn.execute(
            """
            UPDATE user_settings s
            SET next_digest_at = x.at, next_digest_date = (x.at)::date,
                next_digest_time = (x.at)::time, notification_times = ARRAY[(x.at)::time]
            FROM (SELECT user_id, now() - random() * interval '5 minutes' AS at
                  FROM bench_due_digests) AS x
            WHERE s.user_id = x.user_id
            """
        )
        await conn.execute("DELETE FROM reminder_deliveries")
        await conn.execute("DELETE FROM notifications")
        await conn.execute("DELETE FROM task_outbox")


async def reset(conn: asyncpg.Connection) -> None:
    await make_due(conn)
    for table in (
        "goal_reminders",
        "user_settings",
        "reminder_deliveries",
        "notifications",
        "task_outbox",
    ):
        await conn.execute(f"VACUUM {table}")


# --- the tick ----------------------------------------------------------------------------------


@dataclass
class Tick:
    reminders_s: float
    digests_s: float
    reminder_batches: int
    digest_batches: int
    reminders_sent: int
    digests_sent: int
    # Habit reminders served but not sent: the habit's day was done already (only_if_not_done).
    reminders_unwanted: int = 0

    @property
    def total_s(self) -> float:
        return self.reminders_s + self.digests_s


async def tick(sessionmaker: Any) -> Tick:
    """As scheduling.tasks.dispatch_due: one `now` for the tick, a session per batch."""
    now = datetime.now(UTC)
    out: dict[str, Any] = {}
    for dispatch, key in (
        (scheduler.dispatch_reminders, "reminders"),
        (scheduler.dispatch_digests, "digests"),
    ):
        started = time.perf_counter()
        batches = sent = unwanted = 0
        while True:
            async with sessionmaker() as session:
                served = await dispatch(session, now=now, max_lateness=MAX_LATENESS)
                await session.commit()
            send_deferred(session)
            batches += 1
            sent += served.sent
            unwanted += served.unwanted
            if served.claimed < scheduler.BATCH and not served.left_due:
                break
        out[key] = (time.perf_counter() - started, batches, sent, unwanted)
    return Tick(
        reminders_s=out["reminders"][0],
        digests_s=out["digests"][0],
        reminder_batches=out["reminders"][1],
        digest_batches=out["digests"][1],
        reminders_sent=out["reminders"][2],
        digests_sent=out["digests"][2],
        reminders_unwanted=out["reminders"][3],
    )


async def explain_claims(conn: asyncpg.Connection) -> dict[str, str]:
    now = datetime.now(UTC)
    plans = {}
    for name, stmt in (
        ("reminder claim", reminder_claim(now)),
        ("digest claim", digest_claim(now)),
    ):
        sql, args = compiled(stmt)
        for generic in (False, True):
            # EXPLAIN ANALYZE runs the query (and takes its row locks): inside a transaction
            # that _explain leaves by committing — locks only, nothing changes.
            plans[f"{name} ({'generic' if generic else 'custom'} plan)"] = await _explain(
                conn, sql, args, generic=generic
            )
    plans["_sql reminder claim"] = compiled(reminder_claim(now))[0]
    plans["_sql digest claim"] = compiled(digest_claim(now))[0]
    return plans


async def run_size(pg: Postgres, reminders: int, due: int, runs: int) -> dict[str, Any]:
    ds = shape(reminders)
    dbname = f"tick_{reminders}"
    pg.create_database(dbname)
    url = pg.url_for(dbname)
    await asyncio.to_thread(upgrade, url)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await seed(conn, ds, due)
        print(
            f"\n=== {ds.counts['goal_reminders']:,} reminders ({ds.counts['users']:,} users × "
            f"{ds.goals_per_user} goals × 1 reminder; {ds.counts['habits']:,} of the goals habits "
            f"with {ds.counts['habit_checkins']:,} check-ins), {due:,} due "
            f"({ds.counts['due_on_habits']:,} on habits); seeded in {ds.seed_s:.1f} s",
            flush=True,
        )
        plans = await explain_claims(conn)
        for name, plan in plans.items():
            if name.startswith("_sql"):
                print(f"\n--- {name[5:]} SQL (asyncpg):\n{plan}")
            else:
                print(f"\n--- {name}:\n{plan}")
        # EXPLAIN ANALYZE of a FOR UPDATE query changed nothing; reset anyway for a clean start.
        await reset(conn)
        engine = create_async_engine(
            url, pool_size=2, connect_args={"server_settings": {"timezone": "UTC"}}
        )
        producer = NullProducer()
        sessionmaker = create_sessionmaker(engine, producer)
        ticks: list[Tick] = []
        try:
            # A warm-up tick (connections, prepared statements, imports), not counted.
            await tick(sessionmaker)
            for i in range(runs):
                await reset(conn)
                t = await tick(sessionmaker)
                checks = await conn.fetchrow(
                    "SELECT (SELECT count(*) FROM reminder_deliveries WHERE kind = 'reminder') AS r,"
                    " (SELECT count(*) FROM reminder_deliveries WHERE kind = 'digest') AS d,"
                    " (SELECT count(*) FROM notifications) AS n,"
                    " (SELECT count(*) FROM task_outbox) AS o,"
                    " (SELECT count(*) FROM goal_reminders WHERE next_fire_at <= now()) AS left_r,"
                    " (SELECT count(*) FROM user_settings WHERE next_digest_at <= now()) AS left_d"
                )
                print(
                    f"run {i + 1}: tick {t.total_s * 1000:.0f} ms = reminders "
                    f"{t.reminders_s * 1000:.0f} ms ({t.reminder_batches} batches, "
                    f"{t.reminders_sent} sent, {t.reminders_unwanted} habits done already) + digests {t.digests_s * 1000:.0f} ms "
                    f"({t.digest_batches} batches, {t.digests_sent} sent); ledger "
                    f"{checks['r']}+{checks['d']}, notifications {checks['n']}, outbox "
                    f"{checks['o']}, still due {checks['left_r']}+{checks['left_d']}",
                    flush=True,
                )
                ticks.append(t)
        finally:
            await engine.dispose()
    finally:
        await conn.close()
    return {"dataset": ds, "ticks": ticks, "plans": plans}


def _stats(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"min {min(ms):.0f} / median {statistics.median(ms):.0f} / max {max(ms):.0f} ms"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler_tick", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(f"loadavg before: {loadavg()}", flush=True)
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="goaltrack-tick-", dir=base))
    root.chmod(0o755)
    pg = Postgres(root / "postgres")
    results = []
    try:
        pg.start()
        for size in args.sizes:
            results.append(asyncio.run(run_size(pg, size, args.due, args.runs)))
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\n=== summary")
    for r in results:
        ds: Dataset = r["dataset"]
        ticks: list[Tick] = r["ticks"]
        print(
            f"{ds.counts['goal_reminders']:>9,} reminders, seeded in {ds.seed_s:5.1f} s: "
            f"tick {_stats([t.total_s for t in ticks])}; reminders "
            f"{_stats([t.reminders_s for t in ticks])}; digests "
            f"{_stats([t.digests_s for t in ticks])}"
        )
    if len(results) >= 2:
        small = statistics.median(t.total_s for t in results[0]["ticks"])
        large = statistics.median(t.total_s for t in results[-1]["ticks"])
        print(
            f"ratio of median ticks {results[-1]['dataset'].counts['goal_reminders']:,} / "
            f"{results[0]['dataset'].counts['goal_reminders']:,}: {large / small:.2f}"
        )
    print(f"total {time.monotonic() - started:.1f} s; loadavg after: {loadavg()}")
    if args.json is not None:
        sizes = [
            {
                "reminders": r["dataset"].counts["goal_reminders"],
                "habits": r["dataset"].counts["habits"],
                "habit_checkins": r["dataset"].counts["habit_checkins"],
                "due": args.due,
                "due_on_habits": r["dataset"].counts["due_on_habits"],
                "reminders_sent": [t.reminders_sent for t in r["ticks"]],
                "reminders_unwanted": [t.reminders_unwanted for t in r["ticks"]],
                "digests_sent": [t.digests_sent for t in r["ticks"]],
                "tick_s": [t.total_s for t in r["ticks"]],
                "median_tick_s": statistics.median(t.total_s for t in r["ticks"]),
            }
            for r in results
        ]
        document = {"sizes": sizes}
        if len(sizes) >= 2:
            document["ratio_large_to_small"] = (
                sizes[-1]["median_tick_s"] / sizes[0]["median_tick_s"]
            )
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
