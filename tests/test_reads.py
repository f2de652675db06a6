"""The hot reads render their rows straight into JSON (goaltrack.reads.json_response); these
tests hold that body to the response model each route declares: byte for byte what FastAPI and
Pydantic would have sent."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from asyncpg.pgproto import pgproto
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import Boolean, Date, DateTime, Integer, Text, Uuid, bindparam, select
from sqlalchemy.dialects.postgresql import JSONB

from goaltrack import jsontext
from goaltrack.achievements.schemas import AchievementList
from goaltrack.auth.caller import caller_params
from goaltrack.auth.security import decode_access_token
from goaltrack.config import get_settings
from goaltrack.goals.schemas import GoalOut, GoalSummary
from goaltrack.notifications.kinds import AiFailedData, ExportReadyData, ReminderData
from goaltrack.notifications.schemas import NotificationPage
from goaltrack.notifications.service import notify
from goaltrack.pagination import ListPage
from goaltrack.reads import PoolReader, PreparedStatement, json_body
from helpers import Account, create_goal, make_image, make_pdf

# What the API stores and JSON must escape or pass through (NUL is refused at the door).
TRICKY_TEXT = 'Ünïcode "quoted" \\ back\tslash\n😀 \u2028 \x7f \x1f end'


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), datetime),  # no microseconds
        (datetime(2026, 3, 29, 1, 0, 0, 120000, tzinfo=UTC), datetime),  # trailing zeros
        (datetime(2026, 3, 29, 1, 0, 0, 1, tzinfo=timezone(timedelta(0))), datetime),
        (date(2027, 2, 28), date),
        (None, datetime | None),
        (TRICKY_TEXT, str),
        ("\x00 NUL", str),
        (pgproto.UUID(str(uuid.uuid4())), uuid.UUID),  # the type asyncpg returns
        (uuid.uuid4(), uuid.UUID),
        (33.3, float),
        (100.0, float),
        (0.0, float),
        ({"kind": "goal", "nested": [1, None, True]}, dict[str, Any]),
    ],
)
def test_json_body_matches_pydantic(value: Any, annotation: Any) -> None:
    assert json_body(value) == TypeAdapter(annotation).dump_json(value)


@pytest.mark.parametrize(
    ("value", "sql_type"),
    [
        (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), DateTime(timezone=True)),  # no microseconds
        (datetime(2026, 3, 29, 1, 0, 0, 120000, tzinfo=UTC), DateTime(timezone=True)),
        (datetime(2026, 3, 29, 1, 0, 0, 1, tzinfo=UTC), DateTime(timezone=True)),
        (datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), DateTime(timezone=True)),
        (None, DateTime(timezone=True)),
        (date(2027, 2, 28), Date()),
        (None, Date()),
        (TRICKY_TEXT, Text()),
        ("\b\f\r \x01 \x08 \x0c \x0d \x1b </script> \ud7ff \ue000 \U0010ffff", Text()),
        (None, Text()),
        (uuid.uuid4(), Uuid()),
        (0, Integer()),
        (-100, Integer()),
        (True, Boolean()),
        (False, Boolean()),
    ],
)
async def test_postgres_writes_json_text_as_our_responses_do(
    app: Any, value: Any, sql_type: Any
) -> None:
    """goaltrack.jsontext: the list's members PostgreSQL writes are the bytes json_body (and so
    the response models) would write for the same value."""
    statement = PreparedStatement(select(jsontext.value(bindparam("value", type_=sql_type))))
    async with app.state.read_pool.acquire() as connection:
        written = await connection.fetchval(statement.sql, *statement.args({"value": value}))
    assert written.encode() == json_body(value)


@pytest.mark.parametrize(
    "value",
    [
        {"text": TRICKY_TEXT, "count": -3, "none": None, "yes": True, "no": False, "a": ""},
        {"goal_id": str(uuid.uuid4()), "expires_at": "2026-12-07T10:00:00.5Z"},
        {"text": "\b\f\r \x01 \ud7ff \ue000 \U0010ffff </script>"},
        {},
    ],
)
async def test_postgres_writes_a_jsonb_objects_members_as_our_responses_do(
    app: Any, value: Any
) -> None:
    """jsontext.jsonb_members: the members asked for, in the order asked (not jsonb's, which
    keeps `a` and `yes` before `text`), each written as orjson writes it; a missing one null."""
    names = ("text", "goal_id", "count", "none", "yes", "no", "a", "expires_at", "missing")
    stored = bindparam("value", type_=JSONB)
    statement = PreparedStatement(select(jsontext.jsonb_members(stored, names)))
    async with app.state.read_pool.acquire() as connection:
        written = await connection.fetchval(statement.sql, *statement.args({"value": value}))
    assert written.encode() == json_body({name: value.get(name) for name in names})


def _same_as_model(response: Any, model: type[BaseModel]) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert (
        response.content == model.model_validate_json(response.content).model_dump_json().encode()
    )


async def test_every_hot_read_sends_what_its_model_would(
    app: Any, client: Any, user: Account
) -> None:
    headers = user.headers
    goal = await create_goal(client, user, title=TRICKY_TEXT, deadline="2027-02-28")
    await create_goal(client, user, title="no description", description=None)
    archived = await create_goal(client, user, title="put away")
    assert (
        await client.put(f"/goals/{archived['id']}/archive", headers=headers)
    ).status_code == 200
    stage_ids = []
    for title in ("first", TRICKY_TEXT):
        stage = await client.post(
            f"/goals/{goal['id']}/stages",
            json={"title": title, "description": TRICKY_TEXT},
            headers=headers,
        )
        assert stage.status_code == 201, stage.text
        stage_ids.append(stage.json()["id"])
    for name, data, claimed in (
        ("proof 😀.png", make_image("PNG"), "image/png"),
        ("report.pdf", make_pdf(), "application/pdf"),
    ):
        uploaded = await client.post(
            f"/goals/{goal['id']}/attachments",
            files={"file": (name, data, claimed)},
            headers=headers,
        )
        assert uploaded.status_code == 201, uploaded.text
    reminder = await client.post(
        f"/goals/{goal['id']}/reminders",
        json={"remind_time": "07:30", "frequency_days": 2},
        headers=headers,
    )
    assert reminder.status_code == 201, reminder.text
    # Completing every stage completes the goal: notifications and achievements to list.
    for stage_id in stage_ids:
        done = await client.put(f"/goals/{goal['id']}/stages/{stage_id}/complete", headers=headers)
        assert done.status_code == 200, done.text

    detail = await client.get(f"/goals/{goal['id']}", headers=headers)
    _same_as_model(detail, GoalOut)
    body = detail.json()
    assert body["progress"] == 100
    assert [len(body[key]) for key in ("stages", "attachments", "reminders")] == [2, 2, 1]

    # A habit among the listed goals: its figures follow the columns PostgreSQL wrote.
    habit = await create_goal(
        client, user, title="Stretch", kind="habit", schedule={"type": "weekdays", "days": [0, 3]}
    )
    checked = await client.post(f"/goals/{habit['id']}/checkins", json={}, headers=headers)
    assert checked.status_code == 201, checked.text
    listed = await client.get("/goals", headers=headers)
    _same_as_model(listed, ListPage[GoalSummary])
    assert listed.json()["items"][0]["schedule"] == {"type": "weekdays", "days": [0, 3]}
    assert listed.json()["items"][0]["streak"]["longest"] == 1
    _same_as_model(await client.get("/goals/archived", headers=headers), ListPage[GoalSummary])
    first = await client.get("/goals?limit=1", headers=headers)
    _same_as_model(first, ListPage[GoalSummary])
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    _same_as_model(
        await client.get(f"/goals?limit=1&cursor={cursor}", headers=headers), ListPage[GoalSummary]
    )

    # Kinds with several members, which jsonb keeps in another order than their models'.
    claims = decode_access_token(app.state.settings, user.access_token, datetime.now(UTC))
    assert claims is not None
    async with app.state.sessionmaker() as session, session.begin():
        for data in (
            AiFailedData(goal_id=uuid.UUID(goal["id"]), reason=TRICKY_TEXT),
            ExportReadyData(
                export_id=uuid.uuid4(),
                url="/account/exports/1",
                expires_at=datetime(2026, 12, 8, 9, 30, 0, 250000, tzinfo=UTC),
            ),
            ReminderData(goal_id=uuid.UUID(goal["id"]), stage_id=None, reminder_id=uuid.uuid4()),
        ):
            await notify(
                session,
                user_id=claims.user_id,
                data=data,
                title=TRICKY_TEXT,
                body=TRICKY_TEXT,
                now=datetime.now(UTC),
            )
    feed = await client.get("/notifications", headers=headers)
    _same_as_model(feed, NotificationPage)
    assert {item["type"] for item in feed.json()["items"]} >= {"ai_failed", "export_ready"}
    assert feed.json()["unread_count"] >= 2  # the goal's completion and its achievements

    achievements = await client.get("/achievements", headers=headers)
    _same_as_model(achievements, AchievementList)
    listed = achievements.json()
    assert listed["stats_available"] is True
    earned = {item["code"] for item in listed["items"] if item["earned"]}
    assert "first_goal" in earned

    # FastAPI's own path (taken while overrides are in use, or for a CORS request) sends the same.
    paths = ["/goals", "/goals/archived", "/goals?limit=1", "/notifications", "/achievements"]
    hot = [(await client.get(path, headers=headers)).content for path in paths]
    app.dependency_overrides[_unused_dependency] = _unused_dependency
    try:
        ordinary = [await client.get(path, headers=headers) for path in paths]
    finally:
        app.dependency_overrides.clear()
    assert [response.status_code for response in ordinary] == [200] * len(paths)
    assert [response.content for response in ordinary] == hot


def _unused_dependency() -> None:
    """Overridden only to send requests down FastAPI's own path (goaltrack.hotpath)."""


