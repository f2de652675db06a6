"""Quiet hours (`settings.quiet_hours`): the feed row is written at once, the push waits in the
outbox for the end of the window in the user's zone and then goes out once, through the real
worker, the real outbox sweep and the fake FCM server. Time is the test clock's.

A push that must not happen is proven by a positive signal: the task that could have sent it ran
(its task_postrun), and only then the fake is checked for what it received."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fakes.fcm import FakeFcm
from goaltrack.clock import utcnow
from goaltrack.defer import deferred_mark, discard_deferred, has_deferred, send_deferred
from goaltrack.devices.models import Device
from goaltrack.notifications.kinds import DigestData
from goaltrack.notifications.models import NotificationSnooze
from goaltrack.notifications.quiet import QuietHours, quiet_until
from goaltrack.notifications.service import PUSH, notify
from goaltrack.worker import outbox
from goaltrack.worker.outbox import MAX_RESENDS, OUTBOX_LEASE, OutboxTask
from helpers import (
    Account,
    TestClock,
    assert_problem,
    beats_and_workers,
    run_task,
    seed_users_with_goals,
    wait_until,
)
from test_sync import sync_until

NIGHT = {"start": "22:00", "end": "07:00"}
SWEEP = "worker.sweep_outbox"
BERLIN = ZoneInfo("Europe/Berlin")


# -- helpers ----------------------------------------------------------------------------------


async def user_id_of(client: Any, account: Account) -> uuid.UUID:
    response = await client.get("/account", headers=account.headers)
    assert response.status_code == 200, response.text
    return uuid.UUID(response.json()["id"])


async def quiet_user(
    client: Any, register: Any, *, zone: str = "Europe/Berlin", hours: Any = NIGHT
) -> tuple[Account, uuid.UUID, str]:
    """A user in `zone` with quiet hours `hours` and one device: (account, id, device token)."""
    account = await register(timezone=zone)
    response = await client.put(
        "/settings/notifications", json={"quiet_hours": hours}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    token = f"fcm:phone-{uuid.uuid4().hex}"
    device = await client.post(
        "/devices", json={"token": token, "platform": "android"}, headers=account.headers
    )
    assert device.status_code == 201, device.text
    return account, await user_id_of(client, account), token


async def write_notification(app: Any, user_id: uuid.UUID) -> tuple[uuid.UUID, AsyncSession]:
    """A notification written with `notify` at the clock's now and committed; its session, whose
    deferred tasks are not sent yet (`send`)."""
    async with app.state.sessionmaker() as session, session.begin():
        row = await notify(
            session,
            user_id=user_id,
            data=DigestData(active_goals=1),
            title="Your goals",
            body="1 goal in progress.",
            now=utcnow(),
        )
    return row.id, session


async def send(session: AsyncSession) -> None:
    """What the session deferred goes to the broker, as after a request's commit."""
    await asyncio.to_thread(send_deferred, session)


async def push_row(app: Any, notification_id: uuid.UUID) -> OutboxTask | None:
    async with app.state.sessionmaker() as session:
        row: OutboxTask | None = await session.scalar(
            select(OutboxTask).where(
                OutboxTask.name == PUSH, OutboxTask.args.contains([str(notification_id)])
            )
        )
    return row


def pushes_of(fcm: FakeFcm, notification_id: uuid.UUID) -> list[dict[str, Any]]:
    return [
        record
        for record in fcm.delivered
        if record["message"]["data"]["notification_id"] == str(notification_id)
    ]


async def wait_for_push_done(app: Any, notification_id: uuid.UUID) -> None:
    """The push task ran to its end: its outbox row is gone."""

    async def gone() -> bool:
        return await push_row(app, notification_id) is None

    await wait_until(gone)


