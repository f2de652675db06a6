"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from goaltrack.errors import problem_codes, problem_type


@dataclass
class Account:
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert code in problem_codes()  # the published enum (ProblemCode)
    assert body["type"] == problem_type(code)
    assert {"title", "detail"} <= body.keys()
    return body


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 20, interval: float = 0.02
) -> None:
    """Poll `predicate` (sync or async) until it is true; TimeoutError after `timeout` seconds.
    The one polling loop of the suite: it waits for another thread or process, never for time to
    pass (time is moved with `TestClock`)."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


async def _celery_idle(redis: Any) -> bool:
    """No task queued in this process's Redis, none received or running on its worker thread."""
    from celery.worker import state

    return (
        not state.active_requests and not state.reserved_requests and not await redis.llen("celery")
    )


async def wait_for_idle_worker(redis: Any) -> None:
    """Until the session's Celery worker has run every task queued so far (seen idle twice in a
    row: a message just popped from the queue is not yet `reserved`). A positive signal, not a
    pause: it returns as soon as the worker is idle."""

    async def idle() -> bool:
        return await _celery_idle(redis) and await _celery_idle(redis)

    await wait_until(idle, timeout=60)


class TestClock:
    """A clock that stands still until moved: `install()` makes it the app's and the in-process
    worker's (goaltrack.clock), and a task's retry countdown then moves it forward at once instead
    of being waited for in real time (`clock.countdown`). With `hold_countdowns` a countdown waits
    (on the worker thread) until the test calls `release()`: what the task left behind before its
    retry can be looked at. clean_state puts the system clock back and releases any hold."""

    __test__ = False  # not a test class
    installed: TestClock | None = None

    def __init__(self, start: datetime | None = None, *, hold_countdowns: bool = False) -> None:
        self.now = start or datetime.now(UTC)
        self.advanced: list[float] = []  # every countdown that passed on this clock, in order
        self._lock = threading.Lock()
        self._hold = threading.Event()
        if not hold_countdowns:
            self._hold.set()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        if not self._hold.wait(timeout=60):
            raise TimeoutError("a countdown was held and never released")
        with self._lock:
            self.now += timedelta(seconds=seconds)
            self.advanced.append(seconds)

    def release(self) -> None:
        """Held countdowns (and those to come) pass."""
        self._hold.set()

    def install(self) -> TestClock:
        from goaltrack.clock import set_clock

        set_clock(self, advance=self.advance)
        TestClock.installed = self
        return self

    @classmethod
    def uninstall(cls) -> None:
        from goaltrack.clock import set_clock

        if cls.installed is not None:
            cls.installed.release()
            cls.installed = None
        set_clock(None)


