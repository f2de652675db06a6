from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import func, select

from goaltrack.auth.models import PasswordResetToken, RefreshToken, User
from goaltrack.auth.security import hash_token
from goaltrack.auth.service import SEND_PASSWORD_RESET
from goaltrack.clock import get_now, set_clock
from goaltrack.worker.outbox import OutboxTask
from helpers import Account, assert_problem, wait_until

PASSWORD = "correct horse battery"


async def test_register_returns_token_pair_and_normalises_email(client: Any, app: Any) -> None:
    response = await client.post(
        "/auth/register", json={"email": "Ada@Example.COM", "password": PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 1800
    assert len(body["refresh_token"]) >= 43  # 256 bits, base64url
    account = await client.get(
        "/account", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert account.status_code == 200
    assert account.json()["email"] == "ada@example.com"
    assert set(account.json()) == {"id", "email", "email_verified", "display_name", "created_at"}


async def test_register_creates_default_settings_and_accepts_zone_and_locale(
    client: Any, app: Any
) -> None:
    from goaltrack.profile.models import UserSettings

    response = await client.post(
        "/auth/register",
        json={
            "email": "zone@example.com",
            "password": PASSWORD,
            "timezone": "Europe/Berlin",
            "locale": "ru",
        },
    )
    assert response.status_code == 201
    async with app.state.sessionmaker() as session:
        settings = await session.scalar(select(UserSettings))
    assert settings is not None
    assert (settings.timezone, settings.locale, settings.push_enabled) == (
        "Europe/Berlin",
        "ru",
        True,
    )
    bad_zone = await client.post(
        "/auth/register",
        json={"email": "z2@example.com", "password": PASSWORD, "timezone": "Mars/Olympus"},
    )
    assert_problem(bad_zone, 422, "validation_error")


async def test_register_duplicate_email_is_409_case_insensitively(
    client: Any, register: Any
) -> None:
    await register("dup@example.com")
    response = await client.post(
        "/auth/register", json={"email": "DUP@example.com", "password": PASSWORD}
    )
    assert_problem(response, 409, "email_taken")


async def test_concurrent_registrations_of_one_email_yield_one_account(
    client: Any, app: Any
) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/auth/register", json={"email": "race@example.com", "password": PASSWORD})
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "too short"),
        ("        ", "blank"),
        ("a" * 73, "over 72 bytes"),
        ("ж" * 37, "74 bytes in UTF-8 though 37 characters"),
    ],
)
async def test_register_rejects_bad_passwords(client: Any, password: str, why: str) -> None:
    response = await client.post(
        "/auth/register", json={"email": "p@example.com", "password": password}
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "password"], why


async def test_password_of_exactly_72_bytes_is_accepted_and_not_truncated(
    client: Any, register: Any
) -> None:
    password = "b" * 72
    account = await register("long@example.com", password)
    assert account.access_token
    near_miss = await client.post(
        "/auth/login", json={"email": "long@example.com", "password": "b" * 71 + "c"}
    )
    assert_problem(near_miss, 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "a@example.com"},
        {"email": "a@example.com", "password": PASSWORD, "is_admin": True},
        {"email": ["a@example.com"], "password": PASSWORD},
    ],
)
async def test_register_rejects_invalid_bodies(client: Any, body: dict[str, Any]) -> None:
    response = await client.post("/auth/register", json=body)
    body = assert_problem(response, 422, "validation_error")
    assert all({"loc", "msg", "type"} <= error.keys() for error in body["errors"])


async def test_malformed_json_is_422_problem(client: Any) -> None:
    response = await client.post(
        "/auth/login", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 422, "validation_error")


async def test_login_success_and_failures_are_indistinguishable(client: Any, user: Account) -> None:
    ok = await client.post(
        "/auth/login", json={"email": user.email.upper(), "password": user.password}
    )
    assert ok.status_code == 200
    wrong = await client.post(
        "/auth/login", json={"email": user.email, "password": "wrong password"}
    )
    unknown = await client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": "whatever1"}
    )
    assert_problem(wrong, 401, "invalid_credentials")
    assert_problem(unknown, 401, "invalid_credentials")
    # Identical but for the request id each answer carries.
    assert {**wrong.json(), "request_id": None} == {**unknown.json(), "request_id": None}


