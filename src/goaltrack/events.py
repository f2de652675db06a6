"""In-process domain events, handled inside the transaction that raised them.

A domain announces what happened (`goals.events.GoalCompleted`); other domains (achievements,
notifications) handle it and write their rows in the same transaction, so an event is never
half-applied. Who handles what is one table, `goaltrack.subscriptions`, installed by the API
and the worker alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

Handler = Callable[[AsyncSession, Any], Awaitable[None]]
_subscriptions: Mapping[type[Any], Sequence[Handler]] = {}


def install(subscriptions: Mapping[type[Any], Sequence[Handler]]) -> None:
    global _subscriptions
    _subscriptions = subscriptions


async def emit(session: AsyncSession, event: Any) -> None:
    for handler in _subscriptions.get(type(event), ()):
        await handler(session, event)
