"""GET /sync: the snapshot, deltas with tombstones, and the guarantee that no change is skipped
(concurrent writers, transactions committed out of order)."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import text

from goaltrack.sync.schemas import SyncPage
from goaltrack.sync.service import SyncCursor, delete_expired_tombstones
from helpers import Account, add_stages, assert_problem, create_goal


async def sync_all(
    client: Any, account: Account, cursor: str | None = None, limit: int = 200
) -> tuple[list[dict[str, Any]], str]:
    """Follows `cursor` while `has_more`: every change, and the cursor to continue from."""
    changes: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get("/sync", params=params, headers=account.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        SyncPage.model_validate(page)  # the body keeps the declared contract
        changes += page["changes"]
        cursor = page["cursor"]
        if not page["has_more"]:
            return changes, cursor


async def sync_until(
    client: Any,
    account: Account,
    cursor: str | None,
    done: Any,
    timeout: float = 20,
    limit: int = 200,
) -> tuple[list[dict[str, Any]], str]:
    """Syncs until `done(changes so far)`. A change is delivered once every transaction older
    than it has ended, in any database of the cluster: the tests' other databases (xdist) run
    their own transactions on the same server, so a change may wait a moment."""
    changes: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        delta, cursor = await sync_all(client, account, cursor, limit=limit)
        changes += delta
        if done(changes) or time.monotonic() > deadline:
            return changes, cursor
        await asyncio.sleep(0.05)


def apply(replica: dict[tuple[str, Any], Any], changes: list[dict[str, Any]]) -> None:
    for change in changes:
        key = (change["type"], change["id"])
        if change["op"] == "delete":
            replica.pop(key, None)
        else:
            replica[key] = change["data"]


async def server_state(client: Any, account: Account) -> dict[tuple[str, Any], Any]:
    """What the API's ordinary reads say the caller's state is."""
    state: dict[tuple[str, Any], Any] = {}
    for path in ("/goals", "/goals/archived"):
        cursor = None
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(path, params=params, headers=account.headers)).json()
            for item in page["items"]:
                goal = (await client.get(f"/goals/{item['id']}", headers=account.headers)).json()
                state["goal", item["id"]] = goal
            if (cursor := page["next_cursor"]) is None:
                break
    state["settings", None] = (await client.get("/settings", headers=account.headers)).json()
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/notifications", params=params, headers=account.headers)).json()
        for item in page["items"]:
            state["notification", item["id"]] = item
        if (cursor := page["next_cursor"]) is None:
            break
    for item in (await client.get("/achievements", headers=account.headers)).json()["items"]:
        if item["earned"]:
            state["achievement", item["code"]] = item
    return state


def comparable(state: dict[tuple[str, Any], Any]) -> dict[tuple[str, Any], Any]:
    """Presigned URLs are signed anew at every read; the share of users is a statistic."""
    result = {}
    for key, value in state.items():
        value = dict(value)
        if key[0] == "goal":
            value["attachments"] = [
                {k: v for k, v in item.items() if k != "url"} for item in value["attachments"]
            ]
        value.pop("percent_of_users", None)
        result[key] = value
    return result


async def test_first_sync_is_the_whole_state_then_only_changes(
    client: Any, user: Account, other_user: Account
) -> None:
    goal = await create_goal(client, user, reminder={"remind_time": "09:00", "frequency_days": 1})
    await add_stages(client, user, goal["id"], 2)
    gone = await create_goal(client, user, title="Deleted before the first sync")
    await client.delete(f"/goals/{gone['id']}", headers=user.headers)
    await create_goal(client, other_user, title="Someone else's")

    first = (await client.get("/sync", headers=user.headers)).json()
    assert all(change["op"] == "upsert" for change in first["changes"])  # no tombstone at first
    server = comparable(await server_state(client, user))
    replica: dict[tuple[str, Any], Any] = {}

    def caught_up(changes: list[dict[str, Any]]) -> bool:
        apply(replica, changes)
        changes.clear()
        return comparable(replica) == server

    _, cursor = await sync_until(client, user, None, caught_up)
    assert comparable(replica) == server
    assert ("goal", goal["id"]) in replica
    assert ("settings", None) in replica
    assert ("achievement", "first_goal") in replica

    # Nothing new: an empty page, and the cursor still works.
    again, cursor = await sync_all(client, user, cursor)
    assert again == []

    await client.put(f"/goals/{goal['id']}", json={"title": "Renamed"}, headers=user.headers)
    await client.delete(f"/goals/{goal['id']}", headers=user.headers)
    second = await create_goal(client, user, title="Second")
    await client.put("/settings", json={"timezone": "Europe/Paris"}, headers=user.headers)
    delta, cursor = await sync_until(client, user, cursor, lambda changes: len(changes) >= 3)
    assert [(c["type"], c["id"], c["op"]) for c in delta] == [
        ("goal", goal["id"], "delete"),
        ("goal", second["id"], "upsert"),
        ("settings", None, "upsert"),
    ]
    apply(replica, delta)
    assert comparable(replica) == comparable(await server_state(client, user))


async def test_pages_follow_the_cursor(client: Any, user: Account) -> None:
    for index in range(7):
        await create_goal(client, user, title=f"Goal {index}")

    def seven_goals(changes: list[dict[str, Any]]) -> bool:
        return len({c["id"] for c in changes if c["type"] == "goal"}) == 7

    changes, _ = await sync_until(client, user, None, seven_goals, limit=2)
    goals = [c["id"] for c in changes if c["type"] == "goal"]
    assert len(goals) == len(set(goals)) == 7


async def test_a_write_outside_the_api_feeds_the_log(client: Any, user: Account, app: Any) -> None:
    """A write that never passes the API (here: SQL, as a worker or a fix in psql would) is in
    the log too: the log is written by PostgreSQL."""
    goal = await create_goal(client, user)
    _, cursor = await sync_all(client, user)
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text("UPDATE goals SET title = 'Edited in psql' WHERE id = :id"), {"id": goal["id"]}
        )

    def edited(changes: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(c["id"], c["data"]["title"]) for c in changes if c["type"] == "goal"]

    delta, _ = await sync_until(client, user, cursor, edited)
    # (Under load the first sync may not have reached the goal yet: its latest state comes now.)
    assert edited(delta) == [(goal["id"], "Edited in psql")]


async def test_notifications_and_read_state_are_synced(client: Any, user: Account) -> None:
    goal = await create_goal(client, user)
    stage = (await add_stages(client, user, goal["id"], 1))[0]
    _, cursor = await sync_all(client, user)
    await client.put(f"/goals/{goal['id']}/stages/{stage['id']}/complete", headers=user.headers)
    expected = {"goal", "notification", "achievement"}  # goal_completed, first_completion

    def all_kinds(changes: list[dict[str, Any]]) -> bool:
        return expected <= {c["type"] for c in changes}

    delta, cursor = await sync_until(client, user, cursor, all_kinds)
    assert all_kinds(delta)
    unread = (await client.get("/notifications", headers=user.headers)).json()["unread_count"]
    await client.put("/notifications/read-all", headers=user.headers)
    delta, _ = await sync_until(client, user, cursor, lambda changes: len(changes) >= unread)
    assert delta
    assert all(c["type"] == "notification" and c["data"]["is_read"] for c in delta)


async def test_transactions_committed_out_of_order_are_both_delivered(
    client: Any, user: Account, app: Any, stack: Any
) -> None:
    """T1 writes first (smaller xid and seq) but commits last; a sync between the two commits
    must not step past T1's change."""
    first = await create_goal(client, user, title="first")
    second = await create_goal(client, user, title="second")
    _, cursor = await sync_all(client, user)
    dsn = stack.postgres.url.replace("postgresql+asyncpg", "postgresql")
    t1 = await asyncpg.connect(dsn)
    t2 = await asyncpg.connect(dsn)
    try:
        tx1, tx2 = t1.transaction(), t2.transaction()
        await tx1.start()
        await t1.execute("UPDATE goals SET title = 'first, edited' WHERE id = $1", first["id"])
        await tx2.start()
        await t2.execute("UPDATE goals SET title = 'second, edited' WHERE id = $1", second["id"])
        await tx2.commit()
        # T1 still runs: its change is below no horizon yet, and T2's waits behind it.
        during, cursor = await sync_all(client, user, cursor)
        # T2 has committed, but a cursor past it would pass T1's change: it waits.
        assert edited(during) == set()
        await tx1.commit()
    finally:
        await t1.close()
        await t2.close()
    after, _ = await sync_until(client, user, cursor, lambda changes: len(edited(changes)) == 2)
    assert edited(after) == {"first, edited", "second, edited"}


