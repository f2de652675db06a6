"""The broker hung or gone: a real redis-server paused with SIGSTOP or killed under the API, a
real `goaltrack worker` and a real `goaltrack beat`.

A write that queues a task answers while Redis is still paused (its publish gives up after
BROKER_TIMEOUT_SECONDS and the task is left to the outbox), and what could not be published is
sent again once Redis answers: due RESEND_UNSENT_AFTER after the failed publish, not after the
15-minute lease. The seconds printed are wall-clock figures for the record, not assertions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from fakes.fcm import FakeFcm
from goaltrack.celery_app import create_publisher
from goaltrack.config import get_settings
from goaltrack.db import create_sessionmaker
from goaltrack.defer import (
    defer_sent_by_id,
    discard_deferred,
    reschedule_unsent,
    send_deferred,
)
from goaltrack.dev.localstack import RedisServer, free_port
from goaltrack.main import create_app
from goaltrack.notifications.models import Notification
from goaltrack.worker import outbox
from goaltrack.worker.outbox import OUTBOX_LEASE, RESEND_UNSENT_AFTER, OutboxTask
from helpers import Account, TestClock, start_goaltrack, stop_processes, wait_until

TOKEN = "fcm:phone-" + "c" * 140
# Only to fail rather than hang: without a bound the write waits for as long as Redis is paused.
HANG = 30


@dataclass
class Broker:
    """A Redis of this test's own, with a `goaltrack worker` and a `goaltrack beat` (ticking every
    second) on it, and an API publishing to it: pausing or killing it leaves the session's worker
    alone (kombu can die of a broker killed under it, and the tests after would have none)."""

    redis: RedisServer
    client: httpx.AsyncClient

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        assert self.redis.process is not None
        os.kill(self.redis.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.redis.process.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def killed(self) -> Iterator[None]:
        """Gone (connections refused), then started again on its port, empty."""
        self.redis.stop(discard=True)
        try:
            yield
        finally:
            self.redis.start()


@pytest.fixture
def broker_processes(tmp_path: Path) -> Iterator[tuple[RedisServer, Path, Path]]:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    env = os.environ | {"REDIS_URL": redis.url, "SCHEDULER_INTERVAL_SECONDS": "1"}
    logs = (tmp_path / "worker.log", tmp_path / "beat.log")
    processes = [
        start_goaltrack("worker", "--concurrency", "1", cwd=tmp_path, env=env, log=logs[0]),
        start_goaltrack("beat", cwd=tmp_path, env=env, log=logs[1]),
    ]
    try:
        yield redis, *logs
    finally:
        stop_processes(processes)
        redis.stop(discard=True)


@pytest.fixture
async def broker(broker_processes: tuple[RedisServer, Path, Path]) -> AsyncIterator[Broker]:
    redis, worker_log, beat_log = broker_processes
    application = create_app(get_settings().model_copy(update={"redis_url": redis.url}))
    async with application.router.lifespan_context(application):
        # Both take seconds to start: the worker is consuming, beat has sent a first tick.
        await wait_until(lambda: b" ready." in worker_log.read_bytes(), timeout=150)
        await wait_until(lambda: b"Sending due task" in beat_log.read_bytes(), timeout=150)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Broker(redis, client)


async def goal_with_a_stage(client: Any, app: Any) -> tuple[Account, str]:
    """A user with a device to push to and a goal whose one stage, once completed, completes the
    goal (a notification, and its push task through the outbox); the path that completes it."""
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    registered = await client.post(
        "/auth/register", json={"email": email, "password": "correct horse battery"}
    )
    assert registered.status_code == 201, registered.text
    body = registered.json()
    user = Account(email, "correct horse battery", body["access_token"], body["refresh_token"])
    device = await client.post(
        "/devices", json={"token": TOKEN, "platform": "android"}, headers=user.headers
    )
    assert device.status_code == 201, device.text
    goal = await client.post("/goals", json={"title": "Run a marathon"}, headers=user.headers)
    assert goal.status_code == 201, goal.text
    goal_id = goal.json()["id"]
    stage = await client.post(
        f"/goals/{goal_id}/stages", json={"title": "Only stage"}, headers=user.headers
    )
    assert stage.status_code == 201, stage.text
    # What these writes queued (a first goal's achievement and its push) is done before the
    # broker goes: the outbox is empty.
    await wait_until(lambda: outbox_empty(app), timeout=30)
    return user, f"/goals/{goal_id}/stages/{stage.json()['id']}/complete"


async def outbox_rows(app: Any) -> list[OutboxTask]:
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(select(OutboxTask)))


async def outbox_empty(app: Any) -> bool:
    return not await outbox_rows(app)


async def due_soon(app: Any) -> bool:
    """Every outbox row is due within RESEND_UNSENT_AFTER by the worker's clock, none waits out
    the 15-minute lease."""
    rows = await outbox_rows(app)
    return bool(rows) and all(
        row.not_before <= datetime.now(UTC) + RESEND_UNSENT_AFTER for row in rows
    )


async def notifications(app: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Notification)) or 0)


async def each_notification_pushed_once(app: Any, fcm: FakeFcm) -> None:
    """Every push task ran to its end (the outbox is empty), and each notification reached the
    phone once: no send was lost, and none was sent twice."""
    await wait_until(lambda: outbox_empty(app), timeout=60)
    pushed = [message["message"]["data"]["notification_id"] for message in fcm.delivered]
    assert len(pushed) == len(set(pushed)) == await notifications(app) > 0


def api_clock_behind() -> TestClock:
    """The API's clock reads RESEND_UNSENT_AFTER behind the worker's (the system's): what a failed
    publish leaves is due at once for the worker, so the test need not wait those seconds out;
    the lease would still be 15 minutes away."""
    return TestClock(datetime.now(UTC) - RESEND_UNSENT_AFTER).install()


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_a_hung_broker_does_not_hold_a_write(broker: Broker, app: Any, fcm: FakeFcm) -> None:
    api_clock_behind()
    user, complete = await goal_with_a_stage(broker.client, app)
    with broker.paused():
        started = time.monotonic()
        write = asyncio.create_task(broker.client.put(complete, headers=user.headers))
        # (Not `asyncio.timeout`: a publish blocked in its thread cannot be cancelled.)
        await asyncio.wait({write}, timeout=HANG)
        answered = time.monotonic() - started
        # Answered while Redis is still paused: the request did not wait for it.
        assert write.done(), "the write waited for the paused broker"
        response = write.result()
        assert response.status_code == 200, response.text
        assert await due_soon(app)
    print(f"\nwrite answered {answered:.2f} s into the pause")
    # A publish that timed out may still land now that Redis runs again; what did not is sent
    # again by the sweep. Either way each push arrives, once.
    await each_notification_pushed_once(app, fcm)


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_after_an_outage_the_outbox_sends_within_seconds(
    broker: Broker, app: Any, fcm: FakeFcm, mailbox: Any
) -> None:
    """A stage that completes its goal (a push) and an export (its build, then its mail) asked
    for while Redis is down: both go out within seconds of its return."""
    api_clock_behind()
    user, complete = await goal_with_a_stage(broker.client, app)
    pushed_before = len(fcm.delivered)
    with broker.killed():
        response = await broker.client.put(complete, headers=user.headers)
        assert response.status_code == 200, response.text
        export = await broker.client.post("/account/export", headers=user.headers)
        assert export.status_code == 202, export.text
        assert await due_soon(app)
    back = time.monotonic()
    await fcm.wait_for(pushed_before + 1, timeout=60)
    pushed = time.monotonic() - back
    await mailbox.wait_for(user.email, timeout=60)
    print(f"\nfirst push {pushed:.1f} s, export mail {time.monotonic() - back:.1f} s after Redis")
    await each_notification_pushed_once(app, fcm)


async def test_a_failed_publish_makes_a_row_due_soon_unless_it_waits_for_later(app: Any) -> None:
    """Through a real Celery app whose broker refuses connections: a row sent now is held until
    RESEND_UNSENT_AFTER from now, and the sweep's send then is its first (a publish the broker
    did not take is no resend); a row due later than a lease from now (a retry's countdown) or
    held on purpose (quiet hours) keeps its time."""
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    producer = create_publisher(get_settings().model_copy(update={"redis_url": nobody}))
    sessionmaker = create_sessionmaker(app.state.engine, producer, outbox.resend_unsent)
    now = datetime.now(UTC)

    def row(not_before: datetime, *, attempts: int = 0, held: bool = False) -> OutboxTask:
        return OutboxTask(
            id=uuid.uuid4(),
            name="notifications.push",
            args=[str(uuid.uuid4())],
            not_before=not_before,
            attempts=attempts,
            held=held,
        )

    fresh, resent = row(now + OUTBOX_LEASE), row(now + OUTBOX_LEASE, attempts=3)
    postponed, held = row(now + timedelta(hours=2)), row(now + timedelta(minutes=5), held=True)
    async with sessionmaker() as session:
        async with session.begin():
            session.add_all([fresh, resent, postponed, held])
            for sent in (fresh, resent, postponed, held):
                defer_sent_by_id(session, sent.name, sent.args, sent.id)
        TestClock(now).install()
        unsent = await asyncio.to_thread(send_deferred, session)
        assert set(unsent) == {fresh.id, resent.id, postponed.id, held.id}
        await reschedule_unsent(session, unsent)
    producer.close()

    async def state() -> dict[uuid.UUID, tuple[datetime, int, bool]]:
        return {r.id: (r.not_before, r.attempts, r.held) for r in await outbox_rows(app)}

    assert await state() == {
        fresh.id: (now + RESEND_UNSENT_AFTER, 0, True),
        resent.id: (now + RESEND_UNSENT_AFTER, 3, True),
        postponed.id: (now + timedelta(hours=2), 0, False),
        held.id: (now + timedelta(minutes=5), 0, True),
    }
    due = now + RESEND_UNSENT_AFTER
    async with app.state.sessionmaker() as session, session.begin():
        assert await outbox.sweep(session, due) == 2
        discard_deferred(session)  # only what the sweep wrote matters here
    after = await state()
    assert after[fresh.id] == (due + OUTBOX_LEASE, 0, False)
    assert after[resent.id] == (due + OUTBOX_LEASE, 3, False)
