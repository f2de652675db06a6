"""How a task is declared: an `async def` taking ids, named and (for periodic jobs) scheduled
where it is defined.

    @task("files.process_file_deletions", every=TICK)
    async def process_file_deletions() -> int: ...

`goaltrack.celery_app` registers every declared task on the Celery app it builds, wrapping it so
that it runs on the worker thread's event loop, retries when it raises `RetryLater`, and (for a
durable task, see `worker.outbox.defer_durably`) deletes its outbox row once done, or leaves it
waiting when the task raises `Hold`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeVar

TICK: Final = "tick"  # every SCHEDULER_INTERVAL_SECONDS
Every = Literal["tick"] | timedelta

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class RetryLater(Exception):
    """Raised by a task: run it again in `countdown` seconds (up to its `max_retries`)."""

    def __init__(self, countdown: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {countdown:.0f} s")
        self.countdown = countdown


class Hold(Exception):
    """Raised by a durable task: not now, and not a failure either. Its outbox row waits until
    `until` and the sweep sends the task again then (a push in the user's quiet hours); its
    retries and resends are not counted."""

    def __init__(self, until: datetime, reason: str = "") -> None:
        super().__init__(reason or f"held until {until.isoformat()}")
        self.until = until


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    run: Callable[..., Awaitable[Any]]
    every: Every | None = None
    max_retries: int = 0
    # Sent with `outbox.defer_durably`: the task deletes its outbox row once done.
    durable: bool = False
    # Celery options (time limits); a task past `soft_time_limit` gets SoftTimeLimitExceeded.
    options: dict[str, Any] = field(default_factory=dict)


TASKS: dict[str, TaskSpec] = {}


def task(
    name: str,
    *,
    every: Every | None = None,
    max_retries: int = 0,
    durable: bool = False,
    **options: Any,
) -> Callable[[F], F]:
    def register(run: F) -> F:
        if name in TASKS and TASKS[name].run is not run:
            raise ValueError(f"task {name!r} is declared twice")
        TASKS[name] = TaskSpec(name, run, every, max_retries, durable, options)
        return run

    return register


def backoff(retries: int, *, base: float = 5, cap: float = 600, jitter: bool = False) -> float:
    """The one retry backoff, in seconds: `base` doubling with each retry (from 0), up to `cap`.
    With `jitter` each wait is drawn from the upper half of its step, so that a burst that failed
    together does not retry together (push). Tasks raise `RetryLater(backoff(...))`; the file
    deletions' sweep waits as long between its attempts."""
    # The exponent is bounded first: a row retried for weeks (file deletions never give up)
    # must not overflow a float.
    step = min(cap, base * 2.0 ** min(retries, 32))
    if jitter:
        return step / 2 + random.uniform(0, step / 2)  # noqa: S311 -- not a secret
    return step
