"""The current time, injectable: routes take `Now`; everything else (tasks, the scheduler, the FCM
client's token cache) calls `utcnow()`. Tests move time with `set_clock` (in-process API and
worker alike) or override `get_now` for a single request.

A wait for something due later (a task's retry countdown) goes through `countdown()`: on the
system clock it is real seconds; a test clock given with `advance` moves forward instead, so the
real code path (a real worker retrying its task) runs without anyone sleeping."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends


def _system_now() -> datetime:
    return datetime.now(UTC)


_source: Callable[[], datetime] = _system_now
_advance: Callable[[float], None] | None = None


def utcnow() -> datetime:
    return _source()


def set_clock(
    source: Callable[[], datetime] | None, *, advance: Callable[[float], None] | None = None
) -> None:
    """Replace the clock (None: back to the system's). `advance(seconds)` moves `source` forward:
    with it, countdowns pass on this clock at once (see `countdown`)."""
    global _source, _advance
    _source = source or _system_now
    _advance = advance if source is not None else None


def countdown(seconds: float) -> float:
    """The real seconds to wait for something due `seconds` from now: `seconds` on the system
    clock; 0 on a test clock that can advance, which is moved `seconds` forward instead."""
    if _advance is None:
        return seconds
    _advance(seconds)
    return 0.0


async def get_now() -> datetime:
    return utcnow()


Now = Annotated[datetime, Depends(get_now)]
