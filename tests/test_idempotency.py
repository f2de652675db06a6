"""Idempotency keys on every authenticated POST (goaltrack.idempotency), against the real
PostgreSQL, S3 and worker: a retry with the same key gets the first answer and runs nothing
again, whatever it races with; another request under the key is a 422, one in flight a 409."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from celery.signals import before_task_publish
from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security.base import SecurityBase
from sqlalchemy import func, select, text

from goaltrack.account.models import DataExport
from goaltrack.achievements.models import UserAchievement
from goaltrack.ai.models import AiRun
from goaltrack.auth.caller import AccessClaimsDep, get_access_claims
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.clock import Now
from goaltrack.config import get_settings
from goaltrack.db import KEEP_OPEN, SessionDep, statements_done
from goaltrack.defer import defer
from goaltrack.goals import service as goals
from goaltrack.goals.errors import StageLimit
from goaltrack.goals.models import Goal, GoalAttachment, GoalReminder, GoalStage
from goaltrack.goals.schemas import GoalCreate
from goaltrack.idempotency import (
    IDEMPOTENCY_KEY,
    REPLAYED,
    IdempotencyKey,
    IdempotentRouteBase,
    dependency_calls,
    is_claim,
)
from goaltrack.main import create_app
from goaltrack.notifications.models import Notification
from goaltrack.worker.outbox import OutboxTask
from helpers import Account, assert_problem, create_goal, make_image, wait_until

PNG = make_image("PNG")
JPEG = make_image("JPEG")


def keyed(account: Account, key: str) -> dict[str, str]:
    return {**account.headers, IDEMPOTENCY_KEY: key}


async def count(app: Any, model: Any, *where: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def assert_replay_of(retry: httpx.Response, first: httpx.Response) -> None:
    assert retry.status_code == first.status_code, retry.text
    assert retry.headers[REPLAYED] == "true"
    assert REPLAYED not in first.headers
    assert retry.content == first.content
    for header in ("content-type", "location", "etag"):
        assert retry.headers.get(header) == first.headers.get(header), header


@pytest.fixture
def published() -> Iterator[list[str]]:
    """The names of the tasks published (by the API or the worker) during the test."""
    names: list[str] = []

    def record(sender: str | None = None, **_: Any) -> None:
        names.append(str(sender))

    before_task_publish.connect(record, weak=False)
    yield names
    before_task_publish.disconnect(record)


# --- replays -----------------------------------------------------------------------------------


async def test_a_retry_gets_the_first_answer_and_runs_nothing(
    client: Any, app: Any, user: Account
) -> None:
    headers = keyed(user, "create-goal-1")
    first = await client.post("/goals", json={"title": "Run", "description": "5k"}, headers=headers)
    assert first.status_code == 201, first.text
    # The same object written otherwise (key order, spaces) is the same content.
    retry = await client.post(
        "/goals",
        content=b'{ "description": "5k",\n  "title": "Run" }',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert_replay_of(retry, first)
    assert await count(app, Goal) == 1


async def test_eight_concurrent_retries_run_once(
    client: Any, app: Any, user: Account, published: list[str]
) -> None:
    headers = keyed(user, str(uuid.uuid4()))
    responses = await asyncio.gather(
        *(client.post("/goals", json={"title": "Once"}, headers=headers) for _ in range(8))
    )
    [ran] = [r for r in responses if r.status_code == 201 and REPLAYED not in r.headers]
    for response in responses:
        if response is ran:
            continue
        if response.status_code == 409:
            assert_problem(response, 409, "idempotency_in_progress")
            assert response.headers["Retry-After"] == "1"
        else:
            assert_replay_of(response, ran)
    assert_replay_of(await client.post("/goals", json={"title": "Once"}, headers=headers), ran)
    assert await count(app, Goal) == 1
    # The goal's side effects, once: the first-goal award, its notification and its push.
    assert await count(app, UserAchievement) == 1
    assert await count(app, Notification) == 1
    assert published.count("notifications.push") == 1


async def test_a_key_reused_for_another_request_is_422(
    client: Any, app: Any, user: Account
) -> None:
    headers = keyed(user, "reused")
    goal = await client.post("/goals", json={"title": "A"}, headers=headers)
    assert goal.status_code == 201
    body = assert_problem(
        await client.post("/goals", json={"title": "B"}, headers=headers),
        422,
        "idempotency_key_reused",
    )
    assert body["errors"][0]["loc"] == ["header", IDEMPOTENCY_KEY]
    assert_problem(  # another path
        await client.post(
            f"/goals/{goal.json()['id']}/stages", json={"title": "A"}, headers=headers
        ),
        422,
        "idempotency_key_reused",
    )
    assert_problem(  # another query
        await client.post("/goals?x=1", json={"title": "A"}, headers=headers),
        422,
        "idempotency_key_reused",
    )
    assert_problem(  # no body at all
        await client.post("/goals", headers=headers), 422, "idempotency_key_reused"
    )
    assert (await count(app, Goal), await count(app, GoalStage)) == (1, 0)


async def test_a_malformed_key_is_400_and_runs_nothing(
    client: Any, app: Any, user: Account
) -> None:
    malformed: list[Any] = [
        "",
        "x" * 256,
        "ключ".encode(),  # not ASCII
        "tab\there",
        "del\x7f",
        "with space",
    ]
    for key in malformed:
        response = await client.post(
            "/goals", json={"title": "No"}, headers={**user.headers, IDEMPOTENCY_KEY: key}
        )
        assert_problem(response, 400, "invalid_idempotency_key")
    twice = await client.post(
        "/goals",
        json={"title": "No"},
        headers=[*user.headers.items(), (IDEMPOTENCY_KEY, "a"), (IDEMPOTENCY_KEY, "b")],
    )
    assert_problem(twice, 400, "invalid_idempotency_key")
    assert await count(app, Goal) == 0
    longest = await client.post(
        "/goals", json={"title": "Yes"}, headers=keyed(user, "~!" * 127 + "z")
    )
    assert longest.status_code == 201, longest.text


async def test_keys_are_the_callers(
    client: Any, app: Any, user: Account, other_user: Account
) -> None:
    mine = await client.post("/goals", json={"title": "Same"}, headers=keyed(user, "shared"))
    theirs = await client.post(
        "/goals", json={"title": "Same"}, headers=keyed(other_user, "shared")
    )
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert REPLAYED not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert await count(app, Goal) == 2


async def test_a_revoked_token_gets_401_not_the_stored_answer(client: Any, user: Account) -> None:
    first = await client.post("/goals", json={"title": "Mine"}, headers=keyed(user, "k"))
    assert first.status_code == 201
    logout = await client.post("/auth/logout", json={"refresh_token": user.refresh_token})
    assert logout.status_code == 204
    retry = await client.post("/goals", json={"title": "Mine"}, headers=keyed(user, "k"))
    assert_problem(retry, 401, "not_authenticated")
    assert "Mine" not in retry.text


# --- uploads -----------------------------------------------------------------------------------


def multipart(name: str, data: bytes, boundary: str) -> tuple[bytes, dict[str, str]]:
    """One file part, framed by `boundary` (a client's retry frames it with another)."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def test_a_retried_upload_stores_one_object(client: Any, app: Any, user: Account) -> None:
    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    url = f"/goals/{goal_id}/attachments"
    headers = keyed(user, "upload-1")

    async def send(name: str, data: bytes, boundary: str) -> httpx.Response:
        body, content_type = multipart(name, data, boundary)
        response: httpx.Response = await client.post(
            url, content=body, headers={**headers, **content_type}
        )
        return response

    first = await send("proof.png", PNG, "first-attempt")
    assert first.status_code == 201, first.text
    assert_replay_of(await send("proof.png", PNG, "the-retry"), first)
    for name, data in (("proof.png", JPEG), ("other.png", PNG)):
        assert_problem(await send(name, data, "x"), 422, "idempotency_key_reused")
    [row] = list(await _rows(app, GoalAttachment))
    assert await app.state.storage.list_keys(f"{row.user_id}/{goal_id}/") == [row.object_key]


async def _rows(app: Any, model: Any) -> Any:
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(select(model)))


