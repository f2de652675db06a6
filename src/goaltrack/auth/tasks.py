"""Security mails. Both are durable (outbox rows written with the request) and retried with
backoff for hours: an SMTP or broker outage delays them, never drops them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

from sqlalchemy import select

from goaltrack import mail
from goaltrack.auth import service, verification
from goaltrack.auth.models import EmailVerification, User
from goaltrack.auth.security import new_opaque_token
from goaltrack.clock import utcnow
from goaltrack.config import Settings
from goaltrack.i18n import t
from goaltrack.profile.queries import get_locale
from goaltrack.worker.registry import task
from goaltrack.worker.runtime import current_attempt, task_session, task_settings


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


@task(service.SEND_PASSWORD_CHANGED, max_retries=mail.MAIL_RETRIES, durable=True)
async def send_password_changed(user_id: str) -> None:
    async with task_session() as session:
        user = await session.get(User, uuid.UUID(user_id))
        if user is None:
            return
        email, locale = user.email, await get_locale(session, user.id)
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
    async with task_session() as session:
        user = await session.get(User, uuid.UUID(user_id))
        if user is None:
            return
        email, locale = user.email, await get_locale(session, user.id)
    await mail.send_or_retry(
        task_settings(),
        mail.Mail(
            to=email,
            subject=t(locale, "email_change.subject"),
            text=t(locale, "email_change.text", new_email=new_email),
        ),
    )
