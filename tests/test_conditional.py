"""ETags, If-None-Match (304 without rendering) and If-Match (412, nothing changes) on the goal,
the goal lists, settings and account; the attachment's stable content_url."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from helpers import Account, add_stages, assert_problem, create_goal, make_image

STALE = '"1"'


def unsigned(goal: dict[str, Any]) -> dict[str, Any]:
    """The goal without its download URLs, which are signed anew at every read."""
    return {
        **goal,
        "attachments": [{k: v for k, v in a.items() if k != "url"} for a in goal["attachments"]],
    }


async def etag_of(client: Any, account: Account, path: str) -> str:
    response = await client.get(path, headers=account.headers)
    assert response.status_code == 200, response.text
    etag: str = response.headers["ETag"]
    # The caller's own data: kept by the client only, and revalidated each time.
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert etag.startswith('"')
    assert etag.endswith('"')
    return etag


@pytest.mark.parametrize("path", ["/goals", "/goals/archived", "/settings", "/account", "GOAL"])
async def test_if_none_match_answers_304_with_no_body(
    client: Any, user: Account, path: str
) -> None:
    goal = await create_goal(client, user)
    path = f"/goals/{goal['id']}" if path == "GOAL" else path
    etag = await etag_of(client, user, path)
    for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        response = await client.get(path, headers={**user.headers, "If-None-Match": header})
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["ETag"] == etag
    response = await client.get(path, headers={**user.headers, "If-None-Match": STALE})
    assert response.status_code == 200
    assert response.headers["ETag"] == etag


async def test_the_goal_etag_changes_with_each_part_and_only_then(
    client: Any, user: Account, other_user: Account
) -> None:
    goal = await create_goal(client, user)
    path = f"/goals/{goal['id']}"
    seen = {await etag_of(client, user, path)}
    lists = {await etag_of(client, user, "/goals")}

    async def changed(response: Any) -> None:
        assert response.status_code < 300, response.text
        etag = await etag_of(client, user, path)
        assert etag not in seen
        if response.status_code in (200, 201):
            assert response.headers["ETag"] == etag  # a write answers with the new ETag
        seen.add(etag)
        list_etag = await etag_of(client, user, "/goals")
        assert list_etag not in lists
        lists.add(list_etag)

    await changed(await client.put(path, json={"title": "New"}, headers=user.headers))
    stage = await client.post(f"{path}/stages", json={"title": "s"}, headers=user.headers)
    await changed(stage)
    stage_path = f"{path}/stages/{stage.json()['id']}"
    await changed(await client.put(f"{stage_path}/complete", headers=user.headers))
    await changed(await client.put(stage_path, json={"title": "t"}, headers=user.headers))
    reminder = await client.post(
        f"{path}/reminders",
        json={"remind_time": "08:00", "frequency_days": 2},
        headers=user.headers,
    )
    await changed(reminder)
    upload = await client.post(
        f"{path}/attachments",
        files={"file": ("a.png", make_image(), "image/png")},
        headers=user.headers,
    )
    await changed(upload)
    await changed(await client.put(f"{path}/archive", headers=user.headers))

    # Reads, another user's writes and re-signed download URLs change nothing.
    current = await etag_of(client, user, path)
    await create_goal(client, other_user)
    await client.get(f"{path}/attachments", headers=user.headers)
    assert await etag_of(client, user, path) == current


WRITES = [
    ("PUT", "", {"json": {"title": "x"}}),
    ("PUT", "/archive", {}),
    ("PUT", "/unarchive", {}),
    ("DELETE", "", {}),
    ("POST", "/stages", {"json": {"title": "x"}}),
    ("PUT", "/stages/STAGE", {"json": {"title": "x"}}),
    ("DELETE", "/stages/STAGE", {}),
    ("PUT", "/stages/order", {"json": {"stage_ids": ["STAGE"]}}),
    ("PUT", "/stages/STAGE/complete", {}),
    ("PUT", "/stages/STAGE/uncomplete", {}),
    ("POST", "/reminders", {"json": {"remind_time": "08:00", "frequency_days": 1}}),
    ("PUT", "/reminders/REMINDER", {"json": {"remind_time": "07:00"}}),
    ("DELETE", "/reminders/REMINDER", {}),
    ("POST", "/attachments", {"files": {"file": ("b.png", make_image(), "image/png")}}),
    ("DELETE", "/attachments/ATTACHMENT", {}),
    ("POST", "/ai-sync", {}),
]


@pytest.mark.parametrize(("method", "suffix", "body"), WRITES)
async def test_a_stale_if_match_fails_every_goal_write_and_changes_nothing(
    client: Any, user: Account, method: str, suffix: str, body: dict[str, Any]
) -> None:
    goal = await create_goal(client, user, reminder={"remind_time": "09:00", "frequency_days": 1})
    path = f"/goals/{goal['id']}"
    stage = (await add_stages(client, user, goal["id"], 1))[0]
    upload = await client.post(
        f"{path}/attachments",
        files={"file": ("a.png", make_image(), "image/png")},
        headers=user.headers,
    )
    ids = {
        "STAGE": stage["id"],
        "REMINDER": goal["reminders"][0]["id"],
        "ATTACHMENT": upload.json()["id"],
    }
    for name, value in ids.items():
        suffix = suffix.replace(name, value)
    if "json" in body and "stage_ids" in body["json"]:
        body = {"json": {"stage_ids": [stage["id"]]}}
    before = (await client.get(path, headers=user.headers)).json()
    etag = await etag_of(client, user, path)

    response = await client.request(
        method, f"{path}{suffix}", headers={**user.headers, "If-Match": STALE}, **body
    )
    assert_problem(response, 412, "precondition_failed")
    assert unsigned((await client.get(path, headers=user.headers)).json()) == unsigned(before)
    assert await etag_of(client, user, path) == etag

    # The current ETag (or `*`) lets the same write through.
    response = await client.request(
        method, f"{path}{suffix}", headers={**user.headers, "If-Match": etag}, **body
    )
    assert response.status_code not in (412, 428), response.text


async def test_if_match_on_another_users_goal_is_404_not_412(
    client: Any, user: Account, other_user: Account
) -> None:
    goal = await create_goal(client, user)
    response = await client.put(
        f"/goals/{goal['id']}",
        json={"title": "x"},
        headers={**other_user.headers, "If-Match": "*"},
    )
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/settings", {"timezone": "Europe/Berlin"}),
        ("/settings/notifications", {"push_enabled": False}),
        ("/settings/notifications/frequency", {"times": ["08:00"], "frequency": "daily"}),
    ],
)
async def test_settings_writes_honour_if_match(
    client: Any, user: Account, path: str, body: dict[str, Any]
) -> None:
    before = (await client.get("/settings", headers=user.headers)).json()
    etag = await etag_of(client, user, "/settings")
    stale = await client.put(path, json=body, headers={**user.headers, "If-Match": STALE})
    assert_problem(stale, 412, "precondition_failed")
    assert (await client.get("/settings", headers=user.headers)).json() == before
    fresh = await client.put(path, json=body, headers={**user.headers, "If-Match": etag})
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["ETag"] == await etag_of(client, user, "/settings") != etag


async def test_two_devices_cannot_overwrite_each_other(client: Any, user: Account) -> None:
    goal = await create_goal(client, user)
    path = f"/goals/{goal['id']}"
    etag = await etag_of(client, user, path)
    phone = await client.put(
        path, json={"title": "From the phone"}, headers={**user.headers, "If-Match": etag}
    )
    tablet = await client.put(
        path, json={"title": "From the tablet"}, headers={**user.headers, "If-Match": etag}
    )
    assert phone.status_code == 200
    assert_problem(tablet, 412, "precondition_failed")
    assert (await client.get(path, headers=user.headers)).json()["title"] == "From the phone"


async def test_content_url_is_stable_and_redirects_to_a_fresh_presigned_url(
    client: Any, user: Account, other_user: Account
) -> None:
    goal = await create_goal(client, user)
    image = make_image()
    upload = await client.post(
        f"/goals/{goal['id']}/attachments",
        files={"file": ("a.png", image, "image/png")},
        headers=user.headers,
    )
    attachment = upload.json()
    content_url = attachment["content_url"]
    assert content_url == f"/goals/{goal['id']}/attachments/{attachment['id']}/content"
    again = (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
    assert again["attachments"][0]["content_url"] == content_url

    redirect = await client.get(content_url, headers=user.headers)
    assert redirect.status_code == 302
    assert redirect.headers["Cache-Control"] == "private, no-store"
    async with httpx.AsyncClient() as s3:
        downloaded = await s3.get(redirect.headers["Location"])
    assert downloaded.status_code == 200
    assert downloaded.content == image

    assert_problem(await client.get(content_url, headers=other_user.headers), 404, "not_found")
    assert_problem(await client.get(content_url), 401, "not_authenticated")
    missing = f"/goals/{goal['id']}/attachments/{goal['id']}/content"
    assert_problem(await client.get(missing, headers=user.headers), 404, "not_found")


async def test_a_server_may_require_if_match(client: Any, app: Any, user: Account) -> None:
    goal = await create_goal(client, user)
    stage = (await add_stages(client, user, goal["id"], 1))[0]
    path = f"/goals/{goal['id']}"
    settings = app.state.settings
    # Set and restored by hand: pytest's monkeypatch, undoing, deletes an attribute of
    # Starlette's State instead of restoring it (its old value is not in the instance __dict__).
    app.state.settings = settings.model_copy(update={"require_if_match": True})
    try:
        await _strict_server(client, user, path, stage)
    finally:
        app.state.settings = settings


async def _strict_server(client: Any, user: Account, path: str, stage: dict[str, Any]) -> None:
    for method, url, body in (
        ("PUT", path, {"title": "x"}),
        ("PUT", f"{path}/stages/{stage['id']}/complete", None),
        ("PUT", "/settings", {"locale": "ru"}),
    ):
        response = await client.request(method, url, json=body, headers=user.headers)
        assert_problem(response, 428, "precondition_required")
    etag = await etag_of(client, user, path)
    response = await client.put(
        path, json={"title": "x"}, headers={**user.headers, "If-Match": etag}
    )
    assert response.status_code == 200, response.text
    # Reads and creation need no precondition.
    assert (
        await client.post("/goals", json={"title": "y"}, headers=user.headers)
    ).status_code == 201