async def test_keyed_uploads_hold_one_connection_at_a_time(user: Account) -> None:
    """A keyed upload claims its key (the request's connection) after its intent has committed
    on a short connection of its own: with a pool of 2, four keyed uploads at once all succeed
    (claimed first, each would hold one connection and wait for a second)."""
    app = create_app(get_settings().model_copy(update={"database_pool_size": 2}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            goal_id = (await create_goal(client, user, title="Proof"))["id"]
            responses = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        client.post(
                            f"/goals/{goal_id}/attachments",
                            files={"file": (f"{i}.png", PNG, "image/png")},
                            headers=keyed(user, f"upload-{i}"),
                        )
                        for i in range(4)
                    )
                ),
                timeout=20,
            )
    assert [r.status_code for r in responses] == [201] * 4


# --- errors ------------------------------------------------------------------------------------


async def test_a_client_error_is_recorded_and_replayed(
    client: Any, app: Any, user: Account
) -> None:
    goal_id = (await create_goal(client, user, title="Limit"))["id"]
    url = f"/goals/{goal_id}/reminders"
    for hour in range(5):
        added = await client.post(
            url, json={"remind_time": f"0{hour}:00", "frequency_days": 1}, headers=user.headers
        )
        assert added.status_code == 201
    sixth = {"remind_time": "09:00", "frequency_days": 1}
    first = await client.post(url, json=sixth, headers=keyed(user, "sixth"))
    assert_problem(first, 409, "reminder_limit")
    # A place frees up: the key still answers what it answered.
    deleted = await client.delete(f"{url}/{added.json()['id']}", headers=user.headers)
    assert deleted.status_code == 204
    assert_replay_of(await client.post(url, json=sixth, headers=keyed(user, "sixth")), first)
    assert await count(app, GoalReminder) == 4
    again = await client.post(url, json=sixth, headers=keyed(user, "sixth-new-key"))
    assert again.status_code == 201, again.text


