"""What a running task uses: the worker thread's event loop, a session that owns the task's
transaction, the S3 client, and facts about the current attempt."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from goaltrack.config import Settings
from goaltrack.db import create_engine, create_sessionmaker
from goaltrack.defer import (
    PRODUCER,
    UNSENT,
    Producer,
    discard_deferred,
    reschedule_unsent,
    send_deferred,
)
from goaltrack.storage import Storage
from goaltrack.worker import outbox

T = TypeVar("T")

# PostgreSQL connections each task process's engine keeps (the guides' connection count uses it).
TASK_POOL_SIZE = 2


@dataclass(frozen=True, slots=True)
class Attempt:
    """The task being run: its retry count and, for a durable task, its outbox row."""

    retries: int
    max_retries: int
    outbox_id: uuid.UUID | None

    @property
    def is_last(self) -> bool:
        return self.retries >= self.max_retries


class _WorkerRuntime(threading.local):
    """One event loop, connection pool and S3 client per worker thread, reused across tasks."""

    loop: asyncio.AbstractEventLoop | None = None
    sessionmaker: async_sessionmaker[AsyncSession] | None = None
    storage: Storage | None = None
    settings: Settings | None = None
    producer: Producer | None = None
    attempt: Attempt | None = None


_runtime = _WorkerRuntime()


def bind(settings: Settings, producer: Producer, attempt: Attempt) -> None:
    """Called by the task wrapper before each run (a worker thread serves one Celery app)."""
    if _runtime.settings is not settings:
        _runtime.settings = settings
        _runtime.sessionmaker = None
        _runtime.storage = None
    _runtime.producer = producer
    _runtime.attempt = attempt


def run_async(make_coroutine: Callable[[], Awaitable[T]]) -> T:
    if _runtime.loop is None or _runtime.loop.is_closed():
        _runtime.loop = asyncio.new_event_loop()
    return _runtime.loop.run_until_complete(make_coroutine())


def task_settings() -> Settings:
    assert _runtime.settings is not None, "not inside a task"
    return _runtime.settings


def current_attempt() -> Attempt:
    assert _runtime.attempt is not None, "not inside a task"
    return _runtime.attempt


@asynccontextmanager
async def task_session() -> AsyncIterator[AsyncSession]:
    """A task's transaction: commit on success, roll back on error, then send deferred tasks."""
    if _runtime.sessionmaker is None:
        engine = create_engine(
            task_settings(),
            application_name="goaltrack-worker",
            pool_size=TASK_POOL_SIZE,
            pre_ping=True,
        )
        _runtime.sessionmaker = create_sessionmaker(engine)
    assert _runtime.producer is not None
    info = {PRODUCER: _runtime.producer, UNSENT: outbox.resend_unsent}
    async with _runtime.sessionmaker(info=info) as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            discard_deferred(session)
            raise
        await session.commit()
    # On the worker's own thread: blocking here holds only this task.
    await reschedule_unsent(session, send_deferred(session))


async def in_batches(batch: int, step: Callable[[AsyncSession], Awaitable[int]]) -> int:
    """Run `step` (one batch: how many rows it handled) in a transaction of its own, again until a
    batch comes back short; the total. Each batch commits before the next starts, so a backlog
    never holds one long transaction or its locks."""
    total = 0
    while True:
        async with task_session() as session:
            done = await step(session)
        total += done
        if done < batch:
            return total


async def task_storage() -> Storage:
    """The worker thread's S3 client, opened once."""
    if _runtime.storage is None:
        storage = Storage(task_settings())
        await storage.start()
        _runtime.storage = storage
    return _runtime.storage
