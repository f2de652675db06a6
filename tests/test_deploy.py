"""The deployment: docker-compose.yml against the Compose Specification's JSON schema (vendored in
deploy/compose-spec.json) and the rules of docs/deploy.md, and the Caddyfile. (The backups' scripts
run in tests/test_backup.py, the rolling restart in tests/test_rolling_restart.py.)

There is no Docker engine here: nothing in this file starts a container. Where the `docker
compose` CLI or `caddy` is installed, their own validators run too (skipped otherwise)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
SCHEMA_FILE = ROOT / "deploy" / "compose-spec.json"
BACKUP = ROOT / "scripts" / "backup"
RESTORE = ROOT / "scripts" / "restore"

APP_SERVICES = ("migrate", "api-1", "api-2", "worker", "beat")
ENV_FILE_REFERENCE = "${GOALTRACK_ENV_FILE:-/etc/goaltrack/goaltrack.env}"
# What an operator's env file provides to the ${...} of the compose file.
DEPLOY_ENV = {
    "DOMAIN": "goaltrack.example.org",
    "ACME_EMAIL": "ops@example.org",
    "POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
    "MINIO_ROOT_PASSWORD": "fedcba9876543210fedcba9876543210",
    "BACKUP_REPO_ENDPOINT": "https://s3.eu-central-1.example.org",
    "BACKUP_REPO_BUCKET": "goaltrack-backups",
    "BACKUP_REPO_ACCESS_KEY_ID": "backup-key",
    "BACKUP_REPO_SECRET_ACCESS_KEY": "0123456789abcdef0123456789abcdef",
    "BACKUP_ENCRYPTION_PASSPHRASE": "abcdef0123456789abcdef0123456789",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|^AI_API_KEY$")
REFERENCE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
STAMP = re.compile(r"goaltrack-(\d{8}T\d{6}Z)\.dump")


# --- docker-compose.yml ---------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves `<<:` merges
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = load_compose()["services"]
    return found


def references(value: Any) -> list[tuple[str, str, str]]:
    """Every ${NAME[op arg]} in the document: (name, op, arg)."""
    if isinstance(value, dict):
        return [ref for key, item in value.items() for ref in references(key) + references(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in references(item)]
    if isinstance(value, str):
        return [
            (match["name"] or match["bare"], match["op"] or "", match["arg"] or "")
            for match in REFERENCE.finditer(value)
            if match[0] != "$$"
        ]
    return []


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (${VAR}, ${VAR:-default}, ${VAR:?error}, $$)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"] or match["bare"], match["op"] or "", match["arg"] or ""
        current = env.get(name)
        missing = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return arg if missing else str(current)
        if op.endswith("?") and missing:
            raise KeyError(f"{name}: {arg}")
        if op.endswith("+"):
            return "" if missing else arg
        return current or ""

    return REFERENCE.sub(substitute, value)


def long_running(service: dict[str, Any]) -> bool:
    return service.get("restart") != "no"


def test_the_schema_is_the_vendored_compose_specification() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    assert (
        (ROOT / "deploy" / "compose-spec.LICENSE").read_text().lstrip().startswith("Apache License")
    )
    # The schema rejects what it should: an unknown key and a wrong type.
    validator = jsonschema_rs.validator_for(schema)
    assert not validator.is_valid({"services": {"api": {"image": "x", "restrat": "always"}}})
    assert not validator.is_valid({"services": {"api": {"image": "x", "ports": "8000"}}})
    assert validator.is_valid({"services": {"api": {"image": "x", "ports": ["8000:8000"]}}})


def test_compose_file_matches_the_compose_specification() -> None:
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA_FILE.read_text()))
    raw = load_compose()
    for document in (raw, interpolate(raw, DEPLOY_ENV)):
        errors = [
            f"{error.instance_path}: {error.message}" for error in validator.iter_errors(document)
        ]
        assert errors == []


def test_compose_fails_fast_without_the_required_settings() -> None:
    raw = load_compose()
    for name in DEPLOY_ENV:
        with pytest.raises(KeyError, match=name):
            interpolate(raw, {key: value for key, value in DEPLOY_ENV.items() if key != name})


def compose_command() -> list[str] | None:
    if os.environ.get("COMPOSE_BIN"):
        return [os.environ["COMPOSE_BIN"]]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    """`docker compose config` validates without an engine (COMPOSE_BIN=/path/to/docker-compose)."""
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose CLI here (set COMPOSE_BIN to a docker-compose binary)")
    env_file = tmp_path / "goaltrack.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in DEPLOY_ENV.items()))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GOALTRACK_ENV_FILE": str(env_file),
        **DEPLOY_ENV,
    }
    for profile in ([], ["--profile", "staging"]):
        result = subprocess.run(
            [
                *command,
                *("--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *profile),
                *("config", "--quiet"),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_only_caddy_publishes_ports() -> None:
    for name, service in services().items():
        assert service.get("network_mode") != "host", name
        ports = [str(port) for port in service.get("ports", [])]
        if name == "caddy":
            assert {"80:80", "443:443"} <= set(ports)
        else:
            # A staging-only helper may listen on the host's loopback (mailpit): nothing else.
            assert all(port.startswith("127.0.0.1:") for port in ports), name
            assert not ports or service.get("profiles") == ["staging"], name


def test_databases_are_on_an_internal_network_only() -> None:
    compose = load_compose()
    assert compose["networks"]["backend"] == {"internal": True}
    for name in ("postgres", "redis", "minio", "migrate", "beat"):
        assert compose["services"][name]["networks"] == ["backend"], name
    # The backups go to a bucket off the machine (PostgreSQL archives into a local repository,
    # which the backup service mirrors there).
    assert compose["services"]["backup"]["networks"] == ["backend", "egress"]
    # Caddy reaches the API and MinIO through the internal network.
    assert set(compose["services"]["caddy"]["networks"]) == {"backend", "egress"}


def test_every_service_has_a_health_check() -> None:
    found = services()
    one_shots = {name for name, service in found.items() if not long_running(service)}
    assert one_shots == {"migrate"}
    for name, service in found.items():
        check = service.get("healthcheck")
        assert check, name
        if name in one_shots:
            # The image's own check is the API's: a one-shot turns it off explicitly.
            assert check == {"disable": True}
        else:
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
            assert check.get("interval"), name
    for replica in ("api-1", "api-2"):
        api = " ".join(found[replica]["healthcheck"]["test"])
        assert "urllib" in api
        assert "http://127.0.0.1:8000/health/ready" in api  # the image has python, not curl
        assert found[replica]["healthcheck"]["start_interval"] == "1s"  # `up --wait` is quick
    assert "pg_isready" in " ".join(found["postgres"]["healthcheck"]["test"])
    assert found["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert found["minio"]["healthcheck"]["test"][1:] == ["mc", "ready", "local"]
    assert "127.0.0.1:2019" in " ".join(found["caddy"]["healthcheck"]["test"])
    assert "celerybeat-schedule" in " ".join(found["beat"]["healthcheck"]["test"])
    assert "control.ping" in " ".join(found["worker"]["healthcheck"]["test"])


def test_exactly_one_beat() -> None:
    beats = [
        name for name, service in services().items() if "beat" in (service.get("command") or [])
    ]
    assert beats == ["beat"]
    beat = services()["beat"]
    assert beat["command"] == ["goaltrack", "beat"]
    assert beat["deploy"]["replicas"] == 1
    assert "profiles" not in beat
    # Its health check reads the schedule file `goaltrack beat` keeps in /app/.goaltrack, a
    # directory the image must give to its (non-root) user.
    from goaltrack.cli import DEV_DIR

    assert Path(".goaltrack") == DEV_DIR
    assert "/app/.goaltrack/celerybeat-schedule" in " ".join(beat["healthcheck"]["test"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile
    assert "install -d -o goaltrack -g goaltrack /app/.goaltrack" in dockerfile


def test_migrate_is_a_one_shot_that_the_app_waits_for() -> None:
    found = services()
    migrate = found["migrate"]
    assert migrate["command"] == ["goaltrack", "migrate"]
    assert migrate["restart"] == "no"
    for name in ("api-1", "api-2", "worker", "beat"):
        assert found[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name
        assert found[name]["restart"] == "unless-stopped"
    assert found["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_no_secret_value_in_the_compose_file() -> None:
    compose = load_compose()
    for name, op, arg in references(compose):
        if SECRET_NAME.search(name):
            assert "-" not in op, f"${{{name}{op}{arg}}}: a secret never has a default"
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), name
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), (name, key, value)
            # A URL's password is a reference too.
            userinfo = re.match(r"[a-z+]+://([^@/]*)@", str(value))
            if userinfo and ":" in userinfo[1]:
                assert userinfo[1].split(":", 1)[1].startswith("${"), (name, key)


def test_secrets_come_from_an_env_file_outside_the_repository() -> None:
    found = services()
    for name in APP_SERVICES:
        assert found[name]["env_file"] == ENV_FILE_REFERENCE, name
        assert found[name]["environment"]["APP_ENV"] == "production"
    default = Path(ENV_FILE_REFERENCE.split(":-", 1)[1].rstrip("}"))
    assert default.is_absolute()
    assert not default.is_relative_to(ROOT)
    others = [name for name, service in found.items() if "env_file" in service]
    assert sorted(others) == sorted(APP_SERVICES)  # postgres, minio, caddy get only what they need


def test_every_compose_variable_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    used = {name for name, _, _ in references(load_compose())}
    assert used - documented == set()


def test_logs_rotate_and_services_restart_within_limits() -> None:
    for name, service in services().items():
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert {"max-size", "max-file"} <= logging["options"].keys(), name
        if long_running(service):
            assert service["restart"] in ("unless-stopped", "always"), name
        if "profiles" not in service:
            assert service["deploy"]["resources"]["limits"]["memory"], name


def test_redis_is_a_durable_broker() -> None:
    command = services()["redis"]["command"]
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert pairs["--appendonly"] == "yes"


def test_mailpit_only_under_the_staging_profile_on_loopback() -> None:
    mailpit = services()["mailpit"]
    assert mailpit["profiles"] == ["staging"]
    assert mailpit["ports"] == ["127.0.0.1:8025:8025"]


def test_postgres_image_build_context_holds_what_it_copies() -> None:
    found = services()
    assert found["postgres"]["build"] == {
        "context": ".",
        "dockerfile": "deploy/postgres.Dockerfile",
    }
    assert found["backup"]["image"] == found["postgres"]["image"]  # one pgBackRest on both sides
    dockerfile = (ROOT / "deploy" / "postgres.Dockerfile").read_text()
    ignore = (ROOT / "deploy" / "postgres.Dockerfile.dockerignore").read_text().split()
    copied = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert copied == ["scripts/backup", "scripts/restore", "deploy/backup-loop"]
    assert ignore[ignore.index("*") + 1 :] == [f"!{source}" for source in copied]
    for source in copied:
        assert os.access(ROOT / source, os.X_OK), source
    # A pinned minor release of the official image, whose apt source has pgBackRest.
    assert re.search(r"^ARG POSTGRES_IMAGE=postgres:16\.\d+-bookworm$", dockerfile, re.M)
    assert "apt-get install -y --no-install-recommends pgbackrest rclone" in dockerfile


def test_postgres_archives_every_wal_segment_into_the_backup_repository() -> None:
    found = services()
    command = found["postgres"]["command"]
    settings = dict(item.split("=", 1) for item in command[2::2])
    assert command[1::2] == ["-c"] * len(settings)
    assert settings["archive_mode"] == "on"
    assert settings["archive_command"] == "pgbackrest archive-push %p"
    assert int(settings["archive_timeout"]) <= 60  # what a lost disk can cost, at most
    # Both sides see one repository with one configuration, encrypted.
    postgres, backup = found["postgres"], found["backup"]
    for key, value in postgres["environment"].items():
        if key.startswith("PGBACKREST_"):
            assert backup["environment"][key] == value, key
    assert postgres["environment"]["PGBACKREST_REPO1_CIPHER_TYPE"] == "aes-256-cbc"
    assert "pgbackrest:/var/lib/pgbackrest" in postgres["volumes"]
    assert "pgbackrest:/var/lib/pgbackrest" in backup["volumes"]
    assert backup["user"] == "postgres"
    assert backup["entrypoint"] == ["backup-loop"]
    assert backup["environment"]["BACKUP_REPO_TARGET"].startswith("offsite:")
    assert backup["environment"]["BACKUP_OBJECTS_TARGET"].startswith("offsite:")


# --- Caddy ----------------------------------------------------------------------------------


def test_caddy_serves_the_api_and_the_presigned_downloads() -> None:
    found = services()
    caddy = found["caddy"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert caddy["environment"]["DOMAIN"].startswith("${DOMAIN:?")
    # Presigned URLs are signed for the host Caddy proxies to MinIO.
    public = interpolate(found["api-1"]["environment"]["S3_PUBLIC_ENDPOINT_URL"], DEPLOY_ENV)
    assert public == "https://files.goaltrack.example.org"
    text = CADDYFILE.read_text()
    assert re.search(
        r"^\{\$DOMAIN\} \{.*?reverse_proxy api-1:8000 api-2:8000 \{", text, re.S | re.M
    )
    assert re.search(r"^files\.\{\$DOMAIN\} \{.*?reverse_proxy minio:9000", text, re.S | re.M)


def test_two_api_replicas_drain_before_caddys_health_check_misses_them() -> None:
    """A deploy restarts one replica at a time (scripts/rolling-restart; the behaviour is
    tests/test_rolling_restart.py's): a stopping replica fails its readiness for `--drain`
    seconds, long enough for Caddy's active check to see it twice, and Docker waits for the
    drain and uvicorn's graceful stop (20 s, `goaltrack serve`) before it kills."""
    found = services()
    assert found["api-1"] == found["api-2"]
    command = found["api-1"]["command"]
    assert command[command.index("--workers") + 1] == "1"  # the drain needs one process
    drain = float(command[command.index("--drain") + 1])
    text = CADDYFILE.read_text()
    interval = re.search(r"^\s+health_interval (\d+)s$", text, re.M)
    assert interval
    assert "health_uri /health/ready" in text
    assert re.search(r"^\s+lb_try_duration \d+s$", text, re.M)
    assert drain >= 2 * int(interval[1])
    grace = found["api-1"]["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace[:-1]) > drain + 20


def test_caddy_adapts_the_caddyfile() -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed here (apt-get install caddy)")
    result = subprocess.run(
        [caddy, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile", "--validate"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **DEPLOY_ENV},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["email"] == (
        "ops@example.org"
    )
    upstreams: dict[str, str] = {}
    for route in config["apps"]["http"]["servers"]["srv0"]["routes"]:
        [host] = route["match"][0]["host"]
        dials = re.findall(r'"dial": "([^"]+)"', json.dumps(route, indent=1))
        upstreams[host] = ",".join(sorted(set(dials)))
    assert upstreams == {
        "goaltrack.example.org": "api-1:8000,api-2:8000",
        "files.goaltrack.example.org": "minio:9000",
    }
