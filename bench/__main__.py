"""GET /goals: Goaltrack against the raw-asyncpg ceiling (and the template-style peer), same run.

    uv run python -m bench              # 3 × 15 s per app, 1,000 users × 20 goals
    uv run python -m bench --smoke      # proves the benchmark works (CI), under a minute

Starts a throwaway local stack (PostgreSQL + Redis), migrates, seeds, mints one real access token
per user, then runs each app in its own uvicorn process (1 worker, uvloop + httptools), one at a
time, alternating within every repetition: baseline, Goaltrack, peer, baseline, Goaltrack, ...
Load is wrk rotating through every user's token. Absolute figures drift on a shared machine; the
ratios inside one repetition are what we compare (see docs/performance.md).
BENCH_POOL_SIZE sets Goaltrack's DATABASE_POOL_SIZE (default 10, as in production).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from bench import apps, wrk
from bench.explain import run_on as explain_on
from bench.seed import Seeded, asyncpg_dsn, mint_tokens, seed
from goaltrack.config import Settings
from goaltrack.dev.localstack import LocalStack, free_port
from goaltrack.migrations import upgrade

PAGE_SIZE = 20
WRK_THREADS = 2


@dataclass(frozen=True, slots=True)
class Config:
    duration: float
    repetitions: int
    users: int
    goals_per_user: int
    connections: int
    warmup: float
    json_path: Path
    with_peer: bool
    explain_goals: int
    smoke: bool


@dataclass
class Measurement:
    app: str
    repetition: int
    result: wrk.WrkResult


@dataclass
class Report:
    config: Config
    seeded: Seeded
    measurements: list[Measurement] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny data, 2 s runs, 1 repetition (CI)"
    )
    parser.add_argument("--duration", type=float, default=15, help="seconds per measured run")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--goals-per-user", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before measuring")
    parser.add_argument("--no-peer", action="store_true", help="skip the template-style peer")
    parser.add_argument(
        "--explain-goals",
        type=int,
        default=0,
        metavar="N",
        help="seed one more user with N goals (not in the load) and print the list query's plans",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (bench/results/latest.json; smoke.json with --smoke)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.repetitions, args.users, args.warmup = 2, 1, 100, 1
    if args.goals_per_user < 1 or args.users < 1 or args.repetitions < 1:
        parser.error("--users, --goals-per-user and --repetitions must be at least 1")
    with_peer = not args.no_peer and importlib.util.find_spec("psycopg") is not None
    if not args.no_peer and not with_peer:
        print("psycopg is not installed: skipping the template-style peer", file=sys.stderr)
    return Config(
        duration=args.duration,
        repetitions=args.repetitions,
        users=args.users,
        goals_per_user=args.goals_per_user,
        connections=args.connections,
        warmup=args.warmup,
        json_path=args.json or Path("bench/results", "smoke.json" if args.smoke else "latest.json"),
        with_peer=with_peer,
        explain_goals=args.explain_goals,
        smoke=args.smoke,
    )


async def prepare_database(
    database_url: str, settings: Settings, config: Config
) -> tuple[Seeded, list[str]]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        seeded = await seed(
            conn,
            users=config.users,
            goals_per_user=config.goals_per_user,
            heavy_goals=config.explain_goals,
        )
        tokens = await mint_tokens(conn, settings, config.users)
    finally:
        await conn.close()
    return seeded, tokens


def app_env(stack: LocalStack, jwt_secret: str) -> dict[str, str]:
    return {
        **stack.env(),
        "APP_ENV": "development",
        "JWT_SECRET": jwt_secret,
        "JWT_ISSUER": "goaltrack",
        "DATABASE_POOL_SIZE": os.environ.get("BENCH_POOL_SIZE", "10"),
        # No S3 in this run: a closed port fails the start-up bucket check at once (logged only).
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "PYTHONUNBUFFERED": "1",
    }


def measure(
    config: Config,
    specs: list[apps.AppSpec],
    env: dict[str, str],
    work_dir: Path,
    tokens: list[str],
) -> list[Measurement]:
    script = wrk.write_script(work_dir, tokens)
    expected = min(config.goals_per_user, PAGE_SIZE)
    reference: list[str] | None = None
    measurements: list[Measurement] = []
    for repetition in range(1, config.repetitions + 1):
        for spec in specs:
            with apps.running(spec, env, work_dir) as app:
                ids = apps.check_goals(app, tokens[0], expected)
                if reference is None:
                    reference = ids
                elif ids != reference:
                    raise apps.AppError(f"{spec.key} returned other goals than the baseline")
                wrk.run(
                    app.base_url + "/goals",
                    script,
                    threads=WRK_THREADS,
                    connections=config.connections,
                    duration=config.warmup,
                )
                result, output = wrk.run(
                    app.base_url + "/goals",
                    script,
                    threads=WRK_THREADS,
                    connections=config.connections,
                    duration=config.duration,
                )
                if result.non_2xx:
                    raise apps.AppError(
                        f"{spec.key}: {result.non_2xx} non-2xx responses under load:\n{output}\n"
                        f"{app.log_tail()}"
                    )
            measurements.append(Measurement(spec.key, repetition, result))
            print(
                f"  rep {repetition}/{config.repetitions}  {spec.key:<14} "
                f"{result.requests_per_second:>9,.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
                f"p99 {result.p99_ms:7.2f} ms"
                + (f"  socket errors {result.socket_errors}" if result.socket_errors else ""),
                flush=True,
            )
    return measurements


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(measurements: list[Measurement], specs: list[apps.AppSpec]) -> dict[str, Any]:
    by_app: dict[str, dict[int, wrk.WrkResult]] = {}
    for m in measurements:
        by_app.setdefault(m.app, {})[m.repetition] = m.result
    summary: dict[str, Any] = {"apps": {}, "ratios": {}}
    for spec in specs:
        runs = list(by_app[spec.key].values())
        summary["apps"][spec.key] = {
            "label": spec.label,
            "requests_per_second": _spread([r.requests_per_second for r in runs]),
            "p50_ms": _spread([r.p50_ms for r in runs]),
            "p99_ms": _spread([r.p99_ms for r in runs]),
            "socket_errors": sum(r.socket_errors for r in runs),
        }
    pairs = [(spec.key, apps.BASELINE.key) for spec in specs if spec.key != apps.BASELINE.key]
    if apps.PEER.key in by_app:
        pairs.append((apps.REAL.key, apps.PEER.key))
    for numerator, denominator in pairs:
        per_repetition = [
            by_app[numerator][rep].requests_per_second
            / by_app[denominator][rep].requests_per_second
            for rep in sorted(by_app[numerator])
        ]
        summary["ratios"][f"{numerator}/{denominator}"] = {
            **_spread(per_repetition),
            "per_repetition": per_repetition,
        }
    return summary


def print_table(summary: dict[str, Any], report: Report) -> None:
    config = report.config
    print(
        f"\nGET /goals — {report.seeded.users:,} users, {report.seeded.goals:,} goals, "
        f"page {PAGE_SIZE}; wrk -t{WRK_THREADS} -c{config.connections} -d{config.duration:g}s; "
        f"{config.repetitions} repetition(s); 1 uvicorn worker each"
    )
    ratios = summary["ratios"]
    rows = [("app", "req/s median (min–max)", "p50 ms", "p99 ms (max)", "÷ baseline (min–max)")]
    for key, app in summary["apps"].items():
        rps, p99 = app["requests_per_second"], app["p99_ms"]
        ratio = ratios.get(f"{key}/{apps.BASELINE.key}")
        rows.append(
            (
                key,
                f"{rps['median']:,.0f} ({rps['min']:,.0f}–{rps['max']:,.0f})",
                f"{app['p50_ms']['median']:.1f}",
                f"{p99['median']:.1f} ({p99['max']:.1f})",
                f"{ratio['median']:.2f} ({ratio['min']:.2f}–{ratio['max']:.2f})" if ratio else "1",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
        if number == 0:
            print("  ".join("-" * w for w in widths))
    peer_ratio = ratios.get(f"{apps.REAL.key}/{apps.PEER.key}")
    if peer_ratio:
        print(
            f"\n{apps.REAL.key} ÷ {apps.PEER.key}: {peer_ratio['median']:.2f} "
            f"({peer_ratio['min']:.2f}–{peer_ratio['max']:.2f})"
        )
    print(
        "ratios: median of the per-repetition ratios (min–max); "
        "targets: ≥ 0.5 × baseline, ≥ 4 × peer"
    )


def _git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision + ("+dirty" if dirty else "")


def write_json(summary: dict[str, Any], report: Report) -> None:
    config = report.config
    document = {
        "benchmark": "GET /goals",
        "finished_at": datetime.now(UTC).isoformat(),
        "git": _git_revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "smoke": config.smoke,
            "duration_s": config.duration,
            "warmup_s": config.warmup,
            "repetitions": config.repetitions,
            "connections": config.connections,
            "wrk_threads": WRK_THREADS,
            "users": report.seeded.users,
            "goals": report.seeded.goals,
            "goals_per_user_active": config.goals_per_user,
        },
        "summary": summary,
        "runs": [
            {"app": m.app, "repetition": m.repetition, **m.result.as_dict()}
            for m in report.measurements
        ],
    }
    config.json_path.parent.mkdir(parents=True, exist_ok=True)
    config.json_path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {config.json_path}")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    specs = [apps.BASELINE, apps.REAL, *([apps.PEER] if config.with_peer else [])]
    started = time.monotonic()
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="goaltrack-bench-", dir=base))
    root.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    stack = LocalStack(root, with_s3=False)
    try:
        stack.start()
        upgrade(stack.postgres.url)
        jwt_secret = secrets.token_hex(32)
        settings = Settings(
            database_url=stack.postgres.url,
            jwt_secret=SecretStr(jwt_secret),
            access_token_ttl_seconds=24 * 3600,
        )
        seeded, tokens = asyncio.run(prepare_database(stack.postgres.url, settings, config))
        print(
            f"stack up, {seeded.users:,} users and {seeded.goals:,} goals seeded "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        report = Report(config, seeded)
        report.measurements = measure(config, specs, app_env(stack, jwt_secret), root, tokens)
        summary = summarise(report.measurements, specs)
        print_table(summary, report)
        write_json(summary, report)
        ok = True
        if config.explain_goals:
            ok = asyncio.run(explain_on(stack.postgres.url))
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
