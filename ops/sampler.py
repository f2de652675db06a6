"""Every ~10 s during a run: RSS and CPU of each part (the API with its uvicorn workers, the
Celery worker with its pool, beat, PostgreSQL, Redis, SeaweedFS, Locust), the machine's CPU and
what the rest of it (not ours) used, PostgreSQL connections by application (pg_stat_activity),
the Celery queue (Redis LLEN) and the outbox backlogs (task_outbox, file_deletions)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import psycopg
import redis

QUEUE = "celery"  # Celery's default queue: a Redis list


class Sampler:
    def __init__(
        self,
        groups: Callable[[], dict[str, list[int]]],
        *,
        postgres_dsn: str,
        redis_url: str,
        interval: float = 10.0,
    ) -> None:
        self._groups = groups
        self._dsn = postgres_dsn
        self._redis_url = redis_url
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._cpu_seen: dict[int, float] = {}
        self._all_seen: dict[int, float] = {}
        self._last = time.monotonic()
        self._cores = psutil.cpu_count() or 1

    def start(self) -> Sampler:
        psutil.cpu_percent(None)
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.samples

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(Exception):
                self.samples.append(self.sample())
            self._stop.wait(max(0.5, self.interval - (time.monotonic() - started)))

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = max(0.001, now - self._last)
        self._last = now
        groups = self._groups()
        rss: dict[str, float] = {}
        pss: dict[str, float] = {}
        cpu: dict[str, float] = {}
        ours = 0.0
        seen: dict[int, float] = {}
        for name, pids in groups.items():
            total_rss = total_pss = total_cpu = 0.0
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    process = psutil.Process(pid)
                    times = process.cpu_times()
                    used = times.user + times.system
                    seen[pid] = used
                    total_cpu += used - self._cpu_seen.get(pid, used)
                    memory = process.memory_full_info()
                    total_rss += memory.rss
                    total_pss += memory.pss
            rss[name] = round(total_rss / 2**20, 1)
            # Shared pages (PostgreSQL's shared buffers, prefork children's copy-on-write) counted
            # once: what a container's memory limit sees, unlike RSS summed over processes.
            pss[name] = round(total_pss / 2**20, 1)
            cpu[name] = round(100 * total_cpu / elapsed, 1)  # % of one core
            ours += total_cpu
        self._cpu_seen = seen
        machine = psutil.cpu_percent(None)  # % of all cores since the last call
        others = self._others(set(seen), elapsed)
        return {
            "time": time.time(),
            "rss_mb": rss,
            "pss_mb": pss,
            "cpu_pct": cpu,
            "machine_cpu_pct": machine,
            # What the other processes on the box used (% of all cores): the shared-box noise.
            "other_cpu_pct": round(max(0.0, machine - 100 * ours / elapsed / self._cores), 1),
            "load1": round(psutil.getloadavg()[0], 2),
            # The busiest processes that are not ours: what else the machine was doing.
            "other_top": others,
            **self._postgres(),
            **self._redis(),
        }

    def _others(self, ours: set[int], elapsed: float) -> list[str]:
        seen: dict[int, float] = {}
        busy: list[tuple[float, str]] = []
        for process in psutil.process_iter(["cmdline", "name", "cpu_times"]):
            times = process.info["cpu_times"]
            if times is None or process.pid in ours:
                continue
            used = times.user + times.system
            seen[process.pid] = used
            share = 100 * (used - self._all_seen.get(process.pid, used)) / elapsed
            if share >= 5:
                command = " ".join(process.info["cmdline"] or [process.info["name"] or "?"])
                busy.append((share, f"{share:.0f}% {command[:90]}"))
        self._all_seen = seen
        return [label for _, label in sorted(busy, reverse=True)[:3]]

    def _postgres(self) -> dict[str, Any]:
        try:
            with psycopg.connect(self._dsn, connect_timeout=3, autocommit=True) as connection:
                rows = connection.execute(
                    "SELECT coalesce(application_name, ''), count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " GROUP BY 1"
                ).fetchall()
                outbox, outbox_due = connection.execute(
                    "SELECT count(*), count(*) FILTER (WHERE not_before <= now()) FROM task_outbox"
                ).fetchone() or (None, None)
                deletions_due = connection.execute(
                    "SELECT count(*) FROM file_deletions WHERE not_before <= now()"
                ).fetchone()
        except psycopg.Error:
            return {"pg_connections": None}
        by_app = {name or "(none)": count for name, count in rows}
        return {
            "pg_connections": sum(by_app.values()),
            "pg_connections_by_app": by_app,
            "outbox_rows": outbox,
            "outbox_due": outbox_due,
            "file_deletions_due": deletions_due[0] if deletions_due else None,
        }

    def _redis(self) -> dict[str, Any]:
        try:
            client = redis.Redis.from_url(self._redis_url, socket_timeout=3)
            with client:
                return {
                    "celery_queue": client.llen(QUEUE),
                    "celery_unacked": client.hlen("unacked"),
                }
        except redis.RedisError:
            return {"celery_queue": None}


def postgres_dsn(database_url: str) -> str:
    """libpq's form of the app's SQLAlchemy URL."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://")
