"""Snoozed reminders: `POST /notifications/{notification_id}/snooze` and the tick that brings a
reminder back once (a new feed row and its push), through the real worker and the fake FCM
server. Time is the test clock's."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from fakes.fcm import FakeFcm
from goaltrack.account.export import collect
from goaltrack.clock import utcnow
from goaltrack.defer import send_deferred
from goaltrack.notifications import snoozes
from goaltrack.notifications.kinds import DigestData, NotificationData, ReminderData
from goaltrack.notifications.models import Notification, NotificationSnooze
from goaltrack.notifications.quiet import QuietHours
from goaltrack.notifications.service import PUSH, notify
from goaltrack.worker.outbox import OutboxTask
from helpers import Account, TestClock, add_stages, assert_problem, create_goal, run_task
from test_quiet_hours import (
    NIGHT,
    add_snoozes,
    pushes_of,
    seed_users,
    user_id_of,
    wait_for_push_done,
)

FIRE = "notifications.fire_snoozes"
SWEEP = "worker.sweep_outbox"
START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # 12:00 in Berlin


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


async def write(app: Any, user_id: uuid.UUID, data: NotificationData, title: str) -> uuid.UUID:
    """A notification written with `notify` at the clock's now; its push sent after the commit."""
    async with app.state.sessionmaker() as session, session.begin():
        row = await notify(
            session, user_id=user_id, data=data, title=title, body=f"{title}.", now=utcnow()
        )
    await asyncio.to_thread(send_deferred, session)
    return row.id


async def goal_with_reminder(client: Any, account: Account, **body: Any) -> dict[str, Any]:
    goal = await create_goal(
        client, account, reminder={"remind_time": "09:00", "frequency_days": 1}, **body
    )
    await add_stages(client, account, goal["id"], 1)
    response = await client.get(f"/goals/{goal['id']}", headers=account.headers)
    assert response.status_code == 200, response.text
    full: dict[str, Any] = response.json()
    return full


async def reminder_of(app: Any, user_id: uuid.UUID, goal: dict[str, Any]) -> uuid.UUID:
    """The goal's reminder, as the scheduler writes it."""
    data = ReminderData(
        goal_id=uuid.UUID(goal["id"]),
        stage_id=uuid.UUID(goal["stages"][0]["id"]),
        reminder_id=uuid.UUID(goal["reminders"][0]["id"]),
    )
    return await write(app, user_id, data, f"Time for: {goal['title']}")


async def snooze(client: Any, account: Account, notification_id: Any, minutes: Any) -> Any:
    return await client.post(
        f"/notifications/{notification_id}/snooze",
        json={"minutes": minutes},
        headers=account.headers,
    )


async def reminders_in_feed(client: Any, account: Account) -> list[dict[str, Any]]:
    response = await client.get("/notifications", headers=account.headers)
    assert response.status_code == 200, response.text
    return [item for item in response.json()["items"] if item["type"] == "reminder"]


async def pending(app: Any) -> list[NotificationSnooze]:
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(select(NotificationSnooze)))


# -- the reminder comes again -------------------------------------------------------------------


