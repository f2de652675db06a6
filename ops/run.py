"""The three runs: load (a short ramp to find the rate that keeps the box busy within the SLO,
then 10 minutes at it), soak (half that load for 30 minutes, with memory, connections and
backlogs sampled), chaos (each of PostgreSQL, Redis, SeaweedFS, the worker and beat SIGKILLed
and restarted in turn under load, then a drain and the consistency check)."""

from __future__ import annotations

import asyncio
import collections
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ops import analysis, charts, consistency
from ops.sampler import Sampler, postgres_dsn
from ops.seed import seed
from ops.stack import COMPONENTS, AppStack

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "ops" / "results"
CHARTS = REPO / "docs" / "operations"
LOCUSTFILE = REPO / "ops" / "locustfile.py"

DEFAULT_STEPS = (60, 120, 180, 240, 300, 360)


def code_state() -> dict[str, Any]:
    """Which code was measured: the commit, and the uncommitted changes under src/ (others edit
    the same working tree) and ops/."""
    import hashlib

    def git(*args: str) -> str:
        result = subprocess.run(  # noqa: S603
            ["git", *args],  # noqa: S607
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout

    diff = git("diff", "HEAD", "--", "src")
    return {
        "head": git("rev-parse", "--short", "HEAD").strip(),
        "src_files_changed": len(git("diff", "HEAD", "--name-only", "--", "src").split()),
        "src_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None,
        # Not 0 when a newer harness measures an older build (its ops/ copied over this one's).
        "ops_files_changed": len(git("diff", "HEAD", "--name-only", "--", "ops/*.py").split()),
    }


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


# -- Locust -----------------------------------------------------------------------------------


@dataclass
class LocustRun:
    name: str
    process: subprocess.Popen[bytes]
    prefix: Path
    started: float = field(default_factory=time.time)

    @property
    def timeline_path(self) -> Path:
        return self.prefix.with_name(self.prefix.name + "_timeline.json")

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM: Locust stops its users and writes its stats (and our timeline)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)

    def timeline(self) -> analysis.Timeline:
        return analysis.Timeline.load(self.timeline_path)


def start_locust(
    stack: AppStack,
    name: str,
    accounts: Path,
    *,
    users: int | None = None,
    duration: float | None = None,
    steps: list[int] | None = None,
    step_seconds: float = 45,
) -> LocustRun:
    RESULTS.mkdir(parents=True, exist_ok=True)
    prefix = RESULTS / name
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OPS_ACCOUNTS": str(accounts),
        "OPS_TIMELINE": str(prefix.with_name(prefix.name + "_timeline.json")),
    }
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", stack.url, "--csv", str(prefix),
        "--json-file", str(prefix.with_name(prefix.name + "_locust")),
        "--only-summary", "--stop-timeout", "15", "--loglevel", "WARNING",
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    if steps:
        env |= {"OPS_STEPS": ",".join(map(str, steps)), "OPS_STEP_SECONDS": str(step_seconds)}
    else:
        assert users is not None
        command += ["-u", str(users), "-r", str(min(users, 20))]
        if duration is not None:
            command += ["-t", f"{int(duration)}s"]
    out = (RESULTS / f"{name}_locust.txt").open("wb")
    process = subprocess.Popen(  # noqa: S603
        command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
    )
    run = LocustRun(name, process, prefix)
    _LOCUST[:] = [run]
    return run


def prepare(stack: AppStack, accounts: int) -> Path:
    path = stack.root / "accounts.json"
    started = time.monotonic()
    seed(stack.url, accounts, path)
    log(f"seeded {accounts} accounts in {time.monotonic() - started:.0f} s")
    return path


_LOCUST: list[LocustRun] = []  # the run in progress, for the sampler


def _groups(stack: AppStack) -> dict[str, list[int]]:
    groups = stack.process_groups()
    running = [run.process.pid for run in _LOCUST if run.process.poll() is None]
    groups["locust"] = running
    # This process: the sampler and the SMTP, FCM and AI fakes' threads (not other work).
    groups["harness"] = [os.getpid()]
    return groups


def sampler_for(stack: AppStack, interval: float = 10) -> Sampler:
    return Sampler(
        lambda: _groups(stack),
        postgres_dsn=postgres_dsn(stack.local.postgres.url),
        redis_url=stack.local.redis.url,
        interval=interval,
    ).start()


