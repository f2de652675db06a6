"""Observability: the request id, structured logs, Prometheus metrics and (optional) Sentry.

- Request id: every HTTP response carries `X-Request-ID` (the client's, when it sent a valid one:
  visible ASCII, at most 128 characters; else a new uuid4 hex). It is bound to the request's
  context (`current_request_id()`), so every log record of the request has it (through
  `RequestContextFilter`), every problem+json body has it (errors.problem), and every task the
  request queues carries it in its message headers and binds it again in the worker.
- Logs: `logging_config(format)` (cli.py) installs one stderr handler with `RequestContextFilter`
  and either `TextFormatter` or `JsonFormatter` (one JSON object per line).
- Metrics (prometheus-client): request latency by route template and status, requests in flight,
  and at scrape time the DB pool, the Celery queue, the outbox backlog and the scheduler's lag;
  Celery task counts, failures and durations in the worker (`install_celery_signals`); push and
  AI outcomes (`PUSH_RESULTS`, `AI_RUNS`, incremented by their domains).
  `/metrics` is served by the API only when METRICS_TOKEN is set, to `Authorization: Bearer
  <METRICS_TOKEN>`; METRICS_PORT adds an unauthenticated listener (METRICS_BIND_ADDRESS), and
  WORKER_METRICS_PORT one in the Celery worker.
  Processes that share their metrics (uvicorn --workers N, Celery's prefork pool) need
  prometheus-client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR set to an empty directory
  (per container, e.g. a tmpfs) before start. Without it each process counts alone.

Wiring: main.py calls `install_observability(app, settings)` once every router is included;
celery_app.create_celery calls `install_celery_signals(settings)`.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
from fastapi.routing import iter_route_contexts
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goaltrack.clock import utcnow
from goaltrack.config import AppEnv, Settings

logger = logging.getLogger(__name__)

LogFormat = Literal["text", "json"]

# --------------------------------------------------------------------------------------------
# Request id and the log context
# --------------------------------------------------------------------------------------------

REQUEST_ID_HEADER = "X-Request-ID"
# The Celery message header that carries the request id into the tasks a request queued.
TASK_REQUEST_ID_HEADER = "goaltrack_request_id"
_VALID_REQUEST_ID = re.compile(r"[!-~]{1,128}")  # visible ASCII: no spaces, no control characters

_request_id: ContextVar[str | None] = ContextVar("goaltrack_request_id", default=None)
_task: ContextVar[tuple[str, str] | None] = ContextVar("goaltrack_task", default=None)


def current_request_id() -> str | None:
    """The id of the request (or of the request that queued the task) being served, if any."""
    return _request_id.get()


def valid_request_id(value: str | None) -> str | None:
    """`value` when it may be used as a request id, else None."""
    return value if value is not None and _VALID_REQUEST_ID.fullmatch(value) else None


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestContextFilter(logging.Filter):
    """Adds `request_id`, `task_name` and `task_id` (None when there is none) to every record.

    Put it on handlers (not loggers: a logger's filters do not see propagated records); it runs
    in the thread that logs, where the request's or the task's context is."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        task = _task.get()
        record.task_name, record.task_id = task if task is not None else (None, None)
        return True


def _context_fields(record: logging.LogRecord) -> dict[str, str]:
    fields = {}
    for name in ("request_id", "task_name", "task_id"):
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = str(value)
    return fields


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request_id=… task_name=…]: message` (the context part when any)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        fields = _context_fields(record)
        context = " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]" if fields else ""
        return self._fmt % {**record.__dict__, "context": context} if self._fmt else ""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id, and
    task_name/task_id inside a task, exception (the traceback) and stack when the record has
    them."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for name in ("task_name", "task_id"):
            if (value := getattr(record, name, None)) is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def resolve_log_format(settings: Settings) -> LogFormat:
    """LOG_FORMAT when set; otherwise json in production, text elsewhere."""
    if settings.log_format is not None:
        return settings.log_format
    return "json" if settings.app_env is AppEnv.production else "text"


def logging_config(log_format: LogFormat, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` document: one stderr handler on the root logger, with the
    request context, in `log_format`; uvicorn's loggers propagate to it (uvicorn.run takes this
    as `log_config`, and applies it in every worker process)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": f"{__name__}.RequestContextFilter"}},
        "formatters": {
            "text": {"()": f"{__name__}.TextFormatter"},
            "json": {"()": f"{__name__}.JsonFormatter"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": log_format,
                "filters": ["context"],
            }
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

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

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # no route matched (404s): never the raw path

# Scrape-time probes: each bounded, each failing alone.
PROBE_TIMEOUT_SECONDS = 2.0
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


def process_metrics() -> Collector:
    """This process's metrics; in multiprocess mode, those of every process of the directory."""
    if not MULTIPROCESS:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


class ObservabilityMiddleware:
    """Pure ASGI, outermost: binds the request id, answers it in `X-Request-ID`, and measures
    the request (latency by route template and status, requests in flight)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._plain_routes: dict[Any, str] = {}

    def _route_template(self, scope: Scope) -> str:
        """The matched route's template (`/goals/{goal_id}`), never the raw path. FastAPI puts
        its APIRoute in scope["route"]; for plain Starlette routes (/docs, /metrics) only the
        endpoint is in the scope: its template is looked up in the app's routes."""
        template = getattr(scope.get("route"), "path_format", None)
        endpoint = scope.get("endpoint")
        if template is None and endpoint is not None:
            if endpoint not in self._plain_routes and "app" in scope:
                self._plain_routes = {
                    context.original_route.endpoint: context.path_format
                    for context in reversed(list(iter_route_contexts(scope["app"].routes)))
                    if hasattr(context.original_route, "endpoint") and context.path_format
                }
            template = self._plain_routes.get(endpoint)
        return template if isinstance(template, str) and template else UNMATCHED_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (value for name, value in scope["headers"] if name.lower() == b"x-request-id"), None
        )
        request_id = valid_request_id(incoming.decode("latin-1") if incoming else None)
        request_id = request_id or new_request_id()
        header = (b"x-request-id", request_id.encode())
        status = 500  # the app raised before answering
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"x-request-id"
                ]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = _request_id.set(request_id)
        HTTP_REQUESTS_IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            HTTP_REQUESTS_IN_PROGRESS.dec()
            method = scope["method"] if scope["method"] in _METHODS else "other"
            HTTP_REQUEST_DURATION.labels(method, self._route_template(scope), str(status)).observe(
                time.perf_counter() - started
            )
            _request_id.reset(token)


