"""Reading uploaded images safely: bounded body, in-memory multipart, checked before decoding.

Every way an upload can be wrong ends in an `UploadError` with an HTTP status (4xx) and a
one-line reason, never a server error. Nothing is written to disk: the body is read into
memory up to `max_bytes`, multipart parts stay in memory, and images are decoded from bytes.
The pixel count is read from the image header and checked before any pixel is decoded, which
stops decompression bombs (a few KB of PNG that would decode to gigabytes).
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from cnnlab.data.images import IMAGE_FORMATS as FORMATS  # the one allow-list of decoders, shared with the CLI
from cnnlab.data.images import image_to_tensor  # the same decoding as files get (EXIF, palette, CMYK, 16-bit)
from cnnlab.errors import one_line

__all__ = ["UploadError", "Upload", "FORMATS", "read_body", "parse_uploads", "decode_upload", "probe_upload",
           "decode_pixels"]

_MAGIC = (b"\xff\xd8", b"\x89PNG", b"GIF8", b"BM")  # first bytes of JPEG, PNG, GIF, BMP (WebP: RIFF....WEBP)


class UploadError(Exception):
    """A request the server refuses: `status` is the HTTP status, the message one line for the client;
    `retry_after` (seconds) is sent as a Retry-After header with a 503."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


@dataclass
class Upload:
    filename: str
    data: bytes


class _InMemoryParser(MultiPartParser):
    spool_max_size = 1 << 62  # uploads never roll over into temporary files


async def read_body(stream: AsyncIterator[bytes], content_length: str | None, max_bytes: int) -> bytes:
    """The whole request body, refusing (413) more than `max_bytes` before and while reading it."""
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise UploadError(413, f"request body is {int(content_length):,} bytes; the limit is {max_bytes:,} bytes "
                               f"(send fewer or smaller images)")
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > max_bytes:
            raise UploadError(413, f"request body is over the limit of {max_bytes:,} bytes "
                                   f"(send fewer or smaller images)")
    return bytes(body)


async def parse_uploads(content_type: str | None, body: bytes, max_files: int) -> list[Upload]:
    """The files of a multipart/form-data body (any field name), checked for count and emptiness."""
    if not content_type or content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise UploadError(415, f"content type is {content_type or 'missing'!r}; send images as "
                               f"multipart/form-data file fields named 'files'")
    if not body:
        raise UploadError(400, "request body is empty; send one or more images as multipart 'files' fields")

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    parser = _InMemoryParser(Headers({"content-type": content_type}), chunks(), max_files=max_files,
                             max_fields=8, max_part_size=1 << 16)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        reason = str(exc).rstrip(".")
        if "too many files" in reason.lower():
            raise UploadError(413, f"too many files: at most {max_files} images per request") from None
        raise UploadError(400, f"malformed multipart body ({reason}); send images as multipart 'files' "
                               f"fields") from None
    uploads: list[Upload] = []
    for name, value in form.multi_items():
        if not isinstance(value, UploadFile):
            raise UploadError(400, f"form field {name[:40]!r} is not a file; send images as file fields "
                                   f"named 'files'")
        uploads.append(Upload(_safe_name(value.filename), await value.read()))
    if not uploads:
        raise UploadError(400, "no files in the request; send one or more images as multipart 'files' fields")
    return uploads


def decode_upload(upload: Upload, channels: int, size: tuple[int, int], max_pixels: int) -> torch.Tensor:
    """Decode one uploaded image to uint8 (channels, H, W) at the model's `size` = (H, W).

    >>> buf = io.BytesIO(); Image.new("RGB", (64, 48), "white").save(buf, "PNG")
    >>> decode_upload(Upload("w.png", buf.getvalue()), 1, (28, 28), 10_000).shape
    torch.Size([1, 28, 28])
    >>> try:
    ...     decode_upload(Upload("w.png", buf.getvalue()), 1, (28, 28), 1_000)
    ... except UploadError as e:
    ...     print(e.status, e)
    413 image 'w.png' is 64x48 = 3,072 pixels; the limit is 1,000 pixels (resize it first)
    """
    probe_upload(upload, max_pixels)
    return decode_pixels(upload, channels, size)


def probe_upload(upload: Upload, max_pixels: int) -> int:
    """The image's pixel count, read from its header only and refused (413) over `max_pixels`.

    >>> buf = io.BytesIO(); Image.new("L", (64, 48)).save(buf, "PNG")
    >>> probe_upload(Upload("w.png", buf.getvalue()), 10_000)
    3072
    """
    name = upload.filename
    if not upload.data:
        raise UploadError(400, f"file {name!r} is empty; send the image's bytes")
    try:
        with Image.open(io.BytesIO(upload.data), formats=FORMATS) as probe:  # reads the header only
            width, height = probe.size
    except Image.DecompressionBombError:  # over twice Pillow's own limit: refused before we can look
        raise UploadError(413, f"image {name!r} has too many pixels; the limit is {max_pixels:,}") from None
    except UnidentifiedImageError:
        if upload.data.startswith(_MAGIC) or upload.data[8:12] == b"WEBP":
            raise UploadError(400, f"image {name!r} is damaged or truncated (its header cannot be read)") from None
        raise UploadError(415, f"file {name!r} is not a JPEG, PNG, WebP, BMP or GIF image; "
                               f"send one of those formats") from None
    except Exception as exc:  # Pillow's plugins raise many types for a damaged header
        raise UploadError(400, f"image {name!r} cannot be read ({_reason(exc)}); it is damaged or "
                               f"truncated") from None
    if width * height > max_pixels:
        raise UploadError(413, f"image {name!r} is {width}x{height} = {width * height:,} pixels; the limit is "
                               f"{max_pixels:,} pixels (resize it first)")
    return width * height


def decode_pixels(upload: Upload, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Decode an upload that `probe_upload` accepted to uint8 (channels, H, W) at `size` = (H, W).

    >>> buf = io.BytesIO(); Image.new("RGB", (64, 48), "white").save(buf, "PNG")
    >>> decode_pixels(Upload("w.png", buf.getvalue()), 3, (8, 8)).shape
    torch.Size([3, 8, 8])
    """
    try:
        return _decode(upload.data, channels, size)
    except MemoryError:  # the machine, not the image: the client may retry later
        raise UploadError(503, f"the server ran out of memory decoding {upload.filename!r}; retry later",
                          retry_after=5) from None
    except Exception as exc:  # same reasons as probe_upload's, met while decoding the pixels
        raise UploadError(400, f"image {upload.filename!r} cannot be decoded ({_reason(exc)}); it is damaged or "
                               f"truncated") from None


def _decode(data: bytes, channels: int, size: tuple[int, int]) -> torch.Tensor:
    # The steps of cnnlab.data.read_image (EXIF rotation, the same mode conversion, bilinear resize),
    # on bytes in memory: read_image takes paths only.
    with Image.open(io.BytesIO(data), formats=FORMATS) as opened:
        return image_to_tensor(opened, channels, size)


def _reason(exc: BaseException) -> str:
    """Pillow's error with its type (its messages alone can be as short as 'broken data stream')."""
    return f"{type(exc).__name__}: {one_line(exc, 140)}"


def _safe_name(filename: str | None) -> str:
    """The client's file name, only for echoing back: no folders, printable, at most 100 characters."""
    base = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in base)[:100]
    return cleaned or "upload"
