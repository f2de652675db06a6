"""One multipart file field read from the raw request stream, with a hard size limit.

Starlette's form parser accepts file parts of any size (it spools everything first), keeps the
client's file name verbatim and trusts the client's Content-Type. Here the body is streamed into
`python_multipart.MultipartParser`, the file part's bytes are counted and reading stops the moment
they pass the limit (413), the type is detected from magic bytes (415 for anything else, as soon
as the first bytes are in) and the file name is reduced to a safe base name kept as metadata
(object keys are generated, never derived from it) whose extension is the detected type's.

Magic bytes alone prove little (the three bytes FF D8 FF are not a JPEG), so once the whole,
size-limited file is spooled it is decoded by a real library, off the event loop: Pillow
(pillow-heif for HEIC) opens and verifies images, pypdf reads a PDF's cross-reference table and
page count. A file that does not decode as its detected type (fake, truncated, corrupt, or a
decompression bomb) is a 422. The verification is bounded: the file is at most `max_bytes`,
nothing is rendered, images are capped at `MAX_IMAGE_PIXELS` and at most `VERIFY_CONCURRENCY`
verifications run at once.

HEIC/HEIF: an ISO-BMFF file (`ftyp` box at offset 4) is `image/heic` when its major brand or one
of its compatible brands is in the HEIC family (heic, heix, heim, heis, hevc, hevx, hevm, hevs).
The generic HEIF brands `mif1`/`msf1` alone are NOT accepted: AVIF files carry them too
(`avif` + `mif1` + `miaf`), and so would be mislabelled as HEIC. iPhone photos list `mif1` *and*
`heic`, so they are accepted.
"""

from __future__ import annotations

import re
import tempfile
import unicodedata
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final

import anyio
import anyio.to_thread
import pillow_heif
from PIL import Image
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from goaltrack.errors import AppError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# Room for the multipart framing (boundaries, part headers, small extra fields) beyond the file.
MULTIPART_OVERHEAD: Final = 64 * 1024
SPOOL_MAX_SIZE: Final = 1024 * 1024
# Enough of the file to tell its type (an ISO-BMFF `ftyp` box with its brand list fits easily).
SNIFF_BYTES: Final = 512
MAX_FILE_NAME_LENGTH: Final = 200

EXTENSIONS: Final = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/heic": ".heic",
    "application/pdf": ".pdf",
}
# Extensions (any case) a client's file name may keep for each type; any other is replaced.
KEPT_EXTENSIONS: Final = {
    "image/jpeg": frozenset({".jpg", ".jpeg", ".jpe", ".jfif"}),
    "image/png": frozenset({".png"}),
    "image/webp": frozenset({".webp"}),
    "image/heic": frozenset({".heic", ".heif"}),
    "application/pdf": frozenset({".pdf"}),
}
# An image with more pixels is refused (a decompression bomb: a small file that decodes to
# gigabytes). 8192 × 8192 ≈ 67 MP: above the 48-64 MP photos of today's phone cameras, whose files
# are about the upload limit already.
MAX_IMAGE_PIXELS: Final = 8192 * 8192
# Verifications running at once (CPU work in worker threads); more uploads wait their turn.
VERIFY_CONCURRENCY: Final = 2
_PILLOW_FORMATS: Final = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/heic": "HEIF",  # the plugin registered by pillow-heif
}
_FORMAT_NAMES: Final = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WebP",
    "image/heic": "HEIC",
    "application/pdf": "PDF",
}
HEIC_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
)


pillow_heif.register_heif_opener()
# Image.open raises DecompressionBombError beyond twice this and only warns between once and
# twice: `_verify_image` refuses from once.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
_verify_limiter = anyio.CapacityLimiter(VERIFY_CONCURRENCY)


class FileTooLarge(AppError):
    status_code = 413
    code = "file_too_large"
    detail = "The file is too large."

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            "The file is larger than the {max_bytes}-byte limit.",
            extra={"max_bytes": max_bytes},
            values={"max_bytes": max_bytes},
        )


class UnsupportedFileType(AppError):
    status_code = 415
    code = "unsupported_file_type"
    detail = "Only JPEG, PNG, WebP, HEIC images and PDF documents are accepted."


TOO_MANY_PIXELS: Final = "The image has more than {pixels} pixels."


class InvalidUpload(AppError):
    status_code = 422
    code = "validation_error"
    detail = "Send one file as multipart/form-data in the `file` field."
    location = ("body", "file")


