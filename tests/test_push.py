"""FcmSender against FakeFcm: the real HTTP v1 wire protocol, OAuth grant included."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes.fcm import FakeFcm
from goaltrack.push import (
    FcmSender,
    PushMessage,
    PushOutcome,
    PushResult,
    build_payload,
    retry_delay,
)
from helpers import TestClock

DEVICE = "device-token-" + "x" * 140
OTHER_DEVICE = "device-token-" + "y" * 140


@pytest.fixture(scope="module")
def fcm() -> Iterator[FakeFcm]:
    fake = FakeFcm().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def credentials(fcm: FakeFcm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fcm.write_credentials(tmp_path_factory.mktemp("fcm") / "service-account.json")


@pytest.fixture(scope="module")
def key(credentials: Path) -> dict[str, str]:
    parsed: dict[str, str] = json.loads(credentials.read_text())
    return parsed


@pytest.fixture(autouse=True)
def _reset_fcm(fcm: FakeFcm) -> None:
    fcm.reset()


@pytest.fixture
async def sender(fcm: FakeFcm, credentials: Path) -> AsyncIterator[FcmSender]:
    push = FcmSender(credentials_file=credentials, base_url=fcm.url, timeout=5)
    yield push
    await push.aclose()


def message(token: str = DEVICE, *, urgent: bool = False, **data: str) -> PushMessage:
    return PushMessage(
        token=token, title="Run 5 km", body="Your goal is due today", data=data, urgent=urgent
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rewrite_key(source: Path, target: Path, **changes: object) -> Path:
    key = json.loads(source.read_text())
    key.update(changes)
    target.write_text(json.dumps({k: v for k, v in key.items() if v is not None}))
    return target


# -- success ----------------------------------------------------------------------------------


async def test_send_delivers_the_message(fcm: FakeFcm, sender: FcmSender) -> None:
    result = await sender.send(message(goal_id="42", kind="reminder"))

    assert result == PushResult(PushOutcome.SENT, message_id=result.message_id)
    assert result.message_id is not None
    assert result.message_id.startswith(f"projects/{fcm.project_id}/messages/")
    assert not result.retryable
    assert not result.drop_device
    [record] = await fcm.wait_for(1)
    sent = record["message"]
    assert sent["token"] == DEVICE
    assert sent["notification"] == {"title": "Run 5 km", "body": "Your goal is due today"}
    assert sent["data"] == {"goal_id": "42", "kind": "reminder"}
    assert sent["android"]["priority"] == "normal"
    assert sent["apns"]["headers"]["apns-priority"] == "5"
    assert sent["apns"]["payload"]["aps"] == {}
    assert record["name"] == result.message_id


async def test_urgent_message_is_high_priority_with_sound(fcm: FakeFcm, sender: FcmSender) -> None:
    assert (await sender.send(message(urgent=True))).outcome is PushOutcome.SENT

    sent = fcm.messages_to(DEVICE)[0]["message"]
    assert sent["android"]["priority"] == "high"
    assert sent["apns"]["headers"]["apns-priority"] == "10"
    assert sent["apns"]["payload"]["aps"] == {"sound": "default"}


def test_payload_has_a_ttl_on_both_platforms() -> None:
    before = int(time.time())
    payload = build_payload(message(), ttl_seconds=3600)["message"]
    assert payload["android"]["ttl"] == "3600s"
    expiration = int(payload["apns"]["headers"]["apns-expiration"])
    assert before + 3600 <= expiration <= int(time.time()) + 3600


def test_data_values_must_be_strings() -> None:
    bad = PushMessage(token=DEVICE, title="t", body="b", data={"count": 3})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        build_payload(bad)


async def test_project_id_comes_from_the_key_file(credentials: Path, fcm: FakeFcm) -> None:
    assert FcmSender(credentials_file=credentials).project_id == fcm.project_id
    assert FcmSender(credentials_file=credentials, project_id="other").project_id == "other"


# -- access token -----------------------------------------------------------------------------


async def test_access_token_is_cached_across_sends(fcm: FakeFcm, sender: FcmSender) -> None:
    for _ in range(3):
        assert (await sender.send(message())).outcome is PushOutcome.SENT
    assert fcm.token_requests == 1
    assert fcm.requests == 3


async def test_concurrent_sends_share_one_token_fetch(fcm: FakeFcm, sender: FcmSender) -> None:
    results = await asyncio.gather(*(sender.send(message(f"device-{i}")) for i in range(10)))
    assert {r.outcome for r in results} == {PushOutcome.SENT}
    assert fcm.token_requests == 1
    assert len(await fcm.wait_for(10)) == 10


async def test_access_token_is_refreshed_before_it_expires(fcm: FakeFcm, sender: FcmSender) -> None:
    clock = TestClock().install()  # the token cache reads goaltrack.clock
    fcm.token_lifetime = 301  # usable for 1 s: the sender stops 5 min before expiry
    await sender.send(message())
    clock.advance(0.9)
    await sender.send(message())
    assert fcm.token_requests == 1
    clock.advance(0.2)
    assert (await sender.send(message())).outcome is PushOutcome.SENT
    assert fcm.token_requests == 2


async def test_bare_401_fetches_a_new_token_and_resends_once(
    fcm: FakeFcm, sender: FcmSender
) -> None:
    await sender.send(message())
    fcm.reset()
    fcm.revoke_tokens()

    result = await sender.send(message())

    assert result.outcome is PushOutcome.SENT
    assert fcm.token_requests == 1
    assert [r["status"] for r in fcm.messages] == [401, 200]


async def test_second_bare_401_is_a_configuration_problem(fcm: FakeFcm, sender: FcmSender) -> None:
    fcm.fail_next_bare(401, times=2)

    result = await sender.send(message())

    assert result.outcome is PushOutcome.THIRD_PARTY_AUTH_ERROR
    assert not result.retryable
    assert not result.drop_device
    assert fcm.requests == 2
    assert fcm.token_requests == 2


async def test_refused_grant_is_a_configuration_problem(
    fcm: FakeFcm, credentials: Path, tmp_path: Path
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = stranger.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    key = rewrite_key(credentials, tmp_path / "stranger.json", private_key=pem)
    push = FcmSender(credentials_file=key, base_url=fcm.url)

    result = await push.send(message())
    await push.aclose()

    assert result.outcome is PushOutcome.THIRD_PARTY_AUTH_ERROR
    assert result.detail is not None
    assert "invalid_grant" in result.detail
    assert fcm.token_requests == 1
    assert fcm.requests == 0


async def test_unreachable_token_endpoint_is_unavailable(
    fcm: FakeFcm, credentials: Path, tmp_path: Path
) -> None:
    key = rewrite_key(
        credentials, tmp_path / "key.json", token_uri=f"http://127.0.0.1:{free_port()}/token"
    )
    push = FcmSender(credentials_file=key, base_url=fcm.url)

    result = await push.send(message())
    await push.aclose()

    assert result.outcome is PushOutcome.UNAVAILABLE
    assert result.retryable
    assert fcm.requests == 0


# -- FCM errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_code", "outcome", "retryable", "drop_device"),
    [
        ("UNREGISTERED", PushOutcome.UNREGISTERED, False, True),
        ("INVALID_ARGUMENT", PushOutcome.INVALID_ARGUMENT, False, False),
        ("SENDER_ID_MISMATCH", PushOutcome.SENDER_ID_MISMATCH, False, True),
        ("QUOTA_EXCEEDED", PushOutcome.QUOTA_EXCEEDED, True, False),
        ("UNAVAILABLE", PushOutcome.UNAVAILABLE, True, False),
        ("INTERNAL", PushOutcome.UNAVAILABLE, True, False),
        ("THIRD_PARTY_AUTH_ERROR", PushOutcome.THIRD_PARTY_AUTH_ERROR, False, False),
    ],
)
async def test_fcm_error_codes(
    fcm: FakeFcm,
    sender: FcmSender,
    error_code: str,
    outcome: PushOutcome,
    retryable: bool,
    drop_device: bool,
) -> None:
    fcm.fail_next(error_code)

    result = await sender.send(message())

    assert result.outcome is outcome
    assert result.retryable is retryable
    assert result.drop_device is drop_device
    assert result.message_id is None
    assert fcm.requests == 1, "the sender must not retry by itself"
    assert fcm.messages[0]["error_code"] == error_code
    assert result.retry_after == (60.0 if outcome is PushOutcome.QUOTA_EXCEEDED else None)
    # The script is used up: the next send goes through.
    assert (await sender.send(message())).outcome is PushOutcome.SENT


@pytest.mark.parametrize(
    ("error_code", "header", "expected"),
    [
        ("QUOTA_EXCEEDED", 120, 120.0),
        ("UNAVAILABLE", 7, 7.0),
        ("INTERNAL", 3, 3.0),
    ],
)
async def test_retry_after_is_honoured(
    fcm: FakeFcm, sender: FcmSender, error_code: str, header: int, expected: float
) -> None:
    fcm.fail_next(error_code, retry_after=header)
    result = await sender.send(message())
    assert result.retry_after == expected
    assert retry_delay(result, 0) >= expected
    assert fcm.requests == 1


async def test_retry_after_as_http_date(fcm: FakeFcm, sender: FcmSender) -> None:
    fcm.fail_next("UNAVAILABLE", retry_after=formatdate(time.time() + 30, usegmt=True))
    result = await sender.send(message())
    assert result.retry_after is not None
    assert 25 <= result.retry_after <= 31


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (404, PushOutcome.UNREGISTERED),
        (429, PushOutcome.QUOTA_EXCEEDED),
        (500, PushOutcome.UNAVAILABLE),
        (502, PushOutcome.UNAVAILABLE),
        (503, PushOutcome.UNAVAILABLE),
        (400, PushOutcome.INVALID_ARGUMENT),
        (403, PushOutcome.THIRD_PARTY_AUTH_ERROR),
    ],
)
async def test_bare_statuses_without_body(
    fcm: FakeFcm, sender: FcmSender, status: int, outcome: PushOutcome
) -> None:
    fcm.fail_next_bare(status)
    result = await sender.send(message())
    assert result.outcome is outcome
    assert fcm.requests == 1
    if outcome is PushOutcome.QUOTA_EXCEEDED:
        assert result.retry_after == 60.0


async def test_scripted_error_for_one_device_only(fcm: FakeFcm, sender: FcmSender) -> None:
    fcm.fail_next("UNREGISTERED", token=OTHER_DEVICE)

    assert (await sender.send(message(DEVICE))).outcome is PushOutcome.SENT
    assert (await sender.send(message(OTHER_DEVICE))).outcome is PushOutcome.UNREGISTERED
    assert (await sender.send(message(OTHER_DEVICE))).outcome is PushOutcome.SENT


async def test_fail_always_until_cleared(fcm: FakeFcm, sender: FcmSender) -> None:
    fcm.fail_always("UNAVAILABLE")
    results = [await sender.send(message()) for _ in range(3)]
    assert {r.outcome for r in results} == {PushOutcome.UNAVAILABLE}
    assert fcm.requests == 3

    fcm.fail_always(None)
    assert (await sender.send(message())).outcome is PushOutcome.SENT


async def test_oversized_payload_is_an_invalid_argument(fcm: FakeFcm, sender: FcmSender) -> None:
    result = await sender.send(message(blob="x" * 4096))
    assert result.outcome is PushOutcome.INVALID_ARGUMENT
    assert not result.drop_device
    assert fcm.requests == 1
    assert fcm.delivered == []


async def test_wrong_project_is_a_configuration_problem(fcm: FakeFcm, credentials: Path) -> None:
    push = FcmSender(credentials_file=credentials, project_id="someone-else", base_url=fcm.url)
    result = await push.send(message())
    await push.aclose()
    assert result.outcome is PushOutcome.THIRD_PARTY_AUTH_ERROR
    assert fcm.requests == 1


# -- network ----------------------------------------------------------------------------------


async def test_connection_refused_is_unavailable(fcm: FakeFcm, credentials: Path) -> None:
    push = FcmSender(credentials_file=credentials, base_url=f"http://127.0.0.1:{free_port()}")
    result = await push.send(message())
    await push.aclose()
    assert result.outcome is PushOutcome.UNAVAILABLE
    assert result.retryable
    assert result.detail == "ConnectError"


async def test_timeout_is_unavailable(fcm: FakeFcm, credentials: Path) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        push = FcmSender(
            credentials_file=credentials, base_url=f"http://127.0.0.1:{port}", timeout=0.3
        )
        result = await push.send(message())
        await push.aclose()
    assert result.outcome is PushOutcome.UNAVAILABLE
    assert result.detail == "ReadTimeout"


async def test_sender_works_in_another_threads_event_loop(fcm: FakeFcm, sender: FcmSender) -> None:
    await sender.send(message())  # binds a client to this loop

    async def in_worker() -> PushResult:
        try:
            return await sender.send(message())
        finally:
            await sender.aclose()

    result = await asyncio.to_thread(asyncio.run, in_worker())
    assert result.outcome is PushOutcome.SENT
    assert (await sender.send(message())).outcome is PushOutcome.SENT
    assert fcm.token_requests == 1  # the token cache is shared by the loops


# -- key file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"token_uri": "not a url"},
        {"token_uri": "ftp://127.0.0.1/token"},
        {"token_uri": None},
        {"private_key": None},
        {"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
        {"client_email": None},
        {"type": "authorized_user"},
        {"project_id": None},
    ],
)
def test_unusable_key_file_is_refused_at_construction(
    credentials: Path, tmp_path: Path, changes: dict[str, object]
) -> None:
    key = rewrite_key(credentials, tmp_path / "key.json", **changes)
    with pytest.raises(ValueError, match=r"key\.json") as error:
        FcmSender(credentials_file=key)
    assert "PRIVATE KEY" not in str(error.value)


def test_missing_or_malformed_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing\.json"):
        FcmSender(credentials_file=tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json"):
        FcmSender(credentials_file=tmp_path / "broken.json")


# -- secrets and helpers ----------------------------------------------------------------------


async def test_no_secret_reaches_the_log_or_the_result(
    fcm: FakeFcm, sender: FcmSender, key: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await sender.send(message())
    fcm.revoke_tokens()
    fcm.fail_next("UNREGISTERED")
    results = [await sender.send(message()) for _ in range(2)]

    issued_prefix = "ya29.fake-"
    logged = caplog.text + "".join(repr(r) for r in results)
    assert DEVICE not in logged
    assert issued_prefix not in logged
    assert key["private_key"].splitlines()[1] not in logged


def test_retry_delay_backs_off_exponentially_with_jitter() -> None:
    unavailable = PushResult(PushOutcome.UNAVAILABLE)
    delays = [retry_delay(unavailable, attempt) for attempt in range(5)]
    for attempt, delay in enumerate(delays):
        assert 5 * 2**attempt <= delay <= 10 * 2**attempt
    assert retry_delay(unavailable, 30) <= 3600
    assert retry_delay(PushResult(PushOutcome.QUOTA_EXCEEDED), 0) >= 60
    assert retry_delay(PushResult(PushOutcome.UNAVAILABLE, retry_after=500), 0) >= 500


# -- the fake itself speaks the protocol -------------------------------------------------------


async def test_fake_refuses_a_grant_for_another_audience(fcm: FakeFcm, key: dict[str, str]) -> None:
    now = int(time.time())
    claims = {
        "iss": key["client_email"],
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": key["token_uri"],  # the mistake: aud must stay Google's URL
        "iat": now,
        "exp": now + 3600,
    }
    assertion = jwt.encode(
        claims, key["private_key"], algorithm="RS256", headers={"kid": key["private_key_id"]}
    )
    async with httpx.AsyncClient() as http:
        response = await http.post(
            key["token_uri"],
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            },
        )
        unauthenticated = await http.post(
            f"{fcm.url}/v1/projects/{fcm.project_id}/messages:send",
            json=build_payload(message()),
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["status"] == "UNAUTHENTICATED"
    assert "details" not in unauthenticated.json()["error"]
