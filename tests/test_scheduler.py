"""The scheduler: reminders and digests at the user's local wall-clock time, exactly once.

Time is driven through the injectable clock (`now=` for the dispatch functions, `get_now` for
the API, `set_clock` for the in-process worker and beat), never by sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from goaltrack.clock import get_now, set_clock
from goaltrack.goals.models import GoalReminder
from goaltrack.notifications.models import Notification
from goaltrack.profile.models import UserSettings
from goaltrack.scheduling import dispatcher as scheduler
from goaltrack.scheduling.models import ScheduledDelivery
from helpers import Account, TestClock, beats_and_workers, seed_users_with_goals, wait_until

LATENESS = timedelta(minutes=60)


async def create_goal(client: Any, account: Account, **body: Any) -> dict[str, Any]:
    response = await client.post(
        "/goals", json={"title": "Learn Spanish", **body}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    goal: dict[str, Any] = response.json()
    return goal


async def add_reminder(
    client: Any, account: Account, goal_id: str, at: str, every: int = 1
) -> dict[str, Any]:
    response = await client.post(
        f"/goals/{goal_id}/reminders",
        json={"remind_time": at, "frequency_days": every},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    reminder: dict[str, Any] = response.json()
    return reminder


async def dispatch(
    app: Any, now: datetime, what: Any = scheduler.dispatch_reminders
) -> scheduler.Served:
    async with app.state.sessionmaker() as session, session.begin():
        served: scheduler.Served = await what(session, now=now, max_lateness=LATENESS)
    return served


async def next_fire_at(app: Any, reminder_id: str) -> datetime | None:
    async with app.state.sessionmaker() as session:
        return await session.scalar(
            select(GoalReminder.next_fire_at).where(GoalReminder.id == uuid.UUID(reminder_id))
        )


async def ledger(app: Any, kind: str = "reminder") -> list[ScheduledDelivery]:
    async with app.state.sessionmaker() as session:
        return list(
            await session.scalars(
                select(ScheduledDelivery)
                .where(ScheduledDelivery.kind == kind)
                .order_by(ScheduledDelivery.scheduled_for)
            )
        )


async def feed_types(app: Any, kind: str) -> list[Notification]:
    async with app.state.sessionmaker() as session:
        return list(
            await session.scalars(
                select(Notification)
                .where(Notification.type == kind)
                .order_by(Notification.created_at)
            )
        )


async def run_until(app: Any, until: datetime) -> None:
    """Tick one second after each next due reminder, until `until`."""
    while True:
        async with app.state.sessionmaker() as session:
            due = await session.scalar(select(func.min(GoalReminder.next_fire_at)))
        if due is None or due > until:
            return
        await dispatch(app, due + timedelta(seconds=1))


async def test_reminder_sends_its_notification_and_moves_on(
    client: Any, app: Any, register: Any
) -> None:
    account = await register(timezone="Europe/Berlin")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    goal = await create_goal(client, account)
    stage = (
        await client.post(
            f"/goals/{goal['id']}/stages", json={"title": "Buy a textbook"}, headers=account.headers
        )
    ).json()
    reminder = await add_reminder(client, account, goal["id"], "09:00")
    assert reminder["next_fire_at"] == "2026-06-01T07:00:00Z"

    early = await dispatch(app, datetime(2026, 6, 1, 6, 59, 59, tzinfo=UTC))
    assert early.claimed == 0
    served = await dispatch(app, datetime(2026, 6, 1, 7, 0, 1, tzinfo=UTC))
    assert (served.claimed, served.sent) == (1, 1)
    [notification] = await feed_types(app, "reminder")
    assert notification.title == "Time for: Learn Spanish"
    assert notification.body == "Next: Buy a textbook"
    assert notification.data["goal_id"] == goal["id"]
    assert notification.data["stage_id"] == stage["id"]
    assert await next_fire_at(app, reminder["id"]) == datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    again = await dispatch(app, datetime(2026, 6, 1, 7, 0, 2, tzinfo=UTC))
    assert again.claimed == 0


async def test_one_send_per_due_local_day_across_nuuk_spring_forward(
    client: Any, app: Any, register: Any
) -> None:
    """Nuuk springs forward at Saturday 23:00 -> Sunday 00:00 (2026-03-28): a 23:30 reminder's
    Saturday occurrence fires at Sunday 00:00 and still counts as Saturday's, even with a
    Saturday deadline; no local date is served twice."""
    zone = ZoneInfo("America/Nuuk")
    saturday = date(2026, 3, 28)
    account = await register(timezone="America/Nuuk")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 3, 26, 12, 0, tzinfo=UTC)
    open_ended = await create_goal(client, account, title="Daily Spanish")
    due_saturday = await create_goal(client, account, title="Essay", deadline=saturday.isoformat())
    every_day = await add_reminder(client, account, open_ended["id"], "23:30")
    until_deadline = await add_reminder(client, account, due_saturday["id"], "23:30")

    await run_until(app, datetime(2026, 3, 31, 12, 0, tzinfo=UTC))
    rows = await ledger(app)
    fired = [row.scheduled_for for row in rows if str(row.reminder_id) == every_day["id"]]
    fired_deadline = [
        row.scheduled_for for row in rows if str(row.reminder_id) == until_deadline["id"]
    ]

    local = [instant.astimezone(zone) for instant in fired]
    assert [(t.date().isoformat(), t.strftime("%H:%M")) for t in local] == [
        ("2026-03-26", "23:30"),
        ("2026-03-27", "23:30"),
        ("2026-03-29", "00:00"),  # Saturday's, pushed through the gap
        ("2026-03-29", "23:30"),
        ("2026-03-30", "23:30"),
    ]
    by_reminder: dict[uuid.UUID, list[date]] = {}
    for row in rows:
        assert row.reminder_id is not None
        by_reminder.setdefault(row.reminder_id, []).append(row.local_date)
    assert by_reminder[uuid.UUID(every_day["id"])] == [
        date(2026, 3, 26),
        date(2026, 3, 27),
        saturday,
        date(2026, 3, 29),
        date(2026, 3, 30),
    ]
    # The deadline day's occurrence is sent although its instant is on Sunday; nothing after.
    assert [t.astimezone(zone).strftime("%d %H:%M") for t in fired_deadline] == [
        "26 23:30",
        "27 23:30",
        "29 00:00",
    ]
    assert by_reminder[uuid.UUID(until_deadline["id"])][-1] == saturday
    assert await next_fire_at(app, until_deadline["id"]) is None
    assert len(await feed_types(app, "reminder")) == 8


async def test_a_zone_change_neither_resends_nor_skips(
    client: Any, app: Any, register: Any
) -> None:
    """Casablanca (UTC+1) -> Antarctica/Troll (UTC+0) at 23:33Z, a 00:00 reminder: Casablanca's
    midnight fired at 23:00Z; Troll's midnight an hour later is the same local date: not again.
    Troll's next midnight is the next one sent, not later."""
    instant = datetime(2026, 11, 9, 23, 0, tzinfo=UTC)
    assert instant.astimezone(ZoneInfo("Africa/Casablanca")).utcoffset() == timedelta(hours=1)
    assert instant.astimezone(ZoneInfo("Antarctica/Troll")).utcoffset() == timedelta(0)
    account = await register(timezone="Africa/Casablanca")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 11, 9, 12, 0, tzinfo=UTC)
    goal = await create_goal(client, account)
    reminder = await add_reminder(client, account, goal["id"], "00:00")
    assert await next_fire_at(app, reminder["id"]) == instant  # 00:00 on the 10th in Casablanca
    assert (await dispatch(app, instant + timedelta(seconds=5))).sent == 1

    app.dependency_overrides[get_now] = lambda: datetime(2026, 11, 9, 23, 33, tzinfo=UTC)
    response = await client.put(
        "/settings", json={"timezone": "Antarctica/Troll"}, headers=account.headers
    )
    assert response.status_code == 200
    # Troll's 00:00 on the 10th (00:00Z) was served in Casablanca already: the next is the 11th.
    assert await next_fire_at(app, reminder["id"]) == datetime(2026, 11, 11, 0, 0, tzinfo=UTC)
    await run_until(app, datetime(2026, 11, 12, 1, 0, tzinfo=UTC))
    fired = [row.scheduled_for for row in await ledger(app)][1:]
    assert fired == [
        datetime(2026, 11, 11, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 12, 0, 0, tzinfo=UTC),
    ]
    assert [row.local_date for row in await ledger(app)] == [
        date(2026, 11, 10),
        date(2026, 11, 11),
        date(2026, 11, 12),
    ]

    # Back east (Tokyo, UTC+9) at 01:00Z on the 12th: it is 10:00 on the 12th there, whose midnight
    # has passed; the 13th's midnight (15:00Z on the 12th) is next, 14 hours on, not days.
    app.dependency_overrides[get_now] = lambda: datetime(2026, 11, 12, 1, 0, tzinfo=UTC)
    await client.put("/settings", json={"timezone": "Asia/Tokyo"}, headers=account.headers)
    assert await next_fire_at(app, reminder["id"]) == datetime(2026, 11, 12, 15, 0, tzinfo=UTC)


