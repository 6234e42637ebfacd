"""`ArrayDataset`: a whole dataset in memory as one (N, C, H, W) tensor plus labels.

Images stay uint8 (a quarter of the memory of float32; Fashion-MNIST train is 47 MB) and are
scaled to [0, 1] per batch by `float_images`, the one place normalization happens. Arrays from
elsewhere (Keras-style numpy, channels-last, 0..255 floats) enter through `from_arrays`, which
converts layout and scale once and explains what it could not understand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.batching import (
    Augment,
    check_augmented,
    check_batch_size,
    check_indices,
    check_labels,
    check_workers,
    split_point,
)
from cnnlab.errors import CnnlabError

__all__ = ["ArrayDataset", "float_images", "model_inputs", "resize_images", "Normalize"]

Normalize = Callable[[torch.Tensor], torch.Tensor]  # a batch (B, C, H, W) on the device -> the model's float input

CHANNEL_COUNTS = (1, 3, 4)  # grayscale, RGB, RGBA
ACCEPTED_SHAPES = "(N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4"


@dataclass
class ArrayDataset:
    """Images (N, C, H, W), integer labels (N,) and the class names the labels index.

    `images` is uint8 in 0..255, or float32 already scaled to about [0, 1]. `skipped` names the
    files of an image folder that were left out because they could not be decoded. `normalize`
    turns a batch into the model's input where it differs from `float_images` (x / 255): the Keras
    front end feeds raw 0..255 pixels, or an ImageDataGenerator's rescale and standardization.

    >>> data = ArrayDataset.from_arrays(np.zeros((4, 28, 28), np.uint8), [0, 1, 0, 1])
    >>> len(data), data.input_shape, data.class_names
    (4, (28, 28, 1), ['0', '1'])
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str = "arrays"
    skipped: list[str] = field(default_factory=list)  # files of a folder that could not be decoded
    normalize: Normalize | None = field(default=None, repr=False, compare=False)  # None: float_images

    def __post_init__(self) -> None:
        self.class_names = [str(c) for c in self.class_names]
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4:
            raise CnnlabError(f"{self.name}: images must be a 4-D (N, C, H, W) tensor, got "
                              f"{_describe(self.images)}; build the dataset with ArrayDataset.from_arrays")
        if self.images.dtype not in (torch.uint8, torch.float32, torch.float16):
            raise CnnlabError(f"{self.name}: images must be uint8 or float32 (float16: stored features), got "
                              f"{self.images.dtype}; "
                              f"build the dataset with ArrayDataset.from_arrays")
        check_labels(self.name, self.labels, len(self.images), self.class_names, "image")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C), the order Keras writes input shapes in."""
        _, c, h, w = self.images.shape
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ArrayDataset:
        """The samples at `indices`, in that order, with the same class names and skipped files.

        >>> ArrayDataset.from_arrays(np.zeros((5, 8, 8), np.uint8), [0, 1, 2, 3, 4]).subset([4, 0]).labels
        tensor([4, 0])
        """
        index = check_indices(indices, len(self), self.name, "subset")
        return ArrayDataset(self.images[index], self.labels[index], list(self.class_names), self.name,
                            list(self.skipped), self.normalize)

    def to(self, device: torch.device | str) -> ArrayDataset:
        """The same dataset with images and labels on `device` (a GPU keeps small datasets resident).

        >>> ArrayDataset.from_arrays(np.zeros((2, 4, 4), np.uint8), [0, 1]).to("cpu").images.device
        device(type='cpu')
        """
        return ArrayDataset(self.images.to(device), self.labels.to(device), list(self.class_names), self.name,
                            list(self.skipped), self.normalize)

    def split_last(self, fraction: float) -> tuple[ArrayDataset, ArrayDataset]:
        """(train, validation): the last `fraction` of samples in stored order, as Keras's `validation_split`.

        Keras splits at int(N * (1 - fraction)) before any shuffling, so the validation samples are
        always the same ones.

        >>> train, val = ArrayDataset.from_arrays(np.zeros((10, 8, 8), np.uint8), list(range(10))).split_last(0.2)
        >>> len(train), val.labels.tolist()
        (8, [8, 9])
        """
        split_at = split_point(len(self), fraction)
        everything = torch.arange(len(self))
        return self.subset(everything[:split_at]), self.subset(everything[split_at:])

    def batches(self, batch_size: int, order: torch.Tensor | None = None, augment: Augment | None = None,
                workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images (B, C, H, W), labels (B,)) batches, visiting samples in `order` (None: stored order).

        `augment` transforms each uint8 batch (a copy: the stored images never change); float
        images are yielded as they are. `workers` is accepted for the same call as
        `FolderDataset.batches` and ignored: slicing memory needs no worker processes.

        >>> data = ArrayDataset.from_arrays(np.zeros((5, 2, 2), np.uint8), [0, 1, 0, 1, 0])
        >>> [labels.tolist() for _, labels in data.batches(2, order=torch.tensor([4, 3, 2, 1, 0]))]
        [[0, 1], [0, 1], [0]]
        >>> next(data.batches(5, augment=lambda x: 255 - x))[0].unique().tolist()
        [255]
        """
        check_batch_size(batch_size)
        check_workers(workers)
        index = None if order is None else check_indices(order, len(self), self.name, "order")
        total = len(self) if index is None else len(index)
        for start in range(0, total, batch_size):
            rows = slice(start, start + batch_size) if index is None else index[start:start + batch_size]
            images, labels = self.images[rows], self.labels[rows]
            if augment is not None and images.dtype == torch.uint8:
                # A slice is a view of the stored images (tensor indexing copies): an in-place augment gets a copy.
                images = check_augmented(images, augment(images.clone() if index is None else images))
            yield images, labels

    @classmethod
    def from_arrays(cls, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor | Sequence[int],
                    class_names: Sequence[str] | None = None, name: str = "arrays") -> ArrayDataset:
        """Build a dataset from numpy arrays or tensors in the layouts Keras and PyTorch code use.

        Images may be (N, H, W), channels-last (N, H, W, C) or channels-first (N, C, H, W), with
        C in 1, 3, 4. uint8 stays uint8; other dtypes become float32, divided by 255 when the
        values go above 1.5 (0..255 data that was never scaled).

        >>> x = np.random.rand(6, 32, 32, 3).astype(np.float32)   # channels-last, already in [0, 1]
        >>> data = ArrayDataset.from_arrays(x, np.array([[0], [1], [2], [0], [1], [2]]), ["a", "b", "c"])
        >>> data.images.shape, data.images.dtype, data.labels.shape
        (torch.Size([6, 3, 32, 32]), torch.float32, torch.Size([6]))
        """
        image_tensor = _images_to_nchw(_as_numpy(images, "images"))
        label_tensor = _labels_to_int64(_as_numpy(labels, "labels"))
        if len(label_tensor) != len(image_tensor):
            raise CnnlabError(f"from_arrays: {len(image_tensor)} images but {len(label_tensor)} labels; "
                              f"give exactly one label per image")
        low, high = int(label_tensor.min()), int(label_tensor.max())
        if low < 0:
            raise CnnlabError(f"from_arrays: labels must be class indices >= 0, got a minimum of {low}; "
                              f"map your labels to 0..num_classes-1")
        if class_names is None:
            class_names = [str(i) for i in range(high + 1)]
        elif isinstance(class_names, str):
            raise CnnlabError(f"from_arrays: class_names must be a list of names, got the string {class_names!r}")
        elif high >= len(class_names):
            raise CnnlabError(f"from_arrays: labels go up to {high} but only {len(class_names)} class names were "
                              f"given; give one name per class (labels 0..{len(class_names) - 1})")
        names = [str(c) for c in class_names]
        if len(set(names)) != len(names):
            duplicates = sorted({c for c in names if names.count(c) > 1})
            raise CnnlabError(f"from_arrays: class_names repeat {duplicates}; give each class a distinct name")
        return cls(image_tensor, label_tensor, names, name)


