"""Realistic data, fast: set-based INSERT ... SELECT generate_series, then ANALYZE.

Every user has a settings row, `goals_per_user` active goals and a tenth as many archived ones
(optionally one heavy user has many more, for the query plans of deep pages),
with titles and descriptions of varied length, stage counts and progress that agree, some
deadlines and completions, and creation times spread over two years.
"""

from __future__ import annotations

import importlib.util
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from goaltrack.auth.security import create_access_token
from goaltrack.config import Settings

# Nobody logs in during the benchmark: a well-formed bcrypt string is all the column needs.
HEAVY_EMAIL = "heavy@bench.goaltrack.example.com"
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
) -> Seeded:
    """Insert `users` users with their settings and goals (and, when `heavy_goals` > 0, one more
    user, HEAVY_EMAIL, with that many active goals), then ANALYZE. Run once, on an empty database.

    With `details`: every goal's stages, attachments on a fifth of the active goals,
    `reminders_per_goal` reminders on each active goal, `notifications_per_user` notifications per
    user (`heavy_notifications` for HEAVY_EMAIL, who is then created even without heavy goals),
    achievements held by a realistic share, and the users' counters. Set-based INSERT ... SELECT
    (the rows never cross the wire): a few seconds per million rows.
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
    await conn.execute("VACUUM ANALYZE")
    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM goals) AS goals,"
        " (SELECT count(*) FROM goal_stages) AS stages,"
        " (SELECT count(*) FROM goal_attachments) AS attachments,"
        " (SELECT count(*) FROM goal_reminders) AS reminders,"
        " (SELECT count(*) FROM notifications) AS notifications,"
        " (SELECT count(*) FROM user_achievements) AS user_achievements"
    )
    return Seeded(**{name: int(value) for name, value in counts.items()})


async def mint_tokens(conn: asyncpg.Connection, settings: Settings, limit: int) -> list[str]:
    """One real access token per user (the app's own `create_access_token`), each in a session
    with a live refresh token, as a login leaves it; not the heavy one."""
    rows = await conn.fetch(
        "SELECT id, token_version FROM users WHERE deleted_at IS NULL AND email <> $1 "
        "ORDER BY created_at LIMIT $2",
        HEAVY_EMAIL,
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
