"""Background work is queued on the session and sent to the broker only after the commit.

A task therefore never runs against a row that does not exist yet, and a rolled-back request
sends nothing. Work that must not be lost when the broker is down also has a database record
(an outbox row) that a periodic task sweeps.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger(__name__)

_DEFERRED = "deferred_tasks"


class Sendable(Protocol):
    name: str

    def apply_async(self, args: tuple[Any, ...] = ..., **options: Any) -> Any: ...


def defer(session: AsyncSession, task: Sendable, *args: Any) -> None:
    """Send `task(*args)` once this session's transaction has committed."""
    session.info.setdefault(_DEFERRED, []).append((task, args))


def discard_deferred(session: AsyncSession) -> None:
    session.info.pop(_DEFERRED, None)


def send_deferred(session: AsyncSession) -> None:
    for task, args in session.info.pop(_DEFERRED, []):
        try:
            task.apply_async(args=args)
        except Exception:
            # The broker is down: the outbox row (where the work has one) is picked up by the sweep.
            logger.exception("could not enqueue %s", task.name)
