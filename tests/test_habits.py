"""Habits through the API: creation, check-ins (today, backfill, undo, calendar), the figures
on the goal and the list, in the user's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from goaltrack.scheduling.occurrences import local_instant
from helpers import Account, TestClock, assert_problem, create_goal


async def habit(client: Any, user: Account, **schedule: Any) -> dict[str, Any]:
    return await create_goal(
        client, user, title="Run", kind="habit", schedule=schedule or {"type": "daily"}
    )


async def checkin(client: Any, user: Account, goal_id: str, **body: Any) -> Any:
    return await client.post(f"/goals/{goal_id}/checkins", json=body, headers=user.headers)


async def test_a_habit_counts_its_streak_in_the_users_zone(client: Any, user: Account) -> None:
    # 23:30 in Auckland on 10 March is still 10 March there (11:30 UTC).
    TestClock(datetime(2026, 3, 10, 10, 30, tzinfo=UTC)).install()
    await client.put("/settings", json={"timezone": "Pacific/Auckland"}, headers=user.headers)
    goal = await habit(client, user)
    assert goal["kind"] == "habit"
    assert goal["schedule"] == {"type": "daily"}
    assert goal["streak"] == {"current": 0, "longest": 0}
    assert (goal["due_today"], goal["done_today"]) == (True, False)

    made = await checkin(client, user, goal["id"], note="5 km")
    assert made.status_code == 201, made.text
    assert made.json()["date"] == "2026-03-10"
    assert made.headers["ETag"]
    again = await checkin(client, user, goal["id"])
    assert_problem(again, 409, "already_checked_in")

    fetched = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert fetched["streak"] == {"current": 1, "longest": 1}
    assert fetched["done_today"] is True
    listed = (await client.get("/goals", headers=user.headers)).json()["items"][0]
    assert {k: listed[k] for k in ("streak", "done_today", "due_today")} == {
        "streak": {"current": 1, "longest": 1},
        "done_today": True,
        "due_today": True,
    }


async def test_backfill_window_future_dates_and_undo(client: Any, user: Account) -> None:
    clock = TestClock(datetime(2026, 3, 10, 12, tzinfo=UTC)).install()
    goal = await habit(client, user)
    clock.now += timedelta(days=10)
    today = clock.now.date()
    for days_back in (1, 2, 3):
        response = await checkin(client, user, goal["id"], date=str(today - timedelta(days_back)))
        assert response.status_code == 201, response.text
    for bad in (today + timedelta(days=1), today - timedelta(days=8)):
        assert_problem(
            await checkin(client, user, goal["id"], date=str(bad)),
            422,
            "checkin_date_out_of_range",
        )
    fetched = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    # Today is not over: the three days before it count.
    assert fetched["streak"] == {"current": 3, "longest": 3}
    undo = await client.delete(
        f"/goals/{goal['id']}/checkins/{today - timedelta(days=2)}", headers=user.headers
    )
    assert undo.status_code == 204
    fetched = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert fetched["streak"] == {"current": 1, "longest": 1}
    calendar = await client.get(
        f"/goals/{goal['id']}/checkins",
        params={"from": str(today - timedelta(days=30)), "to": str(today)},
        headers=user.headers,
    )
    assert [item["date"] for item in calendar.json()["items"]] == [
        str(today - timedelta(days=3)),
        str(today - timedelta(days=1)),
    ]
    too_long = await client.get(
        f"/goals/{goal['id']}/checkins",
        params={"from": "2025-01-01", "to": "2026-12-31"},
        headers=user.headers,
    )
    assert_problem(too_long, 422, "invalid_range")


async def test_a_zone_change_never_moves_past_checkins(client: Any, user: Account) -> None:
    TestClock(datetime(2026, 6, 1, 22, tzinfo=UTC)).install()  # 1 June in UTC
    goal = await habit(client, user)
    assert (await checkin(client, user, goal["id"])).json()["date"] == "2026-06-01"
    # The same instant is 2 June in Tokyo: today there is not done, yesterday (1 June) is.
    await client.put("/settings", json={"timezone": "Asia/Tokyo"}, headers=user.headers)
    fetched = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert (fetched["done_today"], fetched["streak"]["current"]) == (False, 1)
    calendar = (await client.get(f"/goals/{goal['id']}/checkins", headers=user.headers)).json()
    assert [item["date"] for item in calendar["items"]] == ["2026-06-01"]


async def test_a_habits_etag_names_the_local_date(client: Any, user: Account) -> None:
    clock = TestClock(datetime(2026, 3, 10, 12, tzinfo=UTC)).install()
    goal = await habit(client, user)
    path = f"/goals/{goal['id']}"
    etag = (await client.get(path, headers=user.headers)).headers["ETag"]
    clock.now += timedelta(days=1)
    # Nothing was written, but due_today and the streak are a new day's: no 304.
    response = await client.get(path, headers={**user.headers, "If-None-Match": etag})
    assert response.status_code == 200
    assert response.headers["ETag"] != etag
    listed = await client.get("/goals", headers={**user.headers, "If-None-Match": etag})
    assert listed.status_code == 200
    # A write is compared on the data: yesterday's ETag still lets an unchanged habit be edited.
    edit = await client.put(
        path, json={"title": "Run daily"}, headers={**user.headers, "If-Match": etag}
    )
    assert edit.status_code == 200, edit.text


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "habit"},
        {"kind": "goal", "schedule": {"type": "daily"}},
        {"kind": "habit", "schedule": {"type": "weekdays", "days": []}},
        {"kind": "habit", "schedule": {"type": "weekdays", "days": [1, 1]}},
        {"kind": "habit", "schedule": {"type": "weekdays", "days": [7]}},
        {"kind": "habit", "schedule": {"type": "times_per_week", "count": 8}},
        {"kind": "habit", "schedule": {"type": "every_n_days", "n": 1}},
        {"kind": "habit", "schedule": {"type": "hourly"}},
        {"kind": "chore"},
    ],
)
async def test_invalid_habits_are_422(client: Any, user: Account, body: dict[str, Any]) -> None:
    response = await client.post("/goals", json={"title": "x", **body}, headers=user.headers)
    assert response.status_code == 422, response.text


async def test_a_goal_takes_no_checkins(client: Any, user: Account, other_user: Account) -> None:
    goal = await create_goal(client, user)
    assert_problem(await checkin(client, user, goal["id"]), 409, "not_a_habit")
    run = await habit(client, user)
    assert_problem(await checkin(client, other_user, run["id"]), 404, "not_found")
    assert goal["kind"] == "goal"
    assert goal["streak"] is None


async def test_a_seven_day_streak_is_earned_by_the_checkin_that_reaches_it(
    client: Any, user: Account
) -> None:
    """Also when that check-in is a backfill: the run counts the whole history."""
    clock = TestClock(datetime(2026, 3, 1, 12, tzinfo=UTC)).install()
    goal = await habit(client, user)
    for day in (0, 1, 2, 4, 5, 6):  # the 4th day (3 March + 1) missed
        clock.now = datetime(2026, 3, 1 + day, 12, tzinfo=UTC)
        assert (await checkin(client, user, goal["id"])).status_code == 201

    async def earned() -> set[str]:
        items = (await client.get("/achievements", headers=user.headers)).json()["items"]
        return {item["code"] for item in items if item["earned"]}

    assert "streak_7" not in await earned()
    backfill = await checkin(client, user, goal["id"], date="2026-03-04")
    assert backfill.status_code == 201, backfill.text
    assert "streak_7" in await earned()
    assert "streak_30" not in await earned()
    feed = (await client.get("/notifications", headers=user.headers)).json()["items"]
    streak = [n for n in feed if n["data"].get("achievement_code") == "streak_7"]
    assert len(streak) == 1
    # Undone and made again: earned once, never twice.
    await client.delete(f"/goals/{goal['id']}/checkins/2026-03-04", headers=user.headers)
    assert (await checkin(client, user, goal["id"], date="2026-03-04")).status_code == 201
    feed = (await client.get("/notifications", headers=user.headers)).json()["items"]
    assert len([n for n in feed if n["data"].get("achievement_code") == "streak_7"]) == 1


@pytest.mark.parametrize(
    ("zone", "night"),
    [
        ("Pacific/Auckland", "2026-04-05"),  # 25 hours: 03:00 goes back to 02:00
        ("Pacific/Auckland", "2026-09-27"),  # 23 hours
        ("America/Nuuk", "2026-03-29"),  # Saturday 23:00 jumps to Sunday 00:00
        ("America/Nuuk", "2026-10-24"),  # Saturday 23:00-24:00 happens twice
        ("Australia/Lord_Howe", "2026-04-05"),  # half an hour back
        ("Australia/Lord_Howe", "2026-10-04"),  # half an hour forward
        ("Pacific/Apia", "2026-06-10"),  # UTC+13 all year, then a flight to Honolulu
    ],
)
async def test_streaks_count_local_dates_across_dst_nights_and_zone_changes(
    client: Any, user: Account, zone: str, night: str
) -> None:
    """Check-ins in the last minute of the day before, the first and the last minute of the DST
    day, and the day after: each belongs to the local date it was made on (a 23- or 25-hour day
    is one day), so the streak is 3, and a second check-in on the DST day is refused. A later zone
    change moves no check-in and breaks nothing."""
    tz = ZoneInfo(zone)
    day = date.fromisoformat(night)
    clock = TestClock(datetime(2026, 1, 1, tzinfo=UTC)).install()
    await client.put("/settings", json={"timezone": zone}, headers=user.headers)
    goal = await habit(client, user)

    def midnight(of: date) -> datetime:
        return local_instant(of, time(0), tz)

    made: list[str] = []
    for instant in (
        midnight(day) - timedelta(minutes=1),
        midnight(day) + timedelta(minutes=1),
        midnight(day + timedelta(days=1)) - timedelta(minutes=1),
        midnight(day + timedelta(days=1)) + timedelta(hours=12),
    ):
        clock.now = instant
        response = await checkin(client, user, goal["id"])
        expected = str(instant.astimezone(tz).date())
        if expected in made:
            assert_problem(response, 409, "already_checked_in")
        else:
            assert response.json()["date"] == expected, instant
            made.append(expected)
    assert made == [str(day - timedelta(days=1)), str(day), str(day + timedelta(days=1))]
    fetched = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert (fetched["streak"], fetched["done_today"]) == ({"current": 3, "longest": 3}, True)

    # Flown to the other side of the date line: the local date goes back to a day done already.
    away = "Pacific/Honolulu" if zone == "Pacific/Apia" else "Pacific/Kiritimati"
    await client.put("/settings", json={"timezone": away}, headers=user.headers)
    moved = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert moved["streak"]["current"] == 3
    calendar = (await client.get(f"/goals/{goal['id']}/checkins", headers=user.headers)).json()
    assert [item["date"] for item in calendar["items"]] == made
    if zone == "Pacific/Apia":
        assert clock.now.astimezone(ZoneInfo(away)).date() == day  # a day lived twice
        assert moved["done_today"] is True
        assert_problem(await checkin(client, user, goal["id"]), 409, "already_checked_in")


async def test_a_sixty_fourth_day_in_a_row_is_stored(client: Any, user: Account) -> None:
    """The 64-day mask fills bit 63: stored as PostgreSQL's signed BIGINT, read back alike."""
    clock = TestClock(datetime(2026, 1, 1, 12, tzinfo=UTC)).install()
    goal = await habit(client, user)
    for _ in range(70):
        made = await checkin(client, user, goal["id"])
        assert made.status_code == 201, made.text
        clock.now += timedelta(days=1)
    clock.now -= timedelta(days=1)
    fetched = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert fetched["streak"] == {"current": 70, "longest": 70}
    assert (fetched["done_today"], fetched["completion_rate_30d"]) == (True, 100)
