"""The client and the scheme behind the reverse proxy: the X-Forwarded-For and X-Forwarded-Proto
of TRUSTED_PROXY_HOPS proxies are believed, nobody else's. The reset page's cookies are `Secure`
whenever the public scheme is https, and the rate limits count the client the outermost proxy
saw. Last, through a real Caddy run from deploy/Caddyfile (its addresses changed) in front of a
real `goaltrack serve`."""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from goaltrack.config import get_settings
from goaltrack.dev.localstack import free_port
from goaltrack.main import create_app
from goaltrack.web.router import PAGE_PATH, TOKEN_COOKIE
from helpers import assert_problem, installed, serving, stop_processes, wait_until

CADDYFILE = Path(__file__).resolve().parent.parent / "deploy" / "Caddyfile"


def cookie_is_secure(response: httpx.Response, name: str) -> bool:
    [cookie] = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    return "secure" in [attribute.strip().lower() for attribute in cookie.split(";")]


async def reset_link(http: httpx.AsyncClient, **headers: str) -> httpx.Response:
    """The link of a reset mail, opened: the token moves into a cookie."""
    response = await http.get(f"{PAGE_PATH}?token=some-token", headers=headers)
    assert response.status_code == 303, response.text
    return response


async def forgot(http: httpx.AsyncClient, index: int, **headers: str) -> httpx.Response:
    return await http.post(
        "/auth/forgot-password", json={"email": f"someone-{index}@example.com"}, headers=headers
    )


async def spend_the_reset_budget(http: httpx.AsyncClient, **headers: str) -> None:
    """RATE_LIMIT_FORGOT_IP (10/hour) spent for the client these requests come from."""
    for index in range(10):
        assert (await forgot(http, index, **headers)).status_code == 202