def app_with_failing_routes() -> Any:
    """The app with two test routes that do real work (a goal: its award, notification and push;
    a deferred task) and then fail: with a 409 and with an unexpected error."""
    app = create_app()
    router = APIRouter(route_class=IdempotentRoute, dependencies=[Depends(get_access_claims)])

    async def partial_work(caller: AccessClaimsDep, session: SessionDep, now: Now) -> None:
        await goals.create_goal(
            session, get_settings(), caller=caller, body=GoalCreate(title="Partial"), now=now
        )
        defer(session, "worker.sweep_outbox")

    @router.post("/test/client-error")
    async def client_error(caller: AccessClaimsDep, session: SessionDep, now: Now) -> None:
        await partial_work(caller, session, now)
        raise StageLimit

    @router.post("/test/server-error")
    async def server_error(caller: AccessClaimsDep, session: SessionDep, now: Now) -> None:
        await partial_work(caller, session, now)
        raise RuntimeError("after partial work")

    app.include_router(router)
    return app


async def test_an_error_keeps_none_of_the_routes_work(user: Account, published: list[str]) -> None:
    app = app_with_failing_routes()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = await client.post("/test/client-error", headers=keyed(user, "409"))
            assert_problem(first, 409, "stage_limit")
            assert_replay_of(
                await client.post("/test/client-error", headers=keyed(user, "409")), first
            )
            # 5xx: nothing recorded; the retry runs (and fails) again.
            for _ in range(2):
                failed = await client.post("/test/server-error", headers=keyed(user, "500"))
                assert_problem(failed, 500, "internal_error")
                assert REPLAYED not in failed.headers
        for model in (Goal, UserAchievement, Notification, OutboxTask):
            assert await count(app, model) == 0, model
        assert await count(app, IdempotencyKey) == 1
    assert "worker.sweep_outbox" not in published
    assert "notifications.push" not in published


# --- a lost answer, a request in flight --------------------------------------------------------


