"""`goaltrack health api|worker|beat`: the containers' health checks, which also heal.

Docker marks a container unhealthy, but its restart policy acts on an exit, never on health. So
the check ends a process that a restart would heal: after KILL_AFTER checks in a row that found
the process itself stuck (it does not answer while its dependencies do), it sends SIGTERM to the
container's init (PID 1 with compose's `init: true`), which passes it on; the container exits and
`restart: unless-stopped` starts it again. Two failed checks later it SIGKILLs the init's
children, for a process too stuck to stop. A dependency that is down (Redis) fails the check (it
shows in `docker compose ps`) without counting: a restart would not bring it back. Nothing counts
during the first `grace` seconds of the container, as Docker's start_period.

Chosen over an autoheal sidecar, which needs the Docker socket (root on the host) and one more
image to trust."""

from __future__ import annotations

import enum
import os
import signal
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

KILL_AFTER = 3


class Health(enum.Enum):
    OK = "ok"
    DEPENDENCY_DOWN = "dependency down"  # fails the check, never restarts
    STUCK = "stuck"  # the process's own fault: counts towards a restart


def check_api(port: int) -> Health:
    """Liveness (`/health`): readiness is for the proxy; a restart does not heal PostgreSQL."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as response:
            return Health.OK if response.status == 200 else Health.STUCK
    except OSError:
        return Health.STUCK


def _broker_answers(redis_url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=3)
        with client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def check_worker(redis_url: str) -> Health:
    """This worker (celery@<hostname>) answers a remote-control ping through the broker."""
    if not _broker_answers(redis_url):
        return Health.DEPENDENCY_DOWN
    from celery import Celery

    app = Celery(broker=redis_url, set_as_current=False)
    replies = app.control.ping(destination=[f"celery@{socket.gethostname()}"], timeout=5)
    return Health.OK if replies else Health.STUCK


def check_beat(redis_url: str, heartbeat: Path, max_age: float) -> Health:
    """Beat's loop touched its heartbeat (observability.beat) within `max_age` seconds."""
    try:
        if time.time() - heartbeat.stat().st_mtime <= max_age:
            return Health.OK
    except FileNotFoundError:
        pass
    return Health.STUCK if _broker_answers(redis_url) else Health.DEPENDENCY_DOWN


def process_age(pid: int) -> float:
    """Seconds since `pid` started (/proc)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def heal(health: Health, *, role: str, pid: int = 1, grace: float = 60) -> int:
    """Counts the stuck checks in a row (in a file: each check is a new process) and ends the
    container's processes at KILL_AFTER; returns the number counted."""
    state = Path(tempfile.gettempdir(), f"goaltrack-health-{role}-{pid}")
    try:
        stuck = int(state.read_text())
    except (FileNotFoundError, ValueError):
        stuck = 0
    if health is Health.OK:
        stuck = 0
    elif health is Health.STUCK and process_age(pid) >= grace:
        stuck += 1
    state.write_text(str(stuck))
    if stuck == KILL_AFTER:
        os.kill(pid, signal.SIGTERM)
    elif stuck >= KILL_AFTER + 2:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            os.kill(int(child), signal.SIGKILL)
    return stuck
