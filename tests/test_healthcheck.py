"""`goaltrack health api|worker|beat`, the containers' health checks that heal (goaltrack.healthcheck),
and beat's heartbeat, against real processes: a real `goaltrack beat` and `goaltrack worker` on the
test session's Redis, a real HTTP listener, and stand-ins only for the container's PID 1."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from goaltrack import healthcheck
from goaltrack.config import get_settings
from goaltrack.dev.localstack import free_port
from goaltrack.healthcheck import KILL_AFTER, Health
from goaltrack.observability.beat import heartbeat_path
from helpers import start_goaltrack, stop_processes, wait_until

UNREACHABLE_REDIS = f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def init_process(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Stands in for the container's init: notes SIGTERM and carries on, as a process too stuck
    to stop does, and has a child (the service's process); it ends when the child does."""
    script = (
        "trap 'echo TERM >> term.log' TERM; sleep 600 & child=$!; "
        "while kill -0 $child 2>/dev/null; do wait $child; done"
    )
    process = subprocess.Popen(["sh", "-c", script], cwd=tmp_path)
    yield process
    process.kill()
    process.wait()


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_a_stuck_process_is_ended_at_the_third_check_in_a_row(
    init_process: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    pid = init_process.pid
    await wait_until(lambda: bool(children(pid)), timeout=10)
    [sleeper] = children(pid)
    role = f"test-{pid}"

    # Within the grace period nothing counts; a dependency down never counts; OK resets.
    assert healthcheck.heal(Health.STUCK, role=role, pid=pid, grace=3600) == 0
    assert healthcheck.heal(Health.STUCK, role=role, pid=pid, grace=0) == 1
    assert healthcheck.heal(Health.DEPENDENCY_DOWN, role=role, pid=pid, grace=0) == 1
    assert healthcheck.heal(Health.OK, role=role, pid=pid, grace=0) == 0
    for expected in range(1, KILL_AFTER):
        assert healthcheck.heal(Health.STUCK, role=role, pid=pid, grace=0) == expected
    assert not (tmp_path / "term.log").exists()

    # The third: SIGTERM to the init (which passes it on; this one ignores it, as a stuck one).
    assert healthcheck.heal(Health.STUCK, role=role, pid=pid, grace=0) == KILL_AFTER
    await wait_until(lambda: (tmp_path / "term.log").exists(), timeout=10)
    assert children(pid) == [sleeper]
    # Two checks later, still stuck: SIGKILL to the init's children.
    assert healthcheck.heal(Health.STUCK, role=role, pid=pid, grace=0) == KILL_AFTER + 1
    assert children(pid) == [sleeper]
    assert healthcheck.heal(Health.STUCK, role=role, pid=pid, grace=0) == KILL_AFTER + 2
    assert init_process.wait(timeout=10) == 137  # its child was killed: the container exits


def test_process_age_counts_from_the_process_start() -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        assert 0 <= healthcheck.process_age(process.pid) < 5
        assert healthcheck.process_age(1) >= healthcheck.process_age(process.pid)
    finally:
        process.kill()
        process.wait()


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_api_liveness() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert healthcheck.check_api(server.server_address[1]) is Health.OK
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck.check_api(free_port()) is Health.STUCK


async def test_the_worker_answers_its_ping_by_name(tmp_path: Path) -> None:
    redis_url = get_settings().redis_url
    assert healthcheck.check_worker(UNREACHABLE_REDIS) is Health.DEPENDENCY_DOWN
    worker = start_goaltrack(
        "worker", "--concurrency", "1", cwd=tmp_path, env=dict(os.environ), log=tmp_path / "w.log"
    )
    try:
        await wait_until(lambda: healthcheck.check_worker(redis_url) is Health.OK, timeout=60)
    finally:
        stop_processes([worker])
    from celery import Celery

    # A node that does not exist gets no answer: what a stuck worker looks like.
    app = Celery(broker=redis_url, set_as_current=False)
    assert app.control.ping(destination=["celery@no-such-node"], timeout=1) == []


async def test_beat_keeps_a_heartbeat_that_its_check_reads(tmp_path: Path) -> None:
    """A real beat: its loop touches the heartbeat and serves it on BEAT_METRICS_PORT; the check
    passes while it ticks, and fails once the heartbeat is older than --max-age."""
    redis_url = get_settings().redis_url
    port = free_port()
    beat = start_goaltrack(
        "beat",
        cwd=tmp_path,
        env=os.environ | {"BEAT_METRICS_PORT": str(port)},
        log=tmp_path / "beat.log",
    )
    heartbeat = heartbeat_path(tmp_path / ".goaltrack" / "celerybeat-schedule")
    try:
        await wait_until(heartbeat.exists, timeout=60)
        assert healthcheck.check_beat(redis_url, heartbeat, max_age=300) is Health.OK

        def last_tick() -> float | None:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return None
            for line in text.splitlines():
                if line.startswith("goaltrack_beat_last_tick_timestamp_seconds "):
                    return float(line.split()[1])
            return None

        await wait_until(lambda: (last_tick() or 0) > time.time() - 120, timeout=30)
    finally:
        stop_processes([beat])

    # Stale: stuck while Redis answers; a dependency outage while it does not.
    old = time.time() - 600
    os.utime(heartbeat, (old, old))
    assert healthcheck.check_beat(redis_url, heartbeat, max_age=300) is Health.STUCK
    assert healthcheck.check_beat(UNREACHABLE_REDIS, heartbeat, max_age=300) is (
        Health.DEPENDENCY_DOWN
    )
    heartbeat.unlink()
    assert healthcheck.check_beat(redis_url, heartbeat, max_age=300) is Health.STUCK


def test_the_health_command_exits_1_when_unhealthy(tmp_path: Path) -> None:
    """`goaltrack health beat` as the container runs it: exit 1 and why; the stand-in init is
    signalled only at the third stuck check."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        env = os.environ | {"TMPDIR": str(tmp_path)}
        command = [sys.executable, "-m", "goaltrack", "health", "beat", "--grace", "0"]
        for count in range(1, KILL_AFTER + 1):
            result = subprocess.run(
                [*command, "--pid", str(sleeper.pid)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 1
            assert f"beat: stuck ({count} stuck in a row)" in result.stderr
        assert sleeper.wait(timeout=10) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()
