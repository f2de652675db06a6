"""Every hot path against its ceiling (and, for the reads, the template-style peer), same run.

    uv run python -m bench                       # 3 repetitions × 6 s per app and scenario
    uv run python -m bench --repetitions 5 --duration 15
    uv run python -m bench --smoke               # proves the benchmark works (CI), ~1 minute

Starts a throwaway local stack (PostgreSQL + Redis), migrates, seeds (10,000 users × 20 goals ×
~5 stages, attachments, 5 reminders per active goal = 1 M, 90 notifications per user plus one
user with 100,000 = 1 M, achievements as the history earns them), mints one real access token per
user, then starts the three apps side by side, each in its own uvicorn process (1 worker, uvloop +
httptools, the same DATABASE_READ_POOL_SIZE): Goaltrack (APP_ENV=production), the ceiling
(bench/baseline.py: Starlette + raw asyncpg + orjson, the same SQL and JSON bytes) and the peer
(bench/peer_template.py, the official template's style; reads only). In every repetition each
scenario is run on each app in turn (the order rotates), wrk -t2 -c64, after a warm-up; ratios
are taken within a repetition, then their median and min–max over repetitions. The server's CPU
time per request comes from /proc (robust on a noisy machine), and so does the CPU the machine
spent on other work during each run (bench/host.py). The conditional requests (a 304 for an
ETag still current) and a caught-up GET /sync are ours only: their checks compare our CPU per
request with our own 200 of the same resource (`cpu_checks`, printed after the table). Then the hot read under a login
flood, the RSS after the run, and (not in --smoke) the scheduler tick over 10 k and 1 M reminders.
Writes bench/results/latest.json (smoke.json with --smoke) and latest.svg.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pwdlib import PasswordHash
from pwdlib.hashers.bcrypt import BcryptHasher
from pydantic import SecretStr

from bench import apps, chart, wrk
from bench.host import HostLoad
from bench.plans import PLANS, write_plans
from bench.scenarios import Scenario, build
from bench.seed import REGULAR_USERS, Seeded, asyncpg_dsn, seed
from goaltrack.config import Settings
from goaltrack.dev.localstack import LocalStack, free_port
from goaltrack.migrations import upgrade

WRK_THREADS = 2
BENCH_PASSWORD = "bench password 1"  # every seeded user's, for the login flood
LOGIN_FLOOD_CONCURRENCY = 20
RSS_REQUESTS = 200_000
# A 304's status line and headers, with room to spare; a 200 of a goal or a list is ≥ 3 KB.
NOT_MODIFIED_BYTES = 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RESULTS = Path("bench/results")


@dataclass(frozen=True, slots=True)
class Config:
    duration: float
    repetitions: int
    users: int
    habit_pairs: int
    connections: int
    warmup: float
    pool: int
    json_path: Path
    with_peer: bool
    with_tick: bool
    smoke: bool
    before: str | None = None
    # Only these scenarios (no login flood, RSS top-up or tick): a quick look while working.
    only: tuple[str, ...] = ()


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny data, 1 s runs, no warm-up, 1 repetition"
    )
    parser.add_argument("--duration", type=float, default=6, help="seconds per measured run")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument(
        "--habit-pairs",
        type=int,
        default=100,
        help="users with 20 five-year-old habits, and as many twins with 20 plain goals",
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before each run")
    parser.add_argument(
        "--pool", type=int, default=10, help="read pool size, the same for every app"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the template-style peer")
    parser.add_argument("--no-tick", action="store_true", help="skip the scheduler tick")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    parser.add_argument(
        "--before",
        metavar="REV",
        default=None,
        help="also run Goaltrack as it was at this git revision (ratios after ÷ before)",
    )
    parser.add_argument(
        "--only",
        metavar="NAME,...",
        default="",
        help="only these scenarios, e.g. complete_stage,create_goal (results to partial.json)",
    )
    args = parser.parse_args(argv)
    only = tuple(name for name in args.only.split(",") if name)
    if args.smoke:
        # No warm-up: the smoke run proves each scenario works on each app, it measures nothing.
        args.duration, args.repetitions, args.users, args.warmup = 1, 1, 200, 0
        args.habit_pairs = 4
    if args.users < 10 or args.repetitions < 1:
        parser.error("--users must be at least 10 and --repetitions at least 1")
    with_peer = not args.no_peer and importlib.util.find_spec("psycopg") is not None
    return Config(
        duration=args.duration,
        repetitions=args.repetitions,
        users=args.users,
        habit_pairs=args.habit_pairs,
        connections=args.connections,
        warmup=args.warmup,
        pool=args.pool,
        json_path=args.json
        or RESULTS / ("smoke.json" if args.smoke else "partial.json" if only else "latest.json"),
        with_peer=with_peer,
        with_tick=not (args.no_tick or args.smoke or only),
        smoke=args.smoke,
        before=args.before,
        only=only,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process, all its threads (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().strip()
    return "?"


async def prepare(
    database_url: str, settings: Settings, config: Config, plans_dir: Path
) -> tuple[Seeded, Any]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        seeded = await seed(
            conn,
            users=config.users,
            goals_per_user=20,
            details=True,
            notifications_per_user=10 if config.smoke else 90,
            heavy_notifications=20 * 500 + 100 if config.smoke else 100_000,
            habit_twins=config.habit_pairs,
        )
        # Cost 12, as in production: the login flood is real bcrypt work.
        password_hash = PasswordHash((BcryptHasher(rounds=12),)).hash(BENCH_PASSWORD)
        await conn.execute("UPDATE users SET password_hash = $1", password_hash)
        scenarios = await build(
            conn, settings, users=config.users, write_slices=4 * config.repetitions + 4
        )
        # Planned once the sessions exist (a login leaves a refresh token per device), as in use.
        await conn.execute("ANALYZE refresh_tokens")
        plan_findings = await write_plans(conn, plans_dir)
        emails = [
            row["email"]
            for row in await conn.fetch(
                f"SELECT email FROM users WHERE {REGULAR_USERS} ORDER BY created_at LIMIT 200"
            )
        ]
    finally:
        await conn.close()
    return seeded, (scenarios, emails, plan_findings)


def app_env(stack: LocalStack, jwt_secret: str, config: Config) -> dict[str, str]:
    return {
        **stack.env(),
        "APP_ENV": "production",
        "JWT_SECRET": jwt_secret,
        "JWT_ISSUER": "goaltrack",
        "ACCESS_TOKEN_TTL_SECONDS": str(24 * 3600),
        "DATABASE_READ_POOL_SIZE": str(config.pool),
        "DATABASE_POOL_SIZE": str(config.pool),
        "LOG_LEVEL": "WARNING",
        # Production's start-up checks; nothing here sends mail.
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(free_port()),
        "S3_SECRET_ACCESS_KEY": secrets.token_hex(16),
        "PASSWORD_RESET_URL": "https://goaltrack.example.com/reset-password?token={token}",
        # The flood measures bcrypt's effect on the reads, not the rate limiter's 429s.
        "RATE_LIMIT_LOGIN": "1000000/minute",
        "RATE_LIMIT_LOGIN_IP": "1000000/minute",
        # No S3 in this run (presigning needs none): a closed port fails the start-up check fast.
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "PYTHONUNBUFFERED": "1",
    }


def start_side_by_side(
    running: contextlib.ExitStack, specs: list[Any], env: dict[str, str], root: Path
) -> dict[str, apps.RunningApp]:
    """`apps.running` for every spec at once (threads wait for the processes to serve); each
    one started is stopped by `running`, also when another failed to start."""
    managers = {spec.key: apps.running(spec, env, root, "/goals") for spec in specs}
    with ThreadPoolExecutor(len(managers)) as pool:
        entering = {key: pool.submit(manager.__enter__) for key, manager in managers.items()}
    started: dict[str, apps.RunningApp] = {}
    failure: BaseException | None = None
    for key, future in entering.items():
        try:
            started[key] = future.result()
        except BaseException as exc:  # re-raised below, once the others are in `running`
            failure = failure or exc
        else:
            running.push(managers[key].__exit__)
    if failure is not None:
        raise failure
    return started


def serves(key: str, scenario: Scenario) -> bool:
    """Whether the app `key` takes part in the scenario (the peer only in the hot reads, the
    ceiling and the build before not in what they do not implement)."""
    if key == apps.PEER.key:
        return scenario.with_peer
    if key == apps.BASELINE.key:
        return scenario.with_ceiling
    if key == "goaltrack_before":
        return scenario.with_before
    return True


def check(app: apps.RunningApp, scenario: Scenario) -> None:
    """The expected answer to the first entry, and for a read also to its middle and last ones
    (wrk counts a 200 where a 304 was expected as a success)."""
    entries = scenario.entries
    sample = (
        [entries[0]]
        if not scenario.hot_read
        else [entries[0], entries[len(entries) // 2], entries[-1]]
    )
    with httpx.Client(base_url=app.base_url, timeout=30.0) as client:
        for entry in sample:
            path = (
                entry.alternate or entry.path
            )  # a write: completing the completed stage is a no-op
            response = client.request(
                entry.method,
                path,
                headers={
                    "Authorization": f"Bearer {entry.token}",
                    "Content-Type": "application/json",
                    **dict(entry.headers),
                },
                content=entry.body,
            )
            if response.status_code != scenario.expected_status or (
                scenario.expected_in_body is not None
                and scenario.expected_in_body not in response.content
            ):
                raise apps.AppError(
                    f"{app.spec.key} {scenario.name}: {entry.method} {path} answered "
                    f"{response.status_code}: {response.text[:300]}\n{app.log_tail()}"
                )


async def refresh(database_url: str, scenario: Scenario) -> Scenario:
    """The scenario with the data's current versions (ETags, sync cursors): the writes move them."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await scenario.refreshed(conn)
    finally:
        await conn.close()


