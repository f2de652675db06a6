"""Several nodes (goaltrack.dev.cluster, what `make cluster` runs): two API processes behind a real
Caddy, PgBouncer in transaction mode, a streaming replica for the hot reads, two workers and two
beats, on a database of the test server cloned from the migrated template. Through the balancer:
the acceptance flow; one API node killed under load (no acknowledged write lost, no 5xx beyond the
requests in flight); reminders and their pushes exactly once with both beats and workers ticking."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from conftest import TEMPLATE_DATABASE
from fakes.fcm import FakeFcm
from flow import api_flow
from goaltrack.dev.cluster import CADDYFILE, Cluster
from goaltrack.dev.localstack import LocalStack, Postgres, free_port
from helpers import installed, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.timeout(300)]

# Clients sending at once while a node dies: at most this many requests are in flight.
CONCURRENCY = 6


@pytest.fixture(scope="module")
def cluster(stack: LocalStack) -> Iterator[Cluster]:
    installed("caddy")
    shared = stack.postgres
    database = f"cluster_{uuid.uuid4().hex[:8]}"
    shared.create_database(database, template=TEMPLATE_DATABASE)
    nodes = Cluster(
        stack.root / database,
        shared_postgres=Postgres(shared.data_dir, port=shared.port, database=database),
        with_s3=False,  # the test stack's S3 (in the environment) serves
        settings={"SCHEDULER_INTERVAL_SECONDS": "1"},
    )
    nodes.start_services()
    nodes.start_nodes()
    yield nodes
    nodes.stop()


@pytest.fixture
async def balancer(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as http:
        yield http


@contextlib.asynccontextmanager
async def primary(cluster: Cluster) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(cluster.primary_url.replace("+asyncpg", ""))
    try:
        yield connection
    finally:
        await connection.close()


async def test_the_acceptance_flow_passes_through_the_balancer(
    balancer: httpx.AsyncClient,
) -> None:
    for _ in range(2):  # round robin: each node serves part of each flow
        await api_flow(balancer)


async def test_killing_an_api_node_under_load_loses_no_acknowledged_write(
    cluster: Cluster, balancer: httpx.AsyncClient
) -> None:
    account = await api_flow(balancer)
    auth = {"Authorization": f"Bearer {account['token']}"}
    acknowledged: list[str] = []
    statuses: list[int] = []
    errors: list[str] = []  # what each 5xx said, for the assertion's message
    stop_at = time.monotonic() + 6

    async def send(method: str, path: str, **options: object) -> httpx.Response | None:
        """The response, or None for one cut off mid-way (its node died while sending it)."""
        try:
            response = await balancer.request(method, path, headers=auth, **options)  # type: ignore[arg-type]
        except httpx.TransportError:
            statuses.append(0)
            return None
        statuses.append(response.status_code)
        if response.status_code >= 500:
            errors.append(
                f"{response.status_code} {response.headers.get('server')} {response.text[:200]}"
            )
        return response

    async def client(number: int) -> None:
        sent = 0
        while time.monotonic() < stop_at:
            sent += 1
            created = await send("POST", "/goals", json={"title": f"c{number}-{sent}"})
            if created is not None and created.status_code == 201:
                acknowledged.append(created.json()["id"])
            await send("GET", "/goals")

    load = asyncio.gather(*(client(number) for number in range(CONCURRENCY)))
    await asyncio.sleep(2)
    cluster.apis[0].kill()
    await load
    try:
        # Only the requests in flight on the killed node fail: a 502, or cut off mid-body.
        failed = [status for status in statuses if status == 0 or status >= 500]
        assert len(failed) <= CONCURRENCY, failed
        assert set(statuses) <= {0, 200, 201, 502}, (sorted(set(statuses)), errors)
        assert len(acknowledged) > 20  # the survivor went on serving
        async with primary(cluster) as connection:
            stored = await connection.fetchval(
                "SELECT count(*) FROM goals WHERE id = ANY($1::uuid[])", acknowledged
            )
        assert stored == len(acknowledged)
    finally:
        cluster.restart_api(0)


class StandInNode:
    """An API node for Caddy's eyes only (http.server, in threads): `POST /fail` drops the
    connection unanswered (a request that fails on this node), every other request answers 200,
    the health check (`health_path`) `slow_health` seconds late once `slow` is set: a node that
    answers slowly on a busy host."""

    def __init__(self, health_path: str, slow_health: float) -> None:
        self.slow = threading.Event()
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == health_path and node.slow.is_set():
                    time.sleep(slow_health)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                with contextlib.suppress(OSError):  # Caddy gave up on a late health check
                    self.wfile.write(b"ok")

            def do_POST(self) -> None:
                self.close_connection = True  # no answer at all

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def __enter__(self) -> StandInNode:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.slow.clear()
        self.server.shutdown()
        self.server.server_close()


async def the_last_node_stays_in(http: httpx.AsyncClient, node: StandInNode) -> None:
    """Through Caddy in front of a dead node and `node`: one request fails on `node` (Caddy
    takes it out for `fail_duration`) while its health checks answer slowly. The next request
    must wait for `node` and be answered, not be turned away with Caddy's own 503 ("no upstreams
    available": every node out for the request's whole `lb_try_duration`)."""
    await wait_until(lambda: _answers(http), timeout=30, interval=0.2)
    node.slow.set()
    failed = await http.post("/fail", timeout=60)
    assert failed.status_code == 502
    served = await http.get("/goals", timeout=60)
    assert served.status_code == 200, (served.status_code, served.headers.get("server"))


