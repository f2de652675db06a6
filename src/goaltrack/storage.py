"""The one module in front of S3 (SeaweedFS in development, tests and compose; any S3 service
elsewhere).

One long-lived aioboto3 client per process, path-style addressing, short timeouts and botocore's
standard retries (two attempts in all: Celery and the client own any further retrying).
Every connection error, timeout or 5xx from S3 is raised as `StorageUnavailable` (503), so a
route never turns an S3 outage into a 500 and never writes a row without its file.
Buckets are private: downloads go through short-lived presigned GET URLs, signed for the host
the clients reach (`S3_PUBLIC_ENDPOINT_URL`) when it differs from the one the API uses, by
`QuerySigner` (local computation, no client).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote, urlsplit

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from goaltrack.config import Settings
from goaltrack.errors import AppError, NotFound

logger = logging.getLogger(__name__)

# S3 caps both a ListObjectsV2 page and a DeleteObjects request at 1000 keys.
BATCH_SIZE = 1000

_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    BotoConnectionError,  # EndpointConnectionError, ConnectTimeoutError, SSLError, proxy errors
    HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    IncompleteReadError,
    aiohttp.ClientError,
    TimeoutError,  # asyncio.TimeoutError is TimeoutError on 3.11
    OSError,
)
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_MISSING_BUCKET_CODES = {"404", "NoSuchBucket", "NotFound"}
_BUCKET_EXISTS_CODES = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


class StorageUnavailable(AppError):
    status_code = 503
    code = "storage_unavailable"
    detail = "File storage is unavailable; try again later."


class ObjectNotFound(NotFound):
    """`get_bytes` of a key that does not exist (404 `not_found` when it reaches a route)."""

    detail = "The file does not exist."


def _client_config() -> Config:
    return Config(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        retries={"total_max_attempts": 2, "mode": "standard"},
        connect_timeout=3,
        read_timeout=10,
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return int(status or 0)


# Types a presigned download may show in the browser (`inline`): raster images only. Anything else
# (PDF, HTML, SVG, which can carry script) is served as an `attachment`.
INLINE_CONTENT_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/heic"})


def content_disposition(download_name: str | None, *, as_attachment: bool) -> str | None:
    """`attachment; filename*=UTF-8''...` (RFC 6266 / RFC 5987), `inline; ...` for a named view."""
    disposition = "attachment" if as_attachment else "inline"
    if download_name:
        return f"{disposition}; filename*=UTF-8''{quote(download_name, safe='')}"
    return disposition if as_attachment else None


_DEFAULT_PORTS = {"http": 80, "https": 443}
_ALGORITHM = "AWS4-HMAC-SHA256"


def _encoded(value: str) -> str:
    """RFC 3986 percent-encoding, as SigV4 wants it (only `A-Za-z0-9-._~` left as they are)."""
    return quote(value, safe="")


class QuerySigner:
    """Presigned GET URLs for one endpoint and bucket: AWS Signature Version 4 in the query
    string, path-style, `UNSIGNED-PAYLOAD` — the URL botocore's `generate_presigned_url` returns,
    byte for byte (tests/test_storage.py compares them). Computed here because botocore resolves
    its endpoint ruleset and builds, serialises and prepares a request for every URL (about
    0.4 ms of CPU each, and a goal's rendering signs one per attachment); here a URL is one
    SHA-256 and one HMAC, the signing key derived once per day (it depends on the date alone)."""

    def __init__(
        self, endpoint_url: str, *, bucket: str, region: str, access_key: str, secret_key: str
    ) -> None:
        endpoint = urlsplit(endpoint_url)
        host = endpoint.hostname or ""
        if ":" in host:  # IPv6
            host = f"[{host}]"
        if endpoint.port is not None and endpoint.port != _DEFAULT_PORTS.get(endpoint.scheme):
            host = f"{host}:{endpoint.port}"
        self._host = host  # the one signed header, as an HTTP client sends it
        self._origin = f"{endpoint.scheme}://{endpoint.netloc}"
        self._bucket_path = f"{endpoint.path.rstrip('/')}/{_encoded(bucket)}/"
        self._region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._day = ""
        self._day_key = b""

    def __repr__(self) -> str:  # never show credentials
        return f"QuerySigner({self._origin + self._bucket_path!r})"

    def _signing_key(self, day: str) -> bytes:
        if day != self._day:
            key = f"AWS4{self._secret_key}".encode()
            for part in (day, self._region, "s3", "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._day, self._day_key = day, key
        return self._day_key

    def url(
        self,
        key: str,
        params: Mapping[str, str],
        *,
        expires_in: int,
        now: datetime | None = None,
    ) -> str:
        """A GET of `key` with the query `params` (response-content-type...), valid for
        `expires_in` seconds from `now` (the system clock's: the S3 server checks it)."""
        moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = moment[:8]
        scope = f"{day}/{self._region}/s3/aws4_request"
        # The operation's parameters first, then the authentication's, as botocore orders them.
        query = [(_encoded(name), _encoded(value)) for name, value in params.items()]
        query += [
            ("X-Amz-Algorithm", _ALGORITHM),
            ("X-Amz-Credential", _encoded(f"{self._access_key}/{scope}")),
            ("X-Amz-Date", moment),
            ("X-Amz-Expires", str(expires_in)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        path = self._bucket_path + quote(key, safe="/~")
        canonical_request = "\n".join(
            (
                "GET",
                path,
                "&".join(f"{name}={value}" for name, value in sorted(query)),
                f"host:{self._host}\n",
                "host",
                "UNSIGNED-PAYLOAD",
            )
        )
        digest = hashlib.sha256(canonical_request.encode()).hexdigest()
        string_to_sign = f"{_ALGORITHM}\n{moment}\n{scope}\n{digest}"
        signature = hmac.new(
            self._signing_key(day), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()
        encoded_query = "&".join(f"{name}={value}" for name, value in query)
        return f"{self._origin}{path}?{encoded_query}&X-Amz-Signature={signature}"


class Storage:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.bucket = settings.s3_bucket
        secret_key = settings.s3_secret_access_key.get_secret_value()
        self._session = aioboto3.Session(
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret_key,
            region_name=settings.s3_region,
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._signer = QuerySigner(
            settings.s3_public_endpoint_url or settings.s3_endpoint_url,
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            access_key=settings.s3_access_key_id,
            secret_key=secret_key,
        )

    def __repr__(self) -> str:  # never show credentials
        return f"Storage(endpoint={self._settings.s3_endpoint_url!r}, bucket={self.bucket!r})"

    async def start(self) -> None:
        """Open the long-lived client."""
        if self._stack is not None:
            return
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                self._session.client(
                    "s3", endpoint_url=self._settings.s3_endpoint_url, config=_client_config()
                )
            )
        except BaseException:
            await stack.aclose()
            self._client = None
            raise
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._client = None
        if stack is not None:
            await stack.aclose()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("Storage.start() has not been awaited")
        return self._client

    @contextlib.asynccontextmanager
    async def _guard(self, operation: str) -> AsyncIterator[None]:
        """Connection errors, timeouts and 5xx become `StorageUnavailable` (original chained)."""
        try:
            yield
        except ClientError as exc:
            if _http_status(exc) >= 500:
                logger.warning(
                    "S3 %s failed with HTTP %s (%s)", operation, _http_status(exc), _error_code(exc)
                )
                raise StorageUnavailable() from exc
            raise
        except _UNAVAILABLE_ERRORS as exc:
            logger.warning("S3 %s failed: %s", operation, type(exc).__name__)
            raise StorageUnavailable() from exc

    async def ensure_bucket(self) -> None:
        """Create the (private) bucket when it is missing; safe to call from several processes."""
        async with self._guard("ensure_bucket"):
            try:
                await self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _error_code(exc) not in _MISSING_BUCKET_CODES:
                    raise
            params: dict[str, Any] = {"Bucket": self.bucket}
            if self._settings.s3_region != "us-east-1":
                params["CreateBucketConfiguration"] = {
                    "LocationConstraint": self._settings.s3_region
                }
            try:
                await self.client.create_bucket(**params)
                logger.info("created S3 bucket %s", self.bucket)
            except ClientError as exc:
                if _error_code(exc) not in _BUCKET_EXISTS_CODES:
                    raise
                # Created concurrently: make sure it is ours (raises 403 otherwise).
                await self.client.head_bucket(Bucket=self.bucket)

    async def put(self, key: str, body: IO[bytes] | bytes, *, size: int, content_type: str) -> None:
        """Store `size` bytes under `key`. A file body is read from its current position."""
        async with self._guard("put"):
            await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentLength=size,
                ContentType=content_type,
            )

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing key is not an error."""
        async with self._guard("delete"):
            try:
                await self.client.delete_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) not in _MISSING_CODES:
                    raise

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (pages of BATCH_SIZE)."""
        return [key async for page in self._pages(prefix, "list") for key in page]

    async def _pages(self, prefix: str, operation: str) -> AsyncIterator[list[str]]:
        start_after = ""
        while True:
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": prefix,
                "MaxKeys": BATCH_SIZE,
            }
            if start_after:
                params["StartAfter"] = start_after
            async with self._guard(operation):
                page = await self.client.list_objects_v2(**params)
            keys = [item["Key"] for item in page.get("Contents", [])]
            if keys:
                yield keys
            if not keys or not page.get("IsTruncated"):
                return
            start_after = keys[-1]

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; returns how many were deleted."""
        if not prefix:
            raise ValueError("refusing to delete the whole bucket (empty prefix)")
        deleted = 0
        async for keys in self._pages(prefix, "delete_prefix"):
            async with self._guard("delete_prefix"):
                result = await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
                )
            errors = [
                error
                for error in result.get("Errors", [])
                if error.get("Code") not in _MISSING_CODES
            ]
            if errors:
                logger.warning("S3 refused to delete %d objects", len(errors))
                raise StorageUnavailable(
                    "File storage could not delete some files; try again later."
                )
            deleted += len(keys)
        return deleted

    async def exists(self, key: str) -> bool:
        async with self._guard("exists"):
            try:
                await self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in _MISSING_CODES:
                    return False
                raise
            return True

    async def get_bytes(self, key: str) -> bytes:
        """The whole object (for small files only). A missing key raises `ObjectNotFound`."""
        async with self._guard("get"):
            try:
                response = await self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in _MISSING_CODES:
                    raise ObjectNotFound() from exc
                raise
            body = response["Body"]
            try:
                data: bytes = await body.read()
            finally:
                body.close()
            return data

    async def presigned_get(
        self,
        key: str,
        *,
        expires_in: int,
        download_name: str | None = None,
        as_attachment: bool = False,
        content_type: str | None = None,
    ) -> str:
        """A GET URL valid for `expires_in` seconds, signed for the public endpoint when set.

        With `content_type` (the type detected at upload) the response's Content-Type is forced
        to it, whatever the object's metadata says, and anything that is not in
        INLINE_CONTENT_TYPES is served as an attachment even when `as_attachment` is false.
        S3 cannot add `X-Content-Type-Options: nosniff` to a presigned response (the only
        overridable headers are Content-Type, Content-Disposition, Content-Language,
        Content-Encoding, Cache-Control and Expires): the forced type plus the disposition are
        what keep a polyglot from being rendered as something else.
        Local computation (`QuerySigner`): it needs no connection, nor `start()`.
        """
        params: dict[str, str] = {}
        if content_type is not None:
            params["response-content-type"] = content_type
            as_attachment = as_attachment or content_type not in INLINE_CONTENT_TYPES
        disposition = content_disposition(download_name, as_attachment=as_attachment)
        if disposition is not None:
            params["response-content-disposition"] = disposition
        return self._signer.url(key, params, expires_in=expires_in)
