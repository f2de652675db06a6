"""The apps under test: each one uvicorn process (1 worker unless asked, uvloop + httptools, no
access log), run by bench.serve, which tells the verified-token cache's counters on request."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from goaltrack.dev.localstack import free_port

START_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class AppSpec:
    key: str
    label: str
    target: str
    factory: bool = False
    # Another checkout's source tree to import the app from (the "before" of a change).
    source: Path | None = None


BASELINE = AppSpec("baseline", "Starlette + raw asyncpg + orjson (ceiling)", "bench.baseline:app")
REAL = AppSpec(
    "goaltrack", "Goaltrack (goaltrack.main:create_app)", "goaltrack.main:create_app", True
)
PEER = AppSpec(
    "peer_template", "sync FastAPI + SQLAlchemy ORM + psycopg (template)", "bench.peer_template:app"
)
ASYNC_PEER = AppSpec(
    "peer_async", "async FastAPI + AsyncSession + ORM + response_model", "bench.peer_async:app"
)


def before(revision: str, source: Path) -> AppSpec:
    """Goaltrack as it was at `revision` (its `src/` checked out at `source`), to measure a
    change before and after in the same run."""
    return AppSpec(
        "goaltrack_before",
        f"Goaltrack at {revision}",
        "goaltrack.main:create_app",
        True,
        source,
    )


class AppError(RuntimeError):
    pass


@dataclass
class RunningApp:
    spec: AppSpec
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_cache_file(self) -> Path:
        return self.log.with_suffix(".token-cache.json")

    def token_cache(self, timeout: float = 10.0) -> dict[str, int]:
        """The verified-token cache's counters now (bench.serve); {} when the app has none."""
        self.token_cache_file.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Any request wakes an idle loop, which then runs the signal's handler.
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(self.base_url + "/", timeout=1.0)
            if self.token_cache_file.exists():
                counters: dict[str, int] = json.loads(self.token_cache_file.read_text())
                return counters
            time.sleep(0.05)
        raise AppError(f"{self.spec.key} did not tell its token cache:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _wait_until_serving(app: RunningApp, probe_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            raise AppError(f"{app.spec.key} exited at start-up:\n{app.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(app.base_url + probe_path, timeout=1.0)
            return
        time.sleep(0.1)
    raise AppError(
        f"{app.spec.key} did not answer in {START_TIMEOUT_SECONDS:.0f} s:\n{app.log_tail()}"
    )


@contextlib.contextmanager
def running(
    spec: AppSpec,
    env: dict[str, str],
    work_dir: Path,
    probe_path: str = "/goals",
    *,
    workers: int = 1,
) -> Iterator[RunningApp]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bench.serve",
        spec.target,
        *(["--factory"] if spec.factory else []),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    log = work_dir / f"{spec.key}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            env={
                **os.environ,
                **env,
                **({"PYTHONPATH": str(spec.source)} if spec.source else {}),
                "BENCH_TOKEN_CACHE_FILE": str(log.with_suffix(".token-cache.json")),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    app = RunningApp(spec, port, process, log)
    try:
        _wait_until_serving(app, probe_path)
        yield app
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
