"""The deployment: docker-compose.yml against the Compose Specification's JSON schema (vendored in
deploy/compose-spec.json) and the rules of docs/deploy.md (pinned images, per-service secrets,
limits within the VPS, every process scraped), the configurations Compose writes (Redis,
SeaweedFS's identities, Alertmanager) run by the real servers, the alert rules' promtool unit
tests, and the Caddyfile. (The backups' scripts run in tests/test_backup.py, the rolling restart
in tests/test_rolling_restart.py.)

There is no Docker engine here: nothing in this file starts a container. Where the `docker
compose` CLI or `caddy` is installed, their own validators run too (skipped otherwise)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from goaltrack.dev.localstack import LocalStack, free_port
from helpers import installed, wait_until

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
COMPOSE_FILE = ROOT / "docker-compose.yml"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
SCHEMA_FILE = ROOT / "deploy" / "compose-spec.json"
BACKUP = ROOT / "scripts" / "backup"
RESTORE = ROOT / "scripts" / "restore"

APP_SERVICES = ("migrate", "api-1", "api-2", "worker", "beat")
# The app containers that read GOALTRACK_ENV_FILE whole: those that serve users. migrate and beat
# get only what they read (goaltrack.config.SettingsWithoutUserSecrets).
ENV_FILE_SERVICES = ("api-1", "api-2", "worker")
ENV_FILE_REFERENCE = "${GOALTRACK_ENV_FILE:-/etc/goaltrack/goaltrack.env}"
# What an operator's env file provides to the ${...} of the compose file.
DEPLOY_ENV = {
    "DOMAIN": "goaltrack.example.org",
    "ACME_EMAIL": "ops@example.org",
    "GOALTRACK_VERSION": "v1.0.0",
    "POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
    "POSTGRES_MONITOR_PASSWORD": "89abcdef0123456789abcdef01234567",
    "REDIS_PASSWORD": "fedcba9876543210fedcba9876543210",
    "S3_APP_SECRET_ACCESS_KEY": "00112233445566778899aabbccddeeff",
    "S3_BACKUP_SECRET_ACCESS_KEY": "ffeeddccbbaa99887766554433221100",
    "METRICS_TOKEN": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "BACKUP_REPO_ENDPOINT": "https://s3.eu-central-1.example.org",
    "BACKUP_REPO_BUCKET": "goaltrack-backups",
    "BACKUP_REPO_ACCESS_KEY_ID": "backup-key",
    "BACKUP_REPO_SECRET_ACCESS_KEY": "0123456789abcdef0123456789abcdef",
    "BACKUP_ENCRYPTION_PASSPHRASE": "abcdef0123456789abcdef0123456789",
}
SECRET_NAME = re.compile(r"PASSWORD|PASSPHRASE|SECRET|TOKEN|_KEY$|^AI_API_KEY$")
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
    for profile in ([], ["--profile", "staging"], ["--profile", "monitoring"]):
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
    for name in ("postgres", "redis", "seaweedfs", "migrate", "beat", "prometheus"):
        assert compose["services"][name]["networks"] == ["backend"], name
    # The backups go to a bucket off the machine (PostgreSQL archives into a local repository,
    # which the backup service mirrors there).
    assert compose["services"]["backup"]["networks"] == ["backend", "egress"]
    # Caddy reaches the API and SeaweedFS through the internal network.
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
    # The app's checks heal (goaltrack.healthcheck, tests/test_healthcheck.py): the command,
    # for the process the service runs, in a container whose init passes the SIGTERM on.
    for name, kind in (("api-1", "api"), ("api-2", "api"), ("worker", "worker"), ("beat", "beat")):
        assert found[name]["healthcheck"]["test"][1:4] == ["goaltrack", "health", kind], name
        assert found[name]["init"] is True, name
        assert found[name]["restart"] == "unless-stopped", name
        # Docker counts no failure during start_period; the command counts none in its grace.
        assert parse_duration(found[name]["healthcheck"]["start_period"]) <= 60, name
    for replica in ("api-1", "api-2"):
        assert found[replica]["healthcheck"]["start_interval"] == "1s"  # `up --wait` is quick
    assert "pg_isready" in " ".join(found["postgres"]["healthcheck"]["test"])
    # redis-cli authenticates with REDISCLI_AUTH (the password), never on its command line.
    assert found["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert found["redis"]["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    assert "http://127.0.0.1:8333/healthz" in found["seaweedfs"]["healthcheck"]["test"]
    assert "127.0.0.1:2019" in " ".join(found["caddy"]["healthcheck"]["test"])


def parse_duration(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(
        float(number) * units[unit] for number, unit in re.findall(r"(\d+)(ms|s|m|h)", value)
    )


def test_exactly_one_beat() -> None:
    beats = [
        name for name, service in services().items() if "beat" in (service.get("command") or [])
    ]
    assert beats == ["beat"]
    beat = services()["beat"]
    assert beat["command"] == ["goaltrack", "beat"]
    assert beat["deploy"]["replicas"] == 1
    assert "profiles" not in beat
    # Its heartbeat sits beside the schedule file `goaltrack beat` keeps in /app/.goaltrack, a
    # directory the image must give to its (non-root) user.
    from goaltrack.cli import BEAT_SCHEDULE, DEV_DIR

    assert Path(".goaltrack") == DEV_DIR
    assert BEAT_SCHEDULE.parent == DEV_DIR
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
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*)?\}", str(value)), (name, key, value)
            # A URL's password is a reference too.
            userinfo = re.match(r"[a-z+]+://([^@/]*)@", str(value))
            if userinfo and ":" in userinfo[1]:
                assert userinfo[1].split(":", 1)[1].startswith("${"), (name, key)


def test_secrets_come_from_an_env_file_outside_the_repository() -> None:
    found = services()
    for name in APP_SERVICES:
        assert found[name]["environment"]["APP_ENV"] == "production"
    for name in ENV_FILE_SERVICES:
        assert found[name]["env_file"] == ENV_FILE_REFERENCE, name
    default = Path(ENV_FILE_REFERENCE.split(":-", 1)[1].rstrip("}"))
    assert default.is_absolute()
    assert not default.is_relative_to(ROOT)
    others = [name for name, service in found.items() if "env_file" in service]
    assert sorted(others) == sorted(ENV_FILE_SERVICES)  # the rest get only what they need


def _settings_secrets() -> set[str]:
    """The application's secret settings (SecretStr): an operator keeps them in
    GOALTRACK_ENV_FILE, so a service given that file is given every one of them."""
    from pydantic import SecretStr

    from goaltrack.config import Settings

    return {
        name.upper()
        for name, field in Settings.model_fields.items()
        if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))
    }


# The secrets of the app's env file (GOALTRACK_ENV_FILE): JWT, mail, AI, Sentry (and S3 and the
# metrics token, which compose sets itself for the API and the worker).
APP_SECRETS = {
    "JWT_SECRET",
    "MAIL_PASSWORD",
    "AI_API_KEY",
    "SENTRY_DSN",
    "S3_SECRET_ACCESS_KEY",
    "METRICS_TOKEN",
}
# Which secrets each service is given, through the compose file's ${...} in its environment or
# the app's env file: what it uses.
SECRETS_USED = {
    "migrate": {"POSTGRES_PASSWORD"},
    "api-1": {
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "S3_APP_SECRET_ACCESS_KEY",
        "METRICS_TOKEN",
        *APP_SECRETS,
    },
    "api-2": {
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "S3_APP_SECRET_ACCESS_KEY",
        "METRICS_TOKEN",
        *APP_SECRETS,
    },
    "worker": {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "S3_APP_SECRET_ACCESS_KEY", *APP_SECRETS},
    "beat": {"REDIS_PASSWORD"},
    # The WAL it archives goes into the encrypted repository (pgBackRest's cipher pass); the
    # monitoring role's password, for deploy/postgres-monitor-role.
    "postgres": {
        "POSTGRES_PASSWORD",
        "BACKUP_ENCRYPTION_PASSPHRASE",
        "POSTGRES_MONITOR_PASSWORD",
    },
    "redis": {"REDIS_PASSWORD"},
    # PostgreSQL's own user through the socket (no password); the bucket's read key, the
    # off-site bucket's key, the repository's cipher pass.
    "backup": {
        "S3_BACKUP_SECRET_ACCESS_KEY",
        "BACKUP_REPO_SECRET_ACCESS_KEY",
        "BACKUP_ENCRYPTION_PASSPHRASE",
    },
    # pg_monitor only (deploy/postgres-monitor-role), not the app's owner role.
    "postgres-exporter": {"POSTGRES_MONITOR_PASSWORD"},
    "redis-exporter": {"REDIS_PASSWORD"},
}


def test_each_service_gets_only_the_secrets_it_uses() -> None:
    assert _settings_secrets() == APP_SECRETS  # a new secret setting: say who may have it
    for name, service in services().items():
        given = {
            reference
            for reference, _, _ in references(service.get("environment") or {})
            if SECRET_NAME.search(reference)
        }
        if "env_file" in service:
            given |= APP_SECRETS
        assert given == SECRETS_USED.get(name, set()), name
    # The compose-level secrets never reach the app through its env file: they are set per
    # service above, and the env file is not the project's .env (docs/deploy.md).
    documented = (ROOT / "docs" / "deploy.md").read_text()
    assert "/etc/goaltrack/compose.env" in documented
    assert "compose.env" not in ENV_FILE_REFERENCE
    # Files with secrets are Compose's configs and secrets, given to the one service that reads them.
    compose = load_compose()
    mounted = {
        item["source"]: name
        for name, service in compose["services"].items()
        for kind in ("configs", "secrets")
        for item in service.get(kind, [])
    }
    assert mounted == {
        "redis-conf": "redis",
        "seaweedfs-identities": "seaweedfs",
        "alertmanager": "alertmanager",
        "blackbox-targets": "prometheus",
        "metrics-token": "prometheus",
    }
    assert compose["secrets"] == {"metrics-token": {"environment": "METRICS_TOKEN"}}


def image_of(service: dict[str, Any]) -> str:
    return str(service["image"])


def test_every_image_is_pinned_to_a_version() -> None:
    for name, service in services().items():
        image = image_of(service)
        if image.partition(":")[0] in ("goaltrack", "goaltrack-postgres"):
            # Ours (built by `app` and `postgres`), tagged per release: no default tag at all.
            assert re.fullmatch(r"goaltrack(-postgres)?:\$\{GOALTRACK_VERSION:\?[^}]+\}", image), (
                name
            )
            continue
        assert "${" not in image, name
        repository, _, tag = image.rpartition(":")
        assert repository, (name, image)
        assert "/" not in tag, (name, image)
        assert "latest" not in tag, (name, image)
        # A version with at least major.minor (a bare major such as `16-alpine` moves).
        assert re.match(r"v?\d+\.\d+", tag), (name, image)
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            assert re.match(r"FROM [a-z/]+:\d+\.\d+\.\d+-", line), line


def test_pin_digests_pins_every_pulled_image_and_the_postgres_base(tmp_path: Path) -> None:
    """scripts/pin-digests with a stand-in for `docker` (no engine, no registry here): every
    image Compose pulls, in every profile, becomes tag@digest in the override, and so does the
    PostgreSQL image's base; the images we build stay ours; the merged file still validates."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(interpolate(load_compose(), DEPLOY_ENV)))
    calls = tmp_path / "calls"
    stand_in = tmp_path / "docker"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import hashlib, json, sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1] == 'compose':\n"
        f"    print(open({str(config)!r}).read())\n"
        "else:  # buildx imagetools inspect <image> --format '{{json .Manifest}}'\n"
        "    digest = hashlib.sha256(sys.argv[4].encode()).hexdigest()\n"
        "    print(json.dumps({'digest': 'sha256:' + digest, 'mediaType': 'index'}))\n"
    )
    stand_in.chmod(0o755)
    override = ROOT / "docker-compose.digests.yml"
    assert not override.exists()  # the machine's own file, never the repository's
    try:
        subprocess.run(
            [str(ROOT / "scripts" / "pin-digests")],
            env={"PATH": os.environ["PATH"], "DOCKER": str(stand_in)},
            check=True,
            capture_output=True,
        )
        pins = yaml.safe_load(override.read_text())["services"]
    finally:
        override.unlink(missing_ok=True)
    assert "compose --profile monitoring --profile staging config" in calls.read_text()
    found = services()
    built = {image_of(service) for service in found.values() if "build" in service}
    pulled = {name for name, service in found.items() if image_of(service) not in built}
    assert "backup" not in pulled  # postgres's image, ours
    assert set(pins) == pulled | {"postgres"}
    for name in pulled:
        image = pins[name]["image"]
        tag, _, digest = image.partition("@")
        assert tag == image_of(found[name]), name
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), name
    base = pins["postgres"]["build"]["args"]["POSTGRES_IMAGE"]
    assert re.fullmatch(r"postgres:16\.\d+-bookworm@sha256:[0-9a-f]{64}", base)
    merged = load_compose()
    for name, pin in pins.items():
        if "image" in pin:
            merged["services"][name]["image"] = pin["image"]
        else:
            merged["services"][name]["build"]["args"] = pin["build"]["args"]
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA_FILE.read_text()))
    validator.validate(interpolate(merged, DEPLOY_ENV))
    assert "docker-compose.digests.yml" in (ROOT / ".gitignore").read_text().split()


