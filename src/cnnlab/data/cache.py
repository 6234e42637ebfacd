"""The data folder, and the decoded-image cache kept in it.

An image folder small enough to decode into memory (see folders.MEMORY_BUDGET_BYTES) is saved
after its first decode as `<data_dir>/decoded/<key>.safetensors`: images uint8 (N, C, H, W),
labels int64, and class names, skipped files and image size as JSON strings in the safetensors
metadata (no pickle anywhere). The key hashes the folder's listing, so any added, removed or
rewritten image (its size or mtime changes) gives a new key and a fresh decode. A cache file that
cannot be read is ignored and rewritten; the cache never fails a load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cnnlab.data.arrays import ArrayDataset
from cnnlab.fileio import atomic_write, user_cache_folder

__all__ = ["default_data_dir", "resolve_data_dir", "folder_cache_key", "file_stamp", "read_decoded", "write_decoded",
           "decoded_cache_path", "DATA_DIR_ENV"]

DATA_DIR_ENV = "CNNLAB_DATA"

# Bumped when the cache layout or the decoding changes, so old files are never read as new ones.
CACHE_FORMAT = "cnnlab-decoded-v1"


def default_data_dir() -> Path:
    """$CNNLAB_DATA if set, else the user cache folder's `datasets` (e.g. ~/.cache/cnnlab/datasets).

    >>> default_data_dir().name   # doctest: +SKIP
    'datasets'
    """
    return user_cache_folder(DATA_DIR_ENV, "datasets")


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data folder to use: `data_dir` if given, else $CNNLAB_DATA, else the cache folder.

    >>> resolve_data_dir("/data")
    PosixPath('/data')
    """
    if data_dir is None or str(data_dir).strip() == "":
        return default_data_dir()
    return Path(data_dir).expanduser()


def folder_cache_key(folder: Path, files: list[Path], split: str, image_size: tuple[int, int] | None,
                     options: Sequence[object] = ()) -> str:
    """sha256 of the folder, the split, the requested size and every image's relative path, size and mtime.

    `options` (JSON-able) are whatever else decides the decoded arrays (forced channels, resampling,
    class order, given labels); the key of a plain folder load, without them, is unchanged.

    The channel count and the size images are resized to (when `image_size` is None) are computed
    from the files themselves, so the files' sizes and mtimes already cover them; leaving them out
    lets a cached load skip probing every header (1.3 s for CIFAR-10's 50,000 JPEGs).

    >>> import tempfile; folder = Path(tempfile.mkdtemp()); _ = (folder / "a.png").write_bytes(b"x")
    >>> key = folder_cache_key(folder, [folder / "a.png"], "train", None)
    >>> len(key), key == folder_cache_key(folder, [folder / "a.png"], "test", None)
    (64, False)
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_FORMAT, str(folder), split, image_size, *([list(options)] if options else [])])
                  .encode())
    for file in sorted(files):
        size, mtime = file_stamp(file)
        name = file.relative_to(folder).as_posix()
        # surrogateescape: a file name that is not UTF-8 (bytes on Linux) hashes as its raw bytes
        digest.update(f"\n{name}\t{size}\t{mtime}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def file_stamp(file: Path) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of `file`: what says it was rewritten; (-1, -1) when it cannot be
    read (a dangling or looping link: decoding skips it, and a key that covers its name still changes with it).

    >>> file_stamp(Path("/nonexistent.png"))
    (-1, -1)
    """
    try:
        stat = file.stat()
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def decoded_cache_path(data_dir: Path, key: str) -> Path:
    """Where the decoded arrays for `key` live: `<data_dir>/decoded/<key>.safetensors`."""
    return data_dir / "decoded" / f"{key}.safetensors"


def read_decoded(path: Path, name: str) -> ArrayDataset | None:
    """The dataset cached at `path`, or None when it is missing, truncated or not a cache file.

    >>> read_decoded(Path("/nonexistent/x.safetensors"), "x") is None
    True
    """
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
        with open(path, "rb") as handle:  # the metadata is not returned by load_file
            header_length = int.from_bytes(handle.read(8), "little")
            metadata = json.loads(handle.read(header_length))["__metadata__"]
        if metadata.get("format") != CACHE_FORMAT:
            return None
        images, labels = tensors["images"], tensors["labels"]
        if images.dtype != torch.uint8 or images.ndim != 4 or labels.dtype != torch.int64:
            return None
        return ArrayDataset(images, labels, json.loads(metadata["class_names"]), name=name,
                            skipped=json.loads(metadata["skipped"]))
    except Exception:
        # Anything wrong with a cache file (cut short by a full disk, edited, another format)
        # means "not cached": the caller decodes again and rewrites it.
        return None


def write_decoded(path: Path, data: ArrayDataset) -> None:
    """Save `data` at `path` atomically: a temporary file in the same folder, then os.replace.

    A process killed mid-write leaves only a stray temporary file, never a half cache file.
    """
    metadata = {"format": CACHE_FORMAT, "class_names": json.dumps(data.class_names),
                "skipped": json.dumps(data.skipped), "image_size": json.dumps(list(data.images.shape[2:]))}
    tensors = {"images": data.images.contiguous(), "labels": data.labels.contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata))
