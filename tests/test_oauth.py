"""Sign in with Google and Apple (POST /auth/oauth/{google,apple}): ID tokens minted by loopback
fakes of the providers (tests/fakes/identity.py) with the test's own RSA keys, verified by the app
against the fakes' JWKS; Apple's token exchange and revocation through the fake's token endpoints,
run by the real worker."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import func, select, update

from fakes.identity import APPLE_CLIENT_IDS, GOOGLE_CLIENT_IDS, FakeApple, FakeIdentityProvider
from goaltrack.auth.apple import unseal
from goaltrack.auth.models import User, UserIdentity
from goaltrack.auth.oauth import (
    JWKS_DEFAULT_LIFESPAN,
    IdTokenVerifier,
    ProviderKeys,
    jwks_lifespan,
)
from goaltrack.clock import get_now, utcnow
from goaltrack.deps import get_app_settings
from goaltrack.devices.models import Device
from goaltrack.worker.outbox import OutboxTask
from helpers import Account, TestClock, assert_problem, wait_until

GOOGLE_ANDROID, GOOGLE_IOS = GOOGLE_CLIENT_IDS
APPLE_APP, APPLE_WEB = APPLE_CLIENT_IDS
NEW_PASSWORD = "a password set by reset"


def _subject() -> str:
    return str(uuid.uuid4().int)[:21]  # Google's subjects are long decimal strings


def _email() -> str:
    return f"person-{uuid.uuid4().hex[:10]}@example.com"


async def sign_in(client: Any, provider: str, id_token: str, **extra: Any) -> Any:
    return await client.post(f"/auth/oauth/{provider}", json={"id_token": id_token, **extra})


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def account_of(client: Any, pair: dict[str, Any]) -> dict[str, Any]:
    response = await client.get("/account", headers=bearer(pair))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def user_row(app: Any, email: str) -> User:
    async with app.state.sessionmaker() as session:
        user = await session.scalar(select(User).where(User.email == email))
    assert user is not None
    return user


async def identities_of(app: Any, user_id: Any) -> list[UserIdentity]:
    async with app.state.sessionmaker() as session:
        return list(
            await session.scalars(select(UserIdentity).where(UserIdentity.user_id == user_id))
        )


async def outbox_empty(app: Any) -> bool:
    async with app.state.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(OutboxTask)) == 0


async def set_password_through_reset(client: Any, mailbox: Any, email: str) -> str:
    """What an account made by a provider does to get a password: the reset mail."""
    await client.post("/auth/forgot-password", json={"email": email})
    [message] = await mailbox.wait_for(email)
    body = message.get_body(preferencelist=("plain",)).get_content()
    token = re.search(r"reset\?token=([A-Za-z0-9_\-]+)", body)
    assert token, body
    reset = await client.post(
        "/auth/reset-password", json={"token": token.group(1), "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 204, reset.text
    return NEW_PASSWORD


@contextmanager
def verifier_with(app: Any, **settings: Any) -> Iterator[None]:
    """The app verifies ID tokens with a verifier of its own (empty key caches), built from its
    settings with these changes; put back by hand afterwards (pytest's monkeypatch would delete
    the State attribute on undo)."""
    kept = app.state.id_tokens
    app.state.id_tokens = IdTokenVerifier(app.state.settings.model_copy(update=settings))
    try:
        yield
    finally:
        app.state.id_tokens = kept


@pytest.fixture
def fresh_keys(app: Any) -> Iterator[None]:
    with verifier_with(app):
        yield


# --- Google ------------------------------------------------------------------------------------


async def test_google_new_person_gets_an_account_without_a_password(
    client: Any, app: Any, google: FakeIdentityProvider
) -> None:
    sub, email = _subject(), _email()
    token = google.mint(sub=sub, aud=GOOGLE_ANDROID, email=email.upper(), email_verified=True)
    first = await sign_in(client, "google", token, timezone="Europe/Berlin", locale="ru")
    assert first.status_code == 201, first.text
    pair = first.json()
    assert pair["token_type"] == "bearer"
    account = await account_of(client, pair)
    assert account["email"] == email

    user = await user_row(app, email)
    assert user.password_hash is None
    assert user.email_verified is True
    [identity] = await identities_of(app, user.id)
    assert (identity.provider, identity.issuer, identity.subject, identity.client_id) == (
        "google",
        "https://accounts.google.com",
        sub,
        GOOGLE_ANDROID,
    )
    settings = await client.get("/settings", headers=bearer(pair))
    assert (settings.json()["timezone"], settings.json()["locale"]) == ("Europe/Berlin", "ru")

    # Known by (iss, sub): again, from the iOS app (the second audience), with the other issuer
    # spelling Google uses, and without the e-mail: the same account, 200.
    for again in (
        google.mint(sub=sub, aud=GOOGLE_ANDROID, email=email),
        google.mint(sub=sub, aud=GOOGLE_IOS, email=email),
        google.mint(sub=sub, aud=GOOGLE_IOS, issuer="accounts.google.com"),
    ):
        response = await sign_in(client, "google", again)
        assert response.status_code == 200, response.text
        assert (await account_of(client, response.json()))["id"] == account["id"]
    assert len(await identities_of(app, user.id)) == 1

    # No password: a password login is refused like a wrong one, the password routes answer 400.
    login = await client.post("/auth/login", json={"email": email, "password": "any password 1"})
    assert_problem(login, 401, "invalid_credentials")
    change = await client.put(
        "/account/password",
        json={"current_password": "any password 1", "new_password": "a new password"},
        headers=bearer(pair),
    )
    assert_problem(change, 400, "invalid_password")
    delete = await client.request(
        "DELETE", "/account", json={"password": "any password 1"}, headers=bearer(pair)
    )
    assert_problem(delete, 400, "invalid_password")


async def test_a_person_signing_in_twice_at_once_gets_one_account(
    client: Any, app: Any, google: FakeIdentityProvider
) -> None:
    sub, email = _subject(), _email()
    token = google.mint(sub=sub, aud=GOOGLE_ANDROID, email=email)
    responses = await asyncio.gather(*(sign_in(client, "google", token) for _ in range(3)))
    assert sorted(r.status_code for r in responses) == [200, 200, 201], [r.text for r in responses]
    ids = {(await account_of(client, r.json()))["id"] for r in responses}
    assert len(ids) == 1
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(UserIdentity)) == 1


async def test_a_new_person_without_an_email_is_refused(
    client: Any, google: FakeIdentityProvider, apple: FakeApple
) -> None:
    # Apple sends the address on the first sign-in only: an account cannot be made without one.
    response = await sign_in(client, "apple", apple.mint(sub=_subject(), aud=APPLE_APP))
    assert_problem(response, 401, "invalid_token")
    odd = google.mint(sub=_subject(), aud=GOOGLE_ANDROID, email="not an address")
    assert_problem(await sign_in(client, "google", odd), 401, "invalid_token")


# --- Apple and linking -------------------------------------------------------------------------


async def test_apple_links_a_verified_account_with_email_verified_as_a_string(
    client: Any, app: Any, register: Any, apple: FakeApple
) -> None:
    account: Account = await register()
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(User).where(User.email == account.email).values(email_verified=True)
        )
    sub = _subject()
    token = apple.mint(sub=sub, aud=APPLE_APP, email=account.email, email_verified="true")
    linked = await sign_in(client, "apple", token)
    assert linked.status_code == 200, linked.text
    assert (await account_of(client, linked.json()))["email"] == account.email
    # The account's own address was verified: nothing of it changes.
    assert (await client.get("/account", headers=account.headers)).status_code == 200
    login = await client.post(
        "/auth/login", json={"email": account.email, "password": account.password}
    )
    assert login.status_code == 200
    user = await user_row(app, account.email)
    [identity] = await identities_of(app, user.id)
    assert (identity.provider, identity.issuer, identity.subject) == (
        "apple",
        "https://appleid.apple.com",
        sub,
    )
    # Signing in again is the known identity, without any e-mail.
    again = await sign_in(client, "apple", apple.mint(sub=sub, aud=APPLE_APP))
    assert again.status_code == 200


@pytest.mark.parametrize("verified", [False, "false", None])
async def test_linking_is_refused_when_the_provider_does_not_vouch_for_the_email(
    client: Any, app: Any, register: Any, google: FakeIdentityProvider, verified: Any
) -> None:
    account: Account = await register()
    token = google.mint(
        sub=_subject(), aud=GOOGLE_ANDROID, email=account.email, email_verified=verified
    )
    assert_problem(await sign_in(client, "google", token), 409, "email_taken")
    user = await user_row(app, account.email)
    assert await identities_of(app, user.id) == []
    assert (await client.get("/account", headers=account.headers)).status_code == 200


async def test_linking_an_unverified_account_ends_what_its_registrant_set_up(
    client: Any, app: Any, register: Any, google: FakeIdentityProvider, apple: FakeApple
) -> None:
    """Account pre-hijacking: someone registered the victim's address first (never verified),
    with a password, a phone and a Google identity whose provider did not vouch for the
    address. The owner signs in with Apple: the registrant is out."""
    victim = _email()
    squatter: Account = await register(victim)
    device = await client.post(
        "/devices",
        json={"token": "fcm:squatter-phone", "platform": "android"},
        headers=squatter.headers,
    )
    assert device.status_code == 201
    # The squatter's Google account claims the address without Google vouching for it: refused
    # as a link (409); the identity can only exist on an account made with it, which this is not.
    unverified = google.mint(sub=_subject(), aud=GOOGLE_ANDROID, email=victim, email_verified=False)
    assert_problem(await sign_in(client, "google", unverified), 409, "email_taken")

    owner = await sign_in(client, "apple", apple.mint(sub=_subject(), aud=APPLE_APP, email=victim))
    assert owner.status_code == 200, owner.text
    user = await user_row(app, victim)
    assert user.password_hash is None
    assert user.email_verified is True
    # The squatter's sessions, access token, password and phone are gone.
    assert_problem(await client.get("/account", headers=squatter.headers), 401, "not_authenticated")
    refresh = await client.post("/auth/refresh", json={"refresh_token": squatter.refresh_token})
    assert_problem(refresh, 401, "invalid_token")
    login = await client.post("/auth/login", json={"email": victim, "password": squatter.password})
    assert_problem(login, 401, "invalid_credentials")
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Device)) == 0
    assert (await account_of(client, owner.json()))["email"] == victim


async def test_an_unverified_identity_made_account_is_reclaimed_by_the_owner(
    client: Any, app: Any, google: FakeIdentityProvider, apple: FakeApple
) -> None:
    """The same attack through a provider: an account made with an identity whose provider did
    not vouch for the address. The owner's verified sign-in removes that identity too."""
    victim, squatter_sub = _email(), _subject()
    squatter = google.mint(sub=squatter_sub, aud=GOOGLE_ANDROID, email=victim, email_verified=False)
    made = await sign_in(client, "google", squatter)
    assert made.status_code == 201
    assert (await user_row(app, victim)).email_verified is False

    owner = await sign_in(client, "apple", apple.mint(sub=_subject(), aud=APPLE_APP, email=victim))
    assert owner.status_code == 200
    user = await user_row(app, victim)
    assert [i.provider for i in await identities_of(app, user.id)] == ["apple"]
    assert_problem(
        await client.get("/account", headers=bearer(made.json())), 401, "not_authenticated"
    )
    # The squatter's Google identity no longer leads anywhere: it would make a new account, but
    # the address is taken by a verified one.
    assert_problem(await sign_in(client, "google", squatter), 409, "email_taken")


