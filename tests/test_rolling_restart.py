"""Deploys without a 502: two `goaltrack serve` replicas behind a real Caddy running
deploy/Caddyfile, restarted one at a time as scripts/rolling-restart does (stop, start, wait until
ready, next), while clients keep reading and writing through Caddy. No request fails, and every
write that was acknowledged is in the database afterwards."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml

from goaltrack.config import get_settings
from goaltrack.dev.localstack import free_port
from helpers import start_goaltrack, stop_processes, wait_until
from test_proxy import caddy_binary, https_client, start_caddy

__all__ = ["caddy_binary"]  # the fixture, imported for this module's tests

ROOT = Path(__file__).resolve().parents[1]
ROLLING_RESTART = ROOT / "scripts" / "rolling-restart"
COMPOSE_FILE = ROOT / "docker-compose.yml"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
CLIENTS = 4
METRICS_TOKEN = secrets.token_urlsafe(24)
# As docker-compose.yml runs each replica: one process, 3 s of failing readiness on SIGTERM.
SERVE = ("serve", "--workers", "1", "--drain", "3")
REQUEST_COUNT = re.compile(
    r'^goaltrack_http_request_duration_seconds_count\{[^}]*route="/goals"[^}]*\} (\S+)$', re.M
)


@dataclass
class Replica:
    name: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    def start(self, tmp_path: Path) -> None:
        self.started = time.monotonic()
        self.process = start_goaltrack(
            *SERVE,
            "--port",
            str(self.port),
            cwd=tmp_path,
            env=os.environ
            | {
                "TRUSTED_PROXY_HOPS": "1",
                "METRICS_TOKEN": METRICS_TOKEN,
                "MAX_GOALS_PER_USER": "1000000",
            },
            log=tmp_path / f"{self.name}-{self.started}.log",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, http: httpx.AsyncClient) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, "the replica exited"
        try:
            return (await http.get(f"{self.url}/health/ready")).status_code == 200
        except httpx.TransportError:
            return False

    async def goals_requests_served(self, http: httpx.AsyncClient) -> float:
        """Requests to /goals this process has answered (its own /metrics): Caddy routes to it."""
        response = await http.get(
            f"{self.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        response.raise_for_status()
        return sum(float(count) for count in REQUEST_COUNT.findall(response.text))


@dataclass
class Load:
    """Clients reading and writing through Caddy until told to stop."""

    http: httpx.AsyncClient
    headers: dict[str, str]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    answered: int = 0
    acknowledged: list[str] = field(default_factory=list)  # ids of goals created (201)
    failures: list[str] = field(default_factory=list)

    async def client(self, number: int) -> None:
        while not self.stop.is_set():
            await self.request("GET", "/goals", 200)
            created = await self.request(
                "POST", "/goals", 201, json={"title": f"rolling {number} {uuid.uuid4().hex[:8]}"}
            )
            if created is not None:
                self.acknowledged.append(created.json()["id"])

    async def request(
        self, method: str, path: str, expected: int, **kwargs: object
    ) -> httpx.Response | None:
        try:
            response = await self.http.request(
                method, path, headers=self.headers, timeout=30, **kwargs
            )
        except httpx.HTTPError as exc:
            self.failures.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            return None
        if response.status_code != expected:
            self.failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            return None
        self.answered += 1
        return response


async def stored_goal_ids(ids: list[str]) -> set[str]:
    url = get_settings().database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT id::text FROM goals WHERE id = ANY($1::uuid[])", ids)
        return {row[0] for row in rows}
    finally:
        await connection.close()


@pytest.mark.e2e
@pytest.mark.timeout(600)  # four start-ups of the API on a machine that may be busy
async def test_a_rolling_restart_behind_caddy_fails_no_request(
    caddy_binary: str, tmp_path: Path
) -> None:
    replicas = [Replica("api-1"), Replica("api-2")]
    caddy = start_caddy(caddy_binary, tmp_path, [replica.port for replica in replicas])
    try:
        async with httpx.AsyncClient() as direct:
            for replica in replicas:
                replica.start(tmp_path)
            for replica in replicas:
                await wait_until(lambda r=replica: r.ready(direct), timeout=180, interval=0.1)
            async with https_client(caddy) as http:
                registered = await http.post(
                    "/auth/register",
                    json={
                        "email": f"rolling-{uuid.uuid4().hex[:8]}@example.com",
                        "password": "correct horse battery",
                    },
                )
                assert registered.status_code == 201, registered.text
                token = registered.json()["access_token"]
                load = Load(http, {"Authorization": f"Bearer {token}"})
                clients = [asyncio.create_task(load.client(n)) for n in range(CLIENTS)]
                try:
                    for replica in replicas:
                        await wait_until(
                            lambda r=replica: _serves(r, direct), timeout=60, interval=0.1
                        )
                    start_ups = []
                    for replica in replicas:  # scripts/rolling-restart, by hand
                        before = load.answered
                        assert replica.process is not None
                        replica.process.terminate()
                        await asyncio.to_thread(replica.process.wait, 60)
                        replica.start(tmp_path)
                        await wait_until(
                            lambda r=replica: r.ready(direct), timeout=180, interval=0.05
                        )
                        start_ups.append(time.monotonic() - replica.started)
                        # Caddy's health check has seen it: it answers requests again.
                        await wait_until(
                            lambda r=replica: _serves(r, direct), timeout=60, interval=0.1
                        )
                        assert load.answered > before, "no request was made during the restart"
                        assert load.failures == []
                    print(
                        f"{load.answered} answered; start-up to ready: {', '.join(f'{s:.1f} s' for s in start_ups)}"
                    )
                finally:
                    load.stop.set()
                    await asyncio.gather(*clients)
        assert load.failures == []
        assert load.answered > 0
        assert await stored_goal_ids(load.acknowledged) == set(load.acknowledged)
    finally:
        stop_processes([r.process for r in replicas if r.process is not None] + [caddy.process])


async def _serves(replica: Replica, direct: httpx.AsyncClient) -> bool:
    return await replica.goals_requests_served(direct) > 0


FAKE_COMPOSE = """#!/bin/sh
echo "$*" >> "$COMPOSE_LOG"
case "$*" in *"$FAIL_ON"*) exit 1 ;; esac
"""


@pytest.fixture
def fake_compose(tmp_path: Path) -> dict[str, str]:
    """scripts/rolling-restart's environment with a stand-in for `docker compose` (no engine
    here) that records its arguments and fails for the replica named in FAIL_ON."""
    compose = tmp_path / "compose"
    compose.write_text(FAKE_COMPOSE)
    compose.chmod(0o755)
    return os.environ | {
        "COMPOSE": str(compose),
        "COMPOSE_LOG": str(tmp_path / "calls"),
        "FAIL_ON": "no such replica",
    }


def test_the_script_recreates_one_replica_after_the_other(
    fake_compose: dict[str, str], tmp_path: Path
) -> None:
    result = subprocess.run([ROLLING_RESTART], env=fake_compose, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    up = "up --detach --no-deps --force-recreate --wait --wait-timeout 180"
    assert calls == [f"{up} api-1", f"{up} api-2"]
    # The replicas are the compose file's, and Caddy's upstreams.
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert [name for name in compose if name.startswith("api-")] == ["api-1", "api-2"]
    assert "reverse_proxy api-1:8000 api-2:8000 {" in CADDYFILE.read_text()


def test_the_script_stops_at_a_replica_that_does_not_become_healthy(
    fake_compose: dict[str, str], tmp_path: Path
) -> None:
    env = fake_compose | {"FAIL_ON": "api-1"}
    result = subprocess.run([ROLLING_RESTART], env=env, capture_output=True, check=False)
    assert result.returncode != 0
    assert (tmp_path / "calls").read_text().splitlines()[-1].endswith(" api-1")  # not api-2


@pytest.mark.e2e
@pytest.mark.timeout(300)
async def test_on_sigterm_the_server_fails_readiness_while_it_still_serves(tmp_path: Path) -> None:
    replica = Replica("api")
    replica.start(tmp_path)
    assert replica.process is not None
    try:
        async with httpx.AsyncClient() as direct:
            await wait_until(lambda: replica.ready(direct), timeout=180, interval=0.1)
            replica.process.terminate()
            response = await direct.get(f"{replica.url}/health/ready")
            assert response.status_code == 503
            assert response.json()["stopping"] is True
            assert response.json()["checks"] == {"postgres": "ok", "redis": "ok"}
            # Everything else is served as before until the drain is over.
            assert (await direct.get(f"{replica.url}/goals")).status_code == 401
            assert (await direct.get(f"{replica.url}/health")).status_code == 200
        await asyncio.to_thread(replica.process.wait, 60)
    finally:
        stop_processes([replica.process])
