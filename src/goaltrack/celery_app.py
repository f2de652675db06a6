"""The worker's composition root: the Celery app, with every declared task registered on it.

`create_celery(settings)` is called by the worker and beat entry points, and by the API through
`create_publisher` (it only publishes, each publish bounded in time). Tasks are declared with
`worker.registry.task` in their domain's `tasks.py`, listed once in TASK_MODULES; a periodic
task's schedule is declared with the task.
"""

from __future__ import annotations

import importlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack import redaction, subscriptions
from goaltrack.clock import countdown, utcnow
from goaltrack.config import Settings
from goaltrack.observability.worker_signals import install_celery_signals
from goaltrack.redis_client import broker_options, broker_url
from goaltrack.worker import outbox, runtime
from goaltrack.worker.registry import TASKS, TICK, Hold, RetryLater, TaskSpec

logger = logging.getLogger(__name__)

BEAT_MAX_LOOP_SECONDS = 60

TASK_MODULES = (
    "goaltrack.worker.tasks",
    "goaltrack.auth.tasks",
    "goaltrack.account.tasks",
    "goaltrack.files.tasks",
    "goaltrack.notifications.tasks",
    "goaltrack.scheduling.tasks",
    "goaltrack.achievements.tasks",
    "goaltrack.ai.tasks",
    "goaltrack.sync.tasks",
)


def create_celery(settings: Settings) -> Celery:
    for module in TASK_MODULES:
        importlib.import_module(module)
    subscriptions.install()  # a goal completed by a task raises the same events as in a request
    redaction.install()
    # Request ids into the tasks a request queues; task metrics, WORKER_METRICS_PORT, Sentry.
    install_celery_signals(settings)
    app = Celery("goaltrack", set_as_current=False)
    app.conf.update(
        broker_url=broker_url(settings),
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # A task is acknowledged after it ran, and re-queued if its worker process dies mid-way.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": 3600, **broker_options(settings)},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
        # Its heartbeat (observability.beat) moves at least once a minute, even with nothing due.
        beat_scheduler="goaltrack.observability.beat:HeartbeatScheduler",
        beat_max_loop_interval=BEAT_MAX_LOOP_SECONDS,
    )
    for spec in TASKS.values():
        _register(app, settings, spec)
    return app


def create_publisher(settings: Settings) -> Celery:
    """The API's Celery app, which only publishes: a publish waits for the broker at most
    BROKER_TIMEOUT_SECONDS, once. Without socket timeouts a publish to a hung broker (paused, or
    gone without closing the connection) waits as long as the broker does, and the request with
    it; a task that could not be published is left to the outbox (defer.send_deferred). Workers
    and beat keep waiting instead: their consumer is not built for socket timeouts (kombu drops
    into a reconnect that can stall), and nothing answers to a client while they wait."""
    app = create_celery(settings)
    timeout = settings.broker_timeout_seconds
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    app.conf.task_publish_retry_policy = {"max_retries": 0}
    return app


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Beat only ticks: PostgreSQL holds what is due, so a tick that is missed or repeated is
    harmless."""
    return {
        spec.name: {
            "task": spec.name,
            "schedule": (
                settings.scheduler_interval_seconds
                if spec.every == TICK
                else spec.every.total_seconds()
            ),
        }
        for spec in TASKS.values()
        if spec.every is not None
    }


def _register(app: Celery, settings: Settings, spec: TaskSpec) -> None:
    def run(task: Any, *args: Any) -> Any:
        attempt = runtime.Attempt(
            retries=task.request.retries,
            max_retries=spec.max_retries,
            outbox_id=uuid.UUID(task.request.id) if spec.durable else None,
        )
        runtime.bind(settings, app, attempt)
        try:
            result = runtime.run_async(lambda: spec.run(*args))
        except RetryLater as exc:
            if attempt.is_last:
                logger.error("%s gave up after %d retries: %s", spec.name, attempt.retries, exc)
                _forget(attempt)
                return None
            _postpone(attempt, utcnow() + timedelta(seconds=exc.countdown))
            raise task.retry(countdown=countdown(exc.countdown), exc=exc) from exc
        except Hold as exc:
            _hold(spec, attempt, exc.until)
            return None
        _forget(attempt)
        return result

    # Options may depend on settings (a time limit from AI_TIMEOUT_SECONDS).
    options = {k: v(settings) if callable(v) else v for k, v in spec.options.items()}
    # Not shared: every app built by this factory registers its own wrapper.
    app.task(name=spec.name, bind=True, shared=False, max_retries=spec.max_retries, **options)(run)


def _forget(attempt: runtime.Attempt) -> None:
    """A durable task is done (or given up): its outbox row goes."""
    _in_outbox(attempt, outbox.complete)


def _hold(spec: TaskSpec, attempt: runtime.Attempt, until: datetime) -> None:
    """The task waits until `until` in its outbox row: the sweep sends it then."""
    if not _in_outbox(attempt, lambda session, row: outbox.hold(session, row, until)):
        logger.error("%s cannot wait until %s: it is not durable", spec.name, until.isoformat())


def _postpone(attempt: runtime.Attempt, until: datetime) -> None:
    """A durable task retries at `until`: the sweep must not send it again before then."""
    _in_outbox(attempt, lambda session, row: outbox.postpone(session, row, until))


def _in_outbox(
    attempt: runtime.Attempt, change: Callable[[AsyncSession, uuid.UUID], Awaitable[None]]
) -> bool:
    """Apply `change` to a durable task's outbox row, in a transaction of its own; False for a
    task that has none."""
    if (outbox_id := attempt.outbox_id) is None:
        return False

    async def apply() -> None:
        async with runtime.task_session() as session:
            await change(session, outbox_id)

    runtime.run_async(apply)
    return True
