"""`goaltrack.uploads.read_upload` through a real ASGI app (streamed bodies, problem+json errors)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from goaltrack.errors import install_error_handlers
from goaltrack.uploads import (
    MULTIPART_OVERHEAD,
    read_upload,
    sanitise_file_name,
    sniff_content_type,
)
from helpers import assert_problem

MAX_BYTES = 4096

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 32
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\x0bIDATx\x9cc\xf8\x0f\x00\x01\x01\x01\x00\x18\xdd\x8d\xb0"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x000\x01\x00\x9d\x01\x2a\x01\x00\x01\x00"
# An iPhone photo's first box: ftyp, major brand heic, compatible brands mif1 + heic.
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00\x00\x00\x08meta" * 4
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n"
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 100


@pytest.fixture(autouse=True)
def clean_state() -> None:
    """These tests use no database or Redis: skip the session app and its per-test cleanup."""


def make_app(max_bytes: int = MAX_BYTES) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        received = await read_upload(request, max_bytes=max_bytes)
        try:
            assert received.file.tell() == 0
            data = received.file.read()
        finally:
            received.close()
        assert len(data) == received.size
        return {
            "size": received.size,
            "file_name": received.file_name,
            "content_type": received.content_type,
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.mark.parametrize(
    ("data", "claimed", "expected"),
    [
        (JPEG, "application/octet-stream", "image/jpeg"),
        (PNG, "image/jpeg", "image/png"),
        (WEBP, "image/png", "image/webp"),
        (HEIC, "application/octet-stream", "image/heic"),
        (PDF, "text/plain", "application/pdf"),
    ],
)
async def test_types_are_detected_from_content(
    client: httpx.AsyncClient, data: bytes, claimed: str, expected: str
) -> None:
    response = await client.post("/upload", files={"file": ("upload.bin", data, claimed)})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "size": len(data),
        "file_name": "upload.bin",
        "content_type": expected,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


async def test_executable_disguised_as_png_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post("/upload", files={"file": ("photo.png", ELF, "image/png")})
    assert_problem(response, 415, "unsupported_file_type")


async def test_exact_limit_is_accepted_and_one_more_byte_is_413(
    client: httpx.AsyncClient,
) -> None:
    exact = PDF + b"\x00" * (MAX_BYTES - len(PDF))
    response = await client.post("/upload", files={"file": ("a.pdf", exact, "application/pdf")})
    assert response.status_code == 200, response.text
    assert response.json()["size"] == MAX_BYTES
    over = exact + b"\x00"
    response = await client.post("/upload", files={"file": ("a.pdf", over, "application/pdf")})
    body = assert_problem(response, 413, "file_too_large")
    assert body["max_bytes"] == MAX_BYTES


async def test_file_larger_than_the_spool_is_kept_whole() -> None:
    data = PDF + bytes(range(256)) * 8192  # ≈ 2 MiB: rolls over to a file on disk
    transport = httpx.ASGITransport(app=make_app(max_bytes=3 * 1024 * 1024))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/upload", files={"file": ("big.pdf", data, "application/pdf")})
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()


class ChunkedBody:
    """A multipart body produced chunk by chunk, counting how much of it was pulled."""

    boundary = "goaltrack-test-boundary"

    def __init__(self, head: bytes, chunks: int, chunk_size: int = 64 * 1024) -> None:
        self.head = head
        self.chunks = chunks
        self.chunk_size = chunk_size
        self.sent = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}

    @property
    def total(self) -> int:
        return self.chunks * self.chunk_size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        preamble = (
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        self.sent += len(preamble) + len(self.head)
        yield preamble + self.head
        for _ in range(self.chunks):
            self.sent += self.chunk_size
            yield b"\x00" * self.chunk_size
        yield f"\r\n--{self.boundary}--\r\n".encode()


async def test_stream_without_content_length_stops_at_the_limit() -> None:
    max_bytes = 256 * 1024
    body = ChunkedBody(PDF, chunks=160)  # 10 MiB
    transport = httpx.ASGITransport(app=make_app(max_bytes=max_bytes))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/upload", content=body.__aiter__(), headers=body.headers)
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "file_too_large")
    # Reading stopped about max_bytes in: nowhere near the whole body.
    assert max_bytes < body.sent <= max_bytes + 2 * body.chunk_size
    assert body.sent < body.total


async def test_unsupported_type_stops_reading_early() -> None:
    body = ChunkedBody(ELF, chunks=160)
    transport = httpx.ASGITransport(app=make_app(max_bytes=100 * 1024 * 1024))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/upload", content=body.__aiter__(), headers=body.headers)
    assert_problem(response, 415, "unsupported_file_type")
    assert body.sent <= 2 * body.chunk_size


async def test_declared_content_length_over_the_limit_is_413_unread() -> None:
    body = ChunkedBody(PDF, chunks=4)
    transport = httpx.ASGITransport(app=make_app())
    headers = body.headers | {"Content-Length": str(MAX_BYTES + MULTIPART_OVERHEAD + 1)}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/upload", content=body.__aiter__(), headers=headers)
    assert_problem(response, 413, "file_too_large")
    assert body.sent == 0


async def test_path_in_file_name_is_stripped(client: httpx.AsyncClient) -> None:
    for name, expected in [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\win.ini", "win.ini"),
        # httpx (like browsers, HTML5) sends `"` as %22 and control characters as %XX.
        ("Фото отпуска\t2024.jpg", "Фото отпуска 2024.jpg"),
        ('my "best".pdf', "my best.pdf"),
        ("100%.pdf", "100.pdf"),
        ("", "file.pdf"),
        ("../", "file.pdf"),
    ]:
        response = await client.post("/upload", files={"file": (name, PDF, "application/pdf")})
        assert response.status_code == 200, response.text
        assert response.json()["file_name"] == expected, name


async def test_file_part_without_file_name(client: httpx.AsyncClient) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + PNG + b"\r\n--b--\r\n"
    response = await client.post(
        "/upload", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["file_name"] == "file.png"


async def test_other_text_fields_are_ignored(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/upload",
        data={"caption": "holiday"},
        files={"file": ("a.jpg", JPEG, "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    assert response.json()["content_type"] == "image/jpeg"


@pytest.mark.parametrize(
    "request_kwargs",
    [
        pytest.param({"json": {"file": "x"}}, id="not-multipart"),
        pytest.param({"files": {"caption": (None, b"hello")}}, id="missing-field"),
        pytest.param({"files": {"other": ("a.pdf", PDF, "application/pdf")}}, id="wrong-field"),
        pytest.param({"files": {"file": ("a.pdf", b"", "application/pdf")}}, id="empty-file"),
        pytest.param(
            {
                "files": [
                    ("file", ("a.pdf", PDF, "application/pdf")),
                    ("file", ("b.pdf", PDF, "application/pdf")),
                ]
            },
            id="two-files",
        ),
        pytest.param(
            {
                "content": b"this is not multipart at all",
                "headers": {"Content-Type": "multipart/form-data; boundary=xyz"},
            },
            id="malformed",
        ),
        pytest.param(
            {
                "content": b'--xyz\r\nContent-Disposition: form-data; name="file"; '
                b'filename="a.pdf"\r\n\r\n' + PDF,
                "headers": {"Content-Type": "multipart/form-data; boundary=xyz"},
            },
            id="truncated",
        ),
        pytest.param(
            {"content": PDF, "headers": {"Content-Type": "multipart/form-data"}},
            id="no-boundary",
        ),
    ],
)
async def test_invalid_uploads_are_422(
    client: httpx.AsyncClient, request_kwargs: dict[str, Any]
) -> None:
    response = await client.post("/upload", **request_kwargs)
    assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (JPEG, "image/jpeg"),
        (PNG, "image/png"),
        (WEBP, "image/webp"),
        (HEIC, "image/heic"),
        (PDF, "application/pdf"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"\x00\x00\x00\x1cftypheix\x00\x00\x00\x00mif1heixmiaf", "image/heic"),
        (b"\x00\x00\x00\x18ftyphevc\x00\x00\x00\x00msf1hevc", "image/heic"),
        # AVIF also lists the generic HEIF brand mif1: not HEIC.
        (b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1miafMA1B", None),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1miaf", None),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", None),  # MP4 video
        (b"\x00\x00\x00\x08ftypheic", None),  # truncated box
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"GIF89a\x01\x00\x01\x00", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (ELF, None),
        (b"", None),
        (b"\xff\xd8", None),
    ],
)
def test_sniff_content_type(head: bytes, expected: str | None) -> None:
    assert sniff_content_type(head) == expected


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("../../etc/passwd", "application/pdf", "passwd"),
        ("C:\\Users\\me\\Desktop\\scan.pdf", "application/pdf", "scan.pdf"),
        ("", "application/pdf", "file.pdf"),
        (None, "image/jpeg", "file.jpg"),
        (".htaccess", "image/png", "htaccess"),
        ("...", "image/webp", "file.webp"),
        ("   ", "image/heic", "file.heic"),
        ("a\x00b\x1b[31mc\r\n.jpg", "image/jpeg", "ab31mc .jpg"),
        ("<img src=x onerror=alert(1)>.png", "image/png", "img srcx onerroralert(1).png"),
        ('re"port;  name=x.pdf', "application/pdf", "report namex.pdf"),
        ("photo (1) - copy_2.jpg", "image/jpeg", "photo (1) - copy_2.jpg"),
        ("Cafe\u0301 日本語.pdf", "application/pdf", "Café 日本語.pdf"),  # NFC
        ("trailing dots. . .", "application/pdf", "trailing dots"),
        ("\u202eexe.pdf", "application/pdf", "exe.pdf"),  # right-to-left override dropped
    ],
)
def test_sanitise_file_name(name: str | None, content_type: str, expected: str) -> None:
    assert sanitise_file_name(name, content_type) == expected


def test_sanitise_file_name_caps_length_keeping_the_extension() -> None:
    name = "x" * 500 + ".jpeg"
    result = sanitise_file_name(name, "image/jpeg")
    assert len(result) == 200
    assert result.endswith(".jpeg")
    assert len(sanitise_file_name("y" * 500, "image/png")) == 200
