"""Security mails. Both are durable (outbox rows written with the request) and retried with
backoff for hours: an SMTP or broker outage delays them, never drops them."""

from __future__ import annotations

import uuid

from fastapi_mail.errors import ConnectionErrors

from goaltrack import mail
from goaltrack.account.queries import get_locale
from goaltrack.auth import service
from goaltrack.auth.models import User
from goaltrack.clock import utcnow
from goaltrack.i18n import t
from goaltrack.worker.registry import RetryLater, backoff, task
from goaltrack.worker.runtime import current_attempt, task_session, task_settings

# 5 s doubling to 15 min, then every 15 min: about 6 hours in all.
MAIL_RETRIES = 30
# SMTP outages are retried with backoff; anything else is a bug and fails loudly.
MAIL_TRANSIENT_ERRORS = (OSError, ConnectionErrors)


async def _send(message: mail.Mail) -> None:
    try:
        await mail.send_mail(task_settings(), message)
    except MAIL_TRANSIENT_ERRORS as exc:
        raise RetryLater(backoff(current_attempt().retries, cap=900), "SMTP unavailable") from exc


@task(service.SEND_PASSWORD_RESET, max_retries=MAIL_RETRIES, durable=True)
async def send_password_reset(email: str) -> None:
    settings = task_settings()
    async with task_session() as session:
        user = await service.get_user_by_email(session, email)
        if user is None or user.deleted_at is not None:
            return  # unknown address: nothing is sent, and the caller cannot tell
        token = await service.create_password_reset_token(session, settings, user, utcnow())
        locale = await get_locale(session, user.id)
    await _send(
        mail.Mail(
            to=email,
            subject=t(locale, "reset.subject"),
            text=t(locale, "reset.text", minutes=settings.password_reset_ttl_minutes),
            link=settings.password_reset_url.format(token=token),
        )
    )


@task(service.SEND_PASSWORD_CHANGED, max_retries=MAIL_RETRIES, durable=True)
async def send_password_changed(user_id: str) -> None:
    async with task_session() as session:
        user = await session.get(User, uuid.UUID(user_id))
        if user is None:
            return
        email, locale = user.email, await get_locale(session, user.id)
    await _send(
        mail.Mail(to=email, subject=t(locale, "changed.subject"), text=t(locale, "changed.text"))
    )
