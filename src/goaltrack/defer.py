"""Background work is queued on the session and sent to the broker only after the commit.

A task therefore never runs against a row that does not exist yet, and a rolled-back request
sends nothing. Tasks are named, not imported (`defer(session, "auth.send_password_reset", ...)`):
a service never imports a tasks module, so only tasks depend on services. Work that must not be
lost when the broker is down is deferred through the outbox (`worker.outbox.defer_durably`).

In the API a publish waits for the broker at most BROKER_TIMEOUT_SECONDS and is not retried in
place (celery_app.create_publisher). What could not be published is handed to the session's
UNSENT handler: the outbox makes its rows due again within seconds. While the broker is failing,
one publish at a time tries it and the others give up at once, so a dead or hung broker costs a
request at most one timeout and holds one thread, not one per request. A non-durable task that
could not be published is lost: each has a recovery of its own (docs/operations.md).
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from kombu.exceptions import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.clock import utcnow

logger = logging.getLogger(__name__)

_DEFERRED = "deferred_tasks"
# The session's `info` keys under which the sessionmaker keeps the Celery app that publishes, and
# what to do with the outbox rows whose publish failed (`worker.outbox.resend_unsent`).
PRODUCER = "task_producer"
UNSENT = "unsent_handler"

UnsentHandler = Callable[[AsyncSession, list[uuid.UUID], datetime], Awaitable[None]]


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


class _Broker:
    """Whether publishing through one producer reaches its broker, as far as this process knows:
    while it does not, a single publish at a time (the probe) tries again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing = False
        self._probing = False

    def may_try(self) -> bool:
        with self._lock:
            if not self._failing:
                return True
            if self._probing:
                return False
            self._probing = True
            return True

    def answered(self, *, reached: bool) -> None:
        with self._lock:
            self._failing = not reached
            self._probing = False


_brokers: weakref.WeakKeyDictionary[Producer, _Broker] = weakref.WeakKeyDictionary()
_brokers_lock = threading.Lock()


def _broker_of(producer: Producer) -> _Broker:
    with _brokers_lock:
        broker = _brokers.get(producer)
        if broker is None:
            broker = _brokers[producer] = _Broker()
        return broker


def send_deferred(session: AsyncSession) -> list[uuid.UUID]:
    """Publish what the committed session deferred (blocking: call it off the event loop); the
    outbox ids of the tasks that could not be published for want of the broker (hand them to
    `reschedule_unsent`). After one such failure the rest are not tried: the broker is down."""
    deferred = session.info.pop(_DEFERRED, [])
    if not deferred:
        return []
    producer: Producer = session.info[PRODUCER]
    broker = _broker_of(producer)
    unsent: list[uuid.UUID] = []
    broker_down = False
    for name, args, outbox_id in deferred:
        if broker_down or not broker.may_try():
            broker_down = True
        else:
            broker_down = not _send(producer, broker, name, args, outbox_id)
        if not broker_down:
            continue
        if outbox_id is not None:
            unsent.append(outbox_id)
        else:
            logger.warning("%s was not sent: the broker is unavailable (no outbox row)", name)
    return unsent


def _send(
    producer: Producer, broker: _Broker, name: str, args: Any, outbox_id: uuid.UUID | None
) -> bool:
    """Publish one task: False when the broker could not be reached (or did not answer in time)."""
    reached = True
    try:
        options = {"task_id": str(outbox_id)} if outbox_id else {}
        producer.send_task(name, args=tuple(args), **options)
    except OperationalError as exc:
        reached = False
        logger.warning("could not enqueue %s: the broker is unavailable (%s)", name, exc)
    except Exception:
        # Not the broker's absence (a message that cannot be encoded): the row keeps its lease.
        logger.exception("could not enqueue %s", name)
    finally:
        broker.answered(reached=reached)  # whatever happened, this probe is over
    return reached


async def reschedule_unsent(session: AsyncSession, outbox_ids: list[uuid.UUID]) -> None:
    """Hand the outbox rows whose publish failed to the session's UNSENT handler, in a transaction
    of its own (the one that wrote them has committed). Should that fail too, the rows keep their
    lease: sent later, never lost."""
    if not outbox_ids:
        return
    handler: UnsentHandler | None = session.info.get(UNSENT)
    if handler is None:
        return
    try:
        async with session.begin():
            await handler(session, outbox_ids, utcnow())
    except Exception:
        logger.exception("could not reschedule %d unsent outbox rows", len(outbox_ids))
