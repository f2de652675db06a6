"""Sign in with Google and Apple, once the ID token is verified (auth.oauth): the identity is
(issuer, subject), never the e-mail. A new person gets an account without a password; a password
account with the same address is linked only when the provider vouches for the address. When that
account's own address was never verified, whoever registered it may not own it (account
pre-hijacking): linking ends its sessions, removes its password and the identities linked before,
and marks the address verified.

Apple's tokens: an authorization code sent with a sign-in is exchanged for a refresh token by a
task (auth.tasks), and deleting the account revokes it (`revoke_provider_tokens`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack import events
from goaltrack.auth import apple
from goaltrack.auth.errors import (
    AccountDeleted,
    EmailTaken,
    IdentityNotConfirmed,
    InvalidIdToken,
    RestoreExpired,
)
from goaltrack.auth.events import AccountReclaimed
from goaltrack.auth.models import User, UserIdentity
from goaltrack.auth.oauth import IdTokenVerifier, Provider, VerifiedIdToken, provider_of
from goaltrack.auth.schemas import TokenPair
from goaltrack.auth.service import (
    add_settings,
    get_user_by_email,
    issue_tokens,
    lock_user,
    revoke_all_sessions,
)
from goaltrack.config import Settings
from goaltrack.worker.outbox import defer_durably

EXCHANGE_APPLE_CODE = "auth.exchange_apple_code"
REVOKE_APPLE_TOKEN = "auth.revoke_apple_token"

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignIn:
    """What the app sent beside the ID token."""

    restore: bool = False
    authorization_code: str | None = None  # Apple's, for the token revocation at deletion
    timezone: str | None = None  # a new account's
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class SignedIn:
    pair: TokenPair
    created: bool  # a new account (201), else a known or linked one (200)


async def sign_in(
    session: AsyncSession,
    settings: Settings,
    verified: VerifiedIdToken,
    request: SignIn,
    *,
    now: datetime,
    user_agent: str | None,
) -> SignedIn:
    identity = await _identity(session, verified)
    created = False
    if identity is None:
        identity, created = await _link_or_create(session, verified, request, now)
    user = await session.get(User, identity.user_id)
    if user is None:  # purged between the lookup and now
        raise InvalidIdToken
    if user.deleted_at is not None:
        # As a password login: refused with the restore deadline, unless the app asks to restore.
        restore_until = user.deleted_at + timedelta(days=settings.account_deletion_grace_days)
        if not request.restore:
            raise AccountDeleted(restore_until=restore_until)
        if restore_until <= now:
            raise RestoreExpired
        await lock_user(session, user.id)
        user.deleted_at = None
    if verified.email is not None:
        identity.email = verified.email  # Apple sends it on the first sign-in only
    if identity.refresh_token_sealed is None:
        identity.client_id = verified.audience  # a kept token stays with its own client id
    await session.flush()
    if request.authorization_code is not None:
        _exchange_apple_code(session, settings, identity, verified, request.authorization_code, now)
    pair, _ = await issue_tokens(session, settings, user, now, user_agent=user_agent)
    return SignedIn(pair=pair, created=created)


async def confirm_identity(
    session: AsyncSession,
    id_tokens: IdTokenVerifier,
    user_id: uuid.UUID,
    id_token: str,
    *,
    now: datetime,
) -> None:
    """The person holding the access token proves it is them again with an ID token of one of
    the account's identities (where a password account confirms with its password)."""
    provider = provider_of(id_token)
    if provider is None:
        raise IdentityNotConfirmed
    try:
        verified = await id_tokens.verify(provider, id_token, nonce=None, now=now)
    except InvalidIdToken as exc:
        raise IdentityNotConfirmed from exc
    identity = await _identity(session, verified)
    if identity is None or identity.user_id != user_id:
        raise IdentityNotConfirmed


async def _identity(session: AsyncSession, verified: VerifiedIdToken) -> UserIdentity | None:
    return await session.scalar(
        select(UserIdentity).where(
            UserIdentity.issuer == verified.issuer, UserIdentity.subject == verified.subject
        )
    )


