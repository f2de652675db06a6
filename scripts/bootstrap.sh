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

apt_lists_fetched=
# ensure CHECK NEED WHY [APT-ARGS...] PACKAGES...: nothing when the shell command CHECK succeeds;
# otherwise the packages from apt (as root; the package lists fetched once per run), or, where
# apt cannot run, a message: a stop when NEED is `required`, a skipped test or tool otherwise.
ensure() {
  local check=$1 need=$2 why=$3
  shift 3
  if eval "$check" >/dev/null 2>&1; then
    return
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing $* (apt): $why" >&2
    if [ -z "$apt_lists_fetched" ]; then
      apt-get update -qq
      apt_lists_fetched=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  elif [ "$need" = required ]; then
    echo "bootstrap: missing, install it (apt-get install $*): $why" >&2
    exit 1
  else
    echo "bootstrap: missing (apt-get install $*): $why; skipped without it" >&2
  fi
}

ensure "command -v redis-server" required "the broker and caches of dev and the tests" redis-server
ensure "command -v wrk" optional "the benchmark's load generator" wrk
ensure "command -v chromedriver" optional "the reset page's browser test" chromium chromium-driver
ensure "command -v caddy" optional "deploy/Caddyfile is validated and a real Caddy proxies the API in the tests" caddy
ensure "command -v promtool" optional "promtool checks deploy/prometheus, a real Prometheus scrapes the test app" \
  --no-install-recommends prometheus
ensure "command -v pgbouncer || [ -x /usr/sbin/pgbouncer ]" required \
  "the cluster tests run the API through it in transaction mode" pgbouncer
ensure "command -v amtool" optional "amtool checks the Alertmanager configuration of docker-compose.yml" \
  --no-install-recommends prometheus-alertmanager
ensure "command -v pgbackrest" optional "scripts/backup and scripts/restore run against a real PostgreSQL in the tests" pgbackrest
ensure "command -v rclone" optional "the backups' copies off the machine, in the tests against the real S3" rclone
ensure "command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl" required "the PostgreSQL server binaries" postgresql

uv sync --frozen --python python3
