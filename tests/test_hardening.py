"""Faults and abuse an outside probe found: each test failed before its fix."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from goaltrack.auth.models import PasswordResetToken
from goaltrack.clock import get_now
from goaltrack.files.models import FileDeletion
from helpers import Account, TestClock, assert_problem, create_goal

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2048


async def test_password_confirming_routes_are_rate_limited(client: Any, user: Account) -> None:
    """A stolen access token is not an unthrottled oracle for the password (5/minute per user,
    shared by the three routes)."""
    wrong = {"password": "not the password"}
    answers = [
        await client.put(
            "/account/password",
            json={"current_password": "not the password", "new_password": "another password 1"},
            headers=user.headers,
        ),
        await client.request("DELETE", "/account", json=wrong, headers=user.headers),
        await client.request("DELETE", "/account/data", json=wrong, headers=user.headers),
        *[
            await client.request("DELETE", "/account", json=wrong, headers=user.headers)
            for _ in range(2)
        ],
    ]
    assert [answer.status_code for answer in answers] == [400] * 5
    for method, path in (
        ("PUT", "/account/password"),
        ("DELETE", "/account"),
        ("DELETE", "/account/data"),
    ):
        body = (
            {"current_password": user.password, "new_password": "another password 1"}
            if method == "PUT"
            else {"password": user.password}
        )
        limited = await client.request(method, path, json=body, headers=user.headers)
        assert_problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
    # The account is untouched: the right password was never even checked.
    assert (await client.get("/account", headers=user.headers)).status_code == 200


async def test_login_spraying_from_one_ip_is_throttled(client: Any, register: Any) -> None:
    """Many e-mails, one password, one IP: the per-IP budget (30/minute) stops it, although each
    e-mail stays under its own budget."""
    statuses = [
        (
            await client.post(
                "/auth/login",
                json={"email": f"victim-{index}@example.com", "password": "Summer2026!"},
            )
        ).status_code
        for index in range(31)
    ]
    assert statuses[:30] == [401] * 30
    assert statuses[30] == 429


async def test_reset_mails_from_one_ip_are_throttled(client: Any) -> None:
    """Many addresses, one IP: the per-IP budget (10/hour) stops the 11th, although each address
    stays under its own (3/hour)."""
    answers = [
        await client.post("/auth/forgot-password", json={"email": f"victim-{index}@example.com"})
        for index in range(15)
    ]
    assert [answer.status_code for answer in answers[:10]] == [202] * 10
    for answer in answers[10:]:
        assert_problem(answer, 429, "rate_limited")
        assert 1 <= int(answer.headers["retry-after"]) <= 3600


async def test_multipart_content_type_does_not_lift_the_json_cap(client: Any) -> None:
    body = b"x" * (2 * 1024 * 1024)  # over the 1 MiB JSON cap, under the 10 MiB upload cap
    response = await client.post(
        "/auth/login",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=abc"},
    )
    assert_problem(response, 413, "payload_too_large")


async def test_upload_with_a_revoked_token_is_refused_before_the_body(
    client: Any, app: Any, user: Account
) -> None:
    goal = await create_goal(client, user)
    # A password change revokes every access token issued before it.
    changed = await client.put(
        "/account/password",
        json={"current_password": user.password, "new_password": "a brand new password"},
        headers=user.headers,
    )
    assert changed.status_code == 200
    response = await client.post(
        f"/goals/{goal['id']}/attachments",
        files={"file": ("proof.png", PNG, "image/png")},
        headers=user.headers,
    )
    assert_problem(response, 401, "not_authenticated")
    async with app.state.sessionmaker() as session:
        intents = await session.scalar(select(func.count()).select_from(FileDeletion))
    assert intents == 0


async def test_a_refresh_retried_at_once_is_not_a_replay(client: Any, user: Account) -> None:
    """The client lost the answer and sends the same token again: refused, but the pair the
    first request minted stays valid (no family revocation)."""
    first = await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert first.status_code == 200
    retry = await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert_problem(retry, 401, "invalid_token")
    successor = await client.post(
        "/auth/refresh", json={"refresh_token": first.json()["refresh_token"]}
    )
    assert successor.status_code == 200


async def test_parallel_duplicates_of_one_refresh_keep_the_winner(
    client: Any, user: Account
) -> None:
    answers = await asyncio.gather(
        *(
            client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
            for _ in range(10)
        )
    )
    winners = [answer for answer in answers if answer.status_code == 200]
    assert len(winners) == 1
    assert sorted(answer.status_code for answer in answers) == [200] + [401] * 9
    again = await client.post(
        "/auth/refresh", json={"refresh_token": winners[0].json()["refresh_token"]}
    )
    assert again.status_code == 200


async def test_a_replay_after_the_grace_still_revokes_the_family(
    client: Any, app: Any, user: Account
) -> None:
    first = (await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})).json()
    later = datetime.now(UTC) + timedelta(seconds=6)
    app.dependency_overrides[get_now] = lambda: later
    replay = await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert_problem(replay, 401, "invalid_token")
    successor = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_problem(successor, 401, "invalid_token")


async def test_a_retried_reset_mail_carries_the_one_token_of_its_request(
    client: Any, app: Any, mailbox: Any, user: Account
) -> None:
    """SMTP says "try again later" once: the retry sends the mail with the same token, and the
    request has one token row (a retry used to mint a new one each time). The worker's retry
    countdown passes on the test clock."""
    clock = TestClock().install()
    mailbox.refusals = 1
    response = await client.post("/auth/forgot-password", json={"email": user.email})
    assert response.status_code == 202
    [message] = await mailbox.wait_for(user.email, timeout=30)
    assert mailbox.refused == 1
    assert clock.advanced == [5]  # the mail task's first backoff
    async with app.state.sessionmaker() as session:
        tokens = await session.scalar(select(func.count()).select_from(PasswordResetToken))
    assert tokens == 1
    link = message.get_body(preferencelist=("plain",)).get_content()
    token = link.split("token=")[1].split()[0]
    reset = await client.post(
        "/auth/reset-password", json={"token": token, "new_password": "after the retry 1"}
    )
    assert reset.status_code == 204


@pytest.mark.usefixtures("renewed_pools")
async def test_writes_on_connections_postgresql_dropped_are_503_never_500(
    client: Any, app: Any, user: Account
) -> None:
    """Every pooled connection is killed (as a PostgreSQL crash does) before each round of
    writes: each write answers 503 with Retry-After or succeeds on a fresh connection, never 500;
    and the API recovers."""
    goal = await create_goal(client, user)

    async def kill_pool() -> None:
        # Fill both pools (the engine's, and the hot reads' asyncpg pool), then kill them all
        # from a connection of our own.
        await asyncio.gather(
            *(client.get(path, headers=user.headers) for path in ["/account", "/goals"] * 10)
        )
        killer = await asyncpg.connect(app.state.settings.database_driver_dsn)
        try:
            killed = await killer.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                # This test process's database: another xdist worker's is not ours to kill.
                "WHERE application_name LIKE 'goaltrack-api%' AND datname = current_database()"
            )
        finally:
            await killer.close()
        assert killed >= 2

    writes = [
        lambda: client.post("/goals", json={"title": "after the crash"}, headers=user.headers),
        lambda: client.put("/settings", json={"locale": "ru"}, headers=user.headers),
        lambda: client.post(
            f"/goals/{goal['id']}/stages", json={"title": "a stage"}, headers=user.headers
        ),
        lambda: client.post("/account/export", headers=user.headers),
    ]
    seen: list[int] = []
    for write in writes:
        await kill_pool()
        for _ in range(3):
            response = await write()
            seen.append(response.status_code)
            if response.status_code == 503:
                assert int(response.headers["retry-after"]) >= 1
    assert 500 not in seen
    assert set(seen) <= {200, 201, 202, 409, 503}
    assert (await client.get("/goals", headers=user.headers)).status_code == 200


async def test_logout_ends_the_sessions_access_tokens(client: Any, user: Account) -> None:
    """The access token names its session (the refresh-token family): logout ends it at once,
    on the hot reads and on every other route, while another session of the user lives on."""
    other = (
        await client.post("/auth/login", json={"email": user.email, "password": user.password})
    ).json()
    assert (await client.get("/goals", headers=user.headers)).status_code == 200
    await client.post("/auth/logout", json={"refresh_token": user.refresh_token})
    for path in ("/goals", "/notifications", "/account"):
        assert_problem(await client.get(path, headers=user.headers), 401, "not_authenticated")
    still = {"Authorization": f"Bearer {other['access_token']}"}
    assert (await client.get("/goals", headers=still)).status_code == 200


async def test_a_replay_ends_the_access_tokens_of_the_family(
    client: Any, app: Any, user: Account
) -> None:
    rotated = (
        await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    ).json()
    headers = {"Authorization": f"Bearer {rotated['access_token']}"}
    assert (await client.get("/goals", headers=headers)).status_code == 200
    later = datetime.now(UTC) + timedelta(seconds=6)
    app.dependency_overrides[get_now] = lambda: later
    await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})  # replay
    assert_problem(await client.get("/goals", headers=headers), 401, "not_authenticated")


async def test_bcrypt_never_holds_a_pooled_connection(
    client: Any, app: Any, user: Account, monkeypatch: Any
) -> None:
    """A login (or restore) returns its lookup connection to the pool before bcrypt's ~0.25 s: a
    login flood cannot pin the pool idle in transaction."""
    from goaltrack.auth.security import Passwords

    held: list[int] = []
    original = Passwords.verify

    async def observing(self: Passwords, password: str, password_hash: str | None) -> bool:
        held.append(app.state.engine.pool.checkedout())
        return await original(self, password, password_hash)

    monkeypatch.setattr(Passwords, "verify", observing)
    ok = await client.post("/auth/login", json={"email": user.email, "password": user.password})
    wrong = await client.post("/auth/login", json={"email": user.email, "password": "nope nope"})
    restore = await client.post(
        "/account/restore", json={"email": user.email, "password": user.password}
    )
    assert (ok.status_code, wrong.status_code, restore.status_code) == (200, 401, 200)
    assert held == [0, 0, 0]


async def test_registration_hashes_before_taking_a_connection(
    client: Any, app: Any, monkeypatch: Any
) -> None:
    from goaltrack.auth.security import Passwords

    held: list[int] = []
    original = Passwords.hash

    async def observing(self: Passwords, password: str) -> str:
        held.append(app.state.engine.pool.checkedout())
        return await original(self, password)

    monkeypatch.setattr(Passwords, "hash", observing)
    body = {"email": "fresh@example.com", "password": "correct horse battery"}
    assert (await client.post("/auth/register", json=body)).status_code == 201
    assert_problem(await client.post("/auth/register", json=body), 409, "email_taken")
    assert held == [0, 0]