def machine_note(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """What the machine did meanwhile: its CPU, and the share not ours (the shared box)."""
    if not samples:
        return {}
    parts = sorted({k for s in samples for k in s["cpu_pct"]})
    return {
        "cores": os.cpu_count(),
        "machine_cpu_pct_median": statistics.median(s["machine_cpu_pct"] for s in samples),
        "other_processes_cpu_pct_median": statistics.median(s["other_cpu_pct"] for s in samples),
        "other_processes_cpu_pct_max": max(s["other_cpu_pct"] for s in samples),
        "cpu_pct_of_one_core_median": {
            part: statistics.median(s["cpu_pct"].get(part, 0.0) for s in samples) for part in parts
        },
    }


def write_samples_csv(path: Path, samples: list[dict[str, Any]], start: float) -> None:
    parts = sorted({k for s in samples for k in s["rss_mb"]})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "t",
                *(f"rss_mb_{p}" for p in parts),
                *(f"cpu_pct_{p}" for p in parts),
                "machine_cpu_pct",
                "other_cpu_pct",
                "pg_connections",
                "celery_queue",
                "celery_unacked",
                "outbox_rows",
                "outbox_due",
                "file_deletions_due",
            ]
        )
        for s in samples:
            writer.writerow(
                [
                    round(s["time"] - start, 1),
                    *(s["rss_mb"].get(p) for p in parts),
                    *(s["cpu_pct"].get(p) for p in parts),
                    s["machine_cpu_pct"],
                    s["other_cpu_pct"],
                    s.get("pg_connections"),
                    s.get("celery_queue"),
                    s.get("celery_unacked"),
                    s.get("outbox_rows"),
                    s.get("outbox_due"),
                    s.get("file_deletions_due"),
                ]
            )


def write_series_csv(path: Path, rows: list[dict[str, Any]], start: float) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["t"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "t": round(row["t"] - start, 1)})


def load_charts(
    prefix: str,
    title: str,
    rows: list[dict[str, Any]],
    start: float,
    markers: list[tuple[float, str]] | None = None,
) -> list[Path]:
    def points(key: str) -> list[tuple[float, float | None]]:
        return [(row["t"] - start, row[key]) for row in rows]

    throughput = CHARTS / f"{prefix}-throughput.svg"
    charts.Chart(
        f"{title}: requests/s, errors/s and users",
        "requests/s",
        [
            charts.Series("req/s", points("rps")),
            charts.Series("errors/s", points("errors_per_s")),
            charts.Series("users", points("users"), right_axis=True, dashed=True),
        ],
        y2_label="users",
        markers=markers or [],
    ).write(throughput)
    latency = CHARTS / f"{prefix}-latency.svg"
    charts.Chart(
        f"{title}: latency (reads = every GET)",
        "ms",
        [
            charts.Series("reads p95", points("read_p95_ms")),
            charts.Series("reads p99", points("read_p99_ms")),
            charts.Series("writes p95", points("write_p95_ms"), dashed=True),
        ],
        markers=markers or [],
        hlines=[(300, "p95 SLO 300 ms"), (800, "p99 SLO 800 ms")],
    ).write(latency)
    return [throughput, latency]


# -- load -------------------------------------------------------------------------------------


def find_rate(
    stack: AppStack, accounts: Path, steps: list[int], step_seconds: float, sampler: Sampler
) -> tuple[int, list[dict[str, Any]]]:
    log(f"ramp: {steps} users, {step_seconds:.0f} s each")
    run = start_locust(stack, "load_ramp", accounts, steps=steps, step_seconds=step_seconds)
    run.wait()
    timeline = run.timeline()
    found = analysis.ramp_steps(timeline, steps, step_seconds)
    for step in found:
        # The step's own CPU: a step missed while other work took the cores is not our limit.
        begin = timeline.start + steps.index(step["users"]) * step_seconds
        step |= cpu_during(sampler.samples, begin, begin + step_seconds)
        log(
            f"  {step['users']:>4} users: {step['rps']:7.1f} req/s, errors {step['error_rate']:.2%},"
            f" reads p95 {step['read_p95_ms']} ms p99 {step['read_p99_ms']} ms,"
            f" API {step.get('api_cpu_pct')} % of a core, other work {step.get('other_cores')} cores"
            f" -> {'ok' if step['slo'] else 'over SLO'}"
        )
    best = analysis.capacity_step(found)
    charts.Chart(
        "Ramp: throughput and reads p95 per step",
        "requests/s",
        [
            charts.Series("req/s", [(s["users"], s["rps"]) for s in found]),
            charts.Series(
                "reads p95 ms", [(s["users"], s["read_p95_ms"]) for s in found], right_axis=True
            ),
            charts.Series(
                "reads p99 ms",
                [(s["users"], s["read_p99_ms"]) for s in found],
                right_axis=True,
                dashed=True,
            ),
        ],
        y2_label="ms",
        x_label="concurrent users (step)",
    ).write(CHARTS / "load-ramp.svg")
    # Below the first passing step, the first step (its steady run then shows by how much).
    return best or steps[0], found