def edited(changes: list[dict[str, Any]]) -> set[str]:
    return {
        c["data"]["title"]
        for c in changes
        if c["type"] == "goal" and c["data"]["title"].endswith(", edited")
    }


async def test_concurrent_writers_and_a_syncing_reader_end_equal(
    client: Any, user: Account
) -> None:
    """Three writers (creates, edits, stage toggles, deletions) for 20 s while a reader syncs
    continuously; the reader's replica ends equal to the server's state."""
    deadline = time.monotonic() + 20
    errors: list[str] = []

    async def writer(index: int) -> None:
        step = 0
        mine: list[str] = []
        while time.monotonic() < deadline:
            step += 1
            if not mine or step % 4 == 0:
                goal = await create_goal(client, user, title=f"w{index}-{step}")
                mine.append(goal["id"])
                stage = await client.post(
                    f"/goals/{goal['id']}/stages", json={"title": "s"}, headers=user.headers
                )
                if stage.status_code != 201:
                    errors.append(stage.text)
            elif step % 7 == 0:
                await client.delete(f"/goals/{mine.pop(0)}", headers=user.headers)
            else:
                goal_id = mine[step % len(mine)]
                response = await client.put(
                    f"/goals/{goal_id}", json={"title": f"w{index}-{step}"}, headers=user.headers
                )
                if response.status_code != 200:
                    errors.append(response.text)

    replica: dict[tuple[str, Any], Any] = {}
    cursor: str | None = None
    syncs = 0

    async def reader() -> None:
        nonlocal cursor, syncs
        while time.monotonic() < deadline:
            changes, cursor = await sync_all(client, user, cursor, limit=7)
            apply(replica, changes)
            syncs += 1

    await asyncio.gather(reader(), *(writer(index) for index in range(3)))
    server = comparable(await server_state(client, user))

    def caught_up(changes: list[dict[str, Any]]) -> bool:
        apply(replica, changes)
        changes.clear()
        return comparable(replica) == server

    await sync_until(client, user, cursor, caught_up)
    assert not errors
    assert syncs > 10
    assert comparable(replica) == server