async def create_goal(client: Any, account: Account, **body: Any) -> dict[str, Any]:
    """Create a goal through the API (title "Run a marathon" unless given) and return it."""
    response = await client.post(
        "/goals", json={"title": "Run a marathon", **body}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    goal: dict[str, Any] = response.json()
    return goal


def make_image(image_format: str = "PNG", size: tuple[int, int] = (2, 2)) -> bytes:
    """A real image encoded by Pillow: uploads are decoded, not only sniffed."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(buffer, image_format)
    return buffer.getvalue()


async def add_stages(
    client: Any, account: Account, goal_id: str, count: int
) -> list[dict[str, Any]]:
    stages = []
    for index in range(count):
        response = await client.post(
            f"/goals/{goal_id}/stages", json={"title": f"Stage {index}"}, headers=account.headers
        )
        assert response.status_code == 201, response.text
        stages.append(response.json())
    return stages


def make_pdf(pages: int = 1) -> bytes:
    """A real PDF of blank pages, written by pypdf."""
    import io

    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=72, height=72)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def bench_app_env(settings: Any) -> dict[str, str]:
    """The environment bench/'s apps read their settings from, for the in-process test app's."""
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "JWT_ISSUER": settings.jwt_issuer,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "S3_BUCKET": settings.s3_bucket,
        "S3_ACCESS_KEY_ID": settings.s3_access_key_id,
        "S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
        "S3_REGION": settings.s3_region,
        "ATTACHMENT_URL_TTL_SECONDS": str(settings.attachment_url_ttl_seconds),
    }


def start_goaltrack(
    *command: str, cwd: Path, env: dict[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    """`python -m goaltrack <command>` as a process of its own (beat keeps its schedule file
    under `cwd`), its output into `log` or nowhere."""
    with (log or Path(os.devnull)).open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "goaltrack", *command],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 20) -> None:
    """SIGTERM to each (a graceful stop for uvicorn and Celery), then wait; one still running
    after `timeout` is killed."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, port: int | None = None, **settings: str) -> AsyncIterator[str]:
    """`goaltrack serve` (uvicorn, as in production) as a process of its own on `port` (or a free
    one), with `settings` over the test's environment; its base URL once /health answers."""
    import httpx

    from goaltrack.dev.localstack import free_port

    port = port or free_port()
    log = tmp_path / f"api-{port}.log"
    process = start_goaltrack(
        "serve", "--port", str(port), cwd=tmp_path, env=os.environ | settings, log=log
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:

            async def healthy() -> bool:
                assert process.poll() is None, log.read_text(errors="replace")
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get(f"{base_url}/health")).status_code == 200
                return False

            # Its start (imports, then the app's lifespan) takes minutes on a busy machine.
            await wait_until(healthy, timeout=150, interval=0.1)
        yield base_url
    finally:
        stop_processes([process])


async def run_task(celery_app: Any, name: str, *args: Any, task_id: str | None = None) -> Any:
    """Task `name(*args)` on the session's worker, at the test clock's now; its return value once
    the worker has run it (Celery's task_postrun names the task: a positive signal, where an idle
    queue could be a message popped and not yet reserved). `task_id`: a durable task's outbox row."""
    import uuid

    from celery.signals import task_postrun

    sent = task_id or str(uuid.uuid4())
    results: list[Any] = []

    def finished(task_id: str = "", retval: Any = None, **_: Any) -> None:
        if task_id == sent:
            results.append(retval)

    task_postrun.connect(finished, weak=False)
    try:
        celery_app.send_task(name, args=args, task_id=sent)
        await wait_until(lambda: bool(results), timeout=60)
    finally:
        task_postrun.disconnect(finished)
    return results[0]


async def seed_users_with_goals(app: Any, count: int, **settings: Any) -> list[tuple[Any, Any]]:
    """`count` users (with `settings` on their settings row), a goal each, written as rows:
    [(user id, goal id)], committed."""
    import uuid

    from goaltrack.auth.models import User
    from goaltrack.goals.models import Goal
    from goaltrack.profile.models import UserSettings

    seeded = []
    async with app.state.sessionmaker() as session, session.begin():
        for index in range(count):
            user_id, goal_id = uuid.uuid4(), uuid.uuid4()
            session.add(
                User(
                    id=user_id,
                    email=f"seed-{index}-{user_id.hex[:6]}@example.com",
                    password_hash="x",
                )
            )
            await session.flush()
            session.add(UserSettings(user_id=user_id, **settings))
            session.add(Goal(id=goal_id, user_id=user_id, title=f"Goal {index}"))
            seeded.append((user_id, goal_id))
    return seeded


@contextlib.contextmanager
def beats_and_workers(tmp_path: Any) -> Iterator[None]:
    """Real processes: two `goaltrack beat` and two `goaltrack worker --concurrency 2` (four
    worker processes), ticking every second, stopped on the way out."""
    env = {**os.environ, "SCHEDULER_INTERVAL_SECONDS": "1"}
    processes = []
    for name in ("beat-a", "beat-b", "worker-a", "worker-b"):
        cwd = tmp_path / name
        cwd.mkdir()
        command = ("beat",) if name.startswith("beat") else ("worker", "--concurrency", "2")
        processes.append(start_goaltrack(*command, cwd=cwd, env=env))
    try:
        yield
    finally:
        stop_processes(processes)


def installed(command: str, package: str | None = None) -> str:
    """The path of a system tool a test runs: missing, the test fails in CI (where
    scripts/bootstrap.sh installs it) and is skipped elsewhere."""
    path = shutil.which(command)
    if path is None:
        package = package or command
        if os.environ.get("CI"):
            pytest.fail(f"{command} is missing (Debian package {package}, scripts/bootstrap.sh)")
        pytest.skip(f"{command} is not installed (apt-get install {package})")
    return path