def cpu_during(samples: list[dict[str, Any]], begin: float, end: float) -> dict[str, Any]:
    """The API's CPU (% of one core) and the other processes' (cores) in samples taken within
    [begin, end] (each covers the sampler's interval before it)."""
    inside = [s for s in samples if begin < s["time"] <= end]
    if not inside:
        return {}
    cores = os.cpu_count() or 1
    return {
        "api_cpu_pct": statistics.median(s["cpu_pct"].get("api", 0.0) for s in inside),
        "other_cores": round(
            statistics.median(s["other_cpu_pct"] for s in inside) * cores / 100, 2
        ),
    }


def capacity(
    result: dict[str, Any], samples: list[dict[str, Any]], highest: int | None
) -> dict[str, Any]:
    """Mobile users per VPS (this machine's cores, the whole stack on them as on a 2-vCPU VPS):
    the ramp's highest step within the SLO, confirmed (or not) by the steady run at it."""
    steady = result["steady"]
    rps = steady["all"]["rps"]
    machine = machine_note(samples)
    per_core = machine.get("cpu_pct_of_one_core_median", {})

    def us_per_request(parts: list[str]) -> float | None:
        used = sum(per_core.get(part, 0.0) for part in parts)
        return round(used / 100 * 1e6 / rps) if rps and per_core else None

    stack_us = us_per_request([part for part in per_core if part not in ("locust", "harness")])
    foreign: collections.Counter[str] = collections.Counter()
    for sample in samples:
        foreign.update(label.split(" ", 1)[1] for label in sample.get("other_top", []))
    return {
        "kind": "capacity",
        "code": result["code"],
        "finished_at": result["finished_at"],
        "vps": {
            "cores": os.cpu_count(),
            "on_them": "API (2 uvicorn workers), Celery worker (2), beat, PostgreSQL (fsync off,"
            " in RAM), Redis, SeaweedFS, fakes of SMTP/FCM/AI, and Locust itself",
        },
        "slo": {
            "reads_p95_ms_below": analysis.READ_P95_MS,
            "reads_p99_ms_below": analysis.READ_P99_MS,
            "error_rate_below": analysis.ERROR_BUDGET,
        },
        "users": "concurrent phones with the app open (think time 1-2 s, the mix of"
        " ops/locustfile.py)",
        "users_per_vps": highest,
        "confirmed": result["users"] == highest and result["slo"]["pass"],
        "ramp": result["ramp"],
        "steady": {
            "users": result["users"],
            "seconds": steady["seconds"],
            **analysis.headline(steady),
            "all_p95_ms": steady["all"]["p95_ms"],
            "slo": result["slo"],
            "api_cpu_us_per_request": us_per_request(["api"]),
            "stack_cpu_us_per_request": stack_us,
        },
        # A bound, not a measurement: the users whose requests (at the steady run's rate per
        # user) the cores would serve if the stack had them all at 100 %. Comparable between
        # builds when other work takes part of the cores and the measured figure cannot show it.
        "cpu_bound_users_per_vps": (
            round((os.cpu_count() or 1) * 1e6 / (stack_us * rps / result["users"]))
            if stack_us and rps
            else None
        ),
        "machine": machine,
        # The busiest processes not ours (>= 5 % of a core in a sample), with how many samples.
        "other_work": dict(foreign.most_common(6)),
    }


