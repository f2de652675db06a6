"""The ceiling: the best app that sends our SQL. Starlette + raw asyncpg + orjson, with
PostgreSQL writing the JSON.

For every hot read it runs the app's own compiled statement (`PreparedStatement.sql`): as it is
where the statement writes its rows' JSON itself (the goal list's, the feed's), otherwise as a
subquery whose outer SELECT only formats: each row's JSON text is built by PostgreSQL (uuids and
numbers as PostgreSQL writes them, timestamps formatted in SQL as our responses write them, a
goal's stages and reminders reformatted from the statement's own JSON) and passed through with
`orjson.Fragment`; Python adds only what SQL cannot do: a habit's figures on the user's date,
presigned attachment URLs, the achievements' shares from Redis. Same rows, same plans, same
bytes (tests/test_bench_bodies.py compares them), none of our rendering costs. The same token
work (the app's `decode_access_token`, with its verified-token cache), and nothing else: no
dependency injection, no middleware, no response models. The writes send the statements the
app's write sends, in one transaction, hand-written (tests/test_bench_bodies.py counts them
against the app's), on a pool the size of the app's write pool.

Run: `uvicorn bench.baseline:app` with the app's environment (DATABASE_URL, JWT_SECRET, REDIS_URL,
S3_*, DATABASE_READ_POOL_SIZE, DATABASE_POOL_SIZE).
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from sqlalchemy import DateTime
from sqlalchemy.dialects.postgresql import JSONB
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from goaltrack.achievements import texts
from goaltrack.achievements.queries import CATALOGUE
from goaltrack.achievements.service import STATS_KEY, Stats, count_up
from goaltrack.auth.security import AccessClaims, decode_access_token
from goaltrack.config import Settings
from goaltrack.goals.models import Goal
from goaltrack.goals.queries import (
    DETAIL_FIELDS,
    GOAL_DETAIL,
    GOAL_LIST,
    GOAL_LIST_AFTER,
    NO_HABIT,
    ROW_SUMMARY_FIELDS,
    as_instant,
    habit_fields,
    summaries,
)
from goaltrack.goals.service import CREATE_GOAL, SET_STAGE
from goaltrack.notifications.queries import FEED, FEED_AFTER
from goaltrack.pagination import Cursor
from goaltrack.profile.queries import local_date
from goaltrack.reads import PreparedStatement
from goaltrack.storage import Storage

PAGE_SIZE = 20
MAX_LIMIT = 100
JSON = "application/json"
UNAUTHORIZED = Response(b'{"code":"not_authenticated"}', status_code=401, media_type=JSON)
NOT_FOUND = Response(b'{"code":"not_found"}', status_code=404, media_type=JSON)

settings = Settings()
state: dict[str, Any] = {}


# --- JSON text written by PostgreSQL ----------------------------------------------------------
# Each function returns a SQL expression whose value is JSON text exactly as our responses
# write it (orjson: compact, UTF-8, UTC as `Z`).


def _value(expression: str) -> str:
    """A text, number, boolean, date or uuid (PostgreSQL escapes strings as orjson does)."""
    return f"coalesce(to_json({expression})::text, 'null')"


def _instant(expression: str) -> str:
    """A timestamptz in UTC, its microseconds only when it has any (as orjson writes it)."""
    utc = f"({expression}) AT TIME ZONE 'UTC'"
    return (
        f"""coalesce('"' || to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS') || CASE WHEN """
        f"date_trunc('second', {expression}) = {expression} THEN '' "
        f"""ELSE to_char({utc}, '.US') END || 'Z"', 'null')"""
    )


def _compact(expression: str, *, jsonb: bool, instants: Iterable[str] = ()) -> str:
    """A flat JSON object without the spaces PostgreSQL puts in (and the `instants` among its
    string members as timestamps): a json value keeps its members' order, a jsonb value the
    order it stores them in, which is the order our app reads them back in."""
    each = "jsonb_each" if jsonb else "json_each"
    names = ", ".join(f"'{name}'" for name in instants) or "NULL"
    # A string member's text: `#>>` with the empty path unquotes a scalar.
    instant = _instant("(m.value #>> '{}')::timestamptz")
    member = (
        f"CASE WHEN m.key IN ({names}) AND m.value::text <> 'null' THEN {instant} "
        "ELSE m.value::text END"
    )
    return (
        f"CASE WHEN {expression} IS NULL THEN 'null' ELSE '{{' || coalesce((SELECT string_agg("
        f"to_json(m.key)::text || ':' || {member}, ',' ORDER BY m.n) FROM {each}({expression}) "
        "WITH ORDINALITY AS m(key, value, n)), '') || '}' END"
    )


def _array(expression: str, *, instants: Iterable[str]) -> str:
    """A JSON array of flat objects (`json_agg` of a goal's children), each `_compact`."""
    element = _compact("e.value", jsonb=False, instants=instants)
    return (
        f"'[' || coalesce((SELECT string_agg({element}, ',' ORDER BY e.n) "
        f"FROM json_array_elements({expression}) WITH ORDINALITY AS e(value, n)), '') || ']'"
    )