async def test_garbage_and_expired_cursors(client: Any, user: Account, app: Any) -> None:
    for garbage in ("x", "!!!", base64.urlsafe_b64encode(b"1.2.3").decode(), "MS4tMS4wLjAuMA"):
        assert_problem(
            await client.get("/sync", params={"cursor": garbage}, headers=user.headers),
            400,
            "invalid_cursor",
        )
    _, cursor = await sync_all(client, user)
    # A client last caught up 31 days ago (the access token would not live that long on a
    # moved clock: the cursor is aged instead).
    position = SyncCursor.decode(cursor)
    month_ago = datetime.now(UTC) - timedelta(days=31)
    aged = replace(position, caught_up=int(month_ago.timestamp())).encode()
    assert_problem(
        await client.get("/sync", params={"cursor": aged}, headers=user.headers),
        410,
        "sync_cursor_expired",
    )
    fresh = replace(position, caught_up=int((month_ago + timedelta(days=2)).timestamp()))
    response = await client.get("/sync", params={"cursor": fresh.encode()}, headers=user.headers)
    assert response.status_code == 200
    # Starting again without a cursor works.
    assert (await client.get("/sync", headers=user.headers)).status_code == 200


async def test_tombstones_are_kept_their_days_then_collected(
    client: Any, user: Account, app: Any
) -> None:
    first = await create_goal(client, user, title="deleted long ago")
    newest = await create_goal(client, user, title="deleted last")
    for goal in (first, newest):
        await client.delete(f"/goals/{goal['id']}", headers=user.headers)
    lists_etag = (await client.get("/goals", headers=user.headers)).headers["ETag"]
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text("UPDATE sync_changes SET changed_at = now() - interval '32 days' WHERE deleted")
        )
    async with app.state.sessionmaker() as session, session.begin():
        deleted = await delete_expired_tombstones(
            session, now=datetime.now(UTC), keep=timedelta(days=31)
        )
    # The older goes; the user's newest goal row stays, so the lists' ETag never goes back.
    assert deleted == 1
    async with app.state.engine.connect() as connection:
        left = (await connection.execute(text("SELECT object_id FROM sync_changes"))).all()
    assert newest["id"] in {str(row.object_id) for row in left}
    assert first["id"] not in {str(row.object_id) for row in left}
    assert (await client.get("/goals", headers=user.headers)).headers["ETag"] == lists_etag