async def test_catch_up_once_after_downtime_and_skip_when_too_late(
    client: Any, app: Any, register: Any
) -> None:
    account = await register(timezone="UTC")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    goal = await create_goal(client, account)
    reminder = await add_reminder(client, account, goal["id"], "09:00")

    # Beat was down from 09:00 to 09:10: the ticks resume and the occurrence is sent once.
    for minute in range(10, 15):
        await dispatch(app, datetime(2026, 6, 1, 9, minute, tzinfo=UTC))
    assert len(await feed_types(app, "reminder")) == 1
    assert await next_fire_at(app, reminder["id"]) == datetime(2026, 6, 2, 9, 0, tzinfo=UTC)

    # Down for 90 minutes (over REMINDER_MAX_LATENESS_MINUTES): skipped and counted, not sent.
    late = await dispatch(app, datetime(2026, 6, 2, 10, 30, tzinfo=UTC))
    assert (late.claimed, late.sent, late.late) == (1, 0, 1)
    assert len(await feed_types(app, "reminder")) == 1
    skipped = (await ledger(app))[-1]
    assert (skipped.local_date, skipped.notification_id) == (date(2026, 6, 2), None)
    assert await next_fire_at(app, reminder["id"]) == datetime(2026, 6, 3, 9, 0, tzinfo=UTC)


