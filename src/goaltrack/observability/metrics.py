"""The Prometheus instruments, and this process's view of them (`process_metrics`).

Import-light on purpose: the domains that count their outcomes (push, AI) and the Celery worker
import this module, not the ASGI or probe machinery."""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.registry import Collector

# Read once at import, as prometheus-client itself does: the directory must be set before start.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ

HTTP_REQUEST_DURATION = Histogram(
    "goaltrack_http_request_duration_seconds",
    "HTTP request latency, by method, route template and status code.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_REQUESTS_IN_PROGRESS = Gauge(
    "goaltrack_http_requests_in_progress",
    "HTTP requests being served.",
    multiprocess_mode="livesum",
)
CELERY_TASKS = Counter(
    "goaltrack_celery_tasks",
    "Celery task runs by task and final state (SUCCESS, FAILURE, RETRY, ...).",
    ["task", "state"],
)
CELERY_TASK_FAILURES = Counter(
    "goaltrack_celery_task_failures",
    "Celery task runs that raised, by task and exception type.",
    ["task", "exception"],
)
CELERY_TASK_DURATION = Histogram(
    "goaltrack_celery_task_duration_seconds",
    "Celery task run time, by task.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
PUSH_RESULTS = Counter(
    "goaltrack_push_results",
    "FCM sends by outcome (sent, unregistered, unavailable, ...).",
    ["outcome"],
)
AI_RUNS = Counter("goaltrack_ai_runs", "Finished AI plan runs by outcome.", ["outcome"])
for _outcome in ("done", "failed"):
    AI_RUNS.labels(_outcome)

# Each process's own pools, set by that process (probes.record_pool_metrics): in multiprocess mode
# every live process's value is exposed with its `pid` label, whichever process answers the
# scrape; a process that ended (mark_process_dead) drops out.
DB_POOL_CHECKED_OUT = Gauge(
    "goaltrack_db_pool_checked_out",
    "Database connections in use (per process).",
    multiprocess_mode="liveall",
)
DB_POOL_SIZE = Gauge(
    "goaltrack_db_pool_size",
    "Database connections the pool keeps (per process).",
    multiprocess_mode="liveall",
)
DB_READ_POOL_CHECKED_OUT = Gauge(
    "goaltrack_db_read_pool_checked_out",
    "Hot-read connections in use (per process's asyncpg pool).",
    multiprocess_mode="liveall",
)
DB_READ_POOL_SIZE = Gauge(
    "goaltrack_db_read_pool_size",
    "Hot-read connections open (per process's asyncpg pool; opened on demand).",
    multiprocess_mode="liveall",
)
BEAT_LAST_TICK = Gauge(
    "goaltrack_beat_last_tick_timestamp_seconds",
    "When beat last ran its scheduler loop (Unix time): a stuck beat stops moving it.",
    multiprocess_mode="max",
)
# Task runs end in one of these (Celery's states): each task's children exist from the start, so
# a failure rate reads 0, not "no data", before the first failure.
TASK_STATES = ("SUCCESS", "FAILURE", "RETRY")


def initialise_task_metrics(task_names: Iterable[str]) -> None:
    """Zero-valued children for each task: the dashboard and alerts have data on a fresh stack."""
    for name in task_names:
        CELERY_TASK_DURATION.labels(name)
        for state in TASK_STATES:
            CELERY_TASKS.labels(name, state)


def process_metrics() -> Collector:
    """This process's metrics; in multiprocess mode, those of every process of the directory."""
    if not MULTIPROCESS:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def mark_process_dead(pid: int | None = None) -> None:
    """In multiprocess mode, drop an ended process's live gauges (requests in flight)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]
