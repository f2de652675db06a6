"""Test session: real PostgreSQL, Redis and S3 (the same local-stack code as `goaltrack dev`),
a real SMTP server (aiosmtpd), and a real Celery worker in a thread."""

from __future__ import annotations

import email
import email.policy
import json
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
from fakes.identity import APPLE_CLIENT_IDS, GOOGLE_CLIENT_IDS, FakeApple, FakeIdentityProvider
from fakes.openai import FakeOpenAI
from goaltrack.dev.localstack import LocalStack, Postgres, free_port
from goaltrack.i18n import LOCALES, t
from helpers import Account, TestClock, wait_for_idle_worker, wait_until

_stack: LocalStack | None = None
_smtp: Any = None
_root: Path | None = None
FCM = FakeFcm()
SEEDED = {"achievements"}
OPENAI = FakeOpenAI()
GOOGLE = FakeIdentityProvider("google", "https://accounts.google.com", "/oauth2/v3/certs")
APPLE = FakeApple()


VERIFY_SUBJECTS = {t(locale, "verify.subject") for locale in LOCALES}


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

    def to(self, address: str, *, verification: bool = False) -> list[EmailMessage]:
        """The messages to `address`: every registration sends a verification mail, so those
        are apart (`verification=True`) and the other tests count only their own mails."""
        return [
            m
            for m in self.messages
            if address in str(m["To"]) and (str(m["Subject"]) in VERIFY_SUBJECTS) == verification
        ]

    async def wait_for(
        self, address: str, count: int = 1, timeout: float = 30, *, verification: bool = False
    ) -> list[EmailMessage]:
        await wait_until(
            lambda: len(self.to(address, verification=verification)) >= count, timeout=timeout
        )
        return self.to(address, verification=verification)


MAILBOX = Mailbox()


TEMPLATE_DATABASE = "goaltrack_template"
_shared_postgres: Postgres | None = None  # started by this process: the controller or a plain run
_shared_root: Path | None = None


def _temporary_root(prefix: str) -> Path:
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    root.chmod(0o755)
    return root


def pytest_configure(config: pytest.Config) -> None:
    """One PostgreSQL for the run, its schema built once by Alembic into a template database;
    each xdist worker (or a run without workers) gets a database cloned from it, and Redis, S3,
    SMTP, FCM and the AI API of its own (see `_start_worker_stack`)."""
    global _shared_postgres, _shared_root
    if config.option.help or config.option.collectonly:
        return
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: the controller runs PostgreSQL
        shared = json.loads(workerinput["goaltrack_postgres"])
        postgres = Postgres(
            Path(shared["data_dir"]), port=shared["port"], database=shared["database"]
        )
        _start_worker_stack(postgres)
        return
    _shared_root = _temporary_root("goaltrack-test-pg-")
    workers = getattr(config.option, "numprocesses", None) or 1
    _shared_postgres = Postgres(
        _shared_root / "postgres", database=TEMPLATE_DATABASE, max_connections=200 * workers
    )
    try:
        _shared_postgres.start()
        from goaltrack.migrations import upgrade

        upgrade(_shared_postgres.url)
    except BaseException:
        _shared_postgres.stop()
        raise
    if getattr(config.option, "dist", "no") == "no":  # no workers: this process runs the tests
        _start_worker_stack(_worker_database("main"))