def _members(table: Any, alias: str, names: Iterable[str]) -> str:
    """`"name":value,...` of a row's columns, each written as its column's type asks."""
    parts = []
    for name in names:
        column_type = table.c[name].type
        expression = f"{alias}.{name}"
        if isinstance(column_type, DateTime):
            value = _instant(expression)
        elif isinstance(column_type, JSONB):
            value = _compact(expression, jsonb=True)
        else:
            value = _value(expression)
        parts.append(f"""'"{name}":' || {value}""")
    return " || ',' || ".join(parts)


def _formatted(statement: PreparedStatement, columns: str) -> str:
    """The app's statement, its rows formatted by an outer SELECT (a subquery scan keeps their
    order)."""
    return f"SELECT {columns} FROM ({statement.sql}) AS q"


# A goal's members up to `kind`, as an unclosed object: its habit figures follow (Python).
GOAL_HEAD = "'{' || " + _members(Goal.__table__, "q", ROW_SUMMARY_FIELDS) + " AS head"
CHILD_INSTANTS = ("completed_at", "next_fire_at", "created_at")
DETAIL_SQL = _formatted(
    GOAL_DETAIL,
    f"q.zone, q.id, q.habit, q.attachments, {GOAL_HEAD}, "
    f"{_array('q.stages', instants=CHILD_INSTANTS)} AS stages, "
    f"{_array('q.reminders', instants=CHILD_INSTANTS)} AS reminders, "
    f"{_value('q.ai_error')} AS ai_error",
)
# An achievement up to `earned_at`, unclosed: its share of users follows (Redis, Python).
# An achievement's members from `icon` on, unbraced: its code, title and description (the
# message catalogue's, by code and locale) go before them, its share of users (Redis) after.
CATALOGUE_SQL = _formatted(
    CATALOGUE,
    "q.code, q.locale, "
    + " || ',' || ".join(
        [
            f"""'"icon":' || {_value("q.icon")}""",
            f"""'"earned":' || {_value("q.earned_at IS NOT NULL")}""",
            f"""'"earned_at":' || {_instant("q.earned_at")}""",
        ]
    )
    + " AS tail",
)

# A plain goal's habit members; the detail's members in the order the ceiling lays them out.
PLAIN_HABIT = orjson.dumps(NO_HABIT)[1:-1]
DETAIL_LAYOUT = (*ROW_SUMMARY_FIELDS, *NO_HABIT, "stages", "attachments", "reminders", "ai_error")
if DETAIL_LAYOUT != DETAIL_FIELDS:
    raise RuntimeError(f"GoalOut's fields are now {DETAIL_FIELDS}: lay out the ceiling's anew")


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


def _args(statement: PreparedStatement, values: dict[str, Any]) -> list[Any]:
    arguments: list[Any] = statement.args(values)
    return arguments


def _page(request: Request) -> tuple[int, Cursor | None]:
    limit = min(int(request.query_params.get("limit", PAGE_SIZE)), MAX_LIMIT)
    cursor = request.query_params.get("cursor")
    return limit, Cursor.decode(cursor) if cursor else None


