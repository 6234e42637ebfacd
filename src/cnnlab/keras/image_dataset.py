"""`keras.utils.image_dataset_from_directory` on cnnlab's folder loading, and the dataset it returns.

Keras 3 lists the files (class folders sorted, each walked in sorted order), shuffles the list
with `np.random.RandomState(seed)` and keeps its last `int(validation_split * N)` files for
validation; so does this, so a seed picks the same training and validation files as in Keras.
Decoding is cnnlab's (`load_image_files`: Pillow, once into the uint8 cache where the folder fits
in memory, else streamed by DataLoader workers). Pixels differ from Keras's (TensorFlow's decoders)
by little: PNGs at their own size are equal; Imagenette's 224x224 JPEGs differ by 0.8 levels on
average (at most 5: another IDCT); shrunk to 100x120 by 4.5 on average, more at sharp edges
(Pillow antialiases when shrinking, tf.image.resize does not). Measured 2026-12-06, Keras 3.15.1.

The dataset yields Keras's batches (float32 NHWC images in 0..255, labels per `label_mode`) and
has the tf.data methods the tutorials call. `fit`, `evaluate` and `predict` do not iterate it:
they hand its uint8 images to the engine (`engine_feed`), which trains at its own speed.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.arrays import ArrayDataset
from cnnlab.data.folders import load_image_files
from cnnlab.data.streaming import FolderDataset
from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.keras.sources import Feed
from cnnlab.models.symbolic import KerasArray

__all__ = ["image_dataset_from_directory", "DirectoryDataset", "keras_file_index", "KERAS_FORMATS", "AUTOTUNE",
           "nhwc_numpy", "KerasArray"]

KERAS_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # Keras 3's ALLOWLIST_FORMATS
CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}
LABEL_MODES = ("int", "categorical", "binary", None)
# tf.image.resize's methods; Pillow has no Gaussian or Mitchell filter.
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5")
AUTOTUNE = -1  # tf.data.AUTOTUNE's value: prefetch(buffer_size=AUTOTUNE)

Engine = ArrayDataset | FolderDataset
MapFn = Callable[..., Any]


def keras_file_index(directory: Path, class_names: Sequence[str] | None, formats: tuple[str, ...],
                     where: str) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) in Keras's order: class folders sorted (or as given), each walked
    in sorted folder order with its files sorted, extensions in `formats` (any case).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("b/2.png", "b/1.PNG", "a/x/3.jpg", "a/0.jpg", "a/notes.txt"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True); _ = (root / name).write_bytes(b"")
    >>> files, labels, names = keras_file_index(root, None, KERAS_FORMATS, "example")
    >>> [f.relative_to(root).as_posix() for f in files], labels, names
    (['a/0.jpg', 'a/x/3.jpg', 'b/1.PNG', 'b/2.png'], [0, 0, 1, 1], ['a', 'b'])
    """
    if not directory.is_dir():
        raise CnnlabError(f"{where}: directory {str(directory)!r} does not exist; give a folder with one "
                          f"subfolder per class")
    folders = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is not None:
        if isinstance(class_names, str) or not set(class_names) <= set(folders):
            raise CnnlabError(f"{where}: class_names={class_names!r} must name subfolders of {str(directory)!r} "
                              f"(it has {folders}); leave class_names out to use them all, sorted")
        folders = [str(c) for c in class_names]
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(folders):
        found = _walk(directory / name, formats)
        files += found
        labels += [label] * len(found)
    return files, labels, folders


def _walk(folder: Path, formats: tuple[str, ...]) -> list[Path]:
    """Files under `folder` as Keras lists them: os.walk sorted by folder path, files sorted in each."""
    out = []
    for root, _, names in sorted(os.walk(folder), key=lambda entry: entry[0]):
        out += [Path(root) / n for n in sorted(names) if n.lower().endswith(formats)]
    return out


