"""Every hot path against its ceiling and its peers, same run.

    uv run python -m bench                       # 3 repetitions × 6 s per app and scenario
    uv run python -m bench --repetitions 5 --duration 15
    uv run python -m bench --smoke               # proves the benchmark works (CI), < 1 minute

Starts a throwaway local stack (PostgreSQL + Redis), migrates, seeds (10,000 users × 20 goals ×
~5 stages, attachments, 5 reminders per active goal = 1 M, 90 notifications per user plus one
user with 100,000 = 1 M, achievements as the history earns them; 100 users whose 20 goals are
5-year-old daily habits with 1,800 check-ins each, and their 100 twins with 20 plain goals),
mints one real access token per user, then starts the apps side by side, each in its own uvicorn
process (1 worker, uvloop + httptools, production's pool sizes unless --pool): Goaltrack
(APP_ENV=production), the ceiling (bench/baseline.py: the same SQL with PostgreSQL writing the
JSON, Starlette + raw asyncpg + orjson, the same bytes), and for the reads two peers: the
official template's style (bench/peer_template.py: sync routes, ORM, psycopg) and the async one a
team on this stack writes (bench/peer_async.py: AsyncSession, ORM, response_model). In every
repetition each scenario is run on each app in turn (the order rotates), wrk -t2 -c64, after a
warm-up; ratios are taken within a repetition, then their median and min–max over repetitions
(bench/report.py). The primary ratio is the server's CPU time per request, from /proc (robust
on a noisy machine); /proc also gives the CPU the machine spent on other work during each run
(bench/host.py), which marks a run `disturbed`; and each app tells its verified-token cache's
hits (bench/serve.py). The conditional requests (a 304 for an ETag still current), a caught-up
GET /sync and the habits are ours only: their checks compare our CPU per request in two of our
scenarios (`cpu_checks`, printed after the table). Then the hot read under a login flood and the
RSS after the run. The writes run twice: with the rest, on a server that does not flush (fsync
off: the cost of our code), and then on the same data once the server is restarted durable
(fsync, synchronous commit and full-page writes on, data on disk: what a write pays in
production). Last (not in --smoke) the scheduler tick over 10 k and 1 M reminders.
Writes bench/results/latest.json (smoke.json with --smoke, partial.json with --only) and an SVG.
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
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
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
from bench.report import (
    CPU_CHECKS,
    cpu_checks,
    disturbed,
    entry,
    print_checks,
    print_table,
    summarise,
)
from bench.scenarios import Scenario, build
from bench.seed import REGULAR_USERS, Seeded, asyncpg_dsn, seed
from bench.sessions import SessionTokens
from goaltrack.config import Settings
from goaltrack.dev.localstack import LocalStack, Postgres, free_port
from goaltrack.migrations import upgrade

WRK_THREADS = 2
BENCH_PASSWORD = "bench password 1"  # every seeded user's, for the login flood
LOGIN_FLOOD_CONCURRENCY = 20
RSS_REQUESTS = 200_000
# A 304's status line and headers, with room to spare; a 200 of a goal or a list is ≥ 3 KB.
NOT_MODIFIED_BYTES = 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RESULTS = Path("bench/results")
# The durable server's data: on a disk (fsync on tmpfs would cost nothing).
DISK = Path("/var/tmp")
# What production runs with: the pools' sizes the bench uses unless --pool.
PRODUCTION_READ_POOL = Settings.model_fields["database_read_pool_size"].default
PRODUCTION_WRITE_POOL = Settings.model_fields["database_pool_size"].default


@dataclass(frozen=True, slots=True)
class Config:
    duration: float
    repetitions: int
    users: int
    habit_pairs: int
    connections: int
    warmup: float
    # None: production's sizes (DATABASE_READ_POOL_SIZE, DATABASE_POOL_SIZE); N: N for both.
    pool: int | None
    json_path: Path
    with_peer: bool
    with_tick: bool
    smoke: bool
    durable: bool = True
    before: str | None = None
    # Only these scenarios (no login flood, RSS top-up or tick): a quick look while working.
    only: tuple[str, ...] = ()

    @property
    def pools(self) -> dict[str, int]:
        return {
            "read": self.pool or PRODUCTION_READ_POOL,
            "write": self.pool or PRODUCTION_WRITE_POOL,
        }

    @property
    def flood_concurrency(self) -> int:
        # The smoke run proves the flood works; 20 bcrypt hashes in flight take 5 s to drain.
        return 2 if self.smoke else LOGIN_FLOOD_CONCURRENCY


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny data, 1 s runs, no warm-up, 1 repetition, the apps of a scenario at once",
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
        "--pool",
        type=int,
        default=None,
        help="read and write pool size for every app (default: production's, "
        f"{PRODUCTION_READ_POOL} and {PRODUCTION_WRITE_POOL})",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip both peers")
    parser.add_argument("--no-tick", action="store_true", help="skip the scheduler tick")
    parser.add_argument(
        "--no-durable", action="store_true", help="skip the writes on the durable server"
    )
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
        help="only these scenarios, e.g. complete_stage,create_goal_durable (results to "
        "partial.json)",
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
        durable=not args.no_durable,
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
            conn, settings, users=config.users, write_slices=6 * config.repetitions + 4
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


# What the queries read of the check-ins (the executor's counters: not VACUUM's or ANALYZE's).
CHECKIN_READS = """
SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) AS scans,
       coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS rows
