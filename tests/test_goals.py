from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from goaltrack.auth.models import User
from goaltrack.clock import get_now
from goaltrack.goals.models import Goal, GoalStage
from helpers import Account, add_stages, assert_problem, create_goal, make_pdf

SUMMARY_FIELDS = {
    "id",
    "title",
    "description",
    "deadline",
    "progress",
    "is_archived",
    "completed_at",
    "created_at",
    "updated_at",
    "stage_count",
    "completed_stage_count",
    "ai_status",
    "kind",
    "schedule",
    "streak",
    "due_today",
    "done_today",
    "completion_rate_30d",
}


async def test_create_and_read_goal(client: Any, user: Account) -> None:
    goal = await create_goal(client, user, description="42 km", deadline="2027-05-01")
    assert SUMMARY_FIELDS | {"stages", "attachments", "reminders", "ai_error"} == goal.keys()
    assert goal["progress"] == 0
    assert goal["ai_status"] == "idle"
    assert (goal["stages"], goal["attachments"], goal["reminders"]) == ([], [], [])
    fetched = await client.get(f"/goals/{goal['id']}", headers=user.headers)
    assert fetched.json() == goal
    listed = (await client.get("/goals", headers=user.headers)).json()
    assert listed["next_cursor"] is None
    assert [item["id"] for item in listed["items"]] == [goal["id"]]
    assert listed["items"][0].keys() == SUMMARY_FIELDS


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "   "},
        {"title": "x" * 201},
        {"title": "ok", "description": "x" * 5001},
        {"title": "ok", "deadline": "tomorrow"},
        {"title": "ok", "progress": 100},
        {"title": "ok", "user_id": str(uuid.uuid4())},
        {"title": "ok", "is_archived": True},
        {"title": "ok", "completed_at": "2026-01-01T00:00:00Z"},
        {"title": "ok", "reminder": {"remind_time": "25:00", "frequency_days": 1}},
        {"title": "ok", "reminder": {"remind_time": "09:00", "frequency_days": 4}},
        {"title": "ok", "reminder": {"remind_time": "09:00:00", "frequency_days": 1}},
    ],
)
async def test_create_goal_rejects_invalid_and_read_only_fields(
    client: Any, user: Account, body: Any
) -> None:
    response = await client.post("/goals", json=body, headers=user.headers)
    assert_problem(response, 422, "validation_error")


async def test_update_goal_partially_and_clear_fields(client: Any, user: Account) -> None:
    goal = await create_goal(client, user, description="old", deadline="2027-01-01")
    response = await client.put(
        f"/goals/{goal['id']}", json={"title": "New title"}, headers=user.headers
    )
    assert response.status_code == 200
    assert (response.json()["title"], response.json()["description"]) == ("New title", "old")
    cleared = await client.put(
        f"/goals/{goal['id']}", json={"description": None, "deadline": None}, headers=user.headers
    )
    assert (cleared.json()["description"], cleared.json()["deadline"]) == (None, None)
    for body in (
        {"progress": 50},
        {"title": ""},
        {"is_archived": True},
        {"user_id": str(uuid.uuid4())},
    ):
        assert_problem(
            await client.put(f"/goals/{goal['id']}", json=body, headers=user.headers),
            422,
            "validation_error",
        )


async def test_archive_and_unarchive_move_between_lists(client: Any, user: Account) -> None:
    goal = await create_goal(client, user)
    archived = await client.put(f"/goals/{goal['id']}/archive", headers=user.headers)
    assert archived.json()["is_archived"] is True
    assert (await client.get("/goals", headers=user.headers)).json()["items"] == []
    archived_list = (await client.get("/goals/archived", headers=user.headers)).json()["items"]
    assert [g["id"] for g in archived_list] == [goal["id"]]
    restored = await client.put(f"/goals/{goal['id']}/unarchive", headers=user.headers)
    assert restored.json()["is_archived"] is False
    assert (await client.get("/goals/archived", headers=user.headers)).json()["items"] == []