def float_images(batch: torch.Tensor) -> torch.Tensor:
    """A batch as float32 in [0, 1]: uint8 is divided by 255, float is returned as float32.

    >>> float_images(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    tensor([[[[0., 1.]]]])
    """
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(255.0)
    if batch.is_floating_point():
        return batch.to(torch.float32)
    raise CnnlabError(f"float_images: expected uint8 (0..255) or float images, got {batch.dtype}; "
                      f"build datasets with ArrayDataset.from_arrays, which converts other dtypes")


def model_inputs(data: object, batch: torch.Tensor) -> torch.Tensor:
    """What the model gets for a batch of `data`: its `normalize` if it has one, else `float_images`.

    >>> data = ArrayDataset.from_arrays(np.full((1, 2, 2), 255, np.uint8), [0])
    >>> raw = ArrayDataset(data.images, data.labels, data.class_names, normalize=lambda b: b.float())
    >>> model_inputs(data, data.images).max().item(), model_inputs(raw, raw.images).max().item()
    (1.0, 255.0)
    """
    normalize = getattr(data, "normalize", None)
    return float_images(batch) if normalize is None else normalize(batch)


def resize_images(images: torch.Tensor, size: tuple[int, int], chunk: int = 1024) -> torch.Tensor:
    """(N, C, H, W) images resized to `size` = (H, W) with antialiased bilinear; uint8 stays uint8.

    Works `chunk` images at a time so upscaling 60,000 digits to 224x224 needs no float copy of the whole set.

    >>> resize_images(torch.full((2, 1, 8, 8), 255, dtype=torch.uint8), (28, 28)).unique().tolist()
    [255]
    """
    n, c, _, _ = images.shape
    out = torch.empty((n, c, *size), dtype=images.dtype)
    for start in range(0, n, chunk):
        part = images[start:start + chunk].to(torch.float32)
        part = F.interpolate(part, size=size, mode="bilinear", align_corners=False, antialias=True)
        if images.dtype == torch.uint8:
            part = part.round_().clamp_(0, 255)
        out[start:start + chunk] = part.to(images.dtype)
    return out


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    return f"{type(value).__name__} shape {tuple(shape)} dtype {dtype}" if shape is not None else type(value).__name__


