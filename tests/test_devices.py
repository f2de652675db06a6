from __future__ import annotations

from typing import Any

from sqlalchemy import select

from goaltrack.devices.models import Device
from helpers import Account, assert_problem

TOKEN = "fcm:APA91bH-example_token.123"


async def devices(app: Any) -> list[tuple[str, str]]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(select(Device.token, Device.platform))
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_register_is_201_then_200_and_moves_between_users(
    client: Any, app: Any, user: Account, other_user: Account
) -> None:
    first = await client.post(
        "/devices", json={"token": TOKEN, "platform": "android"}, headers=user.headers
    )
    assert first.status_code == 201
    assert first.json().keys() == {"id", "token", "platform", "created_at", "last_seen_at"}
    again = await client.post(
        "/devices", json={"token": TOKEN, "platform": "android"}, headers=user.headers
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    moved = await client.post(
        "/devices", json={"token": TOKEN, "platform": "ios"}, headers=other_user.headers
    )
    assert moved.status_code == 200
    assert await devices(app) == [(TOKEN, "ios")]
    # It belongs to the other user now: the first one cannot delete it.
    assert_problem(await client.delete(f"/devices/{TOKEN}", headers=user.headers), 404, "not_found")
    assert (await client.delete(f"/devices/{TOKEN}", headers=other_user.headers)).status_code == 204
    assert_problem(
        await client.delete(f"/devices/{TOKEN}", headers=other_user.headers), 404, "not_found"
    )


async def test_device_validation(client: Any, user: Account) -> None:
    for body in (
        {"token": TOKEN, "platform": "windows"},
        {"token": "", "platform": "ios"},
        {"token": "has space", "platform": "ios"},
        {"token": "x" * 1025, "platform": "ios"},
        {"token": TOKEN, "platform": "ios", "user_id": "someone"},
    ):
        assert_problem(
            await client.post("/devices", json=body, headers=user.headers), 422, "validation_error"
        )
    assert_problem(
        await client.post("/devices", json={"token": TOKEN, "platform": "ios"}),
        401,
        "not_authenticated",
    )


async def test_logout_with_device_token_stops_its_pushes(
    client: Any, app: Any, user: Account
) -> None:
    await client.post("/devices", json={"token": TOKEN, "platform": "web"}, headers=user.headers)
    await client.post(
        "/devices", json={"token": TOKEN + "2", "platform": "web"}, headers=user.headers
    )
    response = await client.post(
        "/auth/logout", json={"refresh_token": user.refresh_token, "device_token": TOKEN}
    )
    assert response.status_code == 204
    assert await devices(app) == [(TOKEN + "2", "web")]


async def test_logout_cannot_remove_another_users_device(
    client: Any, app: Any, user: Account, other_user: Account
) -> None:
    await client.post(
        "/devices", json={"token": TOKEN, "platform": "web"}, headers=other_user.headers
    )
    await client.post(
        "/auth/logout", json={"refresh_token": user.refresh_token, "device_token": TOKEN}
    )
    assert await devices(app) == [(TOKEN, "web")]
