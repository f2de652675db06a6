from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from goaltrack.account import service as account_service
from goaltrack.account.models import DataExport
from goaltrack.auth.models import User
from goaltrack.clock import get_now
from goaltrack.db import Base
from goaltrack.goals.models import GoalAttachment, GoalReminder
from goaltrack.notifications.models import Notification
from goaltrack.profile.models import UserSettings
from helpers import Account, assert_problem, create_goal, make_image, wait_until

PNG = make_image("PNG")
DEFAULTS = {
    "push_enabled": True,
    "notification_frequency": "off",
    "notification_times": [],
    "notification_weekday": 0,
    "timezone": "UTC",
    "locale": "en",
    "quiet_hours": None,
}


async def settings_row(app: Any, email: str) -> UserSettings:
    async with app.state.sessionmaker() as session:
        row = await session.scalar(
            select(UserSettings)
            .join(User, User.id == UserSettings.user_id)
            .where(User.email == email)
        )
    assert row is not None
    return row


# --- settings ----------------------------------------------------------------------------------


async def test_settings_defaults_and_updates(
    client: Any, user: Account, other_user: Account
) -> None:
    assert (await client.get("/settings", headers=user.headers)).json() == DEFAULTS
    updated = await client.put(
        "/settings", json={"timezone": "Asia/Tokyo", "locale": "ru"}, headers=user.headers
    )
    assert updated.json() == DEFAULTS | {"timezone": "Asia/Tokyo", "locale": "ru"}
    toggled = await client.put(
        "/settings/notifications", json={"push_enabled": False}, headers=user.headers
    )
    assert toggled.json()["push_enabled"] is False
    assert (await client.get("/settings", headers=other_user.headers)).json() == DEFAULTS


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/settings", {"timezone": "Mars/Olympus"}),
        ("/settings", {"timezone": ""}),
        ("/settings", {"locale": "it"}),  # no catalogue for it (de: since migration 0019)
        ("/settings", {"push_enabled": False}),
        ("/settings/notifications", {}),
        ("/settings/notifications", {"push_enabled": "maybe"}),
        ("/settings/notifications/frequency", {"times": [], "frequency": "daily"}),
        ("/settings/notifications/frequency", {"times": ["09:00", "09:00"], "frequency": "daily"}),
        ("/settings/notifications/frequency", {"times": ["09:00"] * 7, "frequency": "daily"}),
        (
            "/settings/notifications/frequency",
            {"times": [f"0{h}:00" for h in range(7)], "frequency": "daily"},
        ),
        ("/settings/notifications/frequency", {"times": ["9:00"], "frequency": "daily"}),
        ("/settings/notifications/frequency", {"times": ["24:00"], "frequency": "daily"}),
        ("/settings/notifications/frequency", {"times": ["09:00"], "frequency": "hourly"}),
        (
            "/settings/notifications/frequency",
            {"times": ["09:00"], "frequency": "weekly", "weekday": 7},
        ),
    ],
)
async def test_settings_validation(client: Any, user: Account, path: str, body: Any) -> None:
    assert_problem(await client.put(path, json=body, headers=user.headers), 422, "validation_error")


async def test_notification_schedule_is_sorted_and_scheduled_in_the_users_zone(
    client: Any, app: Any, register: Any
) -> None:
    account = await register(timezone="Europe/Berlin")
    now = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # Saturday, CET
    app.dependency_overrides[get_now] = lambda: now
    response = await client.put(
        "/settings/notifications/frequency",
        json={"times": ["20:00", "07:30"], "frequency": "daily"},
        headers=account.headers,
    )
    assert response.status_code == 200
    assert response.json()["notification_times"] == ["07:30", "20:00"]
    row = await settings_row(app, account.email)
    assert row.next_digest_at == datetime(2026, 3, 28, 19, 0, tzinfo=UTC)  # 20:00 CET

    weekly = await client.put(
        "/settings/notifications/frequency",
        json={"times": ["07:30"], "frequency": "weekly", "weekday": 0},
        headers=account.headers,
    )
    assert (weekly.json()["notification_frequency"], weekly.json()["notification_weekday"]) == (
        "weekly",
        0,
    )
    row = await settings_row(app, account.email)
    assert row.next_digest_at == datetime(2026, 3, 30, 5, 30, tzinfo=UTC)  # Monday 07:30 CEST

    off = await client.put(
        "/settings/notifications/frequency",
        json={"times": [], "frequency": "off"},
        headers=account.headers,
    )
    assert off.json()["notification_weekday"] == 0  # kept
    assert (await settings_row(app, account.email)).next_digest_at is None


