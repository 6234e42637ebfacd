"""Finding and decoding single image files with Pillow, the way Keras's `load_img` does.

Every decode goes through `read_pixels` (NumPy; `read_image` is its torch tensor), so EXIF rotation,
mode conversion and resizing are the same for folder datasets, prediction and serving; importing this
module imports no torch, so `cnnlab predict` with an ONNX model decodes without it. Every open goes
through `open_image`, the one gate for hostile files: only the decoders of IMAGE_FORMATS run (a
PostScript file named .png never reaches Ghostscript), and an image over the decode budget
(`max_image_pixels`) is refused from its header, before a single pixel is decoded (a 20 KB PNG can
claim 169 megapixels, which took `augment-preview` to 21.5 GB before this gate).
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from cnnlab.errors import CnnlabError, one_line

if TYPE_CHECKING:
    import torch

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_FORMATS", "GRAYSCALE_MODES", "RESAMPLING", "MAX_IMAGE_PIXELS",
           "PILLOW_PIXEL_LIMIT", "ImageTooLarge", "max_image_pixels", "set_max_image_pixels", "open_image",
           "list_images", "read_pixels", "read_image", "image_to_pixels", "image_to_tensor", "probe_image",
           "link_loop", "foreign_format"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})

# The Pillow decoders that may run: the formats IMAGE_EXTENSIONS (and the server's page) promise. Pillow
# picks a decoder by a file's content, not its name, and some of its ~40 plugins hand the file to other
# programs (EPS -> Ghostscript) or parse rarely audited formats; none of them may run on a file named .png.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF")

# The decode budget: pixels per image, read from the header and checked before decoding (the server's too). 40 MP:
# a 48 MP phone's default 12 MP photo with room to spare, and 120 MB as RGB
# (about 0.6 GB at the peak of a 16-bit image's conversion). A 1-bit PNG of 20 KB can claim 169 MP; decoded
# and augmented that reached 21.5 GB. `--max-image-pixels` (or `set_max_image_pixels`) raises it.
MAX_IMAGE_PIXELS = 40_000_000
# Pillow itself refuses images over twice its Image.MAX_IMAGE_PIXELS (178,956,970), whatever we allow.
PILLOW_PIXEL_LIMIT = 2 * int(Image.MAX_IMAGE_PIXELS or 0) or 178_956_970
_budget = {"max_pixels": MAX_IMAGE_PIXELS}  # the process's setting; read by every open_image

# Pillow modes that hold one intensity per pixel ("LA" is gray + alpha; "I;16*" are 16-bit PNG/TIFF).
GRAYSCALE_MODES: frozenset[str] = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# Keras's interpolation names (tf.image.resize and load_img) -> Pillow's filters. Pillow filters
# antialias when shrinking (tf.image.resize does not), so shrunk images differ from Keras's by a few levels.
RESAMPLING: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX, "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS, "lanczos3": Image.Resampling.LANCZOS, "lanczos5": Image.Resampling.LANCZOS}

# EXIF orientations 5..8 rotate by 90 degrees, so the decoded image has width and height swapped.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112


def list_images(path: str | Path) -> list[Path]:
    """Image files at `path`: a file gives [it]; a folder gives every image under it, sorted.

    Hidden files and folders (names starting with ".") are skipped, and only extensions in
    IMAGE_EXTENSIONS (any case) count, so stray .txt or .DS_Store files do no harm.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ["b.png", "a.JPG", ".hidden.png", "notes.txt"]:
    ...     _ = (root / name).write_bytes(b"")
    >>> [p.name for p in list_images(root)]
    ['a.JPG', 'b.png']
    """
    root = Path(path).expanduser()
    if root.exists() and not root.is_dir():  # a file, or a pipe/device that read_image refuses by name
        return [root]
    if not root.is_dir():
        raise CnnlabError(f"image path {str(root)!r} does not exist; give an image file or a folder of images")
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]  # prune hidden folders in place
        found.extend(Path(folder) / f for f in files
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    return sorted(found)


def link_loop(folder: str | Path) -> Path | None:
    """The target of `folder` when it is a symbolic link to itself or to a folder that contains it, else None.

    Walking such a link reads the containing folder again (os.walk does not follow links below
    the folder it starts at, so the repeat is bounded, but the images get a second label).

    >>> import tempfile; root = Path(tempfile.mkdtemp()); (root / "cat").mkdir()
    >>> (root / "dog").symlink_to(root); (root / "ok").symlink_to(root / "cat")
    >>> link_loop(root / "dog") == root.resolve(), link_loop(root / "ok"), link_loop(root / "cat")
    (True, None, None)
    """
    path = Path(folder)
    if not path.is_symlink():
        return None
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # Python 3.11 raises RuntimeError for a link that points at itself
        return path
    return target if path.parent.resolve().is_relative_to(target) else None


class ImageTooLarge(ValueError):
    """An image whose header claims more pixels than the decode budget allows; nothing was decoded."""

    def __init__(self, width: int, height: int, mode: str, limit: int) -> None:
        self.width, self.height, self.mode, self.limit = width, height, mode, limit
        decoded = width * height * _bytes_per_pixel(mode)
        super().__init__(f"too large: {width}x{height} = {width * height:,} pixels ({decoded / 1e6:,.0f} MB decoded, "
                         f"mode {mode}); the limit is {limit:,} pixels")


def max_image_pixels() -> int:
    """The decode budget of this process: the most pixels (width x height) an image may have to be decoded.

    >>> max_image_pixels() == MAX_IMAGE_PIXELS
    True
    """
    return _budget["max_pixels"]


def set_max_image_pixels(pixels: int | None, where: str = "set_max_image_pixels") -> int:
    """Set the decode budget (None: back to MAX_IMAGE_PIXELS) for every later open; return the old one.

    `where` names the setting in the error (the CLI passes its flag). The CLI sets it from
    `--max-image-pixels`; DataLoader workers get the value their dataset was built with.

    >>> old = set_max_image_pixels(100_000_000); max_image_pixels()
    100000000
    >>> _ = set_max_image_pixels(old)
    """
    value = MAX_IMAGE_PIXELS if pixels is None else pixels
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= PILLOW_PIXEL_LIMIT:
        raise CnnlabError(f"{where} must be a whole number of pixels in 1..{PILLOW_PIXEL_LIMIT:,} (Pillow refuses "
                          f"larger images whatever cnnlab allows), got {pixels!r}; e.g. {where} 100000000")
    old, _budget["max_pixels"] = _budget["max_pixels"], value
    return old


@contextmanager
def open_image(source: str | Path | IO[bytes], max_pixels: int | None = None) -> Iterator[Image.Image]:
    """Open an image with only IMAGE_FORMATS' decoders; refuse one over `max_pixels` from its header.

    Nothing is decoded here (Pillow reads headers on open, pixels on load()). `max_pixels` None
    means the process's budget, `max_image_pixels()`. Errors are Pillow's (UnidentifiedImageError
    for a file no allowed decoder recognises, which includes PostScript, TIFF, ...) or ImageTooLarge.

    >>> import io; buffer = io.BytesIO(); Image.new("RGB", (3000, 2000)).save(buffer, "PNG")
    >>> with open_image(buffer) as image: image.format, image.size
    ('PNG', (3000, 2000))
    >>> try:
    ...     with open_image(buffer, max_pixels=1_000_000): pass
    ... except ImageTooLarge as error: print(error)
    too large: 3000x2000 = 6,000,000 pixels (18 MB decoded, mode RGB); the limit is 1,000,000 pixels
    """
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if isinstance(source, (str, Path)):
        _check_regular_file(source)
    with warnings.catch_warnings():  # process-wide; in check-data's threads it can only hide this same warning
        # Pillow warns above its own 89 MP; the budget below decides instead, with one line naming the file.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(source, formats=IMAGE_FORMATS)
    with image:
        width, height = image.size
        if width * height > limit:
            raise ImageTooLarge(width, height, image.mode, limit)
        yield image


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow's decoded image holds per pixel: bands x bytes per band ("1" is a byte per pixel too)."""
    typestr = ImageMode.getmode(mode).typestr
    return Image.getmodebands(mode) * max(1, int(typestr[-1]) if typestr[-1].isdigit() else 1)


