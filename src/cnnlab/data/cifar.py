"""CIFAR-10 and CIFAR-100 from their canonical "python versions": `cifar-10-python.tar.gz` or
`cifar-10-batches-py/`, and `cifar-100-python.tar.gz` or `cifar-100-python/`.

Why a pickle reader lives here: cnnlab never unpickles model files (weights are safetensors), but
the CIFAR batch files *are* Python pickles by definition (dicts written by Python 2's cPickle).
Unpickling can run arbitrary code, so they are read with an allow-list: only the numpy functions
that rebuild an ndarray may be referenced; anything else is refused before it is called.

Each batch is {"data": uint8 (10000, 3072) with each row R, G, B planes of 32x32 (CHW order),
"labels": list of ints, ...}; `batches.meta` holds "label_names". Train is data_batch_1..5
(50,000 images), test is test_batch (10,000). Looked for in D/, D/cifar10/ and D/cifar-10/.

CIFAR-100 has one file per split, `train` (50,000) and `test` (10,000), each {"data": as above,
"fine_labels": 0..99, "coarse_labels": 0..19 (the 20 superclasses)}; `meta` holds
"fine_label_names" and "coarse_label_names". Looked for in D/, D/cifar100/ and D/cifar-100/.
"""

from __future__ import annotations

import io
import pickle  # only for the restricted unpickler below
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from cnnlab.data.arrays import ArrayDataset
from cnnlab.data.download import locate_or_download, one_line
from cnnlab.errors import CnnlabError

__all__ = ["load_cifar10", "load_cifar100", "find_cifar", "read_cifar_pickle", "CIFAR10_CLASSES",
           "CIFAR100_LABEL_MODES"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
META = "batches.meta"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_LABEL_MODES = ("fine", "coarse")  # 100 classes, or their 20 superclasses
_CIFAR100_CLASS_COUNTS = {"fine": 100, "coarse": 20}


@dataclass(frozen=True)
class _Layout:
    """Where one CIFAR dataset's files live and what they are called."""

    dataset: str  # the name errors and downloads use
    title: str  # the name in prose
    archive: str
    folder: str  # what the archive extracts to
    meta: str
    files: dict[str, list[str]]  # split -> batch files
    subfolders: tuple[str, ...]  # looked in below the data folder, after the data folder itself


_LAYOUTS = {
    "cifar10": _Layout("cifar10", "CIFAR-10", ARCHIVE, FOLDER, META, BATCHES, ("cifar10", "cifar-10")),
    "cifar100": _Layout("cifar100", "CIFAR-100", "cifar-100-python.tar.gz", "cifar-100-python", "meta",
                        {"train": ["train"], "test": ["test"]}, ("cifar100", "cifar-100")),
}


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
                          f"CIFAR batch files hold only arrays (re-download the file from a trusted source)")