async def _answers(http: httpx.AsyncClient) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return (await http.get("/goals")).status_code == 200
    return False


async def test_one_failure_and_slow_health_checks_do_not_take_the_survivor_out(
    tmp_path: Path,
) -> None:
    """The cluster's Caddyfile (goaltrack.dev.cluster): a node that failed one request is out
    for less than a request waits, and a health check answered in 3 s still counts, so a busy
    survivor keeps serving beside a dead node (the 503 that test_killing_... once saw)."""
    caddy = installed("caddy")
    dead = free_port()
    port = free_port()
    with StandInNode("/health", slow_health=3) as node:
        config = tmp_path / "Caddyfile"
        config.write_text(
            CADDYFILE.format(port=port, upstreams=f"127.0.0.1:{dead} 127.0.0.1:{node.port}")
        )
        process = await asyncio.create_subprocess_exec(
            caddy,
            *("run", "--config", str(config), "--adapter", "caddyfile"),
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                await the_last_node_stays_in(http, node)
        finally:
            process.terminate()
            await process.wait()


async def user_with_a_reminder(balancer: httpx.AsyncClient) -> tuple[str, str]:
    """A user with a phone and a daily reminder, through the API: (device token, goal id)."""
    account = await api_flow(balancer)
    auth = {"Authorization": f"Bearer {account['token']}"}
    phone = f"cluster-phone-{uuid.uuid4().hex[:12]}"
    device = await balancer.post(
        "/devices", json={"token": phone, "platform": "android"}, headers=auth
    )
    assert device.status_code in {200, 201}, device.text
    goal = await balancer.post("/goals", json={"title": "Practise"}, headers=auth)
    reminder = await balancer.post(
        f"/goals/{goal.json()['id']}/reminders",
        json={"remind_time": "09:00", "frequency_days": 1},
        headers=auth,
    )
    assert reminder.status_code == 201, reminder.text
    return phone, goal.json()["id"]


async def make_due(connection: asyncpg.Connection, goal_ids: list[str]) -> None:
    """Their reminders due a moment ago (the API set them for the next 09:00)."""
    now = datetime.now(UTC)
    await connection.execute(
        "UPDATE goal_reminders SET remind_time = $1, anchor_date = $2, next_fire_at = $3, "
        "next_fire_date = $2 WHERE goal_id = ANY($4::uuid[])",
        now.time().replace(tzinfo=None, microsecond=0),
        now.date(),
        now,
        goal_ids,
    )


async def test_reminders_and_pushes_go_once_with_two_beats_and_two_workers(
    cluster: Cluster, balancer: httpx.AsyncClient, fcm: FakeFcm
) -> None:
    """Each beat enqueues a dispatch every second and each worker runs them: every due reminder
    is claimed by one (SKIP LOCKED), recorded once, pushed once."""
    users = [await user_with_a_reminder(balancer) for _ in range(12)]
    late = await user_with_a_reminder(balancer)
    async with primary(cluster) as connection:

        async def sent() -> int:
            count = "SELECT count(*) FROM notifications WHERE type = 'reminder'"
            return int(await connection.fetchval(count))

        async def served(count: int) -> None:
            async def enough() -> bool:
                return await sent() >= count and len(reminders_pushed(fcm)) >= count

            await wait_until(enough, timeout=120, interval=0.2)

        await make_due(connection, [goal for _, goal in users])
        await served(len(users))
        # A positive signal that the beats went on ticking after serving those: one more.
        await make_due(connection, [late[1]])
        await served(len(users) + 1)
        assert await sent() == len(users) + 1
        ledger = await connection.fetchval("SELECT count(*) FROM reminder_deliveries")
    assert ledger == len(users) + 1
    assert sorted(reminders_pushed(fcm)) == sorted(phone for phone, _ in [*users, late])


def reminders_pushed(fcm: FakeFcm) -> list[str]:
    """The phones each reminder push went to (the flow's achievements push too)."""
    return [
        record["message"]["token"]
        for record in fcm.delivered
        if record["message"].get("data", {}).get("type") == "reminder"
    ]
