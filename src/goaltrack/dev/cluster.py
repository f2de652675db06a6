"""Past one VPS, on one machine: the topology of docs/deploy.md's "two VPS and more", from the
same local-stack code as `goaltrack dev` and the tests (no Docker).

PostgreSQL primary + a streaming replica (pg_basebackup -R), PgBouncer in transaction mode in
front of the primary, Redis, S3 (SeaweedFS), `api_nodes` API processes behind a real Caddy
(`reverse_proxy` over all of them, health-checked), `workers` Celery workers and `beats` beats.
Start in two steps, `start_services()` then (once the caller has migrated the primary itself, not
through PgBouncer: a migration is one session's work) `start_nodes()`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from goaltrack.dev.localstack import (
    LocalStack,
    LocalStackError,
    PgBouncer,
    Postgres,
    Replica,
    _stop_process,
    _tail,
    _wait_for_port,
    free_port,
)

# An API process imports everything and opens its pools first: minutes on a busy machine.
NODE_START_TIMEOUT_SECONDS = 180.0
# How long Caddy keeps trying other nodes for a request it could not hand to one (a node that
# died refuses connections at once, and the next one is tried), and how often it checks each.
# Caddy answers 503 itself ("no upstreams available") when every node is out for a request's
# whole lb_try_duration, so neither way out may outlast it on a node that still serves: a request
# that failed on a node takes it out for fail_duration, a fraction of lb_try_duration (it was
# 10 s, the whole of it), and a health check counts until health_timeout, longer than a busy
# host's slowest answer (it was 2 s). With those two, one failed request on the surviving node
# beside a dead one, and its slow checks, turned the requests behind into 503s
# (tests/test_cluster_nodes.py, with stand-in nodes).
CADDYFILE = """{{
	admin off
	auto_https off
	http_port {port}
}}

:{port} {{
	reverse_proxy {upstreams} {{
		lb_policy round_robin
		lb_try_duration 10s
		lb_try_interval 100ms
		fail_duration 2s
		health_uri /health
		health_interval 1s
		health_timeout 5s
	}}
}}
"""


@dataclass
class Node:
    """One `python -m goaltrack <command>` process, started from its own directory."""

    name: str
    command: tuple[str, ...]
    work_dir: Path
    port: int | None = None  # an API node's
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.work_dir / f"{self.name}.log"

    def start(self, env: dict[str, str]) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "goaltrack", *self.command],
                cwd=self.work_dir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_until_listening(self) -> None:
        assert self.process is not None
        assert self.port is not None
        _wait_for_port(self.port, self.process, self.name, self.log, NODE_START_TIMEOUT_SECONDS)

    def kill(self) -> None:
        """SIGKILL: a node that dies, as a crashed VPS does."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process)


@dataclass
class Cluster:
    root: Path
    api_nodes: int = 2
    workers: int = 2
    beats: int = 2
    port: int = field(default_factory=free_port)  # the balancer's
    # A database of a server another process runs (the tests'): no own primary.
    shared_postgres: Postgres | None = None
    with_s3: bool = True
    # Settings for every node, over the environment's and the topology's.
    settings: dict[str, str] = field(default_factory=dict)
    stack: LocalStack = field(init=False)
    replica: Replica = field(init=False)
    pgbouncer: PgBouncer = field(init=False)
    apis: list[Node] = field(init=False, default_factory=list)
    background: list[Node] = field(init=False, default_factory=list)
    caddy: subprocess.Popen[bytes] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.stack = LocalStack(
            self.root, with_s3=self.with_s3, shared_postgres=self.shared_postgres
        )
        self.stack.redis.password = secrets.token_hex(16)  # every node has it in REDIS_URL
        self.replica = Replica(self.root / "replica", primary=self.stack.postgres)
        self.pgbouncer = PgBouncer(self.root / "pgbouncer", self.stack.postgres, pool_size=20)
        self.apis = [
            Node(f"api-{n}", ("serve", "--port", str(port)), self.root / f"api-{n}", port)
            for n, port in enumerate((free_port() for _ in range(self.api_nodes)), start=1)
        ]
        self.background = [
            Node(f"worker-{n}", ("worker", "--concurrency", "1"), self.root / f"worker-{n}")
            for n in range(1, self.workers + 1)
        ] + [
            Node(f"beat-{n}", ("beat",), self.root / f"beat-{n}") for n in range(1, self.beats + 1)
        ]

    @property
    def url(self) -> str:
        """The balancer's: what clients call."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def primary_url(self) -> str:
        """The primary itself, for migrations and checks."""
        return self.stack.postgres.url

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.stack.env(),
            "DATABASE_URL": self.pgbouncer.url,
            "DATABASE_POOL_MODE": "transaction",
            "DATABASE_REPLICA_URL": self.replica.url,
            "TRUSTED_PROXY_HOPS": "1",
            **self.settings,
        }

    def start_services(self) -> None:
        """PostgreSQL (unless shared), its replica, PgBouncer, Redis and S3."""
        try:
            self.stack.start()
            self.replica.start()
            self.pgbouncer.start()
        except BaseException:
            self.stop()
            raise

    def start_nodes(self) -> None:
        """The API nodes, then Caddy in front of them, the workers and the beats; returns once
        the balancer answers."""
        try:
            env = self.env()
            for node in self.apis + self.background:
                node.start(env)
            for node in self.apis:
                node.wait_until_listening()
            self._start_caddy()
        except BaseException:
            self.stop()
            raise

    def restart_api(self, index: int) -> None:
        node = self.apis[index]
        node.start(self.env())
        node.wait_until_listening()

    def _start_caddy(self) -> None:
        binary = shutil.which("caddy")
        if binary is None:
            raise LocalStackError("caddy was not found: apt-get install caddy (brew install caddy)")
        work_dir = self.root / "caddy"
        work_dir.mkdir(parents=True, exist_ok=True)
        config = work_dir / "Caddyfile"
        upstreams = " ".join(f"127.0.0.1:{node.port}" for node in self.apis)
        config.write_text(CADDYFILE.format(port=self.port, upstreams=upstreams))
        log = work_dir / "caddy.log"
        with log.open("ab") as out:
            self.caddy = subprocess.Popen(
                [binary, "run", "--config", str(config), "--adapter", "caddyfile"],
                env={
                    "PATH": os.environ.get("PATH", ""),
                    "HOME": str(work_dir),
                    "XDG_CONFIG_HOME": str(work_dir / "config"),
                    "XDG_DATA_HOME": str(work_dir / "data"),
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_for_port(self.port, self.caddy, "caddy", log)
        self._wait_until_balanced(log)

    def _wait_until_balanced(self, log: Path) -> None:
        """Until the balancer has a healthy node to send /health to."""
        import httpx

        deadline = time.monotonic() + NODE_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise LocalStackError(f"the balancer did not answer /health; see {log}:\n{_tail(log)}")

    def stop(self) -> None:
        if self.caddy is not None:
            _stop_process(self.caddy)
        for node in self.apis + self.background:
            with contextlib.suppress(Exception):
                node.stop()
        for server in (self.pgbouncer, self.replica):
            with contextlib.suppress(Exception):
                server.stop()
        self.stack.stop()