async def feed_ids(client: Any, account: Account) -> list[str]:
    response = await client.get("/notifications", headers=account.headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


# -- the window ---------------------------------------------------------------------------------


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("hours", "now", "end"),
    [
        # Berlin, 22:00-07:00 (CEST = UTC+2 in June): held from 20:00Z to 05:00Z.
        (NIGHT, utc(2026, 6, 1, 19, 59, 59), None),
        (NIGHT, utc(2026, 6, 1, 20, 0), utc(2026, 6, 2, 5, 0)),  # the start is in
        (NIGHT, utc(2026, 6, 1, 23, 30), utc(2026, 6, 2, 5, 0)),
        (NIGHT, utc(2026, 6, 2, 4, 59, 59), utc(2026, 6, 2, 5, 0)),  # after midnight
        (NIGHT, utc(2026, 6, 2, 5, 0), None),  # the end is out
        # Not wrapping: 13:00-15:00.
        ({"start": "13:00", "end": "15:00"}, utc(2026, 6, 1, 11, 30), utc(2026, 6, 1, 13, 0)),
        ({"start": "13:00", "end": "15:00"}, utc(2026, 6, 1, 13, 30), None),
        # Spring forward (2026-03-29, 02:00 CET -> 03:00 CEST): 9 h of wall clock, 8 h long.
        (NIGHT, utc(2026, 3, 28, 21, 0), utc(2026, 3, 29, 5, 0)),
        # Fall back (2026-10-25, 03:00 CEST -> 02:00 CET): 10 h long.
        (NIGHT, utc(2026, 10, 24, 20, 0), utc(2026, 10, 25, 6, 0)),
        # An end inside the gap: the transition (03:00 CEST), the first instant after it.
        ({"start": "22:00", "end": "02:30"}, utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 1, 0)),
        ({"start": "22:00", "end": "02:30"}, utc(2026, 3, 29, 1, 0), None),
        # An end the clock shows twice: the first; the repeated half hour is not quiet again.
        ({"start": "22:00", "end": "02:30"}, utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 0, 30)),
        ({"start": "22:00", "end": "02:30"}, utc(2026, 10, 25, 1, 15), None),
    ],
)
def test_the_window_is_the_users_wall_clock(
    hours: dict[str, str], now: datetime, end: datetime | None
) -> None:
    window = QuietHours(time.fromisoformat(hours["start"]), time.fromisoformat(hours["end"]))
    assert quiet_until(window, BERLIN, now) == end
    assert quiet_until(None, BERLIN, now) is None


# -- settings -----------------------------------------------------------------------------------


async def test_quiet_hours_are_set_kept_and_cleared(client: Any, user: Account) -> None:
    settings = (await client.get("/settings", headers=user.headers)).json()
    assert settings["quiet_hours"] is None
    quiet = await client.put(
        "/settings/notifications", json={"quiet_hours": NIGHT}, headers=user.headers
    )
    assert quiet.status_code == 200, quiet.text
    assert (quiet.json()["quiet_hours"], quiet.json()["push_enabled"]) == (NIGHT, True)
    # An old client's body: push_enabled alone, the window stays.
    toggled = await client.put(
        "/settings/notifications", json={"push_enabled": False}, headers=user.headers
    )
    assert (toggled.json()["quiet_hours"], toggled.json()["push_enabled"]) == (NIGHT, False)
    both = await client.put(
        "/settings/notifications",
        json={"push_enabled": True, "quiet_hours": {"start": "13:00", "end": "15:00"}},
        headers=user.headers,
    )
    assert both.json()["quiet_hours"] == {"start": "13:00", "end": "15:00"}
    assert both.json()["push_enabled"] is True
    # PUT /settings takes it too; a body without it leaves it.
    moved = await client.put(
        "/settings", json={"timezone": "Asia/Tokyo", "quiet_hours": NIGHT}, headers=user.headers
    )
    assert moved.json()["quiet_hours"] == NIGHT
    kept = await client.put("/settings", json={"locale": "ru"}, headers=user.headers)
    assert kept.json()["quiet_hours"] == NIGHT
    cleared = await client.put(
        "/settings/notifications", json={"quiet_hours": None}, headers=user.headers
    )
    assert cleared.json()["quiet_hours"] is None
    assert (await client.get("/settings", headers=user.headers)).json()["quiet_hours"] is None
    await client.put("/settings", json={"quiet_hours": NIGHT}, headers=user.headers)
    cleared = await client.put("/settings", json={"quiet_hours": None}, headers=user.headers)
    assert cleared.json()["quiet_hours"] is None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/settings/notifications", {}),
        ("/settings/notifications", {"push_enabled": None}),
        ("/settings/notifications", {"quiet_hours": {"start": "22:00", "end": "22:00"}}),
        ("/settings/notifications", {"quiet_hours": {"start": "22:00"}}),
        ("/settings/notifications", {"quiet_hours": {"start": "7:00", "end": "22:00"}}),
        ("/settings/notifications", {"quiet_hours": {"start": "22:00", "end": "24:00"}}),
        ("/settings/notifications", {"quiet_hours": {"start": "22:00:00", "end": "07:00"}}),
        ("/settings/notifications", {"quiet_hours": {**NIGHT, "days": [1]}}),
        ("/settings/notifications", {"quiet_hours": "22:00-07:00"}),
        ("/settings", {"quiet_hours": {"start": "00:00", "end": "00:00"}}),
    ],
)
async def test_invalid_quiet_hours_are_422(
    client: Any, user: Account, path: str, body: dict[str, Any]
) -> None:
    assert_problem(await client.put(path, json=body, headers=user.headers), 422, "validation_error")
    assert (await client.get("/settings", headers=user.headers)).json()["quiet_hours"] is None