async def test_no_reminder_for_completed_or_archived_goals(
    client: Any, app: Any, register: Any
) -> None:
    account = await register(timezone="UTC")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    archived = await create_goal(client, account, title="Archived")
    await add_reminder(client, account, archived["id"], "09:00")
    await client.put(f"/goals/{archived['id']}/archive", headers=account.headers)
    done = await create_goal(client, account, title="Done")
    await add_reminder(client, account, done["id"], "09:00")
    stage = (
        await client.post(
            f"/goals/{done['id']}/stages", json={"title": "Only"}, headers=account.headers
        )
    ).json()
    await client.put(f"/goals/{done['id']}/stages/{stage['id']}/complete", headers=account.headers)
    served = await dispatch(app, datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC))
    assert served.claimed == 0
    assert await feed_types(app, "reminder") == []


async def seed_due_reminders(app: Any, count: int, due: datetime) -> None:
    """`count` users, each with a goal and a reminder due at `due` (rows as the API writes them)."""
    owners = await seed_users_with_goals(app, count)
    async with app.state.sessionmaker() as session, session.begin():
        for _, goal_id in owners:
            session.add(
                GoalReminder(
                    goal_id=goal_id,
                    remind_time=due.time().replace(tzinfo=None),
                    frequency_days=1,
                    anchor_date=due.date(),
                    next_fire_at=due,
                    next_fire_date=due.date(),
                )
            )


async def test_concurrent_dispatchers_send_each_occurrence_once(app: Any) -> None:
    due = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    await seed_due_reminders(app, 200, due)

    async def dispatcher() -> int:
        sent = 0
        while (served := await dispatch_batch(app, due + timedelta(seconds=30))).claimed:
            sent += served.sent
        return sent

    sent = await asyncio.gather(*(dispatcher() for _ in range(4)))
    assert sum(sent) == 200
    assert len(await feed_types(app, "reminder")) == 200
    assert len(await ledger(app)) == 200


async def dispatch_batch(app: Any, now: datetime) -> scheduler.Served:
    async with app.state.sessionmaker() as session, session.begin():
        served: scheduler.Served = await scheduler.dispatch_reminders(
            session, now=now, max_lateness=LATENESS, batch=25
        )
    return served


async def test_digest_summarises_active_goals_in_the_users_language(
    client: Any, app: Any, register: Any
) -> None:
    account = await register(timezone="Europe/Berlin", locale="ru")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 1, 5, 0, tzinfo=UTC)
    await create_goal(client, account, title="Выучить испанский", deadline="2026-06-05")
    await create_goal(client, account, title="Пробежать марафон")
    response = await client.put(
        "/settings/notifications/frequency",
        json={"frequency": "daily", "times": ["08:00"]},
        headers=account.headers,
    )
    assert response.status_code == 200
    served = await dispatch(
        app, datetime(2026, 6, 1, 6, 0, 5, tzinfo=UTC), scheduler.dispatch_digests
    )
    assert served.sent == 1
    [digest] = await feed_types(app, "digest")
    assert digest.title == "Ваши цели"
    # Russian plural forms (2 цели, 4 дня): the catalogue's three forms, chosen by ngettext.
    assert digest.body == "2 цели в работе. Срок цели «Выучить испанский» — через 4 дня."
    assert digest.data == {"active_goals": 2}


async def test_no_digest_without_active_goals_and_none_when_off(
    client: Any, app: Any, register: Any
) -> None:
    account = await register(timezone="UTC")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    await client.put(
        "/settings/notifications/frequency",
        json={"frequency": "daily", "times": ["08:00"]},
        headers=account.headers,
    )
    served = await dispatch(
        app, datetime(2026, 6, 1, 8, 0, 5, tzinfo=UTC), scheduler.dispatch_digests
    )
    assert (served.claimed, served.sent, served.empty) == (1, 0, 1)
    await client.put(
        "/settings/notifications/frequency",
        json={"frequency": "off", "times": []},
        headers=account.headers,
    )
    served = await dispatch(
        app, datetime(2026, 6, 3, 8, 0, 5, tzinfo=UTC), scheduler.dispatch_digests
    )
    assert served.claimed == 0
    assert await feed_types(app, "digest") == []