def image_dataset_from_directory(directory: str | Path, labels: Any = "inferred", label_mode: str | None = "int",
                                 class_names: Sequence[str] | None = None, color_mode: str = "rgb",
                                 batch_size: int | None = 32, image_size: Sequence[int] = (256, 256),
                                 shuffle: bool = True, seed: int | None = None, validation_split: float | None = None,
                                 subset: str | None = None, interpolation: str = "bilinear",
                                 follow_links: bool = False, crop_to_aspect_ratio: bool = False,
                                 verbose: bool = True, **ignored: Any) -> Any:
    """Keras 3's `image_dataset_from_directory`: a `DirectoryDataset` of (images, labels) batches
    (a tuple of two for `subset="both"`), printing "Found N files belonging to K classes.".

    >>> import tempfile; from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> os.environ["CNNLAB_DATA"] = str(root / "cache")  # the example's decoded-image cache stays beside it
    >>> for name in ("cat", "dog"):
    ...     (root / name).mkdir()
    ...     for i in range(5):
    ...         Image.new("RGB", (8, 8), "white" if name == "dog" else "black").save(root / name / f"{i}.png")
    >>> train, val = image_dataset_from_directory(root, image_size=(8, 8), batch_size=4, seed=1,
    ...                                           validation_split=0.2, subset="both")
    Found 10 files belonging to 2 classes.
    Using 8 files for training.
    Using 2 files for validation.
    >>> images, labels = next(iter(train))
    >>> train.class_names, len(train), images.shape, images.dtype, labels.dtype
    (['cat', 'dog'], 2, (4, 8, 8, 3), dtype('float32'), dtype('int32'))
    """
    where = "image_dataset_from_directory"
    if ignored.get("pad_to_aspect_ratio") or ignored.get("data_format") not in (None, "channels_last"):
        raise CnnlabError(f"{where}: pad_to_aspect_ratio and data_format='channels_first' are not supported; use "
                          f"crop_to_aspect_ratio=True, and channels-last images (cnnlab.keras's only layout)")
    if label_mode is None:  # Keras: no labels at all, the folder walked as one
        labels = None
    size = _checked_arguments(where, labels, label_mode, class_names, color_mode, batch_size, image_size,
                              interpolation, validation_split, subset, shuffle, seed)
    root = Path(directory).expanduser().resolve()
    if _inferred(labels):
        files, label_list, names = keras_file_index(root, class_names, KERAS_FORMATS, where)
    else:
        files, names = _walk(root, KERAS_FORMATS), ["0"]
        label_list = [0] * len(files) if labels is None else _explicit_labels(labels, len(files), where)
        if labels is not None:  # Keras names them by value; indices 0..max keep one-hot rows aligned
            names = [str(v) for v in range(max(label_list, default=0) + 1)]
    if verbose:
        print(f"Found {len(files)} files belonging to {len(names)} classes." if labels is not None
              else f"Found {len(files)} files.")
    if not files:
        raise CnnlabError(f"{where}: no images found in {str(root)!r}; allowed formats: {', '.join(KERAS_FORMATS)}")
    if label_mode == "binary" and len(names) != 2:
        raise CnnlabError(f"{where}: label_mode='binary' needs exactly 2 classes, found {len(names)} ({names}); "
                          f"use label_mode='int' or 'categorical'")
    if seed is None:
        seed = int(np.random.randint(1_000_000))  # as Keras: the shuffled file list and the epochs' order follow it
    order = np.arange(len(files))
    if shuffle:  # Keras shuffles paths and labels with two RandomState(seed) generators: the same permutation
        np.random.RandomState(seed).shuffle(order)
    data = load_image_files(root, files, [label_list[i] for i in range(len(files))], names, CHANNELS[color_mode],
                            size, interpolation=interpolation.lower(), crop_to_aspect_ratio=crop_to_aspect_ratio,
                            options=["keras-image-dataset", None if labels is None else list(label_list)])
    data, paths = _reorder(data, files, order)
    mode = None if labels is None else label_mode

    def make(rows: range, shuffled: bool) -> DirectoryDataset:
        return DirectoryDataset(data.subset(rows), batch_size, mode, shuffled, seed,
                                names if labels is not None else None, paths[rows.start:rows.stop])

    if not validation_split:
        return make(range(len(data)), shuffle)
    val_count = int(validation_split * len(data))
    if val_count == 0 or val_count == len(data):
        raise CnnlabError(f"{where}: validation_split={validation_split} of {len(data)} files leaves "
                          f"{'no validation' if val_count == 0 else 'no training'} files; use a fraction that "
                          f"gives both subsets at least one file")
    train = make(range(len(data) - val_count), shuffle)
    val = make(range(len(data) - val_count, len(data)), False)
    if subset in ("training", "both"):
        print(f"Using {len(data) - val_count} files for training.")
    if subset in ("validation", "both"):
        print(f"Using {val_count} files for validation.")
    return {"training": train, "validation": val, "both": (train, val)}[str(subset)]


