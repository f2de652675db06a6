"""Where one GET /goals spends its time: the ASGI apps driven in-process, no HTTP server, no wrk.

    uv run --with pyinstrument python -m bench.profile_goals [--requests 3000] [--concurrency 32]

Starts a local stack, seeds 1,000 users × 20 goals, then for the baseline and Goaltrack runs the
same requests straight into the ASGI app (uvloop, `concurrency` requests in flight) and prints the
CPU time per request of each; then profiles Goaltrack's requests with pyinstrument (when installed)
and prints the call tree. The figures leave out uvicorn/httptools, which both apps share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import asyncpg
import uvloop
from pydantic import SecretStr

from bench.seed import asyncpg_dsn, mint_tokens, seed
from goaltrack.config import Settings
from goaltrack.dev.localstack import LocalStack, free_port
from goaltrack.migrations import upgrade

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


async def _request(app: ASGIApp, token: bytes) -> int:
    scope: Message = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/goals",
        "raw_path": b"/goals",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", b"Bearer " + token)],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _drive(app: ASGIApp, tokens: list[bytes], requests: int, concurrency: int) -> float:
    """Run `requests` requests, `concurrency` at a time; return CPU seconds per request."""
    queue = iter(range(requests))

    async def worker() -> None:
        for number in queue:
            status = await _request(app, tokens[number % len(tokens)])
            if status != 200:
                raise RuntimeError(f"GET /goals answered {status}")

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / requests


async def _run(database_url: str, jwt_secret: str, args: argparse.Namespace) -> None:
    settings = Settings(database_url=database_url, jwt_secret=SecretStr(jwt_secret))
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await seed(conn, users=1000, goals_per_user=20)
        tokens = [t.encode() for t in await mint_tokens(conn, settings, 1000)]
    finally:
        await conn.close()

    from bench import baseline
    from goaltrack.main import create_app

    real = create_app(settings)
    async with baseline.lifespan(baseline.app), real.router.lifespan_context(real):
        apps: dict[str, ASGIApp] = {"baseline": baseline.app, "goaltrack": real}
        for app in apps.values():
            await _drive(app, tokens, 500, args.concurrency)  # warm-up
        costs = {
            name: await _drive(app, tokens, args.requests, args.concurrency)
            for name, app in apps.items()
        }
        for name, cost in costs.items():
            print(f"{name:<10} {cost * 1e6:8.0f} µs CPU per request (in-process, no HTTP server)")
        print(f"goaltrack ÷ baseline CPU per request: {costs['goaltrack'] / costs['baseline']:.2f}")
        try:
            from pyinstrument import Profiler
        except ImportError:
            print("pyinstrument is not installed: `uv run --with pyinstrument ...` for a profile")
            return
        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
        await _drive(real, tokens, args.requests, args.concurrency)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_goals", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="goaltrack-profile-", dir=base))
    root.chmod(0o755)
    stack = LocalStack(root, with_s3=False)
    jwt_secret = secrets.token_hex(32)
    try:
        stack.start()
        upgrade(stack.postgres.url)
        os.environ.update(
            stack.env(),
            JWT_SECRET=jwt_secret,
            S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        )
        uvloop.run(_run(stack.postgres.url, jwt_secret, args))
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
