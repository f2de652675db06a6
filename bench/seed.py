"""Realistic data, fast: set-based INSERT ... SELECT generate_series, then ANALYZE.

Every user has a settings row, `goals_per_user` active goals and a tenth as many archived ones
(optionally one heavy user has many more, for the query plans of deep pages),
with titles and descriptions of varied length, stage counts and progress that agree, some
deadlines and completions, and creation times spread over two years.

Habits (`seed_habit_twins`, `make_habits`): goals turned into daily habits with years of check-ins,
each habit's stored summary computed by the product's own `goals.habits.summarize` from exactly the
check-in rows it gets, as a check-in would have left it.
"""

from __future__ import annotations

import importlib.util
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg

from goaltrack.auth.security import create_access_token
from goaltrack.config import Settings
from goaltrack.goals import habits

# Nobody logs in during the benchmark: a well-formed bcrypt string is all the column needs.
HEAVY_EMAIL = "heavy@bench.goaltrack.example.com"
# The users the load cycles through (`seed`'s), not the heavy one or the habit twins.
REGULAR_USERS = "email LIKE 'user%'"
HABIT_TWINS_DOMAIN = "@twins.bench.goaltrack.example.com"
PASSWORD_HASH = "$2b$12$C6UzMDM.H6dfI/f/IKcEeO5p8b1d2wW0VqTqO9Xcz3yJb4H5i6E7G"

TITLES = [
    "Run a half marathon",
    "Read 24 books this year",
    "Learn conversational Spanish",
    "Save for a house deposit",
    "Ship the side project",
    "Meditate every morning",
    "Learn to play the guitar",
    "Cook dinner at home five nights a week",
    "Get the AWS Solutions Architect certificate",
    "Write a short story every month",
    "Cycle from London to Paris",
    "Pay off the credit card",
    "Sleep eight hours a night",
    "Renovate the kitchen",
    "Grow tomatoes on the balcony",
    "Climb a 6a route outdoors",
    "Finish the online statistics course",
    "Call my grandparents every Sunday",
    "Drink less coffee",
    "Build an emergency fund of three months",
    "Learn to swim front crawl",
    "Publish a blog post every two weeks",
    "Visit ten national parks",
    "Do 50 push-ups in a row",
]

DESCRIPTIONS = [
    None,
    "Small steps every week.",
    "Training plan: three runs a week, one long run on Sundays, strength work on Wednesdays. "
    "Keep the easy runs easy and track the mileage in the app.",
    "Why: I keep putting this off. How: a fixed slot in the calendar, and a friend to keep me "
    "honest. Done when I can do it without thinking about it.",
    "Budget it, break it into stages, and review the progress at the end of every month.",
    "Started in January; the first attempt stalled in March. This time: smaller stages, "
    "a reminder every other day, and a note of what got in the way each time I skip a session. "
    "Reward at the end: a weekend away.",
]

# Rows go in in random order, as years of inserts by many users would leave them: one user's
# goals are spread over the table's pages, not packed together.
GOALS_SQL = """
WITH spec AS (
    SELECT u.id AS user_id, g > n.active AS archived,
           3 + floor(random() * 5)::int AS stages,
           now() - random() * interval '730 days' AS created
    FROM users u
    CROSS JOIN LATERAL (
        SELECT CASE WHEN u.email = $4::text THEN $5::int ELSE $1::int END AS active
    ) AS n
    CROSS JOIN LATERAL generate_series(1, n.active + n.active / 10) AS g
),
counted AS (
    SELECT *, floor(random() * (stages + 1))::int AS done FROM spec
)
INSERT INTO goals (id, user_id, title, description, deadline, progress, stage_count,
                   completed_stage_count, is_archived, completed_at, ai_status, updated_at,
                   created_at)
SELECT gen_random_uuid(),
       user_id,
       ($2::text[])[1 + floor(random() * cardinality($2::text[]))::int],
       ($3::text[])[1 + floor(random() * cardinality($3::text[]))::int],
       CASE WHEN random() < 0.6 THEN (created + random() * interval '365 days')::date END,
       CASE WHEN stages = 0 THEN 0 ELSE done * 100 / stages END,
       stages,
       done,
       archived,
       CASE WHEN stages > 0 AND done = stages THEN created + random() * interval '60 days' END,
       (ARRAY['idle', 'idle', 'idle', 'done', 'failed'])[1 + floor(random() * 5)::int],
       created + random() * interval '30 days',
       created
FROM counted
ORDER BY random()
"""