async def test_digest_times_in_one_dst_gap_are_merged(client: Any, app: Any, register: Any) -> None:
    """Berlin 2026-03-29: 02:30 and 03:00 both become 03:00 CEST (01:00Z). One digest, not two
    identical ones at the same instant; the next day both times send."""
    account = await register(timezone="Europe/Berlin")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    await create_goal(client, account)
    await client.put(
        "/settings/notifications/frequency",
        json={"frequency": "daily", "times": ["02:30", "03:00"]},
        headers=account.headers,
    )
    instants = []
    now = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    while now < datetime(2026, 3, 30, 12, 0, tzinfo=UTC):
        now += timedelta(minutes=15)
        if (await dispatch(app, now, scheduler.dispatch_digests)).sent:
            instants.append(now)
    assert instants == [
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST, for the 02:30 slot
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2026, 3, 30, 1, 0, tzinfo=UTC),  # 03:00 CEST
    ]
    assert [(row.local_date, row.local_time) for row in await ledger(app, "digest")] == [
        (date(2026, 3, 29), time(2, 30)),
        (date(2026, 3, 30), time(2, 30)),
        (date(2026, 3, 30), time(3, 0)),
    ]


@contextlib.contextmanager
def running_beat(tmp_path: Path) -> Iterator[None]:
    """The real beat, embedded in a thread, ticking every second; the session's worker runs what
    it sends. Its Celery app comes from the same factory as `goaltrack beat`."""
    from celery.beat import EmbeddedService

    from goaltrack.celery_app import create_celery
    from goaltrack.config import get_settings

    app = create_celery(get_settings().model_copy(update={"scheduler_interval_seconds": 1}))
    beat = EmbeddedService(app, thread=True, schedule_filename=str(tmp_path / "beat-schedule"))
    beat.start()
    try:
        yield
    finally:
        beat.stop()
        beat.join(timeout=10)
        app.close()


async def pushed(fcm: Any, kind: str) -> dict[str, Any]:
    """The one push of this kind the fake FCM received (an achievement's may come too)."""

    def of_kind() -> list[dict[str, Any]]:
        return [r["message"] for r in fcm.delivered if r["message"]["data"]["type"] == kind]

    await wait_until(lambda: bool(of_kind()), timeout=30)
    [message] = of_kind()
    return message


def shifted_clock(to: datetime) -> None:
    """From now on the process (API and the in-thread worker) lives at `to`, time flowing."""
    offset = to - datetime.now(UTC)
    set_clock(lambda: datetime.now(UTC) + offset)


@pytest.mark.e2e
async def test_reminder_end_to_end_through_beat_worker_and_fcm(
    client: Any, register: Any, fcm: Any, tmp_path: Path
) -> None:
    due = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)  # 09:00 in Berlin
    shifted_clock(due - timedelta(seconds=3))
    account = await register(timezone="Europe/Berlin")
    await client.post(
        "/devices", json={"token": "phone-1", "platform": "android"}, headers=account.headers
    )
    goal = await create_goal(client, account)
    stage = (
        await client.post(
            f"/goals/{goal['id']}/stages", json={"title": "Vocabulary"}, headers=account.headers
        )
    ).json()
    reminder = await add_reminder(client, account, goal["id"], "09:00")
    assert reminder["next_fire_at"] == "2026-06-01T07:00:00Z"

    with running_beat(tmp_path):
        message = await pushed(fcm, "reminder")
    assert message["token"] == "phone-1"
    assert message["notification"] == {
        "title": "Time for: Learn Spanish",
        "body": "Next: Vocabulary",
    }
    data = message["data"]
    assert data["type"] == "reminder"
    assert data["goal_id"] == goal["id"]
    assert data["stage_id"] == stage["id"]
    feed = (await client.get("/notifications", headers=account.headers)).json()
    reminders = [item for item in feed["items"] if item["type"] == "reminder"]
    assert [item["id"] for item in reminders] == [data["notification_id"]]


@pytest.mark.e2e
async def test_digest_end_to_end_through_beat_worker_and_fcm(
    client: Any, register: Any, fcm: Any, tmp_path: Path
) -> None:
    due = datetime(2026, 6, 1, 18, 30, tzinfo=UTC)  # 14:30 in New York
    shifted_clock(due - timedelta(seconds=3))
    account = await register(timezone="America/New_York")
    await client.post(
        "/devices", json={"token": "phone-2", "platform": "ios"}, headers=account.headers
    )
    await create_goal(client, account, deadline="2026-06-05")
    await client.put(
        "/settings/notifications/frequency",
        json={"frequency": "daily", "times": ["14:30"]},
        headers=account.headers,
    )
    with running_beat(tmp_path):
        message = await pushed(fcm, "digest")
    assert message["token"] == "phone-2"
    assert message["data"]["type"] == "digest"
    assert message["notification"] == {
        "title": "Your goals",
        "body": "1 goal in progress. 'Learn Spanish' is due in 4 days.",
    }


