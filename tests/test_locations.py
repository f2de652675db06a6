"""Every 201 says where the new resource is (`Location`), and the document declares it."""

from __future__ import annotations

from typing import Any

from helpers import Account, create_goal, make_image


async def test_every_201_carries_its_location(client: Any, register: Any) -> None:
    registered = await client.post(
        "/auth/register", json={"email": "where@example.com", "password": "correct horse battery"}
    )
    assert registered.headers["Location"] == "/account"
    user = Account("where@example.com", "", registered.json()["access_token"], "")
    made = await client.post("/goals", json={"title": "Where"}, headers=user.headers)
    goal_id = made.json()["id"]
    assert made.headers["Location"] == f"/goals/{goal_id}"
    assert (await client.get(made.headers["Location"], headers=user.headers)).status_code == 200
    stage = await client.post(
        f"/goals/{goal_id}/stages", json={"title": "One"}, headers=user.headers
    )
    assert stage.headers["Location"] == f"/goals/{goal_id}/stages/{stage.json()['id']}"
    reminder = await client.post(
        f"/goals/{goal_id}/reminders", json={"remind_time": "09:00"}, headers=user.headers
    )
    assert reminder.headers["Location"] == f"/goals/{goal_id}/reminders/{reminder.json()['id']}"
    attachment = await client.post(
        f"/goals/{goal_id}/attachments",
        files={"file": ("p.png", make_image("PNG"), "image/png")},
        headers=user.headers,
    )
    location = attachment.headers["Location"]
    assert location == f"/goals/{goal_id}/attachments/{attachment.json()['id']}/content"
    assert (await client.get(location, headers=user.headers)).status_code == 302
    habit = await create_goal(client, user, kind="habit", schedule={"type": "daily"})
    checkin = await client.post(f"/goals/{habit['id']}/checkins", json={}, headers=user.headers)
    assert checkin.headers["Location"] == f"/goals/{habit['id']}/checkins/{checkin.json()['date']}"
    device = await client.post(
        "/devices", json={"token": "fcm:abc-123_x", "platform": "ios"}, headers=user.headers
    )
    assert device.headers["Location"] == "/devices/fcm%3Aabc-123_x"
    again = await client.post(
        "/devices", json={"token": "fcm:abc-123_x", "platform": "ios"}, headers=user.headers
    )
    assert again.status_code == 200
    assert "Location" not in again.headers


async def test_the_document_declares_location_on_every_201(client: Any) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["servers"] == [
        {"url": "/", "description": "The server that serves this document"}
    ]
    created = [
        (method, path, operation["responses"]["201"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "201" in operation.get("responses", {})
    ]
    assert len(created) >= 7
    for method, path, response in created:
        assert response["headers"]["Location"]["required"] is True, (method, path)
