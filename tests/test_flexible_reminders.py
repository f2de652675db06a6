"""Reminders on chosen weekdays, and a habit's reminder that fires only on its due days and only
while the day is not done (decided when it fires, under the goal's lock).

Time moves through the injectable clock (`now=` for the dispatcher, `TestClock` for the API and
the in-process worker and beat), never by sleeping."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

from goaltrack.goals import checkins
from goaltrack.goals.models import Goal
from goaltrack.goals.schemas import CheckinCreate
from goaltrack.notifications.models import Notification
from goaltrack.scheduling import dispatcher as scheduler
from goaltrack.scheduling.models import ScheduledDelivery
from goaltrack.scheduling.occurrences import local_instant, next_reminder
from helpers import Account, TestClock, assert_problem, create_goal, wait_until
from test_scheduler import dispatch, running_beat

BERLIN = ZoneInfo("Europe/Berlin")


# --- the rule: next_reminder on weekdays -------------------------------------------------------


@pytest.mark.parametrize(
    "zone", ["Europe/Berlin", "America/Nuuk", "Australia/Lord_Howe", "Pacific/Apia"]
)
@pytest.mark.parametrize("remind_time", [time(0, 0), time(2, 30), time(23, 45)])
def test_weekday_occurrences_match_an_oracle_over_a_year(zone: str, remind_time: time) -> None:
    """Every 7 h over 2026 (both DST changes where the zone has them): the next occurrence is the
    earliest instant of a chosen weekday's wall time after `after`, dated on that weekday."""
    tz = ZoneInfo(zone)
    weekdays = (0, 3, 6)
    anchor = date(2025, 12, 29)
    after = datetime(2026, 1, 1, tzinfo=UTC)
    while after.year == 2026:
        got = next_reminder(
            anchor=anchor, remind_time=remind_time, weekdays=weekdays, zone=tz, after=after
        )
        first = after.astimezone(tz).date() - timedelta(days=1)
        expected = min(
            (local_instant(day, remind_time, tz), day)
            for day in (first + timedelta(days=i) for i in range(10))
            if day.weekday() in weekdays and local_instant(day, remind_time, tz) > after
        )
        assert got is not None
        assert (got.at, got.day) == expected, after
        after += timedelta(hours=7)


def test_weekdays_start_at_the_anchor_and_stop_at_the_deadline() -> None:
    sunday_gap = next_reminder(
        anchor=date(2026, 3, 25),
        remind_time=time(2, 30),
        weekdays=(6,),
        zone=BERLIN,
        after=datetime(2026, 3, 25, tzinfo=UTC),
    )
    # Berlin's spring-forward Sunday has no 02:30: the first instant after the gap, 03:00 CEST.
    assert sunday_gap is not None
    assert (sunday_gap.at, sunday_gap.day) == (
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        date(2026, 3, 29),
    )
    assert (
        next_reminder(
            anchor=date(2026, 3, 25),
            remind_time=time(9),
            weekdays=(6,),
            zone=BERLIN,
            after=datetime(2026, 3, 25, tzinfo=UTC),
            deadline=date(2026, 3, 28),
        )
        is None
    )
    for rhythm in (
        {},
        {"frequency_days": 1, "weekdays": (1,)},
        {"weekdays": ()},
        {"weekdays": (7,)},
    ):
        with pytest.raises(ValueError, match=r"frequency_days|weekdays"):
            next_reminder(
                anchor=date(2026, 3, 25),
                remind_time=time(9),
                zone=BERLIN,
                after=datetime(2026, 3, 25, tzinfo=UTC),
                **rhythm,
            )


# --- the API ------------------------------------------------------------------------------------

# Saturday 28 March 2026, 13:00 in Berlin: the night before it springs forward.
SATURDAY = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)