@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_exactly_once_with_two_beats_and_four_worker_processes(
    app: Any, tmp_path: Path
) -> None:
    """Real processes: two `goaltrack beat` and two `goaltrack worker --concurrency 2`, ticking
    every second, over 200 due reminders (plus the test session's own worker)."""
    now = datetime.now(UTC)
    await seed_due_reminders(app, 200, now - timedelta(seconds=1))

    async def sent() -> int:
        async with app.state.sessionmaker() as session:
            return int(await session.scalar(select(func.count()).select_from(Notification)) or 0)

    async def wait_for_sent(count: int) -> None:
        async def enough() -> bool:
            return await sent() >= count

        await wait_until(enough, timeout=120, interval=0.2)

    with beats_and_workers(tmp_path):
        await wait_for_sent(200)
        # A positive signal that the beats went on ticking: one more reminder, due now, is sent.
        await seed_due_reminders(app, 1, datetime.now(UTC))
        await wait_for_sent(201)
        async with app.state.sessionmaker() as session:
            pending = await session.scalar(
                select(func.count())
                .select_from(GoalReminder)
                .where(GoalReminder.next_fire_at <= datetime.now(UTC))
            )
        assert pending == 0
    assert await sent() == 201
    assert len(await ledger(app)) == 201


async def test_ledger_retention_forgets_old_occurrences_only(
    client: Any, app: Any, register: Any
) -> None:
    """The ledger keeps its rows as long as the notifications they announced; older rows go, and
    an occurrence already served is still never sent twice within the retention period."""
    account = await register(timezone="UTC")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    goal = await create_goal(client, account)
    await add_reminder(client, account, goal["id"], "09:00")
    await run_until(app, datetime(2026, 6, 3, 12, 0, tzinfo=UTC))
    assert [row.local_date.isoformat() for row in await ledger(app)] == [
        "2026-06-01",
        "2026-06-02",
        "2026-06-03",
    ]
    async with app.state.sessionmaker() as session, session.begin():
        deleted = await scheduler.delete_expired_deliveries(
            session,
            now=datetime(2026, 6, 3, 12, 0, tzinfo=UTC),
            retention=timedelta(days=1, hours=12),  # cut-off: 2026-06-02 00:00
        )
    assert deleted == 1
    assert [row.local_date.isoformat() for row in await ledger(app)] == [
        "2026-06-02",
        "2026-06-03",
    ]


# --- Every due occurrence: each served from the one before it, never skipped to "now" ----------
# A schedule holds one pending occurrence. Moving it, once served, to the first occurrence after
# *now* dropped whatever else was already due at that tick (a long outage's later occurrences, a
# second digest time a minute later); recomputing it from now on an edit dropped a due one.


async def tick(celery_app: Any) -> dict[str, int]:
    """One real tick: `scheduling.dispatch_due` on the session's worker, at the test clock's now.
    Returns its totals once the worker has run it (Celery's task_postrun names the task: a
    positive signal, where an idle queue could be a message popped and not yet reserved)."""
    from celery.signals import task_postrun

    sent = str(uuid.uuid4())
    totals: list[dict[str, int]] = []

    def finished(task_id: str = "", retval: Any = None, **_: Any) -> None:
        if task_id == sent:
            totals.append(retval)

    task_postrun.connect(finished, weak=False)
    try:
        celery_app.send_task("scheduling.dispatch_due", task_id=sent)
        await wait_until(lambda: bool(totals), timeout=60)
    finally:
        task_postrun.disconnect(finished)
    return totals[0]


async def served_by_zone(app: Any) -> list[tuple[str, str, str, str]]:
    """Every ledger row as (user's zone, kind, local "MM-DD HH:MM", sent or late)."""
    async with app.state.sessionmaker() as session:
        rows = await session.execute(
            select(
                UserSettings.timezone,
                ScheduledDelivery.kind,
                ScheduledDelivery.local_date,
                ScheduledDelivery.local_time,
                ScheduledDelivery.notification_id,
            )
            .join(UserSettings, UserSettings.user_id == ScheduledDelivery.user_id)
            .order_by(
                UserSettings.timezone, ScheduledDelivery.kind, ScheduledDelivery.scheduled_for
            )
        )
    return [
        (zone, kind, f"{day:%m-%d} {at:%H:%M}", "late" if notification is None else "sent")
        for zone, kind, day, at, notification in rows
    ]


