"""The Celery application, and the runtime tasks use to run async code with their own session.

Tasks take ids, open their own session, commit or roll back in one wrapper, and are idempotent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from celery import Celery
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from goaltrack.config import Settings, get_settings
from goaltrack.db import create_engine, create_sessionmaker
from goaltrack.storage import Storage
from goaltrack.tasks_queue import discard_deferred, send_deferred

T = TypeVar("T")

TASK_MODULES = ["goaltrack.auth.tasks", "goaltrack.account.tasks", "goaltrack.files.tasks"]


def create_celery(settings: Settings) -> Celery:
    app = Celery("goaltrack", include=TASK_MODULES)
    app.conf.update(
        broker_url=settings.redis_url,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # A task is acknowledged after it ran, and re-queued if its worker process dies mid-way.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": 3600},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
    )
    return app


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Beat only ticks: PostgreSQL holds what is due, so a tick that is missed or repeated is harmless."""
    every = settings.scheduler_interval_seconds
    tasks = (
        "goaltrack.files.tasks.process_file_deletions",
        "goaltrack.account.tasks.purge_deleted_accounts",
        "goaltrack.account.tasks.maintain_exports",
    )
    return {name.rsplit(".", 1)[1]: {"task": name, "schedule": every} for name in tasks}


celery_app = create_celery(get_settings())


class _WorkerRuntime(threading.local):
    """One event loop and one connection pool per worker thread, reused across tasks."""

    loop: asyncio.AbstractEventLoop | None = None
    sessionmaker: async_sessionmaker[AsyncSession] | None = None
    storage: Storage | None = None


_runtime = _WorkerRuntime()


def run_async(make_coroutine: Callable[[], Awaitable[T]]) -> T:
    if _runtime.loop is None or _runtime.loop.is_closed():
        _runtime.loop = asyncio.new_event_loop()
    return _runtime.loop.run_until_complete(make_coroutine())


@asynccontextmanager
async def task_session() -> AsyncIterator[AsyncSession]:
    """A task's transaction: commit on success, roll back on error, then send deferred tasks."""
    if _runtime.sessionmaker is None:
        _runtime.sessionmaker = create_sessionmaker(
            create_engine(
                get_settings(), application_name="goaltrack-worker", pool_size=2, pre_ping=True
            )
        )
    async with _runtime.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            discard_deferred(session)
            raise
        await session.commit()
    send_deferred(session)


async def task_storage() -> Storage:
    """The worker thread's S3 client, opened once."""
    if _runtime.storage is None:
        storage = Storage(get_settings())
        await storage.start()
        _runtime.storage = storage
    return _runtime.storage


def backoff(retries: int, base: float = 5, cap: float = 600) -> int:
    """Exponential backoff in seconds for Celery's `countdown`."""
    return int(min(cap, base * 2**retries))