async def test_an_answer_lost_after_the_commit_is_replayed(
    client: Any, app: Any, user: Account
) -> None:
    """The first request commits, then its connection drops before the answer is sent."""

    class ConnectionDropped(Exception):
        pass

    body = b'{"title": "Lost answer"}'
    headers = keyed(user, "dropped")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/goals",
        "raw_path": b"/goals",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "extensions": {},
    }
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        raise ConnectionDropped

    with pytest.raises(ConnectionDropped):
        await app(scope, receive, send)
    assert await count(app, Goal) == 1
    retry = await client.post(
        "/goals", content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert retry.status_code == 201, retry.text
    assert retry.headers[REPLAYED] == "true"
    assert retry.json()["title"] == "Lost answer"
    assert await count(app, Goal) == 1


async def test_a_retry_while_the_first_runs_is_409_then_replayed(
    client: Any, app: Any, user: Account
) -> None:
    goal_id = (await create_goal(client, user, title="Busy"))["id"]
    url = f"/goals/{goal_id}/stages"
    headers = keyed(user, "in-flight")
    blocker = await asyncpg.connect(app.state.settings.database_driver_dsn)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        # The first request claims its key, then waits for the goal's lock (OwnedGoal).
        await blocker.execute("SELECT 1 FROM goals WHERE id = $1 FOR UPDATE", uuid.UUID(goal_id))
        first = asyncio.create_task(client.post(url, json={"title": "Step"}, headers=headers))

        async def waiting() -> bool:  # the request is blocked by this connection's lock
            return bool(
                await blocker.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                )
            )

        await wait_until(waiting, timeout=10)
        busy = await asyncio.wait_for(
            client.post(url, json={"title": "Step"}, headers=headers), timeout=10
        )
        assert_problem(busy, 409, "idempotency_in_progress")
        assert busy.headers["Retry-After"] == "1"
        await transaction.rollback()
    finally:
        await blocker.close()
    done = await asyncio.wait_for(first, timeout=10)
    assert done.status_code == 201, done.text
    assert_replay_of(await client.post(url, json={"title": "Step"}, headers=headers), done)
    assert await count(app, GoalStage) == 1


# --- accepted work: an AI run, an export -------------------------------------------------------


async def test_a_retried_ai_sync_starts_one_run(
    client: Any, app: Any, user: Account, fake_openai: Any, published: list[str]
) -> None:
    goal_id = (await create_goal(client, user, title="Plan me"))["id"]
    url = f"/goals/{goal_id}/ai-sync"
    first = await client.post(url, json={"max_stages": 4}, headers=keyed(user, "plan"))
    assert first.status_code == 202, first.text
    assert_replay_of(
        await client.post(url, json={"max_stages": 4}, headers=keyed(user, "plan")), first
    )

    async def settled() -> bool:
        goal = (await client.get(f"/goals/{goal_id}", headers=user.headers)).json()
        return goal["ai_status"] in ("done", "failed")

    await wait_until(settled)
    assert await count(app, AiRun) == 1
    assert published.count("ai.generate_stages") == 1
    assert fake_openai.count == 1


async def test_a_retried_export_starts_one_export(
    client: Any, app: Any, user: Account, published: list[str]
) -> None:
    first = await client.post("/account/export", headers=keyed(user, "export"))
    assert first.status_code == 202, first.text
    retry = await client.post("/account/export", headers=keyed(user, "export"))
    assert_replay_of(retry, first)
    assert await count(app, DataExport) == 1
    assert published.count("account.build_export") == 1


# --- expiry ------------------------------------------------------------------------------------


async def test_a_record_older_than_a_day_is_not_replayed_and_is_swept(
    client: Any, app: Any, user: Account, celery_app: Any
) -> None:
    first = await client.post("/goals", json={"title": "Old"}, headers=keyed(user, "old"))
    assert first.status_code == 201

    async def age(key: str, hours: float) -> None:
        async with app.state.engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE idempotency_keys SET created_at = created_at - :hours * interval '1 hour'"
                    " WHERE key = :key"
                ),
                {"hours": hours, "key": key},
            )

    await age("old", 24.1)
    retry = await client.post("/goals", json={"title": "Old"}, headers=keyed(user, "old"))
    assert retry.status_code == 201
    assert REPLAYED not in retry.headers
    assert retry.json()["id"] != first.json()["id"]
    assert await count(app, Goal) == 2

    fresh = await client.post("/goals", json={"title": "Fresh"}, headers=keyed(user, "fresh"))
    assert fresh.status_code == 201
    await age("old", 24.1)  # the retry's record, in turn
    await age("fresh", 23.9)
    celery_app.send_task("idempotency.delete_expired")

    async def swept() -> bool:
        return await count(app, IdempotencyKey) == 1

    await wait_until(swept)
    assert await count(app, IdempotencyKey, IdempotencyKey.key == "fresh") == 1