# The VPS of docs/deploy.md: 4 GB, 2 vCPU. 512 MiB of it stay with the kernel, Docker and the page
# cache: the limits of everything that runs at once (the monitoring profile included; one-shots
# and the staging mail catcher not) add up to the rest.
VPS_MEMORY_MIB = 4096 - 512
VPS_CPUS = 2.0
# Measured under load (docs/operations.md, "Memory"): proportional set size, MiB, the peak.
MEASURED_PSS_MIB = {
    "api": 369,
    "worker": 381,
    "beat": 133,
    "postgres": 264 + 128,  # measured with 128 MB of shared buffers; compose gives it 256 MB
    "redis": 5,
    "seaweedfs": 112,
}


def memory_mib(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([MG])", value).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "G" else 1)


def test_limits_fit_the_vps() -> None:
    memory = cpus = 0.0
    for name, service in services().items():
        limits = service["deploy"]["resources"]["limits"]
        assert limits.get("memory"), name
        assert limits.get("cpus"), name
        if not long_running(service) or service.get("profiles") == ["staging"]:
            continue
        replicas = service["deploy"].get("replicas", 1)
        memory += replicas * memory_mib(limits["memory"])
        cpus += replicas * float(limits["cpus"])
        if name in MEASURED_PSS_MIB:
            # Room above the measured peak: a quarter at least.
            assert memory_mib(limits["memory"]) >= 1.25 * MEASURED_PSS_MIB[name], name
    assert memory <= VPS_MEMORY_MIB, memory
    assert cpus <= VPS_CPUS + 1e-9, cpus
    # The figures are in the compose file beside the limits, for whoever changes them.
    text = COMPOSE_FILE.read_text()
    for name, measured in MEASURED_PSS_MIB.items():
        if name != "postgres":
            assert f"{measured} MB PSS" in text or f"{measured - 1} MB PSS" in text, name


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
        assert service["deploy"]["resources"]["limits"]["memory"], name


def rendered_config(name: str, env: dict[str, str] = DEPLOY_ENV) -> str:
    """A `configs:` entry's content as Compose writes it (variables substituted)."""
    content: str = interpolate(load_compose()["configs"][name]["content"], env)
    return content


def test_redis_is_a_durable_broker() -> None:
    directives = dict(line.split(" ", 1) for line in rendered_config("redis-conf").splitlines())
    assert directives["maxmemory-policy"] == "noeviction"
    assert directives["appendonly"] == "yes"
    assert directives["requirepass"] == DEPLOY_ENV["REDIS_PASSWORD"]
    assert services()["redis"]["command"] == ["redis-server", "/usr/local/etc/redis/redis.conf"]


async def test_redis_refuses_clients_without_the_password(tmp_path: Path) -> None:
    """The real redis-server with the file Compose writes; the app's REDIS_URL gets in."""
    import redis.asyncio as aioredis

    server = shutil.which("redis-server")
    assert server, "redis-server runs the test session's broker"
    config = tmp_path / "redis.conf"
    config.write_text(rendered_config("redis-conf"))
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(server, str(config), "--port", str(port), "--dir", str(tmp_path)),
        *("--bind", "127.0.0.1"),
        stdout=subprocess.DEVNULL,
    )
    try:
        url = interpolate(services()["api-1"]["environment"]["REDIS_URL"], DEPLOY_ENV)
        assert url.startswith("redis://:")
        assert url.endswith("@redis:6379/0")
        local = url.replace("@redis:6379", f"@127.0.0.1:{port}")

        async def answers() -> bool:
            client = aioredis.Redis.from_url(local)
            try:
                return bool(await client.ping())
            except aioredis.ConnectionError:
                return False
            finally:
                await client.aclose()

        await wait_until(answers, timeout=20)
        anonymous = aioredis.Redis(port=port)
        try:
            with pytest.raises(aioredis.AuthenticationError):
                await anonymous.ping()
        finally:
            await anonymous.aclose()
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)


