# syntax=docker/dockerfile:1.7
# Build: dependencies first (cached layer), then the project; run as a non-root user.
FROM python:3.11.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-install-project
COPY src ./src
COPY alembic.ini ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev

FROM python:3.11.11-slim-bookworm AS runtime
RUN groupadd --system goaltrack && useradd --system --gid goaltrack --home /app goaltrack
WORKDIR /app
COPY --from=build --chown=goaltrack:goaltrack /app /app
# WORKDIR made /app root's: beat keeps its schedule file in a directory of its own user.
RUN install -d -o goaltrack -g goaltrack /app/.goaltrack
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 APP_ENV=production
USER goaltrack
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["goaltrack", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
