"""The iterators of `ImageDataGenerator.flow` and `.flow_from_directory`, as Keras's behave.

Each is a Sequence of batches (`len()`, `it[i]`) and an endless iterator (`next(it)` goes round and
reshuffles at every pass, as Keras's does; a `for` loop over one never ends). With a `seed`, batch
k's augmentation is drawn from seed + k, as Keras seeds NumPy. `fit` does not call them batch by
batch: `engine_feed` hands the engine the stored uint8 images plus the generator's batched
augmentation and standardization, which run on the training device.
"""

from __future__ import annotations

import copy
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cnnlab.data.arrays import ArrayDataset
from cnnlab.data.folders import load_image_files
from cnnlab.data.images import RESAMPLING
from cnnlab.data.streaming import FolderDataset
from cnnlab.errors import CnnlabError
from cnnlab.keras.image_dataset import CHANNELS, keras_file_index, nhwc_numpy
from cnnlab.keras.sources import Feed

if TYPE_CHECKING:
    from cnnlab.keras.preprocessing.image import ImageDataGenerator

__all__ = ["NumpyArrayIterator", "DirectoryIterator", "GeneratorInputs"]

WHITE_LIST_FORMATS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")  # Keras's, for flow_from_directory
CLASS_MODES = ("categorical", "binary", "sparse", "input", None)


class GeneratorInputs:
    """A batch (N, C, H, W) on the device -> the model input an ImageDataGenerator makes of it: the
    random augmentation (training subsets only), then its standardization. The engine's `normalize`."""

    def __init__(self, generator: ImageDataGenerator, augment: bool, bound: float) -> None:
        self.generator, self.augment, self.bound = generator, augment, bound

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.generator.augment(batch, self.bound) if self.augment else batch.to(torch.float32)
        return self.generator.standardize_batch(x)


class _Iterator:
    """Keras's `Iterator`: batches of `data` in a (re)shuffled order, transformed by the generator."""

    def __init__(self, data: ArrayDataset | FolderDataset, generator: ImageDataGenerator, batch_size: int,
                 shuffle: bool, seed: int | None, subset: str | None, bound: float) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CnnlabError(f"{type(self).__name__}: batch_size must be a positive integer; got {batch_size!r}")
        self.data, self.image_data_generator = data, generator
        self.n, self.batch_size, self.shuffle, self.seed = len(data), batch_size, bool(shuffle), seed
        self.subset = subset
        self.inputs = GeneratorInputs(generator, subset != "validation", bound)
        self.batch_index = self.total_batches_seen = 0
        self.index_array: np.ndarray | None = None
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _set_index_array(self) -> None:
        self.index_array = np.arange(self.n)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.total_batches_seen) \
                if self.seed is not None else None
            self.index_array = torch.randperm(self.n, generator=generator).numpy()

    def on_epoch_end(self) -> None:
        self._set_index_array()

    def reset(self) -> None:
        self.batch_index = 0

    def __getitem__(self, index: int) -> Any:
        if not isinstance(index, int) or not 0 <= index < len(self):
            raise CnnlabError(f"{type(self).__name__}: batch {index!r} is out of range; there are {len(self)} "
                              f"batches (0..{len(self) - 1})")
        if self.index_array is None:
            self._set_index_array()
        assert self.index_array is not None
        return self._batch(self.index_array[self.batch_size * index:self.batch_size * (index + 1)])

    def __iter__(self) -> _Iterator:
        return self

    def __next__(self) -> Any:
        with self.lock:  # Keras's endless walk: wrap round at the end, reshuffling
            if self.batch_index == 0:
                self._set_index_array()
            assert self.index_array is not None
            start = self.batch_index * self.batch_size
            self.batch_index = self.batch_index + 1 if self.n > start + self.batch_size else 0
            rows = self.index_array[start:start + self.batch_size]
        return self._batch(rows)

    def next(self) -> Any:
        return self.__next__()

    def _batch(self, rows: np.ndarray) -> Any:
        images, labels = _rows(self.data, rows)
        if self.seed is None:
            x = nhwc_numpy(self.inputs(images))
        else:  # Keras seeds batch k with seed + k; torch's global generator is left as it was
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + self.total_batches_seen)
                x = nhwc_numpy(self.inputs(images))
        self.total_batches_seen += 1
        return self._with_labels(x, rows, labels)

    def _with_labels(self, x: np.ndarray, rows: np.ndarray, labels: torch.Tensor) -> Any:
        raise NotImplementedError

    def _feed(self, labels: np.ndarray | None, where: str, sample_weights: np.ndarray | None = None) -> Feed:
        data = copy.copy(self.data)
        data.normalize = self.inputs
        return Feed(data, self.batch_size, self.shuffle, self.seed, labels, type(self).__name__, sample_weights)