async def test_quiet_hours_are_a_change_of_the_settings(client: Any, user: Account) -> None:
    """The ETag moves (a stale If-Match is 412) and GET /sync carries the new settings."""
    _, cursor = await sync_until(client, user, None, lambda changes: True)
    before = (await client.get("/settings", headers=user.headers)).headers["ETag"]
    quiet = await client.put(
        "/settings/notifications",
        json={"quiet_hours": NIGHT},
        headers={**user.headers, "If-Match": before},
    )
    assert quiet.status_code == 200, quiet.text
    assert quiet.headers["ETag"] != before
    stale = await client.put(
        "/settings/notifications",
        json={"quiet_hours": None},
        headers={**user.headers, "If-Match": before},
    )
    assert_problem(stale, 412, "precondition_failed")

    def settings_seen(changes: list[dict[str, Any]]) -> bool:
        return any(change["type"] == "settings" for change in changes)

    delta, _ = await sync_until(client, user, cursor, settings_seen)
    [change] = [change for change in delta if change["type"] == "settings"]
    assert change["data"]["quiet_hours"] == NIGHT
    assert change["data"] == (await client.get("/settings", headers=user.headers)).json()


# -- the push waits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "end"),
    [
        # Berlin, 22:00-07:00. 23:00 CEST: the window ends tomorrow at 07:00 CEST (05:00Z).
        pytest.param(utc(2026, 6, 1, 21, 0), utc(2026, 6, 2, 5, 0), id="before-midnight"),
        pytest.param(utc(2026, 6, 2, 1, 0), utc(2026, 6, 2, 5, 0), id="after-midnight"),
        # 23:30 CET before the spring-forward night: 07:00 CEST is 05:00Z, 7.5 h on, not 8.5.
        pytest.param(utc(2026, 3, 28, 22, 30), utc(2026, 3, 29, 5, 0), id="spring-forward"),
        # 23:30 CEST before the fall-back night: 07:00 CET is 06:00Z, 8.5 h on, not 7.5.
        pytest.param(utc(2026, 10, 24, 21, 30), utc(2026, 10, 25, 6, 0), id="fall-back"),
    ],
)
async def test_a_push_in_quiet_hours_waits_for_their_end_and_goes_once(
    celery_app: Any,
    client: Any,
    app: Any,
    register: Any,
    fcm: FakeFcm,
    written: datetime,
    end: datetime,
) -> None:
    clock = TestClock(written).install()
    account, user_id, token = await quiet_user(client, register)

    notification_id, session = await write_notification(app, user_id)

    # The feed row at once; the push held in the outbox until the end, nothing sent to the broker.
    assert not has_deferred(session)
    assert str(notification_id) in await feed_ids(client, account)
    held = await push_row(app, notification_id)
    assert held is not None
    assert (held.not_before, held.held, held.attempts) == (end, True, 0)

    # A second before the end: the sweep leaves it; the push task itself, sent as a redelivery
    # would send it, holds it again.
    clock.now = end - timedelta(seconds=1)
    await run_task(celery_app, SWEEP)
    await run_task(celery_app, PUSH, str(notification_id), task_id=str(held.id))
    still = await push_row(app, notification_id)
    assert still is not None
    assert (still.not_before, still.held, still.attempts) == (end, True, 0)
    assert pushes_of(fcm, notification_id) == []

    # At the end: the sweep sends it, once.
    clock.now = end
    await run_task(celery_app, SWEEP)
    await wait_for_push_done(app, notification_id)
    [pushed] = pushes_of(fcm, notification_id)
    assert pushed["message"]["token"] == token
    await run_task(celery_app, SWEEP)
    assert len(pushes_of(fcm, notification_id)) == 1