SETTINGS_SQL = """
INSERT INTO user_settings (id, user_id, notification_frequency, timezone, locale)
SELECT gen_random_uuid(), u.id,
       (ARRAY['daily', 'weekly', 'off'])[1 + abs(hashtext(u.email)) % 3],
       (ARRAY['UTC', 'Europe/London', 'America/New_York', 'Asia/Tokyo'])
           [1 + abs(hashtext(u.email)) % 4],
       (ARRAY['en', 'ru'])[1 + abs(hashtext(u.email)) % 2]
FROM users u
"""


STAGES_SQL = """
INSERT INTO goal_stages (id, goal_id, title, description, position, is_completed, completed_at,
                         first_completed_at, created_at)
SELECT gen_random_uuid(), g.id,
       'Stage ' || p || ': ' || ($1::text[])[1 + floor(random() * cardinality($1::text[]))::int],
       CASE WHEN random() < 0.4 THEN ($2::text[])[2 + floor(random() * 3)::int] END,
       p - 1,
       p <= g.completed_stage_count,
       CASE WHEN p <= g.completed_stage_count THEN g.created_at + p * interval '1 day' END,
       CASE WHEN p <= g.completed_stage_count THEN g.created_at + p * interval '1 day' END,
       g.created_at
FROM goals g
CROSS JOIN LATERAL generate_series(1, g.stage_count) AS p
"""

# A fifth of the active goals hold a photo or a PDF (rows only: presigning needs no object).
ATTACHMENTS_SQL = """
INSERT INTO goal_attachments (id, goal_id, user_id, object_key, file_url, file_type, file_name,
                              size, created_at)
SELECT a.id, a.goal_id, a.user_id, 'attachments/' || a.id || e.ext, '', a.type,
       'proof-' || left(a.id::text, 8) || e.ext, 20000 + floor(random() * 2000000)::int,
       a.created
FROM (
    SELECT gen_random_uuid() AS id, g.id AS goal_id, g.user_id,
           g.created_at + interval '3 days' AS created,
           CASE WHEN random() < 0.8 THEN 'image/jpeg' ELSE 'application/pdf' END AS type
    FROM goals g
    WHERE NOT g.is_archived AND random() < 0.2
) AS a
CROSS JOIN LATERAL (
    SELECT CASE a.type WHEN 'image/jpeg' THEN '.jpg' ELSE '.pdf' END AS ext
) AS e
"""

# `per_goal` reminders on every active goal, due over the next week (the scheduler's data).
REMINDERS_SQL = """
INSERT INTO goal_reminders (id, goal_id, remind_time, frequency_days, anchor_date, next_fire_at,
                            next_fire_date, created_at)
SELECT gen_random_uuid(), g.id, r.at::time, 1 + floor(random() * 3)::int, current_date,
       date_trunc('minute', now() + interval '1 hour' + random() * interval '7 days'),
       current_date + 1, g.created_at
FROM goals g
CROSS JOIN LATERAL generate_series(1, $1::int) AS n
CROSS JOIN LATERAL (
    SELECT make_time(6 + n * 3, (floor(random() * 4) * 15)::int, 0) AS at
) AS r
WHERE NOT g.is_archived
"""

# Every user's feed: `per_user` rows (the heavy feed user `heavy`), spread over a year, a tenth
# unread; each kind with the data it carries.
NOTIFICATIONS_SQL = """
INSERT INTO notifications (id, user_id, type, title, body, data, is_read, created_at)
SELECT gen_random_uuid(), u.id, k.type, k.title, k.body, k.data, random() < 0.9,
       now() - random() * interval '365 days'
FROM users u
CROSS JOIN LATERAL generate_series(
    1, CASE WHEN u.email = $2::text THEN $3::int ELSE $1::int END
) AS n
CROSS JOIN LATERAL (
    SELECT * FROM (VALUES
        ('reminder', 'Time for your goal', 'Run a half marathon: the next stage is waiting.',
         jsonb_build_object('goal_id', gen_random_uuid(), 'stage_id', NULL,
                            'reminder_id', gen_random_uuid())),
        ('digest', 'Your day in goals', '3 goals in progress, 1 stage done yesterday.',
         jsonb_build_object('active_goals', 3)),
        ('achievement', 'Achievement unlocked', 'First steps: you completed your first stage.',
         jsonb_build_object('achievement_code', 'first_stage')),
        ('goal_completed', 'Goal completed!', 'Read 24 books this year is done. Well done!',
         jsonb_build_object('goal_id', gen_random_uuid()))
    ) AS v(type, title, body, data)
    OFFSET (n % 4) LIMIT 1
) AS k
"""


