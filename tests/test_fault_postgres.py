"""Fault test with real processes: PostgreSQL crashes (`kill -QUIT` of the postmaster) under a
write load on a real uvicorn process, then restarts.

The API answers 503 with Retry-After while the database is away, never 500 and never a dropped
connection; after the restart every write succeeds again, on every pooled connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from goaltrack.dev.localstack import Postgres, free_port
from helpers import wait_until

LOAD_LOOPS = 8
POOL_SIZE = 5
BEFORE_CRASH_SECONDS = 3.0
DOWN_SECONDS = 1.0
AFTER_RECOVERY_SECONDS = 4.0
BUSINESS = {200, 201, 202, 409}  # 409: an export is already being prepared


@pytest.fixture
def crash_postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of this test alone: the session's one stays up for the others."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="goaltrack-fault-pg-", dir=base))
    root.chmod(0o755)  # the server runs as the postgres user when the tests run as root
    server = Postgres(root / "pg")
    try:
        server.start()
        from goaltrack.migrations import upgrade

        upgrade(server.url)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def api_process(crash_postgres: Postgres) -> Iterator[str]:
    """`goaltrack serve` as its own process, on the dedicated cluster, with a small pool. Its
    broker is a Redis database of its own, so the session's worker does not run its tasks."""
    port = free_port()
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/13"
    env = os.environ | {
        "DATABASE_URL": crash_postgres.url,
        "DATABASE_POOL_SIZE": str(POOL_SIZE),
        "REDIS_URL": redis_url,
    }
    log_dir = Path(tempfile.mkdtemp(prefix="goaltrack-fault-api-"))
    log = (log_dir / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "goaltrack", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (log_dir / "api.log").read_text(errors="replace")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/health/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the API did not become ready"
            time.sleep(0.1)
        yield base_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        text = (log_dir / "api.log").read_text(errors="replace")
        internal = [line for line in text.splitlines() if "unhandled error" in line]
        if internal:
            print(f"\nAPI log: {len(internal)} unhandled errors, first: {internal[0]}")
        shutil.rmtree(log_dir, ignore_errors=True)
        with contextlib.suppress(Exception):
            import redis

            redis.Redis.from_url(redis_url).flushdb()


@dataclass
class Outcome:
    at: float
    operation: str
    status: int | None  # None: no HTTP answer
    retry_after: str | None = None
    transport: str | None = None
    previous_refresh: int | None = None  # on a 401: the status of the loop's last refresh


@dataclass
class Load:
    outcomes: list[Outcome] = field(default_factory=list)
    reregistered: int = 0


async def register(client: httpx.AsyncClient) -> dict[str, str]:
    email = f"fault-{uuid.uuid4().hex[:12]}@example.com"
    response = await client.post(
        "/auth/register", json={"email": email, "password": "correct horse battery"}
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


async def run_loop(
    client: httpx.AsyncClient, tokens: dict[str, str], load: Load, stop: asyncio.Event
) -> None:
    step = 0
    last_refresh: int | None = None
    while not stop.is_set():
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        operation = ("goals", "settings", "refresh", "export", "read")[step % 5]
        step += 1
        previous_refresh = last_refresh
        try:
            if operation == "goals":
                response = await client.post("/goals", json={"title": "load"}, headers=headers)
            elif operation == "settings":
                locale = "ru" if step % 2 else "en"
                response = await client.put("/settings", json={"locale": locale}, headers=headers)
            elif operation == "refresh":
                response = await client.post(
                    "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
                )
                if response.status_code == 200:
                    tokens.update(response.json())
                last_refresh = response.status_code
            elif operation == "export":
                response = await client.post("/account/export", headers=headers)
            else:
                response = await client.get("/goals", headers=headers)
        except httpx.TransportError as exc:
            load.outcomes.append(
                Outcome(time.monotonic(), operation, None, transport=type(exc).__name__)
            )
            continue
        load.outcomes.append(
            Outcome(
                time.monotonic(),
                operation,
                response.status_code,
                retry_after=response.headers.get("retry-after"),
                previous_refresh=previous_refresh if response.status_code == 401 else None,
            )
        )
        if response.status_code == 401:
            # A refresh whose commit reached the server but whose answer did not makes the next
            # one a replay, which ends the session: start another (counted, not a failure here).
            load.reregistered += 1
            tokens.update(await register(client))


def postmaster_pid(server: Postgres) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])


async def all_writes_succeed(client: httpx.AsyncClient, tokens: dict[str, str]) -> list[int]:
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    statuses = [
        (await client.post("/goals", json={"title": "after"}, headers=headers)).status_code,
        (await client.put("/settings", json={"locale": "en"}, headers=headers)).status_code,
        (await client.get("/goals", headers=headers)).status_code,
    ]
    refreshed = await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    statuses.append(refreshed.status_code)
    if refreshed.status_code == 200:
        tokens.update(refreshed.json())
    statuses.append((await client.post("/account/export", headers=headers)).status_code)
    return statuses


