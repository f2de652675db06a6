"""The one module in front of S3 (SeaweedFS in development, tests and compose; any S3 service
elsewhere).

One long-lived aioboto3 client per process, path-style addressing, short timeouts and botocore's
standard retries (two attempts in all: Celery and the client own any further retrying).
Every connection error, timeout or 5xx from S3 is raised as `StorageUnavailable` (503), so a
route never turns an S3 outage into a 500 and never writes a row without its file.
Buckets are private: downloads go through short-lived presigned GET URLs, signed for the host
the clients reach (`S3_PUBLIC_ENDPOINT_URL`) when it differs from the one the API uses.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import IO, Any
from urllib.parse import quote

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


class Storage:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.bucket = settings.s3_bucket
        self._session = aioboto3.Session(
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
            region_name=settings.s3_region,
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._signer: Any = None

    def __repr__(self) -> str:  # never show credentials
        return f"Storage(endpoint={self._settings.s3_endpoint_url!r}, bucket={self.bucket!r})"

    async def start(self) -> None:
        """Open the long-lived client (and a sign-only one for the public endpoint, if set)."""
        if self._stack is not None:
            return
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                self._session.client(
                    "s3", endpoint_url=self._settings.s3_endpoint_url, config=_client_config()
                )
            )
            public = self._settings.s3_public_endpoint_url
            if public and public.rstrip("/") != self._settings.s3_endpoint_url.rstrip("/"):
                # Presigning is local computation: this client never opens a connection.
                self._signer = await stack.enter_async_context(
                    self._session.client("s3", endpoint_url=public, config=_client_config())
                )
            else:
                self._signer = self._client
        except BaseException:
            await stack.aclose()
            self._client = self._signer = None
            raise
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._client = self._signer = None
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
        """
        if self._signer is None:
            raise RuntimeError("Storage.start() has not been awaited")
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if content_type is not None:
            params["ResponseContentType"] = content_type
            as_attachment = as_attachment or content_type not in INLINE_CONTENT_TYPES
        disposition = content_disposition(download_name, as_attachment=as_attachment)
        if disposition is not None:
            params["ResponseContentDisposition"] = disposition
        url: str = await self._signer.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in
        )
        return url