# --- refused tokens ----------------------------------------------------------------------------


async def test_tokens_that_do_not_check_out_are_401(
    client: Any, google: FakeIdentityProvider, apple: FakeApple
) -> None:
    sub, email, now = _subject(), _email(), utcnow()
    refused = {
        "wrong audience": google.mint(sub=sub, aud="someone-else.apps.googleusercontent.com"),
        "Apple's audience": google.mint(sub=sub, aud=APPLE_APP),
        "wrong issuer": google.mint(sub=sub, aud=GOOGLE_ANDROID, issuer="https://evil.example"),
        "Apple's issuer": google.mint(sub=sub, aud=GOOGLE_ANDROID, issuer=apple.issuer),
        "expired": google.mint(
            sub=sub, aud=GOOGLE_ANDROID, issued_at=now - timedelta(hours=2), email=email
        ),
        "issued in the future": google.mint(
            sub=sub, aud=GOOGLE_ANDROID, issued_at=now + timedelta(minutes=10), email=email
        ),
        "bad signature": google.mint(sub=sub, aud=GOOGLE_ANDROID, email=email, forged=True),
        "unknown key": google.mint(
            sub=sub, aud=GOOGLE_ANDROID, email=email, kid=google.new_key(publish=False)
        ),
        "HS256": jwt.encode(
            {"iss": google.issuer, "sub": sub, "aud": GOOGLE_ANDROID, "exp": 2**40, "iat": 0},
            "a shared secret, long enough for HS256",
            algorithm="HS256",
            headers={"kid": google.first_kid},
        ),
        "unsigned": jwt.encode(
            {"iss": google.issuer, "sub": sub, "aud": GOOGLE_ANDROID, "exp": 2**40, "iat": 0},
            None,
            algorithm="none",
            headers={"kid": google.first_kid},
        ),
        "no subject": jwt.encode(
            {"iss": google.issuer, "aud": GOOGLE_ANDROID, "exp": 2**40, "iat": 0},
            None,
            algorithm="none",
        ),
        "not a JWT": "not.a.jwt",
    }
    for what, token in refused.items():
        response = await sign_in(client, "google", token)
        assert response.status_code == 401, (what, response.text)
        assert_problem(response, 401, "invalid_token")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    # An Apple token at the Google route, and the reverse.
    apple_token = apple.mint(sub=sub, aud=APPLE_APP, email=email)
    assert_problem(await sign_in(client, "google", apple_token), 401, "invalid_token")
    google_token = google.mint(sub=sub, aud=GOOGLE_ANDROID, email=email)
    assert_problem(await sign_in(client, "apple", google_token), 401, "invalid_token")