async def test_login_runs_bcrypt_once_with_a_dummy_hash_for_unknown_emails(
    client: Any, user: Account
) -> None:
    """Known or not, a login verifies one bcrypt hash (the dummy one for an unknown e-mail), so
    its cost does not tell which addresses have an account."""
    from goaltrack.auth.security import Passwords

    calls: list[str | None] = []
    original = Passwords.verify

    async def counting(self: Passwords, password: str, password_hash: str | None) -> bool:
        calls.append(password_hash)
        return await original(self, password, password_hash)

    Passwords.verify = counting  # type: ignore[method-assign]
    try:
        for email in (user.email, "nobody@example.com"):
            response = await client.post(
                "/auth/login", json={"email": email, "password": "wrong password"}
            )
            assert_problem(response, 401, "invalid_credentials")
    finally:
        Passwords.verify = original  # type: ignore[method-assign]
    assert len(calls) == 2
    assert calls[0] is not None
    assert calls[1] is None


async def test_login_is_rate_limited_per_email_and_ip(client: Any, user: Account) -> None:
    for _ in range(5):
        response = await client.post(
            "/auth/login", json={"email": user.email, "password": "wrong password"}
        )
        assert response.status_code == 401
    blocked = await client.post(
        "/auth/login", json={"email": user.email, "password": user.password}
    )
    assert_problem(blocked, 429, "rate_limited")
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    other = await client.post(
        "/auth/login", json={"email": "other@example.com", "password": "whatever1"}
    )
    assert other.status_code == 401  # another e-mail is not blocked


async def test_refresh_rotates_and_old_token_stops_working(client: Any, user: Account) -> None:
    first = await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != user.refresh_token
    account = await client.get(
        "/account", headers={"Authorization": f"Bearer {rotated['access_token']}"}
    )
    assert account.status_code == 200
    second = await client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert second.status_code == 200


async def test_refresh_token_is_stored_hashed(app: Any, user: Account) -> None:
    async with app.state.sessionmaker() as session:
        hashes = (await session.scalars(select(RefreshToken.token_hash))).all()
    assert hashes == [hash_token(user.refresh_token)]
    assert user.refresh_token not in hashes


async def test_refresh_replay_revokes_the_whole_family(
    client: Any, app: Any, user: Account
) -> None:
    rotated = (
        await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    ).json()
    # Past the retry grace (REFRESH_REUSE_GRACE_SECONDS, 5 s): a replay.
    later = datetime.now(UTC) + timedelta(seconds=6)
    app.dependency_overrides[get_now] = lambda: later
    replay = await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert_problem(replay, 401, "invalid_token")
    # The legitimate successor dies too: the attacker and the victim both have to log in again.
    successor = await client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert_problem(successor, 401, "invalid_token")


async def test_replay_does_not_touch_other_sessions(client: Any, app: Any, user: Account) -> None:
    login = (
        await client.post("/auth/login", json={"email": user.email, "password": user.password})
    ).json()
    await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    later = datetime.now(UTC) + timedelta(seconds=6)
    app.dependency_overrides[get_now] = lambda: later
    await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    other_device = await client.post(
        "/auth/refresh", json={"refresh_token": login["refresh_token"]}
    )
    assert other_device.status_code == 200


async def test_concurrent_refreshes_of_one_token_exactly_one_succeeds(
    client: Any, user: Account
) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
            for _ in range(5)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 401, 401, 401, 401]


async def test_expired_refresh_token_is_rejected(client: Any, app: Any, user: Account) -> None:
    app.dependency_overrides[get_now] = lambda: datetime.now(UTC) + timedelta(days=7, seconds=1)
    response = await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert_problem(response, 401, "invalid_token")


