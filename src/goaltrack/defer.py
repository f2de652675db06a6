"""Background work is queued on the session and sent to the broker only after the commit.

A task therefore never runs against a row that does not exist yet, and a rolled-back request
sends nothing. Tasks are named, not imported (`defer(session, "auth.send_password_reset", ...)`):
a service never imports a tasks module, so only tasks depend on services. Work that must not be
lost when the broker is down is deferred through the outbox (`worker.outbox.defer_durably`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger(__name__)

_DEFERRED = "deferred_tasks"
# The session's `info` key under which the sessionmaker keeps the Celery app that publishes.
PRODUCER = "task_producer"


class Producer(Protocol):
    def send_task(self, name: str, args: tuple[Any, ...] = ..., **options: Any) -> Any: ...


def defer(session: AsyncSession, name: str, *args: Any) -> None:
    """Send task `name(*args)` once this session's transaction has committed."""
    session.info.setdefault(_DEFERRED, []).append((name, args, None))


def defer_sent_by_id(session: AsyncSession, name: str, args: Any, task_id: uuid.UUID) -> None:
    """Defer with a Celery task id (a durable task's outbox row id travels as its task id)."""
    session.info.setdefault(_DEFERRED, []).append((name, args, task_id))


def discard_deferred(session: AsyncSession) -> None:
    session.info.pop(_DEFERRED, None)


def deferred_mark(session: AsyncSession) -> int:
    """How many tasks the session has deferred so far (see `discard_deferred_since`)."""
    return len(session.info.get(_DEFERRED, ()))


def discard_deferred_since(session: AsyncSession, mark: int) -> None:
    """Forget the tasks deferred after `mark`: their work was rolled back to a savepoint."""
    del session.info.get(_DEFERRED, [])[mark:]


def has_deferred(session: AsyncSession) -> bool:
    return bool(session.info.get(_DEFERRED))


def send_deferred(session: AsyncSession) -> None:
    deferred = session.info.pop(_DEFERRED, [])
    if not deferred:
        return
    producer: Producer = session.info[PRODUCER]
    for name, args, outbox_id in deferred:
        _send(producer, name, args, outbox_id)


def _send(producer: Producer, name: str, args: Any, outbox_id: uuid.UUID | None) -> None:
    try:
        options = {"task_id": str(outbox_id)} if outbox_id else {}
        producer.send_task(name, args=tuple(args), **options)
    except Exception:
        # The broker is down: the outbox row (where the work has one) is picked up by the sweep.
        logger.exception("could not enqueue %s", name)