async def test_nonces(client: Any, google: FakeIdentityProvider, apple: FakeApple) -> None:
    email, raw = _email(), uuid.uuid4().hex
    hashed = hashlib.sha256(raw.encode()).hexdigest()
    # Google's token carries the nonce as the app passed it.
    google_token = google.mint(sub=_subject(), aud=GOOGLE_ANDROID, email=email, nonce=raw)
    assert_problem(
        await sign_in(client, "google", google_token, nonce="other"), 401, "invalid_token"
    )
    assert (await sign_in(client, "google", google_token, nonce=raw)).status_code == 201
    # Without a nonce from the app there is nothing to compare (the token's is not checked).
    assert (await sign_in(client, "google", google_token)).status_code == 200
    # A nonce sent for a token that carries none is refused.
    bare = google.mint(sub=_subject(), aud=GOOGLE_ANDROID, email=_email())
    assert_problem(await sign_in(client, "google", bare, nonce=raw), 401, "invalid_token")

    # Apple's carries the SHA-256 of the raw nonce; the app sends us the raw one.
    apple_token = apple.mint(sub=_subject(), aud=APPLE_APP, email=_email(), nonce=hashed)
    assert_problem(await sign_in(client, "apple", apple_token, nonce=hashed), 401, "invalid_token")
    assert_problem(await sign_in(client, "apple", apple_token, nonce="other"), 401, "invalid_token")
    assert (await sign_in(client, "apple", apple_token, nonce=raw)).status_code == 201


