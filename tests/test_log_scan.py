"""No secret reaches the logs: a full flow through a production-configured app, with every
logger of the process (the API, the Celery worker thread, SQLAlchemy, the HTTP clients) captured
at DEBUG, and none of the flow's secrets in any record's message or exception text.

The app is built with APP_ENV=production: `Settings` is validated again with it, so the
production checks (strong JWT secret, MAIL_SERVER, https reset link, a real S3 secret) pass on the
test stack's values. The mail is sent by the session's Celery worker thread to the test SMTP server.

Left out of the scan: the test SMTP server's own session log (aiosmtpd, logger `mail.log`), which
stands in for the mail provider and must see the recipient and the message.
"""

from __future__ import annotations

import logging
import re
import struct
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from celery.worker import request as celery_request
from sqlalchemy import func, select

from goaltrack.config import AppEnv, Settings, get_settings
from goaltrack.main import create_app
from goaltrack.worker.outbox import OutboxTask
from helpers import wait_until


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# A real 1×1 grey PNG: uploads are decoded, not only sniffed.
PNG = (
    b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    + _png_chunk(b"IDAT", zlib.compress(b"\x00\x80"))
    + _png_chunk(b"IEND", b"")
)
# The harness's stand-in for the mail provider: it logs the SMTP session it receives.
NOT_SCANNED = ("mail.log",)
FORMATTER = logging.Formatter("%(name)s %(levelname)s %(message)s")

# Findings of this scan, not fixed yet (src is not this test's to change). All at DEBUG only;
# nothing leaks at INFO or above. Any other leak fails the test, and so does one of these
# disappearing (take it off the list): the test reports itself xfailed while the list is not empty.
# Found by this scan and fixed (goaltrack.redaction drops the DEBUG records of SQLAlchemy's
# engine, which logs result rows, and of Celery's pool, which logs task arguments).
KNOWN_DEBUG_LEAKS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Captured:
    logger: str
    level: str
    thread: str
    text: str  # the formatted message, with the exception text and stack if any