# --- habits ------------------------------------------------------------------------------------

DAILY: dict[str, str] = {"type": "daily"}
# Each habit takes one of this many check-in histories (by a hash of its id): the product's
# `summarize` runs once per history, not once per habit.
HISTORIES = 16


@dataclass(frozen=True, slots=True)
class CheckinHistory:
    days: tuple[date, ...]
    summary: habits.Summary


def checkin_histories(
    count: int, *, start: date, today: date, checkins: int, seed: int = 42
) -> list[CheckinHistory]:
    """`count` histories of a daily habit begun on `start`: `checkins` of its days up to `today`
    checked, the others missed at random, each with the Summary `habits.summarize` makes of it
    (what the habit's last check-in left on its row)."""
    rng = random.Random(seed)
    span = [start + timedelta(days=offset) for offset in range((today - start).days + 1)]
    schedule = habits.schedule_of(DAILY, start.toordinal())
    histories = []
    for _ in range(count):
        days = tuple(sorted(rng.sample(span, min(checkins, len(span)))))
        summary = habits.summarize(schedule, (day.toordinal() for day in days))
        histories.append(CheckinHistory(days, summary))
    return histories


# The goals in bench_habits become daily habits begun on $2, each with its history's summary...
HABIT_GOALS_SQL = """
UPDATE goals g
SET kind = 'habit', schedule = $1::jsonb, habit_start = $2::date,
    streak_run = h.run, streak_run_end = h.run_end, streak_longest = h.longest,
    checkin_mask = h.mask, checkin_mask_end = h.mask_end
FROM bench_habits b
JOIN unnest($3::int[], $4::int[], $5::date[], $6::int[], $7::bigint[], $8::date[])
    AS h(history, run, run_end, longest, mask, mask_end) ON h.history = b.history
WHERE g.id = b.goal_id
"""
# ... and exactly that history's check-in rows, each made on its day's evening.
HABIT_CHECKINS_SQL = """
INSERT INTO habit_checkins (goal_id, date, created_at)
SELECT b.goal_id, c.day, c.day + time '20:00'
FROM bench_habits b
JOIN unnest($1::int[], $2::date[]) AS c(history, day) ON c.history = b.history
"""


async def make_habits(
    conn: asyncpg.Connection, goal_ids_sql: str, histories: Sequence[CheckinHistory]
) -> None:
    """The goals `goal_ids_sql` selects (a query of their ids, no parameters) become daily habits
    begun on the histories' first day, each with one of `histories`: its check-ins and summary.
    In a transaction of its own: not inside the caller's, whose triggers it would switch off."""
    start = min(history.days[0] for history in histories if history.days)
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE bench_habits ON COMMIT DROP AS "
            f"SELECT id AS goal_id, abs(hashtext(id::text)) % {len(histories)} AS history "
            f"FROM ({goal_ids_sql}) AS selected"
        )
        # No row triggers: every goal's change row (the sync log) exists since its insert, and a
        # check-in would only move its version; the foreign keys hold by construction.
        await conn.execute("SET LOCAL session_replication_role = replica")
        numbers = range(len(histories))
        summaries = [history.summary for history in histories]
        await conn.execute(
            HABIT_GOALS_SQL,
            json.dumps(DAILY),
            start,
            list(numbers),
            [summary.run for summary in summaries],
            [habits.as_date(summary.run_end) for summary in summaries],
            [summary.longest for summary in summaries],
            [habits.as_bigint(summary.mask) for summary in summaries],
            [habits.as_date(summary.mask_end) for summary in summaries],
        )
        await conn.execute(
            HABIT_CHECKINS_SQL,
            [number for number in numbers for _ in histories[number].days],
            [day for history in histories for day in history.days],
        )