async def test_expiry_is_judged_on_the_app_clock_with_a_small_leeway(
    client: Any, app: Any, google: FakeIdentityProvider
) -> None:
    issued = datetime.now(UTC)
    token = google.mint(
        sub=_subject(),
        aud=GOOGLE_ANDROID,
        email=_email(),
        issued_at=issued,
        lifetime=timedelta(minutes=5),
    )
    app.dependency_overrides[get_now] = lambda: issued + timedelta(minutes=5, seconds=30)
    assert (await sign_in(client, "google", token)).status_code == 201
    app.dependency_overrides[get_now] = lambda: issued + timedelta(minutes=6, seconds=1)
    assert_problem(await sign_in(client, "google", token), 401, "invalid_token")


# --- keys --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_keys")
async def test_key_rotation_refetches_once_and_never_storms(
    client: Any, google: FakeIdentityProvider
) -> None:
    clock = TestClock().install()
    email = _email()
    sub = _subject()
    first = await sign_in(client, "google", google.mint(sub=sub, aud=GOOGLE_ANDROID, email=email))
    assert first.status_code == 201
    assert google.jwks_requests == 1
    # The cached set serves the next sign-ins (max-age=3600).
    for _ in range(3):
        again = await sign_in(client, "google", google.mint(sub=sub, aud=GOOGLE_ANDROID))
        assert again.status_code == 200
    assert google.jwks_requests == 1

    # Google rotates a key in: its first token makes one refetch, then it is cached too.
    rotated = google.new_key()
    for _ in range(2):
        response = await sign_in(
            client, "google", google.mint(sub=sub, aud=GOOGLE_ANDROID, kid=rotated)
        )
        assert response.status_code == 200, response.text
    assert google.jwks_requests == 2

    # A kid that is not Google's, right after: refused without asking Google, however often.
    stranger = google.new_key(publish=False)
    for _ in range(5):
        response = await sign_in(
            client, "google", google.mint(sub=sub, aud=GOOGLE_ANDROID, kid=stranger)
        )
        assert_problem(response, 401, "invalid_token")
    assert google.jwks_requests == 2

    # A minute later an unknown kid may refetch again (once): published by now, it verifies.
    google.publish(stranger)
    clock.advance(61)
    for _ in range(2):
        response = await sign_in(
            client, "google", google.mint(sub=sub, aud=GOOGLE_ANDROID, kid=stranger)
        )
        assert response.status_code == 200, response.text
    assert google.jwks_requests == 3


