"""`goaltrack.uploads.read_upload` through a real ASGI app (streamed bodies, problem+json errors)."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI, Request
from PIL import Image
from pypdf import PdfWriter

from goaltrack import uploads
from goaltrack.config import get_settings
from goaltrack.errors import install_error_handlers
from goaltrack.storage import Storage
from goaltrack.uploads import (
    MULTIPART_OVERHEAD,
    read_upload,
    sanitise_file_name,
    sniff_content_type,
)
from helpers import assert_problem

MAX_BYTES = 4096


def make_image(image_format: str, size: tuple[int, int] = (2, 2), **params: Any) -> bytes:
    """A real image, encoded by Pillow (HEIF through pillow-heif, registered by goaltrack.uploads)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(buffer, image_format, **params)
    return buffer.getvalue()


def make_pdf(pages: int = 1, password: str | None = None) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=72, height=72)
    if password is not None:
        writer.encrypt(password, "owner-" + password, algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def padded_png(total: int, seed: int = 0) -> bytes:
    """A valid PNG of exactly `total` bytes: PNG with a private ancillary chunk of random bytes."""
    padding = random.Random(seed).randbytes(total - len(PNG) - 12)
    data = PNG[:-12] + png_chunk(b"prVt", padding) + PNG[-12:]  # before IEND (12 bytes)
    assert len(data) == total
    return data


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` × `height` pixels (a decompression bomb's header)."""
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def short_id(value: object) -> str | None:
    """Test ids that show a file by its first 16 bytes, not all of it."""
    return repr(value[:16])[2:-1] if isinstance(value, bytes) else None


JPEG = make_image("JPEG")
PNG = make_image("PNG")
WEBP = make_image("WEBP")
# pillow-heif writes what an iPhone does: ftyp major brand heic, compatible brands mif1 heic miaf.
HEIC = make_image("HEIF")
PDF = make_pdf()
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
    ("data", "claimed", "expected", "file_name"),
    [
        (JPEG, "application/octet-stream", "image/jpeg", "upload.jpg"),
        (PNG, "image/jpeg", "image/png", "upload.png"),
        (WEBP, "image/png", "image/webp", "upload.webp"),
        (HEIC, "application/octet-stream", "image/heic", "upload.heic"),
        (PDF, "text/plain", "application/pdf", "upload.pdf"),
    ],
    ids=["jpeg", "png", "webp", "heic", "pdf"],
)
async def test_types_are_detected_from_content(
    client: httpx.AsyncClient, data: bytes, claimed: str, expected: str, file_name: str
) -> None:
    response = await client.post("/upload", files={"file": ("upload.bin", data, claimed)})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "size": len(data),
        "file_name": file_name,
        "content_type": expected,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("poly.html", PNG, "poly.png"),  # an HTML/PNG polyglot is stored and served as a PNG
        ("poly.html", PDF, "poly.pdf"),
        ("payload.svg", WEBP, "payload.webp"),
        ("shell.php.jpg", PNG, "shell.php.png"),
        ("report.pdf", JPEG, "report.jpg"),
        ("notes", PDF, "notes.pdf"),
        ("v1.2", PDF, "v1.2.pdf"),  # `.2` is not an extension
        # Extensions that already name the detected type are kept as they are.
        ("Photo.JPEG", JPEG, "Photo.JPEG"),
        ("IMG_0001.HEIC", HEIC, "IMG_0001.HEIC"),
        ("scan.heif", HEIC, "scan.heif"),
    ],
    ids=short_id,
)
async def test_stored_name_takes_the_extension_of_the_detected_type(
    client: httpx.AsyncClient, name: str, data: bytes, expected: str
) -> None:
    response = await client.post("/upload", files={"file": (name, data, "text/html")})
    assert response.status_code == 200, response.text
    assert response.json()["file_name"] == expected


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


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(PDF + bytes(range(256)) * 8192, id="pdf"),
        pytest.param(padded_png(2 * 1024 * 1024), id="png"),
    ],
)
async def test_file_larger_than_the_spool_is_kept_whole(data: bytes) -> None:
    # ≈ 2 MiB: rolls over to a file on disk, and is verified from there
    transport = httpx.ASGITransport(app=make_app(max_bytes=3 * 1024 * 1024))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/upload", files={"file": ("big", data, "application/pdf")})
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
        ("../../etc/passwd", "passwd.pdf"),
        ("..\\..\\Windows\\win.ini", "win.pdf"),
        # httpx (like browsers, HTML5) sends `"` as %22 and control characters as %XX.
        ("Фото отпуска\t2024.pdf", "Фото отпуска 2024.pdf"),
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
    ids=short_id,
)
def test_sniff_content_type(head: bytes, expected: str | None) -> None:
    assert sniff_content_type(head) == expected


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("../../etc/passwd", "application/pdf", "passwd.pdf"),
        ("C:\\Users\\me\\Desktop\\scan.pdf", "application/pdf", "scan.pdf"),
        ("", "application/pdf", "file.pdf"),
        (None, "image/jpeg", "file.jpg"),
        (".htaccess", "image/png", "htaccess.png"),
        ("...", "image/webp", "file.webp"),
        ("   ", "image/heic", "file.heic"),
        ("a\x00b\x1b[31mc\r\n.jpg", "image/jpeg", "ab31mc .jpg"),
        ("<img src=x onerror=alert(1)>.png", "image/png", "img srcx onerroralert(1).png"),
        ('re"port;  name=x.pdf', "application/pdf", "report namex.pdf"),
        ("photo (1) - copy_2.jpg", "image/jpeg", "photo (1) - copy_2.jpg"),
        ("Cafe\u0301 日本語.pdf", "application/pdf", "Café 日本語.pdf"),  # NFC
        ("trailing dots. . .", "application/pdf", "trailing dots.pdf"),
        ("\u202eexe.pdf", "application/pdf", "exe.pdf"),  # right-to-left override dropped
        # The extension follows the detected type; the sanitised stem stays.
        ("poly.html", "image/png", "poly.png"),
        ("a.b.c.html", "image/webp", "a.b.c.webp"),
        ("résumé.PDF", "application/pdf", "résumé.PDF"),
        ("photo.jpe", "image/jpeg", "photo.jpe"),
        ("photo.png", "image/jpeg", "photo.jpg"),
        ("IMG_1.HEIF", "image/heic", "IMG_1.HEIF"),
        ("x.tar.gz", "application/pdf", "x.tar.pdf"),
        ("2024.01", "application/pdf", "2024.01.pdf"),
        ("space .html", "image/png", "space .png"),
        (".html", "image/png", "html.png"),
        ("..png", "image/png", "png.png"),
    ],
)
def test_sanitise_file_name(name: str | None, content_type: str, expected: str) -> None:
    assert sanitise_file_name(name, content_type) == expected