@dataclass(frozen=True, slots=True)
class _Probe:
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


PROBES: Sequence[_Probe] = (
    _Probe("celery_queue", _queue_length),
    _Probe("outbox_backlog", _backlog),
    _Probe("scheduler_lag", _scheduler_lag),
)


def _pool_metrics(state: Any) -> list[Metric]:
    metrics = _read_pool_metrics(getattr(state, "read_pool", None))
    pool = getattr(getattr(state, "engine", None), "pool", None)
    if not isinstance(pool, QueuePool):
        return metrics
    return [
        *metrics,
        GaugeMetricFamily(
            "goaltrack_db_pool_checked_out",
            "Database connections in use (this process's pool).",
            value=pool.checkedout(),
        ),
        GaugeMetricFamily(
            "goaltrack_db_pool_size",
            "Database connections the pool keeps (this process's pool).",
            value=pool.size(),
        ),
    ]


def _read_pool_metrics(pool: asyncpg.Pool | None) -> list[Metric]:
    if pool is None:
        return []
    return [
        GaugeMetricFamily(
            "goaltrack_db_read_pool_checked_out",
            "Hot-read connections in use (this process's asyncpg pool).",
            value=pool.get_size() - pool.get_idle_size(),
        ),
        GaugeMetricFamily(
            "goaltrack_db_read_pool_size",
            "Hot-read connections open (this process's asyncpg pool; opened on demand).",
            value=pool.get_size(),
        ),
    ]


async def scrape_metrics(state: Any, probes: Iterable[_Probe] = PROBES) -> list[Metric]:
    """The gauges read at scrape time from the app's state (engine, redis). A probe that fails
    or takes longer than PROBE_TIMEOUT_SECONDS is left out, and says so in
    goaltrack_metrics_probe_success; it never fails the scrape."""
    metrics = _pool_metrics(state)
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


