"""CIFAR-10 from its canonical "python version": `cifar-10-python.tar.gz` or `cifar-10-batches-py/`.

Why a pickle reader lives here: cnnlab never unpickles model files (weights are safetensors), but
the CIFAR-10 batch files *are* Python pickles by definition (dicts written by Python 2's cPickle).
Unpickling can run arbitrary code, so they are read with an allow-list: only the numpy functions
that rebuild an ndarray may be referenced; anything else is refused before it is called.

Each batch is {"data": uint8 (10000, 3072) with each row R, G, B planes of 32x32 (CHW order),
"labels": list of ints, ...}; `batches.meta` holds "label_names". Train is data_batch_1..5
(50,000 images), test is test_batch (10,000). Looked for in D/, D/cifar10/ and D/cifar-10/.
"""

from __future__ import annotations

import io
import pickle  # only for the restricted unpickler below
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from cnnlab.data.arrays import ArrayDataset
from cnnlab.data.download import locate_or_download, one_line
from cnnlab.errors import CnnlabError

__all__ = ["load_cifar10", "read_cifar_pickle", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
META = "batches.meta"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _numpy_core() -> Any:
    try:
        from numpy import _core as core  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy import core  # type: ignore[no-redef]
    return core


_CORE = _numpy_core()
# Everything an ndarray's pickle refers to, under numpy 1.x names (the canonical files) and 2.x names.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _CORE.multiarray._reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _CORE.multiarray.scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _CORE.numeric._frombuffer for core in ("core", "_core")},
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; refuses every other Python object."""

    def __init__(self, data: bytes, source: str) -> None:
        super().__init__(io.BytesIO(data), encoding="latin1")  # Python 2 str -> str, as the arrays need
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise CnnlabError(f"refusing to load {self.source}: it contains a Python object of type {module}.{name}; "
                          f"CIFAR-10 batch files hold only arrays (re-download the file from a trusted source)")


def read_cifar_pickle(data: bytes, source: str) -> dict[str, Any]:
    """One CIFAR-10 batch or meta file's dict, read with the array-only unpickler; byte keys become str.

    >>> read_cifar_pickle(Path("cifar-10-batches-py/test_batch").read_bytes(), "test_batch")["data"].shape
    ... # doctest: +SKIP
    (10000, 3072)
    """
    try:
        content = _ArraysOnlyUnpickler(data, source).load()
    except CnnlabError:
        raise
    # A damaged pickle fails in many ways (UnpicklingError, EOFError, ValueError, TypeError, ...).
    except Exception as error:
        raise CnnlabError(f"could not read {source} as a CIFAR-10 batch file ({one_line(error)}); "
                          f"re-download it") from error
    if not isinstance(content, dict):
        raise CnnlabError(f"{source} holds a {type(content).__name__}, expected the dict of a CIFAR-10 batch file")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}


def load_cifar10(split: str, data_dir: Path, download: bool) -> ArrayDataset:
    """CIFAR-10 split "train" (50,000) or "test" (10,000) as (N, 3, 32, 32) uint8.

    >>> load_cifar10("test", Path("~/.cache/cnnlab/datasets").expanduser(), True).images.shape  # doctest: +SKIP
    torch.Size([10000, 3, 32, 32])
    """
    names = BATCHES[split]
    location = locate_or_download(
        "cifar10", split, data_dir, download, find=lambda: _find(data_dir, names),
        expected=[ARCHIVE], folder=data_dir,
        note=lambda: f" (or its extracted {FOLDER}/ with {', '.join(names)})" + _partial_note(data_dir, names))
    files = _read_files(location, [*names, META])
    missing = [n for n in names if n not in files]
    if missing:
        raise CnnlabError(f"{location} has no {', '.join(missing)}; it is not a complete CIFAR-10 archive, "
                          f"re-download {ARCHIVE}")
    parts = [_batch_arrays(read_cifar_pickle(files[n], f"{location}/{n}"), f"{location}/{n}") for n in names]
    images = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)  # rows are R, G, B planes: CHW
    labels = np.concatenate([p[1] for p in parts])
    class_names = CIFAR10_CLASSES
    if META in files:
        meta = read_cifar_pickle(files[META], f"{location}/{META}")
        class_names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
        if len(class_names) != 10:
            raise CnnlabError(f"{location}/{META}: expected 10 label_names, got {class_names!r}")
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels), class_names, name="cifar10")


def _candidates(data_dir: Path) -> list[Path]:
    return [data_dir, data_dir / "cifar10", data_dir / "cifar-10"]


def _find(data_dir: Path, names: list[str]) -> Path | None:
    """The first complete extracted folder, else the first archive (checked when it is read)."""
    for folder in _candidates(data_dir):
        if all((folder / FOLDER / n).is_file() for n in names):
            return folder / FOLDER
    for folder in _candidates(data_dir):
        if (folder / ARCHIVE).is_file():
            return folder / ARCHIVE
    return None


def _partial_note(data_dir: Path, names: list[str]) -> str:
    for folder in _candidates(data_dir):
        present = [n for n in names if (folder / FOLDER / n).is_file()]
        if present:
            missing = [n for n in names if n not in present]
            return f"; {folder / FOLDER} lacks {', '.join(missing)}"
    return ""


def _read_files(location: Path, names: list[str]) -> dict[str, bytes]:
    """The named files' bytes from an extracted folder or, without extracting, from the tar.gz."""
    if location.is_dir():
        return {n: (location / n).read_bytes() for n in names if (location / n).is_file()}
    wanted, found = set(names), {}
    try:
        with tarfile.open(location, "r:*") as archive:
            for member in archive:  # one pass in archive order: a .tar.gz cannot seek back cheaply
                base = PurePosixPath(member.name).name
                if member.isfile() and base in wanted and base not in found:
                    extracted = archive.extractfile(member)
                    if extracted is not None:
                        found[base] = extracted.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise CnnlabError(f"could not read archive {str(location)!r} ({one_line(error)}); "
                          f"re-download {ARCHIVE}") from error
    return found


def _batch_arrays(batch: dict[str, Any], source: str) -> tuple[np.ndarray, np.ndarray]:
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.shape} {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CnnlabError(f"{source}: 'data' must be a uint8 array (N, 3072), got {got}; "
                          f"this is not a CIFAR-10 batch file")
    if "labels" not in batch:
        hint = " (this looks like CIFAR-100, which cnnlab does not read)" if "fine_labels" in batch else ""
        raise CnnlabError(f"{source}: no 'labels' entry{hint}; expected a CIFAR-10 batch file")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError) as error:
        raise CnnlabError(f"{source}: 'labels' are not integers ({one_line(error)})") from error
    if labels.shape != (len(data),) or (len(data) and not 0 <= labels.min() <= labels.max() <= 9):
        raise CnnlabError(f"{source}: expected {len(data)} labels in 0..9, got shape {labels.shape} "
                          f"spanning {labels.min() if labels.size else '-'}..{labels.max() if labels.size else '-'}")
    return data, labels
