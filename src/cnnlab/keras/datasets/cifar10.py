"""`cifar10.load_data()`: CIFAR-10 as Keras returns it, from whatever cnnlab's `load_dataset("cifar10")` reads.

The canonical files (`cifar-10-python.tar.gz` or `cifar-10-batches-py/`) come first, downloaded
when online. When they are not in the data folder but the JPEG image-folder copy is
(`cifar10-jpg.tar.gz`, or its extracted `cifar10-jpg/` with `train/<class>/` and `test/<class>/`,
in the data folder or `<data folder>/cifar10-jpg/`: the layout of ../shared/datasets), that copy
is read instead, with a warning: it is JPEG q75, so accuracies come out somewhat below those on the
original pixels. Its images are listed class by class; they are shuffled with a fixed seed, as
Keras's arrays are mixed, so `validation_split` (the last images) does not take one class only.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from cnnlab.data import default_data_dir, load_dataset
from cnnlab.data.cifar import CIFAR10_CLASSES, find_cifar
from cnnlab.errors import CnnlabError
from cnnlab.keras.datasets._load import Split, keras_arrays, load_builtin

__all__ = ["load_data", "find_jpeg_copy"]

JPEG_NAME = "cifar10-jpg"
# The permutation benchmarks/real_arrays.py applies to the same folder, so both give identical arrays.
JPEG_ORDER_SEED = 0


def load_data() -> tuple[Split, Split]:
    """CIFAR-10: x uint8 (50000, 32, 32, 3) / (10000, 32, 32, 3), y uint8 (N, 1) in 0..9.

    Classes: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse, 8 ship, 9 truck.

    >>> (x_train, y_train), (x_test, y_test) = load_data()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_train.shape, y_train.dtype  # doctest: +SKIP
    ((50000, 32, 32, 3), dtype('uint8'), (50000, 1), dtype('uint8'))
    """
    data_dir = default_data_dir()
    if find_cifar(data_dir, "train") is None or find_cifar(data_dir, "test") is None:
        copy = find_jpeg_copy(data_dir)
        if copy is not None:
            warnings.warn(f"cifar10.load_data: the canonical CIFAR-10 files are not in {data_dir}; reading the JPEG "
                          f"copy {copy} instead (lossy: accuracies come out somewhat below those on the original "
                          f"pixels). Put cifar-10-python.tar.gz in {data_dir} to use the original.", stacklevel=2)
            return _load_jpeg_copy(copy)
    return load_builtin("cifar10", column_labels=True)


def find_jpeg_copy(data_dir: Path) -> Path | None:
    """The CIFAR-10 image-folder copy under `data_dir`: an extracted `cifar10-jpg/` folder, else the
    `cifar10-jpg.tar.gz` archive (in `data_dir` or `data_dir/cifar10-jpg/`); None when there is none.

    >>> import tempfile; root = Path(tempfile.mkdtemp())
    >>> find_jpeg_copy(root) is None
    True
    >>> (root / "cifar10-jpg").mkdir(); _ = (root / "cifar10-jpg" / "cifar10-jpg.tar.gz").write_bytes(b"")
    >>> find_jpeg_copy(root).relative_to(root).as_posix()
    'cifar10-jpg/cifar10-jpg.tar.gz'
    """
    folder = data_dir / JPEG_NAME
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return folder
    for archive in (data_dir / f"{JPEG_NAME}.tar.gz", folder / f"{JPEG_NAME}.tar.gz"):
        if archive.is_file():
            return archive
    return None


def _load_jpeg_copy(path: Path) -> tuple[Split, Split]:
    parts = []
    for split in ("train", "test"):
        data = load_dataset(path, split=split, in_memory=True)  # an archive is extracted once into the data folder
        if data.class_names != CIFAR10_CLASSES:
            raise CnnlabError(f"{path}: class folders {data.class_names} are not CIFAR-10's {CIFAR10_CLASSES}; "
                              f"this is not the CIFAR-10 image-folder copy (remove it or fix its folders)")
        if tuple(data.input_shape) != (32, 32, 3):
            raise CnnlabError(f"{path}: images are {data.input_shape} (H, W, C), CIFAR-10's are (32, 32, 3); "
                              f"this is not the CIFAR-10 image-folder copy")
        x, y = keras_arrays(data, column_labels=True)
        order = np.random.default_rng(JPEG_ORDER_SEED).permutation(len(y))
        parts.append((x[order], y[order]))
    return parts[0], parts[1]
