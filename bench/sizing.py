"""Pool size × worker count for a 2-vCPU box: GET /goals and GET /notifications on our app under
wrk -c64, each pool (per process, the read pool and the engine's alike) × workers 1 and 2, the
configurations interleaved within each repetition.

    uv run python -m bench.sizing [--pools 10 20 32 64] [--workers 1 2] [--repetitions 2]

Prints req/s, p50 and p99 per configuration (median and min–max over repetitions) and the
server's CPU µs per request (all worker processes), and writes bench/results/sizing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench import apps, wrk
from bench.__main__ import WRK_THREADS, Config, app_env, cpu_seconds, loadavg, prepare
from bench.seed import Seeded
from goaltrack.config import Settings
from goaltrack.dev.localstack import LocalStack
from goaltrack.migrations import upgrade

RESULTS = Path("bench/results/sizing.json")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _cpu(pid: int) -> float:
    """The process and its worker processes (uvicorn --workers N forks them)."""
    return sum(cpu_seconds(p) for p in [pid, *_children(pid)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sizing", description=__doc__)
    parser.add_argument("--pools", type=int, nargs="+", default=[10, 20, 32, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args(argv)
    config = Config(
        duration=args.duration,
        repetitions=args.repetitions,
        users=args.users,
        habit_pairs=0,
        connections=64,
        warmup=2,
        pool=10,
        json_path=RESULTS,
        with_peer=False,
        with_tick=False,
        smoke=False,
    )
    root = Path(tempfile.mkdtemp(prefix="goaltrack-sizing-", dir="/dev/shm"))
    root.chmod(0o755)
    stack = LocalStack(root, with_s3=False)
    results: dict[str, list[dict[str, Any]]] = {}
    load_before = loadavg()
    try:
        stack.start()
        upgrade(stack.postgres.url)
        secret = secrets.token_hex(32)
        settings = Settings(
            database_url=stack.postgres.url,
            jwt_secret=SecretStr(secret),
            access_token_ttl_seconds=24 * 3600,
        )
        seeded: Seeded
        seeded, (scenarios, _, _) = asyncio.run(
            prepare(stack.postgres.url, settings, config, root / "plans")
        )
        print(f"seeded {seeded.describe()}", flush=True)
        chosen = [s for s in scenarios if s.name in ("goals_list", "notifications_page1")]
        for repetition in range(args.repetitions):
            for workers in args.workers:
                for pool in args.pools:
                    env = {
                        **app_env(stack, secret, config),
                        "DATABASE_POOL_SIZE": str(pool),
                        "DATABASE_READ_POOL_SIZE": str(pool),
                    }
                    spec = apps.REAL
                    with apps.running(spec, env, root, "/goals", workers=workers) as app:
                        for scenario in chosen:
                            script = wrk.write_script(
                                root,
                                f"{scenario.name}-{pool}-{workers}",
                                scenario.entries,
                                WRK_THREADS,
                            )
                            url = app.base_url + scenario.entries[0].path
                            options = {"threads": WRK_THREADS, "connections": 64}
                            wrk.run(url, script, duration=config.warmup, **options)
                            before = _cpu(app.process.pid)
                            result, _ = wrk.run(url, script, duration=args.duration, **options)
                            cpu = _cpu(app.process.pid) - before
                            key = f"{scenario.name} pool={pool} workers={workers}"
                            results.setdefault(key, []).append(
                                {
                                    **result.as_dict(),
                                    "cpu_us_per_request": cpu * 1e6 / max(result.requests, 1),
                                }
                            )
                            print(
                                f"  rep {repetition + 1} {key:<40} "
                                f"{result.requests_per_second:>8,.0f} req/s  "
                                f"p99 {result.p99_ms:7.1f} ms",
                                flush=True,
                            )
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    summary = {
        key: {
            field: spread([run[field] for run in runs])
            for field in ("requests_per_second", "p50_ms", "p99_ms", "cpu_us_per_request")
        }
        for key, runs in results.items()
    }
    print(
        "\nconfiguration                              req/s (min–max)        p99 ms (min–max)   CPU µs/req"
    )
    for key, row in summary.items():
        rps, p99 = row["requests_per_second"], row["p99_ms"]
        print(
            f"{key:<42} {rps['median']:>7,.0f} ({rps['min']:,.0f}–{rps['max']:,.0f})"
            f"   {p99['median']:7.1f} ({p99['min']:.0f}–{p99['max']:.0f})"
            f"   {row['cpu_us_per_request']['median']:6.0f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "loadavg_before": load_before,
                "loadavg_after": loadavg(),
                "summary": summary,
                "runs": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
