"""The runs as the results' `scenarios[]` and `checks[]`, and their table.

Every ratio is taken within one repetition (the apps ran minutes apart at most, the order
rotating), then reported as the median over the repetitions with its range (`<name>_range`:
min, max). The primary one is CPU µs per request: ours ÷ the ceiling's (`cpu_ratio_to_ceiling`,
lower is better); throughput ratios (`ratio_to_*`, ours ÷ theirs, higher is better) compress when
wrk and PostgreSQL share the cores with the app. A run is `disturbed` when other work on the
machine (bench/host.py) took more than DISTURBED_CORES during it; a ratio is disturbed when
either of its runs was, and each scenario lists the repetitions whose ratios were.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench import apps

# Cores' worth of CPU that other work (and the hypervisor's steal) may take during a measured run
# before it is marked disturbed: 5 % of this 2-core machine.
DISTURBED_CORES = 0.10

# The issues' checks, each our CPU per request in one scenario ÷ in another, at most `limit`:
# 20 habits of 1,800 check-ins cost at most 10 % more than 20 plain goals (#21); a 304 costs at
# most half the 200 of the same resource; a caught-up GET /sync no more than GET /goals.
CPU_CHECKS = (
    ("goals_list_habits", "goals_list_plain", 1.1),
    ("goal_detail_304", "goal_detail", 0.5),
    ("goals_list_304", "goals_list", 0.5),
    ("sync_idle", "goals_list", 1.0),
)
APPS = (
    apps.REAL.key,
    apps.BASELINE.key,
    apps.PEER.key,
    apps.ASYNC_PEER.key,
    "goaltrack_before",
)
# Per app, what each run's figures are summarised into (median, min, max).
FIGURES = (
    "requests_per_second",
    "p50_ms",
    "p99_ms",
    "cpu_us_per_request",
    "bytes_per_response",
    "foreign_cores",
    "steal_cores",
    "token_cache_hit_rate",
    "habit_memo_hit_rate",
)


def disturbed(run: dict[str, Any]) -> bool:
    return bool(run["foreign_cores"] + run["steal_cores"] > DISTURBED_CORES)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def entry(name: str, *, hot_read: bool, durable: bool = False, **figures: Any) -> dict[str, Any]:
    """A scenarios[] entry: every field the results promise, None where it does not apply."""
    fields: dict[str, Any] = {"name": name, "hot_read": hot_read, "durable": durable}
    for ratio in (
        "cpu_ratio_to_ceiling",
        "ratio_to_ceiling",
        "p99_ratio_to_ceiling",
        "ratio_to_peer",
        "ratio_to_async_peer",
    ):
        fields[ratio] = None
        fields[f"{ratio}_range"] = None
    return fields | figures


def _ratios(
    by: dict[tuple[str, str, int], dict[str, Any]], name: str, other: str, key: str
) -> list[tuple[float, int, bool]]:
    """Ours ÷ `other` in `key`, per repetition in which both ran the scenario `name`: (value,
    repetition, disturbed). A run that served nothing (an old build's pathological query) has
    no ratio."""
    found = []
    for scenario, app, rep in by:
        if scenario != name or app != apps.REAL.key or (name, other, rep) not in by:
            continue
        mine, theirs = by[(name, app, rep)], by[(name, other, rep)]
        if mine[key] and theirs[key]:
            found.append((mine[key] / theirs[key], rep, disturbed(mine) or disturbed(theirs)))
    return found


def summarise(
    runs: list[dict[str, Any]], scenarios: list[Any], flood: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    by = {(r["scenario"], r["app"], r["repetition"]): r for r in runs}
    repetitions = sorted({r["repetition"] for r in runs})
    summary = []
    for scenario in scenarios:
        name = scenario.name
        ours = apps.REAL.key
        figures: dict[str, Any] = {}
        shaken: set[int] = set()
        for field, other, key in (
            ("cpu_ratio_to_ceiling", apps.BASELINE.key, "cpu_us_per_request"),
            ("ratio_to_ceiling", apps.BASELINE.key, "requests_per_second"),
            ("p99_ratio_to_ceiling", apps.BASELINE.key, "p99_ms"),
            ("ratio_to_peer", apps.PEER.key, "requests_per_second"),
            ("cpu_ratio_to_peer", apps.PEER.key, "cpu_us_per_request"),
            ("ratio_to_async_peer", apps.ASYNC_PEER.key, "requests_per_second"),
            ("cpu_ratio_to_async_peer", apps.ASYNC_PEER.key, "cpu_us_per_request"),
            ("ratio_to_before", "goaltrack_before", "requests_per_second"),
            ("cpu_ratio_to_before", "goaltrack_before", "cpu_us_per_request"),
        ):
            found = _ratios(by, name, other, key)
            if found:
                values = [value for value, _, _ in found]
                figures[field] = statistics.median(values)
                figures[f"{field}_range"] = [min(values), max(values)]
                shaken |= {rep for _, rep, shook in found if shook}
        figures["apps"] = {}
        for app_key in APPS:
            mine = [by[(name, app_key, rep)] for rep in repetitions if (name, app_key, rep) in by]
            if mine:
                figures["apps"][app_key] = {
                    key: spread([m[key] for m in mine])
                    for key in FIGURES
                    if all(m.get(key) is not None for m in mine)
                }
        ran = [by[(name, ours, rep)] for rep in repetitions if (name, ours, rep) in by]
        figures["disturbed_repetitions"] = sorted(
            shaken | {r["repetition"] for r in ran if disturbed(r)}
        )
        summary.append(entry(name, hot_read=scenario.hot_read, durable=scenario.durable, **figures))
    if flood:
        solo = [by[("goals_list", apps.REAL.key, f["repetition"])] for f in flood]
        p99_rise = [f["p99_ms"] / s["p99_ms"] for f, s in zip(flood, solo, strict=True)]
        rps_kept = [
            f["requests_per_second"] / s["requests_per_second"]
            for f, s in zip(flood, solo, strict=True)
        ]
        summary.append(
            entry(
                "goals_list_under_login_flood",
                hot_read=True,
                p99_ratio_to_solo=statistics.median(p99_rise),
                p99_ratio_to_solo_range=[min(p99_rise), max(p99_rise)],
                throughput_ratio_to_solo=statistics.median(rps_kept),
                logins_per_second=spread([f["logins_per_second"] for f in flood]),
                login_p99_ms=spread([f["login_p99_ms"] for f in flood]),
                apps={apps.REAL.key: {"p99_ms": spread([f["p99_ms"] for f in flood])}},
                disturbed_repetitions=sorted(f["repetition"] for f in flood if disturbed(f)),
            )
        )
    return summary


def cpu_checks(
    runs: list[dict[str, Any]], pairs: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Each check from the runs (as latest.json holds them): the ratio within each repetition,
    their median and min–max, and whether the median holds. Where the check's two scenarios
    also ran alternated (`paired_runs`, Bench.pair) those ratios are the check's; otherwise the
    two scenarios' own runs of the repetition (minutes apart at most). A check whose scenarios
    did not both run is left out."""
    ours = {(r["scenario"], r["repetition"]): r for r in runs if r["app"] == apps.REAL.key}
    checks = []
    for numerator, denominator, limit in CPU_CHECKS:
        alternated = [
            p for p in pairs or () if (p["numerator"], p["denominator"]) == (numerator, denominator)
        ]
        if alternated:
            values = [p["ratio"] for p in alternated]
            shaken = [p["repetition"] for p in alternated if disturbed(p)]
        else:
            separate = [
                (run, ours[denominator, rep])
                for (name, rep), run in ours.items()
                if name == numerator
                and (denominator, rep) in ours
                and ours[denominator, rep]["cpu_us_per_request"] > 0
            ]
            values = [a["cpu_us_per_request"] / b["cpu_us_per_request"] for a, b in separate]
            shaken = [a["repetition"] for a, b in separate if disturbed(a) or disturbed(b)]
        if values:
            median = statistics.median(values)
            checks.append(
                {
                    "name": f"{numerator} ÷ {denominator}, CPU µs/request",
                    "limit": limit,
                    "method": "alternated" if alternated else "separate runs",
                    "median": median,
                    "range": [min(values), max(values)],
                    "holds": median <= limit,
                    "disturbed_repetitions": sorted(shaken),
                }
            )
    return checks


def print_checks(checks: list[dict[str, Any]]) -> None:
    for c in checks:
        shaken = c["disturbed_repetitions"]
        print(
            f"{c['name']} ({c.get('method', 'separate runs')}): "
            f"{c['median']:.2f} ({c['range'][0]:.2f}–{c['range'][1]:.2f}), "
            f"limit {c['limit']:g}: {'holds' if c['holds'] else 'DOES NOT HOLD'}"
            + (f" (disturbed repetitions: {shaken})" if shaken else "")
        )


def _ratio(scenario: dict[str, Any], field: str) -> str:
    value = scenario.get(field)
    if value is None:
        return "—"
    low, high = scenario[f"{field}_range"]
    return f"{value:.2f} ({low:.2f}–{high:.2f})"


def _median(figures: dict[str, Any], key: str, form: str) -> str:
    return format(figures[key]["median"], form) if key in figures else ""


def print_table(summary: list[dict[str, Any]]) -> None:
    rows = [
        (
            "scenario",
            "CPU ÷ ceiling",
            "÷ ceiling (req/s)",
            "p99 ÷ ceiling p99",
            "÷ peer",
            "÷ async peer",
            "ours req/s",
            "ours CPU µs/req",
            "ceiling CPU µs/req",
            "token cache hits",
            "other work, cores",
            "disturbed",
        )
    ]
    for s in summary:
        if "apps" not in s:
            continue  # the scheduler tick: printed on its own line
        ours = s["apps"].get(apps.REAL.key, {})
        ceiling = s["apps"].get(apps.BASELINE.key, {})
        shaken = ",".join(map(str, s.get("disturbed_repetitions", ())))
        if s["name"] == "goals_list_under_login_flood":
            rows.append(
                (
                    s["name"],
                    "",
                    f"{s['throughput_ratio_to_solo']:.2f} of solo",
                    f"÷ solo {s['p99_ratio_to_solo']:.2f}",
                    "",
                    "",
                    f"{s['logins_per_second']['median']:.1f} logins/s",
                    "",
                    "",
                    "",
                    "",
                    shaken,
                )
            )
            continue
        rows.append(
            (
                s["name"],
                _ratio(s, "cpu_ratio_to_ceiling"),
                _ratio(s, "ratio_to_ceiling"),
                _ratio(s, "p99_ratio_to_ceiling"),
                _ratio(s, "ratio_to_peer"),
                _ratio(s, "ratio_to_async_peer"),
                _median(ours, "requests_per_second", ",.0f"),
                _median(ours, "cpu_us_per_request", ",.0f"),
                _median(ceiling, "cpu_us_per_request", ",.0f"),
                _median(ours, "token_cache_hit_rate", ".0%"),
                _median(ours, "foreign_cores", ".2f"),
                shaken,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "Median of the per-repetition ratios (min–max); `disturbed`: repetitions in which other "
        f"work took more than {DISTURBED_CORES:g} cores. Targets (#24): hot reads ≤ 1.4 × the "
        "ceiling's CPU per request, p99 ≤ 1.5 ×, ≥ 2 × the async peer's and ≥ 6 × the template "
        "peer's throughput; writes ≥ 0.5 × the ceiling's throughput on the durable server"
    )