async def test_time_zone_change_moves_reminders_and_digest(
    client: Any, app: Any, register: Any
) -> None:
    account = await register(timezone="Europe/Berlin")
    now = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    app.dependency_overrides[get_now] = lambda: now
    goal = await create_goal(
        client,
        account,
        title="Stretch",
        reminder={"remind_time": "08:00", "frequency_days": 1},
    )
    assert goal["reminders"][0]["next_fire_at"] == "2026-06-01T06:00:00Z"  # 08:00 CEST
    await client.put(
        "/settings/notifications/frequency",
        json={"times": ["21:00"], "frequency": "daily"},
        headers=account.headers,
    )
    await client.put("/settings", json={"timezone": "America/New_York"}, headers=account.headers)
    moved = (await client.get(f"/goals/{goal['id']}", headers=account.headers)).json()
    assert moved["reminders"][0]["next_fire_at"] == "2026-06-01T12:00:00Z"  # 08:00 EDT
    assert moved["reminders"][0]["remind_time"] == "08:00"
    assert (await settings_row(app, account.email)).next_digest_at == datetime(
        2026, 6, 2, 1, 0, tzinfo=UTC
    )


# --- password ----------------------------------------------------------------------------------


async def test_change_password(client: Any, user: Account, mailbox: Any) -> None:
    other_session = (
        await client.post("/auth/login", json={"email": user.email, "password": user.password})
    ).json()
    wrong = await client.put(
        "/account/password",
        json={"current_password": "not my password", "new_password": "a new password"},
        headers=user.headers,
    )
    assert_problem(wrong, 400, "invalid_password")
    too_long = await client.put(
        "/account/password",
        json={"current_password": user.password, "new_password": "x" * 73},
        headers=user.headers,
    )
    assert_problem(too_long, 422, "validation_error")

    response = await client.put(
        "/account/password",
        json={"current_password": user.password, "new_password": "a new password"},
        headers=user.headers,
    )
    assert response.status_code == 200
    fresh = response.json()
    assert (
        await client.get("/account", headers={"Authorization": f"Bearer {fresh['access_token']}"})
    ).status_code == 200
    assert_problem(await client.get("/account", headers=user.headers), 401, "not_authenticated")
    for token in (user.refresh_token, other_session["refresh_token"]):
        assert_problem(
            await client.post("/auth/refresh", json={"refresh_token": token}), 401, "invalid_token"
        )
    assert (
        await client.post("/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
    ).status_code == 200
    login = await client.post(
        "/auth/login", json={"email": user.email, "password": "a new password"}
    )
    assert login.status_code == 200
    [message] = await mailbox.wait_for(user.email)
    assert message["Subject"] == "Your Goaltrack password was changed"


# --- deletion ----------------------------------------------------------------------------------


async def test_soft_delete_login_refused_then_restore(client: Any, app: Any, user: Account) -> None:
    wrong = await client.request(
        "DELETE", "/account", json={"password": "wrong password"}, headers=user.headers
    )
    assert_problem(wrong, 400, "invalid_password")
    response = await client.request(
        "DELETE", "/account", json={"password": user.password}, headers=user.headers
    )
    assert response.status_code == 202
    restore_until = datetime.fromisoformat(response.json()["restore_until"])
    assert timedelta(days=6, hours=23) < restore_until - datetime.now(UTC) <= timedelta(days=7)

    assert_problem(await client.get("/account", headers=user.headers), 401, "not_authenticated")
    assert_problem(
        await client.post("/auth/refresh", json={"refresh_token": user.refresh_token}),
        401,
        "invalid_token",
    )
    login = await client.post("/auth/login", json={"email": user.email, "password": user.password})
    body = assert_problem(login, 403, "account_deleted")
    assert datetime.fromisoformat(body["restore_until"]) == restore_until
    # A timestamp in a problem reads as in every other body (the 202 above): UTC as `Z`.
    assert body["restore_until"] == response.json()["restore_until"]
    assert body["restore_until"].endswith("Z")
    # The e-mail stays reserved during the grace period.
    assert_problem(
        await client.post(
            "/auth/register", json={"email": user.email, "password": "another password"}
        ),
        409,
        "email_taken",
    )
    # A soft-deleted user cannot start a password reset either.
    assert (
        await client.post("/auth/forgot-password", json={"email": user.email})
    ).status_code == 202

    bad = await client.post(
        "/account/restore", json={"email": user.email, "password": "wrong password"}
    )
    assert_problem(bad, 401, "invalid_credentials")
    restored = await client.post(
        "/account/restore", json={"email": user.email, "password": user.password}
    )
    assert restored.status_code == 200
    headers = {"Authorization": f"Bearer {restored.json()['access_token']}"}
    assert (await client.get("/account", headers=headers)).status_code == 200
    assert (
        await client.post("/auth/login", json={"email": user.email, "password": user.password})
    ).status_code == 200


async def test_grace_expiry_refuses_restore_and_purges(
    client: Any, app: Any, user: Account, other_user: Account
) -> None:
    deleted_at = datetime.now(UTC)
    await client.request(
        "DELETE", "/account", json={"password": user.password}, headers=user.headers
    )
    after_grace = deleted_at + timedelta(days=7, minutes=1)
    app.dependency_overrides[get_now] = lambda: after_grace
    expired = await client.post(
        "/account/restore", json={"email": user.email, "password": user.password}
    )
    assert_problem(expired, 410, "restore_expired")

    async with app.state.sessionmaker() as session, session.begin():
        assert (
            await account_service.purge_expired_accounts(
                session, now=deleted_at + timedelta(days=6), grace_days=7, limit=100
            )
            == 0
        )
    async with app.state.sessionmaker() as session, session.begin():
        assert (
            await account_service.purge_expired_accounts(
                session, now=after_grace, grace_days=7, limit=100
            )
            == 1
        )
    async with app.state.sessionmaker() as session:
        emails = set(await session.scalars(select(User.email)))
    assert emails == {other_user.email}


async def test_purge_task_runs_on_the_worker(
    celery_app: Any, client: Any, app: Any, user: Account, other_user: Account
) -> None:
    await client.request(
        "DELETE", "/account", json={"password": user.password}, headers=user.headers
    )
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(User)
            .where(User.email == user.email)
            .values(deleted_at=datetime.now(UTC) - timedelta(days=8))
        )
    celery_app.send_task("account.purge_deleted_accounts")

    async def purged() -> bool:
        async with app.state.sessionmaker() as session:
            return await session.scalar(select(func.count()).select_from(User)) == 1

    await wait_until(purged)


