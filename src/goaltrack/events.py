"""In-process domain events, handled inside the transaction that raised them.

A domain announces what happened (`GoalCompleted`); other domains (achievements, notifications)
subscribe and write their rows in the same transaction, so an event is never half-applied.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class GoalCompleted:
    user_id: uuid.UUID
    goal_id: uuid.UUID


Handler = Callable[[AsyncSession, Any], Awaitable[None]]
_handlers: dict[type[Any], list[Handler]] = defaultdict(list)


def subscribe(event_type: type[Any], handler: Handler) -> None:
    _handlers[event_type].append(handler)


def unsubscribe(event_type: type[Any], handler: Handler) -> None:
    _handlers[event_type].remove(handler)


async def emit(session: AsyncSession, event: Any) -> None:
    for handler in list(_handlers[type(event)]):
        await handler(session, event)