async def test_delete_goal_removes_everything(client: Any, app: Any, user: Account) -> None:
    goal = await create_goal(client, user, reminder={"remind_time": "09:00", "frequency_days": 1})
    await add_stages(client, user, goal["id"], 2)
    response = await client.delete(f"/goals/{goal['id']}", headers=user.headers)
    assert response.status_code == 204
    assert_problem(await client.get(f"/goals/{goal['id']}", headers=user.headers), 404, "not_found")
    async with app.state.sessionmaker() as session:
        assert (await session.scalars(select(GoalStage))).all() == []
    assert_problem(
        await client.delete(f"/goals/{goal['id']}", headers=user.headers), 404, "not_found"
    )


async def test_stage_lifecycle_and_progress(client: Any, user: Account) -> None:
    goal = await create_goal(client, user)
    stages = await add_stages(client, user, goal["id"], 3)
    assert [s["position"] for s in stages] == [0, 1, 2]
    assert stages[0].keys() == {
        "id",
        "title",
        "description",
        "position",
        "is_completed",
        "completed_at",
    }
    url = f"/goals/{goal['id']}/stages"

    done = (await client.put(f"{url}/{stages[0]['id']}/complete", headers=user.headers)).json()
    assert (done["progress"], done["completed_stage_count"], done["stage_count"]) == (33, 1, 3)
    assert done["stages"][0]["is_completed"] is True
    assert done["stages"][0]["completed_at"] is not None
    await client.put(f"{url}/{stages[1]['id']}/complete", headers=user.headers)
    full = (await client.put(f"{url}/{stages[2]['id']}/complete", headers=user.headers)).json()
    assert full["progress"] == 100
    assert full["completed_at"] is not None

    reopened = (
        await client.put(f"{url}/{stages[2]['id']}/uncomplete", headers=user.headers)
    ).json()
    assert (reopened["progress"], reopened["completed_at"]) == (66, None)
    assert reopened["stages"][2]["completed_at"] is None

    added = await client.post(
        url, json={"title": "Stage 3", "description": "d"}, headers=user.headers
    )
    assert added.json()["position"] == 3
    after_add = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert after_add["progress"] == 50

    edited = await client.put(
        f"{url}/{stages[1]['id']}", json={"title": "Renamed"}, headers=user.headers
    )
    assert (edited.json()["title"], edited.json()["is_completed"]) == ("Renamed", True)
    assert_problem(
        await client.put(
            f"{url}/{stages[1]['id']}", json={"is_completed": False}, headers=user.headers
        ),
        422,
        "validation_error",
    )

    # Deleting the not-completed stages completes the goal; positions stay gapless.
    await client.delete(f"{url}/{stages[2]['id']}", headers=user.headers)
    assert (
        await client.delete(f"{url}/{added.json()['id']}", headers=user.headers)
    ).status_code == 204
    final = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert final["progress"] == 100
    assert final["completed_at"] is not None
    assert [s["position"] for s in final["stages"]] == [0, 1]


async def test_progress_rounds_down(client: Any, user: Account) -> None:
    goal = await create_goal(client, user)
    stages = await add_stages(client, user, goal["id"], 3)
    for stage in stages[:2]:
        body = (
            await client.put(
                f"/goals/{goal['id']}/stages/{stage['id']}/complete", headers=user.headers
            )
        ).json()
    assert body["progress"] == 66


async def test_completing_twice_is_idempotent(client: Any, user: Account) -> None:
    goal = await create_goal(client, user)
    [stage] = await add_stages(client, user, goal["id"], 1)
    first = (
        await client.put(f"/goals/{goal['id']}/stages/{stage['id']}/complete", headers=user.headers)
    ).json()
    second = (
        await client.put(f"/goals/{goal['id']}/stages/{stage['id']}/complete", headers=user.headers)
    ).json()
    assert first["completed_at"] == second["completed_at"]
    assert first["stages"][0]["completed_at"] == second["stages"][0]["completed_at"]


async def test_goal_completed_notifies_on_reaching_100_only(client: Any, user: Account) -> None:
    """The GoalCompleted event is wired (goaltrack.subscriptions) to a `goal_completed` row."""

    async def completed_notifications() -> list[dict[str, Any]]:
        feed = (await client.get("/notifications", headers=user.headers)).json()
        return [item for item in feed["items"] if item["type"] == "goal_completed"]

    goal = await create_goal(client, user)
    stages = await add_stages(client, user, goal["id"], 2)
    url = f"/goals/{goal['id']}/stages"
    await client.put(f"{url}/{stages[0]['id']}/complete", headers=user.headers)
    assert await completed_notifications() == []
    await client.put(f"{url}/{stages[1]['id']}/complete", headers=user.headers)
    [first] = await completed_notifications()
    assert first["data"] == {"goal_id": goal["id"]}
    assert "Run a marathon" in first["body"]
    await client.put(f"{url}/{stages[1]['id']}/complete", headers=user.headers)  # already there
    assert len(await completed_notifications()) == 1
    await client.put(f"{url}/{stages[1]['id']}/uncomplete", headers=user.headers)
    await client.put(f"{url}/{stages[1]['id']}/complete", headers=user.headers)
    assert len(await completed_notifications()) == 2


