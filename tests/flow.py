"""The representative API flow the cluster tests run through each topology (PgBouncer, a
replica, the balancer): every read comes right after the write it must show."""

from __future__ import annotations

import uuid
from typing import Any

from helpers import wait_until


async def api_flow(http: Any) -> dict[str, str]:
    """Register, goals CRUD, the hot reads, a habit's check-in, the feed and sync, on `http` (an
    httpx client of the app or of a proxy); the account's e-mail and access token."""
    email = f"flow-{uuid.uuid4().hex[:12]}@example.com"
    registered = await http.post(
        "/auth/register", json={"email": email, "password": "correct horse battery"}
    )
    assert registered.status_code == 201, registered.text
    token = registered.json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}

    created = await http.post("/goals", json={"title": "Ship it"}, headers=auth)
    assert created.status_code == 201, created.text
    goal_id = created.json()["id"]
    listed = await http.get("/goals", headers=auth)
    assert listed.status_code == 200, listed.text
    assert [goal["id"] for goal in listed.json()["items"]] == [goal_id]
    updated = await http.put(f"/goals/{goal_id}", json={"title": "Shipped"}, headers=auth)
    assert updated.status_code == 200, updated.text
    read = await http.get(f"/goals/{goal_id}", headers=auth)
    assert (read.status_code, read.json()["title"]) == (200, "Shipped"), read.text

    habit = await http.post(
        "/goals",
        json={"title": "Run", "kind": "habit", "schedule": {"type": "daily"}},
        headers=auth,
    )
    assert habit.status_code == 201, habit.text
    checked = await http.post(f"/goals/{habit.json()['id']}/checkins", json={}, headers=auth)
    assert checked.status_code == 201, checked.text
    calendar = await http.get(f"/goals/{habit.json()['id']}/checkins", headers=auth)
    assert calendar.status_code == 200, calendar.text
    assert len(calendar.json()["items"]) == 1, calendar.text

    feed = await http.get("/notifications", headers=auth)
    assert feed.status_code == 200, feed.text

    async def synced() -> bool:
        """GET /sync returns what committed below the server's visibility horizon: a transaction
        still open anywhere on the server (another flow's, another test's) holds it back, and
        the client's next sync brings the rest."""
        changes = await http.get("/sync", headers=auth)
        assert changes.status_code == 200, changes.text
        goals = {change["id"] for change in changes.json()["changes"] if change["type"] == "goal"}
        return goals == {goal_id, habit.json()["id"]}

    await wait_until(synced, timeout=30, interval=0.1)

    deleted = await http.delete(f"/goals/{goal_id}", headers=auth)
    assert deleted.status_code == 204, deleted.text
    gone = await http.get(f"/goals/{goal_id}", headers=auth)
    assert gone.status_code == 404, gone.text
    return {"email": email, "token": token}
