"""Realistic data, fast: set-based INSERT ... SELECT generate_series, then ANALYZE.

Every user has a settings row, `goals_per_user` active goals and a tenth as many archived ones
(optionally one heavy user has many more, for the query plans of deep pages),
with titles and descriptions of varied length, stage counts and progress that agree, some
deadlines and completions, and creation times spread over two years.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
           floor(random() * 9)::int AS stages,
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


@dataclass(frozen=True, slots=True)
class Seeded:
    users: int
    goals: int


def asyncpg_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def seed(
    conn: asyncpg.Connection, *, users: int, goals_per_user: int, heavy_goals: int = 0
) -> Seeded:
    """Insert `users` users with their settings and goals (and, when `heavy_goals` > 0, one more
    user, HEAVY_EMAIL, with that many active goals), then ANALYZE. Run once, on an empty database.
    """
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
        if heavy_goals:
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
    await conn.execute("ANALYZE")
    total_users = await conn.fetchval("SELECT count(*) FROM users")
    total_goals = await conn.fetchval("SELECT count(*) FROM goals")
    return Seeded(users=int(total_users), goals=int(total_goals))


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