class CaptureAll(logging.Handler):
    """Formats every record when it is emitted (its args may change later)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[Captured] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = FORMATTER.format(record)
        except Exception as exc:  # a broken record is still scanned as best it can be
            text = f"{record.msg!r} {record.args!r} (unformattable: {exc!r})"
        self.records.append(Captured(record.name, record.levelname, record.threadName, text))


def refresh_celery_log_switches(worker: Any) -> None:
    """Celery decides once, when the worker starts, whether it logs at INFO and DEBUG (the
    session's worker started at WARNING): decide again from the current levels, as a worker
    started with them would (tracers and strategies rebuilt, the request and pool switches)."""
    celery_request.__optimize__()
    worker.pool._does_debug = logging.getLogger("celery.pool").isEnabledFor(logging.DEBUG)
    worker.consumer.update_strategies()


@pytest.fixture
def captured(celery_worker: Any) -> Iterator[CaptureAll]:
    """The root logger at DEBUG; loggers with a level of their own lowered to DEBUG too, and the
    handler also on loggers that do not propagate; the Celery worker thread told. Everything is
    put back afterwards."""
    handler = CaptureAll()
    root = logging.getLogger()
    loggers = [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    levels = {logger: logger.level for logger in [root, *loggers]}
    isolated = [logger for logger in loggers if not logger.propagate]
    for logger in levels:
        if logger is root or logger.level > logging.DEBUG:
            logger.setLevel(logging.DEBUG)
    root.addHandler(handler)
    for logger in isolated:
        logger.addHandler(handler)
    refresh_celery_log_switches(celery_worker)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger in isolated:
            logger.removeHandler(handler)
        for logger, level in levels.items():
            logger.setLevel(level)
        refresh_celery_log_switches(celery_worker)


@pytest.fixture
async def production_client(captured: CaptureAll) -> AsyncIterator[httpx.AsyncClient]:
    base = get_settings()
    values = {name: getattr(base, name) for name in Settings.model_fields}
    # Validated again (not model_copy): the production checks must pass on these values.
    settings = Settings(**{**values, "app_env": AppEnv.production})
    assert settings.app_env is AppEnv.production
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            yield http


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def outbox_empty(app: Any) -> bool:
    async with app.state.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(OutboxTask)) == 0


async def test_no_secret_in_any_log_record(
    production_client: httpx.AsyncClient, captured: CaptureAll, app: Any, mailbox: Any
) -> None:
    http = production_client
    email = f"log-scan-{uuid.uuid4().hex[:10]}@example.com"
    password = f"first passphrase {uuid.uuid4().hex[:8]}"
    new_password = f"second passphrase {uuid.uuid4().hex[:8]}"
    wrong_password = f"wrong passphrase {uuid.uuid4().hex[:8]}"
    device = f"fcm:log-scan-device-{uuid.uuid4().hex}"
    pairs: list[dict[str, Any]] = []

    async def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
        assert response.status_code == status, response.text
        return response.json() if response.content else {}

    # Register, log in (once with a wrong password), refresh.
    pairs.append(
        await ok(
            await http.post("/auth/register", json={"email": email, "password": password}), 201
        )
    )
    await ok(await http.post("/auth/login", json={"email": email, "password": wrong_password}), 401)
    pairs.append(
        await ok(await http.post("/auth/login", json={"email": email, "password": password}))
    )
    pairs.append(
        await ok(
            await http.post("/auth/refresh", json={"refresh_token": pairs[-1]["refresh_token"]})
        )
    )

    # Verify the address: a wrong code once, then the mail's code.
    [verification] = await mailbox.wait_for(email, verification=True)
    code = re.search(r"\b([0-9]{6})\b", verification.get_body(("plain",)).get_content()).group(1)
    wrong_code = f"{(int(code) + 1) % 1_000_000:06d}"
    for attempt, status in ((wrong_code, 400), (code, 200)):
        await ok(
            await http.post(
                "/auth/verify-email", json={"code": attempt}, headers=bearer(pairs[-1])
            ),
            status,
        )

    # Forgot the password: the worker thread mails the link; reset with its token.
    await ok(await http.post("/auth/forgot-password", json={"email": email}), 202)
    [message] = await mailbox.wait_for(email)
    link = re.search(r"https://\S+", message.get_body(("plain",)).get_content()).group(0)
    [reset_token] = parse_qs(urlsplit(link).query)["token"]
    await ok(
        await http.post(
            "/auth/reset-password", json={"token": reset_token, "new_password": new_password}
        ),
        204,
    )
    pairs.append(
        await ok(await http.post("/auth/login", json={"email": email, "password": new_password}))
    )
    headers = bearer(pairs[-1])

    # Move the account to another address, verified by the link mailed to it.
    new_email = f"log-scan-moved-{uuid.uuid4().hex[:10]}@example.com"
    await ok(
        await http.put(
            "/account/email",
            json={"new_email": new_email, "password": new_password},
            headers=headers,
        ),
        202,
    )
    [moving] = await mailbox.wait_for(new_email, verification=True)
    verify_link = re.search(r"goaltrack://\S+", moving.get_body(("plain",)).get_content()).group(0)
    [verify_token] = parse_qs(urlsplit(verify_link).query)["token"]
    await ok(await http.post("/auth/verify-email", json={"token": verify_token}))

    # A device first, so that the goal's completion is pushed to it (by the worker, through FCM).
    await ok(
        await http.post("/devices", json={"token": device, "platform": "android"}, headers=headers),
        201,
    )
    goal = await ok(await http.post("/goals", json={"title": "Log scan"}, headers=headers), 201)
    stage = await ok(
        await http.post(f"/goals/{goal['id']}/stages", json={"title": "Only"}, headers=headers),
        201,
    )
    await ok(await http.put(f"/goals/{goal['id']}/stages/{stage['id']}/complete", headers=headers))
    await ok(
        await http.post(
            f"/goals/{goal['id']}/attachments",
            files={"file": ("proof.png", PNG, "image/png")},
            headers=headers,
        ),
        201,
    )
    # The pushes are delivered before logout forgets the device. (Were the device deleted while
    # a push task claims it, the task fails on push_deliveries' foreign key and its outbox row
    # waits for the sweep: a separate finding.)
    await wait_until(lambda: outbox_empty(app))
    await ok(
        await http.post(
            "/auth/logout",
            json={"refresh_token": pairs[-1]["refresh_token"], "device_token": device},
        ),
        204,
    )
    await ok(await http.get("/account", headers=headers), 401)
    await wait_until(lambda: outbox_empty(app))  # every task of the flow ran on the worker

    secrets = {
        "e-mail address": email,
        "e-mail address (URL-encoded)": quote(email),
        "password": password,
        "new password": new_password,
        "wrong password": wrong_password,
        "reset token": reset_token,
        "reset link": link,
        "device token": device,
        "new e-mail address": new_email,
        "verification token": verify_token,
        "verification link": verify_link,
    }
    for index, pair in enumerate(pairs):
        secrets[f"access token #{index + 1}"] = pair["access_token"]
        secrets[f"refresh token #{index + 1}"] = pair["refresh_token"]

    scanned = [r for r in captured.records if not r.logger.startswith(NOT_SCANNED)]
    # The capture works: the API's statements and the worker's tasks were logged.
    assert any(r.logger.startswith("sqlalchemy.engine") for r in scanned)
    assert any(r.logger.startswith("celery") for r in scanned)
    leaks = [
        (record, what)
        for record in scanned
        for what, secret in secrets.items()
        if secret.lower() in record.text.lower()
    ]
    unexpected = [
        f"{what} in {record.logger} ({record.level}, thread {record.thread}): {record.text[:300]!r}"
        for record, what in leaks
        if record.level != "DEBUG" or (record.logger, what) not in KNOWN_DEBUG_LEAKS
    ]
    # The codes, as numbers of their own (not inside a longer number or a timestamp's fraction).
    for what, number in (("verification code", code), ("wrong verification code", wrong_code)):
        pattern = re.compile(rf"(?<![0-9.:]){number}(?![0-9])")
        unexpected += [
            f"{what} in {record.logger}: {record.text[:300]!r}"
            for record in scanned
            if pattern.search(record.text)
        ]
    assert not unexpected, f"{len(unexpected)} leak(s) in {len(scanned)} records:\n" + "\n".join(
        unexpected
    )
    known = {(record.logger, what) for record, what in leaks}
    assert known == KNOWN_DEBUG_LEAKS, f"fixed? take {KNOWN_DEBUG_LEAKS - known} off the list"
    if known:
        pytest.xfail(f"known leaks at DEBUG, not fixed yet: {sorted(known)}")