def load(
    duration: float, users: int | None, steps: list[int], step_seconds: float, warmup: float
) -> int:
    code = code_state()
    with AppStack() as stack:
        log(f"stack up at {stack.url} ({stack.root})")
        accounts = prepare(stack, users if users is not None else max(steps))
        sampler = sampler_for(stack)
        ramp: list[dict[str, Any]] = []
        ramp_started = time.time()
        if users is None:
            users, ramp = find_rate(stack, accounts, steps, step_seconds, sampler)
        log(f"load: {users} users for {duration:.0f} s")
        run = start_locust(stack, "load", accounts, users=users, duration=duration)
        run.wait()
        samples = sampler.stop()
        timeline = run.timeline()
    steady = timeline.between(timeline.start + warmup, timeline.end - timeline.window_seconds)
    summary = analysis.summarize(steady, timeline.window_seconds)
    verdict = analysis.slo(summary)
    rows = analysis.series(timeline)
    main_samples = [s for s in samples if s["time"] >= timeline.start]
    result = {
        "kind": "load",
        "code": code,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "users": users,
        "think_time_s": [1, 2],
        "duration_s": duration,
        "warmup_excluded_s": warmup,
        "ramp": ramp,
        "steady": summary,
        "slo": verdict,
        "sustainable_users": users if verdict["pass"] else None,
        "errors_by_name": timeline.errors,
        "expected_non_2xx_by_name": timeline.expected,
        "machine": machine_note(main_samples),
        "rss_mb_end": main_samples[-1]["rss_mb"] if main_samples else {},
        "pss_mb_end": main_samples[-1]["pss_mb"] if main_samples else {},
        # The peak per part: the figure a memory limit must leave room above (docker-compose.yml).
        "pss_mb_max": {
            part: max(s["pss_mb"].get(part, 0.0) for s in main_samples)
            for part in (main_samples[-1]["pss_mb"] if main_samples else {})
        },
        "pg_connections_max": max((s.get("pg_connections") or 0 for s in main_samples), default=0),
    }
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2))
    if ramp:
        steady_samples = [s for s in main_samples if s["time"] > timeline.start + warmup]
        figure = capacity(result, steady_samples, analysis.capacity_step(ramp))
        (RESULTS / "capacity.json").write_text(json.dumps(figure, indent=2))
        log(f"capacity: {figure['users_per_vps']} users per VPS, confirmed {figure['confirmed']}")
    write_series_csv(RESULTS / "load_series.csv", rows, timeline.start)
    write_samples_csv(RESULTS / "load_samples.csv", main_samples, timeline.start)
    if ramp:
        ramp_samples = [s for s in samples if s["time"] < timeline.start]
        write_samples_csv(RESULTS / "load_ramp_samples.csv", ramp_samples, ramp_started)
    load_charts("load", f"Load, {users} users", rows, timeline.start)
    print_summary(result)
    return 0 if verdict["pass"] else 1


def print_summary(result: dict[str, Any]) -> None:
    steady = result["steady"]
    log(
        f"{result['kind']}: {steady['users']} users, {steady['all']['rps']} req/s, "
        f"errors {steady['all']['error_rate']:.3%}, reads p95 {steady['reads']['p95_ms']} ms "
        f"p99 {steady['reads']['p99_ms']} ms, writes p95 {steady['writes']['p95_ms']} ms"
    )
    for name, row in steady["by_name"].items():
        print(
            f"  {name:<45} {row['requests']:>7} req {row['failures']:>5} fail "
            f"p50 {row['p50_ms']} p95 {row['p95_ms']} p99 {row['p99_ms']} ms"
        )
    if "slo" in result:
        print("  SLO:", json.dumps(result["slo"]))


# -- soak -------------------------------------------------------------------------------------