async def _populate(client: Any, account: Account) -> dict[str, Any]:
    goal = await create_goal(
        client,
        account,
        title="Everything",
        description="d",
        reminder={"remind_time": "09:00", "frequency_days": 2},
    )
    await client.post(f"/goals/{goal['id']}/stages", json={"title": "one"}, headers=account.headers)
    attachment = (
        await client.post(
            f"/goals/{goal['id']}/attachments",
            files={"file": ("proof.png", PNG, "image/png")},
            headers=account.headers,
        )
    ).json()
    await client.post("/auth/login", json={"email": account.email, "password": account.password})
    await client.post("/auth/forgot-password", json={"email": account.email})
    return {"goal": goal, "attachment": attachment}


async def test_hard_delete_leaves_no_row_and_no_file(
    client: Any, app: Any, user: Account, other_user: Account, mailbox: Any
) -> None:
    await _populate(client, user)
    kept = await _populate(client, other_user)
    await mailbox.wait_for(user.email)  # the reset token row exists
    async with app.state.sessionmaker() as session:
        user_id = await session.scalar(select(User.id).where(User.email == user.email))
        session.add(Notification(user_id=user_id, type="digest", title="t", body="b", data={}))
        session.add(DataExport(user_id=user_id, status="ready"))
        await session.commit()
    await app.state.storage.put(
        f"{user_id}/exports/old.zip", b"zip", size=3, content_type="application/zip"
    )

    wrong = await client.request(
        "DELETE", "/account/data", json={"password": "wrong password"}, headers=user.headers
    )
    assert_problem(wrong, 400, "invalid_password")
    response = await client.request(
        "DELETE", "/account/data", json={"password": user.password}, headers=user.headers
    )
    assert response.status_code == 204

    async with app.state.sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            columns = table.columns.keys()
            if "user_id" in columns:
                count = await session.scalar(
                    select(func.count()).select_from(table).where(table.c.user_id == user_id)
                )
                assert count == 0, table.name
        assert (
            await session.scalar(select(func.count()).select_from(User).where(User.id == user_id))
            == 0
        )
        # Child tables without user_id hang off goals: only the other user's remain.
        for name in ("goal_stages", "goal_reminders"):
            assert await session.scalar(text(f"SELECT count(*) FROM {name}")) == 1, name  # noqa: S608

    async def bucket_clean() -> bool:
        return await app.state.storage.list_keys(f"{user_id}/") == []

    await wait_until(bucket_clean)
    assert (
        await client.get(f"/goals/{kept['goal']['id']}", headers=other_user.headers)
    ).status_code == 200
    async with httpx.AsyncClient() as http:
        other_file = (
            await client.get(f"/goals/{kept['goal']['id']}/attachments", headers=other_user.headers)
        ).json()
        assert (await http.get(other_file["items"][0]["url"])).content == PNG
    assert (
        await client.post("/auth/login", json={"email": user.email, "password": user.password})
    ).status_code == 401