def _rows(data: ArrayDataset | FolderDataset, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels at `rows`; a streamed folder decodes them now (undecodable files dropped)."""
    if isinstance(data, ArrayDataset):
        index = torch.as_tensor(rows, dtype=torch.long)
        return data.images[index], data.labels[index]
    part = data.subset(torch.as_tensor(rows, dtype=torch.long))
    found = list(part.batches(len(rows)))
    return found[0] if found else (torch.empty((0, data.channels, *data.size), dtype=torch.uint8),
                                   torch.empty(0, dtype=torch.int64))


class NumpyArrayIterator(_Iterator):
    """`ImageDataGenerator.flow(x, y)`: batches (x, y) or (x, y, sample_weight), or x alone without y.

    uint8 images, and float images holding whole values 0..255, are kept as uint8 (a quarter of the
    memory); others stay float32 as given. `subset="validation"` is the first `validation_split` of
    the arrays, "training" the rest (Keras's split, not fit's last-fraction one).

    >>> from cnnlab.keras.preprocessing.image import ImageDataGenerator
    >>> it = ImageDataGenerator().flow(np.zeros((5, 4, 4, 1), np.uint8), np.arange(5), batch_size=2, shuffle=False)
    >>> len(it), [y.tolist() for _, y in (next(it), next(it), next(it), next(it))]
    (3, [[0, 1], [2, 3], [4], [0, 1]])
    """

    def __init__(self, x: Any, y: Any, image_data_generator: ImageDataGenerator, batch_size: int = 32,
                 shuffle: bool = False, sample_weight: Any = None, seed: int | None = None,
                 subset: str | None = None, ignore_class_split: bool = False, **ignored: Any) -> None:
        where = "flow"
        if isinstance(x, (tuple, list)):
            raise CnnlabError(f"{where}: x must be one array of images (N, H, W, C); extra inputs "
                              f"(x, [misc]) are not supported")
        images = np.asarray(x)
        if images.ndim != 4 or images.dtype.kind not in "biuf":
            raise CnnlabError(f"{where}: x must be numeric images (N, H, W, C); got shape {images.shape} dtype "
                              f"{images.dtype} (add the channel axis with x[..., None])")
        labels = None if y is None else np.asarray(y)
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float32)
        for name, values in (("y", labels), ("sample_weight", weights)):
            if values is not None and len(values) != len(images):
                raise CnnlabError(f"{where}: x has {len(images)} images but {name} has {len(values)} entries; "
                                  f"give one per image")
        if subset is not None:
            images, labels, weights = _numpy_subset(images, labels, weights, image_data_generator, subset,
                                                    ignore_class_split)
        self.x, self.y, self.sample_weight = images, labels, weights
        stored = _stored_images(images)
        bound = 255.0 if stored.dtype == torch.uint8 or float(images.max(initial=0)) > 1.0 else 1.0
        data = ArrayDataset(stored, torch.from_numpy(_class_indices(labels, len(images))),
                            [str(i) for i in range(_num_classes(labels))], "flow")
        super().__init__(data, image_data_generator, batch_size, shuffle, seed, subset, bound)

    def _with_labels(self, x: np.ndarray, rows: np.ndarray, labels: torch.Tensor) -> Any:
        if self.y is None:
            return x
        out: tuple[Any, ...] = (x, self.y[rows])
        return out + (self.sample_weight[rows],) if self.sample_weight is not None else out

    def engine_feed(self, where: str) -> Feed:
        return self._feed(self.y, where, self.sample_weight)


def _numpy_subset(images: np.ndarray, labels: np.ndarray | None, weights: np.ndarray | None,
                  generator: ImageDataGenerator, subset: str,
                  ignore_class_split: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    split = generator._validation_split
    if subset not in ("training", "validation") or not split:
        raise CnnlabError(f"flow: subset={subset!r} needs ImageDataGenerator(validation_split=...) and must be "
                          f"'training' or 'validation'")
    cut = int(len(images) * split)
    if labels is not None and not ignore_class_split and not np.array_equal(np.unique(labels[:cut]),
                                                                             np.unique(labels[cut:])):
        raise CnnlabError("flow: the training and validation subsets hold different classes after the split (are "
                          "the arrays sorted by label?); shuffle them first, or pass ignore_class_split=True")
    part = slice(0, cut) if subset == "validation" else slice(cut, None)
    return images[part], None if labels is None else labels[part], None if weights is None else weights[part]


def _stored_images(images: np.ndarray) -> torch.Tensor:
    """(N, C, H, W): uint8 when the values are whole numbers 0..255 (exact), else float32 as given."""
    nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    if images.dtype == np.uint8:
        return torch.from_numpy(nchw.copy())
    values = nchw.astype(np.float32)
    if not np.isfinite(values).all():
        raise CnnlabError("flow: x contains NaN or infinite values; clean or drop those images")
    if values.size and values.min() >= 0 and values.max() <= 255 and np.array_equal(values, np.round(values)) \
            and values.max() > 1:
        return torch.from_numpy(values.astype(np.uint8))
    return torch.from_numpy(values)


def _class_indices(labels: np.ndarray | None, count: int) -> np.ndarray:
    """int64 class indices from Keras labels (one-hot rows or indices); zeros when there are none or they are
    not class labels (then `fit` fails on the labels with Keras's check)."""
    if labels is None or labels.dtype.kind not in "biuf":
        return np.zeros(count, dtype=np.int64)
    values = labels.argmax(1) if labels.ndim == 2 and labels.shape[1] > 1 else labels.reshape(count, -1)[:, 0]
    if not (np.isfinite(values).all() and (values >= 0).all() and (values == np.round(values)).all()):
        return np.zeros(count, dtype=np.int64)
    return values.astype(np.int64)


def _num_classes(labels: np.ndarray | None) -> int:
    if labels is not None and labels.ndim == 2 and labels.shape[1] > 1:
        return int(labels.shape[1])
    return int(_class_indices(labels, 0 if labels is None else len(labels)).max(initial=0)) + 1


class DirectoryIterator(_Iterator):
    """`ImageDataGenerator.flow_from_directory(directory)`: batches of a folder's images, labelled per `class_mode`.

    As Keras: classes are the sorted subfolders (or `classes`, in that order), `class_indices` maps
    names to indices, `filenames` ("class/file.png") and `classes` list the files class by class in
    sorted order, `filepaths` joins them to the folder; labels are one-hot float32 rows
    ("categorical"), float32 indices ("binary", "sparse"), the images ("input") or nothing (None).

    >>> import tempfile; from PIL import Image
    >>> from cnnlab.keras.preprocessing.image import ImageDataGenerator
    >>> root = Path(tempfile.mkdtemp())
    >>> import os; os.environ["CNNLAB_DATA"] = str(root / "cache")  # the example's decoded cache stays beside it
    >>> for name in ("dog/1.png", "cat/2.png", "cat/1.png"):
    ...     (root / name).parent.mkdir(exist_ok=True); Image.new("RGB", (4, 4)).save(root / name)
    >>> it = ImageDataGenerator(rescale=1 / 255).flow_from_directory(root, target_size=(4, 4), shuffle=False)
    Found 3 images belonging to 2 classes.
    >>> it.class_indices, it.filenames, it.classes.tolist(), next(it)[1].tolist()
    ({'cat': 0, 'dog': 1}, ['cat/1.png', 'cat/2.png', 'dog/1.png'], [0, 0, 1], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    """

    def __init__(self, directory: str | Path, image_data_generator: ImageDataGenerator,
                 target_size: tuple[int, int] = (256, 256), color_mode: str = "rgb", classes: list[str] | None = None,
                 class_mode: str | None = "categorical", batch_size: int = 32, shuffle: bool = True,
                 seed: int | None = None, subset: str | None = None, interpolation: str = "nearest",
                 keep_aspect_ratio: bool = False, **ignored: Any) -> None:
        where = "flow_from_directory"
        if class_mode not in CLASS_MODES:
            raise CnnlabError(f"{where}: class_mode={class_mode!r} is invalid; expected 'categorical', 'binary', "
                              f"'sparse', 'input' or None")
        if color_mode not in CHANNELS:
            raise CnnlabError(f"{where}: color_mode={color_mode!r} is invalid; expected 'grayscale', 'rgb' or 'rgba'")
        if interpolation not in RESAMPLING:
            raise CnnlabError(f"{where}: interpolation={interpolation!r} is invalid; expected one of "
                              f"{', '.join(RESAMPLING)}")
        size = (int(target_size[0]), int(target_size[1]))
        self.directory = str(directory)
        root = Path(directory).expanduser().resolve()
        files, labels, names = keras_file_index(root, classes, WHITE_LIST_FORMATS, where)
        files, labels = _directory_subset(files, labels, len(names), image_data_generator, subset)
        data = load_image_files(root, files, labels, names, CHANNELS[color_mode], size, interpolation=interpolation,
                                crop_to_aspect_ratio=keep_aspect_ratio, options=["keras-flow-from-directory"])
        skipped = set(data.skipped)
        kept = [(f, label) for f, label in zip(files, labels, strict=True) if str(f) not in skipped]
        self.filenames = [f.relative_to(root).as_posix() for f, _ in kept]
        self.classes = np.array([label for _, label in kept], dtype=np.int32)
        self.class_indices = {name: i for i, name in enumerate(names)}
        self.num_classes, self.samples = len(names), len(kept)
        self.class_mode, self.color_mode, self.target_size = class_mode, color_mode, size
        self.interpolation, self.keep_aspect_ratio = interpolation, keep_aspect_ratio
        self.image_shape = (*size, CHANNELS[color_mode])
        print(f"Found {self.samples} images belonging to {self.num_classes} classes.")
        super().__init__(data, image_data_generator, batch_size, shuffle, seed, subset, 255.0)

    @property
    def filepaths(self) -> list[str]:
        return [str(Path(self.directory) / name) for name in self.filenames]

    @property
    def labels(self) -> np.ndarray:
        return self.classes

    def _keras_labels(self, labels: np.ndarray) -> np.ndarray | None:
        if self.class_mode == "categorical":
            return np.eye(self.num_classes, dtype=np.float32)[labels]
        if self.class_mode in ("binary", "sparse"):
            return labels.astype(np.float32)
        return None

    def _with_labels(self, x: np.ndarray, rows: np.ndarray, labels: torch.Tensor) -> Any:
        if self.class_mode is None:
            return x
        if self.class_mode == "input":
            return x, x.copy()
        return x, self._keras_labels(labels.numpy())

    def engine_feed(self, where: str) -> Feed:
        if self.class_mode == "input":
            raise CnnlabError(f"{where}: class_mode='input' (images as targets, for autoencoders) is not supported by "
                              f"cnnlab's classifier engine; use 'categorical', 'sparse' or 'binary'")
        return self._feed(self._keras_labels(self.classes), where)


def _directory_subset(files: list[Path], labels: list[int], num_classes: int, generator: ImageDataGenerator,
                      subset: str | None) -> tuple[list[Path], list[int]]:
    """Keras's per-class split: validation is the first validation_split of each class's files, training the rest."""
    if subset is None:
        return files, labels
    split = generator._validation_split
    if subset not in ("training", "validation") or not split:
        raise CnnlabError(f"flow_from_directory: subset={subset!r} needs ImageDataGenerator(validation_split=...) "
                          f"and must be 'training' or 'validation'")
    kept_files: list[Path] = []
    kept_labels: list[int] = []
    for label in range(num_classes):
        mine = [f for f, k in zip(files, labels, strict=True) if k == label]
        start, stop = (0, int(split * len(mine))) if subset == "validation" else (int(split * len(mine)), len(mine))
        kept_files += mine[start:stop]
        kept_labels += [label] * (stop - start)
    return kept_files, kept_labels