async def test_weekday_reminders_through_the_api(client: Any, user: Account) -> None:
    TestClock(SATURDAY).install()
    await client.put("/settings", json={"timezone": "Europe/Berlin"}, headers=user.headers)
    goal = await create_goal(client, user)
    url = f"/goals/{goal['id']}/reminders"

    made = await client.post(
        url, json={"remind_time": "09:00", "weekdays": [2, 0]}, headers=user.headers
    )
    assert made.status_code == 201, made.text
    reminder = made.json()
    assert reminder["weekdays"] == [0, 2]  # stored sorted
    assert (reminder["frequency_days"], reminder["only_if_not_done"]) == (None, False)
    assert reminder["next_fire_at"] == "2026-03-30T07:00:00Z"  # Monday 09:00 CEST

    today = await client.post(
        url, json={"remind_time": "14:00", "weekdays": [5]}, headers=user.headers
    )
    assert today.json()["next_fire_at"] == "2026-03-28T13:00:00Z"  # this Saturday, 14:00 CET

    # A new rhythm replaces the old one, either way.
    every_two = await client.put(
        f"{url}/{reminder['id']}", json={"frequency_days": 2}, headers=user.headers
    )
    assert (every_two.json()["frequency_days"], every_two.json()["weekdays"]) == (2, None)
    sundays = await client.put(
        f"{url}/{reminder['id']}", json={"weekdays": [6]}, headers=user.headers
    )
    assert (sundays.json()["frequency_days"], sundays.json()["weekdays"]) == (None, [6])
    assert sundays.json()["next_fire_at"] == "2026-03-29T07:00:00Z"  # Sunday 09:00 CEST
    detail = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert [r["weekdays"] for r in detail["reminders"]] == [[6], [5]]

    daily = await client.post(url, json={"remind_time": "18:00"}, headers=user.headers)
    assert (daily.json()["frequency_days"], daily.json()["weekdays"]) == (1, None)  # by default
    for body in (
        {"remind_time": "09:00", "weekdays": None},
        {"remind_time": "09:00", "frequency_days": 1, "weekdays": [1]},
        {"remind_time": "09:00", "weekdays": []},
        {"remind_time": "09:00", "weekdays": [7]},
        {"remind_time": "09:00", "weekdays": [1, 1]},
        {"remind_time": "09:00", "weekdays": ["1"]},
        {"remind_time": "09:00", "weekdays": [1], "only_if_not_done": "yes"},
    ):
        assert_problem(
            await client.post(url, json=body, headers=user.headers), 422, "validation_error"
        )
    for body in (
        {"weekdays": None},
        {"frequency_days": 1, "weekdays": [2]},
        {"only_if_not_done": None},
    ):
        response = await client.put(f"{url}/{reminder['id']}", json=body, headers=user.headers)
        assert_problem(response, 422, "validation_error")

    # A plain goal has no day to be done.
    refused = await client.post(
        url,
        json={"remind_time": "09:00", "weekdays": [1], "only_if_not_done": True},
        headers=user.headers,
    )
    assert_problem(refused, 409, "not_a_habit")
    kept = await client.post(
        url,
        json={"remind_time": "10:00", "weekdays": [1], "only_if_not_done": False},
        headers=user.headers,
    )
    assert kept.status_code == 201


async def test_a_habits_reminder_waits_for_the_day_not_done_by_default(
    client: Any, user: Account
) -> None:
    TestClock(SATURDAY).install()
    goal = await create_goal(
        client,
        user,
        title="Stretch",
        kind="habit",
        schedule={"type": "daily"},
        reminder={"remind_time": "20:00", "frequency_days": 1},
    )
    [reminder] = goal["reminders"]
    assert reminder["only_if_not_done"] is True
    url = f"/goals/{goal['id']}/reminders"
    changed = await client.put(
        f"{url}/{reminder['id']}", json={"only_if_not_done": False}, headers=user.headers
    )
    assert changed.json()["only_if_not_done"] is False
    explicit = await client.post(
        url,
        json={"remind_time": "21:00", "weekdays": [0], "only_if_not_done": False},
        headers=user.headers,
    )
    assert explicit.json()["only_if_not_done"] is False


# --- the dispatcher: decided when it fires --------------------------------------------------------


async def sent_and_served(app: Any, goal_id: str) -> tuple[list[date], list[date]]:
    """The local dates of this goal's reminder occurrences: sent, and served (sent or not)."""
    async with app.state.sessionmaker() as session:
        rows = (
            await session.execute(
                select(ScheduledDelivery.local_date, ScheduledDelivery.notification_id)
                .join(
                    Notification, Notification.id == ScheduledDelivery.notification_id, isouter=True
                )
                .where(
                    ScheduledDelivery.kind == "reminder",
                    ScheduledDelivery.user_id
                    == select(Goal.user_id).where(Goal.id == uuid.UUID(goal_id)).scalar_subquery(),
                )
                .order_by(ScheduledDelivery.local_date)
            )
        ).all()
    return [day for day, sent in rows if sent is not None], [day for day, _ in rows]


async def habit_with_reminder(
    client: Any, user: Account, schedule: dict[str, Any], **reminder: Any
) -> dict[str, Any]:
    return await create_goal(
        client,
        user,
        title="Read",
        kind="habit",
        schedule=schedule,
        reminder={"remind_time": "20:00", "frequency_days": 1, **reminder},
    )


async def checkin(client: Any, user: Account, goal_id: str, **body: Any) -> None:
    response = await client.post(f"/goals/{goal_id}/checkins", json=body, headers=user.headers)
    assert response.status_code == 201, response.text


