# The verbs people type. Each installs what it needs first (scripts/bootstrap.sh).
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
export UV_PYTHON_DOWNLOADS := never

.PHONY: dev cluster test lint format bootstrap bench load soak chaos

bootstrap:
	@scripts/bootstrap.sh

dev: bootstrap  ## Local PostgreSQL + Redis + S3, migrations, API + worker + beat
	uv run goaltrack dev

cluster: bootstrap  ## Several nodes locally: PostgreSQL primary + replica, PgBouncer, Redis, S3, 2 APIs behind Caddy, 2 workers, 2 beats
	uv run goaltrack cluster

lint: bootstrap  ## ruff (lint + format check), mypy, and the architecture (import-linter, no cycles)
	uv run ruff check src tests bench scripts ops
	uv run ruff format --check src tests bench scripts ops
	uv run mypy
	uv run lint-imports
	uv run python scripts/check_import_cycles.py

test: lint  ## lint, the benchmark's smoke run, then the whole suite against real services
	uv run python -m bench --smoke
	uv run pytest

format:
	uv run ruff format src tests bench scripts ops
	uv run ruff check --fix src tests bench scripts ops

bench: bootstrap  ## Benchmarks (ratios against a baseline, same run)
	uv run python -m bench

load: bootstrap  ## Locust mobile-user mix in production mode: a short ramp finds the rate, then 10 min (LOAD_DURATION=s)
	uv run python -m ops load

soak: bootstrap  ## Half the load for 30 min (SOAK_DURATION=s): RSS, DB connections, queue and outbox must stay flat
	uv run python -m ops soak

chaos: bootstrap  ## SIGKILL + restart PostgreSQL, Redis, S3, worker, beat in turn under load, then the consistency check
	uv run python -m ops chaos
