"""Security mails. Both are durable (outbox rows written with the request) and retried with
backoff for hours: an SMTP or broker outage delays them, never drops them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

from goaltrack import mail
from goaltrack.auth import service
from goaltrack.auth.models import User
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
            text=t(locale, "reset.text", minutes=settings.password_reset_ttl_minutes),
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
