"""Proving an e-mail address: at registration, and before an address change takes effect.

A verification is a row (`EmailVerification`) and a mail with a link and a 6-digit code. Neither
secret is stored: both derive from the row's id with the server's key (`secrets_of`), so the mail
task can rebuild them on every retry from the id alone (no secret in the outbox or the broker),
and a database leak yields neither. The link's token is looked up by its hash; the code is checked
against the caller's live verification, in constant time, and dies after MAX_CODE_ATTEMPTS wrong
tries (with the per-user rate limit, a 6-digit code cannot fall to guessing). Verifying marks the
address verified or, for a change, moves the account to it in the same transaction, unless another
account took it meanwhile (409 `email_taken`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import datetime, timedelta

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from goaltrack.auth.errors import EmailTaken, NothingToVerify, VerificationInvalid
from goaltrack.auth.models import EmailVerification, PasswordResetToken, User
from goaltrack.auth.security import hash_token
from goaltrack.config import Settings
from goaltrack.worker.outbox import defer_durably

SEND_VERIFICATION = "auth.send_verification"
SEND_EMAIL_CHANGE_NOTICE = "auth.send_email_change_notice"
MAX_CODE_ATTEMPTS = 5
CODE_DIGITS = 6


def secrets_of(settings: Settings, verification_id: uuid.UUID) -> tuple[str, str]:
    """The link token and the code of one verification, the same on every call."""
    key = settings.jwt_secret.get_secret_value().encode()

    def derive(purpose: bytes) -> bytes:
        return hmac.new(key, purpose + verification_id.bytes, hashlib.sha256).digest()

    token = base64.urlsafe_b64encode(derive(b"email-verify-token:")).rstrip(b"=").decode()
    code = int.from_bytes(derive(b"email-verify-code:"), "big") % 10**CODE_DIGITS
    return token, f"{code:0{CODE_DIGITS}d}"


async def start(
    session: AsyncSession, settings: Settings, *, user: User, email: str, now: datetime
) -> None:
    """A new verification of `email` for `user` (ending any older one), and its durable mail."""
    await _end_live(session, user.id, now)
    verification = EmailVerification(
        id=uuid.uuid4(),
        user_id=user.id,
        email=email.lower(),
        expires_at=now + timedelta(minutes=settings.email_verification_ttl_minutes),
    )
    verification.token_hash = hash_token(secrets_of(settings, verification.id)[0])
    session.add(verification)
    await session.flush()
    defer_durably(session, SEND_VERIFICATION, str(verification.id), now=now, user_id=user.id)


async def request_change(
    session: AsyncSession, settings: Settings, *, user: User, new_email: str, now: datetime
) -> None:
    """A link and code to the new address, a notice to the old one; the address itself changes
    only when the new one is verified (`verify_*`)."""
    if await _taken(session, new_email, user.id):
        raise EmailTaken
    await start(session, settings, user=user, email=new_email, now=now)
    defer_durably(
        session, SEND_EMAIL_CHANGE_NOTICE, str(user.id), new_email.lower(), now=now, user_id=user.id
    )


async def resend(session: AsyncSession, settings: Settings, *, user: User, now: datetime) -> None:
    """A fresh mail for what is waiting to be verified: a pending change, else the address."""
    live = await _live(session, user.id, now)
    if live is not None:
        email = live.email
    elif not user.email_verified:
        email = user.email
    else:
        raise NothingToVerify
    await start(session, settings, user=user, email=email, now=now)


async def verify_token(session: AsyncSession, *, token: str, now: datetime) -> User:
    verification = await session.scalar(
        select(EmailVerification)
        .where(EmailVerification.token_hash == hash_token(token))
        .with_for_update()
    )
    if verification is None or not _usable(verification, now):
        raise VerificationInvalid
    return await _apply(session, verification, now)


async def verify_code(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    user: User,
    code: str,
    now: datetime,
) -> User:
    verification = await _live(session, user.id, now)
    if verification is None:
        raise VerificationInvalid
    expected = secrets_of(settings, verification.id)[1]
    if not hmac.compare_digest(code.encode(), expected.encode()):
        # Counted in a transaction of its own, so the count outlives this 400; at
        # MAX_CODE_ATTEMPTS the code dies and only a new mail brings another.
        async with sessionmaker() as own, own.begin():
            await own.execute(
                update(EmailVerification)
                .where(EmailVerification.id == verification.id)
                .values(
                    failed_attempts=EmailVerification.failed_attempts + 1,
                    used_at=case(
                        (EmailVerification.failed_attempts + 1 >= MAX_CODE_ATTEMPTS, now),
                        else_=EmailVerification.used_at,
                    ),
                )
            )
        raise VerificationInvalid
    locked = await session.scalar(
        select(EmailVerification)
        .where(EmailVerification.id == verification.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if locked is None or not _usable(locked, now):
        raise VerificationInvalid  # used meanwhile (a concurrent verify, or guessed out)
    return await _apply(session, locked, now)


async def _apply(session: AsyncSession, verification: EmailVerification, now: datetime) -> User:
    verification.used_at = now
    user = await session.scalar(
        select(User).where(User.id == verification.user_id).with_for_update()
    )
    if user is None or user.deleted_at is not None:
        raise VerificationInvalid
    if verification.email != user.email.lower():
        if await _taken(session, verification.email, user.id):
            raise EmailTaken  # taken since the change was asked for; the link stays usable
        user.email = verification.email
        # Reset links went to the old address: they no longer open this account.
        await session.execute(
            update(PasswordResetToken)
            .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
            .values(used_at=now)
        )
    user.email_verified = True
    await session.flush()
    return user


def _usable(verification: EmailVerification, now: datetime) -> bool:
    return verification.used_at is None and verification.expires_at > now


async def _live(
    session: AsyncSession, user_id: uuid.UUID, now: datetime
) -> EmailVerification | None:
    """The user's verification still usable (one at most: `start` ends the older ones)."""
    return await session.scalar(
        select(EmailVerification)
        .where(
            EmailVerification.user_id == user_id,
            EmailVerification.used_at.is_(None),
            EmailVerification.expires_at > now,
        )
        .order_by(EmailVerification.created_at.desc())
        .limit(1)
    )


async def _end_live(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(EmailVerification)
        .where(EmailVerification.user_id == user_id, EmailVerification.used_at.is_(None))
        .values(used_at=now)
    )


async def _taken(session: AsyncSession, email: str, user_id: uuid.UUID) -> bool:
    """Another account has this address (uq_users_email_lower)."""
    owner = await session.scalar(select(User.id).where(func.lower(User.email) == email.lower()))
    return owner is not None and owner != user_id