def _inferred(labels: Any) -> bool:
    return isinstance(labels, str) and labels == "inferred"


def _reorder(data: Engine, files: list[Path], order: np.ndarray) -> tuple[Engine, list[str]]:
    """`data` (decoded in listing order, minus skipped files) in Keras's shuffled order of `files`, with
    the file of each row in `file_paths`."""
    skipped = set(data.skipped)
    rows = [str(f) for f in files if str(f) not in skipped]  # the decoded rows follow the listing
    position = {p: i for i, p in enumerate(rows)}
    kept = [str(files[i]) for i in order if str(files[i]) in position]
    return data.subset([position[p] for p in kept]), kept


def _checked_arguments(where: str, labels: Any, label_mode: Any, class_names: Any, color_mode: Any, batch_size: Any,
                       image_size: Any, interpolation: Any, validation_split: Any, subset: Any, shuffle: Any,
                       seed: Any) -> tuple[int, int]:
    """Keras's argument checks, each failing with one line; returns image_size as (height, width)."""
    if not (_inferred(labels) or labels is None or isinstance(labels, (list, tuple, np.ndarray))):
        raise CnnlabError(f"{where}: labels must be 'inferred', None or a list of integer labels (one per file, in "
                          f"sorted path order); got {labels!r}")
    if not _inferred(labels) and class_names is not None:
        raise CnnlabError(f"{where}: class_names can only be given with labels='inferred'; drop class_names")
    if label_mode not in LABEL_MODES:
        close = did_you_mean(str(label_mode), ["int", "categorical", "binary"])
        raise CnnlabError(f"{where}: label_mode={label_mode!r} is invalid.{close} Expected 'int', 'categorical', "
                          f"'binary' or None")
    if color_mode not in CHANNELS:
        raise CnnlabError(f"{where}: color_mode={color_mode!r} is invalid; expected 'grayscale', 'rgb' or 'rgba'")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise CnnlabError(f"{where}: batch_size must be a positive integer (or None for single images); "
                          f"got {batch_size!r}")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if (not isinstance(image_size, (list, tuple)) or len(image_size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)):
        raise CnnlabError(f"{where}: image_size must be (height, width), two positive integers; got {image_size!r}")
    if str(interpolation).lower() not in INTERPOLATIONS:
        raise CnnlabError(f"{where}: interpolation={interpolation!r} is not supported; expected one of "
                          f"{', '.join(INTERPOLATIONS)} (gaussian and mitchellcubic have no Pillow filter)")
    if validation_split and not (isinstance(validation_split, (int, float)) and 0 < validation_split < 1):
        raise CnnlabError(f"{where}: validation_split must be between 0 and 1; got {validation_split!r}")
    if subset not in ("training", "validation", "both", None):
        raise CnnlabError(f"{where}: subset={subset!r} is invalid; expected 'training', 'validation' or 'both'")
    if bool(validation_split) != (subset is not None):
        raise CnnlabError(f"{where}: give validation_split and subset together (e.g. validation_split=0.2, "
                          f"subset='training'), or neither")
    if validation_split and shuffle and seed is None:
        raise CnnlabError(f"{where}: validation_split with shuffle needs a seed, so that the training and validation "
                          f"subsets do not overlap; pass the same seed=123 to both calls")
    return int(image_size[0]), int(image_size[1])


