"""Verified e-mail, e-mail change and display name, with the real SMTP sink and the real worker
sending the durable mails."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from goaltrack.auth.models import EmailVerification, User
from goaltrack.auth.verification import MAX_CODE_ATTEMPTS
from helpers import Account, TestClock, assert_problem


def link_and_code(message: Any) -> tuple[str, str]:
    body = message.get_body(preferencelist=("plain",)).get_content()
    token = re.search(r"goaltrack://verify-email\?token=([A-Za-z0-9_\-]+)", body)
    code = re.search(r"\b([0-9]{6})\b", body)
    assert token, body
    assert code, body
    return token.group(1), code.group(1)


async def latest_mail(mailbox: Any, address: str, count: int = 1) -> tuple[str, str]:
    messages = await mailbox.wait_for(address, count, verification=True)
    return link_and_code(messages[-1])


async def account(client: Any, user: Account) -> dict[str, Any]:
    response = await client.get("/account", headers=user.headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def verify(client: Any, user: Account | None = None, **body: str) -> Any:
    return await client.post("/auth/verify-email", json=body, headers=user.headers if user else {})


async def test_registration_mails_a_link_that_verifies_once(
    client: Any, user: Account, mailbox: Any
) -> None:
    assert (await account(client, user))["email_verified"] is False
    token, code = await latest_mail(mailbox, user.email)
    verified = await verify(client, token=token)  # no bearer token: opened from the mail
    assert verified.status_code == 200, verified.text
    assert verified.json()["email_verified"] is True
    assert verified.json()["email"] == user.email
    assert (await account(client, user))["email_verified"] is True
    assert_problem(await verify(client, token=token), 400, "verification_invalid")
    assert_problem(await verify(client, user, code=code), 400, "verification_invalid")
    # Nothing left to verify: no new mail.
    assert_problem(
        await client.post("/account/email/verification", headers=user.headers),
        409,
        "nothing_to_verify",
    )


async def test_the_code_verifies_with_the_bearer_token_only(
    client: Any, user: Account, other_user: Account, mailbox: Any
) -> None:
    _, code = await latest_mail(mailbox, user.email)
    assert_problem(await verify(client, code=code), 401, "not_authenticated")
    # Someone else's code is not this caller's.
    assert_problem(await verify(client, other_user, code=code), 400, "verification_invalid")
    verified = await verify(client, user, code=code)
    assert verified.status_code == 200, verified.text
    assert verified.json()["email_verified"] is True
    assert (await account(client, other_user))["email_verified"] is False
    for bad in ({"code": "12345"}, {"code": "abcdef"}, {}, {"token": ""}):
        assert_problem(
            await client.post("/auth/verify-email", json=bad, headers=user.headers),
            422,
            "validation_error",
        )


async def test_a_link_and_a_code_expire(client: Any, app: Any, register: Any, mailbox: Any) -> None:
    ttl = timedelta(minutes=app.state.settings.email_verification_ttl_minutes)
    # Registered a TTL ago (an access token minted at a future instant would not verify).
    clock = TestClock(datetime.now(UTC) - ttl - timedelta(minutes=2)).install()
    user = await register()
    token, code = await latest_mail(mailbox, user.email)
    clock.now += ttl + timedelta(minutes=1)
    assert_problem(await verify(client, token=token), 400, "verification_invalid")
    login = await client.post("/auth/login", json={"email": user.email, "password": user.password})
    later = Account(user.email, user.password, login.json()["access_token"], "")
    assert_problem(await verify(client, later, code=code), 400, "verification_invalid")


async def test_a_code_dies_after_a_few_wrong_tries(
    client: Any, app: Any, register: Any, mailbox: Any
) -> None:
    user = await register()
    token, code = await latest_mail(mailbox, user.email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(MAX_CODE_ATTEMPTS):
        assert_problem(await verify(client, user, code=wrong), 400, "verification_invalid")
    # Guessed at too often: the right code (and its link) no longer work; a new mail is needed.
    assert_problem(await verify(client, user, code=code), 400, "verification_invalid")
    assert_problem(await verify(client, token=token), 400, "verification_invalid")
    resent = await client.post("/account/email/verification", headers=user.headers)
    assert resent.status_code == 202
    token, code = await latest_mail(mailbox, user.email, 2)
    assert (await verify(client, token=token)).status_code == 200
    # The code is stored nowhere; the link only as its hash.
    async with app.state.sessionmaker() as session:
        rows = list(await session.scalars(select(EmailVerification)))
    assert rows
    assert all(code not in repr(vars(row)) and token not in repr(vars(row)) for row in rows)


async def test_code_guessing_is_throttled_per_user(
    client: Any, register: Any, mailbox: Any
) -> None:
    """Five wrong tries end a code; a new one costs a mail (3 an hour); and every try counts
    against 10 an hour: a 6-digit code stands about 240 guesses a day, not thousands."""
    user = await register()
    await latest_mail(mailbox, user.email)
    answers = [(await verify(client, user, code="000000")).status_code for _ in range(12)]
    assert answers.count(429) >= 2
    resends = [
        (await client.post("/account/email/verification", headers=user.headers)).status_code
        for _ in range(4)
    ]
    assert resends == [202, 202, 202, 429]


async def test_resending_replaces_the_link_and_code(
    client: Any, user: Account, mailbox: Any
) -> None:
    first_token, first_code = await latest_mail(mailbox, user.email)
    assert (
        await client.post("/account/email/verification", headers=user.headers)
    ).status_code == 202
    token, code = await latest_mail(mailbox, user.email, 2)
    assert (token, code) != (first_token, first_code)
    assert_problem(await verify(client, token=first_token), 400, "verification_invalid")
    assert (await verify(client, user, code=code)).status_code == 200


async def test_an_email_change_moves_the_account_only_once_verified(
    client: Any, app: Any, user: Account, register: Any, mailbox: Any
) -> None:
    new = f"new-{user.email}"
    wrong = await client.put(
        "/account/email",
        json={"new_email": new, "password": "wrong password"},
        headers=user.headers,
    )
    assert_problem(wrong, 400, "invalid_password")
    other = await register()
    taken = await client.put(
        "/account/email",
        json={"new_email": other.email, "password": user.password},
        headers=user.headers,
    )
    assert_problem(taken, 409, "email_taken")

    asked = await client.put(
        "/account/email",
        json={"new_email": new.upper(), "password": user.password},
        headers=user.headers,
    )
    assert asked.status_code == 202, asked.text
    [notice] = await mailbox.wait_for(user.email)  # the old address is told
    assert new in notice.get_body(preferencelist=("plain",)).get_content()
    token, _ = await latest_mail(mailbox, new)
    # Until then the old address is the account's: login works with it, not with the new one.
    assert (await account(client, user))["email"] == user.email
    old_login = await client.post(
        "/auth/login", json={"email": user.email, "password": user.password}
    )
    assert old_login.status_code == 200
    assert (
        await client.post("/auth/login", json={"email": new, "password": user.password})
    ).status_code == 401

    moved = await verify(client, token=token)
    assert moved.status_code == 200, moved.text
    assert (moved.json()["email"], moved.json()["email_verified"]) == (new, True)
    assert (
        await client.post("/auth/login", json={"email": new, "password": user.password})
    ).status_code == 200
    assert (
        await client.post("/auth/login", json={"email": user.email, "password": user.password})
    ).status_code == 401


async def test_an_address_taken_meanwhile_is_409_and_nothing_moves(
    client: Any, user: Account, register: Any, mailbox: Any
) -> None:
    new = f"wanted-{user.email}"
    asked = await client.put(
        "/account/email", json={"new_email": new, "password": user.password}, headers=user.headers
    )
    assert asked.status_code == 202
    _, code = await latest_mail(mailbox, new)
    await register(email=new)  # someone registers it first
    assert_problem(await verify(client, user, code=code), 409, "email_taken")
    assert (await account(client, user))["email"] == user.email


async def test_display_name_is_shown_greeted_and_exported(
    client: Any, app: Any, user: Account, mailbox: Any
) -> None:
    named = await client.put("/account", json={"display_name": "Ann Lee"}, headers=user.headers)
    assert named.status_code == 200, named.text
    assert named.json()["display_name"] == "Ann Lee"
    assert (
        named.headers["ETag"]
        == (await client.get("/account", headers=user.headers)).headers["ETag"]
    )
    await client.post("/account/email/verification", headers=user.headers)
    messages = await mailbox.wait_for(user.email, 2, verification=True)
    assert "Hello Ann Lee," in messages[-1].get_body(preferencelist=("plain",)).get_content()
    for bad in ({"display_name": ""}, {"display_name": "   "}, {"display_name": "x" * 61}):
        assert_problem(
            await client.put("/account", json=bad, headers=user.headers), 422, "validation_error"
        )
    stale = await client.put(
        "/account", json={"display_name": "B"}, headers={**user.headers, "If-Match": '"stale"'}
    )
    assert stale.status_code == 412
    cleared = await client.put("/account", json={"display_name": None}, headers=user.headers)
    assert cleared.json()["display_name"] is None
    kept = await client.put("/account", json={}, headers=user.headers)
    assert kept.json()["display_name"] is None
    async with app.state.sessionmaker() as session:
        assert (
            await session.scalar(select(User.display_name).where(User.email == user.email)) is None
        )