def test_keys_are_kept_as_long_as_max_age_says() -> None:
    assert jwks_lifespan("public, max-age=19923, must-revalidate, no-transform") == 19923
    assert jwks_lifespan("") == JWKS_DEFAULT_LIFESPAN
    assert jwks_lifespan("no-cache") == JWKS_DEFAULT_LIFESPAN
    # Within bounds: a provider's max-age=0 must not make every sign-in fetch the keys.
    assert jwks_lifespan("max-age=0") == 60
    assert jwks_lifespan("MAX-AGE=9999999") == 24 * 3600


async def test_the_last_keys_serve_while_the_provider_is_down() -> None:
    provider = FakeIdentityProvider("google", "https://accounts.google.com", "/certs").start()
    try:
        keys = ProviderKeys(provider.jwks_url)
        assert await keys.signing_key(provider.first_kid) is not None
        assert provider.jwks_requests == 1
    finally:
        provider.stop()
    cache = keys._client.jwk_set_cache
    cache.lifespan = 0  # as if max-age had run out: the set is fetched again, and fails
    assert await keys.signing_key(provider.first_kid) is not None
    # Kept a minute more: the next sign-ins do not each wait for the provider's timeout.
    assert cache.lifespan == 60


async def test_unreachable_provider_keys_are_503(
    client: Any, app: Any, google: FakeIdentityProvider
) -> None:
    with verifier_with(app, oauth_google_jwks_url="http://127.0.0.1:9/oauth2/v3/certs"):
        token = google.mint(sub=_subject(), aud=GOOGLE_ANDROID, email=_email())
        response = await sign_in(client, "google", token)
    assert_problem(response, 503, "provider_unavailable")
    assert response.headers["Retry-After"].isdigit()


async def test_a_provider_without_client_ids_is_503(
    client: Any, app: Any, apple: FakeApple
) -> None:
    with verifier_with(app, oauth_apple_client_ids=""):
        token = apple.mint(sub=_subject(), aud=APPLE_APP, email=_email())
        response = await sign_in(client, "apple", token)
    assert_problem(response, 503, "provider_not_configured")


