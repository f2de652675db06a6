"""`python -m ops load|soak|chaos|check` (see ops/__init__.py and docs/operations.md)."""

from __future__ import annotations

import argparse
import os
import sys

from ops import run
from ops.stack import COMPONENTS


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    load = commands.add_parser("load", help="ramp, then DURATION at the rate found (or --users)")
    load.add_argument("--duration", type=float, default=_env_float("LOAD_DURATION", 600))
    load.add_argument("--users", type=int, default=None, help="skip the ramp")
    load.add_argument(
        "--steps",
        default=os.environ.get("LOAD_STEPS", ",".join(map(str, run.DEFAULT_STEPS))),
        help="the ramp's user counts, comma-separated",
    )
    load.add_argument("--step-seconds", type=float, default=_env_float("LOAD_STEP_SECONDS", 40))
    load.add_argument("--warmup", type=float, default=60, help="seconds left out of the figures")

    soak = commands.add_parser("soak", help="half the load for DURATION, memory sampled")
    soak.add_argument("--duration", type=float, default=_env_float("SOAK_DURATION", 1800))
    soak.add_argument("--users", type=int, default=None, help="default: half of load.json's")
    soak.add_argument("--warmup", type=float, default=None, help="default: max(120 s, 10 %)")

    chaos = commands.add_parser("chaos", help="kill and restart each part under load, check")
    chaos.add_argument("--users", type=int, default=None, help="default: half of load.json's")
    chaos.add_argument("--warmup", type=float, default=30)
    chaos.add_argument("--down", type=float, default=10, help="seconds each part stays down")
    chaos.add_argument("--settle", type=float, default=45, help="seconds of load after a restart")
    chaos.add_argument(
        "--drain-max",
        type=float,
        default=_env_float("CHAOS_DRAIN_MAX", 1200),
        help="seconds to wait for consistency after the load (the outbox lease is 15 min)",
    )
    chaos.add_argument("--components", default=",".join(COMPONENTS))

    check = commands.add_parser("check", help="the consistency check against a running stack")
    check.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    check.add_argument("--s3-endpoint", default=os.environ.get("S3_ENDPOINT_URL"))
    check.add_argument("--s3-access-key", default=os.environ.get("S3_ACCESS_KEY_ID"))
    check.add_argument("--s3-secret-key", default=os.environ.get("S3_SECRET_ACCESS_KEY"))
    check.add_argument("--s3-bucket", default=os.environ.get("S3_BUCKET", "goaltrack"))

    args = parser.parse_args(argv)
    if args.command == "load":
        steps = [int(step) for step in args.steps.split(",") if step]
        return run.load(args.duration, args.users, steps, args.step_seconds, args.warmup)
    if args.command == "soak":
        warmup = args.warmup if args.warmup is not None else max(120.0, args.duration / 10)
        return run.soak(args.duration, args.users, warmup)
    if args.command == "chaos":
        components = [c for c in args.components.split(",") if c]
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            parser.error(f"unknown components: {sorted(unknown)}")
        return run.chaos(
            args.users, args.warmup, args.down, args.settle, args.drain_max, components
        )
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required")
    s3 = None
    if args.s3_endpoint:
        s3 = {
            "endpoint_url": args.s3_endpoint,
            "access_key": args.s3_access_key,
            "secret_key": args.s3_secret_key,
            "bucket": args.s3_bucket,
        }
    return run.check(args.database_url, s3)


if __name__ == "__main__":
    sys.exit(main())
