"""`FolderDataset`: an image folder too big for memory, decoded batch by batch while training.

It has the surface of `ArrayDataset` (labels, class names, input shape, `subset`, `split_last`,
`batches`) but keeps only file paths; `batches` decodes them with `read_image` in a torch
DataLoader, in `workers` background processes. A file that stops decoding mid-epoch (a disk
error, a file replaced while training) is dropped from its batch by `collate_decodable` and named
in `skipped_during_training`, so one bad file costs one sample, not the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from cnnlab.data.batching import (
    Augment,
    check_augmented,
    check_batch_size,
    check_indices,
    check_labels,
    check_workers,
    split_point,
)
from cnnlab.data.images import max_image_pixels, read_image
from cnnlab.errors import CnnlabError

__all__ = ["FolderDataset", "DecodedFiles", "collate_decodable"]

# One decoded sample: (C, H, W) uint8, or None when the file could not be decoded; label; path.
Decoded = tuple[torch.Tensor | None, int, str]


@dataclass(repr=False)
class FolderDataset:
    """Image files (N paths) with int64 labels (N,), decoded to (channels, *size) uint8 when batched.

    Built by `load_dataset(folder, in_memory=False)` (or automatically for big folders).
    `skipped` names files left out when the folder was read; `skipped_during_training` names
    files that failed to decode in `batches` (each once; shared with subsets, so the dataset you
    loaded also sees what failed while training a `split_last` part of it).

    >>> import tempfile; from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for i, color in enumerate(["red", "blue", "red"]):
    ...     Image.new("RGB", (8, 6), color).save(root / f"{i}.png")
    >>> data = FolderDataset(sorted(root.glob("*.png")), torch.tensor([0, 1, 0]), ["red", "blue"], 3, (6, 8))
    >>> [(images.shape, labels.tolist()) for images, labels in data.batches(2)]
    [(torch.Size([2, 3, 6, 8]), [0, 1]), (torch.Size([1, 3, 6, 8]), [0])]
    """

    paths: list[Path]
    labels: torch.Tensor
    class_names: list[str]
    channels: int
    size: tuple[int, int]  # (H, W) every image is resized to
    name: str = "folder"
    skipped: list[str] = field(default_factory=list)
    skipped_during_training: list[str] = field(default_factory=list)
    # How a uint8 batch becomes the model's input; None: float_images (see ArrayDataset.normalize)
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False, compare=False)
    interpolation: str = "bilinear"  # resampling filter of read_image (Keras's interpolation names)
    crop_to_aspect_ratio: bool = False  # centre-crop to size's aspect ratio before resizing (Keras's option)

    def __post_init__(self) -> None:
        self.paths = [Path(p) for p in self.paths]
        self.class_names = [str(c) for c in self.class_names]
        check_labels(self.name, self.labels, len(self.paths), self.class_names, "path")
        if self.channels not in (1, 3, 4):
            raise CnnlabError(f"{self.name}: channels must be 1 (grayscale), 3 (RGB) or 4 (RGBA), "
                              f"got {self.channels!r}")
        if not (len(self.size) == 2 and all(isinstance(v, int) and v > 0 for v in self.size)):
            raise CnnlabError(f"{self.name}: size must be (height, width), two positive integers, got {self.size!r}")
        self.size = (int(self.size[0]), int(self.size[1]))

    def __repr__(self) -> str:
        h, w = self.size
        return (f"FolderDataset(name={self.name!r}, files={len(self)}, classes={self.num_classes}, "
                f"image={self.channels}x{h}x{w}, skipped={len(self.skipped)})")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C), the order Keras writes input shapes in."""
        return self.size[0], self.size[1], self.channels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> FolderDataset:
        """The files at `indices`, in that order, with the same class names, image shape and skip lists.

        >>> data = FolderDataset(["a.png", "b.png", "c.png"], torch.tensor([0, 1, 1]), ["x", "y"], 1, (4, 4))
        >>> [p.name for p in data.subset([2, 0]).paths]
        ['c.png', 'a.png']
        """
        index = check_indices(indices, len(self), self.name, "subset")
        return FolderDataset([self.paths[i] for i in index.tolist()], self.labels[index], list(self.class_names),
                             self.channels, self.size, self.name, list(self.skipped), self.skipped_during_training,
                             self.normalize, self.interpolation, self.crop_to_aspect_ratio)

    def split_last(self, fraction: float) -> tuple[FolderDataset, FolderDataset]:
        """(train, validation): the last `fraction` of files in stored order, as Keras's `validation_split`.

        >>> data = FolderDataset([f"{i}.png" for i in range(10)], torch.zeros(10, dtype=torch.long), ["a"], 1, (4, 4))
        >>> [len(part) for part in data.split_last(0.2)]
        [8, 2]
        """
        split_at = split_point(len(self), fraction)
        everything = torch.arange(len(self))
        return self.subset(everything[:split_at]), self.subset(everything[split_at:])

    def batches(self, batch_size: int, order: torch.Tensor | None = None, augment: Augment | None = None,
                workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images uint8 (B, C, H, W), labels int64 (B,)) batches, decoding files in `order` (None: stored order).

        `augment` runs on each sample (as a batch of one) where it is decoded, in the worker
        processes when `workers` > 0. Files that fail to decode are left out of their batch and
        recorded in `skipped_during_training`; a batch whose files all fail is not yielded.

        >>> data = FolderDataset(["missing.png"], torch.tensor([0]), ["a"], 1, (4, 4))
        >>> list(data.batches(8)), data.skipped_during_training
        ([], ['missing.png'])
        """
        check_batch_size(batch_size)
        check_workers(workers)
        index = check_indices(order, len(self), self.name, "order")
        files = DecodedFiles(self.paths, self.labels, self.channels, self.size, augment, self.interpolation,
                             self.crop_to_aspect_ratio)
        loader = DataLoader(files, batch_sampler=BatchSampler(index.tolist(), batch_size, drop_last=False),
                            num_workers=workers, collate_fn=collate_decodable,
                            pin_memory=torch.cuda.is_available(), persistent_workers=False)
        for images, labels, dropped in loader:
            for path in dropped:
                if path not in self.skipped_during_training:
                    self.skipped_during_training.append(path)
            if len(labels):
                yield images, labels


class DecodedFiles(Dataset[Decoded]):
    """The map-style torch Dataset behind `FolderDataset.batches`: item i is (image or None, label, path).

    Paths are kept in one numpy bytes array, not a list of Python strings: forked DataLoader
    workers touch every object's reference count when they read it, which copies the pages of a
    list of strings into each worker (pytorch/pytorch#13246); a numpy array has one object.

    >>> DecodedFiles(["missing.png"], torch.tensor([1]), 3, (8, 8))[0]
    (None, 1, 'missing.png')
    """

    def __init__(self, paths: Sequence[str | Path], labels: torch.Tensor, channels: int, size: tuple[int, int],
                 augment: Augment | None = None, interpolation: str = "bilinear",
                 crop_to_aspect_ratio: bool = False) -> None:
        self.paths = np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)
        self.labels = labels.numpy().copy()
        self.channels, self.size, self.augment = channels, size, augment
        self.interpolation, self.crop_to_aspect_ratio = interpolation, crop_to_aspect_ratio
        # The decode budget is this process's setting; workers started by spawn or forkserver would
        # not see a setting made after import, so it travels with the dataset.
        self.max_pixels = max_image_pixels()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Decoded:
        path = os.fsdecode(self.paths[i])
        label = int(self.labels[i])
        try:
            image = read_image(path, self.channels, self.size, self.interpolation,
                               self.crop_to_aspect_ratio, self.max_pixels)  # (C, H, W)
        except CnnlabError:  # read_image's one error for a file that cannot be decoded
            return None, label, path
        if self.augment is not None:
            image = check_augmented(image[None], self.augment(image[None]))[0]  # a batch of one
        return image, label, path


def collate_decodable(items: Sequence[Decoded]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images (B, C, H, W), labels (B,), paths that failed) from decoded items; failed ones are dropped.

    >>> image = torch.zeros((1, 2, 2), dtype=torch.uint8)
    >>> images, labels, dropped = collate_decodable([(image, 0, "a.png"), (None, 1, "b.png")])
    >>> images.shape, labels.tolist(), dropped
    (torch.Size([1, 1, 2, 2]), [0], ['b.png'])
    """
    kept = [(image, label) for image, label, _ in items if image is not None]
    dropped = [path for image, _, path in items if image is None]
    if not kept:
        return torch.empty((0,), dtype=torch.uint8), torch.empty((0,), dtype=torch.int64), dropped
    images = torch.stack([image for image, _ in kept])
    labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
    return images, labels, dropped