async def test_a_snoozed_reminder_comes_again_once_with_its_push(
    celery_app: Any, client: Any, app: Any, register: Any, fcm: FakeFcm
) -> None:
    clock = TestClock(START).install()
    account = await register(timezone="Europe/Berlin")
    user_id = await user_id_of(client, account)
    await client.post(
        "/devices", json={"token": "fcm:phone-1", "platform": "ios"}, headers=account.headers
    )
    goal = await goal_with_reminder(client, account, title="Learn Spanish")
    original_id = await reminder_of(app, user_id, goal)
    await wait_for_push_done(app, original_id)
    [original] = await reminders_in_feed(client, account)

    response = await snooze(client, account, original_id, 15)
    assert response.status_code == 202, response.text
    assert response.json() == {"due_at": "2026-06-01T10:15:00Z"}

    clock.now = START + timedelta(minutes=15, seconds=-1)
    assert await run_task(celery_app, FIRE) == 0
    assert len(await reminders_in_feed(client, account)) == 1

    clock.now = START + timedelta(minutes=15)
    assert await run_task(celery_app, FIRE) == 1
    again, first = await reminders_in_feed(client, account)
    assert first == original
    assert again["id"] != original["id"]
    assert {key: again[key] for key in ("title", "body", "data", "is_read")} == {
        "title": original["title"],
        "body": original["body"],
        "data": original["data"],
        "is_read": False,
    }
    assert again["created_at"] == "2026-06-01T10:15:00Z"
    await wait_for_push_done(app, uuid.UUID(again["id"]))
    [pushed] = pushes_of(fcm, uuid.UUID(again["id"]))
    assert pushed["message"]["data"] == {
        "type": "reminder",
        "notification_id": again["id"],
        "goal_id": goal["id"],
        "stage_id": goal["stages"][0]["id"],
    }
    assert pushed["message"]["notification"] == {
        "title": original["title"],
        "body": original["body"],
    }

    assert await run_task(celery_app, FIRE) == 0
    assert len(await reminders_in_feed(client, account)) == 2
    assert await pending(app) == []


async def test_snoozing_again_moves_the_pending_time(
    celery_app: Any, client: Any, app: Any, register: Any
) -> None:
    clock = TestClock(START).install()
    account = await register()
    user_id = await user_id_of(client, account)
    original_id = await reminder_of(app, user_id, await goal_with_reminder(client, account))

    assert (await snooze(client, account, original_id, 5)).status_code == 202
    moved = await snooze(client, account, original_id, 15)
    assert moved.json() == {"due_at": "2026-06-01T10:15:00Z"}
    [waiting] = await pending(app)
    assert (waiting.notification_id, waiting.due_at) == (original_id, START + timedelta(minutes=15))

    clock.now = START + timedelta(minutes=5)
    assert await run_task(celery_app, FIRE) == 0
    clock.now = START + timedelta(minutes=15)
    assert await run_task(celery_app, FIRE) == 1
    assert len(await reminders_in_feed(client, account)) == 2

    # Once it came, the same reminder can be snoozed again (a new pending snooze), and so can
    # the reminder that came.
    assert (await snooze(client, account, original_id, 5)).status_code == 202
    latest = (await reminders_in_feed(client, account))[0]
    assert (await snooze(client, account, latest["id"], 5)).status_code == 202
    clock.now += timedelta(minutes=5)
    assert await run_task(celery_app, FIRE) == 2
    assert len(await reminders_in_feed(client, account)) == 4


async def test_a_retried_snooze_is_answered_again_and_runs_once(
    client: Any, app: Any, register: Any
) -> None:
    clock = TestClock(START).install()
    account = await register()
    user_id = await user_id_of(client, account)
    original_id = await reminder_of(app, user_id, await goal_with_reminder(client, account))
    headers = {**account.headers, "Idempotency-Key": f"snooze-{uuid.uuid4()}"}
    url = f"/notifications/{original_id}/snooze"

    first = await client.post(url, json={"minutes": 10}, headers=headers)
    clock.now += timedelta(minutes=2)
    retry = await client.post(url, json={"minutes": 10}, headers=headers)
    assert (first.status_code, retry.status_code) == (202, 202)
    assert retry.headers["Idempotency-Replayed"] == "true"
    assert retry.json() == first.json() == {"due_at": "2026-06-01T10:10:00Z"}
    [waiting] = await pending(app)
    assert waiting.due_at == START + timedelta(minutes=10)