def _trend(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per second)."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def soak_verdict(samples: list[dict[str, Any]], warmup_until: float) -> dict[str, Any]:
    after = [s for s in samples if s["time"] >= warmup_until]
    if len(after) < 6:
        return {"pass": False, "reason": "too few samples after warm-up"}
    third = max(3, len(after) // 3)
    verdict: dict[str, Any] = {}
    for part in ("api", "worker", "beat"):
        values = [s["rss_mb"].get(part, 0.0) for s in after]
        start, end = statistics.median(values[:3]), statistics.median(values[-3:])
        growth = (end - start) / start if start else 0.0
        verdict[f"rss_{part}"] = {
            "start_mb": start,
            "end_mb": end,
            "max_mb": max(values),
            "growth": round(growth, 4),
            "pass": growth <= 0.10,
        }
    connections = [s["pg_connections"] for s in after if s.get("pg_connections") is not None]
    verdict["pg_connections"] = {
        "first_third_max": max(connections[:third]),
        "last_third_max": max(connections[-third:]),
        "min": min(connections),
        "max": max(connections),
        "pass": max(connections[-third:]) <= max(connections[:third]) + 2,
    }
    span = after[-1]["time"] - after[0]["time"]
    for key in ("celery_queue", "outbox_rows", "outbox_due"):
        points = [(s["time"], float(s[key])) for s in after if s.get(key) is not None]
        values = [y for _, y in points]
        growth = _trend(points) * span
        end = statistics.median(values[-3:])
        verdict[key] = {
            "median": statistics.median(values),
            "max": max(values),
            "end": end,
            "fitted_growth_over_run": round(growth, 1),
            # Not growing: the fitted line rises by less than 10 over the whole run, or the
            # end is no higher than twice the median (a steady backlog of in-flight tasks).
            "pass": growth < 10 or end <= max(10.0, 2 * statistics.median(values)),
        }
    verdict["pass"] = all(v["pass"] for v in verdict.values() if isinstance(v, dict))
    return verdict


def soak(duration: float, users: int | None, warmup: float) -> int:
    if users is None:
        users = half_load()
    code = code_state()
    with AppStack() as stack:
        log(f"stack up at {stack.url}; soak: {users} users for {duration:.0f} s")
        accounts = prepare(stack, users)
        sampler = sampler_for(stack)
        run = start_locust(stack, "soak", accounts, users=users, duration=duration)
        run.wait()
        samples = sampler.stop()
        timeline = run.timeline()
    start = timeline.start
    verdict = soak_verdict(samples, start + warmup)
    steady = analysis.summarize(
        timeline.between(start + warmup, timeline.end - timeline.window_seconds),
        timeline.window_seconds,
    )
    rows = analysis.series(timeline)
    result = {
        "kind": "soak",
        "code": code,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "users": users,
        "duration_s": duration,
        "warmup_s": warmup,
        "steady": steady,
        "slo": analysis.slo(steady),
        "soak": verdict,
        "errors_by_name": timeline.errors,
        "expected_non_2xx_by_name": timeline.expected,
        "machine": machine_note(samples),
    }
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2))
    write_series_csv(RESULTS / "soak_series.csv", rows, start)
    write_samples_csv(RESULTS / "soak_samples.csv", samples, start)
    load_charts("soak", f"Soak, {users} users", rows, start)
    soak_charts(samples, start, warmup)
    print_summary(result)
    log("soak: " + json.dumps(verdict))
    return 0 if verdict["pass"] else 1


def soak_charts(samples: list[dict[str, Any]], start: float, warmup: float) -> None:
    def points(get: Any) -> list[tuple[float, float | None]]:
        return [(s["time"] - start, get(s)) for s in samples]

    markers = [(warmup, "end of warm-up")]
    charts.Chart(
        "Soak: resident memory (RSS, MB; API = uvicorn + its workers, worker = Celery + pool)",
        "MB",
        [
            charts.Series(part, points(lambda s, p=part: s["rss_mb"].get(p)))
            for part in ("api", "worker", "beat", "postgres")
        ],
        markers=markers,
    ).write(CHARTS / "soak-rss.svg")
    charts.Chart(
        "Soak: PostgreSQL connections, Celery queue, outbox backlog",
        "connections",
        [
            charts.Series("pg connections", points(lambda s: s.get("pg_connections"))),
            charts.Series(
                "celery queue (LLEN)", points(lambda s: s.get("celery_queue")), right_axis=True
            ),
            charts.Series(
                "task_outbox rows",
                points(lambda s: s.get("outbox_rows")),
                right_axis=True,
                dashed=True,
            ),
        ],
        y2_label="messages / rows",
        markers=markers,
    ).write(CHARTS / "soak-connections.svg")