async def _link_or_create(
    session: AsyncSession, verified: VerifiedIdToken, request: SignIn, now: datetime
) -> tuple[UserIdentity, bool]:
    """The identity of a person signing in with this provider for the first time, linked to the
    account with their address or to a new one; and whether the account is new."""
    existing = await get_user_by_email(session, verified.email) if verified.email else None
    if existing is not None:
        if not verified.email_verified:
            raise EmailTaken  # the provider does not vouch for the address: no takeover by it
        user = await lock_user(session, existing.id)
        # Under the lock: a concurrent sign-in of the same person may have linked meanwhile.
        if user is None or (identity := await _identity(session, verified)) is not None:
            return await _known(session, verified), False
        if not user.email_verified:
            await _reclaim(session, user, now)
        identity = _new_identity(verified, user.id)
        if not await _inserted(session, identity):
            return await _known(session, verified), False
        return identity, False
    if verified.email is None:
        # Apple sends the address on the first sign-in only: without one there is no account to
        # make (the app signs the person in again so that Apple sends it).
        logger.info("%s ID token without an e-mail for a new person", verified.provider.value)
        raise InvalidIdToken
    user = User(
        id=uuid.uuid4(),
        email=verified.email,
        password_hash=None,
        email_verified=verified.email_verified,
    )
    identity = _new_identity(verified, user.id)
    if not await _inserted(session, user, identity):
        # The same person's other sign-in made the account first, or the address was registered.
        if await _identity(session, verified) is None:
            raise EmailTaken
        return await _known(session, verified), False
    await add_settings(session, user, timezone=request.timezone, locale=request.locale)
    return identity, True


async def _known(session: AsyncSession, verified: VerifiedIdToken) -> UserIdentity:
    identity = await _identity(session, verified)
    if identity is None:
        raise EmailTaken
    return identity


def _new_identity(verified: VerifiedIdToken, user_id: uuid.UUID) -> UserIdentity:
    return UserIdentity(
        id=uuid.uuid4(),
        user_id=user_id,
        provider=verified.provider.value,
        issuer=verified.issuer,
        subject=verified.subject,
        email=verified.email,
        client_id=verified.audience,
    )


async def _inserted(session: AsyncSession, *rows: object) -> bool:
    """Added in a savepoint: False, and nothing added, when a unique index refused them (a
    concurrent sign-in or registration won)."""
    try:
        async with session.begin_nested():
            session.add_all(rows)
    except IntegrityError:
        return False
    return True


async def _reclaim(session: AsyncSession, user: User, now: datetime) -> None:
    """The caller holds the user's lock."""
    user.password_hash = None
    user.email_verified = True
    await revoke_all_sessions(session, user, now)
    # Identities linked before were made by providers that did not vouch for the address.
    for stale in await session.scalars(
        select(UserIdentity).where(UserIdentity.user_id == user.id).with_for_update()
    ):
        _revoke(session, stale, now)
        await session.delete(stale)
    await events.emit(session, AccountReclaimed(user_id=user.id))
    await session.flush()


def _exchange_apple_code(
    session: AsyncSession,
    settings: Settings,
    identity: UserIdentity,
    verified: VerifiedIdToken,
    code: str,
    now: datetime,
) -> None:
    if identity.provider != Provider.apple or identity.refresh_token_sealed is not None:
        return  # Google's tokens need no revocation; one Apple token per identity is enough
    if not settings.apple_revocation_on:
        logger.info("Apple authorization code ignored: OAUTH_APPLE_KEY_ID is not configured")
        return
    # The code lives five minutes and is used once: the task runs at once, and retries briefly.
    # The code was issued to the client the ID token names: it is exchanged (and its token
    # revoked) with that client id.
    defer_durably(
        session,
        EXCHANGE_APPLE_CODE,
        str(identity.id),
        verified.audience,
        apple.seal(settings, code),
        now=now,
        user_id=identity.user_id,
    )


async def revoke_provider_tokens(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> None:
    """Every Apple token of the user's, revoked once (an account's deletion): each task carries its
    token (sealed) and the identity forgets it, so a later purge finds nothing to revoke again."""
    for identity in await session.scalars(
        select(UserIdentity)
        .where(UserIdentity.user_id == user_id, UserIdentity.refresh_token_sealed.is_not(None))
        .with_for_update()
    ):
        _revoke(session, identity, now)
    await session.flush()


def _revoke(session: AsyncSession, identity: UserIdentity, now: datetime) -> None:
    if identity.refresh_token_sealed is None:
        return
    # No user_id on the outbox row: it must outlive the account's hard delete (which cascades).
    defer_durably(
        session, REVOKE_APPLE_TOKEN, identity.client_id, identity.refresh_token_sealed, now=now
    )
    identity.refresh_token_sealed = None
