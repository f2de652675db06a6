"""Observability: /metrics (token, route templates, scrape-time gauges that fail alone), the
request id (header, problem bodies, logs, tasks), JSON logs, Sentry, and the Prometheus files
under deploy/ (promtool; a real Prometheus scrapes the app once).

The apps here are built like main.py builds its own, plus `install_observability(app, settings)`
(idempotent: a no-op once main.py calls it itself)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import text

from goaltrack.clock import set_clock
from goaltrack.config import AppEnv, Settings, get_settings
from goaltrack.dev.localstack import free_port
from goaltrack.main import create_app
from goaltrack.observability import endpoint, logs, probes, sentry, worker_signals
from goaltrack.observability.install import install_observability
from goaltrack.observability.logs import (
    JsonFormatter,
    RequestContextFilter,
    TextFormatter,
    logging_config,
)
from goaltrack.observability.metrics import process_metrics
from goaltrack.observability.request_id import current_request_id, request_id_var
from helpers import Account, assert_problem, create_goal, installed, wait_until

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "goaltrack.json"
TOKEN = "metrics-" + uuid.uuid4().hex
HEX_ID = re.compile(r"[0-9a-f]{32}")


def _settings(**update: Any) -> Settings:
    return get_settings().model_copy(update=update)


def _observed_app(settings: Settings) -> Any:
    app = create_app(settings)
    install_observability(app, settings)
    return app


@pytest.fixture(scope="module")
async def obs_app() -> AsyncIterator[Any]:
    settings = _settings(metrics_token=SecretStr(TOKEN))
    app = _observed_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def obs_client(obs_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=obs_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def _scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def _samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def _value(exposition: str, name: str, **labels: str) -> float | None:
    return _samples(exposition).get((name, frozenset(labels.items())))


# --- /metrics: who may read it --------------------------------------------------------------


async def test_metrics_is_not_served_without_a_token() -> None:
    app = _observed_app(_settings(metrics_token=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}"}):
            assert_problem(await client.get("/metrics", headers=headers), 404, "not_found")
    assert "/metrics" not in app.openapi()["paths"]


async def test_metrics_refuses_a_missing_or_wrong_token(obs_client: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ):
        response = await obs_client.get("/metrics", headers=headers)
        assert_problem(response, 401, "not_authenticated")
        assert response.headers["www-authenticate"] == "Bearer"
        assert "goaltrack_" not in response.text


async def test_metrics_with_the_token(obs_client: httpx.AsyncClient) -> None:
    exposition = await _scrape(obs_client)
    names = {family.name for family in text_string_to_metric_families(exposition)}
    assert {
        "goaltrack_http_request_duration_seconds",
        "goaltrack_http_requests_in_progress",
        "goaltrack_db_pool_checked_out",
        "goaltrack_db_pool_size",
        "goaltrack_celery_queue_length",
        "goaltrack_outbox_backlog",
        "goaltrack_scheduler_lag_seconds",
        "goaltrack_celery_tasks",
        "goaltrack_celery_task_failures",
        "goaltrack_celery_task_duration_seconds",
        "goaltrack_push_results",
        "goaltrack_ai_runs",
        "goaltrack_metrics_probe_success",
    } <= names
    # The scrape itself is in flight while it is rendered.
    assert (_value(exposition, "goaltrack_http_requests_in_progress") or 0) >= 1
    assert _value(exposition, "goaltrack_db_pool_size") == get_settings().database_pool_size
    for probe in ("celery_queue", "outbox_backlog", "scheduler_lag"):
        assert _value(exposition, "goaltrack_metrics_probe_success", probe=probe) == 1
    assert _value(exposition, "goaltrack_scheduler_lag_seconds") == 0
    assert _value(exposition, "goaltrack_outbox_backlog", table="task_outbox") == 0
    assert _value(exposition, "goaltrack_ai_runs_total", outcome="failed") is not None


# --- request metrics --------------------------------------------------------------------------


async def test_latency_is_labelled_by_route_template(
    obs_client: httpx.AsyncClient, user: Account
) -> None:
    labels = {"method": "GET", "route": "/goals/{goal_id}", "status": "200"}
    count = "goaltrack_http_request_duration_seconds_count"
    before = _value(await _scrape(obs_client), count, **labels) or 0
    goal = await create_goal(obs_client, user)
    for _ in range(2):
        response = await obs_client.get(f"/goals/{goal['id']}", headers=user.headers)
        assert response.status_code == 200
    missing = await obs_client.get(f"/no-such-page/{uuid.uuid4()}")
    assert missing.status_code == 404

    exposition = await _scrape(obs_client)
    assert _value(exposition, count, **labels) == before + 2
    assert (_value(exposition, count, method="POST", route="/goals", status="201") or 0) >= 1
    assert (_value(exposition, count, method="GET", route="unmatched", status="404") or 0) >= 1
    # A plain Starlette route (not an APIRoute) has its template too.
    assert (_value(exposition, count, method="GET", route="/metrics", status="200") or 0) >= 1
    # No raw path, no id: the label set stays as small as the route table.
    assert goal["id"] not in exposition
    assert "no-such-page" not in exposition


async def test_scrape_time_gauges_read_the_database_and_redis(
    obs_app: Any, obs_client: httpx.AsyncClient, user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    goal = await create_goal(
        obs_client, user, reminder={"remind_time": "09:00", "frequency_days": 1}
    )
    set_clock(lambda: now)  # clean_state puts the system clock back
    async with obs_app.state.engine.begin() as connection:
        await connection.execute(
            text("UPDATE goal_reminders SET next_fire_at = :at WHERE goal_id = :goal"),
            {"at": now - timedelta(seconds=300), "goal": goal["id"]},
        )
        for due in (now - timedelta(minutes=1), now - timedelta(hours=1)):
            await connection.execute(
                text(
                    "INSERT INTO task_outbox (id, name, args, not_before, attempts)"
                    " VALUES (:id, 'test.nothing', '[]', :due, 0)"
                ),
                {"id": uuid.uuid4(), "due": due},
            )
        await connection.execute(  # not due yet: not counted
            text(
                "INSERT INTO task_outbox (id, name, args, not_before, attempts)"
                " VALUES (:id, 'test.nothing', '[]', :due, 0)"
            ),
            {"id": uuid.uuid4(), "due": now + timedelta(minutes=5)},
        )
        await connection.execute(
            text(
                "INSERT INTO file_deletions (id, object_key, not_before) VALUES (:id, 'x/y', :due)"
            ),
            {"id": uuid.uuid4(), "due": now - timedelta(seconds=5)},
        )
    queue = f"test-queue-{uuid.uuid4().hex}"  # the worker consumes `celery` itself
    monkeypatch.setattr(probes, "CELERY_QUEUE", queue)
    await obs_app.state.redis.lpush(queue, "a", "b", "c")

    exposition = await _scrape(obs_client)
    assert _value(exposition, "goaltrack_scheduler_lag_seconds") == 300
    assert _value(exposition, "goaltrack_outbox_backlog", table="task_outbox") == 2
    assert _value(exposition, "goaltrack_outbox_backlog", table="file_deletions") == 1
    assert _value(exposition, "goaltrack_celery_queue_length", queue=queue) == 3


async def test_a_failing_probe_does_not_fail_the_scrape(
    obs_app: Any, obs_client: httpx.AsyncClient
) -> None:
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, socket_timeout=1)
    redis, obs_app.state.redis = obs_app.state.redis, dead  # (State and monkeypatch disagree)
    try:
        exposition = await _scrape(obs_client)
    finally:
        obs_app.state.redis = redis
        await dead.aclose()
    assert _value(exposition, "goaltrack_metrics_probe_success", probe="celery_queue") == 0
    assert "goaltrack_celery_queue_length" not in {
        sample_name for sample_name, _ in _samples(exposition)
    }
    assert _value(exposition, "goaltrack_metrics_probe_success", probe="scheduler_lag") == 1
    assert _value(exposition, "goaltrack_scheduler_lag_seconds") is not None


async def test_a_slow_probe_is_cut_by_the_statement_timeout(
    obs_app: Any, obs_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probes, "PROBE_TIMEOUT_SECONDS", 0.5)
    async with obs_app.state.engine.connect() as locker:
        await locker.execute(text("LOCK TABLE goal_reminders IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        exposition = await _scrape(obs_client)
        elapsed = time.monotonic() - started
        await locker.rollback()
    assert elapsed < 5
    assert _value(exposition, "goaltrack_metrics_probe_success", probe="scheduler_lag") == 0
    assert _value(exposition, "goaltrack_metrics_probe_success", probe="outbox_backlog") == 1
    # The pool is whole again: the cancelled statement did not leave a connection behind.
    assert _value(await _scrape(obs_client), "goaltrack_db_pool_checked_out") == 0


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        (probes.OUTBOX_DUE_SQL, "ix_task_outbox_not_before"),
        (probes.FILE_DELETIONS_DUE_SQL, "ix_file_deletions_not_before"),
        (probes.OLDEST_DUE_REMINDER_SQL, "ix_goal_reminders_next_fire_at"),
    ],
)
async def test_scrape_queries_can_use_their_index(app: Any, sql: str, index: str) -> None:
    """With sequential scans priced out, the plan uses the index: the query matches it
    (for the partial index, its predicate)."""
    async with app.state.engine.connect() as connection:
        await connection.execute(text("SET LOCAL enable_seqscan = off"))
        plan = (
            await connection.execute(text("EXPLAIN " + sql), {"now": datetime.now(UTC), "cap": 10})
        ).scalars()
        assert index in "\n".join(plan)


async def test_the_metrics_port_serves_the_same_metrics() -> None:
    port = free_port()
    app = _observed_app(_settings(metrics_port=port))
    async with app.router.lifespan_context(app):
        response = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        assert "goaltrack_db_pool_size " in response.text
        assert 'goaltrack_metrics_probe_success{probe="scheduler_lag"} 1.0' in response.text
    with pytest.raises(httpx.ConnectError):
        await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics")


async def test_the_worker_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """WORKER_METRICS_PORT: opened by the worker_init signal, with the task metrics."""
    port = free_port()
    monkeypatch.setattr(worker_signals, "_celery_settings", _settings(worker_metrics_port=port))
    monkeypatch.setattr(worker_signals, "_worker_server", None)
    worker_signals._on_worker_init(sender=None)
    server = worker_signals._worker_server
    assert server is not None
    try:
        response = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200
    assert "# TYPE goaltrack_celery_tasks_total counter" in response.text
    assert "# TYPE goaltrack_celery_task_duration_seconds histogram" in response.text


def test_multiprocess_mode_adds_up_the_processes(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR (uvicorn --workers N, Celery prefork), any process serves
    the sum of all; a process that ended (mark_process_dead) leaves the in-flight gauge."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    child = (
        "import os\n"
        "from goaltrack.observability import metrics as o, worker_signals\n"
        "assert o.MULTIPROCESS\n"
        "o.PUSH_RESULTS.labels('sent').inc()\n"
        "o.HTTP_REQUESTS_IN_PROGRESS.inc()\n"
        "o.DB_POOL_SIZE.set(7)\n"
        "print(os.getpid())\n"
        "if os.environ.get('ENDED'):\n"
        "    worker_signals._on_worker_process_shutdown(pid=os.getpid())\n"
    )
    live, ended = (
        subprocess.run(
            [sys.executable, "-c", child],
            env={**env, "ENDED": ended},
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for ended in ("", "1")
    )
    reader = (
        "import sys\n"
        "from prometheus_client import generate_latest\n"
        "from goaltrack.observability import metrics as o\n"
        "sys.stdout.write(generate_latest(o.process_metrics()).decode())\n"
    )
    exposition = subprocess.run(
        [sys.executable, "-c", reader],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    assert _value(exposition, "goaltrack_push_results_total", outcome="sent") == 2
    assert _value(exposition, "goaltrack_http_requests_in_progress") == 1
    # Each live process's own pool gauge, labelled with its pid (the reader's own is 0); the
    # ended one's is gone.
    pools = {
        sample.labels["pid"]: sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "goaltrack_db_pool_size"
        for sample in family.samples
    }
    assert pools[live] == 7
    assert ended not in pools
    assert set(pools.values()) == {0, 7}


# --- the request id ---------------------------------------------------------------------------


async def test_request_id_is_generated_or_taken_from_the_request(
    obs_client: httpx.AsyncClient,
) -> None:
    generated = (await obs_client.get("/health")).headers["x-request-id"]
    assert HEX_ID.fullmatch(generated)
    assert (await obs_client.get("/health")).headers["x-request-id"] != generated

    echoed = await obs_client.get("/health", headers={"X-Request-ID": "edge-42:abc/DEF"})
    assert echoed.headers["x-request-id"] == "edge-42:abc/DEF"
    longest = "r" * 128
    assert (await obs_client.get("/health", headers={"X-Request-ID": longest})).headers[
        "x-request-id"
    ] == longest

    for invalid in ("r" * 129, "has space", "tab\there", "é-accent"):
        response = await obs_client.get(
            "/health", headers={"X-Request-ID": invalid.encode("utf-8")}
        )
        assert HEX_ID.fullmatch(response.headers["x-request-id"]), invalid
    assert current_request_id() is None  # unbound after each request


async def test_problem_bodies_carry_the_request_id(
    obs_client: httpx.AsyncClient, user: Account
) -> None:
    not_found = await obs_client.get(f"/goals/{uuid.uuid4()}", headers=user.headers)
    body = assert_problem(not_found, 404, "not_found")
    assert body["request_id"] == not_found.headers["x-request-id"]

    mine = {"X-Request-ID": "client-chosen-id"}
    unauthenticated = await obs_client.get("/goals", headers=mine)
    assert assert_problem(unauthenticated, 401, "not_authenticated")["request_id"] == (
        "client-chosen-id"
    )
    invalid = await obs_client.post("/goals", json={"title": ""}, headers=user.headers)
    assert (
        assert_problem(invalid, 422, "validation_error")["request_id"]
        == (invalid.headers["x-request-id"])
    )
    too_large = await obs_client.post(
        "/auth/login", content=b"x" * (get_settings().max_json_body_bytes + 1), headers=mine
    )
    assert assert_problem(too_large, 413, "payload_too_large")["request_id"] == "client-chosen-id"


async def test_an_unexpected_error_carries_the_request_id() -> None:
    """The middleware wraps Starlette's ServerErrorMiddleware: the 500 it renders has the id
    in its header and its body, and the error's log record has it too."""
    settings = _settings()
    app = create_app(settings)

    @app.get("/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("boom")

    install_observability(app, settings)
    records = _Records()
    errors_logger = logging.getLogger("goaltrack.errors")
    errors_logger.addHandler(records)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    finally:
        errors_logger.removeHandler(records)
    body = assert_problem(response, 500, "internal_error")
    assert response.headers["x-request-id"] == body["request_id"] == "req-500"
    assert [record.request_id for record in records.records] == ["req-500"]
    count = REGISTRY.get_sample_value(
        "goaltrack_http_request_duration_seconds_count",
        {"method": "GET", "route": "/boom", "status": "500"},
    )
    assert count is not None
    assert count >= 1


class _Records(logging.Handler):
    """Keeps the records it sees, with the request context added (as the real handler does)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestContextFilter())
        self.records: list[logging.LogRecord] = []
        self.lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock_:
            self.records.append(record)


@pytest.fixture
def captured() -> Iterator[_Records]:
    records = _Records()
    root = logging.getLogger()
    quiet = logging.getLogger("goaltrack.observability")
    level = quiet.level
    quiet.setLevel(logging.DEBUG)  # the worker's per-task debug record
    root.addHandler(records)
    try:
        yield records
    finally:
        root.removeHandler(records)
        quiet.setLevel(level)


async def test_the_request_id_follows_the_request_into_its_task(
    obs_client: httpx.AsyncClient, user: Account, captured: _Records, mailbox: Any
) -> None:
    task = "auth.send_password_reset"
    count = "goaltrack_celery_tasks_total"
    before = REGISTRY.get_sample_value(count, {"task": task, "state": "SUCCESS"}) or 0
    request_id = f"forgot-{uuid.uuid4().hex}"
    response = await obs_client.post(
        "/auth/forgot-password", json={"email": user.email}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 202
    assert response.headers["x-request-id"] == request_id
    await mailbox.wait_for(user.email)

    def task_records() -> list[logging.LogRecord]:
        return [r for r in list(captured.records) if getattr(r, "task_name", None) == task]

    async def logged() -> bool:
        return bool(task_records())

    await wait_until(logged, timeout=20)
    records = task_records()
    assert {record.request_id for record in records} == {request_id}
    assert all(record.threadName != threading.current_thread().name for record in records)
    assert all(record.task_id for record in records)
    assert (REGISTRY.get_sample_value(count, {"task": task, "state": "SUCCESS"}) or 0) > before
    duration = REGISTRY.get_sample_value(
        "goaltrack_celery_task_duration_seconds_count", {"task": task}
    )
    assert duration is not None
    assert duration >= 1


# --- logs -----------------------------------------------------------------------------------


def _record(message: str, *args: Any, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad value")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.getLogger("goaltrack.test").makeRecord(
        "goaltrack.test", logging.ERROR, __file__, 1, message, args, exc_info
    )
    RequestContextFilter().filter(record)
    return record


def test_json_formatter_writes_one_object_per_line() -> None:
    token = request_id_var.set("rid-json")
    try:
        record = _record("failed for %s\nsecond line", 'goal "x"', exc=True)
    finally:
        request_id_var.reset(token)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "goaltrack.test"
    assert entry["message"] == 'failed for goal "x"\nsecond line'
    assert entry["request_id"] == "rid-json"
    assert "ValueError: bad value" in entry["exception"]
    assert datetime.fromisoformat(entry["time"]).tzinfo is not None
    assert "task_name" not in entry

    plain = json.loads(JsonFormatter().format(_record("outside")))
    assert plain["request_id"] is None


def test_text_formatter_shows_the_context_when_there_is_one() -> None:
    assert TextFormatter().format(_record("hello")).endswith(" ERROR goaltrack.test: hello")
    token = request_id_var.set("rid-text")
    try:
        line = TextFormatter().format(_record("hello"))
    finally:
        request_id_var.reset(token)
    assert line.endswith(" ERROR goaltrack.test [request_id=rid-text]: hello")


def test_the_cli_logging_config_emits_json(tmp_path: Path) -> None:
    """dictConfig of `logging_config("json")` in a fresh process, as `goaltrack serve` does."""
    script = (
        "import logging, logging.config\n"
        "from goaltrack.observability.logs import logging_config\n"
        "logging.config.dictConfig(logging_config('json'))\n"
        "logging.getLogger('goaltrack.x').info('hello %s', 'world')\n"
        "logging.getLogger('uvicorn.error').warning('from uvicorn')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["logger"], e["level"], e["message"]) for e in lines] == [
        ("goaltrack.x", "INFO", "hello world"),
        ("uvicorn.error", "WARNING", "from uvicorn"),
    ]
    assert logs.resolve_log_format(_settings(app_env=AppEnv.production)) == "json"
    assert logs.resolve_log_format(_settings(app_env=AppEnv.development)) == "text"
    assert logs.resolve_log_format(_settings(log_format="json")) == "json"
    assert logging_config("text")["handlers"]["default"]["formatter"] == "text"


# --- Sentry -------------------------------------------------------------------------------------


class _SentryIngest(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        # Sentry compresses with brotli when the module is importable (a dependency of
        # locust's), with gzip otherwise.
        encoding = self.headers.get("content-encoding")
        if encoding == "gzip":
            import gzip

            body = gzip.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found,unused-ignore]

            body = brotli.decompress(body)
        type(self).bodies.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_sentry_reports_errors_with_the_request_id() -> None:
    """In a fresh process (Sentry's integrations are process-wide), to a local ingest."""
    server = HTTPServer(("127.0.0.1", 0), _SentryIngest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dsn = f"http://publickey@127.0.0.1:{server.server_address[1]}/1"
        script = (
            "import logging, sentry_sdk\n"
            "from goaltrack.observability import request_id, sentry\n"
            "from goaltrack.config import get_settings\n"
            "from pydantic import SecretStr\n"
            f"settings = get_settings().model_copy(update={{'sentry_dsn': SecretStr('{dsn}')}})\n"
            "assert sentry.init_sentry(settings)\n"
            "request_id.request_id_var.set('rid-sentry')\n"
            "try:\n    1 / 0\nexcept ZeroDivisionError:\n    sentry_sdk.capture_exception()\n"
            "sentry_sdk.flush(5)\n"
        )
        subprocess.run([sys.executable, "-c", script], timeout=60, check=True)
    finally:
        server.shutdown()
        server.server_close()
    payload = b"\n".join(_SentryIngest.bodies)
    assert b"ZeroDivisionError" in payload
    assert b'"request_id":"rid-sentry"' in payload.replace(b": ", b":")
    assert not sentry.init_sentry(_settings(sentry_dsn=None))


# --- deploy/: Prometheus and Grafana ------------------------------------------------------------


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = installed("promtool", "prometheus")
    result = subprocess.run(
        [promtool, "check", "rules", str(PROMETHEUS_DIR / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    """The whole check (rule files included) needs the token file the config names: a copy."""
    promtool = installed("promtool", "prometheus")
    for name in ("prometheus.yml", "alerts.yml", "backup-rules.yml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    (tmp_path / "metrics-token").write_text(TOKEN)
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


FRESH_WORKER = """
import sys, types
from prometheus_client import generate_latest
from goaltrack.celery_app import create_celery
from goaltrack.config import get_settings
from goaltrack.observability import worker_signals
from goaltrack.observability.metrics import process_metrics

celery = create_celery(get_settings())
worker_signals._on_worker_init(sender=types.SimpleNamespace(app=celery))
sys.stdout.write(generate_latest(process_metrics()).decode())
"""


async def test_every_dashboard_panel_has_data_on_a_fresh_stack(
    obs_client: httpx.AsyncClient,
) -> None:
    """Each metric a panel reads has a sample before anything failed or ran: a worker process
    that has just started (its task counters at 0 per task and state, push outcomes at 0) and
    the API's scrape."""
    fresh = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", FRESH_WORKER],
        env={key: value for key, value in os.environ.items() if key != "WORKER_METRICS_PORT"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    worker = fresh.stdout
    await _scrape(obs_client)  # the scrape itself is counted from the next one on
    sampled = {name for name, _ in _samples(worker) | _samples(await _scrape(obs_client))}
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for metric in re.findall(r"goaltrack_[a-z_]+", target["expr"]):
                assert metric in sampled, (panel["title"], metric)
    assert (
        _value(
            worker, "goaltrack_celery_tasks_total", task="scheduling.dispatch_due", state="FAILURE"
        )
        == 0
    )


async def test_deploy_files_name_only_exposed_metrics(obs_client: httpx.AsyncClient) -> None:
    exposition = await _scrape(obs_client)
    exposed = {sample for sample, _ in _samples(exposition)} | {
        family.name for family in text_string_to_metric_families(exposition)
    }
    # Counters with no sample yet (no push sent in this process) have no _total line.
    exposed |= {f"{name}_total" for name in exposed} | {
        f"{name}_{suffix}" for name in exposed for suffix in ("bucket", "count", "sum")
    }
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 10
    used = set(re.findall(r"goaltrack_[a-z_]+", "\n".join(exprs)))
    used |= set(re.findall(r"goaltrack_[a-z_]+", (PROMETHEUS_DIR / "alerts.yml").read_text()))
    used -= {"goaltrack_"}
    assert used
    assert used <= exposed, used - exposed


def _local_scrape_config(targets: dict[str, str]) -> str:
    """deploy/prometheus/prometheus.yml with the app's jobs pointed at `targets` (job -> address)
    instead of Docker's DNS, the exporters' jobs left out (none runs here), short intervals."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            del job["dns_sd_configs"]
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            jobs.append(job)
    assert len(jobs) == len(targets)
    config["scrape_configs"] = jobs
    del config["alerting"]
    # 2 s: a scrape runs the probes' queries, which a busy machine can slow past 1 s.
    config["global"] = {
        "scrape_interval": "2s",
        "scrape_timeout": "2s",
        "evaluation_interval": "1s",
    }
    return yaml.safe_dump(config)


async def test_a_real_prometheus_scrapes_the_app(tmp_path: Path) -> None:
    """Prometheus scrapes the API's /metrics with the bearer token, METRICS_PORT in the worker
    job's place (the same listener as WORKER_METRICS_PORT) and beat's BEAT_METRICS_PORT, and
    evaluates the rules."""
    prometheus = installed("prometheus")
    import uvicorn

    api_port, side_port, prometheus_port = free_port(), free_port(), free_port()
    beat_port = free_port()
    beat = endpoint.start_metrics_server(beat_port, "127.0.0.1", process_metrics())
    assert beat is not None
    settings = _settings(metrics_token=SecretStr(TOKEN), metrics_port=side_port)
    app = _observed_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=api_port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "metrics-token").write_text(TOKEN)
    config = _local_scrape_config(
        {
            "goaltrack-api": f"127.0.0.1:{api_port}",
            "goaltrack-worker": f"127.0.0.1:{side_port}",
            "goaltrack-beat": f"127.0.0.1:{beat_port}",
        }
    )
    (tmp_path / "prometheus.yml").write_text(config)
    process = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{prometheus_port}/api/v1"
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def query(expression: str) -> list[Any]:
                response = await http.get(f"{base}/query", params={"query": expression})
                result: list[Any] = response.json()["data"]["result"]
                return result

            async def scraped() -> bool:
                # A scrape's own request is counted once it is over: seen from the second on.
                try:
                    return (
                        bool(
                            await query(
                                'goaltrack_http_request_duration_seconds_count{route="/metrics"}'
                            )
                        )
                        and len(await query('up{job=~"goaltrack-.*"}')) == 3
                    )
                except httpx.HTTPError:
                    return False

            try:
                await wait_until(scraped, timeout=60)
            except TimeoutError:
                targets = (await http.get(f"{base}/targets")).json()["data"]["activeTargets"]
                names = await query('count by (__name__, route) ({job="goaltrack-api"})')
                pytest.fail(f"not scraped: {targets} {names}")
            # Scraped at least once (a scrape may time out now and then on a busy machine).
            [up] = await query('max_over_time(up{job="goaltrack-api"}[1m])')
            assert up["value"][1] == "1"
            [pool] = await query('goaltrack_db_pool_size{job="goaltrack-api"}')
            assert pool["value"][1] == str(settings.database_pool_size)
            [side] = await query('max_over_time(up{job="goaltrack-worker"}[1m])')
            assert side["value"][1] == "1"
            [lag] = await query('goaltrack_scheduler_lag_seconds{job="goaltrack-worker"}')
            assert lag["value"][1] == "0"
            [up_beat] = await query('max_over_time(up{job="goaltrack-beat"}[1m])')
            assert up_beat["value"][1] == "1"
            assert await query('goaltrack_beat_last_tick_timestamp_seconds{job="goaltrack-beat"}')

            async def rules_evaluated() -> bool:
                groups = (await http.get(f"{base}/rules")).json()["data"]["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                return bool(rules) and all(
                    rule.get("lastEvaluation", "").startswith("20") for rule in rules
                )

            await wait_until(rules_evaluated, timeout=30)
            groups = (await http.get(f"{base}/rules")).json()["data"]["groups"]
            assert {rule["health"] for group in groups for rule in group["rules"]} == {"ok"}
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        server.should_exit = True
        await serving
        beat.shutdown()
        beat.server_close()


def test_fastapis_own_telemetry_is_on_only_where_the_process_exports_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off, FastAPI no longer asks OpenTelemetry's providers on every request; any OTEL_*
    setting (or FastAPI's auto-configuration) leaves FastAPI's defaults."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("FASTAPI_OTEL_AUTO_CONFIGURE", raising=False)
    quiet = create_app(_settings())
    assert not quiet._native_telemetry.enabled()
    assert not any(quiet._telemetry[part] for part in ("tracing", "metrics", "logs"))

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    exporting = create_app(_settings())
    assert all(exporting._telemetry[part] for part in ("tracing", "metrics", "logs"))
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    assert create_app(_settings())._telemetry["tracing"]