# --- export ------------------------------------------------------------------------------------


async def test_export_contains_everything_and_the_link_works(
    client: Any, app: Any, user: Account
) -> None:
    data = await _populate(client, user)
    response = await client.post("/account/export", headers=user.headers)
    assert response.status_code == 202
    assert response.json()["status"] == "pending"

    async def ready() -> bool:
        async with app.state.sessionmaker() as session:
            return (
                await session.scalar(
                    select(Notification).where(Notification.type == "export_ready")
                )
                is not None
            )

    await wait_until(ready, timeout=30)
    async with app.state.sessionmaker() as session:
        notification = await session.scalar(
            select(Notification).where(Notification.type == "export_ready")
        )
        export = await session.scalar(select(DataExport))
    assert notification is not None
    assert export is not None
    assert export.status == "ready"
    assert notification.title == "Your data export is ready"
    expires_at = datetime.fromisoformat(notification.data["expires_at"])
    assert timedelta(days=6, hours=23) < expires_at - datetime.now(UTC) <= timedelta(days=7)
    # The stable, authenticated address: a short-lived URL behind it, never stored.
    assert notification.data["url"] == f"/account/exports/{export.id}/download"
    redirect = await client.get(notification.data["url"], headers=user.headers)
    assert redirect.status_code == 302
    assert redirect.headers["Cache-Control"] == "private, no-store"
    assert "X-Amz-Expires=900" in redirect.headers["Location"]
    async with httpx.AsyncClient() as http:
        download = await http.get(redirect.headers["Location"])
    assert download.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    document = json.loads(archive.read("data.json"))
    assert document["account"]["email"] == user.email
    assert (document["account"]["email_verified"], document["account"]["display_name"]) == (
        False,
        None,
    )
    assert document["settings"]["timezone"] == "UTC"
    [goal] = document["goals"]
    assert goal["id"] == data["goal"]["id"]
    assert [s["title"] for s in goal["stages"]] == ["one"]
    assert goal["reminders"][0]["remind_time"] == "09:00:00"
    [attachment] = goal["attachments"]
    assert attachment["id"] == data["attachment"]["id"]
    assert archive.read(attachment["path"]) == PNG
    assert document["sessions"]
    assert all("token_hash" not in item for item in document["sessions"])