async def test_the_feeds_unread_count_runs_once_on_its_partial_index(
    app: Any, user: Account
) -> None:
    """The count was once correlated (run for every row of the page) and written `is_read IS
    false`, which the partial index `WHERE NOT is_read` cannot serve: 47 ms for a user with
    10,000 notifications instead of 0.3 ms (bench/). Planned with sequential scans off, so a
    tiny test table cannot hide an index the predicate does not fit."""
    from goaltrack.notifications.queries import FEED

    claims = decode_access_token(app.state.settings, user.access_token, datetime.now(UTC))
    assert claims is not None
    values = {**caller_params(claims), "limit": 21}
    async with app.state.read_pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in await connection.fetch(
                "EXPLAIN " + FEED.sql, *(values[name] for name in FEED.names)
            )
        )
    assert "ix_notifications_user_id_unread" in plan, plan
    assert "SubPlan" not in plan, plan  # an InitPlan: once per request


async def test_hot_reads_take_the_pools_connections_in_the_order_they_asked() -> None:
    """PoolReader: first come, first served. asyncpg's pool alone hands a connection it gets back
    to whichever read asks next, before the waiter woken for it runs: under a steady stream of
    new reads some waiters were passed over again and again (the feed's p99)."""
    # A pool of its own, one connection open from the start and no reset on release: built by
    # create_read_pool (lazy connections, its reset function) this small stream of reads did
    # not make asyncpg's pool pass a waiter over, so it could not tell the two apart.
    pool = await asyncpg.create_pool(
        get_settings().database_driver_dsn, min_size=1, max_size=1, reset=None
    )
    reader = PoolReader(pool)
    statement = PreparedStatement(select(bindparam("n", type_=Integer())))
    served: list[int] = []

    async def read(n: int) -> None:
        rows = await reader.fetch(statement, {"n": n})
        served.append(rows[0][0])

    try:
        reads = []
        for n in range(60):  # a new read at every turn of the loop, as requests arrive
            reads.append(asyncio.create_task(read(n)))
            await asyncio.sleep(0)
        await asyncio.gather(*reads)
    finally:
        await pool.close()
    assert served == sorted(served)
