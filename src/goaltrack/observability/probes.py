"""The gauges read at scrape time: the DB pools (this process's), the Celery queue, the outbox backlog and the
scheduler's lag. Each probe is bounded and fails alone (goaltrack_metrics_probe_success).

The backlog and lag probes read domain tables (task_outbox, file_deletions, goal_reminders) as
raw SQL on purpose: observability is kernel (.importlinter) and may not import the domains'
models, and these statements are the whole of what it needs to know about them. Their indexes
are checked by tests/test_observability.py (EXPLAIN), which fails when a table or index moves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from goaltrack.clock import utcnow
from goaltrack.observability.metrics import (
    DB_POOL_CHECKED_OUT,
    DB_POOL_SIZE,
    DB_READ_POOL_CHECKED_OUT,
    DB_READ_POOL_SIZE,
)

# The single module's logger name, kept for every part of the package (see __init__).
logger = logging.getLogger("goaltrack.observability")

# Scrape-time probes: each bounded, each failing alone.
PROBE_TIMEOUT_SECONDS = 2.0
# How often each API process records its pools' gauges between scrapes.
POOL_REFRESH_SECONDS = 5.0
# A backlog count stops here: past it the number only says "very large", and counting costs.
BACKLOG_COUNT_CAP = 100_000
CELERY_QUEUE = "celery"
# Each uses an index: ix_task_outbox_not_before, ix_file_deletions_not_before, and the partial
# ix_goal_reminders_next_fire_at (its predicate, `next_fire_at IS NOT NULL`, is repeated).
OUTBOX_DUE_SQL = (
    "SELECT count(*) FROM (SELECT 1 FROM task_outbox WHERE not_before <= :now LIMIT :cap) AS due"
)
FILE_DELETIONS_DUE_SQL = (
    "SELECT count(*) FROM (SELECT 1 FROM file_deletions WHERE not_before <= :now LIMIT :cap) AS due"
)
OLDEST_DUE_REMINDER_SQL = (
    "SELECT min(next_fire_at) FROM goal_reminders"
    " WHERE next_fire_at IS NOT NULL AND next_fire_at <= :now"
)


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    run: Callable[[Any], Awaitable[list[Metric]]]


async def _db_value(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    """One statement under a statement_timeout (SET LOCAL: the pooled connection keeps none)."""
    async with engine.connect() as connection:
        await connection.execute(
            text("SELECT set_config('statement_timeout', :ms, true)"),
            {"ms": str(int(PROBE_TIMEOUT_SECONDS * 1000))},
        )
        return (await connection.execute(text(sql), params)).scalar()


async def _queue_length(state: Any) -> list[Metric]:
    family = GaugeMetricFamily(
        "goaltrack_celery_queue_length",
        "Tasks waiting in the broker (Redis list), by queue.",
        labels=["queue"],
    )
    family.add_metric([CELERY_QUEUE], float(await state.redis.llen(CELERY_QUEUE)))
    return [family]


async def _backlog(state: Any) -> list[Metric]:
    now = utcnow()
    family = GaugeMetricFamily(
        "goaltrack_outbox_backlog",
        f"Rows due and not yet processed, by table (counted up to {BACKLOG_COUNT_CAP}).",
        labels=["table"],
    )
    for table, sql in (("task_outbox", OUTBOX_DUE_SQL), ("file_deletions", FILE_DELETIONS_DUE_SQL)):
        family.add_metric(
            [table], float(await _db_value(state.engine, sql, now=now, cap=BACKLOG_COUNT_CAP))
        )
    return [family]


async def _scheduler_lag(state: Any) -> list[Metric]:
    now = utcnow()
    oldest: datetime | None = await _db_value(state.engine, OLDEST_DUE_REMINDER_SQL, now=now)
    lag = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return [
        GaugeMetricFamily(
            "goaltrack_scheduler_lag_seconds",
            "How long the oldest due reminder has been waiting for the scheduler (0: none due).",
            value=lag,
        )
    ]


PROBES: Sequence[Probe] = (
    Probe("celery_queue", _queue_length),
    Probe("outbox_backlog", _backlog),
    Probe("scheduler_lag", _scheduler_lag),
)


def record_pool_metrics(state: Any) -> None:
    """This process's pools into its gauges (metrics.DB_POOL_*): at each scrape it answers, and
    every POOL_REFRESH_SECONDS in each API process (install.py), so that every process reports."""
    pool = getattr(getattr(state, "engine", None), "pool", None)
    if isinstance(pool, QueuePool):
        DB_POOL_CHECKED_OUT.set(pool.checkedout())
        DB_POOL_SIZE.set(pool.size())
    read_pool: asyncpg.Pool | None = getattr(state, "read_pool", None)
    if read_pool is not None:
        DB_READ_POOL_CHECKED_OUT.set(read_pool.get_size() - read_pool.get_idle_size())
        DB_READ_POOL_SIZE.set(read_pool.get_size())


async def scrape_metrics(state: Any, probes: Iterable[Probe] = PROBES) -> list[Metric]:
    """The gauges read at scrape time from the app's state (engine, redis). A probe that fails
    or takes longer than PROBE_TIMEOUT_SECONDS is left out, and says so in
    goaltrack_metrics_probe_success; it never fails the scrape."""
    record_pool_metrics(state)
    metrics: list[Metric] = []
    success = GaugeMetricFamily(
        "goaltrack_metrics_probe_success",
        "Whether the scrape-time probe answered (1) or failed or timed out (0).",
        labels=["probe"],
    )
    for probe in probes:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS + 0.5):
                metrics += await probe.run(state)
        except Exception as exc:
            logger.warning("metrics probe %s failed: %s", probe.name, type(exc).__name__)
            success.add_metric([probe.name], 0)
        else:
            success.add_metric([probe.name], 1)
    return [*metrics, success]


def scrape_deadline() -> float:
    """How long a whole scrape of the probes may take (a thread waiting for one, endpoint.py)."""
    return len(PROBES) * (PROBE_TIMEOUT_SECONDS + 1)