async def test_export_ready_is_also_mailed_as_text_and_html(
    client: Any, user: Account, mailbox: Any
) -> None:
    response = await client.post("/account/export", headers=user.headers)
    assert response.status_code == 202
    [message] = await mailbox.wait_for(user.email, timeout=30)
    assert message["Subject"] == "Your data export is ready"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    # The link opens the app, which downloads with its own token: no download URL in a mailbox.
    [link] = [word for word in text.split() if word.startswith("goaltrack://exports/")]
    assert "X-Amz" not in text
    assert "X-Amz" not in html
    assert link in html  # the link is visible as text in the HTML too
    export_id = link.removeprefix("goaltrack://exports/")
    redirect = await client.get(f"/account/exports/{export_id}/download", headers=user.headers)
    async with httpx.AsyncClient() as http:
        download = await http.get(redirect.headers["Location"])
    assert download.status_code == 200
    assert zipfile.is_zipfile(io.BytesIO(download.content))


async def test_an_export_is_the_callers_and_ends_with_the_session(
    client: Any, app: Any, user: Account, other_user: Account
) -> None:
    async with app.state.sessionmaker() as session:
        user_id = await session.scalar(select(User.id).where(User.email == user.email))
        now = datetime.now(UTC)
        ready = DataExport(
            id=uuid.uuid4(),
            user_id=user_id,
            status="ready",
            object_key=f"{user_id}/exports/x.zip",
            completed_at=now,
            expires_at=now + timedelta(days=7),
        )
        expired = DataExport(
            id=uuid.uuid4(),
            user_id=user_id,
            status="ready",
            object_key=f"{user_id}/exports/y.zip",
            completed_at=now - timedelta(days=8),
            expires_at=now - timedelta(days=1),
        )
        session.add_all([ready, expired])
        await session.commit()
    path = f"/account/exports/{ready.id}/download"
    assert (await client.get(path, headers=user.headers)).status_code == 302
    assert_problem(await client.get(path, headers=other_user.headers), 404, "not_found")
    assert_problem(
        await client.get(f"/account/exports/{expired.id}/download", headers=user.headers),
        410,
        "export_expired",
    )
    # A password change ends every other session: the old token no longer downloads.
    changed = await client.put(
        "/account/password",
        json={"current_password": user.password, "new_password": "another passphrase 1"},
        headers=user.headers,
    )
    assert changed.status_code == 200
    assert_problem(await client.get(path, headers=user.headers), 401, "not_authenticated")


async def test_one_export_at_a_time(client: Any, app: Any, user: Account) -> None:
    async with app.state.sessionmaker() as session:
        user_id = await session.scalar(select(User.id).where(User.email == user.email))
        session.add(DataExport(id=uuid.uuid4(), user_id=user_id, status="pending"))
        await session.commit()
    assert_problem(
        await client.post("/account/export", headers=user.headers), 409, "export_in_progress"
    )


async def test_expired_exports_are_purged(
    celery_app: Any, client: Any, app: Any, user: Account
) -> None:
    async with app.state.sessionmaker() as session:
        user_id = await session.scalar(select(User.id).where(User.email == user.email))
        key = f"{user_id}/exports/{uuid.uuid4()}.zip"
        session.add(
            DataExport(
                user_id=user_id,
                status="ready",
                object_key=key,
                expires_at=datetime.now(UTC) - timedelta(minutes=1),
            )
        )
        await session.commit()
    await app.state.storage.put(key, b"zip", size=3, content_type="application/zip")
    celery_app.send_task("account.maintain_exports")

    async def purged() -> bool:
        async with app.state.sessionmaker() as session:
            rows = await session.scalar(select(func.count()).select_from(DataExport))
        return rows == 0 and not await app.state.storage.exists(key)

    await wait_until(purged)