async def test_a_snoozed_reminders_push_waits_out_quiet_hours(
    celery_app: Any, client: Any, app: Any, register: Any, fcm: FakeFcm
) -> None:
    """Snoozed at 21:50 in Berlin for 20 minutes: the reminder is in the feed at 22:10, its push
    goes at 07:00."""
    clock = TestClock(utc(2026, 6, 1, 19, 50)).install()
    account = await register(timezone="Europe/Berlin")
    user_id = await user_id_of(client, account)
    await client.put(
        "/settings/notifications", json={"quiet_hours": NIGHT}, headers=account.headers
    )
    await client.post(
        "/devices", json={"token": "fcm:phone-2", "platform": "ios"}, headers=account.headers
    )
    original_id = await reminder_of(app, user_id, await goal_with_reminder(client, account))
    await wait_for_push_done(app, original_id)
    assert (await snooze(client, account, original_id, 20)).status_code == 202

    clock.now = utc(2026, 6, 1, 20, 10)
    assert await run_task(celery_app, FIRE) == 1
    again = (await reminders_in_feed(client, account))[0]
    async with app.state.sessionmaker() as session:
        held = await session.scalar(
            select(OutboxTask).where(
                OutboxTask.name == PUSH, OutboxTask.args.contains([again["id"]])
            )
        )
    assert held is not None
    assert (held.held, held.not_before) == (True, utc(2026, 6, 2, 5, 0))
    await run_task(celery_app, SWEEP)
    assert pushes_of(fcm, uuid.UUID(again["id"])) == []

    clock.now = utc(2026, 6, 2, 5, 0)
    await run_task(celery_app, SWEEP)
    await wait_for_push_done(app, uuid.UUID(again["id"]))
    assert len(pushes_of(fcm, uuid.UUID(again["id"]))) == 1


async def test_a_goal_no_longer_in_progress_drops_its_snooze(
    celery_app: Any, client: Any, app: Any, register: Any
) -> None:
    """Archived, completed, deleted (the snooze goes with the goal) or, for a habit, done today
    since the snooze: nothing comes again. The goal still in progress gets its reminder."""
    clock = TestClock(START).install()
    account = await register()
    user_id = await user_id_of(client, account)
    goals = {
        name: await goal_with_reminder(client, account, title=name)
        for name in ("archived", "completed", "deleted", "in progress")
    }
    goals["habit"] = await goal_with_reminder(
        client, account, title="habit", kind="habit", schedule={"type": "daily"}
    )
    for goal in goals.values():
        notification_id = await reminder_of(app, user_id, goal)
        assert (await snooze(client, account, notification_id, 10)).status_code == 202
    assert len(await pending(app)) == 5

    archived, completed, deleted = goals["archived"], goals["completed"], goals["deleted"]
    await client.put(f"/goals/{archived['id']}/archive", headers=account.headers)
    stage = completed["stages"][0]["id"]
    await client.put(f"/goals/{completed['id']}/stages/{stage}/complete", headers=account.headers)
    await client.delete(f"/goals/{deleted['id']}", headers=account.headers)
    assert len(await pending(app)) == 4  # the deleted goal's went with it
    checked = await client.post(
        f"/goals/{goals['habit']['id']}/checkins", json={}, headers=account.headers
    )
    assert checked.status_code == 201, checked.text

    clock.now = START + timedelta(minutes=10)
    assert await run_task(celery_app, FIRE) == 4
    assert await pending(app) == []
    came = await reminders_in_feed(client, account)
    assert [item["data"]["goal_id"] for item in came[:1]] == [goals["in progress"]["id"]]
    assert len(came) == 6  # the five originals and the one that came again