def half_load() -> int:
    path = RESULTS / "load.json"
    if path.exists():
        found = json.loads(path.read_text())
        users = found.get("sustainable_users") or found.get("users")
        if users:
            return max(1, int(users) // 2)
    raise SystemExit("no ops/results/load.json: run `make load` first or pass --users")


# -- chaos ------------------------------------------------------------------------------------


def chaos(
    users: int | None,
    warmup: float,
    down: float,
    settle: float,
    drain_max: float,
    components: list[str],
) -> int:
    if users is None:
        users = half_load()
    events: list[dict[str, Any]] = []
    code = code_state()
    with AppStack() as stack:
        log(f"stack up at {stack.url}; chaos: {users} users, killing {components}")
        accounts = prepare(stack, users)
        sampler = sampler_for(stack, interval=5)
        run = start_locust(stack, "chaos", accounts, users=users)
        time.sleep(warmup)
        for component in components:
            killed = time.time()
            stack.kill(component)
            log(f"SIGKILL {component}")
            time.sleep(down)
            restarted = time.time()
            stack.restart(component)
            log(f"restarted {component} ({time.time() - restarted:.1f} s)")
            events.append({"component": component, "killed": killed, "restarted": restarted})
            time.sleep(settle)
        run.stop()
        load_end = datetime.now(UTC)
        log("load stopped; draining")
        interval = timedelta(seconds=60)
        options = consistency.CheckOptions(settled_before=load_end, scheduler_interval=interval)
        bucket = stack.local.s3
        assert bucket is not None
        s3 = {
            "endpoint_url": bucket.endpoint_url,
            "access_key": bucket.access_key,
            "secret_key": bucket.secret_key,
        }
        drain_started = time.monotonic()
        result = None
        while True:
            options.now = datetime.now(UTC)
            # Copies: the fakes' threads keep counting while the check reads them.
            deliveries = consistency.Deliveries(
                mails=stack.smtp.by_recipient.copy(), pushes=stack.fcm.sends.copy()
            )
            result = asyncio.run(
                consistency.run(
                    stack.local.postgres.url, s3=s3, options=options, deliveries=deliveries
                )
            )
            waited = time.monotonic() - drain_started
            if result.ok or waited >= drain_max:
                break
            pending = {k: v for k, v in result.counts.items() if v}
            log(f"  drain {waited:.0f} s: not yet consistent {pending}")
            time.sleep(20)
        drained_after = time.monotonic() - drain_started
        samples = sampler.stop()
        timeline = run.timeline()
    assert result is not None
    start = timeline.start
    faults = chaos_faults(timeline, events)
    rows = analysis.series(timeline, every=5)
    summary = analysis.summarize(timeline.windows, timeline.window_seconds)
    output = {
        "kind": "chaos",
        "code": code,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "users": users,
        "down_s": down,
        "settle_s": settle,
        "faults": faults,
        "whole_run": summary,
        "errors_by_name": timeline.errors,
        "expected_non_2xx_by_name": timeline.expected,
        "drain_s": round(drained_after),
        "consistency": result.to_json(),
        "machine": machine_note(samples),
    }
    (RESULTS / "chaos.json").write_text(json.dumps(output, indent=2))
    write_series_csv(RESULTS / "chaos_series.csv", rows, start)
    write_samples_csv(RESULTS / "chaos_samples.csv", samples, start)
    markers = [(e["killed"] - start, f"kill {e['component']}") for e in events]
    load_charts("chaos", f"Chaos, {users} users", rows, start, markers=markers)
    for fault in faults:
        log(
            f"{fault['component']}: {fault['errors']} errors of {fault['requests']} requests "
            f"from kill to recovery; recovered {fault['recovered_after_restart_s']} s after restart"
        )
    print(result.report())
    log(f"drained in {drained_after:.0f} s")
    return 0 if result.ok else 1


def chaos_faults(timeline: analysis.Timeline, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per fault: errors from the kill until recovery (the first of three clean windows after
    the restart)."""
    out = []
    width = timeline.window_seconds
    for event in events:
        after = [w for w in timeline.windows if w["t"] + width > event["restarted"]]
        recovered_at = None
        for i in range(len(after) - 2):
            if all(sum(e["fail"] for e in w["requests"].values()) == 0 for w in after[i : i + 3]):
                recovered_at = after[i]["t"]
                break
        end = max(recovered_at or timeline.end, event["restarted"] + width)
        windows = [w for w in timeline.windows if event["killed"] - width < w["t"] < end]
        summary = analysis.summarize(windows, width)
        out.append(
            {
                "component": event["component"],
                "down_s": round(event["restarted"] - event["killed"], 1),
                "requests": summary["all"]["requests"],
                "errors": summary["all"]["failures"],
                "recovered_after_restart_s": (
                    round(max(0.0, recovered_at - event["restarted"]), 1)
                    if recovered_at is not None
                    else None
                ),
            }
        )
    return out


def check(database_url: str, s3: dict[str, str] | None) -> int:
    result = asyncio.run(consistency.run(database_url, s3=s3))
    print(result.report())
    return 0 if result.ok else 1


__all__ = ["COMPONENTS", "DEFAULT_STEPS", "chaos", "check", "load", "soak"]
