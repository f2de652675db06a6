"""`goaltrack.storage` against the real SeaweedFS of the test session (it verifies SigV4)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import httpx
import pytest
from aiohttp import web
from botocore.exceptions import ClientError
from botocore.session import get_session

from goaltrack import storage as storage_module
from goaltrack.config import Settings, get_settings
from goaltrack.dev.localstack import free_port
from goaltrack.storage import ObjectNotFound, Storage, StorageUnavailable
from helpers import wait_until


def _settings(**update: Any) -> Settings:
    return get_settings().model_copy(update={"s3_bucket": "test-" + uuid4().hex[:8], **update})


@pytest.fixture(autouse=True)
def clean_state() -> None:
    """These tests use no database or Redis: skip the session app and its per-test cleanup."""


@pytest.fixture(scope="module")
async def storage() -> AsyncIterator[Storage]:
    store = Storage(_settings())
    await store.start()
    await store.ensure_bucket()
    yield store
    await store.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def _key() -> str:
    return f"tests/{uuid4().hex}"


async def test_put_exists_get_delete(storage: Storage) -> None:
    key = _key()
    assert await storage.exists(key) is False
    await storage.put(key, b"hello world", size=11, content_type="text/plain")
    assert await storage.exists(key) is True
    assert await storage.get_bytes(key) == b"hello world"
    await storage.delete(key)
    assert await storage.exists(key) is False
    await storage.delete(key)  # idempotent
    await storage.delete(_key())  # never existed
    with pytest.raises(ObjectNotFound):
        await storage.get_bytes(key)


async def test_put_from_a_spooled_file_rolled_to_disk(storage: Storage) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB: past the 1 MiB spool, so a real file on disk
    with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as spool:
        spool.write(data)
        spool.seek(0)
        key = _key()
        await storage.put(key, spool, size=len(data), content_type="application/octet-stream")
    assert await storage.get_bytes(key) == data


async def test_ensure_bucket_is_idempotent(storage: Storage) -> None:
    """Called again (and from another process, and by two at once on a new bucket), it keeps the
    bucket and what it holds."""
    key = _key()
    await storage.put(key, b"kept", size=4, content_type="text/plain")
    await storage.ensure_bucket()
    other = Storage(storage._settings)
    await other.start()
    try:
        await other.ensure_bucket()
        assert await other.get_bytes(key) == b"kept"
    finally:
        await other.close()
    assert await storage.list_keys(key) == [key]

    # A bucket that does not exist yet, ensured by two at once, then again.
    first, second = Storage(_settings()), None
    await first.start()
    try:
        second = Storage(first._settings)
        await second.start()
        with pytest.raises(ClientError, match=r"NoSuchBucket|404"):
            await first.list_keys("")  # no bucket yet
        await asyncio.gather(first.ensure_bucket(), second.ensure_bucket())
        await first.put(key, b"new", size=3, content_type="text/plain")
        await second.ensure_bucket()
        assert await second.list_keys("tests/") == [key]
        assert await first.get_bytes(key) == b"new"
    finally:
        await first.close()
        if second is not None:
            await second.close()


async def test_delete_prefix(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small pages and batches, so 25 objects take several list pages and delete requests.
    monkeypatch.setattr(storage_module, "BATCH_SIZE", 10)
    prefix = f"users/{uuid4().hex}/"
    sibling = prefix.rstrip("/") + "x/keep"  # same characters, different prefix
    other = f"users/{uuid4().hex}/keep"
    await asyncio.gather(
        *(
            storage.put(f"{prefix}{i:03}", b"x", size=1, content_type="text/plain")
            for i in range(25)
        )
    )
    await storage.put(sibling, b"y", size=1, content_type="text/plain")
    await storage.put(other, b"z", size=1, content_type="text/plain")

    assert await storage.delete_prefix(prefix) == 25
    assert not any(await asyncio.gather(*(storage.exists(f"{prefix}{i:03}") for i in range(25))))
    assert await storage.exists(sibling)
    assert await storage.exists(other)
    assert await storage.delete_prefix(prefix) == 0
    with pytest.raises(ValueError, match="empty prefix"):
        await storage.delete_prefix("")


async def test_presigned_get_returns_the_bytes(storage: Storage, http: httpx.AsyncClient) -> None:
    key = _key()
    data = b"%PDF-1.7\n" + bytes(range(256)) * 4
    await storage.put(key, data, size=len(data), content_type="application/pdf")

    url = await storage.presigned_get(key, expires_in=60)
    assert url.startswith(f"{storage._settings.s3_endpoint_url}/{storage.bucket}/{key}?")
    response = await http.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "application/pdf"

    # The bucket is private: the same URL without its signature is refused.
    unsigned = await http.get(url.split("?")[0])
    assert unsigned.status_code == 403


async def test_presigned_get_as_attachment(storage: Storage, http: httpx.AsyncClient) -> None:
    key = _key()
    await storage.put(key, b"%PDF-1.4", size=8, content_type="application/pdf")
    url = await storage.presigned_get(
        key, expires_in=60, download_name="Résumé 2024 (final).pdf", as_attachment=True
    )
    response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        "attachment; filename*=UTF-8''R%C3%A9sum%C3%A9%202024%20%28final%29.pdf"
    )
    inline = await http.get(await storage.presigned_get(key, expires_in=60, download_name="a.pdf"))
    assert inline.headers["content-disposition"] == "inline; filename*=UTF-8''a.pdf"


async def test_tampered_presigned_url_is_refused(storage: Storage, http: httpx.AsyncClient) -> None:
    key = _key()
    await storage.put(key, b"secret", size=6, content_type="text/plain")
    url = await storage.presigned_get(key, expires_in=60)
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    tampered = url.replace(f"X-Amz-Signature={signature}", f"X-Amz-Signature={flipped}")
    assert tampered != url
    response = await http.get(tampered)
    assert response.status_code == 403
    assert b"secret" not in response.content
    # Another key under the same signature is refused too.
    other = url.replace(key, _key())
    assert (await http.get(other)).status_code == 403


async def test_expired_presigned_url_is_refused(storage: Storage, http: httpx.AsyncClient) -> None:
    key = _key()
    await storage.put(key, b"soon gone", size=9, content_type="text/plain")
    url = await storage.presigned_get(key, expires_in=2)
    fresh = await http.get(url)
    assert fresh.status_code == 200  # the same URL works until it expires
    assert fresh.content == b"soon gone"

    responses: list[httpx.Response] = []

    async def refused() -> bool:
        responses.append(await http.get(url))
        return responses[-1].status_code == 403

    await wait_until(refused, timeout=15)
    assert {r.status_code for r in responses[:-1]} <= {200}  # nothing else on the way
    assert b"soon gone" not in responses[-1].content


async def test_presigned_url_signed_for_the_public_endpoint(
    storage: Storage, http: httpx.AsyncClient
) -> None:
    key = _key()
    await storage.put(key, b"public", size=6, content_type="text/plain")
    endpoint = storage._settings.s3_endpoint_url
    # `localhost` reaches the same server but is a different Host: the URL is signed for it.
    public = endpoint.replace("127.0.0.1", "localhost")
    signer = Storage(storage._settings.model_copy(update={"s3_public_endpoint_url": public}))
    await signer.start()
    try:
        url = await signer.presigned_get(key, expires_in=60)
        assert url.startswith(f"{public}/{storage.bucket}/{key}?")
        response = await http.get(url)
        assert response.status_code == 200
        assert response.content == b"public"
        # The signature covers the host: the same URL sent to the internal host is refused.
        internal = await http.get(url.replace(public, endpoint))
        assert internal.status_code == 403
    finally:
        await signer.close()

    same = Storage(storage._settings.model_copy(update={"s3_public_endpoint_url": endpoint}))
    await same.start()
    try:
        response = await http.get(await same.presigned_get(key, expires_in=60))
        assert response.content == b"public"
    finally:
        await same.close()


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:8333", "https://files.example.com", "https://Files.Example.com:443/s3/"],
)
async def test_presigned_urls_are_botocores(endpoint: str) -> None:
    """`QuerySigner` signs what botocore's `generate_presigned_url` signs, byte for byte: the
    same path, query (order included), scope and signature, for an awkward key, file name and
    type, on endpoints with a port, a default port, capitals and a path."""
    settings = _settings(s3_public_endpoint_url=endpoint, s3_region="eu-central-1")
    ours = Storage(settings)
    botocore = get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
        region_name=settings.s3_region,
        config=storage_module._client_config(),
    )
    key = "users/ä b+c~d/file (1).pdf"
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({}, {}),
        ({"content_type": "image/png"}, {"ResponseContentType": "image/png"}),
        (
            {"content_type": "text/html", "download_name": "Résumé & co.html"},
            {
                "ResponseContentType": "text/html",
                "ResponseContentDisposition": "attachment; filename*=UTF-8''R%C3%A9sum%C3%A9%20%26%20co.html",
            },
        ),
        (
            {"download_name": "a;b=c'd.pdf", "as_attachment": True},
            {"ResponseContentDisposition": "attachment; filename*=UTF-8''a%3Bb%3Dc%27d.pdf"},
        ),
    ]
    for ours_asks, botocore_params in cases:
        for _ in range(3):  # both signed within the same second (X-Amz-Date)
            theirs = botocore.generate_presigned_url(
                "get_object",
                Params={"Bucket": settings.s3_bucket, "Key": key, **botocore_params},
                ExpiresIn=900,
            )
            url = await ours.presigned_get(key, expires_in=900, **ours_asks)
            if _signed_at(url) == _signed_at(theirs):
                break
        assert url == theirs, ours_asks


def _signed_at(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Date"][0]


async def _assert_all_unavailable(store: Storage) -> None:
    with pytest.raises(StorageUnavailable) as error:
        await store.ensure_bucket()
    assert error.value.status_code == 503
    assert error.value.code == "storage_unavailable"
    assert error.value.__cause__ is not None
    # The other operations concurrently (each one retries with a backoff).
    results = await asyncio.gather(
        store.put("k", b"x", size=1, content_type="text/plain"),
        store.delete("k"),
        store.exists("k"),
        store.get_bytes("k"),
        store.delete_prefix("k/"),
        return_exceptions=True,
    )
    assert [type(result) for result in results] == [StorageUnavailable] * len(results)


async def test_s3_down_is_storage_unavailable() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    down = Storage(_settings(s3_endpoint_url=closed))
    await down.start()
    try:
        await _assert_all_unavailable(down)
        # Presigning needs no network.
        assert (await down.presigned_get("k", expires_in=60)).startswith(closed)
    finally:
        await down.close()


async def test_s3_5xx_is_storage_unavailable() -> None:
    """An S3 that answers 503 SlowDown / 500 to everything (a proxy in front of a dead MinIO)."""
    requests: list[str] = []

    async def failing(request: web.Request) -> web.Response:
        await request.read()
        requests.append(request.method)
        code = "SlowDown" if len(requests) % 2 else "InternalError"
        return web.Response(
            status=503 if code == "SlowDown" else 500,
            content_type="application/xml",
            text=f"<Error><Code>{code}</Code><Message>down</Message></Error>",
        )

    server = web.Application()
    server.router.add_route("*", "/{tail:.*}", failing)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    broken = Storage(_settings(s3_endpoint_url=f"http://127.0.0.1:{port}"))
    await broken.start()
    try:
        await _assert_all_unavailable(broken)
        assert requests  # the server was really asked
    finally:
        await broken.close()
        await runner.cleanup()


async def test_secrets_stay_out_of_repr() -> None:
    settings = get_settings()
    text = repr(Storage(settings))
    assert settings.s3_secret_access_key.get_secret_value() not in text