# Monday 1 June 2026, 08:00 UTC.
MONDAY = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


async def evenings(app: Any, days: int) -> list[scheduler.Served]:
    """Tick a second after 20:00 UTC on each of `days` days from MONDAY."""
    return [
        await dispatch(app, MONDAY.replace(hour=20, second=1) + timedelta(days=i))
        for i in range(days)
    ]


async def test_a_done_day_silences_the_reminder_and_an_undone_one_does_not(
    client: Any, app: Any, user: Account
) -> None:
    clock = TestClock(MONDAY).install()
    goal = await habit_with_reminder(client, user, {"type": "daily"})
    await checkin(client, user, goal["id"])  # Monday done
    [monday] = await evenings(app, 1)
    assert (monday.claimed, monday.sent, monday.unwanted) == (1, 0, 1)
    # Tuesday: checked in, then undone before the evening: it fires.
    clock.now += timedelta(days=1)
    await checkin(client, user, goal["id"])
    undone = await client.delete(f"/goals/{goal['id']}/checkins/2026-06-02", headers=user.headers)
    assert undone.status_code == 204
    tuesday = await dispatch(app, datetime(2026, 6, 2, 20, 0, 1, tzinfo=UTC))
    assert (tuesday.sent, tuesday.unwanted) == (1, 0)
    # Every occurrence is served once, sent or not.
    assert await sent_and_served(app, goal["id"]) == (
        [date(2026, 6, 2)],
        [date(2026, 6, 1), date(2026, 6, 2)],
    )


@pytest.mark.parametrize(
    ("schedule", "checked", "sent"),
    [
        # Monday, Wednesday, Friday: a daily reminder fires on those only.
        ({"type": "weekdays", "days": [0, 2, 4]}, [], [1, 3, 5]),
        # Every 3 days from Monday: Monday, Thursday, Sunday.
        ({"type": "every_n_days", "n": 3}, [], [1, 4, 7]),
        # Twice a week, done Monday and Tuesday: the week's count is met, nothing more is due.
        ({"type": "times_per_week", "count": 2}, [0, 1], []),
        # Twice a week, done Tuesday only: due every day until the second; not on Tuesday itself.
        ({"type": "times_per_week", "count": 2}, [1], [1, 3, 4, 5, 6, 7]),
    ],
)
async def test_a_habits_reminder_fires_on_due_days_not_done(
    client: Any,
    app: Any,
    user: Account,
    schedule: dict[str, Any],
    checked: list[int],
    sent: list[int],
) -> None:
    clock = TestClock(MONDAY).install()
    goal = await habit_with_reminder(client, user, schedule)
    for offset in checked:  # backfilled on Tuesday evening, before that tick
        clock.now = MONDAY + timedelta(days=1, hours=11)
        await checkin(client, user, goal["id"], date=str(date(2026, 6, 1 + offset)))
    for day in range(7):
        clock.now = MONDAY + timedelta(days=day)
        if day == 1:
            clock.now += timedelta(hours=11)  # after Tuesday's backfill
        await dispatch(app, MONDAY.replace(hour=20, second=1) + timedelta(days=day))
    sent_days, served = await sent_and_served(app, goal["id"])
    assert [day.day for day in sent_days] == sent
    assert len(served) == 7  # each evening served once, whether sent or not


async def test_only_if_not_done_off_still_fires_on_due_days_only(
    client: Any, app: Any, user: Account
) -> None:
    TestClock(MONDAY).install()
    goal = await habit_with_reminder(
        client, user, {"type": "weekdays", "days": [0, 1]}, only_if_not_done=False
    )
    await checkin(client, user, goal["id"])
    await evenings(app, 3)
    sent_days, _ = await sent_and_served(app, goal["id"])
    assert sent_days == [date(2026, 6, 1), date(2026, 6, 2)]  # Monday done, yet reminded