def _explicit_labels(labels: Any, count: int, where: str) -> list[int]:
    values = np.asarray(labels)
    if values.ndim != 1 or values.dtype.kind not in "iu" or (len(values) and values.min() < 0):
        raise CnnlabError(f"{where}: labels must be a list of integers >= 0, one per file; got {labels!r}")
    if len(values) != count:
        raise CnnlabError(f"{where}: {len(values)} labels given but {count} files were found; give one label per "
                          f"file, in sorted path order")
    return [int(v) for v in values]


def nhwc_numpy(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) tensor -> float32 (B, H, W, C) NumPy, values unchanged (uint8 becomes 0..255 floats).

    >>> nhwc_numpy(torch.full((1, 3, 2, 4), 255, dtype=torch.uint8)).shape
    (1, 2, 4, 3)
    """
    return images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()


def keras_labels(labels: torch.Tensor, label_mode: str | None, num_classes: int) -> np.ndarray | None:
    """Class indices as Keras's `label_mode` gives them: int32 (N,), one-hot float32 (N, K), float32 (N, 1).

    >>> keras_labels(torch.tensor([1, 0]), "categorical", 3).tolist(), keras_labels(torch.tensor([1]), "binary", 2)
    ([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], array([[1.]], dtype=float32))
    """
    index = labels.cpu().numpy()
    if label_mode == "int":
        return index.astype(np.int32)
    if label_mode == "categorical":
        return np.eye(num_classes, dtype=np.float32)[index]
    if label_mode == "binary":
        return index.astype(np.float32)[:, None]
    return None


class DirectoryDataset:
    """Keras's batched dataset from `image_dataset_from_directory`: iterate for (images, labels) NumPy
    batches (images float32 (B, H, W, C) in 0..255); `class_names`, `file_paths`, `len()` (batches) and
    the tf.data methods the tutorials chain: `take`, `cache`, `prefetch`, `map`, `shuffle`, `unbatch`.

    A shuffled dataset draws a new order each time it is iterated (from its seed, so runs repeat).
    `take(n)` and `skip(n)` select fixed batches of the stored order (which Keras's seed already
    shuffled): `ds.take(k)` and `ds.skip(k)` never overlap, even when `ds` shuffles, where tf.data
    would draw both from a new shuffle on every pass (the transfer-learning tutorial's test split
    then overlaps its validation split). `map(fn)` calls fn(images, labels) on NumPy batches; a map
    given to `fit` must keep labels and image shape (checked on the first batch), as the engine
    trains on its own integer labels.

    >>> from cnnlab.data import ArrayDataset
    >>> data = ArrayDataset(torch.zeros(10, 3, 4, 4, dtype=torch.uint8), torch.arange(10) % 2, ["a", "b"])
    >>> ds = DirectoryDataset(data, 4, "int", False, 0, ["a", "b"], [f"{i}.png" for i in range(10)])
    >>> len(ds), len(ds.take(2)), len(ds.skip(1)), [y.tolist() for _, y in ds.skip(2)]
    (3, 2, 2, [[0, 1]])
    """

    def __init__(self, data: Engine, batch_size: int | None, label_mode: str | None, shuffle: bool, seed: int,
                 class_names: list[str] | None, file_paths: list[str]) -> None:
        self.data, self.batch_size, self.label_mode = data, batch_size, label_mode
        self._shuffle, self.seed, self.class_names = shuffle, seed, class_names
        self.file_paths = file_paths
        self._maps: list[MapFn] = []
        self._rows = range(len(data))  # the samples take/skip kept, in stored order
        self._epoch = 0

    def __repr__(self) -> str:
        h, w, c = self.data.input_shape
        return (f"<DirectoryDataset batches={len(self)}, images=(None, {h}, {w}, {c}) float32, "
                f"label_mode={self.label_mode!r}>")

    def _copy(self, **changes: Any) -> DirectoryDataset:
        other = copy.copy(self)
        other._maps = list(self._maps)
        for key, value in changes.items():
            setattr(other, key, value)
        return other

    def __len__(self) -> int:
        return math.ceil(len(self._rows) / (self.batch_size or 1))

    def cardinality(self) -> int:
        """The number of batches, as tf.data's `cardinality()` (a plain int here)."""
        return len(self)

    def take(self, count: int) -> DirectoryDataset:
        """The first `count` batches (-1: all), as tf.data's take."""
        _check_count(count, "take")
        return self._copy(_rows=self._rows if count == -1 else self._rows[:count * (self.batch_size or 1)])

    def skip(self, count: int) -> DirectoryDataset:
        """All but the first `count` batches (-1: none), as tf.data's skip."""
        _check_count(count, "skip")
        return self._copy(_rows=self._rows[len(self._rows):] if count == -1 else
                          self._rows[count * (self.batch_size or 1):])

    def cache(self, filename: str = "", name: str | None = None) -> DirectoryDataset:
        """The same dataset: cnnlab already decoded the folder once (into its uint8 cache) where it fits."""
        return self

    def prefetch(self, buffer_size: int | None = None, name: str | None = None) -> DirectoryDataset:
        """The same dataset: the engine overlaps loading and training itself (accepts tf.data.AUTOTUNE or an int)."""
        if buffer_size is not None and (isinstance(buffer_size, bool) or not isinstance(buffer_size, int)
                                        or buffer_size < -1):
            raise CnnlabError(f"prefetch: buffer_size must be an integer (or AUTOTUNE); got {buffer_size!r}")
        return self

    def shuffle(self, buffer_size: int, seed: int | None = None, reshuffle_each_iteration: bool = True,
                name: str | None = None) -> DirectoryDataset:
        """The dataset in a new random order every iteration (the whole dataset, whatever `buffer_size`)."""
        return self._copy(_shuffle=True, seed=self.seed if seed is None else int(seed))

    def map(self, map_func: MapFn, num_parallel_calls: int | None = None, deterministic: bool | None = None,
            name: str | None = None) -> DirectoryDataset:
        """`map_func(images, labels) -> (images, labels)` on every NumPy batch (images alone without labels)."""
        if not callable(map_func):
            raise CnnlabError(f"map: map_func must be a function of (images, labels); got {type(map_func).__name__}")
        other = self._copy()
        other._maps.append(map_func)
        return other

    def unbatch(self) -> UnbatchedDataset:
        """The same samples one by one: (image (H, W, C), label)."""
        return UnbatchedDataset(self)

    def as_numpy_iterator(self) -> NumpyIterator:
        """An iterator with tf.data's `.next()` as well as Python's `next()`."""
        return NumpyIterator(iter(self))

    def __iter__(self) -> Iterator[Any]:
        for images, labels in self.data.batches(self.batch_size or 1, self._order()):
            yield self._keras_batch(images, labels)

    def _order(self) -> torch.Tensor:
        rows = torch.arange(self._rows.start, self._rows.stop, dtype=torch.long)
        if not self._shuffle:
            return rows
        self._epoch += 1  # each iteration its own order, repeatable from the seed
        generator = torch.Generator().manual_seed(self.seed * 1000 + self._epoch)
        return rows[torch.randperm(len(rows), generator=generator)]

    def _keras_batch(self, images: torch.Tensor, labels: torch.Tensor) -> Any:
        x = nhwc_numpy(images)
        y = keras_labels(labels, self.label_mode, self.data.num_classes)
        if self.batch_size is None:
            x, y = x[0], None if y is None else y[0]
        for fn in self._maps:
            out = fn(x) if y is None else fn(x, y)
            x, y = (out, None) if y is None else out
            x = np.asarray(x)  # a layer called in a map (Rescaling) gives a tensor; the next map and user get NumPy
        x = np.asarray(x).view(KerasArray)
        return x if y is None else (x, np.asarray(y).view(KerasArray))

    # ------------------------------------------------------------------ the engine's view
    def engine_feed(self, where: str) -> Feed:
        """The uint8 images for the engine, fed to the model as Keras does: 0..255 floats, then the maps."""
        data = copy.copy(self.data) if len(self._rows) == len(self.data) else self.data.subset(self._rows)
        data.normalize = _MappedInputs(self._maps) if self._maps else _raw_pixels
        if not len(data):
            raise CnnlabError(f"{where}: the dataset is empty (take/skip left no batches)")
        if self._maps:
            self._check_maps(where)
        labels = keras_labels(data.labels, self.label_mode, self.data.num_classes)
        return Feed(data, self.batch_size or 1, self._shuffle, self.seed, labels, "dataset")

    def _check_maps(self, where: str) -> None:
        images, labels = next(self.data.batches(self.batch_size or 1, self._order()[:self.batch_size or 1]))
        x = nhwc_numpy(images)
        y = keras_labels(labels, self.label_mode, self.data.num_classes)
        for fn in self._maps:
            out = fn(x) if y is None else fn(x, y)
            new_x, new_y = (out, None) if y is None else out
            if y is not None and not np.array_equal(np.asarray(new_y), y):
                raise CnnlabError(f"{where}: a map() function changes the labels, which fit cannot follow (it trains "
                                  f"on the folder's class indices); map only the images: lambda x, y: (f(x), y)")
            if np.shape(new_x) != x.shape:
                raise CnnlabError(f"{where}: a map() function changes the image shape from {x.shape} to "
                                  f"{np.shape(new_x)}; resize with image_size= or a Resizing layer in the model")
            x = np.asarray(new_x, dtype=np.float32)


