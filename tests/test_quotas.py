"""Per-user quotas on goals and stored bytes (409), read from counters PostgreSQL keeps with
triggers on every insert and delete, a cascade's included."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from goaltrack.deps import get_app_settings
from goaltrack.goals.models import Goal, GoalAttachment, UserUsage
from helpers import Account, assert_problem, create_goal, make_image
from test_attachments import upload

PNG = make_image("PNG")


def limit(app: Any, **caps: int) -> None:
    limited = app.state.settings.model_copy(update=caps)
    app.dependency_overrides[get_app_settings] = lambda: limited


async def usage(app: Any, user_id: uuid.UUID) -> tuple[int, int] | None:
    async with app.state.sessionmaker() as session:
        row = (
            await session.execute(
                select(UserUsage.goals, UserUsage.stored_bytes).where(UserUsage.user_id == user_id)
            )
        ).one_or_none()
    return None if row is None else (row[0], row[1])


async def actual(app: Any, user_id: uuid.UUID) -> tuple[int, int]:
    async with app.state.sessionmaker() as session:
        goals = await session.scalar(select(func.count()).where(Goal.user_id == user_id))
        stored = await session.scalar(
            select(func.coalesce(func.sum(GoalAttachment.size), 0)).where(
                GoalAttachment.user_id == user_id
            )
        )
    return int(goals or 0), int(stored or 0)


async def user_id_of(client: Any, user: Account) -> uuid.UUID:
    return uuid.UUID((await client.get("/account", headers=user.headers)).json()["id"])


async def test_the_goal_quota(client: Any, app: Any, user: Account, other_user: Account) -> None:
    limit(app, max_goals_per_user=2)
    first = await create_goal(client, user)
    await create_goal(client, user)
    third = await client.post("/goals", json={"title": "Third"}, headers=user.headers)
    assert_problem(third, 409, "goal_quota")
    # Another user's count is their own.
    await create_goal(client, other_user)
    # A deleted goal frees its place.
    assert (await client.delete(f"/goals/{first['id']}", headers=user.headers)).status_code == 204
    await create_goal(client, user)
    assert await usage(app, await user_id_of(client, user)) == (2, 0)


async def test_the_storage_quota(client: Any, app: Any, user: Account) -> None:
    limit(app, max_stored_bytes_per_user=2 * len(PNG))
    goal = await create_goal(client, user)
    for name in ("a.png", "b.png"):
        assert (await upload(client, user, goal["id"], name, PNG, "image/png")).status_code == 201
    full = await upload(client, user, goal["id"], "c.png", PNG, "image/png")
    assert_problem(full, 409, "storage_quota")
    user_id = await user_id_of(client, user)
    assert await usage(app, user_id) == (1, 2 * len(PNG))
    # Deleting the goal (its attachments go by cascade) gives the bytes back.
    await client.delete(f"/goals/{goal['id']}", headers=user.headers)
    assert await usage(app, user_id) == (0, 0)
    again = await create_goal(client, user)
    assert (await upload(client, user, again["id"], "d.png", PNG, "image/png")).status_code == 201


async def test_the_counters_match_the_rows_whatever_the_path(
    client: Any, app: Any, register: Any
) -> None:
    user = await register()
    user_id = await user_id_of(client, user)
    assert await usage(app, user_id) == (0, 0)  # made with the account
    goals = [await create_goal(client, user, title=f"G{i}") for i in range(3)]
    for goal in goals[:2]:
        await upload(client, user, goal["id"], "p.png", PNG, "image/png")
    attachment = (
        await client.get(f"/goals/{goals[0]['id']}/attachments", headers=user.headers)
    ).json()["items"][0]
    await client.delete(
        f"/goals/{goals[0]['id']}/attachments/{attachment['id']}", headers=user.headers
    )
    await client.delete(f"/goals/{goals[1]['id']}", headers=user.headers)
    assert await usage(app, user_id) == await actual(app, user_id) == (2, 0)
    # A hard delete takes the counters with the account.
    deleted = await client.request(
        "DELETE", "/account/data", json={"password": user.password}, headers=user.headers
    )
    assert deleted.status_code == 204
    assert await usage(app, user_id) is None
