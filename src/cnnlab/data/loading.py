"""`load_dataset`: a built-in dataset by name, or any folder with one subfolder per class.

Built-in datasets (all (N, C, H, W) uint8, 10 classes):

| name          | train  | test   | image   | files needed                                  |
|---------------|--------|--------|---------|-----------------------------------------------|
| digits        | 1,437  | 360    | 28x28x1 | none (scikit-learn's 8x8 digits, upscaled)    |
| mnist         | 60,000 | 10,000 | 28x28x1 | IDX files or mnist.npz                        |
| fashion-mnist | 60,000 | 10,000 | 28x28x1 | IDX files                                     |
| cifar10       | 50,000 | 10,000 | 32x32x3 | cifar-10-python.tar.gz or cifar-10-batches-py |

Files are read from the data folder: the `data_dir` argument, else $CNNLAB_DATA, else the user
cache folder (~/.cache/cnnlab/datasets on Linux); missing ones are downloaded with torchvision.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cnnlab.catalog import builtin_dataset, unknown_dataset
from cnnlab.data.archives import ARCHIVE_SUFFIXES, extract_archive, is_archive
from cnnlab.data.arrays import ArrayDataset, resize_images
from cnnlab.data.cache import DATA_DIR_ENV, default_data_dir, resolve_data_dir
from cnnlab.data.cifar import load_cifar10
from cnnlab.data.folders import load_image_folder
from cnnlab.data.idx import MNIST_CLASSES, load_mnist_like
from cnnlab.data.streaming import FolderDataset
from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.registry import Registry

__all__ = ["load_dataset", "dataset_names", "default_data_dir", "resolve_data_dir", "SPLITS", "DATA_DIR_ENV"]

SPLITS = ("train", "test")

Loader = Callable[[str, Path, bool], ArrayDataset]  # (split, data_dir, download) -> dataset
_BUILTIN: Registry[Loader] = Registry("dataset")  # one loader per catalog.DATASET_NAMES, in that order

# digits: 20% test, as the other built-ins hold out about a seventh; a fixed seed so every run,
# machine and library version sees the same 360 test images.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SEED = 0
DIGITS_SIZE = (28, 28)  # MNIST's size, so MNIST models train on digits unchanged


def dataset_names() -> list[str]:
    """The built-in dataset names.

    >>> dataset_names()
    ['digits', 'mnist', 'fashion-mnist', 'cifar10']
    """
    return _BUILTIN.names()


def load_dataset(name_or_path: str | Path, split: str = "train", data_dir: str | Path | None = None,
                 download: bool = True, image_size: tuple[int, int] | None = None,
                 in_memory: bool | None = None, cache: bool = True) -> ArrayDataset | FolderDataset:
    """A built-in dataset by name (see `dataset_names()`), a folder with one subfolder per class, or an archive of one.

    Names are case-insensitive. A `Path`, or a string that is not a built-in name, is read as a
    folder; a folder with `train/` and `test/` subfolders is split, `split` picks one. With
    `image_size` (H, W) all images are resized once, so small images can feed big models.
    A folder is decoded into memory (`ArrayDataset`) when its images fit MEMORY_BUDGET_BYTES,
    else streamed from disk (`FolderDataset`); `in_memory` True/False forces one. Built-in
    datasets are always in memory. Undecodable files in a folder are skipped and listed in `.skipped`.
    An archive (.tar.gz, .tgz, .tar, .zip) is extracted once into `<data_dir>/extracted/` and read
    as its folder. With `cache`, a decoded folder is saved in `<data_dir>/decoded/` and the next
    load of the unchanged folder reads that instead of decoding every image again.

    >>> data = load_dataset("digits", split="test")
    >>> len(data), data.input_shape, data.class_names[:3]
    (360, (28, 28, 1), ['0', '1', '2'])
    """
    if split not in SPLITS:
        raise CnnlabError(f"split must be 'train' or 'test', got {split!r}.{did_you_mean(str(split), SPLITS)}")
    size = _check_image_size(image_size)
    if in_memory is not None and not isinstance(in_memory, bool):
        raise CnnlabError(f"in_memory must be True, False or None (decide by size), got {in_memory!r}")
    builtin = builtin_dataset(name_or_path)
    if builtin is not None:
        data = _BUILTIN.get(builtin)(split, resolve_data_dir(data_dir), download)
        if size is not None and size != tuple(data.images.shape[2:]):
            data = ArrayDataset(resize_images(data.images, size), data.labels, data.class_names, data.name)
        return data
    path = Path(name_or_path).expanduser()
    if is_archive(path):
        path = extract_archive(path, resolve_data_dir(data_dir))
    if path.is_dir():
        return load_image_folder(path, split, size, in_memory, cache=cache, data_dir=data_dir)
    if path.exists():
        raise CnnlabError(f"dataset {str(path)!r} is a file but not an archive ({', '.join(ARCHIVE_SUFFIXES)}); give "
                          f"a folder with one subfolder per class, an archive of one, or a built-in name: "
                          f"{', '.join(dataset_names())}")
    raise unknown_dataset(name_or_path)  # the CLI refuses it before importing torch (cnnlab.catalog)


def _check_image_size(image_size: object) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if (isinstance(image_size, (tuple, list)) and len(image_size) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in image_size)):
        return int(image_size[0]), int(image_size[1])
    raise CnnlabError(f"image_size must be (height, width) in pixels, two positive integers, got {image_size!r}; "
                      f"e.g. image_size=(224, 224)")


def _load_digits(split: str, data_dir: Path, download: bool) -> ArrayDataset:
    """scikit-learn's 1,797 real 8x8 digits (0..16), as 28x28 uint8 with a fixed train/test split."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes about a second to import

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 16 -> 255
    images = resize_images(torch.from_numpy(pixels)[:, None], DIGITS_SIZE)  # (1797, 1, 28, 28)
    order = np.random.default_rng(DIGITS_SEED).permutation(len(pixels))
    split_at = int(len(order) * (1 - DIGITS_TEST_FRACTION))  # 1437 train, 360 test
    chosen = torch.from_numpy(order[:split_at] if split == "train" else order[split_at:])
    labels = torch.from_numpy(digits.target.astype(np.int64))
    return ArrayDataset(images[chosen], labels[chosen], list(MNIST_CLASSES), name="digits")


_BUILTIN.add("digits", _load_digits)
_BUILTIN.add("mnist", lambda split, data_dir, download: load_mnist_like("mnist", split, data_dir, download))
_BUILTIN.add("fashion-mnist",
             lambda split, data_dir, download: load_mnist_like("fashion-mnist", split, data_dir, download))
_BUILTIN.add("cifar10", load_cifar10)
