"""Argument checks shared by both dataset kinds' `subset`, `split_last` and `batches`.

`ArrayDataset` (in memory) and `FolderDataset` (streaming) take the same arguments, so they are
validated in one place and fail with the same messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cnnlab.errors import CnnlabError

__all__ = ["Augment", "check_indices", "check_labels", "check_batch_size", "check_workers", "check_augmented",
           "split_point"]

Augment = Callable[[torch.Tensor], torch.Tensor]  # uint8 (B, C, H, W) -> uint8 (B, C, H, W), per-sample random


def check_indices(indices: torch.Tensor | Sequence[int] | None, n: int, name: str, argument: str) -> torch.Tensor:
    """`indices` as a 1-D int64 tensor of positions in 0..n-1; None means every position in order.

    >>> check_indices([2, 0], 3, "digits", "order")
    tensor([2, 0])
    >>> check_indices([3], 3, "digits", "order")
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: order: indices span 3..3 but digits has 3 samples; use indices in 0..2
    """
    if indices is None:
        return torch.arange(n)
    index = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(list(indices), dtype=torch.long)
    if index.ndim != 1 or (len(index) and (index.is_floating_point() or index.dtype == torch.bool)):
        raise CnnlabError(f"{argument}: indices must be a 1-D tensor of integer positions, got shape "
                          f"{tuple(index.shape)} dtype {index.dtype}; pass e.g. torch.randperm(len(data))")
    index = index.to(torch.long)
    if len(index) and (int(index.min()) < -n or int(index.max()) >= n):
        raise CnnlabError(f"{argument}: indices span {int(index.min())}..{int(index.max())} but {name} has "
                          f"{n} samples; use indices in 0..{n - 1}")
    return index


def check_batch_size(batch_size: object) -> int:
    """`batch_size` if it is a positive integer, else a CnnlabError.

    >>> check_batch_size(32)
    32
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise CnnlabError(f"batches: batch_size must be a positive integer, got {batch_size!r}; e.g. batch_size=32")
    return batch_size


def check_workers(workers: object) -> int:
    """`workers` if it is an integer >= 0 (0: decode in the main process), else a CnnlabError.

    >>> check_workers(0)
    0
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise CnnlabError(f"batches: workers must be an integer >= 0 (0 decodes in the main process), "
                          f"got {workers!r}; e.g. workers=4")
    return workers


def check_augmented(before: torch.Tensor, after: object) -> torch.Tensor:
    """`after` if it is a uint8 batch shaped like `before`, else a CnnlabError naming the mismatch.

    >>> batch = torch.zeros((2, 1, 4, 4), dtype=torch.uint8)
    >>> check_augmented(batch, 255 - batch).shape
    torch.Size([2, 1, 4, 4])
    """
    if (not isinstance(after, torch.Tensor) or after.dtype != torch.uint8
            or tuple(after.shape) != tuple(before.shape)):
        got = (f"{after.dtype} {tuple(after.shape)}" if isinstance(after, torch.Tensor)
               else type(after).__name__)
        raise CnnlabError(f"batches: augment returned {got} for a uint8 {tuple(before.shape)} batch; it must "
                          f"return a uint8 (B, C, H, W) batch of the same shape (clamp and cast with .to(torch.uint8))")
    return after


def split_point(n: int, fraction: object) -> int:
    """Where Keras's `validation_split` cuts `n` samples: int(n * (1 - fraction)), checked for empty parts.

    >>> split_point(10, 0.2)
    8
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise CnnlabError(f"validation_split must be a fraction between 0 and 1 (exclusive), got {fraction!r}; "
                          f"e.g. validation_split=0.1 keeps the last 10% for validation")
    split_at = int(n * (1 - fraction))
    if split_at == 0 or split_at == n:
        raise CnnlabError(f"validation_split={fraction} of {n} samples leaves "
                          f"{'no training' if split_at == 0 else 'no validation'} samples; "
                          f"use a fraction that gives both parts at least one sample")
    return split_at


def check_labels(name: str, labels: object, count: int, class_names: Sequence[str], per: str) -> None:
    """Labels must be a 1-D int64 tensor, one per `per` (image, file), each naming a class."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.dtype != torch.int64:
        got = f"shape {tuple(labels.shape)} dtype {labels.dtype}" if isinstance(labels, torch.Tensor) \
            else type(labels).__name__
        raise CnnlabError(f"{name}: labels must be a 1-D int64 tensor, got {got}; "
                          f"pass torch.tensor(labels, dtype=torch.int64) or use ArrayDataset.from_arrays")
    if len(labels) != count:
        raise CnnlabError(f"{name}: {count} {per}s but {len(labels)} labels; give one label per {per}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
        raise CnnlabError(f"{name}: labels span {int(labels.min())}..{int(labels.max())} but there are "
                          f"{len(class_names)} class names; labels must be in 0..{len(class_names) - 1} "
                          f"(give one class name per label value)")