async def test_seaweedfs_gives_each_key_only_its_rights(tmp_path: Path) -> None:
    """The real SeaweedFS (the `weed` of the dev dependencies, as in the seaweedfs service) with
    the identities Compose writes and the bucket created at start: the app's key reads, writes,
    lists and deletes objects of its bucket and nothing else; the backup's key only reads."""
    import aioboto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    seaweedfs = services()["seaweedfs"]
    assert seaweedfs["image"].rsplit(":", 1)[1] == weed_version(weed)  # one implementation
    command = interpolate(seaweedfs["command"], DEPLOY_ENV)
    assert command[0] == "mini"
    (tmp_path / "s3.json").write_text(rendered_config("seaweedfs-identities"))
    port = free_port()
    local = {
        "-dir": str(tmp_path / "data"),
        "-ip.bind": "127.0.0.1",
        "-s3.config": str(tmp_path / "s3.json"),
        "-s3.port": str(port),
        **{f"-{part}.port": str(free_port()) for part in ("master", "volume", "filer")},
    }
    flags = [flag for flag in command[1:] if flag.split("=", 1)[0] not in local]
    (tmp_path / "data").mkdir()
    with (tmp_path / "weed.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(weed, "mini", *flags, *(f"{key}={value}" for key, value in local.items())),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    api = interpolate(services()["api-1"]["environment"], DEPLOY_ENV)
    # The backup reads the bucket through rclone's `app` remote.
    rclone = interpolate(services()["backup"]["environment"], DEPLOY_ENV)
    backup = {
        "S3_ACCESS_KEY_ID": rclone["RCLONE_CONFIG_APP_ACCESS_KEY_ID"],
        "S3_SECRET_ACCESS_KEY": rclone["RCLONE_CONFIG_APP_SECRET_ACCESS_KEY"],
    }
    bucket = api["S3_BUCKET"]
    session = aioboto3.Session()

    def client(environment: dict[str, str]) -> Any:
        return session.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id=environment["S3_ACCESS_KEY_ID"],
            aws_secret_access_key=environment["S3_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    try:
        async with client(api) as app_s3, client(backup) as backup_s3:

            async def bucket_exists() -> bool:
                try:
                    await app_s3.head_bucket(Bucket=bucket)
                except Exception:
                    return False
                return True

            await wait_until(bucket_exists, timeout=60)
            await app_s3.put_object(Bucket=bucket, Key="a/b.bin", Body=b"data")
            body = await (await app_s3.get_object(Bucket=bucket, Key="a/b.bin"))["Body"].read()
            assert body == b"data"
            listed = await backup_s3.list_objects_v2(Bucket=bucket)
            assert [item["Key"] for item in listed["Contents"]] == ["a/b.bin"]
            backup_body = await backup_s3.get_object(Bucket=bucket, Key="a/b.bin")
            assert await backup_body["Body"].read() == b"data"
            refused = [
                app_s3.create_bucket(Bucket="another"),
                app_s3.delete_bucket(Bucket=bucket),
                backup_s3.put_object(Bucket=bucket, Key="x", Body=b"x"),
                backup_s3.delete_object(Bucket=bucket, Key="a/b.bin"),
            ]
            for attempt in refused:
                with pytest.raises(ClientError, match="AccessDenied"):
                    await attempt
            await app_s3.delete_object(Bucket=bucket, Key="a/b.bin")
    finally:
        process.kill()
        await process.wait()


def weed_version(weed: str) -> str:
    result = subprocess.run([weed, "version"], capture_output=True, text=True, check=True)
    return re.search(r"version \S+ (\d+\.\d+)", result.stdout)[1]  # type: ignore[index]


def test_alertmanager_routes_to_the_receiver_chosen() -> None:
    """The receiver named in ALERT_RECEIVER, defined with the operator's values; both stay valid."""
    email = {
        "ALERT_EMAIL_TO": "oncall@example.org",
        "ALERT_SMTP_SMARTHOST": "smtp.example.org:587",
        "ALERT_SMTP_PASSWORD": "s3cret",
    }
    config = yaml.safe_load(rendered_config("alertmanager", DEPLOY_ENV | email))
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert config["route"]["receiver"] == "email"
    [mail] = receivers["email"]["email_configs"]
    assert (mail["to"], mail["smarthost"], mail["auth_password"]) == (
        "oncall@example.org",
        "smtp.example.org:587",
        "s3cret",
    )
    hook = {"ALERT_RECEIVER": "webhook", "ALERT_WEBHOOK_URL": "https://ntfy.example.org/ops"}
    config = yaml.safe_load(rendered_config("alertmanager", DEPLOY_ENV | hook))
    assert config["route"]["receiver"] == "webhook"
    assert config["receivers"][1]["webhook_configs"][0]["url"] == hook["ALERT_WEBHOOK_URL"]


def test_amtool_accepts_the_alertmanager_configuration(tmp_path: Path) -> None:
    """Alertmanager's own check, on what Compose writes with each receiver chosen, and the
    defaults (an operator who has set nothing of ALERT_*)."""
    amtool = installed("amtool", "prometheus-alertmanager")
    for chosen in (
        {},
        {"ALERT_RECEIVER": "webhook", "ALERT_WEBHOOK_URL": "https://ntfy.example.org/ops"},
    ):
        path = tmp_path / "alertmanager.yml"
        path.write_text(rendered_config("alertmanager", DEPLOY_ENV | chosen))
        result = subprocess.run(
            [amtool, "check-config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    path.write_text(path.read_text().replace("receiver: webhook", "receiver: pager"))
    refused = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, timeout=60, check=False
    )
    assert refused.returncode != 0  # a receiver that is not defined


# --- Monitoring: every process a target, every alert tested ------------------------------------


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_every_app_process_is_a_scrape_target() -> None:
    """Each container of api, worker and beat is its own target (Docker's DNS gives every
    replica's address); inside one, the processes add up (PROMETHEUS_MULTIPROC_DIR) and the pool
    gauges carry their pid (goaltrack.observability.metrics)."""
    found = services()
    jobs = scrape_jobs()
    api_port = found["api-1"]["command"][found["api-1"]["command"].index("--port") + 1]
    expected = {
        "goaltrack-api": (["api-1", "api-2"], int(api_port)),
        "goaltrack-worker": (
            ["worker"],
            int(found["worker"]["environment"]["WORKER_METRICS_PORT"]),
        ),
        "goaltrack-beat": (["beat"], int(found["beat"]["environment"]["BEAT_METRICS_PORT"])),
    }
    for job, (names, port) in expected.items():
        [discovery] = jobs[job]["dns_sd_configs"]
        assert discovery == {"names": names, "type": "A", "port": port}, job
        for service in names:
            assert found[service]["networks"][0] == "backend"
    for service in ("worker", "beat"):
        assert found[service]["environment"]["METRICS_BIND_ADDRESS"] == "0.0.0.0"  # noqa: S104
    assert jobs["goaltrack-api"]["authorization"]["credentials_file"] == "metrics-token"
    for service in ("api-1", "api-2", "worker"):
        assert found[service]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/run/prom"
        assert found[service]["tmpfs"] == ["/run/prom"]
    # Every long-running app service is covered, whatever is added later.
    app_services = {name for name in APP_SERVICES if long_running(found[name])}
    assert app_services == {service for names, _ in expected.values() for service in names}


def test_every_exporter_is_scraped_and_in_the_monitoring_profile() -> None:
    found = services()
    monitoring = {
        name for name, service in found.items() if service.get("profiles") == ["monitoring"]
    }
    assert monitoring == {
        "prometheus",
        "alertmanager",
        "node-exporter",
        "postgres-exporter",
        "redis-exporter",
        "blackbox-exporter",
    }
    targets = {
        target
        for job in scrape_jobs().values()
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert {"node-exporter:9100", "postgres-exporter:9187", "redis-exporter:9121"} <= targets
    assert {"alertmanager:9093", "blackbox-exporter:9115"} <= targets
    blackbox = scrape_jobs()["blackbox"]
    assert blackbox["relabel_configs"][-1]["replacement"] == "blackbox-exporter:9115"
    probed = json.loads(rendered_config("blackbox-targets"))
    assert probed == [
        {
            "targets": [
                "https://goaltrack.example.org/health",
                "https://files.goaltrack.example.org/",
            ]
        }
    ]
    mounted = found["prometheus"]["configs"][0]["target"]
    assert blackbox["file_sd_configs"][0]["files"] == [mounted]


def promtool() -> str:
    return installed("promtool", "prometheus")


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - fired == set()
    assert fired <= alerts


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_alert_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: the same file, expecting an alert one minute too early."""
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
    text = (PROMETHEUS_DIR / "alerts.test.yml").read_text()
    broken = text.replace(
        "      - eval_time: 6m\n        alertname: GoaltrackTargetDown",
        "      - eval_time: 4m\n        alertname: GoaltrackTargetDown",
        1,
    )
    assert broken != text
    (tmp_path / "alerts.test.yml").write_text(broken)
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0


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
    assert copied == [
        "scripts/backup",
        "scripts/restore",
        "deploy/backup-loop",
        "deploy/postgres-monitor-role",
    ]
    # The role's script runs when the official image initialises an empty data directory.
    assert re.search(
        r"^COPY deploy/postgres-monitor-role /docker-entrypoint-initdb\.d/\S+\.sh$",
        dockerfile,
        re.M,
    )
    assert ignore[ignore.index("*") + 1 :] == [f"!{source}" for source in copied]
    for source in copied:
        assert os.access(ROOT / source, os.X_OK), source
    # A pinned minor release of the official image, whose apt source has pgBackRest.
    assert re.search(r"^ARG POSTGRES_IMAGE=postgres:16\.\d+-bookworm$", dockerfile, re.M)
    assert "apt-get install -y --no-install-recommends pgbackrest rclone" in dockerfile


def test_postgres_exporters_role_may_read_the_statistics_and_nothing_else() -> None:
    """deploy/postgres-monitor-role, run twice (at initialisation, then again by an operator) on
    a real PostgreSQL that holds the app's schema: the role logs in with pg_monitor's views and
    cannot read or change the app's tables, nor do anything a superuser may."""
    from goaltrack.dev.localstack import Postgres, _find_postgres_bin
    from goaltrack.migrations import upgrade

    # Not under pytest's tmp_path, which the server's own user may not enter.
    root = Path(tempfile.mkdtemp(prefix="goaltrack-monitor-"))
    root.chmod(0o755)
    server = Postgres(root / "pg")
    server.start()
    try:
        upgrade(server.url)
        psql = str(_find_postgres_bin() / "psql")
        environment = {
            "PATH": os.environ["PATH"],
            "PGHOST": "127.0.0.1",
            "PGPORT": str(server.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": server.database,
            "POSTGRES_MONITOR_PASSWORD": DEPLOY_ENV["POSTGRES_MONITOR_PASSWORD"],
        }
        script = ROOT / "deploy" / "postgres-monitor-role"
        for _ in range(2):
            subprocess.run([str(script)], env=environment, check=True, capture_output=True)

        def as_monitor(sql: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [psql, "-X", "-U", "goaltrack_monitor", "-d", server.database, "-tAc", sql],
                env=environment,
                capture_output=True,
                text=True,
                check=False,
            )

        role = as_monitor(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,"
            " pg_has_role('goaltrack_monitor', 'pg_monitor', 'USAGE'),"
            " (SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
            "  WHERE m.member = 'goaltrack_monitor'::regrole)"
            " FROM pg_roles WHERE rolname = current_user"
        )
        assert role.stdout.strip() == "f|f|f|f|f|t|1", role.stderr
        # What the exporter reads: every backend's query and state, the databases' sizes.
        statistics = as_monitor(
            "SELECT count(*) > 0, bool_and(query IS NOT NULL) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend'"
        )
        assert statistics.stdout.strip() == "t|t", statistics.stderr
        assert as_monitor("SELECT pg_database_size(current_database()) > 0").stdout.strip() == "t"
        for refused in (
            "SELECT count(*) FROM users",
            "DELETE FROM goals",
            "CREATE TABLE monitor_was_here (id int)",
            "CREATE ROLE another",
        ):
            result = as_monitor(refused)
            assert result.returncode != 0, refused
            assert "permission denied" in result.stderr, (refused, result.stderr)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_migrate_and_beat_start_with_only_their_environment(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the app's env file, production's settings of `goaltrack migrate` and `goaltrack
    beat` are whole: migrate runs (against the tests' database) with its compose environment
    alone, in a directory without a .env; beat's Celery app builds from beat's, with its tick."""
    from goaltrack.celery_app import create_celery
    from goaltrack.config import Settings, SettingsWithoutUserSecrets

    found = services()
    migrate = interpolate(found["migrate"]["environment"], DEPLOY_ENV)
    assert set(migrate) == {"APP_ENV", "DATABASE_URL"}
    assert stack.postgres is not None
    migrate["DATABASE_URL"] = stack.postgres.url  # the host is compose's `postgres`
    result = subprocess.run(
        [sys.executable, "-m", "goaltrack", "migrate"],
        env={"PATH": os.environ["PATH"], **migrate},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    beat = interpolate(found["beat"]["environment"], DEPLOY_ENV)
    given = {name.lower(): value for name, value in beat.items()}
    for name in Settings.model_fields:  # the tests' own settings are not beat's
        monkeypatch.delenv(name.upper(), raising=False)
    assert set(given) <= set(Settings.model_fields), set(given) - set(Settings.model_fields)
    with pytest.raises(ValueError, match="JWT_SECRET"):
        Settings(_env_file=None, **given)  # the API's settings would refuse to start
    settings = SettingsWithoutUserSecrets(_env_file=None, **given)
    assert settings.redis_url == "redis://:fedcba9876543210fedcba9876543210@redis:6379/0"
    schedule = create_celery(settings).conf.beat_schedule
    assert settings.scheduler_interval_seconds == 60
    assert 60 in {entry["schedule"] for entry in schedule.values()}


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


# --- The guides' figures ----------------------------------------------------------------------

OPERATIONS = ROOT / "docs" / "operations.md"
DEPLOY_GUIDE = ROOT / "docs" / "deploy.md"


def compose_connection_bound() -> int:
    """PostgreSQL connections the compose deployment may open: each API process's two pools,
    each task process's engine; beat and the worker's main process hold none."""
    from goaltrack.config import Settings
    from goaltrack.worker.runtime import TASK_POOL_SIZE

    fields = Settings.model_fields
    per_api_process = fields["database_pool_size"].default + (
        fields["database_read_pool_size"].default
    )
    total = 0
    for service in services().values():
        command = service.get("command") or []
        replicas = service.get("deploy", {}).get("replicas", 1)
        if command[:2] == ["goaltrack", "serve"]:
            total += replicas * int(command[command.index("--workers") + 1]) * per_api_process
        elif command[:2] == ["goaltrack", "worker"]:
            children = int(command[command.index("--concurrency") + 1])
            total += replicas * children * TASK_POOL_SIZE
    return total


def test_the_guides_state_the_connections_the_pools_allow() -> None:
    bound = compose_connection_bound()
    for guide in (OPERATIONS, DEPLOY_GUIDE):
        stated = re.findall(r"at most \*\*(\d+)\*\* PostgreSQL\s+connections", guide.read_text())
        assert stated, guide.name
        assert {int(number) for number in stated} == {bound}, guide.name
    # Within what PostgresConnectionsNearMax allows of the default max_connections (100).
    assert bound <= 80


def test_the_runs_settings_in_operations_md_are_the_defaults() -> None:
    """ "Everything else is the production default: ..." names Settings' own defaults."""
    from goaltrack.config import Settings

    text = OPERATIONS.read_text()
    sentence = text[text.index("Everything else is the production default") :]
    sentence = sentence[: sentence.index("\n\n")]
    stated = dict(re.findall(r"`([A-Z_]+)=([^`]+)`", sentence))
    assert len(stated) >= 5
    for name, value in stated.items():
        default = Settings.model_fields[name.lower()].default
        assert str(default) == value, name


def test_the_chaos_table_is_the_chaos_result() -> None:
    """The per-fault rows of both guides are ops/results/chaos.json's, as the harness wrote it."""
    result = json.loads((ROOT / "ops" / "results" / "chaos.json").read_text())
    for guide in (OPERATIONS, DEPLOY_GUIDE):
        rows = {
            match["part"]: match.groups()[1:]
            for match in re.finditer(
                r"^\| (?P<part>\w+) \| ([\d.]+) s \| (\d+) \| (\d+) \| ([\d.]+) s \|$",
                guide.read_text(),
                re.M,
            )
        }
        assert rows == {
            fault["component"]: (
                str(fault["down_s"]),
                str(fault["requests"]),
                str(fault["errors"]),
                str(fault["recovered_after_restart_s"]),
            )
            for fault in result["faults"]
        }, guide.name


def test_both_guides_say_the_same_about_beat() -> None:
    """One beat; a second is safe (SKIP LOCKED) but doubles the ticks: never "exactly one"."""
    for guide in (OPERATIONS, DEPLOY_GUIDE, ROOT / "README.md"):
        text = guide.read_text()
        assert "SKIP LOCKED" in text, guide.name
        assert not re.search(r"exactly one `?beat|never scaled", text), guide.name


# --- Caddy ----------------------------------------------------------------------------------


def test_caddy_serves_the_api_and_the_presigned_downloads() -> None:
    found = services()
    caddy = found["caddy"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert caddy["environment"]["DOMAIN"].startswith("${DOMAIN:?")
    # Presigned URLs are signed for the host Caddy proxies to SeaweedFS.
    public = interpolate(found["api-1"]["environment"]["S3_PUBLIC_ENDPOINT_URL"], DEPLOY_ENV)
    assert public == "https://files.goaltrack.example.org"
    text = CADDYFILE.read_text()
    assert re.search(
        r"^\{\$DOMAIN\} \{.*?reverse_proxy api-1:8000 api-2:8000 \{", text, re.S | re.M
    )
    assert re.search(r"^files\.\{\$DOMAIN\} \{.*?reverse_proxy seaweedfs:8333", text, re.S | re.M)


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


async def test_a_failed_request_and_slow_readiness_do_not_take_the_last_replica_out(
    tmp_path: Path,
) -> None:
    """deploy/Caddyfile in front of a replica that is gone (mid-deploy) and one that failed a
    request while its readiness (PostgreSQL and Redis) answers in 3 s on a busy host: the next
    request waits for that replica and is answered, never Caddy's 503 (both replicas out for
    the whole `lb_try_duration`)."""
    from test_cluster_nodes import StandInNode, the_last_node_stays_in
    from test_proxy import https_client, start_caddy

    binary = installed("caddy")
    with StandInNode("/health/ready", slow_health=3) as node:
        caddy = start_caddy(binary, tmp_path, [free_port(), node.port])
        try:
            async with https_client(caddy) as http:
                await the_last_node_stays_in(http, node)
        finally:
            caddy.process.terminate()
            caddy.process.wait()


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
        "files.goaltrack.example.org": "seaweedfs:8333",
    }