async def test_a_checkin_racing_the_tick_lands_before_the_decision_or_after_the_send(
    client: Any, app: Any, user: Account
) -> None:
    """The claim locks the habit's row: a check-in in flight makes the tick pass the reminder by
    (the next tick finds the day done); a tick in flight makes the check-in wait for its send."""
    TestClock(MONDAY).install()
    goal = await habit_with_reminder(client, user, {"type": "daily"})
    goal_id = uuid.UUID(goal["id"])
    evening = datetime(2026, 6, 1, 20, 0, 1, tzinfo=UTC)

    # A check-in holds the goal (as the route does) and is not committed yet.
    async with app.state.sessionmaker() as session, session.begin():
        locked = await session.scalar(select(Goal).where(Goal.id == goal_id).with_for_update())
        assert locked is not None
        await checkins.add_checkin(
            session, app.state.settings, goal=locked, body=CheckinCreate(), now=MONDAY
        )
        passed_by = await dispatch(app, evening)
        assert passed_by.claimed == 0
    after = await dispatch(app, evening + timedelta(seconds=1))
    assert (after.claimed, after.sent, after.unwanted) == (1, 0, 1)

    # Tuesday: the tick claims first; the check-in waits for its commit.
    tuesday = evening + timedelta(days=1)
    async with app.state.sessionmaker() as session:
        async with session.begin():
            served = await scheduler.dispatch_reminders(
                session, now=tuesday, max_lateness=timedelta(minutes=60)
            )
            assert served.sent == 1
            TestClock(tuesday).install()
            racing = asyncio.create_task(
                client.post(f"/goals/{goal_id}/checkins", json={}, headers=user.headers)
            )

            async def waits_for_the_tick() -> bool:
                async with app.state.sessionmaker() as probe:
                    waiting = await probe.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                        )
                    )
                return bool(waiting)

            await wait_until(waits_for_the_tick)
            assert not racing.done()
        response = await racing
    assert response.status_code == 201, response.text
    sent_days, _ = await sent_and_served(app, goal["id"])
    assert sent_days == [date(2026, 6, 2)]


# --- through the real beat, worker and FCM fake ---------------------------------------------------


def pushed_for(fcm: Any, goal_id: str) -> list[dict[str, Any]]:
    return [
        r["message"]
        for r in fcm.delivered
        if r["message"]["data"]["type"] == "reminder" and r["message"]["data"]["goal_id"] == goal_id
    ]


async def served_dates(app: Any, goal_id: str) -> list[date]:
    async with app.state.sessionmaker() as session:
        return list(
            await session.scalars(
                select(ScheduledDelivery.local_date)
                .join(Notification, Notification.id == ScheduledDelivery.notification_id)
                .where(Notification.data["goal_id"].astext == goal_id)
                .order_by(ScheduledDelivery.local_date)
            )
        )


@pytest.mark.e2e
async def test_weekday_reminders_across_berlins_dst_nights_through_the_worker(
    client: Any, app: Any, user: Account, fcm: Any, tmp_path: Path
) -> None:
    """Sundays at 02:30 in Berlin: 02:30 does not exist on 29 March (sent at 03:00 CEST) and
    happens twice on 25 October (sent once, the first time); no other day is reminded."""
    clock = TestClock(datetime(2026, 3, 27, 12, tzinfo=UTC)).install()
    await client.put("/settings", json={"timezone": "Europe/Berlin"}, headers=user.headers)
    await client.post(
        "/devices", json={"token": "phone-w", "platform": "android"}, headers=user.headers
    )
    sundays = {"remind_time": "02:30", "weekdays": [6]}
    spring = await create_goal(client, user, title="Spring", reminder=sundays)

    async def pushes_reach(goal: dict[str, Any], count: int) -> None:
        await wait_until(lambda: len(pushed_for(fcm, goal["id"])) >= count, timeout=30)

    with running_beat(tmp_path):
        clock.now = datetime(2026, 3, 29, 1, 0, 30, tzinfo=UTC)  # 03:00:30 CEST
        await pushes_reach(spring, 1)
        clock.now = datetime(2026, 4, 5, 0, 30, 30, tzinfo=UTC)  # 02:30:30 CEST
        await pushes_reach(spring, 2)
        await client.delete(f"/goals/{spring['id']}", headers=user.headers)

        clock.now = datetime(2026, 10, 23, 12, tzinfo=UTC)
        autumn = await create_goal(client, user, title="Autumn", reminder=sundays)
        # A daily 03:00 on another goal: its push on the 25th (02:00 UTC) proves that ticks ran
        # after the second 02:30 (01:30 UTC), which must not send again.
        canary = await create_goal(
            client, user, title="Canary", reminder={"remind_time": "03:00", "frequency_days": 1}
        )
        clock.now = datetime(2026, 10, 25, 0, 30, 30, tzinfo=UTC)  # the first 02:30, CEST
        await pushes_reach(autumn, 1)
        clock.now = datetime(2026, 10, 25, 2, 0, 30, tzinfo=UTC)  # 03:00:30 CET
        await pushes_reach(canary, 1)
        clock.now = datetime(2026, 11, 1, 1, 30, 30, tzinfo=UTC)  # 02:30:30 CET
        await pushes_reach(autumn, 2)

    assert len(pushed_for(fcm, autumn["id"])) == 2
    assert await served_dates(app, autumn["id"]) == [date(2026, 10, 25), date(2026, 11, 1)]
