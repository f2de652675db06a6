from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi_mail.errors import ConnectionErrors

from goaltrack import mail
from goaltrack.account.queries import get_locale
from goaltrack.auth import service
from goaltrack.auth.models import User
from goaltrack.clock import utcnow
from goaltrack.config import get_settings
from goaltrack.i18n import t
from goaltrack.worker import backoff, celery_app, run_async, task_session

MAIL_RETRIES = 5
# SMTP outages are retried with backoff; anything else is a bug and fails loudly.
MAIL_TRANSIENT_ERRORS = (OSError, ConnectionErrors)


def _send_retrying(task: Any, send: Callable[[], Awaitable[None]]) -> None:
    try:
        run_async(send)
    except MAIL_TRANSIENT_ERRORS as exc:
        raise task.retry(exc=exc, countdown=backoff(task.request.retries)) from exc


@celery_app.task(bind=True, max_retries=MAIL_RETRIES)
def send_password_reset(self, email: str) -> None:  # type: ignore[no-untyped-def]
    settings = get_settings()

    async def run() -> None:
        async with task_session() as session:
            user = await service.get_user_by_email(session, email)
            if user is None or user.deleted_at is not None:
                return  # unknown address: nothing is sent, and the caller cannot tell
            token = await service.create_password_reset_token(session, settings, user, utcnow())
            locale = await get_locale(session, user.id)
        await mail.send_mail(
            settings,
            mail.Mail(
                to=email,
                subject=t(locale, "reset.subject"),
                text=t(locale, "reset.text", minutes=settings.password_reset_ttl_minutes),
                link=settings.password_reset_url.format(token=token),
            ),
        )

    _send_retrying(self, run)


@celery_app.task(bind=True, max_retries=MAIL_RETRIES)
def send_password_changed(self, user_id: str) -> None:  # type: ignore[no-untyped-def]
    settings = get_settings()

    async def run() -> None:
        async with task_session() as session:
            user = await session.get(User, uuid.UUID(user_id))
            if user is None:
                return
            email, locale = user.email, await get_locale(session, user.id)
        await mail.send_mail(
            settings,
            mail.Mail(
                to=email, subject=t(locale, "changed.subject"), text=t(locale, "changed.text")
            ),
        )

    _send_retrying(self, run)