@pytest.fixture
async def behind_one_proxy() -> AsyncIterator[httpx.AsyncClient]:
    """The app as docker-compose runs it behind Caddy: TRUSTED_PROXY_HOPS=1."""
    application = create_app(get_settings().model_copy(update={"trusted_proxy_hops": 1}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://api:8000") as http:
            yield http


async def test_without_a_proxy_forwarded_headers_are_nobodys_word(client: Any) -> None:
    """TRUSTED_PROXY_HOPS=0 (the tests' app): a client cannot claim https or another address."""
    link = await reset_link(client, **{"X-Forwarded-Proto": "https"})
    assert not cookie_is_secure(link, TOKEN_COOKIE)
    await spend_the_reset_budget(client, **{"X-Forwarded-For": "203.0.113.1"})
    blocked = await forgot(client, 10, **{"X-Forwarded-For": "203.0.113.2"})
    assert_problem(blocked, 429, "rate_limited")


async def test_behind_a_proxy_the_client_and_scheme_are_the_ones_it_saw(
    behind_one_proxy: httpx.AsyncClient,
) -> None:
    http = behind_one_proxy
    assert cookie_is_secure(await reset_link(http, **{"X-Forwarded-Proto": "https"}), TOKEN_COOKIE)
    assert not cookie_is_secure(
        await reset_link(http, **{"X-Forwarded-Proto": "http"}), TOKEN_COOKIE
    )
    # The proxy appends the address it saw; what the client wrote stands to its left.
    await spend_the_reset_budget(http, **{"X-Forwarded-For": "198.51.100.7, 203.0.113.1"})
    spoofed = await forgot(http, 10, **{"X-Forwarded-For": "198.51.100.8, 203.0.113.1"})
    assert_problem(spoofed, 429, "rate_limited")
    assert (await forgot(http, 11, **{"X-Forwarded-For": "203.0.113.2"})).status_code == 202


async def test_behind_a_proxy_requests_are_counted_by_their_route(
    behind_one_proxy: httpx.AsyncClient,
) -> None:
    """The forwarded client and scheme go into the request's own scope, where routing also
    writes the route that the request metrics are labelled with."""
    from prometheus_client import REGISTRY

    def unauthenticated_goal_lists() -> float:
        labels = {"method": "GET", "route": "/goals", "status": "401"}
        count = REGISTRY.get_sample_value("goaltrack_http_request_duration_seconds_count", labels)
        return count or 0.0

    before = unauthenticated_goal_lists()
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    assert (await behind_one_proxy.get("/goals", headers=forwarded)).status_code == 401
    assert unauthenticated_goal_lists() == before + 1


# --- a real Caddy ------------------------------------------------------------------------------


API_REPLICAS = ("api-1:8000", "api-2:8000")


def caddyfile_for(api_ports: list[int], http_port: int, https_port: int, data: Path) -> str:
    """deploy/Caddyfile with this machine's addresses: the API replicas (and MinIO, standing in
    for it: the first replica) on loopback, free ports, certificates from Caddy's own local CA,
    no admin endpoint. The sites are unchanged."""
    text = CADDYFILE.read_text()
    global_options = re.compile(r"^\{\n.*?^\}\n", re.S | re.M)
    assert global_options.search(text), "the Caddyfile's global options block moved"
    text = global_options.sub(
        "{\n"
        "\tadmin off\n"
        "\tlocal_certs\n"
        "\tskip_install_trust\n"
        f"\thttp_port {http_port}\n"
        f"\thttps_port {https_port}\n"
        f"\tstorage file_system {{\n\t\troot {data}\n\t}}\n"
        "}\n",
        text,
        count=1,
    )
    upstreams = dict(zip(API_REPLICAS, api_ports, strict=True)) | {"seaweedfs:8333": api_ports[0]}
    for upstream, port in upstreams.items():
        assert upstream in text, f"{upstream} is no longer the Caddyfile's upstream"
        text = text.replace(upstream, f"127.0.0.1:{port}")
    return text


@pytest.fixture
def caddy_binary() -> str:
    return installed("caddy")


@dataclass
class Caddy:
    process: subprocess.Popen[bytes]
    https_port: int
    root_certificate: Path  # of Caddy's local CA, once it has made it
    log: Path


def start_caddy(binary: str, tmp_path: Path, api_ports: list[int]) -> Caddy:
    """deploy/Caddyfile (caddyfile_for) run by a real Caddy on free ports; stop its process."""
    http_port, https_port = free_port(), free_port()
    data = tmp_path / "caddy-data"
    config = tmp_path / "Caddyfile"
    config.write_text(caddyfile_for(api_ports, http_port, https_port, data))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
        "XDG_DATA_HOME": str(data),
        "DOMAIN": "localhost",
    }
    log = tmp_path / "caddy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "run", "--config", str(config), "--adapter", "caddyfile"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Caddy(process, https_port, data / "pki" / "authorities" / "local" / "root.crt", log)


@contextlib.asynccontextmanager
async def https_client(caddy: Caddy) -> AsyncIterator[httpx.AsyncClient]:
    """A client of Caddy's https site (trusting Caddy's local CA), once /health answers there."""
    await wait_until(caddy.root_certificate.exists, timeout=30)
    trust = ssl.create_default_context(cafile=caddy.root_certificate)
    base_url = f"https://localhost:{caddy.https_port}"
    async with httpx.AsyncClient(base_url=base_url, verify=trust) as http:

        async def serving_https() -> bool:
            assert caddy.process.poll() is None, caddy.log.read_text()
            try:
                return (await http.get("/health")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(serving_https, timeout=30, interval=0.1)
        yield http


@pytest.fixture
def caddy_in_front(caddy_binary: str, tmp_path: Path) -> Iterator[tuple[Caddy, int]]:
    """Caddy with both API replicas' upstreams on one port, and that port."""
    api_port = free_port()
    caddy = start_caddy(caddy_binary, tmp_path, [api_port, api_port])
    try:
        yield caddy, api_port
    finally:
        stop_processes([caddy.process])


@pytest.fixture
async def through_caddy(
    tmp_path: Path, caddy_in_front: tuple[Caddy, int]
) -> AsyncIterator[httpx.AsyncClient]:
    """An https client of Caddy, which proxies to `goaltrack serve` started as docker-compose
    starts it (TRUSTED_PROXY_HOPS=1)."""
    caddy, api_port = caddy_in_front
    async with (
        serving(tmp_path, port=api_port, TRUSTED_PROXY_HOPS="1"),
        https_client(caddy) as http,
    ):
        yield http


@pytest.mark.e2e
@pytest.mark.timeout(240)  # with the server's and Caddy's start
async def test_through_caddy_the_reset_cookies_are_secure(
    through_caddy: httpx.AsyncClient,
) -> None:
    http = through_caddy
    # Whatever the client claims, Caddy says what it saw: https, and the client's own address.
    link = await reset_link(http, **{"X-Forwarded-Proto": "http"})
    assert cookie_is_secure(link, TOKEN_COOKIE)
    page = await http.get(PAGE_PATH)  # with the token's cookie: over https, it came back
    assert cookie_is_secure(page, "reset_csrf")
    assert len(page.headers.get_list("strict-transport-security")) == 1
    for index in range(10):
        forged = {"X-Forwarded-For": f"198.51.100.{index}"}
        assert (await forgot(http, index, **forged)).status_code == 202
    assert_problem(
        await forgot(http, 10, **{"X-Forwarded-For": "198.51.100.99"}), 429, "rate_limited"
    )
