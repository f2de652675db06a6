from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from goaltrack.clock import get_now
from helpers import Account, assert_problem, create_goal

# The day before Berlin springs forward. Accounts are registered before the clock is moved: their
# access tokens are checked against the real time.
NOW = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)


async def test_reminder_fires_at_local_wall_clock_time(
    client: Any, app: Any, register: Any
) -> None:
    account = await register(timezone="Europe/Berlin")
    app.dependency_overrides[get_now] = lambda: NOW
    goal = await create_goal(
        client, account, title="Read", reminder={"remind_time": "09:00", "frequency_days": 1}
    )
    [reminder] = goal["reminders"]
    assert reminder.keys() == {
        "id",
        "remind_time",
        "frequency_days",
        "weekdays",
        "only_if_not_done",
        "next_fire_at",
    }
    assert reminder["remind_time"] == "09:00"
    assert (reminder["weekdays"], reminder["only_if_not_done"]) == (None, False)
    # 09:00 on the 28th has passed in Berlin (13:00 CET); the next one is after the switch to CEST.
    assert reminder["next_fire_at"] == "2026-03-29T07:00:00Z"

    every_two = await client.post(
        f"/goals/{goal['id']}/reminders",
        json={"remind_time": "14:30", "frequency_days": 2},
        headers=account.headers,
    )
    assert every_two.status_code == 201
    assert every_two.json()["next_fire_at"] == "2026-03-28T13:30:00Z"  # today, 14:30 CET

    listed = (await client.get(f"/goals/{goal['id']}/reminders", headers=account.headers)).json()
    assert listed.keys() == {"items", "next_cursor"}
    # By time of day, in one page (bounded by the per-goal limit).
    assert [r["id"] for r in listed["items"]] == [reminder["id"], every_two.json()["id"]]
    assert listed["next_cursor"] is None


async def test_update_reminder_recomputes(client: Any, app: Any, register: Any) -> None:
    account = await register(timezone="America/New_York")
    app.dependency_overrides[get_now] = lambda: NOW
    goal = await create_goal(client, account, title="Run")
    created = (
        await client.post(
            f"/goals/{goal['id']}/reminders",
            json={"remind_time": "07:00", "frequency_days": 3},
            headers=account.headers,
        )
    ).json()
    assert (
        created["next_fire_at"] == "2026-03-31T11:00:00Z"
    )  # anchored today (the 28th), every 3 days, EDT
    updated = await client.put(
        f"/goals/{goal['id']}/reminders/{created['id']}",
        json={"remind_time": "18:45"},
        headers=account.headers,
    )
    assert updated.json()["next_fire_at"] == "2026-03-28T22:45:00Z"
    assert updated.json()["frequency_days"] == 3
    # A new frequency starts its rhythm today: every 2 days from the 28th, at 18:45 EDT.
    app.dependency_overrides[get_now] = lambda: datetime(
        2026, 3, 29, 23, 0, tzinfo=UTC
    )  # 19:00 local
    every_two = await client.put(
        f"/goals/{goal['id']}/reminders/{created['id']}",
        json={"frequency_days": 2},
        headers=account.headers,
    )
    assert (
        every_two.json()["next_fire_at"] == "2026-03-31T22:45:00Z"
    )  # the 31st, anchored on the 29th
    for body in (
        {"remind_time": "7:00"},
        {"frequency_days": 0},
        {"next_fire_at": "2026-01-01T00:00:00Z"},
        {"remind_time": None},
    ):
        response = await client.put(
            f"/goals/{goal['id']}/reminders/{created['id']}", json=body, headers=account.headers
        )
        assert_problem(response, 422, "validation_error")
    deleted = await client.delete(
        f"/goals/{goal['id']}/reminders/{created['id']}", headers=account.headers
    )
    assert deleted.status_code == 204
    assert_problem(
        await client.delete(
            f"/goals/{goal['id']}/reminders/{created['id']}", headers=account.headers
        ),
        404,
        "not_found",
    )


async def test_reminder_limit(client: Any, user: Account) -> None:
    goal = await create_goal(client, user, title="Limit")
    for hour in range(5):
        response = await client.post(
            f"/goals/{goal['id']}/reminders",
            json={"remind_time": f"0{hour}:00", "frequency_days": 1},
            headers=user.headers,
        )
        assert response.status_code == 201
    sixth = await client.post(
        f"/goals/{goal['id']}/reminders",
        json={"remind_time": "09:00", "frequency_days": 1},
        headers=user.headers,
    )
    assert_problem(sixth, 409, "reminder_limit")


async def test_no_next_occurrence_when_completed_archived_or_past_deadline(
    client: Any, app: Any, user: Account
) -> None:
    app.dependency_overrides[get_now] = lambda: NOW
    goal = await create_goal(
        client, user, title="Done soon", reminder={"remind_time": "20:00", "frequency_days": 1}
    )
    url = f"/goals/{goal['id']}"
    assert goal["reminders"][0]["next_fire_at"] == "2026-03-28T20:00:00Z"

    archived = (await client.put(f"{url}/archive", headers=user.headers)).json()
    assert archived["reminders"][0]["next_fire_at"] is None
    restored = (await client.put(f"{url}/unarchive", headers=user.headers)).json()
    assert restored["reminders"][0]["next_fire_at"] == "2026-03-28T20:00:00Z"

    stage = (
        await client.post(f"{url}/stages", json={"title": "only"}, headers=user.headers)
    ).json()
    completed = (
        await client.put(f"{url}/stages/{stage['id']}/complete", headers=user.headers)
    ).json()
    assert completed["reminders"][0]["next_fire_at"] is None
    reopened = (
        await client.put(f"{url}/stages/{stage['id']}/uncomplete", headers=user.headers)
    ).json()
    assert reopened["reminders"][0]["next_fire_at"] == "2026-03-28T20:00:00Z"

    past_deadline = (
        await client.put(url, json={"deadline": "2026-03-27"}, headers=user.headers)
    ).json()
    assert past_deadline["reminders"][0]["next_fire_at"] is None
    deadline_today = (
        await client.put(url, json={"deadline": "2026-03-28"}, headers=user.headers)
    ).json()
    assert deadline_today["reminders"][0]["next_fire_at"] == "2026-03-28T20:00:00Z"
