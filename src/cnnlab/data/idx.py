"""MNIST and Fashion-MNIST from their canonical IDX files (gzip or raw) or Keras's `mnist.npz`.

IDX (http://yann.lecun.com/exdb/mnist/): a big-endian header `0x00 0x00 <type> <ndim>`, then
`ndim` uint32 sizes, then the values. Images are (N, 28, 28) uint8, labels (N,) uint8.

Where the files are looked for, in order, inside the data folder D:
    D/<name>/                          cnnlab's and Keras's fashion-mnist layout
    D/MNIST/raw/, D/FashionMNIST/raw/  torchvision's layout
    D/                                 the files themselves, or Keras's D/mnist.npz
"""

from __future__ import annotations

import gzip
import struct
import zipfile
import zlib
from math import prod
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.arrays import ArrayDataset
from cnnlab.data.download import locate_or_download, one_line
from cnnlab.errors import CnnlabError

__all__ = ["read_idx", "load_mnist_like", "MNIST_CLASSES", "FASHION_MNIST_CLASSES", "IDX_FILES"]

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_CLASSES = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}
_TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_NPZ_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}

# IDX type byte -> big-endian numpy dtype (the format's full table; MNIST uses only 0x08).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one IDX file (gzip-compressed or raw), in native byte order.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> _ = path.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 1]))  # uint8, 1-D, 3 values
    >>> read_idx(path)
    array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise CnnlabError(f"{str(path)!r} is not an IDX file (magic number 0x{raw[:4].hex() or 'empty'}, expected "
                          f"0x0000 + type byte + ndim, e.g. 0x00000803 for MNIST images); re-download it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CnnlabError(f"{str(path)!r} is truncated: its header needs {header} bytes, the file has {len(raw)}; "
                          f"re-download it")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        state = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise CnnlabError(f"{str(path)!r} is {state}: shape {shape} needs {expected} bytes of data, the file has "
                          f"{len(raw) - header}; re-download it")
    values = np.frombuffer(raw, dtype=dtype, count=prod(shape), offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def load_mnist_like(name: str, split: str, data_dir: Path, download: bool) -> ArrayDataset:
    """`mnist` or `fashion-mnist` split `split` ("train" or "test") from files under `data_dir`.

    >>> load_mnist_like("fashion-mnist", "test", Path("../shared/datasets"), False).images.shape  # doctest: +SKIP
    torch.Size([10000, 1, 28, 28])
    """
    image_stem, label_stem = IDX_FILES[split]
    files = locate_or_download(
        name, split, data_dir, download, find=lambda: _find(name, split, data_dir),
        expected=[f"{image_stem}.gz", f"{label_stem}.gz"], folder=data_dir / name,
        note=lambda: f" (or uncompressed, or {name}.npz)" + _partial_note(name, split, data_dir))
    if len(files) == 1:
        images, labels = _read_npz(files[0], split)
        source = str(files[0])
    else:
        images, labels = read_idx(files[0]), read_idx(files[1])
        source = f"{files[0]} and {files[1]}"
    _check(images, labels, source)
    return ArrayDataset(torch.from_numpy(images)[:, None], torch.from_numpy(labels.astype(np.int64)),
                        list(_CLASSES[name]), name=name)


def _search_folders(name: str, data_dir: Path) -> list[Path]:
    return [data_dir / name, data_dir / _TORCHVISION_FOLDERS[name] / "raw", data_dir]


def _find(name: str, split: str, data_dir: Path) -> list[Path] | None:
    """[images, labels] IDX files, or [npz], from the first folder that has them."""
    for folder in _search_folders(name, data_dir):
        pair = [_idx_file(folder, stem) for stem in IDX_FILES[split]]
        if pair[0] is not None and pair[1] is not None:
            return [pair[0], pair[1]]
        npz = folder / f"{name}.npz"
        if npz.is_file():
            return [npz]
    return None


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):  # raw first: no decompression
        if candidate.is_file():
            return candidate
    return None


def _partial_note(name: str, split: str, data_dir: Path) -> str:
    """' (found X in F, but not Y)' when one file of the pair is there, else ''."""
    image_stem, label_stem = IDX_FILES[split]
    for folder in _search_folders(name, data_dir):
        images, labels = _idx_file(folder, image_stem), _idx_file(folder, label_stem)
        if images is not None and labels is None:
            return f"; found {images.name} in {folder}, but not {label_stem}.gz"
        if labels is not None and images is None:
            return f"; found {labels.name} in {folder}, but not {image_stem}.gz"
    return ""


def _read_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            compressed = file.read(2) == b"\x1f\x8b"  # gzip magic, whatever the file is called
        if compressed:
            with gzip.open(path, "rb") as file:
                return file.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise CnnlabError(f"could not read {str(path)!r} ({one_line(error)}); re-download it") from error


def _read_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    image_key, label_key = _NPZ_KEYS[split]
    try:
        with np.load(path, allow_pickle=False) as archive:  # never unpickle: npz arrays need no Python objects
            if image_key not in archive or label_key not in archive:
                raise CnnlabError(f"{str(path)!r} has arrays {sorted(archive.files)}, expected {image_key} and "
                                  f"{label_key} (Keras's mnist.npz layout)")
            return archive[image_key], archive[label_key]
    except CnnlabError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise CnnlabError(f"could not read {str(path)!r} ({one_line(error)}); re-download it") from error


def _check(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 3:
        raise CnnlabError(f"{source}: images must be (N, H, W) uint8, got {images.shape} {images.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
        raise CnnlabError(f"{source}: expected {len(images)} integer labels (N,), got {labels.shape} {labels.dtype}; "
                          f"the image and label files do not belong together")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise CnnlabError(f"{source}: labels span {int(labels.min())}..{int(labels.max())}, expected 0..9")