def _verify_image(file: IO[bytes], image_format: str) -> None:
    # Only the detected type's decoder may open it (a PNG is never read by another plugin).
    with Image.open(file, formats=[image_format]) as image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise InvalidUpload(TOO_MANY_PIXELS, values={"pixels": MAX_IMAGE_PIXELS})
        if image_format == "JPEG" and not image.info.get("progressive"):
            # Pillow's verify() checks nothing for JPEG: decode at 1/8 scale instead, which reads
            # every entropy-coded segment (a truncated or corrupt scan fails) for ~1/64 of the
            # memory. Progressive JPEGs would need a full-size coefficient buffer (up to 6 bytes
            # a pixel), so for them the header (markers, tables, frame) is what is verified.
            image.draft(image.mode, (1, 1))
            image.load()
        else:
            # PNG: every chunk's CRC up to IEND. WebP: libwebp has already demuxed the whole file.
            # HEIC: libheif has parsed the container; the HEVC data is not decoded (~0.6 s of CPU
            # for a 12 MP photo), so a HEIC cut inside its image data is not detected.
            image.verify()


def _verify_pdf(file: IO[bytes]) -> None:
    # Imported on the first PDF: 0.2 s of the API's 4.6 s of imports (docs/deploy.md, "Deploys").
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError

    # strict=False reads what viewers read; the cross-reference table and trailer must be there.
    reader = PdfReader(file, strict=False)
    try:
        pages = len(reader.pages)  # walks the page tree; renders nothing
    except FileNotDecryptedError:
        return  # password-protected: its structure parsed, its page tree needs the password
    if pages < 1:
        raise InvalidUpload("The file is not a valid PDF document: it has no pages.")


def verify_content(file: IO[bytes], content_type: str) -> None:
    """Decode `file` as `content_type` (a sniffed type); InvalidUpload when it does not decode.

    Blocking CPU work: run it in a worker thread. `file` is left at position 0.
    """
    format_name = _FORMAT_NAMES[content_type]
    file.seek(0)
    try:
        if content_type == "application/pdf":
            _verify_pdf(file)
        else:
            _verify_image(file, _PILLOW_FORMATS[content_type])
    except InvalidUpload:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidUpload(TOO_MANY_PIXELS, values={"pixels": MAX_IMAGE_PIXELS}) from exc
    except Exception as exc:  # each decoder raises its own classes, all meaning "not valid"
        raise InvalidUpload(
            "The file is not a valid {format} file: it is truncated or corrupt.",
            values={"format": format_name},
        ) from exc
    finally:
        file.seek(0)


@dataclass
class Upload:
    """A validated upload: `file` is binary and positioned at 0; close it when done."""

    file: tempfile.SpooledTemporaryFile[bytes]
    size: int
    file_name: str  # sanitised, metadata only
    content_type: str  # detected from the content, never the client's claim

    def close(self) -> None:
        self.file.close()


