"""Security mails, and Sign in with Apple's token exchange and revocation. All are durable
(outbox rows written with the request) and retried with backoff: an SMTP, broker or Apple outage
delays them, never drops them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import uuid

from sqlalchemy import select

from goaltrack import mail
from goaltrack.auth import apple, identities, service, verification
from goaltrack.auth.models import EmailVerification, User, UserIdentity
from goaltrack.auth.security import new_opaque_token
from goaltrack.clock import utcnow
from goaltrack.config import Settings
from goaltrack.i18n import t
from goaltrack.profile.queries import get_locale
from goaltrack.worker.outbox import defer_durably
from goaltrack.worker.registry import RetryLater, backoff, task
from goaltrack.worker.runtime import current_attempt, task_session, task_settings

logger = logging.getLogger(__name__)


def reset_token_for(settings: Settings, request_id: uuid.UUID | None) -> str:
    """The reset token of one forgot-password request, the same on every retry of its mail (so a
    retry never mints a second token): derived from the request's outbox id with a server key.
    Only its hash is stored; the database alone cannot produce it."""
    if request_id is None:
        return new_opaque_token()
    key = settings.jwt_secret.get_secret_value().encode()
    digest = hmac.new(key, b"password-reset:" + request_id.bytes, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@task(service.SEND_PASSWORD_RESET, max_retries=mail.MAIL_RETRIES, durable=True)
async def send_password_reset(email: str) -> None:
    settings = task_settings()
    async with task_session() as session:
        user = await service.get_user_by_email(session, email)
        if user is None or user.deleted_at is not None:
            return  # unknown address: nothing is sent, and the caller cannot tell
        token = reset_token_for(settings, current_attempt().outbox_id)
        await service.create_password_reset_token(session, settings, user, utcnow(), token=token)
        locale = await get_locale(session, user.id)
    await mail.send_or_retry(
        task_settings(),
        mail.Mail(
            to=email,
            subject=t(locale, "reset.subject"),
            text=t(locale, "reset.text", count=settings.password_reset_ttl_minutes),
            link=settings.password_reset_url.format(token=token),
        ),
    )


async def _recipient(user_id: str) -> tuple[str, str] | None:
    """A user's address and language for a mail (None: the account is gone)."""
    async with task_session() as session:
        user = await session.get(User, uuid.UUID(user_id))
        if user is None:
            return None
        return user.email, await get_locale(session, user.id)


@task(service.SEND_PASSWORD_CHANGED, max_retries=mail.MAIL_RETRIES, durable=True)
async def send_password_changed(user_id: str) -> None:
    recipient = await _recipient(user_id)
    if recipient is None:
        return
    email, locale = recipient
    await mail.send_or_retry(
        task_settings(),
        mail.Mail(to=email, subject=t(locale, "changed.subject"), text=t(locale, "changed.text")),
    )


