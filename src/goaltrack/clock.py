"""The current time, injectable: routes take `Now`; everything else (tasks, the scheduler) calls
`utcnow()`. Tests move time with `set_clock` (in-process API and worker alike) or override
`get_now` for a single request."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends


def _system_now() -> datetime:
    return datetime.now(UTC)


_source: Callable[[], datetime] = _system_now


def utcnow() -> datetime:
    return _source()


def set_clock(source: Callable[[], datetime] | None) -> None:
    """Replace the clock (None: back to the system's)."""
    global _source
    _source = source or _system_now


async def get_now() -> datetime:
    return utcnow()


Now = Annotated[datetime, Depends(get_now)]