def _cut(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, Cursor(rows[-1]["created_at"], rows[-1]["id"]).encode()


def _habit(row: Any) -> bytes:
    """A goal's habit members (those of NO_HABIT), unbraced."""
    if row["habit"] is None:
        return PLAIN_HABIT
    today = local_date(row["zone"], datetime.now(UTC))
    return orjson.dumps(habit_fields(row, today))[1:-1]


async def _fetch(sql: str, args: list[Any]) -> list[Any]:
    # First come, first served, as our PoolReader takes them (asyncpg's pool alone lets a new
    # read take a connection from the waiter woken for it): the best app does it too.
    pool: asyncpg.Pool = state["pool"]
    async with state["turns"], pool.acquire() as connection:
        rows: list[Any] = await connection.fetch(sql, *args)
    return rows


def _response(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type=JSON)


async def list_goals(request: Request) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    limit, after = _page(request)
    values = {**_caller_args(caller), "archived": False, "limit": limit + 1}
    # Our list statement already writes each goal's JSON (goaltrack.jsontext): the same SQL.
    statement = GOAL_LIST
    if after is not None:
        statement = GOAL_LIST_AFTER
        values |= {"after_created_at": after.created_at, "after_id": after.id}
    rows = await _fetch(statement.sql, _args(statement, values))
    if not rows:
        return UNAUTHORIZED
    page, next_cursor = _cut([row for row in rows if row["id"] is not None], limit)
    today = local_date(rows[0]["zone"], datetime.now(UTC))
    items = summaries(page, today)
    return _response(orjson.dumps({"items": items, "next_cursor": next_cursor}))


async def get_goal(request: Request) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    try:
        goal_id = uuid.UUID(request.path_params["goal_id"])
    except ValueError:
        return NOT_FOUND
    rows = await _fetch(
        DETAIL_SQL, _args(GOAL_DETAIL, {**_caller_args(caller), "goal_id": goal_id})
    )
    if not rows:
        return UNAUTHORIZED
    row = rows[0]
    if row["id"] is None:
        return NOT_FOUND
    return await _render_detail(row)


async def _render_detail(row: Any, status_code: int = 200) -> Response:
    """A goal's row of DETAIL_SQL: PostgreSQL's JSON, with its habit figures and its
    attachments (presigned URLs) in between."""
    storage: Storage = state["storage"]
    attachments = [
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
    body = b"".join(
        (
            row["head"].encode(),
            b",",
            _habit(row),
            b',"stages":',
            row["stages"].encode(),
            b',"attachments":',
            orjson.dumps(attachments, option=orjson.OPT_UTC_Z),
            b',"reminders":',
            row["reminders"].encode(),
            b',"ai_error":',
            row["ai_error"].encode(),
            b"}",
        )
    )
    return _response(body, status_code)


async def list_notifications(request: Request) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    limit, after = _page(request)
    values = {**_caller_args(caller), "limit": limit + 1}
    # Our statement writes each notification's JSON itself: the ceiling runs it as it is.
    statement = FEED
    if after is not None:
        statement = FEED_AFTER
        values |= {"after_created_at": after.created_at, "after_id": after.id}
    rows = await _fetch(statement.sql, _args(statement, values))
    if not rows:
        return UNAUTHORIZED
    page, next_cursor = _cut([row for row in rows if row["id"] is not None], limit)
    return _response(
        orjson.dumps(
            {
                "items": [orjson.Fragment(row["item"]) for row in page],
                "next_cursor": next_cursor,
                "unread_count": rows[0]["unread_count"],
            }
        )
    )


async def list_achievements(request: Request) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    rows = await _fetch(CATALOGUE_SQL, _args(CATALOGUE, _caller_args(caller)))
    if not rows:
        return UNAUTHORIZED
    redis: Redis = state["redis"]
    raw = await redis.get(STATS_KEY)
    stats = Stats.load(raw) if raw is not None else None
    items = [
        orjson.Fragment(
            b"".join(
                (
                    orjson.dumps(
                        {
                            "code": row["code"],
                            "title": texts.title(row["code"], row["locale"]),
                            "description": texts.description(row["code"], row["locale"]),
                        }
                    )[:-1],
                    b",",
                    row["tail"].encode(),
                    b',"percent_of_users":',
                    orjson.dumps(stats.percent(row["code"])) if stats else b"null",
                    b"}",
                )
            )
        )
        for row in rows
        if row["code"] is not None
    ]
    return _response(orjson.dumps({"items": items, "stats_available": stats is not None}))


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
DETAIL = DETAIL_SQL
SET_STAGE_STATEMENTS = [SET_STAGE.sql, DETAIL]
MAX_GOALS_PER_USER = settings.max_goals_per_user
CREATE_GOAL_STATEMENTS = [CREATE_GOAL.sql, COUNT_UP.sql, DETAIL]


async def _detail_in(connection: asyncpg.Connection, caller: AccessClaims, goal_id: Any) -> Any:
    values = {**_caller_args(caller), "goal_id": goal_id}
    rows = await connection.fetch(DETAIL_SQL, *_args(GOAL_DETAIL, values))
    return rows[0]


async def _set_stage(request: Request, completed: bool) -> Response:
    caller = _caller(request)
    if caller is None:
        return UNAUTHORIZED
    goal_id = uuid.UUID(request.path_params["goal_id"])
    stage_id = uuid.UUID(request.path_params["stage_id"])
    values = {
        **_caller_args(caller),
        "goal_id": goal_id,
        "stage_id": stage_id,
        "completed": completed,
        "now": datetime.now(UTC),
    }
    pool: asyncpg.Pool = state["write_pool"]
    async with pool.acquire() as connection, connection.transaction():
        outcome = await connection.fetchrow(SET_STAGE.sql, *_args(SET_STAGE, values))
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
    pool: asyncpg.Pool = state["write_pool"]
    async with pool.acquire() as connection, connection.transaction():
        values = {
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
        created = await connection.fetch(CREATE_GOAL.sql, *_args(CREATE_GOAL, values))
        if not created:
            return UNAUTHORIZED
        counted = {"user_id": caller.user_id, "goals_created": 1}
        rows = await connection.fetch(COUNT_UP.sql, *_args(COUNT_UP, counted))
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


def _pool(size: int) -> Any:
    return asyncpg.create_pool(
        settings.database_driver_dsn,
        min_size=0,
        max_size=size,
        init=_json_decoding,
        reset=_nothing_to_reset,
        server_settings={"timezone": "UTC"},
    )


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    # The app's pools, configured alike (sizes, codecs, no reset query): the read pool for the
    # hot reads, a pool the size of the engine's (DATABASE_POOL_SIZE) for the writes.
    state["pool"] = await _pool(settings.database_read_pool_size)
    state["turns"] = asyncio.Semaphore(settings.database_read_pool_size)
    state["write_pool"] = await _pool(settings.database_pool_size)
    state["redis"] = Redis.from_url(settings.redis_url)
    state["storage"] = storage = Storage(settings)
    await storage.start()
    gc.freeze()  # as the app does after its start-up
    try:
        yield
    finally:
        await storage.close()
        await state["redis"].aclose()
        await state["write_pool"].close()
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
