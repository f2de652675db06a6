"""Celery's side: the request id carried from the request into the tasks it queued, task metrics,
the worker's and beat's metrics ports and Sentry in the worker and beat. Signals are global: connected once
per process (`install_celery_signals`, from celery_app.create_celery)."""

from __future__ import annotations

import logging
import time
from contextvars import Token
from dataclasses import dataclass
from typing import Any

from goaltrack.config import Settings
from goaltrack.observability.endpoint import start_metrics_server
from goaltrack.observability.metrics import (
    CELERY_TASK_DURATION,
    CELERY_TASK_FAILURES,
    CELERY_TASKS,
    MULTIPROCESS,
    initialise_task_metrics,
    mark_process_dead,
    process_metrics,
)
from goaltrack.observability.request_id import (
    TASK_REQUEST_ID_HEADER,
    request_id_var,
    task_var,
    valid_request_id,
)
from goaltrack.observability.sentry import init_sentry

# The single module's logger name, kept for every part of the package (see __init__).
logger = logging.getLogger("goaltrack.observability")


@dataclass(slots=True)
class _Running:
    started: float
    request_id: Token[str | None]
    task: Token[tuple[str, str] | None]


_running: dict[str, _Running] = {}
_celery_settings: Settings | None = None
_worker_server: Any = None
_beat_server: Any = None


def _on_before_task_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = request_id_var.get()
    if request_id is not None and headers is not None:
        headers.setdefault(TASK_REQUEST_ID_HEADER, request_id)


def _on_task_prerun(task_id: str, task: Any, **_: Any) -> None:
    request_id = valid_request_id(getattr(task.request, TASK_REQUEST_ID_HEADER, None))
    _running[task_id] = _Running(
        started=time.perf_counter(),
        request_id=request_id_var.set(request_id),
        task=task_var.set((task.name, task_id)),
    )


def _on_task_postrun(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    running = _running.pop(task_id, None)
    CELERY_TASKS.labels(task.name, state or "UNKNOWN").inc()
    if running is None:
        return
    elapsed = time.perf_counter() - running.started
    CELERY_TASK_DURATION.labels(task.name).observe(elapsed)
    logger.debug("task %s %s in %.3f s", task.name, state, elapsed)
    try:
        task_var.reset(running.task)
        request_id_var.reset(running.request_id)
    except ValueError:  # set in another context (a pool that runs prerun elsewhere)
        task_var.set(None)
        request_id_var.set(None)


def _on_task_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    name = getattr(sender, "name", None) or "unknown"
    CELERY_TASK_FAILURES.labels(name, type(exception).__name__).inc()


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    global _worker_server
    settings = _celery_settings
    if settings is None:
        return
    init_sentry(settings)
    tasks = getattr(getattr(sender, "app", None), "tasks", {})
    initialise_task_metrics(name for name in tasks if not name.startswith("celery."))
    if settings.worker_metrics_port is None or _worker_server is not None:
        return
    pool = getattr(sender, "pool_cls", None)
    if not MULTIPROCESS and "prefork" in str(getattr(pool, "__module__", pool)):
        logger.warning(
            "WORKER_METRICS_PORT with the prefork pool: tasks run in child processes, whose "
            "metrics reach this port only with PROMETHEUS_MULTIPROC_DIR set"
        )
    _worker_server = start_metrics_server(
        settings.worker_metrics_port, settings.metrics_bind_address, process_metrics()
    )


def _on_worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    mark_process_dead(pid)


def _on_beat_init(**_: Any) -> None:
    global _beat_server
    settings = _celery_settings
    if settings is None:
        return
    init_sentry(settings)
    if settings.beat_metrics_port is not None and _beat_server is None:
        _beat_server = start_metrics_server(
            settings.beat_metrics_port, settings.metrics_bind_address, process_metrics()
        )


def install_celery_signals(settings: Settings) -> None:
    """Connects the handlers once per process (later calls only update the settings)."""
    global _celery_settings
    from celery import signals

    _celery_settings = settings
    for signal, handler in (
        (signals.before_task_publish, _on_before_task_publish),
        (signals.task_prerun, _on_task_prerun),
        (signals.task_postrun, _on_task_postrun),
        (signals.task_failure, _on_task_failure),
        (signals.worker_init, _on_worker_init),
        (signals.worker_process_shutdown, _on_worker_process_shutdown),
        (signals.beat_init, _on_beat_init),
    ):
        # The uids as the single module spelled them: they only need to stay unique and stable.
        signal.connect(
            handler, weak=False, dispatch_uid=f"goaltrack.observability.{handler.__name__}"
        )
