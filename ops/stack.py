"""The app in production mode on a local stack: `goaltrack.dev.localstack` (the code behind
`goaltrack dev` and the test fixtures) starts PostgreSQL, Redis and SeaweedFS; this module adds
an SMTP sink and a fake AI API, migrates, and runs `goaltrack serve|worker|beat` as separate
processes (as docker-compose does: 2 API workers, worker concurrency 2, one beat). Each part can
be SIGKILLed and started again (chaos)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from goaltrack.dev.localstack import LocalStack, free_port
from ops.fakes import FakeAi, FakeFcm, SmtpSink

# Worker and Redis first: the messages they lose come back from the outbox after its 15-min lease,
# so the drain after the load is shorter when those faults come early.
COMPONENTS = ("worker", "redis", "postgres", "s3", "beat")


@dataclass
class AppProcess:
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str], cwd: Path) -> None:
        with self.log.open("ab") as out:
            # Its own process group: a kill takes the prefork children with it, as a container's.
            self.process = subprocess.Popen(  # noqa: S603
                self.argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def signal_group(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.process is None:
            return
        self.signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        # Whatever is left of the group (a prefork child) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def pids(self) -> list[int]:
        if self.process is None or self.process.poll() is not None:
            return []
        return _tree(self.process.pid)


def _ram_dir() -> str | None:
    """As the tests do: PostgreSQL's data in RAM when the machine has /dev/shm."""
    shm = Path("/dev/shm")  # noqa: S108
    return str(shm) if shm.is_dir() else None


def _tree(pid: int) -> list[int]:
    try:
        parent = psutil.Process(pid)
        return [pid, *(child.pid for child in parent.children(recursive=True))]
    except psutil.Error:
        return []


@dataclass
class AppStack:
    """Start with `with AppStack(...) as stack:`; everything started is stopped on exit."""

    api_workers: int = 2
    worker_concurrency: int = 2
    root: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="goaltrack-ops-", dir=_ram_dir()))
    )
    api_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    keep_root: bool = False

    def __post_init__(self) -> None:
        self.root.chmod(0o755)  # the postgres user reaches its data directory through it
        self.local = LocalStack(self.root / "stack")
        self.smtp = SmtpSink()
        self.fcm = FakeFcm()
        self.ai = FakeAi()
        self.app_dir = self.root / "app"  # beat's schedule file lands here, not in the checkout
        self.logs = self.root / "logs"
        self.env: dict[str, str] = {}
        python = [sys.executable, "-m", "goaltrack"]
        port = str(self.api_port)
        self.processes = {
            "api": AppProcess(
                "api",
                [*python, "serve", "--port", port, "--workers", str(self.api_workers)],
                self.logs / "api.log",
            ),
            "worker": AppProcess(
                "worker",
                [*python, "worker", "--concurrency", str(self.worker_concurrency)],
                self.logs / "worker.log",
            ),
            "beat": AppProcess("beat", [*python, "beat"], self.logs / "beat.log"),
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> AppStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.app_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.local.start()
        self.smtp.start()
        self.fcm.start()
        self.ai.start()
        self.env = self._environment()
        migrate = subprocess.run(
            [sys.executable, "-m", "goaltrack", "migrate"],
            env=self.env, cwd=self.app_dir, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{migrate.stdout}\n{migrate.stderr}")
        for process in self.processes.values():
            process.start(self.env, self.app_dir)
        self.wait_ready()

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(Exception):
                process.stop()
        with contextlib.suppress(Exception):
            self.smtp.stop()
        with contextlib.suppress(Exception):
            self.fcm.stop()
        with contextlib.suppress(Exception):
            self.ai.stop()
        self.local.stop()
        # A SIGKILLed postmaster's backends may outlive the stop above: they are ours, end them.
        self._kill_postgres_leftovers()
        if not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _environment(self) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            # Nothing of the caller's own Goaltrack configuration leaks into the run.
            if not key.startswith(
                ("GOALTRACK_", "DATABASE_", "REDIS_", "S3_", "MAIL_", "AI_", "FCM_")
            )
        }
        return {
            **inherited,
            **self.local.env(),
            "APP_ENV": "production",
            "JWT_SECRET": secrets.token_urlsafe(48),
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(self.smtp.port),
            "MAIL_STARTTLS": "false",
            "MAIL_SSL_TLS": "false",
            "PASSWORD_RESET_URL": "https://app.goaltrack.example.com/reset-password?token={token}",
            # As behind Caddy in docker-compose: the client's address is X-Forwarded-For's last.
            "TRUSTED_PROXY_HOPS": "1",
            "FCM_CREDENTIALS_FILE": str(self.fcm.write_credentials(self.root)),
            "FCM_BASE_URL": self.fcm.url,
            "AI_API_KEY": "ops-fake-key",
            "AI_BASE_URL": self.ai.url,
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            for process in self.processes.values():
                if process.process is not None and process.process.poll() is not None:
                    raise RuntimeError(f"{process.name} exited; see {process.log}")
            time.sleep(0.3)
        raise RuntimeError(f"the API was not ready in {timeout:.0f} s; see {self.logs}")

    # -- processes, for the sampler ---------------------------------------------------------

    def postmaster_pid(self) -> int | None:
        pid_file = self.local.postgres.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            if psutil.pid_exists(pid):
                return pid
        return None

    def process_groups(self) -> dict[str, list[int]]:
        """pids of each part, children included (uvicorn's workers, the prefork pool)."""
        groups = {name: process.pids() for name, process in self.processes.items()}
        postmaster = self.postmaster_pid()
        groups["postgres"] = _tree(postmaster) if postmaster else []
        for name, server in (("redis", self.local.redis), ("s3", self.local.s3)):
            process = getattr(server, "process", None)
            groups[name] = _tree(process.pid) if process and process.poll() is None else []
        return groups

    # -- chaos -------------------------------------------------------------------------------

    def kill(self, component: str) -> None:
        """SIGKILL, as the OOM killer or a pulled plug would: no chance to clean up."""
        if component in self.processes:
            self.processes[component].kill()
        elif component == "postgres":
            postmaster = self.postmaster_pid()
            if postmaster is not None:
                victims = [psutil.Process(pid) for pid in _tree(postmaster)]
                for victim in victims:
                    with contextlib.suppress(psutil.Error):
                        victim.kill()
                psutil.wait_procs(victims, timeout=10)
        elif component in ("redis", "s3"):
            server = self.local.redis if component == "redis" else self.local.s3
            assert server is not None
            assert server.process is not None
            server.process.kill()
            server.process.wait()
        else:
            raise ValueError(f"unknown component {component!r}")

    def restart(self, component: str) -> None:
        if component in self.processes:
            self.processes[component].start(self.env, self.app_dir)
        elif component == "postgres":
            self.local.postgres.start()  # same data directory and port: crash recovery
        elif component == "redis":
            self.local.redis.start()  # same port; no persistence, as `goaltrack dev` runs it
        elif component == "s3":
            assert self.local.s3 is not None
            self.local.s3.start()  # same data directory and S3 port
        else:
            raise ValueError(f"unknown component {component!r}")

    def _kill_postgres_leftovers(self) -> None:
        data_dir = str(self.local.postgres.data_dir)
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if data_dir in " ".join(process.info["cmdline"] or []):
                    process.kill()


__all__ = ["COMPONENTS", "AppStack", "free_port"]