async def test_concurrent_completions_count_every_stage(
    client: Any, app: Any, user: Account
) -> None:
    goal = await create_goal(client, user)
    stages = await add_stages(client, user, goal["id"], 6)
    responses = await asyncio.gather(
        *(
            client.put(f"/goals/{goal['id']}/stages/{s['id']}/complete", headers=user.headers)
            for s in stages
        )
    )
    assert {r.status_code for r in responses} == {200}
    final = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert (final["progress"], final["completed_stage_count"]) == (100, 6)
    async with app.state.sessionmaker() as session:
        stored = await session.get(Goal, uuid.UUID(goal["id"]))
    assert stored is not None
    assert stored.completed_stage_count == 6


async def test_counters_match_a_recount_after_concurrent_changes(
    client: Any, app: Any, user: Account
) -> None:
    """A toggle moves the goal's counters by one from its locked row (one statement), the other
    stage changes recount: raced against each other on one goal, the stored counters still equal
    what the stages say."""
    goal = await create_goal(client, user)
    url = f"/goals/{goal['id']}/stages"
    stages = await add_stages(client, user, goal["id"], 8)
    for stage in stages[:4]:
        await client.put(f"{url}/{stage['id']}/complete", headers=user.headers)
    for _ in range(3):
        responses = await asyncio.gather(
            *(client.put(f"{url}/{s['id']}/uncomplete", headers=user.headers) for s in stages[:4]),
            *(client.put(f"{url}/{s['id']}/complete", headers=user.headers) for s in stages[4:]),
            client.post(url, json={"title": "Raced in"}, headers=user.headers),
            client.delete(f"{url}/{stages[0]['id']}", headers=user.headers),
        )
        assert {r.status_code for r in responses} <= {200, 201, 204, 404}
        stages = stages[4:] + stages[:4]
    async with app.state.sessionmaker() as session:
        stored = await session.get_one(Goal, uuid.UUID(goal["id"]))
        rows = (
            await session.execute(
                select(GoalStage.is_completed).where(GoalStage.goal_id == stored.id)
            )
        ).all()
    completed = sum(1 for (is_completed,) in rows if is_completed)
    assert (stored.stage_count, stored.completed_stage_count) == (len(rows), completed)
    assert stored.progress == 100 * completed // len(rows)


async def test_reorder_stages(client: Any, user: Account) -> None:
    goal = await create_goal(client, user)
    stages = await add_stages(client, user, goal["id"], 4)
    ids = [s["id"] for s in stages]
    new_order = [ids[3], ids[1], ids[0], ids[2]]
    response = await client.put(
        f"/goals/{goal['id']}/stages/order", json={"stage_ids": new_order}, headers=user.headers
    )
    assert response.status_code == 200
    assert [s["id"] for s in response.json()["stages"]] == new_order
    assert [s["position"] for s in response.json()["stages"]] == [0, 1, 2, 3]

    url = f"/goals/{goal['id']}/stages/order"
    for bad in (
        [ids[0], ids[1], ids[2]],
        [*ids, ids[0]],
        [ids[0], ids[0], ids[1], ids[2]],
        [*ids[:3], str(uuid.uuid4())],
        [],
    ):
        assert_problem(
            await client.put(url, json={"stage_ids": bad}, headers=user.headers),
            422,
            "invalid_stage_order" if bad else "validation_error",
        )
    unchanged = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert [s["id"] for s in unchanged["stages"]] == new_order