async def test_account_routes_require_authentication(client: Any) -> None:
    for method, path in (
        ("get", "/account"),
        ("put", "/account/password"),
        ("delete", "/account"),
        ("delete", "/account/data"),
        ("post", "/account/export"),
        ("get", "/settings"),
        ("put", "/settings"),
        ("put", "/settings/notifications"),
        ("put", "/settings/notifications/frequency"),
    ):
        assert_problem(await client.request(method, path, json={}), 401, "not_authenticated")
    _ = (GoalAttachment, GoalReminder)


async def test_lost_export_tasks_are_sent_again_then_given_up(
    celery_app: Any, client: Any, app: Any, user: Account
) -> None:
    """The broker was down when the export was requested: the row waits, maintenance resends."""
    async with app.state.sessionmaker() as session:
        user_id = await session.scalar(select(User.id).where(User.email == user.email))
        lost = DataExport(
            user_id=user_id, status="pending", created_at=datetime.now(UTC) - timedelta(minutes=20)
        )
        session.add(lost)
        await session.commit()
    celery_app.send_task("account.maintain_exports")

    async def built() -> bool:
        async with app.state.sessionmaker() as session:
            return await session.scalar(select(DataExport.status)) == "ready"

    await wait_until(built, timeout=30)
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(DataExport).values(
                status="pending", created_at=datetime.now(UTC) - timedelta(hours=3)
            )
        )
    celery_app.send_task("account.maintain_exports")

    async def given_up() -> bool:
        async with app.state.sessionmaker() as session:
            return await session.scalar(select(DataExport.status)) == "failed"

    await wait_until(given_up)
    assert (await client.post("/account/export", headers=user.headers)).status_code == 202

    async def rebuilt() -> bool:
        async with app.state.sessionmaker() as session:
            statuses = set(await session.scalars(select(DataExport.status)))
        return statuses == {"failed", "ready"}

    await wait_until(rebuilt, timeout=30)


async def test_restore_shares_the_login_attempt_budget(client: Any, user: Account) -> None:
    for _ in range(3):
        await client.post("/auth/login", json={"email": user.email, "password": "wrong password"})
    for _ in range(2):
        response = await client.post(
            "/account/restore", json={"email": user.email, "password": "wrong password"}
        )
        assert_problem(response, 401, "invalid_credentials")
    blocked = await client.post(
        "/account/restore", json={"email": user.email, "password": user.password}
    )
    assert_problem(blocked, 429, "rate_limited")


async def test_a_refresh_racing_a_password_change_does_not_survive_it(
    client: Any, user: Account
) -> None:
    """Refresh and revocation take the user's lock in the same order: a token minted by a refresh
    that ran concurrently with the change is revoked with the rest."""
    refresh_token, password = user.refresh_token, user.password
    for round_ in range(4):
        new_password = f"new password {round_}"
        refreshed, changed = await asyncio.gather(
            client.post("/auth/refresh", json={"refresh_token": refresh_token}),
            client.put(
                "/account/password",
                json={"current_password": password, "new_password": new_password},
                headers=user.headers,
            ),
        )
        assert changed.status_code == 200
        if refreshed.status_code == 200:
            minted = refreshed.json()
            again = await client.post(
                "/auth/refresh", json={"refresh_token": minted["refresh_token"]}
            )
            assert_problem(again, 401, "invalid_token")
            headers = {"Authorization": f"Bearer {minted['access_token']}"}
            assert_problem(await client.get("/account", headers=headers), 401, "not_authenticated")
        tokens = changed.json()
        user.access_token, refresh_token, password = (
            tokens["access_token"],
            tokens["refresh_token"],
            new_password,
        )


async def test_a_locale_the_api_cannot_serve_cannot_be_stored(app: Any, user: Account) -> None:
    """GET /settings once answered 500 for a row seeded with locale 'de' (unsupported then): the
    database now holds only what the API accepts (a locale without a catalogue: 'it')."""
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        async with app.state.sessionmaker() as session, session.begin():
            await session.execute(update(UserSettings).values(locale="it"))