@pytest.mark.e2e
async def test_postgresql_crash_under_write_load_is_503_never_500_nor_dropped(
    crash_postgres: Postgres, api_process: str
) -> None:
    limits = httpx.Limits(max_connections=LOAD_LOOPS * 2, max_keepalive_connections=LOAD_LOOPS * 2)
    async with httpx.AsyncClient(base_url=api_process, timeout=30, limits=limits) as client:
        accounts = [await register(client) for _ in range(LOAD_LOOPS)]
        load = Load()
        stop = asyncio.Event()
        started = time.monotonic()
        loops = [asyncio.create_task(run_loop(client, tokens, load, stop)) for tokens in accounts]
        try:
            await asyncio.sleep(BEFORE_CRASH_SECONDS)
            crashed_at = time.monotonic()
            os.kill(postmaster_pid(crash_postgres), signal.SIGQUIT)
            await asyncio.sleep(DOWN_SECONDS)
            await asyncio.to_thread(crash_postgres.start)  # pg_ctl start, as localstack does
            recovered_at = time.monotonic()
            await asyncio.sleep(AFTER_RECOVERY_SECONDS)
        finally:
            stop.set()
            await asyncio.gather(*loops, return_exceptions=True)
        for loop in loops:
            loop.result()  # a loop that failed on something else fails the test

        outcomes = load.outcomes
        statuses = Counter(o.status for o in outcomes if o.status is not None)
        transport = Counter(o.transport for o in outcomes if o.transport is not None)
        errors_by_operation = Counter(
            (o.operation, o.status or o.transport) for o in outcomes if o.status not in BUSINESS
        )
        late_503 = [o for o in outcomes if o.status == 503 and o.at > recovered_at + 2]
        print(
            f"\nrequests={len(outcomes)} 2xx={sum(n for s, n in statuses.items() if s < 300)} "
            f"409={statuses[409]} 503={statuses[503]} 500={statuses[500]} "
            f"transport={dict(transport)} statuses={dict(statuses)} "
            f"reregistered={load.reregistered} 401_after_refresh="
            f"{[(o.operation, o.previous_refresh) for o in outcomes if o.status == 401]} "
            f"crash_at={crashed_at - started:.1f}s recovered_at={recovered_at - started:.1f}s "
            f"503_later_than_2s_after_recovery={len(late_503)} errors={dict(errors_by_operation)}"
        )

        assert statuses[500] == 0
        assert not transport, transport
        for outcome in outcomes:
            if outcome.status not in BUSINESS and outcome.status != 401:
                assert outcome.status == 503, outcome
                assert outcome.retry_after is not None
                assert int(outcome.retry_after) >= 1
        assert statuses[503] > 0, "the crash was not seen: nothing was tested"

        # Recovered: every write succeeds again within a few seconds…
        assert (await client.get("/health/ready")).status_code == 200
        tokens = accounts[0]
        seen: list[int] = []

        async def all_succeed() -> bool:
            nonlocal seen
            seen = await all_writes_succeed(client, tokens)
            return not set(seen) - BUSINESS

        try:
            await wait_until(all_succeed, timeout=5, interval=0.2)
        except TimeoutError:
            pytest.fail(f"writes still failing: {seen}")
        # …and on every pooled connection: sequential requests go round the whole pool, none
        # of them an old connection the crash left behind.
        after = []
        for _ in range(6):
            after += await all_writes_succeed(client, tokens)
        assert set(after) <= BUSINESS, Counter(after)
        assert late_503 == [], late_503[:5]


async def one_request(client: httpx.AsyncClient, tokens: dict[str, str], step: int) -> int:
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    operation = step % 5
    if operation == 0:
        return (await client.get("/goals", headers=headers)).status_code
    if operation == 1:
        return (await client.post("/goals", json={"title": "x"}, headers=headers)).status_code
    if operation == 2:
        return (await client.put("/settings", json={"locale": "en"}, headers=headers)).status_code
    if operation == 3:
        response = await client.post(
            "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        if response.status_code == 200:
            tokens.update(response.json())
        return response.status_code
    return (await client.post("/account/export", headers=headers)).status_code


@pytest.mark.e2e
async def test_connections_idle_in_the_pool_through_a_crash_fail_at_most_once(
    crash_postgres: Postgres, api_process: str
) -> None:
    """The pool is full of idle connections when PostgreSQL crashes and comes back with no
    traffic: the first request on one of them may answer 503, and that error recycles the whole
    pool, so none of the others answers 503 later (while /health/ready says 200)."""
    async with httpx.AsyncClient(base_url=api_process, timeout=30) as client:
        tokens = await register(client)
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        for _ in range(3):  # every pooled connection opened (and its statements prepared)
            warm = await asyncio.gather(
                *(client.get("/goals", headers=headers) for _ in range(POOL_SIZE * 2)),
                *(client.post("/goals", json={"title": "w"}, headers=headers) for _ in range(5)),
            )
            assert {r.status_code for r in warm} <= BUSINESS
        os.kill(postmaster_pid(crash_postgres), signal.SIGQUIT)
        await asyncio.sleep(DOWN_SECONDS)
        await asyncio.to_thread(crash_postgres.start)

        first = [await one_request(client, tokens, step) for step in range(30)]
        ready = (await client.get("/health/ready")).status_code
        later = [await one_request(client, tokens, step) for step in range(30)]
        print(
            f"\nafter an idle crash: first 30 {Counter(first)}; ready {ready}; next 30 {Counter(later)}"
        )
        assert 500 not in first
        assert Counter(first)[503] <= 1, first
        assert ready == 200
        assert set(later) <= BUSINESS, later
