"""Outgoing e-mail through fastapi-mail; without MAIL_SERVER (development) messages go to the log."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass

from aiosmtplib import SMTPResponseException
from fastapi_mail import (
    ConnectionConfig,
    FastMail,
    MessageSchema,
    MessageType,
    MultipartSubtypeEnum,
)
from fastapi_mail.errors import ConnectionErrors

from goaltrack.config import Settings
from goaltrack.worker.registry import RetryLater, backoff
from goaltrack.worker.runtime import current_attempt

# A mail task's retries: 5 s doubling to 15 min, then every 15 min — about 6 hours in all.
MAIL_RETRIES = 30
# SMTP outages are retried with backoff; anything else is a bug and fails loudly.
MAIL_TRANSIENT_ERRORS = (OSError, ConnectionErrors)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    text: str
    link: str | None = None

    def html(self) -> str:
        paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in self.text.split("\n\n"))
        if self.link:
            href = html.escape(self.link, quote=True)
            paragraphs += f'<p><a href="{href}">{href}</a></p>'
        return f"<!doctype html><html><body>{paragraphs}</body></html>"

    def plain(self) -> str:
        return f"{self.text}\n\n{self.link}\n" if self.link else f"{self.text}\n"


def _connection(settings: Settings) -> ConnectionConfig:
    assert settings.mail_server
    return ConnectionConfig(
        MAIL_SERVER=settings.mail_server,
        MAIL_PORT=settings.mail_port,
        MAIL_FROM=settings.mail_from,
        MAIL_FROM_NAME=settings.mail_from_name,
        MAIL_USERNAME=settings.mail_username,
        MAIL_PASSWORD=settings.mail_password,
        MAIL_STARTTLS=settings.mail_starttls,
        MAIL_SSL_TLS=settings.mail_ssl_tls,
        USE_CREDENTIALS=bool(settings.mail_username),
        VALIDATE_CERTS=settings.mail_starttls or settings.mail_ssl_tls,
    )


async def send_mail(settings: Settings, mail: Mail) -> None:
    if not settings.mail_server:
        # Development only (production refuses to start without MAIL_SERVER).
        logger.info("mail to %s: %s\n%s", mail.to, mail.subject, mail.plain())
        return
    message = MessageSchema(
        recipients=[mail.to],
        subject=mail.subject,
        body=mail.html(),
        alternative_body=mail.plain(),
        subtype=MessageType.html,
        multipart_subtype=MultipartSubtypeEnum.alternative,
    )
    await FastMail(_connection(settings)).send_message(message)


async def send_or_retry(settings: Settings, mail: Mail) -> None:
    """Send from a mail task: an SMTP outage or a "try again later" (4xx) retries the task with
    backoff (MAIL_RETRIES); a permanent refusal (5xx) fails it."""
    try:
        await send_mail(settings, mail)
    except MAIL_TRANSIENT_ERRORS as exc:
        raise RetryLater(backoff(current_attempt().retries, cap=900), "SMTP unavailable") from exc
    except SMTPResponseException as exc:
        if 400 <= exc.code < 500:  # greylisting, a full queue
            raise RetryLater(
                backoff(current_attempt().retries, cap=900), f"SMTP {exc.code}"
            ) from exc
        raise
