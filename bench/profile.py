"""Where one request of a scenario spends its time: the ASGI apps driven in-process, no HTTP
server, no wrk.

    uv run --with pyinstrument python -m bench.profile [--scenario goals_list] [--requests 3000]

Starts a local stack, seeds 1,000 users × 20 goals with their details (and 20 habit twins),
then for the ceiling and Goaltrack sends the scenario's requests (bench/scenarios.py: the same
entries wrk sends, writes alternating between an entry's two paths) straight into the ASGI app
(uvloop, `concurrency` requests in flight) and prints the CPU time per request of each; then
profiles Goaltrack's requests with pyinstrument (when installed) and prints the call tree. The
figures leave out uvicorn/httptools, which both apps share. A scenario the ceiling does not serve
(a 304, an idle sync) is set beside our own plain request it is checked against (COUNTERPARTS).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import uvloop
from pydantic import SecretStr

from bench.scenarios import Entry, Scenario, build
from bench.seed import asyncpg_dsn, seed
from bench.stack import scratch_stack
from goaltrack.config import Settings
from goaltrack.dev.localstack import free_port

SCENARIOS = (
    "goals_list",
    "goals_list_habits",
    "goals_list_plain",
    "goal_detail",
    "goal_detail_304",
    "goals_list_304",
    "sync_idle",
    "goals_list_gzip",
    "notifications_page1",
    "notifications_page500",
    "achievements",
    "complete_stage",
    "create_goal",
)
# Scenarios the ceiling does not serve (bench/scenarios.py: `with_ceiling`) are set beside our
# own answer to the plain request they are checked against.
COUNTERPARTS = {
    "goal_detail_304": "goal_detail",
    "goals_list_304": "goals_list",
    "sync_idle": "goals_list",
    "goals_list_gzip": "goals_list",
}
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


async def _request(app: ASGIApp, entry: Entry, path: str) -> int:
    raw_path, _, query = path.partition("?")
    body = (entry.body or "").encode()
    headers = [(b"host", b"bench"), (b"authorization", b"Bearer " + entry.token.encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in entry.headers]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope: Message = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": entry.method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


class _Walk:
    """The scenario's entries in turn; an entry with an alternate path sends it on every second
    visit (a stage reopened, then completed again), as bench/wrk.py does."""

    def __init__(self, scenario: Scenario) -> None:
        self._entries = scenario.entries
        self._expected = scenario.expected_status
        self._visits = [0] * len(self._entries)
        self._next = 0

    def take(self) -> tuple[Entry, str, int]:
        index = self._next % len(self._entries)
        self._next += 1
        entry, visit = self._entries[index], self._visits[index]
        self._visits[index] += 1
        path = entry.alternate if entry.alternate and visit % 2 else entry.path
        return entry, path, self._expected


@dataclass(frozen=True, slots=True)
class Driven:
    cpu_us: float  # per request
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    gen2_collections: int

    def __str__(self) -> str:
        return (
            f"{self.cpu_us:8.0f} µs CPU per request, latency p50 {self.p50_ms:6.1f} ms "
            f"p90 {self.p90_ms:6.1f} ms p99 {self.p99_ms:6.1f} ms max {self.max_ms:6.1f} ms, "
            f"{self.gen2_collections} full GC collections"
        )


async def _drive(app: ASGIApp, walk: _Walk, requests: int, concurrency: int) -> Driven:
    """Run `requests` requests, `concurrency` at a time: CPU per request, latencies, and how
    many full collections the garbage collector ran meanwhile."""
    queue = iter(range(requests))
    latencies: list[float] = []

    async def worker() -> None:
        for _ in queue:
            entry, path, expected = walk.take()
            sent = time.perf_counter()
            status = await _request(app, entry, path)
            latencies.append(time.perf_counter() - sent)
            if status != expected:
                raise RuntimeError(f"{entry.method} {path} answered {status}")

    full_before = gc.get_stats()[2]["collections"]
    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = (time.process_time() - started) / requests
    latencies.sort()
    return Driven(
        cpu_us=cpu * 1e6,
        p50_ms=latencies[len(latencies) // 2] * 1e3,
        p90_ms=latencies[int(len(latencies) * 0.9)] * 1e3,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1e3,
        max_ms=latencies[-1] * 1e3,
        gen2_collections=gc.get_stats()[2]["collections"] - full_before,
    )


async def _run(database_url: str, jwt_secret: str, args: argparse.Namespace) -> None:
    settings = Settings(database_url=database_url, jwt_secret=SecretStr(jwt_secret))
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await seed(
            conn,
            users=1000,
            goals_per_user=20,
            details=True,
            reminders_per_goal=1,
            notifications_per_user=20,
            heavy_notifications=20_000,
            habit_twins=20,
        )
        scenarios = await build(conn, settings, users=1000, write_slices=1)
    finally:
        await conn.close()
    by_name = {s.name: s for s in scenarios}
    scenario = by_name[args.scenario]

    from bench import baseline
    from goaltrack.main import create_app

    real = create_app(settings)
    async with baseline.lifespan(baseline.app), real.router.lifespan_context(real):
        # Each app walks its own copy of the entries: both make the same changes in turn.
        if scenario.with_ceiling:
            reference = "ceiling"
            apps: dict[str, tuple[ASGIApp, _Walk]] = {
                "ceiling": (baseline.app, _Walk(scenario)),
                "goaltrack": (real, _Walk(scenario)),
            }
        else:  # ours only: beside our own plain request (a 304 beside its 200)
            reference = COUNTERPARTS[scenario.name]
            apps = {
                reference: (real, _Walk(by_name[reference])),
                "goaltrack": (real, _Walk(scenario)),
            }
        for app, walk in apps.values():
            await _drive(app, walk, 500, args.concurrency)  # warm-up
        costs = {
            name: await _drive(app, walk, args.requests, args.concurrency)
            for name, (app, walk) in apps.items()
        }
        print("in-process, no HTTP server:")
        for name, driven in costs.items():
            print(f"{name if name != 'goaltrack' else scenario.name:<16} {driven}")
        ratio = costs["goaltrack"].cpu_us / costs[reference].cpu_us
        print(f"{scenario.name} ÷ {reference} CPU per request: {ratio:.2f}")
        try:
            from pyinstrument import Profiler
        except ImportError:
            print("pyinstrument is not installed: `uv run --with pyinstrument ...` for a profile")
            return
        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
        await _drive(real, apps["goaltrack"][1], args.requests, args.concurrency)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--scenario", default="goals_list", choices=SCENARIOS)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    jwt_secret = secrets.token_hex(32)
    with scratch_stack("goaltrack-profile-") as stack:
        os.environ.update(
            stack.env(),
            JWT_SECRET=jwt_secret,
            S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        )
        uvloop.run(_run(stack.postgres.url, jwt_secret, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
