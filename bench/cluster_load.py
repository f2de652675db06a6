"""The several-node topology under load (docs/deploy.md, "Two VPS and more"): connections per
node, the replica's lag, and where the hot reads ran.

    flock /tmp/goaltrack-timing.lock uv run python -m bench.cluster_load [--duration 20]

Starts `goaltrack.dev.cluster.Cluster` (what `make cluster` runs, without S3): PostgreSQL primary
+ streaming replica, PgBouncer (transaction mode, 20 server connections), Redis, two API
processes behind Caddy, two workers, two beats; seeds 1,000 users with 20 goals each and mints a
token each. The primary flushes its commits as in production (fsync, synchronous
commit; its data in /dev/shm). Then wrk -t2 -c32 through Caddy for `--duration` s on a mobile-like mix per user:
4 × GET /goals, GET /notifications, GET /sync, PUT /goals/{id} (1 write in 7). Every 100 ms the
primary's pg_stat_replication (replay lag in bytes and time) and its backends by application, and
PgBouncer's pools (clients and server connections). Prints and writes
bench/results/cluster-load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from bench import wrk
from bench.scenarios import Entry
from bench.seed import asyncpg_dsn, mint_tokens, seed
from goaltrack.config import Settings
from goaltrack.dev.cluster import Cluster
from goaltrack.migrations import upgrade

RESULTS = Path("bench/results/cluster-load.json")
USERS = 1000
THREADS, CONNECTIONS = 2, 32

LAG = """
SELECT COALESCE((pg_current_wal_lsn() - replay_lsn)::bigint, -1) AS bytes,
       COALESCE(extract(epoch FROM replay_lag) * 1000, 0)::float8 AS ms
FROM pg_stat_replication
"""
BACKENDS = """
SELECT COALESCE(NULLIF(application_name, ''), backend_type) AS who, count(*) AS n
FROM pg_stat_activity WHERE backend_type IN ('client backend', 'walsender') GROUP BY 1
"""
COMMITS = "SELECT sum(xact_commit)::bigint FROM pg_stat_database"


async def prepare(cluster: Cluster, jwt: str) -> list[Entry]:
    conn = await asyncpg.connect(asyncpg_dsn(cluster.primary_url))
    try:
        await seed(conn, users=USERS, goals_per_user=20)
        tokens = await mint_tokens(conn, Settings(jwt_secret=SecretStr(jwt)), USERS)
        goals = await conn.fetch(
            "SELECT DISTINCT ON (u.created_at) g.id FROM users u JOIN goals g ON g.user_id = u.id "
            "WHERE u.deleted_at IS NULL AND NOT g.is_archived ORDER BY u.created_at, g.id LIMIT $1",
            USERS,
        )
    finally:
        await conn.close()
    entries = []
    for token, goal in zip(tokens, goals, strict=True):
        entries += [Entry(token, "GET", "/goals")] * 4
        entries += [Entry(token, "GET", "/notifications"), Entry(token, "GET", "/sync")]
        entries.append(Entry(token, "PUT", f"/goals/{goal['id']}", body='{"description": "x"}'))
    return entries


async def sample(cluster: Cluster, until: asyncio.Event) -> dict[str, Any]:
    primary = await asyncpg.connect(asyncpg_dsn(cluster.primary_url))
    lag_bytes: list[int] = []
    lag_ms: list[float] = []
    backends: dict[str, int] = {}
    pools = {"clients": 0, "servers": 0, "waiting": 0}
    ticks = 0
    try:
        while not until.is_set():
            for row in await primary.fetch(LAG):
                lag_bytes.append(int(row["bytes"]))
                lag_ms.append(float(row["ms"]))
            for row in await primary.fetch(BACKENDS):
                backends[row["who"]] = max(backends.get(row["who"], 0), int(row["n"]))
            ticks += 1
            if ticks % 10 == 0:  # a psql each second: the admin console speaks simple queries only
                rows = await show_pools(cluster)
                now = {
                    "clients": sum(int(r["cl_active"]) + int(r["cl_waiting"]) for r in rows),
                    "servers": sum(
                        int(r["sv_active"]) + int(r["sv_idle"]) + int(r["sv_used"]) for r in rows
                    ),
                    "waiting": sum(int(r["cl_waiting"]) for r in rows),
                }
                pools = {key: max(pools[key], value) for key, value in now.items()}
            await asyncio.sleep(0.1)
    finally:
        await primary.close()
    return {
        "replay_lag_bytes": _spread(lag_bytes),
        "replay_lag_ms": _spread(lag_ms),
        "primary_backends_max": backends,
        "pgbouncer_max": pools,
    }


async def show_pools(cluster: Cluster) -> list[dict[str, str]]:
    psql = await asyncio.create_subprocess_exec(
        *("psql", "-h", "127.0.0.1", "-p", str(cluster.pgbouncer.port), "-U", "postgres"),
        *("-d", "pgbouncer", "-A", "-F", ",", "-c", "SHOW POOLS"),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await psql.communicate()
    header, *lines = out.decode().splitlines()
    names = header.split(",")
    return [dict(zip(names, line.split(","), strict=False)) for line in lines if "," in line]


def _spread(values: list[Any]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
        "samples": len(ordered),
    }


async def commits(url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await conn.fetchval(COMMITS))
    finally:
        await conn.close()


async def measure(cluster: Cluster, script: Path, duration: float) -> dict[str, Any]:
    url = cluster.url + "/goals"
    await asyncio.to_thread(
        wrk.run, url, script, threads=THREADS, connections=CONNECTIONS, duration=3
    )
    before = {
        name: await commits(u)
        for name, u in (("primary", cluster.primary_url), ("replica", cluster.replica.url))
    }
    done = asyncio.Event()
    sampling = asyncio.create_task(sample(cluster, done))
    result, _ = await asyncio.to_thread(
        wrk.run, url, script, threads=THREADS, connections=CONNECTIONS, duration=duration
    )
    done.set()
    figures = await sampling
    after = {
        name: await commits(u)
        for name, u in (("primary", cluster.primary_url), ("replica", cluster.replica.url))
    }
    return {
        "requests_per_second": result.requests_per_second,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
        "transactions": {name: after[name] - before[name] for name in after},
        **figures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20)
    args = parser.parse_args(argv)
    jwt = secrets.token_hex(32)
    root = Path("/dev/shm") / f"goaltrack-cluster-load-{secrets.token_hex(4)}"
    root.mkdir(mode=0o755)
    cluster = Cluster(
        root,
        with_s3=False,
        settings={"JWT_SECRET": jwt, "ACCESS_TOKEN_TTL_SECONDS": "86400", "LOG_LEVEL": "WARNING"},
    )
    # Commits flushed as in production: with synchronous_commit off the WAL reaches the replica
    # only at the WAL writer's next round (200 ms), which would be the lag measured.
    cluster.stack.postgres.durable = True
    try:
        cluster.start_services()
        upgrade(cluster.primary_url)
        entries = asyncio.run(prepare(cluster, jwt))
        cluster.start_nodes()
        script = wrk.write_script(root, "mix", entries, THREADS)
        figures = asyncio.run(measure(cluster, script, args.duration))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
