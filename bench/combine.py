"""Two (or more) separate benchmark runs as one result: bench/results/latest.json.

    uv run python -m bench.combine RUN1.json RUN2.json [--capacity ops/results/capacity.json]

The targets are judged on the median of separate runs (a run's repetitions share its seed, its
apps' warm caches and whatever else the machine did meanwhile). Each run's repetitions are
renumbered after the previous run's, and the scenarios and checks are summarised again over all
of them, as one run of that many repetitions would be (bench.report). The scheduler tick and the
login flood are kept per run (`per_run`). With --capacity: the mobile users per VPS that
`make load` found (ops), before and after, at its SLO.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import chart
from bench.report import cpu_checks, print_checks, print_table, summarise

RESULTS = Path(__file__).parent / "results"


def combine(documents: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    flood: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    offset = 0
    for document in documents:
        last = max((run["repetition"] for run in document["runs"]), default=0)
        runs += [{**run, "repetition": run["repetition"] + offset} for run in document["runs"]]
        flood += [
            {**run, "repetition": run["repetition"] + offset}
            for run in document.get("login_flood_runs") or []
        ]
        pairs += [
            {**pair, "repetition": pair["repetition"] + offset}
            for pair in document.get("paired_runs") or []
        ]
        offset += last
    first = documents[0]
    scenarios = [
        SimpleNamespace(name=s["name"], hot_read=s["hot_read"], durable=s["durable"])
        for s in first["scenarios"]
        if any(run["scenario"] == s["name"] for run in runs)
    ]
    return {
        "benchmark": first["benchmark"],
        "git": " + ".join(dict.fromkeys(document["git"] for document in documents)),
        "finished_at": documents[-1]["finished_at"],
        "combined_from": [
            {"file": source, "git": document["git"], "finished_at": document["finished_at"]}
            for source, document in zip(sources, documents, strict=True)
        ],
        "machine": first["machine"],
        "config": first["config"] | {"repetitions": offset},
        "durable_server": first.get("durable_server"),
        "scenarios": summarise(runs, scenarios, flood),
        "checks": cpu_checks(runs, pairs),
        "per_run": [
            {key: document.get(key) for key in ("git", "habits", "rss", "plans")}
            for document in documents
        ],
        "runs": runs,
        "paired_runs": pairs,
        "login_flood_runs": flood,
    }


def capacity(path: Path) -> dict[str, Any]:
    """The `capacity` member: users_per_vps before and after, and the SLO they were held to."""
    found = json.loads(path.read_text())
    return {"source": str(path), **found}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.combine", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--capacity", type=Path, help="ops' capacity result (make load)")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    documents = [json.loads(path.read_text()) for path in args.runs]
    document = combine(documents, [str(path) for path in args.runs])
    if args.capacity:
        document["capacity"] = capacity(args.capacity)
    args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    args.json.with_suffix(".svg").write_text(chart.render(document))
    print_table(document["scenarios"])
    print_checks(document["checks"])
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