async def set_digests(client: Any, account: Account, *times: str) -> None:
    response = await client.put(
        "/settings/notifications/frequency",
        json={"frequency": "daily", "times": list(times)},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text


async def next_digest_at(app: Any) -> list[datetime | None]:
    async with app.state.sessionmaker() as session:
        return list(
            await session.scalars(
                select(UserSettings.next_digest_at).order_by(UserSettings.timezone)
            )
        )


async def test_an_outage_longer_than_a_period_sends_the_window_and_records_the_rest(
    celery_app: Any, client: Any, app: Any, register: Any
) -> None:
    """Beat is down for 26 h, from 06:00Z on June 1 to 08:00:30Z on June 2. A Berlin (UTC+2) and
    a London (UTC+1) user each have a daily 09:00 reminder and digests at 09:00 and 09:01. The
    tick that resumes serves every occurrence of the outage, each from the one before it: those
    within the hour's lateness are sent (Berlin's 09:01 at 59.5 min, not its 09:00 at 60.5), the
    older ones recorded as late; London's 09:01, not yet due, goes with the next tick. None is
    sent twice, however many ticks follow."""
    clock = TestClock(datetime(2026, 6, 1, 5, 0, tzinfo=UTC)).install()
    for zone in ("Europe/Berlin", "Europe/London"):
        account = await register(timezone=zone)
        goal = await create_goal(client, account)
        await add_reminder(client, account, goal["id"], "09:00")
        await set_digests(client, account, "09:00", "09:01")
    clock.now = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    nothing = {"reminders": 0, "digests": 0, "late": 0}
    assert await tick(celery_app) == nothing  # the last tick before the outage

    clock.now = datetime(2026, 6, 2, 8, 0, 30, tzinfo=UTC)
    assert await tick(celery_app) == {"reminders": 1, "digests": 2, "late": 8}
    clock.now = datetime(2026, 6, 2, 8, 1, 0, 500000, tzinfo=UTC)
    assert await tick(celery_app) == {"reminders": 0, "digests": 1, "late": 0}
    clock.now = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
    assert await tick(celery_app) == nothing

    assert await served_by_zone(app) == [
        ("Europe/Berlin", "digest", "06-01 09:00", "late"),
        ("Europe/Berlin", "digest", "06-01 09:01", "late"),
        ("Europe/Berlin", "digest", "06-02 09:00", "late"),
        ("Europe/Berlin", "digest", "06-02 09:01", "sent"),
        ("Europe/Berlin", "reminder", "06-01 09:00", "late"),
        ("Europe/Berlin", "reminder", "06-02 09:00", "late"),
        ("Europe/London", "digest", "06-01 09:00", "late"),
        ("Europe/London", "digest", "06-01 09:01", "late"),
        ("Europe/London", "digest", "06-02 09:00", "sent"),
        ("Europe/London", "digest", "06-02 09:01", "sent"),  # with the tick at 08:01:00.5Z
        ("Europe/London", "reminder", "06-01 09:00", "late"),
        ("Europe/London", "reminder", "06-02 09:00", "sent"),
    ]
    assert len(await feed_types(app, "digest")) == 3
    assert len(await feed_types(app, "reminder")) == 1
    assert await next_digest_at(app) == [
        datetime(2026, 6, 3, 7, 0, tzinfo=UTC),
        datetime(2026, 6, 3, 8, 0, tzinfo=UTC),
    ]
    async with app.state.sessionmaker() as session:
        fire_at = sorted(await session.scalars(select(GoalReminder.next_fire_at)))
    assert fire_at == [
        datetime(2026, 6, 3, 7, 0, tzinfo=UTC),
        datetime(2026, 6, 3, 8, 0, tzinfo=UTC),
    ]


async def test_digest_times_a_minute_apart_both_send_when_the_tick_is_late(
    client: Any, app: Any, register: Any
) -> None:
    """09:00 and 09:01 in Berlin, the tick half a second after 09:01: both digests, once each."""
    account = await register(timezone="Europe/Berlin")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 1, 5, 0, tzinfo=UTC)
    await create_goal(client, account)
    await set_digests(client, account, "09:00", "09:01")

    tick = datetime(2026, 6, 1, 7, 1, 0, 500000, tzinfo=UTC)
    served = await dispatch(app, tick, scheduler.dispatch_digests)
    assert (served.claimed, served.sent, served.late) == (1, 2, 0)
    assert [(row.local_date, row.local_time) for row in await ledger(app, "digest")] == [
        (date(2026, 6, 1), time(9, 0)),
        (date(2026, 6, 1), time(9, 1)),
    ]
    assert len(await feed_types(app, "digest")) == 2
    assert (
        await dispatch(app, tick + timedelta(minutes=1), scheduler.dispatch_digests)
    ).claimed == 0
    assert await next_digest_at(app) == [datetime(2026, 6, 2, 7, 0, tzinfo=UTC)]


# An edit between an occurrence's due instant (07:00Z: 09:00 in Berlin) and the tick that serves
# it (07:00:30Z) recomputes the schedule: the due occurrence is still served, once.
DUE = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)
EDITED = DUE + timedelta(seconds=20)
TICK = DUE + timedelta(seconds=30)


