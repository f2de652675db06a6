# The verbs people type. Each installs what it needs first (scripts/bootstrap.sh).
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
export UV_PYTHON_DOWNLOADS := never

.PHONY: dev test lint format bootstrap bench

bootstrap:
	@scripts/bootstrap.sh

dev: bootstrap  ## Local PostgreSQL + Redis + S3, migrations, API + worker + beat
	uv run goaltrack dev

lint: bootstrap  ## ruff (lint + format check) and mypy
	uv run ruff check src tests bench
	uv run ruff format --check src tests bench
	uv run mypy

test: lint  ## lint, the benchmark's smoke run, then the whole suite against real services
	uv run python -m bench --smoke
	uv run pytest

format:
	uv run ruff format src tests bench
	uv run ruff check --fix src tests bench

bench: bootstrap  ## Benchmarks (ratios against a baseline, same run)
	uv run python -m bench