# Twins: for each n, `habitsN` and `plainN` with the same zone, locale and 20 goals alike in all
# but their kind: `habitsN`'s are 5-year-old daily habits, `plainN`'s plain goals.
TWIN_USERS_SQL = """
INSERT INTO users (id, email, password_hash, token_version, created_at)
SELECT gen_random_uuid(), twin || n || $3::text, $1, n % 3,
       now() - interval '6 years' + n * interval '1 second'
FROM generate_series(1, $2::int) AS n
CROSS JOIN unnest(ARRAY['habits', 'plain']) AS twin
"""
TWIN_SETTINGS_SQL = """
INSERT INTO user_settings (id, user_id, notification_frequency, timezone, locale)
SELECT gen_random_uuid(), u.id, 'daily',
       (ARRAY['UTC', 'Europe/London', 'America/New_York', 'Asia/Tokyo'])[1 + t.n % 4],
       (ARRAY['en', 'ru'])[1 + t.n % 2]
FROM users u
CROSS JOIN LATERAL (SELECT substring(u.email FROM '([0-9]+)@')::int AS n) AS t
WHERE u.email LIKE '%' || $1::text
"""
TWIN_GOALS_SQL = """
INSERT INTO goals (id, user_id, title, description, progress, stage_count, completed_stage_count,
                   is_archived, ai_status, created_at, updated_at)
SELECT gen_random_uuid(), u.id,
       ($2::text[])[1 + (t.n * 7 + g) % cardinality($2::text[])],
       ($3::text[])[1 + (t.n + g) % cardinality($3::text[])],
       0, 0, 0, false, 'idle',
       $4::date + g * interval '1 minute',
       now() - ((t.n + g) % 48) * interval '1 hour'
FROM users u
CROSS JOIN LATERAL (SELECT substring(u.email FROM '([0-9]+)@')::int AS n) AS t
CROSS JOIN generate_series(1, $5::int) AS g
WHERE u.email LIKE '%' || $1::text
"""


async def seed_habit_twins(
    conn: asyncpg.Connection, *, pairs: int, goals_per_user: int, checkins: int
) -> None:
    """`pairs` twins (HABIT_TWINS_DOMAIN): habitsN with `goals_per_user` daily habits begun 5 years
    ago with `checkins` check-ins each, plainN with as many plain goals alike in all else. Not in
    a transaction of the caller's (`make_habits` sets its own)."""
    today = datetime.now(UTC).date()
    start = today - timedelta(days=5 * 365)
    await conn.execute(TWIN_USERS_SQL, PASSWORD_HASH, pairs, HABIT_TWINS_DOMAIN)
    await conn.execute(TWIN_SETTINGS_SQL, HABIT_TWINS_DOMAIN)
    await conn.execute(
        TWIN_GOALS_SQL, HABIT_TWINS_DOMAIN, TITLES, DESCRIPTIONS, start, goals_per_user
    )
    await make_habits(
        conn,
        "SELECT g.id FROM goals g JOIN users u ON u.id = g.user_id WHERE u.email LIKE 'habits%'",
        checkin_histories(HISTORIES, start=start, today=today, checkins=checkins),
    )