def sniff_content_type(head: bytes) -> str | None:
    """The type of a file from its first bytes, or None when it is not one we accept."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        box_size = int.from_bytes(head[:4], "big")
        if box_size < 16:  # not a valid ftyp box (major brand + minor version need 16 bytes)
            return None
        brands = head[16 : min(box_size, len(head))]
        compatible = {brands[i : i + 4] for i in range(0, len(brands) - 3, 4)}
        if head[8:12] in HEIC_BRANDS or compatible & HEIC_BRANDS:
            return "image/heic"
    return None


_SAFE_PUNCTUATION = frozenset(" .-_()")
_SPACES = re.compile(r" {2,}")


def _is_safe(char: str) -> bool:
    # Letters, marks (accents, Indic vowel signs) and digits of any script, plus a few symbols.
    return char in _SAFE_PUNCTUATION or unicodedata.category(char)[0] in "LMN"


# What counts as a file name's extension: up to 10 ASCII letters and digits, at least one letter
# (`v1.2` has none; `archive.tar.gz` has `.gz`).
_EXTENSION = re.compile(r"\.(?=[0-9]*[A-Za-z])[A-Za-z0-9]{1,10}")


def _split_extension(base: str) -> tuple[str, str]:
    stem, dot, extension = base.rpartition(".")
    if dot and stem and _EXTENSION.fullmatch(dot + extension):
        return stem, dot + extension
    return base, ""


def sanitise_file_name(name: str | None, content_type: str) -> str:
    """A safe display/download name: base name only, safe characters, ≤ 200 chars, never empty.

    Its extension is the detected type's: `poly.html` that is a PNG is `poly.png` (the stem is
    kept). An extension that already names the type (`.JPEG`, `.heif`) stays as it is.
    """
    base = ""
    if name:
        base = re.split(r"[/\\]", name)[-1]
        base = unicodedata.normalize("NFC", base)
        base = "".join(" " if char.isspace() else char for char in base)
        base = "".join(char for char in base if _is_safe(char))
        base = _SPACES.sub(" ", base).strip(" ").lstrip(".").strip(" ").rstrip(". ")
    stem, extension = _split_extension(base)
    kept = KEPT_EXTENSIONS.get(content_type)
    if kept is not None and extension.lower() not in kept:
        extension = EXTENSIONS[content_type]
    if len(stem) + len(extension) > MAX_FILE_NAME_LENGTH:
        stem = stem[: MAX_FILE_NAME_LENGTH - len(extension)].rstrip(". ")
    return (stem or "file") + extension


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


# Browsers (HTML5 form encoding) and httpx send `"`, CR, LF (httpx: every control character)
# in a multipart file name as %22 / %0D / %0A / %XX.
_HTML5_ESCAPE = re.compile(r"%(22|[01][0-9A-Fa-f])")


def _unescape_file_name(value: str) -> str:
    return _HTML5_ESCAPE.sub(lambda match: chr(int(match[1], 16)), value)


class _Reader:
    """Collects the one file part from MultipartParser callbacks, counting its bytes."""

    def __init__(self, field: str, max_bytes: int) -> None:
        self.field = field
        self.max_bytes = max_bytes
        # Closed by read_upload on error, else handed to the caller in the Upload.
        self.file: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_MAX_SIZE
        )
        self.size = 0
        self.found = False
        self.file_name: str | None = None
        self.head = b""
        self.content_type: str | None = None
        # Data of the current parser.write() call, written to the spool file afterwards
        # (off the event loop once the spool has rolled over to disk).
        self.pending: list[bytes] = []
        self._in_file = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).strip().lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise InvalidUpload("A multipart part has no form-data name.")
        name = _decode(options[b"name"])
        has_file_name = b"filename" in options
        if name == self.field:
            if self.found:
                raise InvalidUpload("Send exactly one file.")
            self.found = True
            self._in_file = True
            self.file_name = (
                _unescape_file_name(_decode(options[b"filename"])) if has_file_name else None
            )
        elif has_file_name:
            raise InvalidUpload("Send exactly one file.")
        # Other (non-file) fields are skipped; the body limit bounds them.

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return
        self.size += end - start
        if self.size > self.max_bytes:
            raise FileTooLarge(self.max_bytes)
        chunk = data[start:end]
        if self.content_type is None and len(self.head) < SNIFF_BYTES:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self._detect()
        self.pending.append(chunk)

    def _part_end(self) -> None:
        self._in_file = False

    def _detect(self) -> None:
        self.content_type = sniff_content_type(self.head)
        if self.content_type is None:
            raise UnsupportedFileType()

    async def flush(self) -> None:
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending.clear()
        if getattr(self.file, "_rolled", True) or self.file.tell() + len(data) > SPOOL_MAX_SIZE:
            await run_in_threadpool(self.file.write, data)
        else:
            self.file.write(data)

    def finish(self, parser: MultipartParser) -> Upload:
        if parser.state != MultipartState.END:
            raise InvalidUpload("The multipart body is incomplete or malformed.")
        if not self.found:
            raise InvalidUpload("The `{field}` file part is missing.", values={"field": self.field})
        if self.size == 0:
            raise InvalidUpload("The file is empty.")
        if self.content_type is None:
            self._detect()
        assert self.content_type is not None
        self.file.seek(0)
        return Upload(
            file=self.file,
            size=self.size,
            file_name=sanitise_file_name(self.file_name, self.content_type),
            content_type=self.content_type,
        )


async def read_upload(request: Request, *, field: str = "file", max_bytes: int) -> Upload:
    """Stream the request body and return its one `field` file, at most `max_bytes` long.

    Raises FileTooLarge (413), UnsupportedFileType (415) or InvalidUpload (422, also for a file
    that does not decode as its detected type). Reading stops at the first error; the rest of
    the body is never read.
    """
    body_limit = max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None:
        declared = declared.strip()
        if not (declared.isascii() and declared.isdigit()):
            raise InvalidUpload("The Content-Length header is not valid.")
        if int(declared) > body_limit:
            raise FileTooLarge(max_bytes)

    media_type, options = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data":
        raise InvalidUpload("The request must be multipart/form-data.")
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidUpload("The multipart boundary is missing.")

    reader = _Reader(field, max_bytes)
    try:
        try:
            parser = MultipartParser(boundary, reader.callbacks())
        except FormParserError as exc:
            raise InvalidUpload("The multipart boundary is not valid.") from exc
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise FileTooLarge(max_bytes)
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise InvalidUpload("The multipart body is malformed.") from exc
            await reader.flush()
            if parser.state == MultipartState.END:
                break
        parser.finalize()
        upload = reader.finish(parser)
        # Looked up at call time (tests wrap it). Not abandoned on cancellation: the file is
        # closed only once the thread is done with it.
        await anyio.to_thread.run_sync(
            verify_content, upload.file, upload.content_type, limiter=_verify_limiter
        )
        return upload
    except ClientDisconnect as exc:
        reader.file.close()
        raise InvalidUpload("The upload was interrupted.") from exc
    except BaseException:
        reader.file.close()
        raise
