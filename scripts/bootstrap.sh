#!/usr/bin/env bash
# Installs what `make dev` and `make test` need on a fresh Debian/Ubuntu machine (or checks a laptop):
# uv, the Python packages from uv.lock, redis-server, wrk (benchmark), chromium-driver (browser test), caddy (the
# proxy test, deploy/Caddyfile), pgbouncer (the cluster tests), pgbackrest and rclone (the backup tests). PostgreSQL server binaries must be present
# (they are in this project's machine image; elsewhere: apt-get install postgresql).
set -euo pipefail

export UV_PYTHON_DOWNLOADS=never

if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv" >&2
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing redis-server (apt)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "bootstrap: redis-server is missing: install it (apt-get install redis-server, brew install redis)" >&2
    exit 1
  fi
fi

if ! command -v wrk >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing wrk (apt), the benchmark's load generator" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "bootstrap: wrk is missing (apt-get install wrk, brew install wrk); only the benchmark needs it" >&2
  fi
fi

if ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing chromium + chromium-driver (apt), the reset page's browser test" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "bootstrap: chromium-driver is missing (apt-get install chromium chromium-driver); the browser test is skipped without it" >&2
  fi
fi

if ! command -v caddy >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing caddy (apt): deploy/Caddyfile is validated and a real Caddy proxies the API in the tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq caddy >/dev/null
  else
    echo "bootstrap: caddy is missing (apt-get install caddy, brew install caddy); the Caddy tests are skipped without it" >&2
  fi
fi

if ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing prometheus (apt): promtool checks deploy/prometheus, a real Prometheus scrapes the test app" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "bootstrap: promtool is missing (apt-get install prometheus); the Prometheus tests are skipped without it" >&2
  fi
fi

if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing pgbouncer (apt): the cluster tests run the API through it in transaction mode" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
  else
    echo "bootstrap: pgbouncer is missing (apt-get install pgbouncer, brew install pgbouncer); the cluster tests need it" >&2
    exit 1
  fi
fi

if ! command -v amtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing prometheus-alertmanager (apt): amtool checks the Alertmanager configuration of docker-compose.yml" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null
  else
    echo "bootstrap: amtool is missing (apt-get install prometheus-alertmanager); its check is skipped without it" >&2
  fi
fi

for tool in pgbackrest rclone; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "bootstrap: installing $tool (apt): scripts/backup and scripts/restore run against a real PostgreSQL in the tests" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
    else
      echo "bootstrap: $tool is missing (apt-get install $tool); the backup tests are skipped without it" >&2
    fi
  fi
done

if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing PostgreSQL server binaries (apt)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "bootstrap: PostgreSQL server binaries are missing (apt-get install postgresql)" >&2
    exit 1
  fi
fi

uv sync --frozen --python python3