async def test_unknown_refresh_token_is_401(client: Any) -> None:
    response = await client.post("/auth/refresh", json={"refresh_token": "made-up"})
    assert_problem(response, 401, "invalid_token")


async def test_logout_revokes_the_session_and_is_idempotent(client: Any, user: Account) -> None:
    response = await client.post("/auth/logout", json={"refresh_token": user.refresh_token})
    assert response.status_code == 204
    again = await client.post("/auth/logout", json={"refresh_token": user.refresh_token})
    assert again.status_code == 204
    unknown = await client.post("/auth/logout", json={"refresh_token": "never-issued"})
    assert unknown.status_code == 204
    refresh = await client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert_problem(refresh, 401, "invalid_token")


# --- access tokens -----------------------------------------------------------------------------


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def test_access_token_claims(user: Account) -> None:
    claims = _claims(user.access_token)
    assert {"sub", "iat", "exp", "typ", "tv", "sid", "iss"} <= claims.keys()
    assert claims["typ"] == "access"
    assert claims["exp"] - claims["iat"] == 1800
    assert jwt.get_unverified_header(user.access_token)["alg"] == "HS256"


def _forge(claims: dict[str, Any], key: str = "wrong-key", algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


async def test_rejected_access_tokens(client: Any, user: Account) -> None:
    import base64
    import json

    from goaltrack.config import get_settings

    secret = get_settings().jwt_secret.get_secret_value()
    claims = _claims(user.access_token)

    def unsigned(payload: dict[str, Any]) -> str:
        def b64(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."

    cases = {
        "tampered signature": user.access_token[:-4]
        + ("AAAA" if not user.access_token.endswith("AAAA") else "BBBB"),
        "wrong key": _forge(claims, "a-different-secret-of-thirty-two-bytes"),
        "alg none": unsigned(claims),
        "expired": _forge({**claims, "exp": int(time.time()) - 10}, secret),
        "wrong typ": _forge({**claims, "typ": "refresh"}, secret),
        "wrong issuer": _forge({**claims, "iss": "someone-else"}, secret),
        "stale token version": _forge({**claims, "tv": claims["tv"] + 1}, secret),
        "unknown user": _forge({**claims, "sub": str(uuid.uuid4())}, secret),
        "sub not a uuid": _forge({**claims, "sub": "admin"}, secret),
        "unknown session": _forge({**claims, "sid": str(uuid.uuid4())}, secret),
        "no session": _forge({k: v for k, v in claims.items() if k != "sid"}, secret),
        "HS384 with the right key": _forge(claims, secret, "HS384"),
        "refresh token as access token": user.refresh_token,
        "garbage": "not.a.jwt",
    }
    for name, token in cases.items():
        response = await client.get("/account", headers={"Authorization": f"Bearer {token}"})
        assert_problem(response, 401, "not_authenticated")
        assert response.headers["WWW-Authenticate"] == "Bearer", name
    missing = await client.get("/account")
    assert_problem(missing, 401, "not_authenticated")
    basic = await client.get("/account", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_problem(basic, 401, "not_authenticated")


async def test_access_token_expires_even_after_it_was_verified_once(
    client: Any, user: Account
) -> None:
    assert (await client.get("/account", headers=user.headers)).status_code == 200
    expires_at = datetime.fromtimestamp(_claims(user.access_token)["exp"], UTC)
    # The token check reads the process clock (clean_state puts the system clock back).
    set_clock(lambda: expires_at - timedelta(seconds=1))
    assert (await client.get("/goals", headers=user.headers)).status_code == 200
    set_clock(lambda: expires_at)
    assert_problem(await client.get("/account", headers=user.headers), 401, "not_authenticated")
    assert_problem(await client.get("/goals", headers=user.headers), 401, "not_authenticated")


def test_verified_token_cache_keeps_tokens_until_they_expire_and_drops_the_nearest_end() -> None:
    from goaltrack.auth.security import AccessClaims, VerifiedTokens

    def verified(expires_at: int) -> tuple[AccessClaims, int]:
        return AccessClaims(uuid.uuid4(), 1, uuid.uuid4(), issued_at=expires_at - 1800), expires_at

    cache = VerifiedTokens(capacity=3)
    first, second, third = verified(100), verified(200), verified(300)
    cache.add("a", "key", "iss", first, now=50)
    cache.add("b", "key", "iss", second, now=50)
    cache.add("c", "key", "iss", third, now=50)
    assert cache.get("a", "key", "iss") == first
    assert cache.get("a", "other key", "iss") is None  # verified with another key: not a hit
    assert cache.get("a", "key", "other issuer") is None
    # Full: the first added (the nearest its expiry) goes, however often it was read.
    cache.add("d", "key", "iss", verified(400), now=60)
    assert cache.get("a", "key", "iss") is None
    assert cache.get("b", "key", "iss") == second
    # Expired entries go first, before the cache is full.
    cache.add("e", "key", "iss", verified(500), now=250)
    assert cache.counters()["currsize"] == 3  # c, d, e: b expired at 200
    assert cache.get("b", "key", "iss") is None
    assert cache.counters() == {
        "hits": 2,
        "misses": 4,
        "currsize": 3,
        "maxsize": 3,
    }


async def test_oversized_bearer_token_is_refused(client: Any) -> None:
    response = await client.get("/account", headers={"Authorization": "Bearer " + "a" * 5000})
    assert_problem(response, 401, "not_authenticated")


# --- password reset ---------------------------------------------------------------------------


def _reset_token(message: Any) -> str:
    body = message.get_body(preferencelist=("plain",)).get_content()
    match = re.search(r"https://app\.goaltrack\.example\.com/reset\?token=([A-Za-z0-9_\-]+)", body)
    assert match, body
    return match.group(1)


async def test_forgot_password_is_identical_for_unknown_emails(
    client: Any, app: Any, user: Account, mailbox: Any
) -> None:
    known = await client.post("/auth/forgot-password", json={"email": user.email})
    unknown = await client.post("/auth/forgot-password", json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()

    # Each request leaves a durable task in the outbox; the worker deletes the row once the task
    # has run (after its mail, if any, was sent). No row left: both tasks are done.
    async def both_tasks_done() -> bool:
        async with app.state.sessionmaker() as session:
            pending = await session.scalar(
                select(func.count())
                .select_from(OutboxTask)
                .where(OutboxTask.name == SEND_PASSWORD_RESET)
            )
        return pending == 0

    await wait_until(both_tasks_done)
    [message] = mailbox.to(user.email)
    assert message["Subject"] == "Reset your Goaltrack password"
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "reset?token=" in html
    assert mailbox.to("nobody@example.com") == []


async def test_full_password_reset_flow(client: Any, app: Any, user: Account, mailbox: Any) -> None:
    await client.post("/auth/forgot-password", json={"email": user.email})
    token = _reset_token((await mailbox.wait_for(user.email))[0])
    async with app.state.sessionmaker() as session:
        stored = (await session.scalars(select(PasswordResetToken.token_hash))).all()
    assert stored == [hash_token(token)]

    response = await client.post(
        "/auth/reset-password", json={"token": token, "new_password": "a brand new pass"}
    )
    assert response.status_code == 204
    # Every session and access token from before is dead; the user is not logged in automatically.
    assert_problem(await client.get("/account", headers=user.headers), 401, "not_authenticated")
    assert_problem(
        await client.post("/auth/refresh", json={"refresh_token": user.refresh_token}),
        401,
        "invalid_token",
    )
    old = await client.post("/auth/login", json={"email": user.email, "password": user.password})
    assert_problem(old, 401, "invalid_credentials")
    new = await client.post(
        "/auth/login", json={"email": user.email, "password": "a brand new pass"}
    )
    assert new.status_code == 200
    changed = await mailbox.wait_for(user.email, count=2)
    assert changed[1]["Subject"] == "Your Goaltrack password was changed"
    reused = await client.post(
        "/auth/reset-password", json={"token": token, "new_password": "another pass 1"}
    )
    assert_problem(reused, 400, "reset_token_invalid")


async def test_reset_mail_follows_the_locale(client: Any, register: Any, mailbox: Any) -> None:
    account = await register(locale="ru")
    await client.post("/auth/forgot-password", json={"email": account.email})
    message = (await mailbox.wait_for(account.email))[0]
    assert message["Subject"] == "Сброс пароля Goaltrack"


async def test_new_reset_token_invalidates_older_ones(
    client: Any, app: Any, user: Account, mailbox: Any
) -> None:
    await client.post("/auth/forgot-password", json={"email": user.email})
    first = _reset_token((await mailbox.wait_for(user.email))[0])
    await client.post("/auth/forgot-password", json={"email": user.email})
    second = _reset_token((await mailbox.wait_for(user.email, count=2))[1])
    stale = await client.post(
        "/auth/reset-password", json={"token": first, "new_password": "a brand new pass"}
    )
    assert_problem(stale, 400, "reset_token_invalid")
    fresh = await client.post(
        "/auth/reset-password", json={"token": second, "new_password": "a brand new pass"}
    )
    assert fresh.status_code == 204


async def test_expired_reset_token_is_rejected(
    client: Any, app: Any, user: Account, mailbox: Any
) -> None:
    await client.post("/auth/forgot-password", json={"email": user.email})
    token = _reset_token((await mailbox.wait_for(user.email))[0])
    app.dependency_overrides[get_now] = lambda: datetime.now(UTC) + timedelta(minutes=31)
    response = await client.post(
        "/auth/reset-password", json={"token": token, "new_password": "a brand new pass"}
    )
    assert_problem(response, 400, "reset_token_invalid")


async def test_concurrent_uses_of_one_reset_token_succeed_once(
    client: Any, user: Account, mailbox: Any
) -> None:
    await client.post("/auth/forgot-password", json={"email": user.email})
    token = _reset_token((await mailbox.wait_for(user.email))[0])
    responses = await asyncio.gather(
        *(
            client.post(
                "/auth/reset-password", json={"token": token, "new_password": f"new password {i}"}
            )
            for i in range(3)
        )
    )
    assert sorted(r.status_code for r in responses) == [204, 400, 400]


async def test_reset_password_validates_the_new_password(client: Any) -> None:
    response = await client.post(
        "/auth/reset-password", json={"token": "x", "new_password": "short"}
    )
    assert_problem(response, 422, "validation_error")
    invalid = await client.post(
        "/auth/reset-password", json={"token": "x", "new_password": "long enough"}
    )
    assert_problem(invalid, 400, "reset_token_invalid")


async def test_forgot_password_is_rate_limited_per_email(client: Any) -> None:
    for _ in range(3):
        assert (
            await client.post("/auth/forgot-password", json={"email": "x@example.com"})
        ).status_code == 202
    blocked = await client.post("/auth/forgot-password", json={"email": "x@example.com"})
    assert_problem(blocked, 429, "rate_limited")


async def test_user_row_keeps_only_a_bcrypt_hash(app: Any, user: Account) -> None:
    async with app.state.sessionmaker() as session:
        stored = await session.scalar(select(User.password_hash))
    assert stored is not None
    assert stored.startswith("$2b$04$")
    assert user.password not in stored


async def test_register_is_rate_limited_per_ip(client: Any, app: Any) -> None:
    from goaltrack.deps import get_app_settings

    limited = app.state.settings.model_copy(update={"rate_limit_register": "2/hour"})
    app.dependency_overrides[get_app_settings] = lambda: limited
    for index in range(2):
        response = await client.post(
            "/auth/register", json={"email": f"r{index}@example.com", "password": PASSWORD}
        )
        assert response.status_code == 201
    blocked = await client.post(
        "/auth/register", json={"email": "r3@example.com", "password": PASSWORD}
    )
    assert_problem(blocked, 429, "rate_limited")
    assert 3500 <= int(blocked.headers["Retry-After"]) <= 3600
