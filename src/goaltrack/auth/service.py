"""Registration, login, token rotation with reuse detection, and password reset."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from goaltrack import events
from goaltrack.auth.errors import (
    AccountDeleted,
    EmailTaken,
    InvalidCredentials,
    InvalidRefreshToken,
    ResetTokenInvalid,
)
from goaltrack.auth.events import LoggedOut
from goaltrack.auth.models import PasswordResetToken, RefreshToken, User
from goaltrack.auth.schemas import TokenPair
from goaltrack.auth.security import (
    Passwords,
    create_access_token,
    hash_token,
    new_opaque_token,
)
from goaltrack.config import Settings
from goaltrack.profile.models import UserSettings
from goaltrack.worker.outbox import defer_durably

SEND_PASSWORD_RESET = "auth.send_password_reset"
SEND_PASSWORD_CHANGED = "auth.send_password_changed"


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    # lower(email) matches the unique functional index.
    return await session.scalar(select(User).where(func.lower(User.email) == email.lower()))


async def register(
    session: AsyncSession,
    passwords: Passwords,
    *,
    email: str,
    password: str,
    timezone: str | None = None,
    locale: str | None = None,
) -> User:
    # bcrypt first, before the session takes a connection: it is never held through the hash
    # (and a taken address costs the same time as a new one).
    password_hash = await passwords.hash(password)
    if await get_user_by_email(session, email) is not None:
        raise EmailTaken
    user = User(id=uuid.uuid4(), email=email.lower(), password_hash=password_hash)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent registration of the same address won the race
        raise EmailTaken from exc
    await add_settings(session, user, timezone=timezone, locale=locale)
    return user


async def add_settings(
    session: AsyncSession, user: User, *, timezone: str | None, locale: str | None
) -> None:
    """A new account's settings row: the defaults, and the zone and language its app sent."""
    user_settings = UserSettings(user_id=user.id)
    if timezone is not None:
        user_settings.timezone = timezone
    if locale is not None:
        user_settings.locale = locale
    session.add(user_settings)
    await session.flush()


async def issue_tokens(
    session: AsyncSession,
    settings: Settings,
    user: User,
    now: datetime,
    *,
    family_id: uuid.UUID | None = None,
    user_agent: str | None = None,
) -> tuple[TokenPair, RefreshToken]:
    refresh_token = new_opaque_token()
    row = RefreshToken(
        id=uuid.uuid4(),
        user_id=user.id,
        family_id=family_id or uuid.uuid4(),
        token_hash=hash_token(refresh_token),
        expires_at=now + timedelta(days=settings.refresh_token_ttl_days),
        user_agent=(user_agent or "")[:512] or None,
    )
    session.add(row)
    await session.flush()
    pair = TokenPair(
        access_token=create_access_token(
            settings, user.id, user.token_version, now, session_id=row.family_id
        ),
        refresh_token=refresh_token,
        expires_in=settings.access_token_ttl_seconds,
    )
    return pair, row


async def authenticate(
    sessionmaker: async_sessionmaker[AsyncSession],
    passwords: Passwords,
    *,
    email: str,
    password: str,
) -> uuid.UUID:
    """The id of the user with these credentials, whatever their deletion state; the same error
    otherwise. The lookup runs on a short connection of its own, returned to the pool before
    bcrypt's ~0.25 s: a login flood does not hold pooled connections idle in transaction."""
    async with sessionmaker() as lookup:
        user = await get_user_by_email(lookup, email)
    if not await passwords.verify(password, user.password_hash if user else None) or user is None:
        raise InvalidCredentials
    return user.id


async def login(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    passwords: Passwords,
    *,
    email: str,
    password: str,
    now: datetime,
    grace_days: int,
    user_agent: str | None,
) -> TokenPair:
    user_id = await authenticate(sessionmaker, passwords, email=email, password=password)
    user = await session.get(User, user_id)
    if user is None:  # purged between the check and now
        raise InvalidCredentials
    if user.deleted_at is not None:
        raise AccountDeleted(restore_until=user.deleted_at + timedelta(days=grace_days))
    pair, _ = await issue_tokens(session, settings, user, now, user_agent=user_agent)
    return pair