def settle(app: apps.RunningApp, timeout: float = 60.0) -> None:
    """Wait until the app has finished what wrk left queued (its CPU stops moving): a slow app's
    backlog must not run into the next app's measurement."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(app.process.pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = cpu_seconds(app.process.pid)
        if now - last < 0.02:
            return
        last = now


def run_one(
    config: Config,
    app: apps.RunningApp,
    scenario: Scenario,
    work_dir: Path,
    run_index: int,
    host: HostLoad | None = None,
) -> dict[str, Any]:
    """`run_index`: this scenario's how-manieth run (a write's runs each get their own slice).
    With `host`: also the CPU the machine spent on other work during the measured run."""
    entries = scenario.slice(run_index)
    name = f"{scenario.name}-{app.spec.key}-{run_index}"
    script = wrk.write_script(work_dir, name, entries, WRK_THREADS)
    url = app.base_url + entries[0].path
    options = {"threads": WRK_THREADS, "connections": config.connections}
    if config.warmup > 0:
        wrk.run(url, script, duration=config.warmup, **options)
        settle(app)
    mark = host.mark() if host else None
    before = cpu_seconds(app.process.pid)
    result, output = wrk.run(url, script, duration=config.duration, **options)
    cpu = cpu_seconds(app.process.pid) - before
    foreign = host.since(mark, config.duration) if host and mark else {}
    settle(app)
    if scenario.expected_status == 304 and result.bytes_per_response > NOT_MODIFIED_BYTES:
        # wrk counts a 200 as a success too: bodies mean ETags that were no longer current.
        raise apps.AppError(
            f"{app.spec.key} {scenario.name}: {result.bytes_per_response:,.0f} bytes per "
            "response where 304s (headers only) were expected"
        )
    if result.non_2xx or result.socket_errors:
        raise apps.AppError(
            f"{app.spec.key} {scenario.name}: {result.non_2xx} non-2xx, {result.socket_errors} "
            f"socket errors under load:\n{output}\n{app.log_tail()}"
        )
    return {
        **result.as_dict(),
        "cpu_us_per_request": cpu * 1e6 / max(result.requests, 1),
        **foreign,
    }


def login_flood(url: str, emails: list[str], duration: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.login_flood",
            url,
            BENCH_PASSWORD,
            str(LOGIN_FLOOD_CONCURRENCY),
            str(duration),
            *emails,
        ],
        stdout=subprocess.PIPE,
    )


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(
    runs: list[dict[str, Any]], scenarios: list[Scenario], flood: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    by: dict[tuple[str, str, int], dict[str, Any]] = {
        (r["scenario"], r["app"], r["repetition"]): r for r in runs
    }
    repetitions = sorted({r["repetition"] for r in runs})
    summary = []
    for scenario in scenarios:

        def ratios(numerator: str, denominator: str, key: str, name: str = scenario.name) -> Any:
            # A run that served nothing (an old build's pathological query) has no ratio.
            values = [
                by[(name, numerator, rep)][key] / by[(name, denominator, rep)][key]
                for rep in repetitions
                if (name, denominator, rep) in by and by[(name, denominator, rep)][key] > 0
            ]
            return values

        ceiling = ratios("goaltrack", "baseline", "requests_per_second")
        p99 = ratios("goaltrack", "baseline", "p99_ms")
        peer = ratios("goaltrack", "peer_template", "requests_per_second")
        before = ratios("goaltrack", "goaltrack_before", "requests_per_second")
        before_cpu = ratios("goaltrack", "goaltrack_before", "cpu_us_per_request")
        # Ours only (a conditional request, sync): no ratio to a ceiling that did not run it.
        entry: dict[str, Any] = {
            "name": scenario.name,
            "hot_read": scenario.hot_read,
            "ratio_to_ceiling": statistics.median(ceiling) if ceiling else None,
            "ratio_to_peer": statistics.median(peer) if peer else None,
            "p99_ratio_to_ceiling": statistics.median(p99) if p99 else None,
            "ratio_to_ceiling_range": [min(ceiling), max(ceiling)] if ceiling else None,
            "ratio_to_peer_range": [min(peer), max(peer)] if peer else None,
            "p99_ratio_to_ceiling_range": [min(p99), max(p99)] if p99 else None,
            "apps": {},
        }
        if before:
            entry["ratio_to_before"] = statistics.median(before)
            entry["ratio_to_before_range"] = [min(before), max(before)]
            entry["cpu_ratio_to_before"] = statistics.median(before_cpu)
        for app_key in ("goaltrack", "baseline", "peer_template", "goaltrack_before"):
            mine = [
                by[(scenario.name, app_key, rep)]
                for rep in repetitions
                if (scenario.name, app_key, rep) in by
            ]
            if mine:
                entry["apps"][app_key] = {
                    key: _spread([m[key] for m in mine])
                    for key in (
                        "requests_per_second",
                        "p50_ms",
                        "p99_ms",
                        "cpu_us_per_request",
                        "bytes_per_response",
                        "foreign_cores",
                        "steal_cores",
                    )
                    if all(key in m for m in mine)
                }
        summary.append(entry)
    if flood:
        solo = [by[("goals_list", "goaltrack", f["repetition"])] for f in flood]
        p99_rise = [f["p99_ms"] / s["p99_ms"] for f, s in zip(flood, solo, strict=True)]
        rps_kept = [
            f["requests_per_second"] / s["requests_per_second"]
            for f, s in zip(flood, solo, strict=True)
        ]
        summary.append(
            {
                "name": "goals_list_under_login_flood",
                "hot_read": True,
                "ratio_to_ceiling": None,
                "ratio_to_peer": None,
                "p99_ratio_to_ceiling": None,
                "p99_ratio_to_solo": statistics.median(p99_rise),
                "p99_ratio_to_solo_range": [min(p99_rise), max(p99_rise)],
                "throughput_ratio_to_solo": statistics.median(rps_kept),
                "logins_per_second": _spread([f["logins_per_second"] for f in flood]),
                "login_p99_ms": _spread([f["login_p99_ms"] for f in flood]),
                "apps": {"goaltrack": {"p99_ms": _spread([f["p99_ms"] for f in flood])}},
            }
        )
    return summary


# The issues' checks, each our CPU per request in one scenario ÷ in another, at most `limit`:
# 20 habits of 1,800 check-ins cost at most 10 % more than 20 plain goals (#21); a 304 costs at
# most half the 200 of the same resource; a caught-up GET /sync no more than GET /goals.
CPU_CHECKS = (
    ("goals_list_habits", "goals_list_plain", 1.1),
    ("goal_detail_304", "goal_detail", 0.5),
    ("goals_list_304", "goals_list", 0.5),
    ("sync_idle", "goals_list", 1.0),
)


def cpu_checks(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each check from the runs (as latest.json holds them): the ratio within each repetition
    (the two scenarios ran minutes apart at most), their median and min–max, and whether the
    median holds. A check whose scenarios did not both run is left out."""
    cpu = {
        (r["scenario"], r["repetition"]): r["cpu_us_per_request"]
        for r in runs
        if r["app"] == apps.REAL.key
    }
    checks = []
    for numerator, denominator, limit in CPU_CHECKS:
        values = [
            cpu[numerator, rep] / cpu[denominator, rep]
            for (name, rep) in cpu
            if name == numerator and (denominator, rep) in cpu and cpu[denominator, rep] > 0
        ]
        if values:
            median = statistics.median(values)
            checks.append(
                {
                    "name": f"{numerator} ÷ {denominator}, CPU µs/request",
                    "limit": limit,
                    "median": median,
                    "range": [min(values), max(values)],
                    "holds": median <= limit,
                }
            )
    return checks