def read_pixels(path: str | Path, channels: int, size: tuple[int, int] | None = None,
                interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
                max_pixels: int | None = None) -> np.ndarray:
    """Decode one image file to a (C, H, W) uint8 NumPy array with `channels` 1 (gray), 3 (RGB) or 4 (RGBA).

    The image is turned upright by its EXIF orientation, converted (alpha is dropped unless
    channels is 4; palette, CMYK and 16-bit images are handled) and resized to `size` = (H, W)
    with `interpolation` (a RESAMPLING name), after cropping its centre to the aspect ratio of
    `size` when `crop_to_aspect_ratio` (Keras's option of the same name). The file is opened by
    `open_image`: allowed formats only, within `max_pixels` (None: `max_image_pixels()`).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "red.png"
    >>> Image.new("RGBA", (40, 30), "red").save(path)
    >>> read_pixels(path, channels=3).shape, read_pixels(path, channels=1, size=(224, 224)).dtype
    ((3, 30, 40), dtype('uint8'))
    """
    if channels not in (1, 3, 4):
        raise CnnlabError(f"read_image: channels must be 1 (grayscale), 3 (RGB) or 4 (RGBA), got {channels!r}")
    if size is not None and not (len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise CnnlabError(f"read_image: size must be (height, width), two positive integers, got {size!r}")
    if interpolation not in RESAMPLING:
        raise CnnlabError(f"read_image: interpolation={interpolation!r} is not one of {', '.join(RESAMPLING)}; "
                          f"e.g. interpolation='bilinear'")
    try:
        with open_image(path, max_pixels) as opened:
            return image_to_pixels(opened, channels, size, interpolation, crop_to_aspect_ratio)
    # Pillow's format plugins signal a bad file with OSError, SyntaxError, ValueError, struct.error
    # and others; any of them means the same thing to the user: this file cannot be read.
    except Exception as error:
        raise _decode_error(path, error) from error


def read_image(path: str | Path, channels: int, size: tuple[int, int] | None = None,
               interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
               max_pixels: int | None = None) -> torch.Tensor:
    """`read_pixels` as a (C, H, W) uint8 torch tensor (the same pixels, the same checks and errors).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "red.png"
    >>> Image.new("RGBA", (40, 30), "red").save(path)
    >>> read_image(path, channels=3).shape, read_image(path, channels=1, size=(224, 224)).shape
    (torch.Size([3, 30, 40]), torch.Size([1, 224, 224]))
    """
    import torch

    return torch.from_numpy(read_pixels(path, channels, size, interpolation, crop_to_aspect_ratio, max_pixels))


def image_to_pixels(image: Image.Image, channels: int, size: tuple[int, int] | None = None,
                    interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False) -> np.ndarray:
    """An opened Pillow image -> (C, H, W) uint8 NumPy array, the one decoding path for files and uploads alike.

    Upright by EXIF orientation, converted to `channels` (palette, CMYK, 16-bit handled; alpha
    dropped), resized to `size` = (H, W) bilinearly. Pillow's decoding errors propagate.

    >>> image_to_pixels(Image.new("RGB", (4, 2), (255, 0, 0)), channels=1).tolist()  # red in ITU-R 601 grey
    [[[76, 76, 76, 76], [76, 76, 76, 76]]]
    """
    image = ImageOps.exif_transpose(image)
    image.load()
    image = _convert(image, channels)
    if size is not None and (image.height, image.width) != tuple(size):
        box = aspect_crop_box(image.width, image.height, size) if crop_to_aspect_ratio else None
        image = image.resize((size[1], size[0]), RESAMPLING[interpolation], box=box)
    array = np.asarray(image, dtype=np.uint8)
    return (array[None] if array.ndim == 2 else array.transpose(2, 0, 1)).copy()  # (C, H, W), C-ordered and writable


def image_to_tensor(image: Image.Image, channels: int, size: tuple[int, int] | None = None,
                    interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False) -> torch.Tensor:
    """`image_to_pixels` as a (C, H, W) uint8 torch tensor.

    >>> image_to_tensor(Image.new("RGB", (4, 2), (255, 0, 0)), channels=1).tolist()  # red in ITU-R 601 grey
    [[[76, 76, 76, 76], [76, 76, 76, 76]]]
    """
    import torch

    return torch.from_numpy(image_to_pixels(image, channels, size, interpolation, crop_to_aspect_ratio))


def aspect_crop_box(width: int, height: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred box of `size`'s aspect ratio (H, W), as Keras crops it.

    >>> aspect_crop_box(640, 480, (224, 224))
    (80, 0, 560, 480)
    """
    crop_height = max(min(height, (width * size[0]) // size[1]), 1)
    crop_width = max(min(width, (height * size[1]) // size[0]), 1)
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return left, top, left + crop_width, top + crop_height


def probe_image(path: str | Path, max_pixels: int | None = None) -> tuple[str, tuple[int, int]]:
    """(Pillow mode, (H, W) once EXIF-rotated) read from the file header, without decoding pixels.

    A file `read_image` would refuse (a format not allowed, over `max_pixels`) is refused here too.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "wide.png"
    >>> Image.new("L", (640, 480)).save(path)
    >>> probe_image(path)
    ('L', (480, 640))
    """
    try:
        with open_image(path, max_pixels) as image:
            mode, (width, height) = image.mode, image.size
            if image.getexif().get(_EXIF_ORIENTATION_TAG, 1) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except Exception as error:  # same reasons as in read_image
        raise _decode_error(path, error) from error
    return mode, (height, width)


def _convert(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _wide_to_8bit(image)
    elif image.mode == "P":
        image = image.convert("RGBA")  # palette transparency is only honoured via RGBA
    return image.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])


def _wide_to_8bit(image: Image.Image) -> Image.Image:
    # Pillow's own I -> L conversion clips at 255, which turns 16-bit photos white; scale instead.
    values = np.asarray(image, dtype=np.float32)
    peak = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16") or peak > 255:
        values = values / 257.0  # 65535 -> 255
    elif image.mode == "F" and peak <= 1.0:
        values = values * 255.0  # float images in [0, 1]
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))  # 2-D uint8 -> mode "L"


class _NotAFile(OSError):
    """A path that names a FIFO, socket or device: opening it could block forever."""


def _check_regular_file(path: str | Path) -> None:
    # Pillow's open() on a named pipe waits for a writer forever; refuse anything but a regular file.
    # stat() follows symbolic links, so a dangling link or a link loop fails here with its errno.
    if not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path):
        raise _NotAFile(f"{path} is not a regular file")


def _decode_error(path: str | Path, error: BaseException) -> CnnlabError:
    """One line naming the file, why it failed and the fix (the fix depends on the reason)."""
    kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
    fix = f"expected a readable {', '.join(IMAGE_FORMATS)} image ({kinds}); replace or delete the file"
    if isinstance(error, FileNotFoundError):
        reason = "file not found" + (" (a symbolic link to a missing file)" if os.path.islink(path) else "")
    elif isinstance(error, IsADirectoryError):
        reason = "it is a folder"
    elif isinstance(error, OSError) and error.errno == errno.ELOOP:
        reason = "a symbolic link loop"
        fix = "remove the link or point it at an image"
    elif isinstance(error, PermissionError):
        reason = "permission denied"
        fix = "make it readable (chmod a+r) or delete it"
    elif isinstance(error, _NotAFile):
        reason = "not a regular file (a named pipe, socket or device)"
        fix = "remove it from the image folder"
    elif isinstance(error, ImageTooLarge):
        reason = str(error)
        fix = (f"downscale it, or raise the limit with --max-image-pixels (at most {PILLOW_PIXEL_LIMIT:,}; "
               f"in Python cnnlab.data.images.set_max_image_pixels)")
    elif isinstance(error, Image.DecompressionBombError):
        # Pillow refuses images above PILLOW_PIXEL_LIMIT itself, before the budget can look.
        reason = f"too large: {one_line(error)}"
        fix = f"downscale it below {max_image_pixels():,} pixels (Pillow's own limit is {PILLOW_PIXEL_LIMIT:,})"
    elif isinstance(error, UnidentifiedImageError) and (foreign := foreign_format(path)):
        reason = f"a {foreign} file, which cnnlab does not decode"
        fix = "convert it to PNG or JPEG (e.g. with Pillow or ImageMagick), or delete it"
    else:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
    return CnnlabError(f"could not decode image {str(path)!r} ({reason}); {fix}")


# First bytes of formats people keep images in that no IMAGE_FORMATS decoder reads (none of them is opened).
_FOREIGN_MAGIC = ((b"II*\0", "TIFF"), (b"MM\0*", "TIFF"), (b"%!PS", "PostScript"), (b"\xc5\xd0\xd3\xc6", "PostScript"),
                  (b"%PDF", "PDF"), (b"P4", "PBM"), (b"P5", "PGM"), (b"P6", "PPM"), (b"8BPS", "Photoshop"),
                  (b"\0\0\0\x0cjP  ", "JPEG 2000"), (b"\x00\x00\x01\x00", "ICO"))


def foreign_format(path: str | Path) -> str | None:
    """The name of a known image format outside IMAGE_FORMATS that `path` starts with, from its first bytes.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "scan.png"; _ = p.write_bytes(b"II*\\0rest")
    >>> foreign_format(p)
    'TIFF'
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIC/AVIF"
    return next((name for magic, name in _FOREIGN_MAGIC if head.startswith(magic)), None)