def _raw_pixels(batch: torch.Tensor) -> torch.Tensor:
    """Keras feeds decoded images as 0..255 floats (no division by 255: a Rescaling layer or map does it)."""
    return batch.to(torch.float32)


class _MappedInputs:
    """The dataset's map functions on each batch: to NumPy (B, H, W, C), through the maps, back to the device."""

    def __init__(self, maps: list[MapFn]) -> None:
        self.maps = maps

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = nhwc_numpy(batch)
        dummy = np.zeros(len(x), dtype=np.int32)  # checked in _check_maps: the maps leave labels alone
        for fn in self.maps:
            x = np.asarray(fn(x, dummy)[0], dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(batch.device)


def _check_count(count: object, what: str) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < -1:
        raise CnnlabError(f"{what}: count must be a whole number of batches (-1 for all); got {count!r}")


class NumpyIterator:
    """tf.data's NumPy iterator: `next(it)` and `it.next()`."""

    def __init__(self, batches: Iterator[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> NumpyIterator:
        return self

    def __next__(self) -> Any:
        return next(self.batches)

    def next(self) -> Any:
        return next(self.batches)


class UnbatchedDataset:
    """A dataset's samples one at a time, as tf.data's `unbatch()`; `batch(n)` batches them again."""

    def __init__(self, batched: DirectoryDataset) -> None:
        self.batched = batched

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batched:
            if isinstance(batch, tuple):
                yield from zip(*batch, strict=True)
            else:
                yield from batch

    def __len__(self) -> int:
        return len(self.batched._rows)

    def batch(self, batch_size: int, drop_remainder: bool = False) -> DirectoryDataset:
        if drop_remainder:
            raise CnnlabError("batch: drop_remainder=True is not supported; the last batch keeps the rest")
        return self.batched._copy(batch_size=batch_size)

    def take(self, count: int) -> list[Any]:
        """The first `count` samples, as a list (enough for the tutorials' previews)."""
        out: list[Any] = []
        for sample in self:
            if len(out) >= count:
                break
            out.append(sample)
        return out