async def test_a_new_window_judges_the_held_pushes_again(
    celery_app: Any, client: Any, app: Any, register: Any, fcm: FakeFcm
) -> None:
    """Held at 23:00 (Berlin) until 07:00; the window becomes 22:00-00:30: held until 00:30;
    quiet hours cleared: pushed at once."""
    TestClock(utc(2026, 6, 1, 21, 0)).install()
    account, user_id, _ = await quiet_user(client, register)
    notification_id, _ = await write_notification(app, user_id)

    shorter = await client.put(
        "/settings/notifications",
        json={"quiet_hours": {"start": "22:00", "end": "00:30"}},
        headers=account.headers,
    )
    assert shorter.status_code == 200, shorter.text
    await run_task(celery_app, SWEEP)

    async def held_until(end: datetime) -> bool:
        row = await push_row(app, notification_id)
        return row is not None and row.held and row.not_before == end

    await wait_until(lambda: held_until(utc(2026, 6, 1, 22, 30)))
    assert pushes_of(fcm, notification_id) == []

    cleared = await client.put("/settings", json={"quiet_hours": None}, headers=account.headers)
    assert cleared.status_code == 200, cleared.text
    await run_task(celery_app, SWEEP)
    await wait_for_push_done(app, notification_id)
    assert len(pushes_of(fcm, notification_id)) == 1


async def test_no_quiet_hours_no_wait(
    celery_app: Any, client: Any, app: Any, register: Any, fcm: FakeFcm
) -> None:
    """Outside the window (and without one) the push goes out at once."""
    TestClock(utc(2026, 6, 1, 10, 0)).install()  # 12:00 in Berlin
    _, user_id, _ = await quiet_user(client, register)
    _, unquiet_id, _ = await quiet_user(client, register, hours=None)
    for owner in (user_id, unquiet_id):
        notification_id, session = await write_notification(app, owner)
        await send(session)
        await wait_for_push_done(app, notification_id)
        assert len(pushes_of(fcm, notification_id)) == 1


async def test_a_push_queued_before_quiet_hours_that_runs_in_them_is_held(
    celery_app: Any, client: Any, app: Any, register: Any, fcm: FakeFcm
) -> None:
    """Written at 21:59 (Berlin), its task reaching the worker at 22:30: held to 07:00."""
    clock = TestClock(utc(2026, 6, 1, 19, 59)).install()
    _, user_id, _ = await quiet_user(client, register)
    notification_id, session = await write_notification(app, user_id)
    assert has_deferred(session)  # not in quiet hours when written: sent after the commit ...
    row = await push_row(app, notification_id)
    assert row is not None
    assert row.held is False
    # ... and reaching the worker half an hour later.
    clock.now = utc(2026, 6, 1, 20, 30)
    await run_task(celery_app, PUSH, str(notification_id), task_id=str(row.id))
    held = await push_row(app, notification_id)
    assert held is not None
    assert (held.not_before, held.held) == (utc(2026, 6, 2, 5, 0), True)
    assert pushes_of(fcm, notification_id) == []

    clock.now = utc(2026, 6, 2, 5, 0)
    await run_task(celery_app, SWEEP)
    await wait_for_push_done(app, notification_id)
    assert len(pushes_of(fcm, notification_id)) == 1


async def test_a_retry_that_lands_in_quiet_hours_is_held_to_their_end(
    celery_app: Any, client: Any, app: Any, register: Any, fcm: FakeFcm
) -> None:
    """FCM unavailable at 21:59:57 (Berlin): the retry's 5-10 s backoff (on the test clock) lands
    after 22:00, so the retry holds the push to 07:00 instead of sending it."""
    clock = TestClock(utc(2026, 6, 1, 19, 59, 57)).install()
    _, user_id, token = await quiet_user(client, register)
    fcm.fail_next("UNAVAILABLE", token=token)

    notification_id, session = await write_notification(app, user_id)
    await send(session)

    async def held_to_the_end() -> bool:
        row = await push_row(app, notification_id)
        return row is not None and row.held and row.not_before == utc(2026, 6, 2, 5, 0)

    await wait_until(held_to_the_end)
    assert [r["status"] for r in fcm.messages_to(token)] == [503]
    assert clock.now >= utc(2026, 6, 1, 20, 0)  # the backoff passed on the test clock

    clock.now = utc(2026, 6, 2, 5, 0)
    await run_task(celery_app, SWEEP)
    await wait_for_push_done(app, notification_id)
    assert [r["status"] for r in fcm.messages_to(token)] == [503, 200]


