"""Test session: real PostgreSQL, Redis and S3 (the same local-stack code as `goaltrack dev`),
a real SMTP server (aiosmtpd), and a real Celery worker in a thread."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from fakes.fcm import FakeFcm
from fakes.openai import FakeOpenAI
from goaltrack.dev.localstack import LocalStack, free_port
from helpers import Account

_stack: LocalStack | None = None
_smtp: Any = None
_root: Path | None = None
FCM = FakeFcm()
SEEDED = {"achievements"}
OPENAI = FakeOpenAI()


@dataclass
class Mailbox:
    """Messages received by the test SMTP server."""

    messages: list[EmailMessage] = field(default_factory=list)
    refusals: int = 0  # the next N messages get "451 try again later"
    refused: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.refusals:
            self.refusals -= 1
            self.refused += 1
            return "451 4.3.0 Try again later"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]

    async def wait_for(
        self, address: str, count: int = 1, timeout: float = 15
    ) -> list[EmailMessage]:
        async with asyncio.timeout(timeout):
            while len(self.to(address)) < count:
                await asyncio.sleep(0.02)
        return self.to(address)


MAILBOX = Mailbox()


def pytest_configure(config: pytest.Config) -> None:
    global _stack, _smtp, _root
    if config.option.help or config.option.collectonly:
        return
    from aiosmtpd.controller import Controller

    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    _root = Path(tempfile.mkdtemp(prefix="goaltrack-test-", dir=base))
    _root.chmod(0o755)
    _stack = LocalStack(_root)
    _stack.start()
    smtp_port = free_port()
    _smtp = Controller(MAILBOX, hostname="127.0.0.1", port=smtp_port)
    _smtp.start()
    FCM.start()
    OPENAI.start()
    os.environ.update(
        _stack.env(),
        APP_ENV="test",
        JWT_SECRET="test-secret-" + uuid.uuid4().hex + uuid.uuid4().hex,
        BCRYPT_ROUNDS="4",  # production keeps 12; the cost factor is a setting, not a code path
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=str(smtp_port),
        MAIL_STARTTLS="false",
        MAIL_SSL_TLS="false",
        MAIL_FROM="noreply@goaltrack.example.com",
        RATE_LIMIT_REGISTER="1000/hour",
        PASSWORD_RESET_URL="https://app.goaltrack.example.com/reset?token={token}",
        FCM_CREDENTIALS_FILE=str(FCM.write_credentials(_root / "fcm-service-account.json")),
        FCM_BASE_URL=FCM.url,
        AI_API_KEY="test-ai-key",
        AI_BASE_URL=OPENAI.url,
        # A run's whole deadline: room for two retries (2 s, 4 s), short for the timeout test.
        AI_TIMEOUT_SECONDS="8",
        AI_DAILY_LIMIT="20",
    )
    from goaltrack.migrations import upgrade

    upgrade(_stack.postgres.url)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _smtp is not None:
        _smtp.stop()
    FCM.stop()
    OPENAI.stop()
    if _stack is not None:
        _stack.stop()
    if _root is not None:
        shutil.rmtree(_root, ignore_errors=True)


@pytest.fixture(scope="session")
def stack() -> LocalStack:
    assert _stack is not None
    return _stack


@pytest.fixture(scope="session")
def celery_app() -> Any:
    """The worker's Celery app, built by the same factory as `goaltrack worker`."""
    from goaltrack.celery_app import create_celery
    from goaltrack.config import get_settings

    return create_celery(get_settings())


@pytest.fixture(scope="session", autouse=True)
def celery_worker(celery_app: Any) -> Iterator[Any]:
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30
    ) as worker:
        yield worker


@pytest.fixture(scope="session")
async def app() -> AsyncIterator[Any]:
    from goaltrack.main import create_app

    application = create_app()
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(autouse=True)
async def clean_state(app: Any) -> AsyncIterator[None]:
    """Every test starts from an empty database (schema from Alembic) and an empty Redis."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from goaltrack.clock import set_clock
    from goaltrack.db import Base

    # Reference data seeded by migrations (the achievements catalogue) stays.
    tables = ", ".join(
        f'"{table.name}"' for table in Base.metadata.sorted_tables if table.name not in SEEDED
    )
    for attempt in range(5):
        # A task of the previous test may still hold row locks on the worker; TRUNCATE then
        # deadlocks with it, and one of the two is cancelled. Try again.
        try:
            async with app.state.engine.begin() as connection:
                await connection.execute(text(f"TRUNCATE {tables} CASCADE"))
            break
        except DBAPIError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2)
    await app.state.redis.flushdb()
    MAILBOX.messages.clear()
    MAILBOX.refusals = MAILBOX.refused = 0
    FCM.reset()
    OPENAI.reset()
    app.dependency_overrides.clear()
    yield
    app.dependency_overrides.clear()
    set_clock(None)


@pytest.fixture
def mailbox() -> Mailbox:
    return MAILBOX


@pytest.fixture
def fcm() -> FakeFcm:
    return FCM


@pytest.fixture
def fake_openai() -> FakeOpenAI:
    return OPENAI


@pytest.fixture
async def client(app: Any) -> AsyncIterator[Any]:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def register(client: Any) -> Callable[..., Any]:
    async def _register(
        email: str | None = None, password: str = "correct horse battery", **extra: Any
    ) -> Account:
        address = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
        response = await client.post(
            "/auth/register", json={"email": address, "password": password, **extra}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return Account(address, password, body["access_token"], body["refresh_token"])

    return _register


@pytest.fixture
async def user(register: Callable[..., Any]) -> Account:
    account: Account = await register()
    return account


@pytest.fixture
async def other_user(register: Callable[..., Any]) -> Account:
    account: Account = await register()
    return account