def print_checks(checks: list[dict[str, Any]]) -> None:
    for c in checks:
        print(
            f"{c['name']}: {c['median']:.2f} ({c['range'][0]:.2f}–{c['range'][1]:.2f}), "
            f"limit {c['limit']:g}: {'holds' if c['holds'] else 'DOES NOT HOLD'}"
        )


def print_table(summary: list[dict[str, Any]]) -> None:
    def rng(value: Any, spread: Any) -> str:
        if value is None:
            return "—"
        return f"{value:.2f} ({spread[0]:.2f}–{spread[1]:.2f})"

    rows = [
        (
            "scenario",
            "÷ ceiling",
            "÷ peer",
            "p99 ÷ ceiling p99",
            "ours req/s",
            "ours CPU µs/req",
            "ceiling CPU µs/req",
            "÷ before (CPU ÷ before)",
            "other work, cores",
        )
    ]
    for s in summary:
        if "apps" not in s:
            continue  # the scheduler tick: printed on its own line
        ours = s["apps"].get("goaltrack", {})
        ceiling = s["apps"].get("baseline", {})
        if s["name"] == "goals_list_under_login_flood":
            rows.append(
                (
                    s["name"],
                    "—",
                    "—",
                    f"p99 ÷ solo {rng(s['p99_ratio_to_solo'], s['p99_ratio_to_solo_range'])}",
                    f"{s['throughput_ratio_to_solo']:.2f} of solo",
                    f"{s['logins_per_second']['median']:.1f} logins/s",
                    "",
                    "",
                    "",
                )
            )
            continue
        rows.append(
            (
                s["name"],
                rng(s["ratio_to_ceiling"], s["ratio_to_ceiling_range"]),
                rng(s["ratio_to_peer"], s["ratio_to_peer_range"]),
                rng(s["p99_ratio_to_ceiling"], s["p99_ratio_to_ceiling_range"]),
                f"{ours['requests_per_second']['median']:,.0f}",
                f"{ours['cpu_us_per_request']['median']:,.0f}",
                f"{ceiling['cpu_us_per_request']['median']:,.0f}" if ceiling else "",
                (
                    f"{rng(s['ratio_to_before'], s['ratio_to_before_range'])} "
                    f"({s['cpu_ratio_to_before']:.2f})"
                )
                if "ratio_to_before" in s
                else "",
                f"{ours['foreign_cores']['median']:.2f}" if "foreign_cores" in ours else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "ratios: median of the per-repetition ratios (min–max). Targets: hot reads ≥ 0.5 × "
        "ceiling, ≥ 4 × peer, p99 ≤ 3 × ceiling's; writes ≥ 0.3 × ceiling; flood p99 ≤ 2 × solo"
    )


def _git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "bench"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision + ("+dirty" if dirty else "")


def scheduler_tick(work_dir: Path) -> dict[str, Any] | None:
    path = work_dir / "tick.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.scheduler_tick", "--runs", "3", "--json", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not path.exists():
        print(f"scheduler tick failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    started = time.monotonic()
    load_before = loadavg()
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="goaltrack-bench-", dir=base))
    root.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    stack = LocalStack(root, with_s3=False)
    specs = [apps.REAL, apps.BASELINE, *([apps.PEER] if config.with_peer else [])]
    if config.before:
        source = root / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(source), config.before],
            check=True,
            capture_output=True,
        )
        specs.append(apps.before(config.before, source / "src"))
    runs: list[dict[str, Any]] = []
    flood: list[dict[str, Any]] = []
    rss: dict[str, Any] = {}
    try:
        stack.start()
        upgrade(stack.postgres.url)
        jwt_secret = secrets.token_hex(32)
        settings = Settings(
            database_url=stack.postgres.url,
            jwt_secret=SecretStr(jwt_secret),
            access_token_ttl_seconds=24 * 3600,
        )
        # The smoke run's tiny tables make other plans: its go to the scratch directory.
        plans_dir = root / "plans" if config.smoke else PLANS
        seeded, (scenarios, emails, plan_findings) = asyncio.run(
            prepare(stack.postgres.url, settings, config, plans_dir)
        )
        print(
            f"query plans in {plans_dir}: "
            + (
                "; ".join(plan_findings.problems)
                or "no sequential scan on a large table, no check-in read by a list"
            )
            + "; run once per listed goal: "
            + ("; ".join(plan_findings.per_row) or "nothing"),
            flush=True,
        )
        print(f"seeded {seeded.describe()} in {time.monotonic() - started:.0f} s", flush=True)
        if config.only:
            scenarios = [s for s in scenarios if s.name in config.only]
        env = app_env(stack, jwt_secret, config)
        with contextlib.ExitStack() as running:
            if config.smoke:  # nothing is measured yet: the apps may start side by side
                started_apps = start_side_by_side(running, specs, env, root)
            else:
                started_apps = {
                    spec.key: running.enter_context(apps.running(spec, env, root, "/goals"))
                    for spec in specs
                }
            ours = started_apps[apps.REAL.key]
            host = HostLoad(stack.postgres.data_dir)
            for scenario in scenarios:
                for key, app in started_apps.items():
                    if serves(key, scenario):
                        check(app, scenario)
            rss["after_start_mib"] = rss_mib(ours.process.pid)
            served = 0
            runs_of: dict[str, int] = {}
            for repetition in range(1, config.repetitions + 1):
                for scenario in scenarios:
                    keys = [k for k in started_apps if serves(k, scenario)]
                    shift = repetition % len(keys)
                    for key in keys[shift:] + keys[:shift]:
                        current = scenario
                        if scenario.refresh is not None:
                            current = asyncio.run(refresh(stack.postgres.url, scenario))
                            check(started_apps[key], current)
                        runs_of[scenario.name] = runs_of.get(scenario.name, 0) + 1
                        measured = run_one(
                            config, started_apps[key], current, root, runs_of[scenario.name], host
                        )
                        if key == apps.REAL.key:
                            served += measured["requests"]
                        runs.append(
                            {
                                "scenario": scenario.name,
                                "app": key,
                                "repetition": repetition,
                                **measured,
                            }
                        )
                        print(
                            f"  rep {repetition}/{config.repetitions}  {scenario.name:<22} "
                            f"{key:<14} {measured['requests_per_second']:>8,.0f} req/s  "
                            f"p99 {measured['p99_ms']:7.1f} ms  "
                            f"{measured['cpu_us_per_request']:6,.0f} µs CPU/req  "
                            f"{measured['bytes_per_response']:6,.0f} B/resp  "
                            f"other work {measured['foreign_cores']:.2f} cores",
                            flush=True,
                        )
                if config.only:
                    continue
                # The hot read again, with 20 logins (bcrypt cost 12) running beside it.
                goals_list = scenarios[0]
                flooder = login_flood(ours.base_url, emails, config.warmup + config.duration + 1)
                runs_of["flood"] = runs_of.get("flood", 0) + 1
                measured = run_one(config, ours, goals_list, root, 100 + runs_of["flood"])
                out, _ = flooder.communicate(timeout=120)
                logins = json.loads(out)
                served += measured["requests"]
                flood.append({"repetition": repetition, **measured, **logins})
                print(
                    f"  rep {repetition}/{config.repetitions}  {'goals_list + login flood':<22} "
                    f"{'goaltrack':<14} {measured['requests_per_second']:>8,.0f} req/s  "
                    f"p99 {measured['p99_ms']:7.1f} ms  ({logins['logins_per_second']:.1f} "
                    f"logins/s, {logins['errors']} login errors)",
                    flush=True,
                )
            if not (config.smoke or config.only) and served < RSS_REQUESTS:
                # Top the app up to 200 k requests, for the memory figure.
                script = wrk.write_script(root, "rss", scenarios[0].entries, WRK_THREADS)
                while served < RSS_REQUESTS:
                    result, _ = wrk.run(
                        ours.base_url + "/goals",
                        script,
                        threads=WRK_THREADS,
                        connections=config.connections,
                        duration=10,
                    )
                    served += result.requests
            rss["after_requests_mib"] = rss_mib(ours.process.pid)
            rss["requests"] = served
        tick = scheduler_tick(root) if config.with_tick else None
    finally:
        stack.stop()
        if config.before:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(root / "before")],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)

    summary = summarise(runs, scenarios, flood)
    checks = cpu_checks(runs)
    if tick is not None:
        summary.append(
            {
                "name": "scheduler_tick_1M_vs_10k",
                "hot_read": False,
                "ratio_to_ceiling": None,
                "ratio_to_peer": None,
                "p99_ratio_to_ceiling": None,
                "ratio_large_to_small": tick.get("ratio_large_to_small"),
                "sizes": tick["sizes"],
            }
        )
    print(
        f"\n{seeded.describe()}; wrk -t{WRK_THREADS} -c{config.connections} "
        f"-d{config.duration:g}s after {config.warmup:g}s warm-up; {config.repetitions} "
        f"repetition(s); 1 uvicorn worker per app, read pool {config.pool}\n"
    )
    try:
        print_table(summary)
    except Exception as exc:  # the figures matter more than their table: still write them
        print(f"could not print the table: {exc!r}")
    print_checks(checks)
    print(
        f"RSS of the API worker: {rss['after_start_mib']:.0f} MiB after start, "
        f"{rss['after_requests_mib']:.0f} MiB after {rss['requests']:,} requests"
    )
    if tick is not None:
        print(
            f"scheduler tick, 1 M ÷ 10 k reminders (1,000 due): {tick.get('ratio_large_to_small', 0):.2f}"
        )
    document = {
        "benchmark": "hot paths against their ceiling and the template-style peer",
        "finished_at": datetime.now(UTC).isoformat(),
        "git": _git_revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        },
        "config": {
            "smoke": config.smoke,
            "duration_s": config.duration,
            "warmup_s": config.warmup,
            "repetitions": config.repetitions,
            "connections": config.connections,
            "wrk_threads": WRK_THREADS,
            "read_pool": config.pool,
            "seeded": asdict(seeded),
        },
        "scenarios": summary,
        "checks": checks,
        "rss": rss,
        "plans": asdict(plan_findings),
        "runs": runs,
        "login_flood_runs": flood,
    }
    config.json_path.parent.mkdir(parents=True, exist_ok=True)
    config.json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    svg = config.json_path.with_suffix(".svg")
    svg.write_text(chart.render(document))
    print(f"wrote {config.json_path} and {svg}; done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