async def lock_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    """The user row, locked and re-read. Every change to a user's sessions takes this lock first
    (always in the order user, then tokens), so a refresh and a revocation never interleave: a
    token minted by a refresh is either visible to the revocation or refused by it."""
    return await session.scalar(
        select(User)
        .where(User.id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def refresh(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    refresh_token: str,
    now: datetime,
    user_agent: str | None,
) -> TokenPair:
    token_hash = hash_token(refresh_token)
    presented = (
        await session.execute(
            select(
                RefreshToken.user_id,
                RefreshToken.family_id,
                RefreshToken.revoked_at,
                RefreshToken.replaced_by,
            ).where(RefreshToken.token_hash == token_hash)
        )
    ).one_or_none()
    if presented is None:
        raise InvalidRefreshToken
    if presented.revoked_at is not None:
        if presented.replaced_by is not None and now - presented.revoked_at <= timedelta(
            seconds=settings.refresh_reuse_grace_seconds
        ):
            # Rotated a moment ago: a client retrying a request whose answer it lost (or sent
            # twice). Refused, but the new pair stays valid (RFC 9700 §4.14.2 allows this grace).
            raise InvalidRefreshToken
        # A revoked token presented again: it was stolen or replayed. Kill the whole family
        # (RFC 9700) in a transaction of its own, so the revocation outlives this 401.
        await revoke_replayed_family(sessionmaker, presented.user_id, presented.family_id, now)
        raise InvalidRefreshToken
    user = await lock_user(session, presented.user_id)
    # Re-read under the lock: of two concurrent refreshes of one token, the second sees it
    # revoked and is refused (a duplicate in flight, not a replay: the winner's pair stays valid).
    current = await session.scalar(
        select(RefreshToken)
        .where(RefreshToken.token_hash == token_hash)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if user is None or current is None or current.revoked_at is not None:
        raise InvalidRefreshToken
    if current.expires_at <= now or user.deleted_at is not None:
        raise InvalidRefreshToken
    pair, successor = await issue_tokens(
        session, settings, user, now, family_id=current.family_id, user_agent=user_agent
    )
    current.revoked_at = now
    current.replaced_by = successor.id
    return pair


async def revoke_replayed_family(
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    now: datetime,
) -> None:
    async with sessionmaker() as own, own.begin():
        await lock_user(own, user_id)
        await revoke_family(own, family_id, now)


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> None:
    """Callers hold the family owner's lock (`lock_user`)."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def revoke_all_sessions(session: AsyncSession, user: User, now: datetime) -> None:
    """Every refresh token revoked and every access token invalidated (token_version bumped).
    The caller holds the user's lock (`lock_user`, taken before changing the user object)."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    user.token_version += 1
    await session.flush()


async def logout(
    session: AsyncSession, *, refresh_token: str, device_token: str | None, now: datetime
) -> None:
    """Revoke the session's family and stop its device's pushes; unknown tokens are ignored
    (logout is idempotent)."""
    token_hash = hash_token(refresh_token)
    owner = await session.scalar(
        select(RefreshToken.user_id).where(RefreshToken.token_hash == token_hash)
    )
    if owner is None:
        return
    await lock_user(session, owner)
    family_id = await session.scalar(
        select(RefreshToken.family_id).where(RefreshToken.token_hash == token_hash)
    )
    if family_id is not None:
        await revoke_family(session, family_id, now)
    await events.emit(session, LoggedOut(user_id=owner, device_token=device_token))


def request_password_reset(session: AsyncSession, email: str, *, now: datetime) -> None:
    """Queue the reset e-mail. The worker looks the address up, so the response (and its timing)
    is the same whether the account exists or not."""
    defer_durably(session, SEND_PASSWORD_RESET, email, now=now)


async def reset_token_state(
    session: AsyncSession, token: str, now: datetime
) -> tuple[str | None, bool]:
    """(the locale of the token's user, whether the token can still be used); (None, False)
    for a token never issued. Nothing is consumed."""
    row = (
        await session.execute(
            select(UserSettings.locale, PasswordResetToken.used_at, PasswordResetToken.expires_at)
            .join(PasswordResetToken, PasswordResetToken.user_id == UserSettings.user_id)
            .where(PasswordResetToken.token_hash == hash_token(token))
        )
    ).one_or_none()
    if row is None:
        return None, False
    locale, used_at, expires_at = row
    return locale, used_at is None and expires_at > now


async def create_password_reset_token(
    session: AsyncSession, settings: Settings, user: User, now: datetime, *, token: str
) -> None:
    """Issue `token` (single use); issuing it invalidates the user's older ones. Issuing the same
    token again (a retried mail task) keeps it as it is: one request, one token."""
    token_hash = hash_token(token)
    if await session.scalar(
        select(PasswordResetToken.id).where(PasswordResetToken.token_hash == token_hash)
    ):
        return
    await session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
    )
    session.add(
        PasswordResetToken(
            user_id=user.id,
            token_hash=token_hash,
            expires_at=now + timedelta(minutes=settings.password_reset_ttl_minutes),
        )
    )
    await session.flush()


async def set_password(session: AsyncSession, *, user: User, new_hash: str, now: datetime) -> None:
    """The caller hashed the new password first (~0.25 s of bcrypt): never under this lock."""
    await lock_user(session, user.id)
    user.password_hash = new_hash
    await revoke_all_sessions(session, user, now)
    defer_durably(session, SEND_PASSWORD_CHANGED, str(user.id), now=now, user_id=user.id)


async def reset_password(
    session: AsyncSession, passwords: Passwords, *, token: str, new_password: str, now: datetime
) -> None:
    # Consumed atomically: of two concurrent uses, exactly one gets the row back.
    user_id = await session.scalar(
        update(PasswordResetToken)
        .where(
            PasswordResetToken.token_hash == hash_token(token),
            PasswordResetToken.used_at.is_(None),
            PasswordResetToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(PasswordResetToken.user_id)
    )
    user = await lock_user(session, user_id) if user_id else None
    if user is None or user.deleted_at is not None:
        raise ResetTokenInvalid
    # bcrypt only once the token proved valid (no CPU for a forged token), at the price of
    # holding this rare request's connection through the hash.
    new_hash = await passwords.hash(new_password)
    await set_password(session, user=user, new_hash=new_hash, now=now)
