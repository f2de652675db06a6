"""The ceiling: Starlette + a raw asyncpg pool + orjson, doing what each benchmarked route does.

For every scenario it sends the same SQL as the app (the app's own compiled statements, see
`PreparedStatement.sql`), renders the same JSON bytes (tests/test_bench_bodies.py compares them) and
does the same token work (the app's `decode_access_token`, with its verified-token cache) — and
nothing else: no dependency injection, no middleware, no response models. The writes send the
statements the app's write sends, in one transaction, hand-written (tests/test_bench_bodies.py
counts them against the app's).

Run: `uvicorn bench.baseline:app` with the app's environment (DATABASE_URL, JWT_SECRET, REDIS_URL,
S3_*, DATABASE_READ_POOL_SIZE).
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from goaltrack.achievements import texts
from goaltrack.achievements.queries import CATALOGUE
from goaltrack.achievements.service import STATS_KEY, Stats, count_up
from goaltrack.auth.security import AccessClaims, decode_access_token
from goaltrack.config import Settings
from goaltrack.goals.queries import (
    DETAIL_FIELDS,
    GOAL_DETAIL,
    GOAL_LIST,
    GOAL_LIST_AFTER,
    as_instant,
    habit_fields,
    summary_payload,
)
from goaltrack.goals.service import CREATE_GOAL, SET_STAGE
from goaltrack.notifications.queries import FEED, FEED_AFTER
from goaltrack.notifications.queries import FIELDS as NOTIFICATION_FIELDS
from goaltrack.pagination import Cursor
from goaltrack.profile.queries import local_date
from goaltrack.storage import Storage

PAGE_SIZE = 20
MAX_LIMIT = 100
JSON = "application/json"
UNAUTHORIZED = Response(b'{"code":"not_authenticated"}', status_code=401, media_type=JSON)
NOT_FOUND = Response(b'{"code":"not_found"}', status_code=404, media_type=JSON)

settings = Settings()
state: dict[str, Any] = {}


def _json(content: Any, status_code: int = 200) -> Response:
    body = orjson.dumps(content, default=str, option=orjson.OPT_UTC_Z)
    return Response(body, status_code=status_code, media_type=JSON)


def _caller(request: Request) -> AccessClaims | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return decode_access_token(settings, token, datetime.now(UTC))


def _caller_args(caller: AccessClaims) -> dict[str, Any]:
    return {
        "user_id": caller.user_id,
        "token_version": caller.token_version,
        "session_id": caller.session_id,
    }


def _args(names: tuple[str, ...], values: dict[str, Any]) -> list[Any]:
    return [values[name] for name in names]


def _page(request: Request) -> tuple[int, Cursor | None]:
    limit = min(int(request.query_params.get("limit", PAGE_SIZE)), MAX_LIMIT)
    cursor = request.query_params.get("cursor")
    return limit, Cursor.decode(cursor) if cursor else None


def _cut(items: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    if len(items) <= limit:
        return items, None
    items = items[:limit]
    return items, Cursor(items[-1]["created_at"], items[-1]["id"]).encode()


async def _fetch(sql: str, args: list[Any]) -> list[Any]:
    pool: asyncpg.Pool = state["pool"]
    async with pool.acquire() as connection:
        rows: list[Any] = await connection.fetch(sql, *args)
    return rows


async def list_goals(request: Request) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    limit, after = _page(request)
    statement = GOAL_LIST if after is None else GOAL_LIST_AFTER
    values = {**statement.fixed, **_caller_args(caller), "archived": False, "limit": limit + 1}
    if after is not None:
        statement = GOAL_LIST_AFTER
        values |= {"after_created_at": after.created_at, "after_id": after.id}
    rows = await _fetch(statement.sql, _args(statement.names, values))
    if not rows:
        return UNAUTHORIZED
    today = local_date(rows[0]["zone"], datetime.now(UTC))
    items, next_cursor = _cut(
        [summary_payload(row, today) for row in rows if row["id"] is not None], limit
    )
    return _json({"items": items, "next_cursor": next_cursor})


async def get_goal(request: Request) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    try:
        goal_id = uuid.UUID(request.path_params["goal_id"])
    except ValueError:
        return NOT_FOUND
    values = {**GOAL_DETAIL.fixed, **_caller_args(caller), "goal_id": goal_id}
    rows = await _fetch(GOAL_DETAIL.sql, _args(GOAL_DETAIL.names, values))
    if not rows:
        return UNAUTHORIZED
    row = rows[0]
    if row["id"] is None:
        return NOT_FOUND
    return await _render_detail(row)


async def _render_detail(row: Any, status_code: int = 200) -> Response:
    storage: Storage = state["storage"]
    goal = dict(row)
    goal["stages"] = [
        {**stage, "completed_at": as_instant(stage["completed_at"])} for stage in row["stages"]
    ]
    goal["reminders"] = [
        {**item, "next_fire_at": as_instant(item["next_fire_at"])} for item in row["reminders"]
    ]
    goal["attachments"] = [
        {
            "id": item["id"],
            "file_name": item["file_name"],
            "file_type": item["file_type"],
            "size": item["size"],
            "url": await storage.presigned_get(
                item["object_key"],
                expires_in=settings.attachment_url_ttl_seconds,
                download_name=item["file_name"],
                content_type=item["file_type"],
            ),
            "content_url": f"/goals/{row['id']}/attachments/{item['id']}/content",
            "created_at": as_instant(item["created_at"]),
        }
        for item in row["attachments"]
    ]
    goal.update(habit_fields(row, local_date(row["zone"], datetime.now(UTC))))
    return _json({name: goal[name] for name in DETAIL_FIELDS}, status_code)


async def list_notifications(request: Request) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    limit, after = _page(request)
    values = {**_caller_args(caller), "limit": limit + 1}
    statement = FEED
    if after is not None:
        statement = FEED_AFTER
        values |= {"after_created_at": after.created_at, "after_id": after.id}
    rows = await _fetch(statement.sql, _args(statement.names, values))
    if not rows:
        return UNAUTHORIZED
    items, next_cursor = _cut(
        [
            {name: row[name] for name in NOTIFICATION_FIELDS}
            for row in rows
            if row["id"] is not None
        ],
        limit,
    )
    return _json(
        {"items": items, "next_cursor": next_cursor, "unread_count": rows[0]["unread_count"]}
    )


async def list_achievements(request: Request) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    values = {**CATALOGUE.fixed, **_caller_args(caller)}
    rows = await _fetch(CATALOGUE.sql, _args(CATALOGUE.names, values))
    if not rows:
        return UNAUTHORIZED
    redis: Redis = state["redis"]
    raw = await redis.get(STATS_KEY)
    stats = Stats.load(raw) if raw is not None else None
    return _json(
        {
            "items": [
                {
                    "code": row["code"],
                    "title": texts.title(row["code"], row["locale"]),
                    "description": texts.description(row["code"], row["locale"]),
                    "icon": row["icon"],
                    "earned": row["earned_at"] is not None,
                    "earned_at": row["earned_at"],
                    "percent_of_users": stats.percent(row["code"]) if stats else None,
                }
                for row in rows
                if row["code"] is not None
            ],
            "stats_available": stats is not None,
        }
    )


# --- writes: the statements the app's route sends, in one transaction ---------------------------

CALLER_SQL = """
SELECT users.id, users.email, users.password_hash, users.token_version, users.deleted_at,
       users.created_at