async def test_concurrent_claimers_fire_each_snooze_once(app: Any) -> None:
    """200 due snoozes, four claimers in batches of 25 at once: each reminder comes once."""
    now = utc(2026, 6, 1, 12, 0)
    owners = await seed_users(app, 200, QuietHours(time(1, 0), time(2, 0)))
    await add_snoozes(app, owners, now - timedelta(minutes=1))

    async def claimer() -> int:
        claimed = 0
        while True:
            async with app.state.sessionmaker() as session, session.begin():
                batch = await snoozes.fire_due(session, now=now, batch=25)
            if not batch:
                return claimed
            claimed += batch

    claimed = await asyncio.gather(*(claimer() for _ in range(4)))
    assert sum(claimed) == 200
    async with app.state.sessionmaker() as session:
        came = list(await session.scalars(select(Notification)))
        left = await session.scalar(select(func.count()).select_from(NotificationSnooze))
    assert left == 0
    assert len(came) == 200
    assert len({row.user_id for row in came}) == 200
    assert {row.type for row in came} == {"reminder"}


# -- what cannot be snoozed ---------------------------------------------------------------------


async def test_only_the_callers_reminders_can_be_snoozed(
    client: Any, app: Any, register: Any
) -> None:
    TestClock(START).install()
    account, stranger = await register(), await register()
    user_id = await user_id_of(client, account)
    goal = await goal_with_reminder(client, account)
    reminder_id = await reminder_of(app, user_id, goal)
    digest_id = await write(app, user_id, DigestData(active_goals=1), "Your goals")

    assert_problem(await snooze(client, account, uuid.uuid4(), 10), 404, "not_found")
    assert_problem(await snooze(client, stranger, reminder_id, 10), 404, "not_found")
    assert_problem(await snooze(client, account, digest_id, 10), 409, "not_snoozable")
    await client.put(f"/goals/{goal['id']}/archive", headers=account.headers)
    assert_problem(await snooze(client, account, reminder_id, 10), 409, "not_snoozable")
    await client.put(f"/goals/{goal['id']}/unarchive", headers=account.headers)
    await client.delete(f"/goals/{goal['id']}", headers=account.headers)
    assert_problem(await snooze(client, account, reminder_id, 10), 409, "not_snoozable")
    assert await pending(app) == []


@pytest.mark.parametrize(
    "body",
    [
        {"minutes": 4},
        {"minutes": 1441},
        {"minutes": "10"},
        {"minutes": 10.5},
        {"minutes": True},
        {"minutes": None},
        {},
        {"minutes": 10, "until": "2026-06-01T12:00:00Z"},
    ],
)
async def test_minutes_are_5_to_1440(
    client: Any, app: Any, register: Any, body: dict[str, Any]
) -> None:
    TestClock(START).install()
    account = await register()
    user_id = await user_id_of(client, account)
    reminder_id = await reminder_of(app, user_id, await goal_with_reminder(client, account))
    response = await client.post(
        f"/notifications/{reminder_id}/snooze", json=body, headers=account.headers
    )
    assert_problem(response, 422, "validation_error")
    for minutes in (5, 1440):
        assert (await snooze(client, account, reminder_id, minutes)).status_code == 202


# -- the account --------------------------------------------------------------------------------


async def test_export_has_quiet_hours_and_snoozes_and_hard_delete_takes_them(
    client: Any, app: Any, register: Any
) -> None:
    TestClock(START).install()
    account = await register()
    user_id = await user_id_of(client, account)
    await client.put(
        "/settings/notifications", json={"quiet_hours": NIGHT}, headers=account.headers
    )
    reminder_id = await reminder_of(app, user_id, await goal_with_reminder(client, account))
    assert (await snooze(client, account, reminder_id, 60)).status_code == 202

    async with app.state.sessionmaker() as session:
        document, _ = await collect(session, user_id, utcnow())
    assert document["settings"]["quiet_hours"] == {"start": time(22, 0), "end": time(7, 0)}
    [snoozed] = document["snoozes"]
    assert (snoozed["notification_id"], snoozed["due_at"]) == (
        reminder_id,
        START + timedelta(hours=1),
    )

    deleted = await client.request(
        "DELETE", "/account/data", json={"password": account.password}, headers=account.headers
    )
    assert deleted.status_code == 204, deleted.text
    assert await pending(app) == []