class _Snapshot(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


async def render_metrics(state: Any) -> bytes:
    """The exposition text: the process's metrics, then the scrape-time gauges."""
    snapshot = _Snapshot(await scrape_metrics(state))
    return generate_latest(process_metrics()) + generate_latest(snapshot)


class _ThreadedApiMetrics(Collector):
    """For METRICS_PORT: prometheus-client's server thread runs the probes on the app's loop."""

    def __init__(self, state: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop

    def collect(self) -> Iterable[Metric]:
        yield from process_metrics().collect()
        future = asyncio.run_coroutine_threadsafe(scrape_metrics(self.state), self.loop)
        yield from future.result(timeout=len(PROBES) * (PROBE_TIMEOUT_SECONDS + 1))


def _bearer_matches(request: Request, token: bytes) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token)


def _metrics_endpoint(token: bytes) -> Callable[[Request], Awaitable[Response]]:
    async def metrics(request: Request) -> Response:
        if not _bearer_matches(request, token):
            raise HTTPException(
                401, "Missing or invalid metrics token.", headers={"WWW-Authenticate": "Bearer"}
            )
        return Response(await render_metrics(request.app.state), media_type=CONTENT_TYPE_LATEST)

    return metrics


def _start_metrics_server(port: int, address: str, registry: Collector) -> Any:
    """prometheus-client's HTTP server in a daemon thread; None when the port is taken (another
    process of this service serves it: the other uvicorn workers, in multiprocess mode)."""
    try:
        server, _ = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        logger.warning("metrics port %s:%d not opened: %s", address, port, exc)
        return None
    logger.info("metrics on http://%s:%d/metrics", address, port)
    return server


def install_observability(app: Any, settings: Settings) -> None:
    """Request ids, request metrics, `/metrics` (with METRICS_TOKEN), METRICS_PORT, Sentry.

    Call once every router is included. The middleware wraps the whole stack, outside
    Starlette's ServerErrorMiddleware, so that 500s carry the request id too."""
    if getattr(app.state, "observability_installed", False):
        return
    app.state.observability_installed = True
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: ObservabilityMiddleware(build_stack())

    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if token:
        app.add_route(
            "/metrics", _metrics_endpoint(token.encode()), ["GET"], include_in_schema=False
        )

    lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def with_metrics_port(application: Any) -> AsyncIterator[Any]:
        async with lifespan(application) as state:
            server = None
            if settings.metrics_port is not None:
                registry = _ThreadedApiMetrics(application.state, asyncio.get_running_loop())
                server = _start_metrics_server(
                    settings.metrics_port, settings.metrics_bind_address, registry
                )
            try:
                yield state
            finally:
                if server is not None:
                    server.shutdown()
                    server.server_close()
                if MULTIPROCESS:
                    multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    app.router.lifespan_context = with_metrics_port
    init_sentry(settings)
    _check_opentelemetry()


def _check_opentelemetry() -> None:
    """FastAPI exports its own OpenTelemetry traces, metrics and logs (OTLP over HTTP) when
    FASTAPI_OTEL_AUTO_CONFIGURE=true and the `fastapi[opentelemetry]` extra is installed: say so
    when an endpoint is configured without them, rather than export nothing in silence."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed"
            " (install fastapi[opentelemetry]); nothing is exported"
        )
    elif os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() != "true":
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set: set FASTAPI_OTEL_AUTO_CONFIGURE=true too"
            " for FastAPI to export to it"
        )


# --------------------------------------------------------------------------------------------
# Celery: request id propagation and task metrics (signals are global: connected once)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Running:
    started: float
    request_id: Token[str | None]
    task: Token[tuple[str, str] | None]


_running: dict[str, _Running] = {}
_celery_settings: Settings | None = None
_worker_server: Any = None


def _on_before_task_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = _request_id.get()
    if request_id is not None and headers is not None:
        headers.setdefault(TASK_REQUEST_ID_HEADER, request_id)


def _on_task_prerun(task_id: str, task: Any, **_: Any) -> None:
    request_id = valid_request_id(getattr(task.request, TASK_REQUEST_ID_HEADER, None))
    _running[task_id] = _Running(
        started=time.perf_counter(),
        request_id=_request_id.set(request_id),
        task=_task.set((task.name, task_id)),
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
        _task.reset(running.task)
        _request_id.reset(running.request_id)
    except ValueError:  # set in another context (a pool that runs prerun elsewhere)
        _task.set(None)
        _request_id.set(None)


def _on_task_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    name = getattr(sender, "name", None) or "unknown"
    CELERY_TASK_FAILURES.labels(name, type(exception).__name__).inc()


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    global _worker_server
    settings = _celery_settings
    if settings is None:
        return
    init_sentry(settings)
    if settings.worker_metrics_port is None or _worker_server is not None:
        return
    pool = getattr(sender, "pool_cls", None)
    if not MULTIPROCESS and "prefork" in str(getattr(pool, "__module__", pool)):
        logger.warning(
            "WORKER_METRICS_PORT with the prefork pool: tasks run in child processes, whose "
            "metrics reach this port only with PROMETHEUS_MULTIPROC_DIR set"
        )
    _worker_server = _start_metrics_server(
        settings.worker_metrics_port, settings.metrics_bind_address, process_metrics()
    )


def _on_worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    if MULTIPROCESS:
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


def _on_beat_init(**_: Any) -> None:
    if _celery_settings is not None:
        init_sentry(_celery_settings)


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
        signal.connect(
            handler, weak=False, dispatch_uid=f"goaltrack.observability.{handler.__name__}"
        )


# --------------------------------------------------------------------------------------------
# Sentry (optional: SENTRY_DSN)
# --------------------------------------------------------------------------------------------

_sentry_lock = threading.Lock()
_sentry_on = False


def _tag_request_id(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    if (request_id := _request_id.get()) is not None:
        event.setdefault("tags", {})["request_id"] = request_id
    return event


def init_sentry(settings: Settings) -> bool:
    """Sentry with its automatic integrations (FastAPI, Celery, SQLAlchemy, Redis, logging:
    ERROR records become events), no personal data, no tracing; once per process."""
    global _sentry_on
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else ""
    if not dsn:
        return False
    with _sentry_lock:
        if not _sentry_on:
            import sentry_sdk

            sentry_sdk.init(
                dsn=dsn,
                environment=settings.app_env.value,
                send_default_pii=False,
                traces_sample_rate=0.0,
                before_send=_tag_request_id,  # type: ignore[arg-type]
            )
            _sentry_on = True
    return True