async def test_a_deadline_edit_keeps_a_due_reminder(client: Any, app: Any, register: Any) -> None:
    account = await register(timezone="Europe/Berlin")
    app.dependency_overrides[get_now] = lambda: DUE - timedelta(hours=2)
    goal = await create_goal(client, account, deadline="2026-06-30")
    reminder = await add_reminder(client, account, goal["id"], "09:00")
    over = await create_goal(client, account, title="Abandoned", deadline="2026-06-30")
    await add_reminder(client, account, over["id"], "09:00")

    app.dependency_overrides[get_now] = lambda: EDITED
    later = await client.put(
        f"/goals/{goal['id']}", json={"deadline": "2026-07-31"}, headers=account.headers
    )
    assert later.json()["reminders"][0]["next_fire_at"] == "2026-06-01T07:00:00Z"  # still due
    # A deadline moved before the due occurrence's date: the goal takes no more reminders.
    earlier = await client.put(
        f"/goals/{over['id']}", json={"deadline": "2026-05-31"}, headers=account.headers
    )
    assert earlier.json()["reminders"][0]["next_fire_at"] is None

    served = await dispatch(app, TICK)
    assert (served.claimed, served.sent, served.late) == (1, 1, 0)
    [notification] = await feed_types(app, "reminder")
    assert notification.data["goal_id"] == goal["id"]
    assert [(str(row.reminder_id), row.local_date) for row in await ledger(app)] == [
        (reminder["id"], date(2026, 6, 1))
    ]
    assert await next_fire_at(app, reminder["id"]) == DUE + timedelta(days=1)
    assert (await dispatch(app, TICK + timedelta(minutes=1))).claimed == 0


async def test_a_zone_change_keeps_a_due_reminder_and_digest(
    client: Any, app: Any, register: Any
) -> None:
    """Berlin -> Tokyo at 07:00:20Z (16:00 in Tokyo): Berlin's due 09:00 is still served, as
    June 1's; Tokyo's next 09:00 (June 2, 00:00Z) follows."""
    account = await register(timezone="Europe/Berlin")
    app.dependency_overrides[get_now] = lambda: DUE - timedelta(hours=2)
    goal = await create_goal(client, account)
    reminder = await add_reminder(client, account, goal["id"], "09:00")
    await set_digests(client, account, "09:00")

    app.dependency_overrides[get_now] = lambda: EDITED
    response = await client.put(
        "/settings", json={"timezone": "Asia/Tokyo"}, headers=account.headers
    )
    assert response.status_code == 200, response.text

    assert (await dispatch(app, TICK)).sent == 1
    assert (await dispatch(app, TICK, scheduler.dispatch_digests)).sent == 1
    assert [row.local_date for row in await ledger(app)] == [date(2026, 6, 1)]
    assert [row.local_date for row in await ledger(app, "digest")] == [date(2026, 6, 1)]
    tokyo_nine = datetime(2026, 6, 2, 0, 0, tzinfo=UTC)
    assert await next_fire_at(app, reminder["id"]) == tokyo_nine
    assert await next_digest_at(app) == [tokyo_nine]
    assert (await dispatch(app, TICK + timedelta(minutes=1))).claimed == 0
    assert len(await feed_types(app, "reminder")) == len(await feed_types(app, "digest")) == 1


async def test_resaving_the_digest_times_keeps_a_due_digest(
    client: Any, app: Any, register: Any
) -> None:
    account = await register(timezone="Europe/Berlin")
    app.dependency_overrides[get_now] = lambda: DUE - timedelta(hours=2)
    await create_goal(client, account)
    await set_digests(client, account, "09:00", "18:00")

    app.dependency_overrides[get_now] = lambda: EDITED
    await set_digests(client, account, "09:00", "18:00")

    served = await dispatch(app, TICK, scheduler.dispatch_digests)
    assert (served.claimed, served.sent) == (1, 1)
    assert [(row.local_date, row.local_time) for row in await ledger(app, "digest")] == [
        (date(2026, 6, 1), time(9, 0))
    ]
    assert await next_digest_at(app) == [datetime(2026, 6, 1, 16, 0, tzinfo=UTC)]


async def test_a_zone_change_during_an_outage_keeps_the_outage(
    client: Any, app: Any, register: Any
) -> None:
    """Beat down from 06:00Z on June 1; the user moves Berlin -> London at 06:50Z on June 2. The
    outage's occurrences are still served: Berlin's June 1 recorded late, London's June 2 sent
    (London's June 1 is the same local date: not again)."""
    account = await register(timezone="Europe/Berlin")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 1, 5, 0, tzinfo=UTC)
    goal = await create_goal(client, account)
    reminder = await add_reminder(client, account, goal["id"], "09:00")

    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 2, 6, 50, tzinfo=UTC)
    await client.put("/settings", json={"timezone": "Europe/London"}, headers=account.headers)
    await dispatch(app, datetime(2026, 6, 2, 7, 30, tzinfo=UTC))
    await dispatch(app, datetime(2026, 6, 2, 8, 0, 30, tzinfo=UTC))
    assert [
        (row.local_date, row.scheduled_for, row.notification_id is not None)
        for row in await ledger(app)
    ] == [
        (date(2026, 6, 1), datetime(2026, 6, 1, 7, 0, tzinfo=UTC), False),  # Berlin's, late
        (date(2026, 6, 2), datetime(2026, 6, 2, 8, 0, tzinfo=UTC), True),  # London's
    ]
    assert await next_fire_at(app, reminder["id"]) == datetime(2026, 6, 3, 8, 0, tzinfo=UTC)