async def test_sign_ins_share_the_per_ip_limit_of_logins(
    client: Any, app: Any, google: FakeIdentityProvider
) -> None:
    strict = app.state.settings.model_copy(update={"rate_limit_login_ip": "3/minute"})
    app.dependency_overrides[get_app_settings] = lambda: strict
    token = google.mint(sub=_subject(), aud=GOOGLE_ANDROID, email=_email())
    statuses = [(await sign_in(client, "google", token)).status_code for _ in range(2)]
    login = await client.post("/auth/login", json={"email": _email(), "password": "whatever 1"})
    assert [*statuses, login.status_code] == [201, 200, 401]
    blocked = await sign_in(client, "google", token)
    assert_problem(blocked, 429, "rate_limited")


# --- deletion and restore ----------------------------------------------------------------------


async def test_a_deleted_account_behaves_as_with_a_password_login_and_can_be_restored(
    client: Any, app: Any, google: FakeIdentityProvider, mailbox: Any
) -> None:
    sub, email = _subject(), _email()
    made = await sign_in(client, "google", google.mint(sub=sub, aud=GOOGLE_ANDROID, email=email))
    assert made.status_code == 201
    password = await set_password_through_reset(client, mailbox, email)
    login = await client.post("/auth/login", json={"email": email, "password": password})
    deleted_at = datetime.now(UTC)
    delete = await client.request(
        "DELETE", "/account", json={"password": password}, headers=bearer(login.json())
    )
    assert delete.status_code == 202, delete.text

    token = google.mint(sub=sub, aud=GOOGLE_ANDROID)
    refused = assert_problem(await sign_in(client, "google", token), 403, "account_deleted")
    assert datetime.fromisoformat(refused["restore_until"]) > deleted_at + timedelta(days=6)

    after_grace = deleted_at + timedelta(days=7, minutes=1)
    app.dependency_overrides[get_now] = lambda: after_grace
    late_token = google.mint(sub=sub, aud=GOOGLE_ANDROID, issued_at=after_grace)
    late = await sign_in(client, "google", late_token, restore=True)
    assert_problem(late, 410, "restore_expired")
    app.dependency_overrides.clear()

    restored = await sign_in(client, "google", token, restore=True)
    assert restored.status_code == 200, restored.text
    assert (await account_of(client, restored.json()))["email"] == email
    assert (await sign_in(client, "google", token)).status_code == 200


async def wait_for_apple_token(app: Any, apple: FakeApple, user_id: Any) -> str:
    """The refresh token the worker got for the user's authorization code (and kept sealed)."""

    async def kept() -> bool:
        return any(i.refresh_token_sealed for i in await identities_of(app, user_id))

    await wait_until(kept)
    [identity] = await identities_of(app, user_id)
    [token] = list(apple.refresh_tokens)
    assert identity.refresh_token_sealed is not None
    assert token not in identity.refresh_token_sealed  # sealed, not in the clear
    assert unseal(app.state.settings, identity.refresh_token_sealed) == token
    return token


async def test_deleting_the_account_revokes_its_apple_token_once(
    client: Any, app: Any, apple: FakeApple
) -> None:
    sub, email = _subject(), _email()
    code = apple.issue_code(sub=sub, client_id=APPLE_APP)
    made = await sign_in(
        client,
        "apple",
        apple.mint(sub=sub, aud=APPLE_APP, email=email, email_verified="true"),
        authorization_code=code,
    )
    assert made.status_code == 201, made.text
    user = await user_row(app, email)
    refresh_token = await wait_for_apple_token(app, apple, user.id)
    assert apple.token_requests == 1
    # A later sign-in with a new code, from the web, keeps the one token (no second exchange)
    # and the client id it was issued to.
    again = await sign_in(
        client,
        "apple",
        apple.mint(sub=sub, aud=APPLE_WEB),
        authorization_code=apple.issue_code(sub=sub, client_id=APPLE_WEB),
    )
    assert again.status_code == 200
    await wait_until(lambda: outbox_empty(app))
    assert apple.token_requests == 1

    # Deleting the account, confirmed with a fresh Apple ID token (it has no password).
    delete = await client.request(
        "DELETE",
        "/account",
        json={"id_token": apple.mint(sub=sub, aud=APPLE_APP)},
        headers=bearer(again.json()),
    )
    assert delete.status_code == 202, delete.text
    await wait_until(lambda: outbox_empty(app))
    assert apple.revoked() == [refresh_token]
    assert apple.revocations[0].client_id == APPLE_APP

    # The purge after the grace period has nothing left to revoke.
    from goaltrack.account import service as account_service

    async with app.state.sessionmaker() as session, session.begin():
        purged = await account_service.purge_expired_accounts(
            session, now=utcnow() + timedelta(days=8), grace_days=7, limit=100
        )
    assert purged == 1
    await wait_until(lambda: outbox_empty(app))
    assert len(apple.revocations) == 1