@task(verification.SEND_VERIFICATION, max_retries=mail.MAIL_RETRIES, durable=True)
async def send_verification(verification_id: str) -> None:
    """The link and code of one verification, rebuilt from its id (the same on every retry)."""
    settings = task_settings()
    async with task_session() as session:
        row = (
            await session.execute(
                select(EmailVerification, User.display_name)
                .join(User, User.id == EmailVerification.user_id)
                .where(EmailVerification.id == uuid.UUID(verification_id))
            )
        ).one_or_none()
        if row is None or row[0].used_at is not None:
            return  # ended by a newer one (or the account is gone): that one has its own mail
        found, name = row
        locale = await get_locale(session, found.user_id)
    token, code = verification.secrets_of(settings, found.id)
    # The greeting is a line of its own: no language has to fit it into the sentence after it.
    greeting = (
        t(locale, "verify.greeting", name=name) if name else t(locale, "verify.greeting_anonymous")
    )
    hours = max(1, settings.email_verification_ttl_minutes // 60)
    await mail.send_or_retry(
        settings,
        mail.Mail(
            to=found.email,
            subject=t(locale, "verify.subject"),
            text=f"{greeting}\n\n{t(locale, 'verify.text', code=code, count=hours)}",
            link=settings.email_verify_url.format(token=token),
        ),
    )


@task(verification.SEND_EMAIL_CHANGE_NOTICE, max_retries=mail.MAIL_RETRIES, durable=True)
async def send_email_change_notice(user_id: str, new_email: str) -> None:
    """To the address being replaced: someone asked to move the account away from it."""
    recipient = await _recipient(user_id)
    if recipient is None:
        return
    email, locale = recipient
    await mail.send_or_retry(
        task_settings(),
        mail.Mail(
            to=email,
            subject=t(locale, "email_change.subject"),
            text=t(locale, "email_change.text", new_email=new_email),
        ),
    )


# Apple's authorization code lives five minutes: a few quick retries, then it is spent anyway.
EXCHANGE_RETRIES = 5
# A revocation is owed to the user: retried like a mail, for hours (5 s doubling to 15 min).
REVOKE_RETRIES = mail.MAIL_RETRIES


@task(identities.EXCHANGE_APPLE_CODE, max_retries=EXCHANGE_RETRIES, durable=True)
async def exchange_apple_code(identity_id: str, client_id: str, sealed_code: str) -> None:
    """Apple's refresh token for the identity, kept sealed until the account's deletion revokes
    it. An identity that went meanwhile (the account deleted) has the new token revoked at once."""
    settings = task_settings()
    code = apple.unseal(settings, sealed_code)
    async with task_session() as session:
        identity = await session.get(UserIdentity, uuid.UUID(identity_id))
        if code is None or identity is None or identity.refresh_token_sealed is not None:
            return
        subject, user_id = identity.subject, identity.user_id
    answer = await apple.exchange_code(settings, client_id=client_id, code=code)
    if answer.outcome is apple.Outcome.retry:
        raise RetryLater(backoff(current_attempt().retries, cap=60), answer.detail)
    if answer.outcome is apple.Outcome.spent or answer.refresh_token is None:
        logger.warning("Apple authorization code not exchanged: %s", answer.detail)
        return
    sealed = apple.seal(settings, answer.refresh_token)
    async with task_session() as session:
        # In the order an account's deletion locks them (user, then identities): either it sees
        # the token kept here and revokes it, or this sees the deletion.
        user = await service.lock_user(session, user_id)
        identity = await session.get(
            UserIdentity, uuid.UUID(identity_id), with_for_update=True, populate_existing=True
        )
        if (
            identity is not None
            and identity.refresh_token_sealed is None
            and user is not None
            and user.deleted_at is None
            and answer.subject == subject
        ):
            identity.refresh_token_sealed = sealed
            identity.client_id = client_id  # what its revocation must name
            return
        # The account deleted meanwhile, a token kept already (Apple keeps both valid), or the
        # code of another person: this token is revoked, never kept.
        logger.info("Apple refresh token not kept: revoked")
        defer_durably(session, identities.REVOKE_APPLE_TOKEN, client_id, sealed, now=utcnow())


@task(identities.REVOKE_APPLE_TOKEN, max_retries=REVOKE_RETRIES, durable=True)
async def revoke_apple_token(client_id: str, sealed_token: str) -> None:
    settings = task_settings()
    token = apple.unseal(settings, sealed_token)
    if token is None:
        logger.error("an Apple refresh token could not be unsealed (JWT_SECRET changed?)")
        return
    answer = await apple.revoke_token(settings, client_id=client_id, refresh_token=token)
    if answer.outcome is apple.Outcome.retry:
        raise RetryLater(backoff(current_attempt().retries, cap=900), answer.detail)
    if answer.outcome is apple.Outcome.spent:
        logger.info("Apple refresh token already invalid: %s", answer.detail)