# --- every authenticated POST, and only those ---------------------------------------------------


def test_every_authenticated_post_claims_its_key_first(app: Any) -> None:
    """A POST with the bearer scheme claims a key exactly once, before anything that could have
    an effect (only the token check, the session and, for an upload, its read and intent come
    first); a POST without it (credentials in the body, the reset form) claims none."""
    from goaltrack.auth.caller import get_current_user
    from goaltrack.clock import get_now
    from goaltrack.db import get_db_session
    from goaltrack.deps import get_app_settings, get_sessionmaker
    from goaltrack.goals.dependencies import get_upload, get_verified_claims, reserve_upload_slot

    before_claim_allowed = {
        get_access_claims,
        get_current_user,
        get_db_session,
        get_now,
        get_app_settings,
        get_sessionmaker,
        get_verified_claims,
        get_upload,
        reserve_upload_slot,
    }
    claimed, unclaimed = set(), set()
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or "POST" not in (route.methods or ()):
            continue
        calls = list(dependency_calls(route.dependant))
        claims = {call for call in calls if is_claim(call)}
        if not any(isinstance(call, SecurityBase) for call in calls):
            assert not claims, route.path_format
            unclaimed.add(route.path_format)
            continue
        assert len(claims) == 1, route.path_format
        assert isinstance(route.original_route, IdempotentRouteBase), route.path_format
        assert route.original_route.idempotent
        first = calls.index(next(iter(claims)))
        earlier = set(calls[:first])
        assert earlier <= before_claim_allowed, (route.path_format, earlier - before_claim_allowed)
        claimed.add(route.path_format)
    assert claimed == {
        "/goals",
        "/goals/{goal_id}/stages",
        "/goals/{goal_id}/attachments",
        "/goals/{goal_id}/reminders",
        "/goals/{goal_id}/checkins",
        "/goals/{goal_id}/ai-sync",
        "/account/email/verification",
        "/account/export",
        "/devices",
        "/notifications/{notification_id}/snooze",
    }
    assert {
        "/auth/login",
        "/auth/register",
        "/auth/oauth/google",
        "/auth/oauth/apple",
        "/account/restore",
        "/reset-password",
    } <= unclaimed


async def test_the_document_states_the_key_where_it_is_claimed(client: Any) -> None:
    document = (await client.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            declared = [p for p in operation.get("parameters", []) if p["name"] == IDEMPOTENCY_KEY]
            claimed = method == "post" and bool(operation.get("security"))
            assert bool(declared) == claimed, (method, path)
            if not claimed:
                continue
            [parameter] = declared
            assert parameter["in"] == "header"
            assert parameter["required"] is False
            assert parameter["schema"] == {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[!-~]+$",
            }
            responses = operation["responses"]
            assert "`invalid_idempotency_key`" in responses["400"]["description"]
            assert "`idempotency_in_progress`" in responses["409"]["description"]
            assert "Retry-After" in responses["409"]["headers"]
            assert "`idempotency_key_reused`" in responses["422"]["description"]
            assert REPLAYED in next(r for s, r in responses.items() if s.startswith("2"))["headers"]
    devices = document["paths"]["/devices"]["post"]["responses"]
    assert devices["409"]["headers"]["Retry-After"]["required"] is True  # only ours
    # POST /goals has a 409 of its own (not_a_habit), which comes without it.
    goals = document["paths"]["/goals"]["post"]["responses"]
    assert goals["409"]["headers"]["Retry-After"]["required"] is False


async def test_a_write_commits_when_its_statements_are_done_unless_a_key_keeps_it_open(
    app: Any,
) -> None:
    """A write that answers with its goal commits before rendering it (its connection goes back
    to the pool); with a claimed key the answer is recorded in the same transaction first."""
    async with app.state.sessionmaker() as session:
        await session.execute(text("SELECT 1"))
        await statements_done(session)
        assert not session.in_transaction()
        await session.execute(text("SELECT 1"))
        session.info[KEEP_OPEN] = True
        await statements_done(session)
        assert session.in_transaction()
