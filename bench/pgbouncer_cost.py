"""What PgBouncer in transaction mode costs per request: a hot read (GET /goals, 20 goals) and a
write (PUT /goals/{id}), each on the API straight to PostgreSQL with asyncpg's statement cache
(the default), straight with DATABASE_POOL_MODE=transaction (its unnamed statements, parsed and
planned with each execution, without the proxy) and through PgBouncer in that mode.

    flock /tmp/goaltrack-timing.lock uv run python -m bench.pgbouncer_cost [--runs 2]

A throwaway stack (PostgreSQL, Redis, PgBouncer with 20 server connections), 1,000 seeded users
with 20 goals each and a token each; one API process (production's settings and pools) per
variant, wrk -t2 -c32. Per request: the API process's CPU, PostgreSQL's (every backend) and
PgBouncer's, from /proc; the variants alternate within each run, and `foreign_cores` tells the
CPU the machine spent on other work meanwhile. Writes bench/results/pgbouncer-cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from bench import apps, wrk
from bench.host import HostLoad, _processes
from bench.scenarios import Entry
from bench.seed import asyncpg_dsn, mint_tokens, seed
from bench.stack import scratch_stack
from goaltrack.config import Settings
from goaltrack.dev.localstack import LocalStack, PgBouncer, free_port

RESULTS = Path("bench/results/pgbouncer-cost.json")
USERS = 1000
THREADS, CONNECTIONS = 2, 32


@dataclass(frozen=True, slots=True)
class Variant:
    key: str
    through_pgbouncer: bool
    pool_mode: str


VARIANTS = (
    Variant("direct", through_pgbouncer=False, pool_mode="session"),
    Variant("direct_unnamed", through_pgbouncer=False, pool_mode="transaction"),
    Variant("pgbouncer", through_pgbouncer=True, pool_mode="transaction"),
)


def cpu_of(pids: set[int]) -> float:
    """CPU seconds of `pids` and their live descendants."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0.0, [pid for pid in pids if pid in processes]
    while stack:
        pid = stack.pop()
        total += processes[pid][1]
        stack.extend(children.get(pid, ()))
    return total


async def prepare(stack: LocalStack, jwt_secret: str) -> tuple[list[str], list[str]]:
    """Seeded users' tokens, and one goal id per user (the write's target)."""
    conn = await asyncpg.connect(asyncpg_dsn(stack.postgres.url))
    try:
        await seed(conn, users=USERS, goals_per_user=20)
        settings = Settings(jwt_secret=SecretStr(jwt_secret))
        tokens = await mint_tokens(conn, settings, USERS)
        rows = await conn.fetch(
            "SELECT DISTINCT ON (u.created_at) g.id FROM users u JOIN goals g ON g.user_id = u.id "
            "WHERE u.deleted_at IS NULL AND g.is_archived = false ORDER BY u.created_at, g.id "
            "LIMIT $1",
            USERS,
        )
    finally:
        await conn.close()
    return tokens, [str(row["id"]) for row in rows]


def app_env(stack: LocalStack, bouncer: PgBouncer, variant: Variant, jwt: str) -> dict[str, str]:
    return {
        **stack.env(),
        "DATABASE_URL": bouncer.url if variant.through_pgbouncer else stack.postgres.url,
        "DATABASE_POOL_MODE": variant.pool_mode,
        "APP_ENV": "production",
        "JWT_SECRET": jwt,
        "ACCESS_TOKEN_TTL_SECONDS": str(24 * 3600),
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(free_port()),
        "S3_SECRET_ACCESS_KEY": secrets.token_hex(16),
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "PASSWORD_RESET_URL": "https://goaltrack.example.com/reset-password?token={token}",
        "LOG_LEVEL": "WARNING",
    }


def measure(
    app: apps.RunningApp,
    script: Path,
    url: str,
    postgres: Path,
    bouncer: PgBouncer,
    duration: float,
) -> dict[str, float]:
    host = HostLoad(postgres)
    wrk.run(url, script, threads=THREADS, connections=CONNECTIONS, duration=2)
    assert bouncer.process is not None
    postmaster = int((postgres / "postmaster.pid").read_text().split()[0])
    groups = {
        "api": {app.process.pid},
        "postgres": {postmaster},
        "pgbouncer": {bouncer.process.pid},
    }
    before = {name: cpu_of(pids) for name, pids in groups.items()}
    mark = host.mark()
    result, output = wrk.run(
        url, script, threads=THREADS, connections=CONNECTIONS, duration=duration
    )
    foreign = host.since(mark, duration)
    if result.non_2xx or result.socket_errors:
        raise RuntimeError(f"errors under load:\n{output}\n{app.log_tail()}")
    return {
        "requests_per_second": result.requests_per_second,
        "p50_ms": result.p50_ms,
        **{
            f"{name}_cpu_us_per_request": (cpu_of(pids) - before[name])
            * 1e6
            / max(result.requests, 1)
            for name, pids in groups.items()
        },
        **foreign,
    }


@contextlib.contextmanager
def started(
    stack: LocalStack, bouncer: PgBouncer, variant: Variant, jwt: str, root: Path
) -> Iterator[apps.RunningApp]:
    spec = apps.AppSpec(variant.key, variant.key, apps.REAL.target, factory=True)
    with apps.running(spec, app_env(stack, bouncer, variant, jwt), root) as app:
        yield app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8)
    args = parser.parse_args(argv)
    jwt = secrets.token_hex(32)
    apps.START_TIMEOUT_SECONDS = 300  # a busy shared host starts an app slowly
    runs: list[dict[str, Any]] = []
    with scratch_stack("goaltrack-pgbouncer-cost-") as stack:
        tokens, goal_ids = asyncio.run(prepare(stack, jwt))
        bouncer = PgBouncer(stack.root / "pgbouncer", stack.postgres, pool_size=20)
        bouncer.start()
        root = stack.root
        scenarios = {
            "goals_list": [Entry(token, "GET", "/goals?limit=20") for token in tokens],
            "goal_update": [
                Entry(token, "PUT", f"/goals/{goal}", body=json.dumps({"description": "x"}))
                for token, goal in zip(tokens, goal_ids, strict=True)
            ],
        }
        scripts = {
            name: wrk.write_script(root, name, entries, THREADS)
            for name, entries in scenarios.items()
        }
        try:
            for run in range(args.runs):
                order = VARIANTS[run % len(VARIANTS) :] + VARIANTS[: run % len(VARIANTS)]
                for variant in order:
                    with started(stack, bouncer, variant, jwt, root) as app:
                        for name, script in scripts.items():
                            url = app.base_url + scenarios[name][0].path
                            figures = measure(
                                app, script, url, stack.postgres.data_dir, bouncer, args.duration
                            )
                            runs.append(
                                {"run": run, "variant": variant.key, "scenario": name, **figures}
                            )
                            print(json.dumps(runs[-1]), flush=True)
        finally:
            bouncer.stop()
    summary = {
        f"{variant.key}/{name}": {
            key: statistics.median(
                r[key] for r in runs if r["variant"] == variant.key and r["scenario"] == name
            )
            for key in (
                "api_cpu_us_per_request",
                "postgres_cpu_us_per_request",
                "pgbouncer_cpu_us_per_request",
                "requests_per_second",
                "foreign_cores",
            )
        }
        for variant in VARIANTS
        for name in ("goals_list", "goal_update")
    }
    RESULTS.write_text(json.dumps({"runs": runs, "medians": summary}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