async def test_stage_of_another_goal_is_404(client: Any, user: Account) -> None:
    first = await create_goal(client, user)
    second = await create_goal(client, user)
    [stage] = await add_stages(client, user, first["id"], 1)
    for method, suffix in (("put", "/complete"), ("put", "/uncomplete"), ("delete", "")):
        response = await client.request(
            method, f"/goals/{second['id']}/stages/{stage['id']}{suffix}", headers=user.headers
        )
        assert_problem(response, 404, "not_found")
    response = await client.put(
        f"/goals/{second['id']}/stages/{stage['id']}", json={"title": "x"}, headers=user.headers
    )
    assert_problem(response, 404, "not_found")


async def test_stage_limit(client: Any, app: Any, user: Account) -> None:
    from goaltrack.deps import get_app_settings

    limited = app.state.settings.model_copy(update={"max_stages_per_goal": 2})
    app.dependency_overrides[get_app_settings] = lambda: limited
    goal = await create_goal(client, user)
    await add_stages(client, user, goal["id"], 2)
    response = await client.post(
        f"/goals/{goal['id']}/stages", json={"title": "third"}, headers=user.headers
    )
    assert_problem(response, 409, "stage_limit")


async def test_pagination_walks_every_goal_once(client: Any, app: Any, user: Account) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    created = []
    # Several goals share a timestamp: the id breaks the tie, so no page skips or repeats one.
    for index in range(45):
        app.dependency_overrides[get_now] = lambda index=index: base + timedelta(minutes=index // 3)
        created.append((await create_goal(client, user, title=f"Goal {index}"))["id"])
    app.dependency_overrides.pop(get_now)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        body = (await client.get("/goals", params=params, headers=user.headers)).json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert len(seen) == len(set(seen)) == 45
    assert set(seen) == set(created)
    listed = (await client.get("/goals", params={"limit": 100}, headers=user.headers)).json()[
        "items"
    ]
    assert [item["id"] for item in listed] == seen
    created_at = [item["created_at"] for item in listed]
    assert created_at == sorted(created_at, reverse=True)


async def test_page_size_default_and_cap(client: Any, user: Account) -> None:
    for index in range(21):
        await create_goal(client, user, title=f"Goal {index}")
    default = (await client.get("/goals", headers=user.headers)).json()
    assert len(default["items"]) == 20
    assert default["next_cursor"] is not None
    capped = (await client.get("/goals", params={"limit": 100000}, headers=user.headers)).json()
    assert len(capped["items"]) == 21
    assert_problem(
        await client.get("/goals", params={"limit": 0}, headers=user.headers),
        422,
        "validation_error",
    )
    assert_problem(
        await client.get("/goals", params={"cursor": "garbage!"}, headers=user.headers),
        422,
        "invalid_cursor",
    )


async def test_lists_are_per_user(client: Any, user: Account, other_user: Account) -> None:
    mine = await create_goal(client, user)
    await create_goal(client, other_user)
    listed = (await client.get("/goals", headers=user.headers)).json()["items"]
    assert [g["id"] for g in listed] == [mine["id"]]


async def test_revoked_token_cannot_read_goals(client: Any, app: Any, user: Account) -> None:
    """The hot reads check the token version in their single statement."""
    goal = await create_goal(client, user)
    changed = await client.post(
        "/auth/login", json={"email": user.email, "password": user.password}
    )
    assert changed.status_code == 200

    # Bump the version as a password change does.
    app_client = client
    transport_app = app_client._transport.app
    async with transport_app.state.sessionmaker() as session, session.begin():
        await session.execute(update(User).values(token_version=User.token_version + 1))
    assert_problem(await client.get("/goals", headers=user.headers), 401, "not_authenticated")
    assert_problem(
        await client.get(f"/goals/{goal['id']}", headers=user.headers), 401, "not_authenticated"
    )
    assert_problem(
        await client.get("/goals/archived", headers=user.headers), 401, "not_authenticated"
    )


async def test_every_goal_route_hides_other_users_goals(
    client: Any, user: Account, other_user: Account
) -> None:
    """BOLA: a second user gets 404 on every route with the first user's ids, and changes nothing."""
    goal = await create_goal(client, user, reminder={"remind_time": "09:00", "frequency_days": 1})
    [stage] = await add_stages(client, user, goal["id"], 1)
    reminder_id = goal["reminders"][0]["id"]
    attachment_id = str(uuid.uuid4())
    gid, sid = goal["id"], stage["id"]
    calls = [
        ("get", f"/goals/{gid}", None),
        ("put", f"/goals/{gid}", {"title": "hijacked"}),
        ("put", f"/goals/{gid}/archive", None),
        ("put", f"/goals/{gid}/unarchive", None),
        ("delete", f"/goals/{gid}", None),
        ("post", f"/goals/{gid}/stages", {"title": "x"}),
        ("put", f"/goals/{gid}/stages/{sid}", {"title": "x"}),
        ("delete", f"/goals/{gid}/stages/{sid}", None),
        ("put", f"/goals/{gid}/stages/order", {"stage_ids": [sid]}),
        ("put", f"/goals/{gid}/stages/{sid}/complete", None),
        ("put", f"/goals/{gid}/stages/{sid}/uncomplete", None),
        ("get", f"/goals/{gid}/attachments", None),
        ("delete", f"/goals/{gid}/attachments/{attachment_id}", None),
        ("post", f"/goals/{gid}/reminders", {"remind_time": "10:00", "frequency_days": 1}),
        ("get", f"/goals/{gid}/reminders", None),
        ("put", f"/goals/{gid}/reminders/{reminder_id}", {"frequency_days": 2}),
        ("delete", f"/goals/{gid}/reminders/{reminder_id}", None),
    ]
    for method, url, body in calls:
        response = await client.request(method, url, json=body, headers=other_user.headers)
        assert_problem(response, 404, "not_found")
    upload = await client.post(
        f"/goals/{gid}/attachments",
        files={"file": ("a.pdf", make_pdf(), "application/pdf")},
        headers=other_user.headers,
    )
    assert_problem(upload, 404, "not_found")
    after = (await client.get(f"/goals/{gid}", headers=user.headers)).json()
    assert after == goal | {
        "stages": after["stages"],
        "stage_count": 1,
        "updated_at": after["updated_at"],
    }
    assert after["stages"] == [stage]
    assert after["reminders"] == goal["reminders"]


async def test_goal_routes_require_authentication(client: Any) -> None:
    goal_id = uuid.uuid4()
    for method, url in (
        ("get", "/goals"),
        ("post", "/goals"),
        ("get", f"/goals/{goal_id}"),
        ("delete", f"/goals/{goal_id}"),
    ):
        assert_problem(await client.request(method, url), 401, "not_authenticated")


async def test_unknown_goal_is_404_and_malformed_id_422(client: Any, user: Account) -> None:
    assert_problem(
        await client.get(f"/goals/{uuid.uuid4()}", headers=user.headers), 404, "not_found"
    )
    assert_problem(
        await client.get("/goals/not-a-uuid", headers=user.headers), 422, "validation_error"
    )


async def test_a_goal_is_created_with_its_first_stages(client: Any, user: Account) -> None:
    goal = await create_goal(
        client,
        user,
        title="Trip",
        stages=[{"title": "Book flights"}, {"title": "Pack", "description": "Light"}],
    )
    assert [(s["title"], s["position"]) for s in goal["stages"]] == [
        ("Book flights", 0),
        ("Pack", 1),
    ]
    assert (goal["stage_count"], goal["completed_stage_count"], goal["progress"]) == (2, 0, 0)
    # The stages behave as any: the next one is appended after them, completing one moves progress.
    added = await client.post(
        f"/goals/{goal['id']}/stages", json={"title": "Go"}, headers=user.headers
    )
    assert added.json()["position"] == 2
    done = await client.put(
        f"/goals/{goal['id']}/stages/{goal['stages'][0]['id']}/complete", headers=user.headers
    )
    assert done.json()["progress"] == 33
    for stages in ([{"title": ""}], [{"title": "x"}] * 101, [{}]):
        response = await client.post(
            "/goals", json={"title": "Bad", "stages": stages}, headers=user.headers
        )
        assert_problem(response, 422, "validation_error")


async def test_initial_stages_obey_the_configured_limit(
    client: Any, app: Any, user: Account
) -> None:
    configured = app.state.settings
    app.state.settings = configured.model_copy(update={"max_stages_per_goal": 2})
    try:
        response = await client.post(
            "/goals", json={"title": "Big", "stages": [{"title": "a"}] * 3}, headers=user.headers
        )
    finally:
        app.state.settings = configured
    assert_problem(response, 409, "stage_limit")
    listed = (await client.get("/goals", headers=user.headers)).json()
    assert listed["items"] == []  # nothing half made