def _worker_database(worker_id: str) -> Postgres:
    """A database of the shared server cloned from the migrated template (a file copy: no
    migration runs again)."""
    assert _shared_postgres is not None
    name = f"goaltrack_{worker_id}"
    _shared_postgres.create_database(name, template=TEMPLATE_DATABASE)
    return Postgres(_shared_postgres.data_dir, port=_shared_postgres.port, database=name)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller, before a worker starts: its database, cloned here one at a time."""
    postgres = _worker_database(node.gateway.id)
    node.workerinput["goaltrack_postgres"] = json.dumps(
        {"data_dir": str(postgres.data_dir), "port": postgres.port, "database": postgres.database}
    )


def _start_worker_stack(postgres: Postgres) -> None:
    """This process's own Redis (so its Celery worker consumes only its own tasks), S3 (a test
    stops it to simulate an outage), SMTP server and fake FCM and AI servers, on free ports."""
    global _stack, _smtp, _root
    from aiosmtpd.controller import Controller

    _root = _temporary_root("goaltrack-test-")
    _stack = LocalStack(_root, shared_postgres=postgres)
    _stack.start()
    smtp_port = free_port()
    _smtp = Controller(MAILBOX, hostname="127.0.0.1", port=smtp_port)
    _smtp.start()
    FCM.start()
    OPENAI.start()
    GOOGLE.start()
    APPLE.start()
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
        OAUTH_GOOGLE_CLIENT_IDS=",".join(GOOGLE_CLIENT_IDS),
        OAUTH_GOOGLE_JWKS_URL=GOOGLE.jwks_url,
        OAUTH_APPLE_CLIENT_IDS=",".join(APPLE_CLIENT_IDS),
        OAUTH_APPLE_JWKS_URL=APPLE.jwks_url,
        OAUTH_APPLE_BASE_URL=APPLE.url,
        OAUTH_APPLE_TEAM_ID=APPLE.team_id,
        OAUTH_APPLE_KEY_ID=APPLE.key_id,
        OAUTH_APPLE_PRIVATE_KEY_FILE=str(APPLE.write_key(_root / "apple-sign-in.p8")),
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if _smtp is not None:
        _smtp.stop()
    FCM.stop()
    OPENAI.stop()
    GOOGLE.stop()
    APPLE.stop()
    if _stack is not None:
        _stack.stop(discard=True)
    if _root is not None:
        shutil.rmtree(_root, ignore_errors=True)
    if _shared_postgres is not None:
        _shared_postgres.stop()
    if _shared_root is not None:
        shutil.rmtree(_shared_root, ignore_errors=True)


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """schemathesis names each operation's test `test_api_fuzz[GET /goals]` but, under pytest 9,
    gives all of them the node id `…::test_api_fuzz`: xdist schedules and reports by node id, and
    would run and count one of the 46. Each gets the node id of its name."""
    from _pytest.nodeid import coerce_node_id

    for item in items:
        if "[" in item.name and "[" not in item.nodeid and item.parent is not None:
            item._id = coerce_node_id(f"{item.parent.nodeid}::{item.name}")


@pytest.fixture(autouse=True)
async def clean_state(app: Any) -> AsyncIterator[None]:
    """Every test starts from an empty database (schema from Alembic) and an empty Redis."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from goaltrack.db import Base

    # Reference data seeded by migrations (the achievements catalogue) stays.
    tables = ", ".join(
        f'"{table.name}"' for table in Base.metadata.sorted_tables if table.name not in SEEDED
    )
    for attempt in range(3):
        # TRUNCATE used to deadlock with a task of the previous test still holding row locks on
        # the worker. So: wait until the worker is idle, then TRUNCATE. A retry whose countdown
        # fires at that very moment can still take a lock: then wait for it as well, and again.
        await wait_for_idle_worker(app.state.redis)
        try:
            async with app.state.engine.begin() as connection:
                await connection.execute(text(f"TRUNCATE {tables} CASCADE"))
            break
        except DBAPIError:
            if attempt == 2:
                raise
    await app.state.redis.flushdb()
    MAILBOX.messages.clear()
    MAILBOX.refusals = MAILBOX.refused = 0
    FCM.reset()
    OPENAI.reset()
    GOOGLE.reset()
    APPLE.reset()
    app.dependency_overrides.clear()
    yield
    app.dependency_overrides.clear()
    TestClock.uninstall()  # the system clock again


@pytest.fixture
async def renewed_pools(app: Any) -> AsyncIterator[None]:
    """For a test that kills the app's PostgreSQL connections: afterwards the app's pools start
    over, so the next test on this worker (whichever file it is in) meets no connection the kill
    left behind (the one 503 it may cause is the killing test's subject, not the next one's)."""
    yield
    await app.state.engine.dispose()
    await app.state.read_pool.expire_connections()


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
def google() -> FakeIdentityProvider:
    return GOOGLE


@pytest.fixture
def apple() -> FakeApple:
    return APPLE


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