FROM pg_stat_user_tables WHERE relname = 'habit_checkins'
"""


async def _query(database_url: str, sql: str) -> dict[str, Any]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        row = await conn.fetchrow(sql)
    finally:
        await conn.close()
    return dict(row) if row is not None else {}


def checkin_reads(database_url: str) -> dict[str, int]:
    """The server's counters of the scans of habit_checkins and the rows they read, so far (a
    backend reports its statistics within a second of a transaction)."""
    return asyncio.run(_query(database_url, CHECKIN_READS))


def make_durable(postgres: Postgres) -> dict[str, Any]:
    """Restarts the server on the same data with commits flushed to disk; returns the settings
    it now runs with."""
    asyncio.run(_query(postgres.url, "CHECKPOINT"))  # a short recovery after the stop
    postgres.stop()
    os.sync()  # what the first phase wrote reaches the disk now, not during the durable runs
    postgres.durable = True
    postgres.start()
    return asyncio.run(
        _query(
            postgres.url,
            "SELECT current_setting('fsync') AS fsync, "
            "current_setting('synchronous_commit') AS synchronous_commit, "
            "current_setting('full_page_writes') AS full_page_writes, "
            "current_setting('data_directory') AS data_directory",
        )
    )


def app_env(stack: LocalStack, jwt_secret: str, config: Config) -> dict[str, str]:
    return {
        **stack.env(),
        "APP_ENV": "production",
        "JWT_SECRET": jwt_secret,
        "JWT_ISSUER": "goaltrack",
        "ACCESS_TOKEN_TTL_SECONDS": str(24 * 3600),
        "DATABASE_READ_POOL_SIZE": str(config.pools["read"]),
        "DATABASE_POOL_SIZE": str(config.pools["write"]),
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


def start_apps(
    running: contextlib.ExitStack,
    specs: list[apps.AppSpec],
    env: dict[str, str],
    root: Path,
    *,
    at_once: bool,
) -> dict[str, apps.RunningApp]:
    """`apps.running` for every spec, one after the other or (`at_once`, when nothing is measured
    yet) at once, threads waiting for the processes to serve; each one started is stopped by
    `running`, also when another failed to start."""
    managers = {spec.key: apps.running(spec, env, root, "/goals") for spec in specs}
    started: dict[str, apps.RunningApp] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(len(managers) if at_once else 1) as pool:
        entering = {key: pool.submit(manager.__enter__) for key, manager in managers.items()}
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
    """Whether the app `key` takes part in the scenario (the peers only in the hot reads, the
    ceiling and the build before not in what they do not implement)."""
    if key in (apps.PEER.key, apps.ASYNC_PEER.key):
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


def _hit_rate(before: dict[str, int], after: dict[str, int], prefix: str = "") -> float | None:
    """The share of lookups a cache answered between two readings: the verified-token cache's,
    or with `prefix` "habit_" the listed habits' figures' memo."""
    if f"{prefix}hits" not in before or f"{prefix}hits" not in after:
        return None
    hits = after[f"{prefix}hits"] - before[f"{prefix}hits"]
    lookups = hits + after[f"{prefix}misses"] - before[f"{prefix}misses"]
    return hits / lookups if lookups else None


def run_one(
    config: Config,
    app: apps.RunningApp,
    scenario: Scenario,
    work_dir: Path,
    run_index: int,
    tokens: SessionTokens,
    host: HostLoad | None = None,
) -> dict[str, Any]:
    """`run_index`: this scenario's how-manieth run (a write's runs each get their own slice).
    `tokens`: the run's requests in sessions of new tokens (bench.sessions). With `host`: also
    the CPU the machine spent on other work during the measured run."""
    entries = scenario.slice(run_index)
    name = f"{scenario.name}-{app.spec.key}-{run_index}"
    url = app.base_url + entries[0].path
    options = {"threads": WRK_THREADS, "connections": config.connections}
    if config.warmup > 0:
        warmup = tokens.walk(entries, config.warmup)
        script = wrk.write_script(work_dir, f"{name}-warmup", warmup, WRK_THREADS)
        wrk.run(url, script, duration=config.warmup, **options)
        settle(app)
    script = wrk.write_script(work_dir, name, tokens.walk(entries, config.duration), WRK_THREADS)
    cache_before = app.token_cache()
    mark = host.mark() if host else None
    before = cpu_seconds(app.process.pid)
    result, output = wrk.run(url, script, duration=config.duration, **options)
    cpu = cpu_seconds(app.process.pid) - before
    foreign = host.since(mark, config.duration) if host and mark else {}
    if not config.smoke:  # the smoke run measures nothing: no backlog to wait for
        settle(app)
    cache_after = app.token_cache()
    cache_hits = _hit_rate(cache_before, cache_after)
    habit_hits = _hit_rate(cache_before, cache_after, "habit_")
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
        "token_cache_hit_rate": cache_hits,
        "habit_memo_hit_rate": habit_hits,
        **foreign,
    }


def login_flood(
    url: str, emails: list[str], concurrency: int, duration: float
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.login_flood",
            url,
            BENCH_PASSWORD,
            str(concurrency),
            str(duration),
            *emails,
        ],
        stdout=subprocess.PIPE,
    )


def _say(repetition: int, config: Config, label: str, key: str, m: dict[str, Any]) -> None:
    hits = m.get("token_cache_hit_rate")
    print(
        f"  rep {repetition}/{config.repetitions}  {label:<24} {key:<14} "
        f"{m['requests_per_second']:>8,.0f} req/s  p99 {m['p99_ms']:7.1f} ms  "
        f"{m['cpu_us_per_request']:6,.0f} µs CPU/req  {m['bytes_per_response']:6,.0f} B/resp  "
        f"token cache {'—' if hits is None else f'{hits:.0%}'}  "
        + (f"habit memo {habits:.0%}  " if (habits := m.get("habit_memo_hit_rate")) else "")
        + f"other work {m.get('foreign_cores', 0):.2f} cores"
        + ("  DISTURBED" if "foreign_cores" in m and disturbed(m) else ""),
        flush=True,
    )


@dataclass
class Bench:
    """The measured runs of one benchmark: which apps run what, in which order, with which slice."""

    config: Config
    root: Path
    database_url: str
    host: HostLoad
    tokens: SessionTokens
    runs: list[dict[str, Any]] = field(default_factory=list)
    # The checks' alternated runs of our two scenarios (`pair`).
    pairs: list[dict[str, Any]] = field(default_factory=list)
    # Runs so far per set of entries: a write's every run takes a slice no run took before.
    runs_of: dict[str, int] = field(default_factory=dict)
    served: int = 0  # requests our app served, for the RSS figure

    def _next_run(self, scenario: Scenario) -> int:
        key = scenario.entries_of or scenario.name
        self.runs_of[key] = self.runs_of.get(key, 0) + 1
        return self.runs_of[key]

    def _current(self, scenario: Scenario, started: dict[str, apps.RunningApp]) -> Scenario:
        """The scenario with the data's versions as they are now (the writes move them),
        checked on the apps about to run it."""
        if scenario.refresh is None:
            return scenario
        current = asyncio.run(refresh(self.database_url, scenario))
        for app in started.values():
            check(app, current)
        return current

    def measure(
        self, scenario: Scenario, started: dict[str, apps.RunningApp], repetition: int
    ) -> None:
        """The scenario on each app that serves it, in an order that rotates with the
        repetition; in --smoke on all of them at once (nothing is measured)."""
        keys = [key for key in started if serves(key, scenario)]
        shift = repetition % len(keys)
        order = keys[shift:] + keys[:shift]
        if self.config.smoke:
            current = self._current(scenario, {key: started[key] for key in order})
            indexes = {key: self._next_run(scenario) for key in order}
            with ThreadPoolExecutor(len(order)) as pool:
                futures = {
                    key: pool.submit(
                        run_one,
                        self.config,
                        started[key],
                        current,
                        self.root,
                        indexes[key],
                        self.tokens,
                        self.host,
                    )
                    for key in order
                }
            measured = {key: future.result() for key, future in futures.items()}
        else:
            measured = {}
            for key in order:
                current = self._current(scenario, {key: started[key]})
                measured[key] = run_one(
                    self.config,
                    started[key],
                    current,
                    self.root,
                    self._next_run(scenario),
                    self.tokens,
                    self.host,
                )
        for key, m in measured.items():
            if key == apps.REAL.key:
                self.served += m["requests"]
            self.runs.append({"scenario": scenario.name, "app": key, "repetition": repetition, **m})
            _say(repetition, self.config, scenario.name, key, m)

    def pair(
        self, numerator: Scenario, denominator: Scenario, ours: apps.RunningApp, repetition: int
    ) -> None:
        """A check's two scenarios on our app, alternated in half-length slices, A B B A (B A A B
        in every second repetition): whatever drifts on the machine meanwhile (the other
        hyperthread, the CPU's clock) weighs on both alike, where two runs minutes apart each
        met their own. The ratio is of the CPU per request over each scenario's two slices."""
        sliced = replace(self.config, duration=self.config.duration / 2, warmup=0)
        first, second = (numerator, denominator) if repetition % 2 else (denominator, numerator)
        order = [first, second, second, first]
        current = {s.name: self._current(s, {apps.REAL.key: ours}) for s in order[:2]}
        cpu_us = dict.fromkeys(current, 0.0)
        requests = dict.fromkeys(current, 0)
        foreign = steal = 0.0
        for index, scenario in enumerate(order):
            config = sliced if index >= 2 else replace(sliced, warmup=self.config.warmup)
            m = run_one(
                config,
                ours,
                current[scenario.name],
                self.root,
                self._next_run(scenario),
                self.tokens,
                self.host,
            )
            cpu_us[scenario.name] += m["cpu_us_per_request"] * m["requests"]
            requests[scenario.name] += m["requests"]
            foreign = max(foreign, m.get("foreign_cores", 0.0))
            steal = max(steal, m.get("steal_cores", 0.0))
        a, b = (cpu_us[s.name] / max(requests[s.name], 1) for s in (numerator, denominator))
        self.pairs.append(
            {
                "numerator": numerator.name,
                "denominator": denominator.name,
                "repetition": repetition,
                "order": [s.name for s in order],
                "numerator_cpu_us_per_request": a,
                "denominator_cpu_us_per_request": b,
                "ratio": a / b,
                # The busiest slice's, as `disturbed` reads a run's.
                "foreign_cores": foreign,
                "steal_cores": steal,
            }
        )
        print(
            f"  rep {repetition}/{self.config.repetitions}  {numerator.name} ÷ "
            f"{denominator.name}, alternated: {a / b:.3f} CPU per request ({a:,.0f} ÷ {b:,.0f} µs)",
            flush=True,
        )

    def flood(
        self, ours: apps.RunningApp, goals_list: Scenario, emails: list[str], repetition: int
    ) -> dict[str, Any]:
        """The hot read again, with logins (bcrypt cost 12) running beside it."""
        config = self.config
        flooder = login_flood(
            ours.base_url, emails, config.flood_concurrency, config.warmup + config.duration + 1
        )
        measured = run_one(
            config, ours, goals_list, self.root, 100 + repetition, self.tokens, self.host
        )
        out, _ = flooder.communicate(timeout=120)
        logins = json.loads(out)
        self.served += measured["requests"]
        _say(repetition, config, "goals_list + login flood", apps.REAL.key, measured)
        print(
            f"    ({logins['logins_per_second']:.1f} logins/s, {logins['errors']} login errors)",
            flush=True,
        )
        return {"repetition": repetition, **measured, **logins}

    def top_up(self, ours: apps.RunningApp, goals_list: Scenario) -> None:
        """Our app up to RSS_REQUESTS requests served, for the memory figure."""
        script = wrk.write_script(self.root, "rss", goals_list.entries, WRK_THREADS)
        while self.served < RSS_REQUESTS:
            result, _ = wrk.run(
                ours.base_url + "/goals",
                script,
                threads=WRK_THREADS,
                connections=self.config.connections,
                duration=10,
            )
            self.served += result.requests


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
    # On a disk when the writes run durable too; in memory otherwise.
    pg_root = (
        Path(tempfile.mkdtemp(prefix="goaltrack-bench-", dir=DISK)) if config.durable else root
    )
    pg_root.chmod(0o755)
    postgres = Postgres(pg_root / "postgres")
    stack = LocalStack(root, with_s3=False, shared_postgres=postgres)
    specs = [
        apps.REAL,
        apps.BASELINE,
        *([apps.PEER, apps.ASYNC_PEER] if config.with_peer else []),
    ]
    if config.before:
        source = root / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(source), config.before],
            check=True,
            capture_output=True,
        )
        specs.append(apps.before(config.before, source / "src"))
    flood: list[dict[str, Any]] = []
    rss: dict[str, Any] = {}
    habits: dict[str, Any] = {}
    durable_server: dict[str, Any] = {}
    try:
        postgres.start()
        stack.start()
        upgrade(postgres.url)
        jwt_secret = secrets.token_hex(32)
        settings = Settings(
            database_url=postgres.url,
            jwt_secret=SecretStr(jwt_secret),
            access_token_ttl_seconds=24 * 3600,
        )
        # The smoke run's tiny tables make other plans: its go to the scratch directory.
        plans_dir = root / "plans" if config.smoke else PLANS
        seeded, (scenarios, emails, plan_findings) = asyncio.run(
            prepare(postgres.url, settings, config, plans_dir)
        )
        os.sync()  # the seed's pages reach the disk now, not during the measured runs
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
        if not config.durable:
            scenarios = [s for s in scenarios if not s.durable]
        env = app_env(stack, jwt_secret, config)
        bench = Bench(
            config, root, postgres.url, HostLoad(postgres.data_dir), SessionTokens(settings)
        )
        habits["checkin_reads_before"] = checkin_reads(postgres.url)
        # First every scenario but the durable ones, on the server that does not flush.
        with contextlib.ExitStack() as running:
            started_apps = start_apps(running, specs, env, root, at_once=config.smoke)
            ours = started_apps[apps.REAL.key]
            measured_now = [s for s in scenarios if not s.durable]
            for scenario in measured_now:
                for key, app in started_apps.items():
                    if serves(key, scenario):
                        check(app, scenario)
            rss["after_start_mib"] = rss_mib(ours.process.pid)
            goals_list = next((s for s in measured_now if s.name == "goals_list"), None)
            by_name = {s.name: s for s in measured_now}
            paired = [
                (by_name[a], by_name[b])
                for a, b, _ in CPU_CHECKS
                if a in by_name and b in by_name and not config.smoke
            ]
            for repetition in range(1, config.repetitions + 1):
                for scenario in measured_now:
                    bench.measure(scenario, started_apps, repetition)
                for numerator, denominator in paired:
                    bench.pair(numerator, denominator, ours, repetition)
                if goals_list is not None and not config.only:
                    flood.append(bench.flood(ours, goals_list, emails, repetition))
            if goals_list is not None and not (config.smoke or config.only):
                bench.top_up(ours, goals_list)
            rss["after_requests_mib"] = rss_mib(ours.process.pid)
            rss["requests"] = bench.served
        habits["checkin_reads_after"] = checkin_reads(postgres.url)
        # Then the writes again, once the server flushes every commit to disk.
        durable = [s for s in scenarios if s.durable]
        if durable:
            durable_server = make_durable(postgres)
            print(f"the server restarted durable: {durable_server}", flush=True)
            with contextlib.ExitStack() as running:
                writers = [spec for spec in specs if any(serves(spec.key, s) for s in durable)]
                started_apps = start_apps(running, writers, env, root, at_once=config.smoke)
                for scenario in durable:
                    for key, app in started_apps.items():
                        if serves(key, scenario):
                            check(app, scenario)
                for repetition in range(1, config.repetitions + 1):
                    for scenario in durable:
                        bench.measure(scenario, started_apps, repetition)
        tick = scheduler_tick(root) if config.with_tick else None
    finally:
        stack.stop()
        postgres.stop()
        if config.before:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(root / "before")],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pg_root, ignore_errors=True)

    runs = bench.runs
    summary = summarise(runs, scenarios, flood)
    checks = cpu_checks(runs, bench.pairs)
    if tick is not None:
        summary.append(
            entry(
                "scheduler_tick_1M_vs_10k",
                hot_read=False,
                ratio_large_to_small=tick.get("ratio_large_to_small"),
                sizes=tick["sizes"],
            )
        )
    reads = {
        key: habits["checkin_reads_after"].get(key, 0) - habits["checkin_reads_before"].get(key, 0)
        for key in ("scans", "rows")
    }
    habits["checkin_reads_during_runs"] = reads
    pools = config.pools
    print(
        f"\n{seeded.describe()}; wrk -t{WRK_THREADS} -c{config.connections} "
        f"-d{config.duration:g}s after {config.warmup:g}s warm-up; {config.repetitions} "
        f"repetition(s); 1 uvicorn worker per app, pools {pools['read']} (reads) and "
        f"{pools['write']} (writes)\n"
    )
    try:
        print_table(summary)
    except Exception as exc:  # the figures matter more than their table: still write them
        print(f"could not print the table: {exc!r}")
    print_checks(checks)
    print(
        f"habit_checkins during the runs: {reads['scans']} scans, {reads['rows']} rows read "
        "(GET /goals of 20 habits must read none)"
    )
    print(
        f"RSS of the API worker: {rss['after_start_mib']:.0f} MiB after start, "
        f"{rss['after_requests_mib']:.0f} MiB after {rss['requests']:,} requests"
    )
    if tick is not None:
        print(
            f"scheduler tick, 1 M ÷ 10 k reminders (1,000 due): {tick.get('ratio_large_to_small', 0):.2f}"
        )
    document = {
        "benchmark": "hot paths against their ceiling and two peers; writes also durable",
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
            "read_pool": pools["read"],
            "write_pool": pools["write"],
            "production_pools": config.pool is None,
            "seeded": asdict(seeded),
            "habit_pairs": config.habit_pairs,
        },
        "durable_server": durable_server,
        "scenarios": summary,
        "checks": checks,
        "repetitions": _repetitions(runs),
        "habits": habits,
        "rss": rss,
        "plans": asdict(plan_findings),
        "runs": runs,
        "paired_runs": bench.pairs,
        "login_flood_runs": flood,
    }
    config.json_path.parent.mkdir(parents=True, exist_ok=True)
    config.json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    svg = config.json_path.with_suffix(".svg")
    svg.write_text(chart.render(document))
    print(f"wrote {config.json_path} and {svg}; done in {time.monotonic() - started:.0f} s")
    return 0


def _repetitions(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per repetition: the most other work seen during one of its runs, and whether any was
    disturbed."""
    found = []
    for repetition in sorted({r["repetition"] for r in runs}):
        mine = [r for r in runs if r["repetition"] == repetition and "foreign_cores" in r]
        if mine:
            found.append(
                {
                    "repetition": repetition,
                    "max_foreign_cores": max(r["foreign_cores"] for r in mine),
                    "max_steal_cores": max(r["steal_cores"] for r in mine),
                    "disturbed_runs": sum(disturbed(r) for r in mine),
                    "runs": len(mine),
                }
            )
    return found


if __name__ == "__main__":
    raise SystemExit(main())