async def test_releasing_a_held_row_is_not_a_resend(app: Any) -> None:
    """The sweep gives up on a row sent MAX_RESENDS times; a held row's send is its first since
    it was held, whatever its count: it goes, and its count stays."""
    now = utc(2026, 6, 2, 5, 0)
    held, lost = uuid.uuid4(), uuid.uuid4()
    async with app.state.sessionmaker() as session, session.begin():
        for row_id, is_held in ((held, True), (lost, False)):
            session.add(
                OutboxTask(
                    id=row_id,
                    name="test.nothing",
                    args=[],
                    not_before=now,
                    attempts=MAX_RESENDS,
                    held=is_held,
                )
            )
    async with app.state.sessionmaker() as session, session.begin():
        assert await outbox.sweep(session, now) == 1
        assert deferred_mark(session) == 1
        discard_deferred(session)  # a test row: nothing to run
    async with app.state.sessionmaker() as session:
        rows = {row.id: row for row in await session.scalars(select(OutboxTask))}
    assert lost not in rows  # given up
    assert (rows[held].held, rows[held].attempts) == (False, MAX_RESENDS)
    assert rows[held].not_before == now + OUTBOX_LEASE


# -- real processes -----------------------------------------------------------------------------


async def seed_users(app: Any, count: int, hours: QuietHours) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """`count` users in UTC with quiet hours `hours`, a goal and a device each: (user, goal)."""
    owners = await seed_users_with_goals(
        app, count, quiet_hours_start=hours.start, quiet_hours_end=hours.end
    )
    async with app.state.sessionmaker() as session, session.begin():
        for user_id, _ in owners:
            session.add(Device(user_id=user_id, token=f"fcm:seed-{user_id.hex}", platform="ios"))
    return owners


async def add_snoozes(app: Any, owners: list[tuple[uuid.UUID, uuid.UUID]], due: datetime) -> None:
    """A snooze of a reminder of each (user, goal), due at `due`."""
    async with app.state.sessionmaker() as session, session.begin():
        for user_id, goal_id in owners:
            session.add(
                NotificationSnooze(
                    notification_id=uuid.uuid4(),
                    user_id=user_id,
                    goal_id=goal_id,
                    stage_id=None,
                    reminder_id=uuid.uuid4(),
                    title="Time for: it",
                    body="Keep going.",
                    due_at=due,
                    created_at=due - timedelta(minutes=10),
                )
            )


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_held_pushes_and_due_snoozes_go_out_once_with_two_beats_and_four_workers(
    app: Any, fcm: FakeFcm, tmp_path: Path
) -> None:
    """Pushes held through quiet hours that ended an hour ago, and snoozes that are due, meet
    processes started after they were written (a restart: the broker is emptied too) — two
    `goaltrack beat` and two `goaltrack worker --concurrency 2`, ticking every second, plus the
    test session's own worker: every push goes out exactly once."""
    real_now = datetime.now(UTC)
    window = QuietHours(
        (real_now - timedelta(hours=3)).time().replace(second=0, microsecond=0),
        (real_now - timedelta(hours=1)).time().replace(second=0, microsecond=0),
    )
    owners = await seed_users(app, 30, window)
    TestClock(real_now - timedelta(hours=2)).install()  # inside the window
    held = [(await write_notification(app, user_id))[0] for user_id, _ in owners]
    async with app.state.sessionmaker() as session:
        waiting = await session.scalar(
            select(func.count()).select_from(OutboxTask).where(OutboxTask.held)
        )
    assert waiting == len(owners)
    TestClock.uninstall()
    await app.state.redis.flushdb()
    await add_snoozes(app, owners, datetime.now(UTC) - timedelta(seconds=1))

    async def pushed(count: int) -> None:
        await wait_until(lambda: len(fcm.delivered) >= count, timeout=150, interval=0.2)

    async def settled() -> bool:
        async with app.state.sessionmaker() as session:
            left = await session.scalar(
                select(func.count()).select_from(OutboxTask).where(OutboxTask.name == PUSH)
            )
        return left == 0

    with beats_and_workers(tmp_path):
        await pushed(2 * len(owners))
        # A positive signal that the beats went on ticking: one more snooze, due now, is sent.
        await add_snoozes(app, owners[:1], datetime.now(UTC))
        await pushed(2 * len(owners) + 1)
        await wait_until(settled, timeout=60, interval=0.2)
    by_notification: dict[str, int] = {}
    for record in fcm.delivered:
        key = record["message"]["data"]["notification_id"]
        by_notification[key] = by_notification.get(key, 0) + 1
    assert set(by_notification.values()) == {1}
    assert len(by_notification) == 2 * len(owners) + 1
    assert {str(notification_id) for notification_id in held} <= by_notification.keys()
    kinds = [record["message"]["data"]["type"] for record in fcm.delivered]
    assert (kinds.count("digest"), kinds.count("reminder")) == (len(owners), len(owners) + 1)
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(NotificationSnooze)) == 0