def read_cifar_pickle(data: bytes, source: str) -> dict[str, Any]:
    """One CIFAR-10/100 batch or meta file's dict, read with the array-only unpickler; byte keys become str.

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
        raise CnnlabError(f"could not read {source} as a CIFAR batch file ({one_line(error)}); "
                          f"re-download it") from error
    if not isinstance(content, dict):
        raise CnnlabError(f"{source} holds a {type(content).__name__}, expected the dict of a CIFAR batch file")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}


def load_cifar10(split: str, data_dir: Path, download: bool) -> ArrayDataset:
    """CIFAR-10 split "train" (50,000) or "test" (10,000) as (N, 3, 32, 32) uint8.

    >>> load_cifar10("test", Path("~/.cache/cnnlab/datasets").expanduser(), True).images.shape  # doctest: +SKIP
    torch.Size([10000, 3, 32, 32])
    """
    layout = _LAYOUTS["cifar10"]
    names = layout.files[split]
    location, files = _locate_and_read(layout, split, data_dir, download)
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


def load_cifar100(split: str, data_dir: Path, download: bool, label_mode: str = "fine") -> ArrayDataset:
    """CIFAR-100 split "train" (50,000) or "test" (10,000) as (N, 3, 32, 32) uint8, labelled by
    `label_mode` "fine" (100 classes) or "coarse" (their 20 superclasses).

    >>> load_cifar100("test", Path("~/.cache/cnnlab/datasets").expanduser(), True).num_classes  # doctest: +SKIP
    100
    """
    if label_mode not in CIFAR100_LABEL_MODES:
        raise CnnlabError(f"CIFAR-100 label_mode must be 'fine' (100 classes) or 'coarse' (20 superclasses), "
                          f"got {label_mode!r}")
    layout, count, key = _LAYOUTS["cifar100"], _CIFAR100_CLASS_COUNTS[label_mode], f"{label_mode}_labels"
    (name,) = layout.files[split]
    location, files = _locate_and_read(layout, split, data_dir, download)
    source = f"{location}/{name}"
    data, labels = _batch_arrays(read_cifar_pickle(files[name], source), source, key, count, layout.title)
    images = data.copy().reshape(-1, 3, 32, 32)  # a writable copy; rows are R, G, B planes: CHW
    class_names = [str(i) for i in range(count)]
    if layout.meta in files:
        meta = read_cifar_pickle(files[layout.meta], f"{location}/{layout.meta}")
        listed = meta.get(f"{label_mode}_label_names", [])
        class_names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in listed]
        if len(class_names) != count:
            raise CnnlabError(f"{location}/{layout.meta}: expected {count} {label_mode}_label_names, "
                              f"got {len(class_names)}")
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels), class_names, name="cifar100")


def find_cifar(data_dir: Path, split: str, dataset: str = "cifar10") -> Path | None:
    """Where `dataset`'s ("cifar10" or "cifar100") files for `split` are under `data_dir`, without
    downloading: a complete extracted folder, else the archive; None when neither is there.

    >>> import tempfile; root = Path(tempfile.mkdtemp())
    >>> find_cifar(root, "test") is None
    True
    >>> (root / "cifar100").mkdir(); _ = (root / "cifar100" / "cifar-100-python.tar.gz").write_bytes(b"")
    >>> find_cifar(root, "test", "cifar100").relative_to(root).as_posix()
    'cifar100/cifar-100-python.tar.gz'
    """
    layout = _LAYOUTS[dataset]
    return _find(data_dir, layout.files[split], layout)


def _locate_and_read(layout: _Layout, split: str, data_dir: Path, download: bool) -> tuple[Path, dict[str, bytes]]:
    """The folder or archive holding `split`'s batch files (downloaded if allowed), and their bytes and the meta's."""
    names = layout.files[split]
    location = locate_or_download(
        layout.dataset, split, data_dir, download, find=lambda: _find(data_dir, names, layout),
        expected=[layout.archive], folder=data_dir,
        note=lambda: f" (or its extracted {layout.folder}/ with {', '.join(names)})"
                     + _partial_note(data_dir, names, layout))
    files = _read_files(location, [*names, layout.meta], layout.archive)
    missing = [n for n in names if n not in files]
    if missing:
        raise CnnlabError(f"{location} has no {', '.join(missing)}; it is not a complete {layout.title} archive, "
                          f"re-download {layout.archive}")
    return location, files


def _candidates(data_dir: Path, layout: _Layout) -> list[Path]:
    return [data_dir, *(data_dir / sub for sub in layout.subfolders)]


def _find(data_dir: Path, names: list[str], layout: _Layout) -> Path | None:
    """The first complete extracted folder, else the first archive (checked when it is read)."""
    for folder in _candidates(data_dir, layout):
        if all((folder / layout.folder / n).is_file() for n in names):
            return folder / layout.folder
    for folder in _candidates(data_dir, layout):
        if (folder / layout.archive).is_file():
            return folder / layout.archive
    return None


def _partial_note(data_dir: Path, names: list[str], layout: _Layout) -> str:
    for folder in _candidates(data_dir, layout):
        present = [n for n in names if (folder / layout.folder / n).is_file()]
        if present:
            missing = [n for n in names if n not in present]
            return f"; {folder / layout.folder} lacks {', '.join(missing)}"
    return ""


def _read_files(location: Path, names: list[str], archive_name: str) -> dict[str, bytes]:
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
                          f"re-download {archive_name}") from error
    return found


def _batch_arrays(batch: dict[str, Any], source: str, label_key: str = "labels", num_classes: int = 10,
                  title: str = "CIFAR-10") -> tuple[np.ndarray, np.ndarray]:
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.shape} {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CnnlabError(f"{source}: 'data' must be a uint8 array (N, 3072), got {got}; "
                          f"this is not a {title} batch file")
    if label_key not in batch:
        hint = (" (this looks like a CIFAR-100 file)" if "fine_labels" in batch
                else " (this looks like a CIFAR-10 file)" if "labels" in batch else "")
        raise CnnlabError(f"{source}: no {label_key!r} entry{hint}; expected a {title} batch file")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError) as error:
        raise CnnlabError(f"{source}: {label_key!r} are not integers ({one_line(error)})") from error
    top = num_classes - 1
    if labels.shape != (len(data),) or (len(data) and not 0 <= labels.min() <= labels.max() <= top):
        raise CnnlabError(f"{source}: expected {len(data)} {label_key} in 0..{top}, got shape {labels.shape} "
                          f"spanning {labels.min() if labels.size else '-'}..{labels.max() if labels.size else '-'}")
    return data, labels