def _as_numpy(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype != torch.float64:
            value = value.to(torch.float32)  # numpy has no bfloat16
        return value.numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise CnnlabError(f"from_arrays: {what} must be numeric, got dtype {array.dtype} "
                          f"(shape {array.shape}); pass a numeric numpy array or tensor")
    return array


def _images_to_nchw(images: np.ndarray) -> torch.Tensor:
    shape = tuple(images.shape)
    if images.ndim == 3:
        images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif images.ndim == 4 and shape[3] in CHANNEL_COUNTS:
        images = images.transpose(0, 3, 1, 2)  # channels-last -> (N, C, H, W)
    elif not (images.ndim == 4 and shape[1] in CHANNEL_COUNTS):
        raise CnnlabError(f"from_arrays: images have shape {shape}; expected {ACCEPTED_SHAPES}")
    if shape[0] == 0 or 0 in images.shape:
        raise CnnlabError(f"from_arrays: images are empty (shape {shape}); give at least one image")
    if images.dtype == np.uint8:
        return torch.from_numpy(np.array(images, order="C", copy=True))
    values = images.astype(np.float32)
    if not np.isfinite(values).all():
        raise CnnlabError("from_arrays: images contain NaN or infinite values; clean or drop those images")
    low, high = float(values.min()), float(values.max())
    if high > 255.5:
        raise CnnlabError(f"from_arrays: image values go up to {high:g}; expected 0..255 or 0..1 "
                          f"(rescale, e.g. 16-bit data / 257, before building the dataset)")
    # Keras tutorials scale with x / 255; data that skipped it (values up to 255) is scaled here.
    # Negative values mean the data is already standardized, so it is left alone.
    if high > 1.5 and low >= 0:
        values /= 255.0
    return torch.from_numpy(np.ascontiguousarray(values))


def _labels_to_int64(labels: np.ndarray) -> torch.Tensor:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        hint = "; for one-hot labels pass labels.argmax(1)" if labels.ndim == 2 else ""
        raise CnnlabError(f"from_arrays: labels must have shape (N,) or (N, 1), got {tuple(labels.shape)}{hint}")
    if len(labels) == 0:
        raise CnnlabError("from_arrays: labels are empty; give one integer label per image")
    if labels.dtype.kind == "f" and not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
        raise CnnlabError("from_arrays: labels must be whole class indices, got fractional or NaN values; "
                          "pass integer labels (class indices, not probabilities)")
    return torch.from_numpy(labels.astype(np.int64))