async def test_a_failed_revocation_is_retried(client: Any, app: Any, apple: FakeApple) -> None:
    sub, email = _subject(), _email()
    made = await sign_in(
        client,
        "apple",
        apple.mint(sub=sub, aud=APPLE_APP, email=email),
        authorization_code=apple.issue_code(sub=sub, client_id=APPLE_APP),
    )
    assert made.status_code == 201
    user = await user_row(app, email)
    refresh_token = await wait_for_apple_token(app, apple, user.id)

    clock = TestClock().install()  # the retries' countdowns pass at once
    apple.fail_revocations(2)
    gone = await client.request(
        "DELETE",
        "/account/data",
        json={"id_token": apple.mint(sub=sub, aud=APPLE_APP)},
        headers=bearer(made.json()),
    )
    assert gone.status_code == 204
    await wait_until(lambda: len(apple.revoked()) == 1)
    await wait_until(lambda: outbox_empty(app))
    assert [r.status for r in apple.revocations] == [503, 503, 200]
    assert apple.revoked() == [refresh_token]
    assert {5.0, 10.0} <= set(clock.advanced)  # two retries, after their backoff


async def test_a_code_exchanged_after_the_deletion_is_revoked_at_once(
    client: Any, app: Any, apple: FakeApple
) -> None:
    """The exchange task runs after the sign-in's commit; an account deleted before it finishes
    never keeps the token: the task revokes it."""
    sub, email = _subject(), _email()
    made = await sign_in(client, "apple", apple.mint(sub=sub, aud=APPLE_APP, email=email))
    assert made.status_code == 201
    user = await user_row(app, email)
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.id == user.id).values(deleted_at=utcnow()))
    # Signing in again (restoring) with a code while deleted is refused; so exchange directly.
    code = apple.issue_code(sub=sub, client_id=APPLE_APP)
    from goaltrack.auth.apple import seal
    from goaltrack.auth.identities import EXCHANGE_APPLE_CODE
    from goaltrack.defer import send_deferred
    from goaltrack.worker.outbox import defer_durably

    [identity] = await identities_of(app, user.id)
    async with app.state.sessionmaker() as session, session.begin():
        defer_durably(
            session,
            EXCHANGE_APPLE_CODE,
            str(identity.id),
            APPLE_APP,
            seal(app.state.settings, code),
            now=utcnow(),
            user_id=user.id,
        )
    send_deferred(session)
    await wait_until(lambda: len(apple.revoked()) == 1)
    assert apple.revoked() == list(apple.refresh_tokens)
    [identity] = await identities_of(app, user.id)
    assert identity.refresh_token_sealed is None