async def test_a_claim_catches_up_a_bounded_number_and_the_tick_goes_on(
    celery_app: Any, client: Any, app: Any, register: Any
) -> None:
    """Down for 17 days (to 09:30Z on June 18), a daily 09:00 reminder in UTC: 18 occurrences.
    One claim serves at most CATCH_UP (8) of them and leaves the reminder due from the next one;
    one tick goes on, claim after claim, until none is due: 17 recorded late, June 18's sent."""
    account = await register(timezone="UTC")
    clock = TestClock(datetime(2026, 6, 1, 5, 0, tzinfo=UTC)).install()
    goal = await create_goal(client, account)
    reminder = await add_reminder(client, account, goal["id"], "09:00")

    resumed = datetime(2026, 6, 18, 9, 30, tzinfo=UTC)
    first = await dispatch(app, resumed)
    assert (first.claimed, first.sent, first.late) == (1, 0, 8)
    assert scheduler.CATCH_UP == 8  # the dates below count on it
    assert first.left_due == 1
    assert len(await ledger(app)) == 8
    assert await next_fire_at(app, reminder["id"]) == datetime(2026, 6, 9, 9, 0, tzinfo=UTC)

    clock.now = resumed
    # Two claims in this one tick: June 9-16 (left due), then June 17-18.
    assert await tick(celery_app) == {"reminders": 1, "digests": 0, "late": 9}
    rows = await ledger(app)
    assert [row.local_date for row in rows] == [date(2026, 6, day) for day in range(1, 19)]
    assert [row.notification_id is not None for row in rows] == [False] * 17 + [True]
    assert len(await feed_types(app, "reminder")) == 1
    assert await next_fire_at(app, reminder["id"]) == datetime(2026, 6, 19, 9, 0, tzinfo=UTC)


async def test_concurrent_dispatchers_catch_up_each_occurrence_once(app: Any) -> None:
    """200 reminders three days behind, four dispatchers in batches of 25 serving at most two
    occurrences per reminder and claim: every reminder is left due and claimed again (by any of
    them); each of its four occurrences is served once, the one in the window sent."""
    due = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    await seed_due_reminders(app, 200, due)
    now = due + timedelta(days=3, seconds=30)

    async def dispatcher() -> scheduler.Served:
        total = scheduler.Served()
        while True:
            async with app.state.sessionmaker() as session, session.begin():
                served = await scheduler.dispatch_reminders(
                    session, now=now, max_lateness=LATENESS, batch=25, catch_up=2
                )
            if not served.claimed:
                return total
            total = scheduler.Served(
                claimed=total.claimed + served.claimed,
                sent=total.sent + served.sent,
                late=total.late + served.late,
                duplicate=total.duplicate + served.duplicate,
            )

    totals = await asyncio.gather(*(dispatcher() for _ in range(4)))
    assert sum(t.sent for t in totals) == 200
    assert sum(t.late for t in totals) == 600
    assert sum(t.claimed for t in totals) == 400  # each reminder claimed twice
    rows = await ledger(app)
    assert len(rows) == 800
    assert len({(row.reminder_id, row.local_date) for row in rows}) == 800
    assert len(await feed_types(app, "reminder")) == 200
    async with app.state.sessionmaker() as session:
        fire_at = set(await session.scalars(select(GoalReminder.next_fire_at)))
    assert fire_at == {due + timedelta(days=4)}


async def test_a_digest_counts_the_habits_still_to_do_today(
    client: Any, app: Any, register: Any
) -> None:
    account = await register(timezone="Europe/Berlin")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 1, 5, 0, tzinfo=UTC)
    TestClock(datetime(2026, 6, 1, 5, 0, tzinfo=UTC)).install()
    run, _ = [
        await create_goal(client, account, title=title, kind="habit", schedule={"type": "daily"})
        for title in ("Run", "Read")
    ]
    weekend = await create_goal(
        client,
        account,
        title="Long walk",
        kind="habit",
        schedule={"type": "weekdays", "days": [5, 6]},
    )
    assert weekend["due_today"] is False  # 1 June 2026 is a Monday
    done = await client.post(f"/goals/{run['id']}/checkins", json={}, headers=account.headers)
    assert done.status_code == 201, done.text
    await client.put(
        "/settings/notifications/frequency",
        json={"frequency": "daily", "times": ["08:00"]},
        headers=account.headers,
    )
    served = await dispatch(
        app, datetime(2026, 6, 1, 6, 0, 5, tzinfo=UTC), scheduler.dispatch_digests
    )
    assert served.sent == 1
    [digest] = await feed_types(app, "digest")
    # Three habits are active goals; one is due and not done ("Read").
    assert digest.body == "3 goals in progress. 1 habit to do today."