def _achievements_backfill() -> list[str]:
    """The achievements migration's backfill: each user's counters from the seeded history, and
    exactly the achievements that history earns (as the live events would have awarded them)."""
    import goaltrack

    path = Path(goaltrack.__file__).parent / "migrations/versions/0006_achievements.py"
    spec = importlib.util.spec_from_file_location("bench_migration_0006", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    statements: list[str] = module.backfill_statements()
    return statements


@dataclass(frozen=True, slots=True)
class Seeded:
    users: int
    goals: int
    stages: int = 0
    attachments: int = 0
    reminders: int = 0
    notifications: int = 0
    user_achievements: int = 0
    habit_checkins: int = 0

    def describe(self) -> str:
        return ", ".join(
            f"{value:,} {name.replace('_', ' ')}" for name, value in asdict(self).items() if value
        )


def asyncpg_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def seed(
    conn: asyncpg.Connection,
    *,
    users: int,
    goals_per_user: int,
    heavy_goals: int = 0,
    details: bool = False,
    reminders_per_goal: int = 5,
    notifications_per_user: int = 90,
    heavy_notifications: int = 100_000,
    habit_twins: int = 0,
    checkins_per_habit: int = 1800,
) -> Seeded:
    """Insert `users` users with their settings and goals (and, when `heavy_goals` > 0, one more
    user, HEAVY_EMAIL, with that many active goals), then ANALYZE. Run once, on an empty database.

    With `details`: every goal's stages, attachments on a fifth of the active goals,
    `reminders_per_goal` reminders on each active goal, `notifications_per_user` notifications per
    user (`heavy_notifications` for HEAVY_EMAIL, who is then created even without heavy goals),
    achievements held by a realistic share, and the users' counters. Set-based INSERT ... SELECT
    (the rows never cross the wire): a few seconds per million rows.

    With `habit_twins`: that many pairs of twins (`seed_habit_twins`), `goals_per_user` goals each.
    """
    heavy = heavy_goals > 0 or details
    async with conn.transaction():
        await conn.execute("SELECT setseed(0.42)")
        await conn.execute(
            """
            INSERT INTO users (id, email, password_hash, token_version, created_at)
            SELECT gen_random_uuid(),
                   'user' || n || '@bench.goaltrack.example.com',
                   $1,
                   n % 3,
                   now() - interval '800 days' + n * interval '1 second'
            FROM generate_series(1, $2::int) AS n
            """,
            PASSWORD_HASH,
            users,
        )
        if heavy:
            await conn.execute(
                "INSERT INTO users (id, email, password_hash, token_version) "
                "VALUES (gen_random_uuid(), $1, $2, 4)",
                HEAVY_EMAIL,
                PASSWORD_HASH,
            )
        await conn.execute(SETTINGS_SQL)
        await conn.execute(
            GOALS_SQL, goals_per_user, TITLES, DESCRIPTIONS, HEAVY_EMAIL, heavy_goals
        )
        if details:
            await conn.execute(STAGES_SQL, TITLES, DESCRIPTIONS)
            await conn.execute(ATTACHMENTS_SQL)
            await conn.execute(REMINDERS_SQL, reminders_per_goal)
            await conn.execute(
                NOTIFICATIONS_SQL, notifications_per_user, HEAVY_EMAIL, heavy_notifications
            )
            await conn.execute(
                "UPDATE goals SET first_completed_at = completed_at WHERE completed_at IS NOT NULL"
            )
            for statement in _achievements_backfill():
                await conn.execute(statement)
    if habit_twins:
        await seed_habit_twins(
            conn, pairs=habit_twins, goals_per_user=goals_per_user, checkins=checkins_per_habit
        )
    await conn.execute("VACUUM ANALYZE")
    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM goals) AS goals,"
        " (SELECT count(*) FROM goal_stages) AS stages,"
        " (SELECT count(*) FROM goal_attachments) AS attachments,"
        " (SELECT count(*) FROM goal_reminders) AS reminders,"
        " (SELECT count(*) FROM notifications) AS notifications,"
        " (SELECT count(*) FROM user_achievements) AS user_achievements,"
        " (SELECT count(*) FROM habit_checkins) AS habit_checkins"
    )
    return Seeded(**{name: int(value) for name, value in counts.items()})


async def mint_tokens(conn: asyncpg.Connection, settings: Settings, limit: int) -> list[str]:
    """One real access token per user (the app's own `create_access_token`), each in a session
    with a live refresh token, as a login leaves it; not the heavy one."""
    rows = await conn.fetch(
        f"SELECT id, token_version FROM users WHERE deleted_at IS NULL AND {REGULAR_USERS} "
        "ORDER BY created_at LIMIT $1",
        limit,
    )
    now = datetime.now(UTC)
    sessions = [(uuid.uuid4(), uuid.UUID(str(row["id"]))) for row in rows]
    await conn.executemany(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        [
            (uuid.uuid4(), user_id, family_id, uuid.uuid4().hex * 2, now + timedelta(days=7))
            for family_id, user_id in sessions
        ],
    )
    return [
        create_access_token(settings, user_id, row["token_version"], now, session_id=family_id)
        for (family_id, user_id), row in zip(sessions, rows, strict=True)
    ]
