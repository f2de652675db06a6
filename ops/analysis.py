"""From a run's timeline (ops/locustfile.py) to figures: per request name and per kind (reads =
every GET), over any time range; the SLO verdict; the ramp's steps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.hist import Histogram

ERROR_BUDGET = 0.005  # errors < 0.5 %
READ_P95_MS = 300.0
READ_P99_MS = 800.0


def is_read(name: str) -> bool:
    return name.startswith("GET ")


@dataclass
class Timeline:
    window_seconds: int
    windows: list[dict[str, Any]]
    errors: dict[str, dict[str, int]]
    expected: dict[str, dict[str, int]]

    @classmethod
    def load(cls, path: Path) -> Timeline:
        data = json.loads(path.read_text())
        return cls(
            data["window_seconds"],
            data["windows"],
            data.get("errors", {}),
            data.get("expected", {}),
        )

    @property
    def start(self) -> float:
        return float(self.windows[0]["t"]) if self.windows else 0.0

    @property
    def end(self) -> float:
        return float(self.windows[-1]["t"] + self.window_seconds) if self.windows else 0.0

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        return [w for w in self.windows if start <= w["t"] and w["t"] + self.window_seconds <= end]


def _row(n: int, fail: int, hist: Histogram, seconds: float) -> dict[str, Any]:
    return {
        "requests": n,
        "failures": fail,
        "error_rate": round(fail / n, 5) if n else 0.0,
        "rps": round(n / seconds, 2) if seconds else 0.0,
        "p50_ms": hist.percentile(0.50),
        "p95_ms": hist.percentile(0.95),
        "p99_ms": hist.percentile(0.99),
        "max_ms": float(max(hist.buckets)) if hist.buckets else None,
    }


def summarize(windows: list[dict[str, Any]], window_seconds: int) -> dict[str, Any]:
    """Per name, reads, writes and all, over these windows."""
    seconds = len(windows) * window_seconds
    names: dict[str, list[Any]] = {}
    for window in windows:
        for name, entry in window["requests"].items():
            acc = names.setdefault(name, [0, 0, Histogram()])
            acc[0] += entry["n"]
            acc[1] += entry["fail"]
            acc[2].merge(Histogram(entry["hist"]))
    groups: dict[str, list[Any]] = {"reads": [0, 0, Histogram()], "writes": [0, 0, Histogram()]}
    for name, (n, fail, hist) in names.items():
        group = groups["reads" if is_read(name) else "writes"]
        group[0] += n
        group[1] += fail
        group[2].merge(hist)
    reads, writes = groups["reads"], groups["writes"]
    both = Histogram.merged([reads[2], writes[2]])
    users = [w.get("users", 0) for w in windows]
    return {
        "seconds": seconds,
        "users": max(users) if users else 0,
        "all": _row(reads[0] + writes[0], reads[1] + writes[1], both, seconds),
        "reads": _row(reads[0], reads[1], reads[2], seconds),
        "writes": _row(writes[0], writes[1], writes[2], seconds),
        "by_name": {
            name: _row(n, fail, hist, seconds) for name, (n, fail, hist) in sorted(names.items())
        },
    }


def slo(summary: dict[str, Any]) -> dict[str, Any]:
    reads = summary["reads"]
    checks = {
        "errors_below_0.5pct": summary["all"]["error_rate"] < ERROR_BUDGET,
        "reads_p95_below_300ms": (reads["p95_ms"] or 0) < READ_P95_MS,
        "reads_p99_below_800ms": (reads["p99_ms"] or 0) < READ_P99_MS,
    }
    return {"pass": all(checks.values()), **checks}


def series(timeline: Timeline, every: int = 10) -> list[dict[str, Any]]:
    """Per `every` seconds: req/s, errors/s, reads p95/p99, users (for the charts)."""
    out = []
    group = max(1, every // timeline.window_seconds)
    for i in range(0, len(timeline.windows), group):
        chunk = timeline.windows[i : i + group]
        summary = summarize(chunk, timeline.window_seconds)
        out.append(
            {
                "t": chunk[0]["t"] + len(chunk) * timeline.window_seconds / 2,  # mid-window
                "users": summary["users"],
                "rps": summary["all"]["rps"],
                "errors_per_s": round(summary["all"]["failures"] / summary["seconds"], 2),
                "read_p95_ms": summary["reads"]["p95_ms"],
                "read_p99_ms": summary["reads"]["p99_ms"],
                "write_p95_ms": summary["writes"]["p95_ms"],
            }
        )
    return out


def ramp_steps(
    timeline: Timeline, steps: list[int], step_seconds: float, settle: float = 15
) -> list[dict[str, Any]]:
    """Each step of the ramp without its first `settle` seconds (users logging in)."""
    out = []
    start = timeline.start
    for index, users in enumerate(steps):
        begin = start + index * step_seconds + settle
        windows = timeline.between(begin, start + (index + 1) * step_seconds)
        if not windows:
            continue
        summary = summarize(windows, timeline.window_seconds)
        out.append({"users": users, **headline(summary), "slo": slo(summary)["pass"]})
    return out


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures the SLO is judged on, and the writes' p95."""
    return {
        "rps": summary["all"]["rps"],
        "error_rate": summary["all"]["error_rate"],
        "read_p95_ms": summary["reads"]["p95_ms"],
        "read_p99_ms": summary["reads"]["p99_ms"],
        "write_p95_ms": summary["writes"]["p95_ms"],
    }


def capacity_step(steps: list[dict[str, Any]]) -> int | None:
    """The highest step within the SLO whose throughput still grew (past the knee more users only
    queue), up to the first step over it; None when the first is over it."""
    best = None
    best_rps = 0.0
    for step in steps:
        if not step["slo"]:
            break
        if step["rps"] > best_rps * 1.02:
            best, best_rps = step["users"], step["rps"]
    return best
