"""The benchmark's ceiling (bench/baseline.py) does what our routes do, or its ratios mean
nothing: for the hot reads the same JSON bytes from the same SQL; for the writes the same
response and the same number of statements in the transaction.

State is written through our API, then each request goes to both apps with the same token. The
ceiling runs in-process on the test stack's PostgreSQL, Redis and S3.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from helpers import Account, TestClock, bench_app_env, create_goal, make_image

ROOT = Path(__file__).resolve().parent.parent
# A presigned URL carries the second it was signed at: the two apps sign a moment apart.
SIGNED = re.compile(rb'"url":"[^"]*"')
# Writes stamp `updated_at` (and a new goal its ids) with their own clock.
STAMPS = re.compile(rb'"(updated_at|completed_at|created_at|id)":("[^"]*"|null)')


@pytest.fixture(scope="module")
def ceiling(app: Any) -> ModuleType:
    settings = app.state.settings
    env = bench_app_env(settings)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.syspath_prepend(str(ROOT))
        module = importlib.import_module("bench.baseline")
    return module


@pytest.fixture
async def ceiling_client(ceiling: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    async with ceiling.app.router.lifespan_context(ceiling.app):
        transport = httpx.ASGITransport(app=ceiling.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ceiling") as http:
            yield http


async def _state(client: Any, user: Account) -> dict[str, Any]:
    headers = user.headers
    # Timestamps on a whole second and a fraction of one (the JSON writes them differently); the
    # date stays today's, the ceiling's habit figures are computed on its own clock.
    clock = TestClock(datetime.now(UTC).replace(microsecond=0)).install()
    goal = await create_goal(
        client, user, title="Read 24 books — «в этом году»", deadline="2027-01-31"
    )
    clock.now += timedelta(microseconds=250_000)
    for _ in range(3):
        await create_goal(client, user, description="Small steps.")
    await create_goal(client, user, description='A "quote", a \\ backslash,\ta tab\nand a newline.')
    for schedule in ({"type": "daily"}, {"type": "times_per_week", "count": 3}):
        habit = await create_goal(client, user, title="Stretch", kind="habit", schedule=schedule)
        response = await client.post(f"/goals/{habit['id']}/checkins", json={}, headers=headers)
        assert response.status_code == 201, response.text
    stages = []
    for title in ("one", "two", "three"):
        response = await client.post(
            f"/goals/{goal['id']}/stages", json={"title": title}, headers=headers
        )
        stages.append(response.json()["id"])
    await client.put(f"/goals/{goal['id']}/stages/{stages[0]}/complete", headers=headers)
    uploaded = await client.post(
        f"/goals/{goal['id']}/attachments",
        files={"file": ("proof.png", make_image("PNG"), "image/png")},
        headers=headers,
    )
    assert uploaded.status_code == 201, uploaded.text
    for rhythm in ({"frequency_days": 1}, {"weekdays": [0, 2, 4]}):
        response = await client.post(
            f"/goals/{goal['id']}/reminders",
            json={"remind_time": "08:15", **rhythm},
            headers=headers,
        )
        assert response.status_code == 201, response.text
    await client.get("/achievements", headers=headers)  # the statistics, cached in Redis
    return {"goal": goal["id"], "stages": stages, "habit": habit["id"]}


async def test_hot_reads_send_the_same_bytes(
    client: Any, ceiling_client: httpx.AsyncClient, user: Account
) -> None:
    state = await _state(client, user)
    first = (await client.get("/goals?limit=2", headers=user.headers)).json()
    paths = [
        "/goals",
        "/goals?limit=2",
        f"/goals?limit=2&cursor={first['next_cursor']}",
        f"/goals/{state['goal']}",
        f"/goals/{state['habit']}",
        "/notifications",
        "/notifications?limit=1",
        "/achievements",
    ]
    for path in paths:
        ours = await client.get(path, headers=user.headers)
        theirs = await ceiling_client.get(path, headers=user.headers)
        assert ours.status_code == theirs.status_code == 200, (path, ours.text, theirs.text)
        assert SIGNED.sub(b"", ours.content) == SIGNED.sub(b"", theirs.content), path
    assert (
        b'"url":"http'
        in (await client.get(f"/goals/{state['goal']}", headers=user.headers)).content
    )
    assert (await ceiling_client.get("/goals")).status_code == 401


def _statements(app: Any) -> tuple[list[str], Any]:
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])

    return sent, record


async def test_writes_answer_alike_with_as_many_statements(
    client: Any, app: Any, ceiling: ModuleType, ceiling_client: httpx.AsyncClient, user: Account
) -> None:
    state = await _state(client, user)
    goal, stage = state["goal"], state["stages"][0]
    engine = app.state.engine.sync_engine
    sent, record = _statements(app)
    event.listen(engine, "before_cursor_execute", record)
    try:
        # Reopen and complete again, as the benchmark does: ours, then the ceiling.
        counts, bodies, toggles = {}, {}, {}
        for action in ("uncomplete", "complete"):
            sent.clear()
            response = await client.put(
                f"/goals/{goal}/stages/{stage}/{action}", headers=user.headers
            )
            assert response.status_code == 200, response.text
            counts[action], bodies[action], toggles[action] = len(sent), response.content, [*sent]
        for action in ("uncomplete", "complete"):
            theirs = await ceiling_client.put(
                f"/goals/{goal}/stages/{stage}/{action}", headers=user.headers
            )
            assert theirs.status_code == 200, theirs.text
            assert STAMPS.sub(b"", SIGNED.sub(b"", bodies[action])) == STAMPS.sub(
                b"", SIGNED.sub(b"", theirs.content)
            ), action
        sent.clear()
        ours = await client.post("/goals", json={"title": "One more"}, headers=user.headers)
        counts["create"], creation = len(sent), [*sent]
        theirs = await ceiling_client.post(
            "/goals", json={"title": "One more"}, headers=user.headers
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert ours.status_code == theirs.status_code == 201, theirs.text
    assert STAMPS.sub(b"", ours.content) == STAMPS.sub(b"", theirs.content)
    # Ours: the statements SQLAlchemy sends, plus the goal view on the driver (not seen by the
    # listener). The ceiling's list, in order, is its own record of what it mirrors.
    assert counts["uncomplete"] + 1 == len(ceiling.SET_STAGE_STATEMENTS)
    assert counts["complete"] + 1 == len(ceiling.SET_STAGE_STATEMENTS)
    # A toggle is one statement, and the ceiling's is that very statement.
    assert toggles["uncomplete"] == toggles["complete"] == ceiling.SET_STAGE_STATEMENTS[:-1]
    assert counts["create"] + 1 == len(ceiling.CREATE_GOAL_STATEMENTS)
    assert creation == ceiling.CREATE_GOAL_STATEMENTS[:-1]
