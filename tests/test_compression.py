"""Responses of 1 KiB or more are gzip-compressed when Accept-Encoding allows it, with
`Vary: Accept-Encoding`; smaller ones, and clients that refuse gzip, get the body as it is."""

from __future__ import annotations

import gzip
from typing import Any

import pytest

from goaltrack.middleware import COMPRESS_MIN_BYTES, accepts_gzip
from helpers import Account, create_goal


async def goals_page(client: Any, user: Account, accept_encoding: str) -> Any:
    # The body as sent on the wire: httpx would otherwise decode it before the test sees it.
    request = client.build_request(
        "GET", "/goals", headers={**user.headers, "Accept-Encoding": accept_encoding}
    )
    response = await client.send(request, stream=True)
    raw = b"".join([chunk async for chunk in response.aiter_raw()])
    await response.aclose()
    return response, raw


async def test_a_page_of_goals_is_gzipped_for_a_client_that_accepts_it(
    client: Any, user: Account
) -> None:
    for number in range(20):
        await create_goal(client, user, title=f"Goal number {number}", description="x" * 100)
    plain, plain_body = await goals_page(client, user, "identity")
    assert len(plain_body) >= COMPRESS_MIN_BYTES
    assert "content-encoding" not in plain.headers
    assert "accept-encoding" in plain.headers["vary"].lower()

    packed, packed_body = await goals_page(client, user, "gzip, deflate, br")
    assert packed.status_code == 200
    assert packed.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in packed.headers["vary"].lower()
    assert int(packed.headers["content-length"]) == len(packed_body) < len(plain_body) / 3
    assert gzip.decompress(packed_body) == plain_body


@pytest.mark.parametrize(
    ("accept_encoding", "compressed"),
    [("gzip;q=0, *", False), ("br", False), ("*", True), ("x-gzip;q=0.5", True)],
)
async def test_the_client_decides_by_its_q_values(
    client: Any, user: Account, accept_encoding: str, compressed: bool
) -> None:
    for number in range(12):
        await create_goal(client, user, title=f"Goal number {number}", description="y" * 100)
    response, _ = await goals_page(client, user, accept_encoding)
    assert (response.headers.get("content-encoding") == "gzip") is compressed


async def test_small_responses_go_as_they_are(client: Any, user: Account) -> None:
    response = await client.get("/settings", headers={**user.headers, "Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert len(response.content) < COMPRESS_MIN_BYTES
    assert "content-encoding" not in response.headers


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("deflate, gzip;q=0.8", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("gzip;q=zero", False),  # an unreadable weight allows nothing
        ("*;q=0.1", True),
        ("*, gzip;q=0", False),
        ("*;q=0", False),
        ("identity", False),
        ("x-gzip", True),
    ],
)
def test_accept_encoding_is_read_by_its_rules(header: str, allowed: bool) -> None:
    assert accepts_gzip(header) is allowed
