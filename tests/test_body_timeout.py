"""A request body that does not come in time gets 408 `request_timeout` and the connection is
closed: a raw-socket client, against `goaltrack serve` (uvicorn, as in production) with
BODY_READ_TIMEOUT_SECONDS=1, stalls or trickles its body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers import Account, create_goal, serving

# Only to fail rather than hang: without a bound the server waits for the body for ever.
HANG = 30
# The server's start counts against the first test's timeout.
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, int]]:
    """The server's host and port."""
    async with serving(tmp_path_factory.mktemp("api"), BODY_READ_TIMEOUT_SECONDS="1") as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def request_head(path: str, length: int, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: api\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def answer_until_closed(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """The response, read until the server closes the connection."""
    raw = await asyncio.wait_for(reader.read(), HANG)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_request_timeout(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 408
    assert headers["content-type"].startswith("application/problem+json")
    assert headers["connection"] == "close"
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (408, "request_timeout")


async def test_a_stalled_body_gets_408_and_the_connection_is_closed(
    server: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*server)
    body = json.dumps({"email": "someone@example.com", "password": "correct horse battery"})
    writer.write(request_head("/auth/login", len(body)) + body[:10].encode())
    await writer.drain()
    # ... and the rest never comes.
    assert_request_timeout(*await answer_until_closed(reader))
    writer.close()


async def test_a_trickled_body_gets_408(server: tuple[str, int]) -> None:
    """One byte whenever the server has not answered for a while: each in time, the whole far
    too slow."""
    reader, writer = await asyncio.open_connection(*server)
    writer.write(request_head("/auth/login", 10_000))
    answer = asyncio.ensure_future(answer_until_closed(reader))
    for _ in range(200):
        done, _ = await asyncio.wait({answer}, timeout=0.3)
        if done:
            break
        writer.write(b" ")
        await writer.drain()
    assert answer.done(), "the trickle was never cut off"
    assert_request_timeout(*answer.result())
    writer.close()


async def test_a_stalled_upload_gets_408(
    server: tuple[str, int], client: Any, user: Account
) -> None:
    goal = await create_goal(client, user)
    reader, writer = await asyncio.open_connection(*server)
    head = request_head(
        f"/goals/{goal['id']}/attachments", 100_000, "multipart/form-data; boundary=x"
    )
    authorization = f"\r\nAuthorization: Bearer {user.access_token}\r\n\r\n".encode()
    writer.write(head.replace(b"\r\n\r\n", authorization, 1))
    writer.write(b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n')
    await writer.drain()
    assert_request_timeout(*await answer_until_closed(reader))
    writer.close()