async def test_a_deletion_is_confirmed_by_an_id_token_of_the_account(
    client: Any, app: Any, register: Any, google: FakeIdentityProvider, apple: FakeApple
) -> None:
    sub, email = _subject(), _email()
    made = await sign_in(client, "google", google.mint(sub=sub, aud=GOOGLE_ANDROID, email=email))
    headers = bearer(made.json())
    stranger_sub = _subject()
    stranger = apple.mint(sub=stranger_sub, aud=APPLE_APP, email=_email())
    assert (await sign_in(client, "apple", stranger)).status_code == 201
    refused = {
        "someone else's identity": apple.mint(sub=stranger_sub, aud=APPLE_APP),
        "not this app's": google.mint(sub=sub, aud="someone-else.apps.googleusercontent.com"),
        "expired": google.mint(
            sub=sub, aud=GOOGLE_ANDROID, issued_at=utcnow() - timedelta(hours=2)
        ),
        "no provider's": jwt.encode({"iss": "https://evil.example", "sub": sub}, None, "none"),
        "not a JWT": "not-a-jwt",
    }
    paths = ["/account/data", *["/account"] * 4]
    for (what, token), path in zip(refused.items(), paths, strict=True):
        response = await client.request("DELETE", path, json={"id_token": token}, headers=headers)
        assert response.status_code == 400, (what, path, response.text)
        assert_problem(response, 400, "invalid_id_token")
    # Guesses count as password guesses do (RATE_LIMIT_PASSWORD_CHECK, 5/minute).
    limited = await client.request(
        "DELETE", "/account", json={"id_token": refused["expired"]}, headers=headers
    )
    assert_problem(limited, 429, "rate_limited")
    await app.state.redis.flushdb()  # the next minute
    for body in ({}, {"password": None}, {"id_token": None}, {"password": "x", "id_token": "y"}):
        response = await client.request("DELETE", "/account", json=body, headers=headers)
        assert_problem(response, 422, "validation_error")
    assert (await client.get("/account", headers=headers)).status_code == 200

    # A password account may confirm with an ID token of an identity linked to it, too.
    account: Account = await register()
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(User).where(User.email == account.email).values(email_verified=True)
        )
    linked_sub = _subject()
    linked = google.mint(sub=linked_sub, aud=GOOGLE_IOS, email=account.email)
    assert (await sign_in(client, "google", linked)).status_code == 200
    confirm = google.mint(sub=linked_sub, aud=GOOGLE_IOS)
    delete = await client.request(
        "DELETE", "/account", json={"id_token": confirm}, headers=account.headers
    )
    assert delete.status_code == 202, delete.text

    delete = await client.request(
        "DELETE",
        "/account",
        json={"id_token": google.mint(sub=sub, aud=GOOGLE_IOS)},
        headers=headers,
    )
    assert delete.status_code == 202, delete.text


async def test_the_export_names_the_identities_and_no_token(
    client: Any, app: Any, google: FakeIdentityProvider
) -> None:
    from goaltrack.account.export import collect

    sub, email = _subject(), _email()
    await sign_in(client, "google", google.mint(sub=sub, aud=GOOGLE_ANDROID, email=email))
    user = await user_row(app, email)
    async with app.state.sessionmaker() as session:
        document, _ = await collect(session, user.id, utcnow())
    assert document["account"]["has_password"] is False
    [identity] = document["identities"]
    assert (identity["provider"], identity["subject"], identity["email"]) == ("google", sub, email)
    assert "refresh_token_sealed" not in identity


# --- settings ----------------------------------------------------------------------------------


def test_settings_fail_fast() -> None:
    from pydantic import ValidationError

    from goaltrack.config import Settings

    production = {
        "app_env": "production",
        "jwt_secret": uuid.uuid4().hex + uuid.uuid4().hex,
        "mail_server": "smtp.example.com",
        "s3_secret_access_key": "a-real-minio-password",
        "password_reset_url": "https://app.example.com/reset?token={token}",
    }
    no_key = {
        "oauth_apple_team_id": "",
        "oauth_apple_key_id": "",
        "oauth_apple_private_key_file": "",
    }
    settings = Settings(oauth_google_client_ids=" a.apps.googleusercontent.com, b ,", **no_key)
    assert settings.oauth_google_client_id_list == ["a.apps.googleusercontent.com", "b"]
    assert settings.apple_revocation_on is False  # `OAUTH_APPLE_PRIVATE_KEY_FILE=`: unset
    with pytest.raises(ValidationError, match="not a client id"):
        Settings(oauth_apple_client_ids="com.example.app, with space")
    with pytest.raises(ValidationError, match="go together"):
        Settings(**{**no_key, "oauth_apple_team_id": "TEAM"})
    with pytest.raises(ValidationError, match="http"):
        Settings(oauth_google_jwks_url="ftp://example.com/certs")
    # Apple requires the revocation: production refuses Apple's client ids without the key.
    with pytest.raises(ValidationError, match="OAUTH_APPLE_CLIENT_IDS needs"):
        Settings(**production, **no_key, oauth_apple_client_ids="com.example.app")
    google_only = Settings(
        **production, **no_key, oauth_google_client_ids="a", oauth_apple_client_ids=""
    )
    assert google_only.app_env == "production"