async def test_limit_is_capped_as_every_list_limit(client: Any, user: Account) -> None:
    response = await client.get("/sync", params={"limit": 0}, headers=user.headers)
    assert response.status_code == 422
    response = await client.get("/sync", params={"limit": 100_000}, headers=user.headers)
    assert response.status_code == 200


async def test_another_users_changes_never_appear(
    client: Any, user: Account, other_user: Account
) -> None:
    _, cursor = await sync_all(client, user)
    await create_goal(client, other_user)
    await client.put("/settings", json={"locale": "ru"}, headers=other_user.headers)
    assert (await sync_all(client, user, cursor))[0] == []


async def test_account_deletion_leaves_no_log_rows(client: Any, user: Account, app: Any) -> None:
    goal = await create_goal(client, user)
    await add_stages(client, user, goal["id"], 3)
    response = await client.request(
        "DELETE", "/account/data", json={"password": user.password}, headers=user.headers
    )
    assert response.status_code == 204, response.text
    async with app.state.engine.connect() as connection:
        count = await connection.scalar(text("SELECT count(*) FROM sync_changes"))
    assert count == 0


async def test_every_table_a_synced_object_is_made_of_feeds_the_log(app: Any) -> None:
    """The change log is written by triggers: a table whose rows a synced object shows (a goal's
    parts, settings, the feed, earned achievements) must carry one, on every kind of write."""
    expected = {
        "goals": {"INSERT", "UPDATE", "DELETE"},
        "goal_stages": {"INSERT", "UPDATE", "DELETE"},
        "goal_attachments": {"INSERT", "UPDATE", "DELETE"},
        "goal_reminders": {"INSERT", "UPDATE", "DELETE"},
        "user_settings": {"INSERT", "UPDATE"},
        "notifications": {"INSERT", "UPDATE", "DELETE"},
        "user_achievements": {"INSERT"},
        "habit_checkins": {"INSERT", "UPDATE", "DELETE"},
    }
    async with app.state.engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT event_object_table, event_manipulation"
                    " FROM information_schema.triggers WHERE trigger_name LIKE 'sync\\_%'"
                )
            )
        ).all()
    found: dict[str, set[str]] = {}
    for table, event in rows:
        found.setdefault(table, set()).add(event)
    assert found == expected


async def test_the_ai_workers_plan_reaches_sync(client: Any, user: Account) -> None:
    """The Celery worker writes the new stages and the notification in its own transaction."""
    goal = await create_goal(client, user, title="Learn Spanish")
    _, cursor = await sync_all(client, user)
    response = await client.post(f"/goals/{goal['id']}/ai-sync", headers=user.headers)
    assert response.status_code == 202, response.text

    def plan_arrived(changes: list[dict[str, Any]]) -> bool:
        goals = [c["data"] for c in changes if c["type"] == "goal"]
        notes = [c["data"]["type"] for c in changes if c["type"] == "notification"]
        return bool(goals) and goals[-1]["ai_status"] == "done" and "ai_stages_ready" in notes

    delta, _ = await sync_until(client, user, cursor, plan_arrived)
    assert plan_arrived(delta)
    [latest] = [c["data"] for c in delta if c["type"] == "goal"][-1:]
    assert latest == (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()