FROM users
WHERE users.id = $1 AND users.token_version = $2 AND users.deleted_at IS NULL
  AND EXISTS (SELECT * FROM refresh_tokens
              WHERE refresh_tokens.family_id = $3 AND refresh_tokens.revoked_at IS NULL)
"""
USER_CONTEXT_SQL = "SELECT locale FROM user_settings WHERE user_id = $1"
# The user's counters and the achievements still to earn, as GoalCreated's handler asks for them.
COUNT_UP = count_up(("goals_created",), ("goals_created", "goals_in_progress"))
IN_PROGRESS_SQL = (
    "SELECT count(*) FROM goals WHERE user_id = $1 AND is_archived IS false "
    "AND completed_at IS NULL"
)
AWARD_SQL = (
    "INSERT INTO user_achievements (user_id, achievement_id, earned_at) "
    "SELECT $1, unnest($2::uuid[]), $3 ON CONFLICT DO NOTHING RETURNING achievement_id"
)
NOTIFY_SQL = (
    "INSERT INTO notifications (user_id, type, title, body, data, is_read, id, created_at) "
    "VALUES ($1, 'achievement', $2, $3, $4, false, $5, $6)"
)
OUTBOX_SQL = (
    "INSERT INTO task_outbox (name, args, not_before, attempts, user_id, id) "
    "VALUES ('notifications.push', $1, $2, 0, $3, $4) RETURNING created_at"
)


# What each write sends between BEGIN and COMMIT on its usual path (a stage that was completed
# before; a user who holds the goal achievements already), as the app's route does: the
# statements per write request, kept in step with the app by tests/test_bench_bodies.py.
DETAIL = GOAL_DETAIL.sql
SET_STAGE_STATEMENTS = [SET_STAGE.sql, DETAIL]
MAX_GOALS_PER_USER = settings.max_goals_per_user
CREATE_GOAL_STATEMENTS = [CREATE_GOAL.sql, COUNT_UP.sql, DETAIL]


async def _detail_in(connection: asyncpg.Connection, caller: AccessClaims, goal_id: Any) -> Any:
    values = {**GOAL_DETAIL.fixed, **_caller_args(caller), "goal_id": goal_id}
    rows = await connection.fetch(GOAL_DETAIL.sql, *_args(GOAL_DETAIL.names, values))
    return rows[0]


async def _set_stage(request: Request, completed: bool) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    goal_id = uuid.UUID(request.path_params["goal_id"])
    stage_id = uuid.UUID(request.path_params["stage_id"])
    values = {
        **SET_STAGE.fixed,
        **_caller_args(caller),
        "goal_id": goal_id,
        "stage_id": stage_id,
        "completed": completed,
        "now": datetime.now(UTC),
    }
    pool: asyncpg.Pool = state["pool"]
    async with pool.acquire() as connection, connection.transaction():
        outcome = await connection.fetchrow(SET_STAGE.sql, *_args(SET_STAGE.names, values))
        if not outcome["goal_found"]:
            user = await connection.fetchrow(CALLER_SQL, *_caller_args(caller).values())
            return UNAUTHORIZED if user is None else NOT_FOUND
        if not outcome["stage_found"]:
            return NOT_FOUND
        # (A first completion or a goal reaching 100 % would go on to the achievements and the
        # reminders: the benchmark's toggles never do, in either app.)
        row = await _detail_in(connection, caller, goal_id)
    return await _render_detail(row)


async def complete_stage(request: Request) -> Response:
    return await _set_stage(request, True)


async def uncomplete_stage(request: Request) -> Response:
    return await _set_stage(request, False)


async def create_goal(request: Request) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    body = orjson.loads(await request.body())
    goal_id, now = uuid.uuid4(), datetime.now(UTC)
    pool: asyncpg.Pool = state["pool"]
    async with pool.acquire() as connection, connection.transaction():
        values = {
            **CREATE_GOAL.fixed,
            **_caller_args(caller),
            "goal_id": goal_id,
            "title": body["title"],
            "description": body.get("description"),
            "deadline": None,
            "now": now,
            "kind": "goal",
            "schedule": None,
            "is_habit": False,
            "max_goals": MAX_GOALS_PER_USER,  # the same quota check, the default cap
        }
        created = await connection.fetch(CREATE_GOAL.sql, *_args(CREATE_GOAL.names, values))
        if not created:
            return UNAUTHORIZED
        counted = {**COUNT_UP.fixed, "user_id": caller.user_id, "goals_created": 1}
        rows = await connection.fetch(COUNT_UP.sql, *_args(COUNT_UP.names, counted))
        stats = rows[0]
        reached = []
        for achievement in rows:
            if achievement["achievement_id"] is None:
                continue
            if achievement["condition"] == "goals_in_progress":
                value = await connection.fetchval(IN_PROGRESS_SQL, caller.user_id)
            else:
                value = stats[achievement["condition"]]
            if value >= achievement["threshold"]:
                reached.append(achievement)
        if reached:
            awarded = {
                row["achievement_id"]
                for row in await connection.fetch(
                    AWARD_SQL, caller.user_id, [a["achievement_id"] for a in reached], now
                )
            }
            context = await connection.fetchrow(USER_CONTEXT_SQL, caller.user_id)
            locale = context["locale"] if context else "en"
            for achievement in reached:
                if achievement["achievement_id"] in awarded:
                    notification_id = uuid.uuid4()
                    await connection.execute(
                        NOTIFY_SQL,
                        caller.user_id,
                        achievement["title"].get(locale, achievement["title"]["en"]),
                        achievement["description"].get(locale, achievement["description"]["en"]),
                        {"achievement_code": achievement["code"]},
                        notification_id,
                        now,
                    )
                    await connection.fetchval(
                        OUTBOX_SQL, [str(notification_id)], now, caller.user_id, uuid.uuid4()
                    )
        row = await _detail_in(connection, caller, goal_id)
    return await _render_detail(row, status_code=201)


async def _json_decoding(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            schema="pg_catalog",
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
        )


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    pass


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    # The app's read pool, configured alike (size, codecs, no reset query): the same pool.
    state["pool"] = await asyncpg.create_pool(
        settings.database_driver_dsn,
        min_size=0,
        max_size=settings.database_read_pool_size,
        init=_json_decoding,
        reset=_nothing_to_reset,
        server_settings={"timezone": "UTC"},
    )
    state["redis"] = Redis.from_url(settings.redis_url)
    state["storage"] = storage = Storage(settings)
    await storage.start()
    gc.freeze()  # as the app does after its start-up
    try:
        yield
    finally:
        await storage.close()
        await state["redis"].aclose()
        await state["pool"].close()


ROUTES = [
    Route("/goals", list_goals),
    Route("/goals", create_goal, methods=["POST"]),
    Route("/goals/{goal_id}", get_goal),
    Route("/goals/{goal_id}/stages/{stage_id}/complete", complete_stage, methods=["PUT"]),
    Route("/goals/{goal_id}/stages/{stage_id}/uncomplete", uncomplete_stage, methods=["PUT"]),
    Route("/notifications", list_notifications),
    Route("/achievements", list_achievements),
]

app = Starlette(routes=ROUTES, lifespan=lifespan)