def test_sanitise_file_name_caps_length_keeping_the_extension() -> None:
    name = "x" * 500 + ".jpeg"
    result = sanitise_file_name(name, "image/jpeg")
    assert len(result) == 200
    assert result.endswith(".jpeg")
    other = sanitise_file_name("y" * 500, "image/png")
    assert (len(other), other[-4:]) == (200, ".png")
    replaced = sanitise_file_name("z" * 300 + ".html", "application/pdf")
    assert (len(replaced), replaced[-5:]) == (200, "z.pdf")


# --- the content is decoded, not only sniffed -------------------------------------------------


def _corrupt(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param("a.jpg", b"\xff\xd8\xff", id="jpeg-3-byte-header"),
        pytest.param(
            "a.jpg",
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4,
            id="jpeg-header-and-bytes",
        ),
        pytest.param("a.jpg", JPEG[: len(JPEG) // 2], id="jpeg-half"),
        pytest.param("a.jpg", JPEG[:-10], id="jpeg-truncated-scan"),
        pytest.param("a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, id="png-signature-and-zeros"),
        pytest.param("a.png", PNG[:-12], id="png-without-iend"),
        pytest.param("a.png", _corrupt(PNG, PNG.index(b"IDAT") + 6), id="png-bad-crc"),
        pytest.param("a.webp", WEBP[:-4], id="webp-truncated"),
        pytest.param("a.webp", WEBP[:12] + b"\x00" * 64, id="webp-header-and-zeros"),
        pytest.param("a.heic", HEIC[: len(HEIC) // 2], id="heic-truncated"),
        pytest.param(
            "a.heic",
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
            id="heic-ftyp",
        ),
        pytest.param(
            "a.pdf",
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
            id="pdf-without-xref",
        ),
        pytest.param("a.pdf", b"%PDF-1.4 x", id="pdf-header-only"),
        pytest.param("a.pdf", PDF[: len(PDF) - 40], id="pdf-truncated"),
        pytest.param("a.pdf", make_pdf(pages=0), id="pdf-without-pages"),
    ],
)
async def test_fake_truncated_or_corrupt_files_are_422(
    client: httpx.AsyncClient, name: str, data: bytes
) -> None:
    response = await client.post("/upload", files={"file": (name, data, "image/png")})
    body = assert_problem(response, 422, "validation_error")
    assert "not a valid" in body["detail"]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "size",
    [
        pytest.param((9000, 9000), id="over-the-limit"),  # Pillow only warns up to twice the limit
        pytest.param((100_000, 100_000), id="far-over-the-limit"),  # Pillow raises
        pytest.param((1, 2**31 - 1), id="thin"),
    ],
)
async def test_decompression_bombs_are_refused_as_invalid(
    client: httpx.AsyncClient, size: tuple[int, int]
) -> None:
    assert Image.MAX_IMAGE_PIXELS == uploads.MAX_IMAGE_PIXELS
    data = png_claiming_size(*size)
    assert len(data) < 200
    response = await client.post("/upload", files={"file": ("bomb.png", data, "image/png")})
    body = assert_problem(response, 422, "validation_error")
    assert "pixels" in body["detail"]


async def test_large_but_reasonable_image_is_accepted() -> None:
    data = make_image("JPEG", size=(4000, 3000), quality=30)  # a 12 MP phone photo
    transport = httpx.ASGITransport(app=make_app(max_bytes=len(data)))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/upload", files={"file": ("big.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.json()["content_type"] == "image/jpeg"


async def test_progressive_jpeg_and_encrypted_pdfs_are_accepted(
    client: httpx.AsyncClient,
) -> None:
    for name, data, expected in [
        ("p.jpg", make_image("JPEG", size=(64, 64), progressive=True), "image/jpeg"),
        ("locked.pdf", make_pdf(password="secret"), "application/pdf"),
        ("restricted.pdf", make_pdf(password=""), "application/pdf"),  # owner password only
        ("two.pdf", make_pdf(pages=2), "application/pdf"),
    ]:
        response = await client.post("/upload", files={"file": (name, data, "x/y")})
        assert response.status_code == 200, (name, response.text)
        assert response.json()["content_type"] == expected


async def test_avif_is_still_refused(client: httpx.AsyncClient) -> None:
    avif = make_image("AVIF")
    assert avif[4:12] == b"ftypavif"
    response = await client.post("/upload", files={"file": ("a.heic", avif, "image/heic")})
    assert_problem(response, 415, "unsupported_file_type")


async def test_verification_runs_off_the_event_loop(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    verify = uploads.verify_content

    def recording(*args: Any) -> None:
        threads.append(threading.current_thread())
        verify(*args)

    monkeypatch.setattr(uploads, "verify_content", recording)
    response = await client.post("/upload", files={"file": ("a.png", PNG, "image/png")})
    assert response.status_code == 200, response.text
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()


# --- presigned downloads: forced type, safe disposition ----------------------------------------


@pytest.fixture(scope="module")
async def storage() -> AsyncIterator[Storage]:
    store = Storage(get_settings().model_copy(update={"s3_bucket": "uploads-" + uuid4().hex[:8]}))
    await store.start()
    await store.ensure_bucket()
    yield store
    await store.close()


@pytest.mark.parametrize(
    ("stored_as", "content_type", "name", "disposition"),
    [
        # An object stored with another type (an older or mislabelled upload) is served as the
        # detected type all the same.
        ("text/html", "image/png", "poly.png", "inline; filename*=UTF-8''poly.png"),
        ("image/jpeg", "image/jpeg", "a b.jpg", "inline; filename*=UTF-8''a%20b.jpg"),
        ("image/webp", "image/webp", None, None),
        ("image/heic", "image/heic", "IMG_1.heic", "inline; filename*=UTF-8''IMG_1.heic"),
        # Anything but a raster image downloads, whatever the caller asked for.
        ("application/pdf", "application/pdf", "r.pdf", "attachment; filename*=UTF-8''r.pdf"),
        ("text/html", "text/html", "x.html", "attachment; filename*=UTF-8''x.html"),
        ("image/svg+xml", "image/svg+xml", "x.svg", "attachment; filename*=UTF-8''x.svg"),
        ("application/octet-stream", "application/pdf", None, "attachment"),
    ],
)
async def test_presigned_download_forces_the_type_and_a_safe_disposition(
    storage: Storage,
    stored_as: str,
    content_type: str,
    name: str | None,
    disposition: str | None,
) -> None:
    key = f"tests/{uuid4().hex}"
    await storage.put(key, PNG, size=len(PNG), content_type=stored_as)
    url = await storage.presigned_get(
        key, expires_in=60, download_name=name, as_attachment=False, content_type=content_type
    )
    query = parse_qs(urlsplit(url).query)
    assert query["response-content-type"] == [content_type]
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == content_type
    assert response.headers.get("content-disposition") == disposition


async def test_download_link_is_named_after_the_detected_type(storage: Storage) -> None:
    """The flow of an attachment: upload `poly.html` that is a PNG, store it, presign its link."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, str]:
        received = await read_upload(request, max_bytes=MAX_BYTES)
        key = f"tests/{uuid4().hex}"
        try:
            await storage.put(
                key, received.file, size=received.size, content_type=received.content_type
            )
        finally:
            received.close()
        url = await storage.presigned_get(
            key,
            expires_in=60,
            download_name=received.file_name,
            content_type=received.content_type,
        )
        return {"file_name": received.file_name, "url": url}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/upload", files={"file": ("poly.html", PNG, "text/html")})
    assert response.status_code == 200, response.text
    assert response.json()["file_name"] == "poly.png"
    async with httpx.AsyncClient(timeout=10) as http:
        fetched = await http.get(response.json()["url"])
    assert fetched.content == PNG
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["content-disposition"] == "inline; filename*=UTF-8''poly.png"
