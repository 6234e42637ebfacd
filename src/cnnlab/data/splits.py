"""Stratified train/validation/test splits and "balanced" class weights, computed from labels alone.

Both take the int64 label tensor every dataset has, so they work the same for in-memory and
streaming datasets: `data.subset(part)` turns an index tensor into a dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cnnlab.errors import CnnlabError

__all__ = ["stratified_split", "class_weights", "FRACTION_TOLERANCE"]

# Fractions such as (0.8, 0.1, 0.1) add up to 1 only approximately in floating point.
FRACTION_TOLERANCE = 1e-6


def stratified_split(labels: torch.Tensor, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Index tensors, one per fraction, that split every class in those proportions (e.g. train/val/test).

    Each class is shuffled with a torch.Generator seeded by `seed` and cut by the largest-remainder
    rule, so the same labels and seed always give the same parts. A class with at least
    len(fractions) samples has at least one in every part; a smaller class cannot, and its samples
    go to the parts with the largest shares. Indices are sorted within each part.

    >>> labels = torch.tensor([0] * 8 + [1] * 4)
    >>> train, val, test = stratified_split(labels, (0.5, 0.25, 0.25), seed=0)
    >>> [labels[part].bincount().tolist() for part in (train, val, test)]
    [[4, 2], [2, 1], [2, 1]]
    """
    labels = _check_labels(labels, "stratified_split")
    shares = _check_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CnnlabError(f"stratified_split: seed must be an integer, got {seed!r}; e.g. seed=0")
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in shares]
    for label in torch.unique(labels).tolist():  # sorted, so the generator is consumed in a fixed order
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        start = 0
        for part, count in zip(parts, part_sizes(len(members), shares), strict=True):
            part.append(members[start:start + count])
            start += count
    return [torch.sort(torch.cat(part)).values for part in parts]


def part_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """`n` cut into len(fractions) whole parts by the largest-remainder rule; no part is 0 when n allows.

    >>> part_sizes(10, (0.8, 0.1, 0.1)), part_sizes(3, (0.8, 0.1, 0.1)), part_sizes(2, (0.8, 0.1, 0.1))
    ([8, 1, 1], [1, 1, 1], [2, 0, 0])
    """
    exact = [n * f for f in fractions]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[:n - sum(sizes)]:
        sizes[i] += 1
    if n >= len(sizes):
        # Sizes sum to n >= k, so while a part is empty the largest one holds at least 2 and can give one.
        while 0 in sizes:
            sizes[sizes.index(max(sizes))] -= 1
            sizes[sizes.index(0)] += 1
    return sizes


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 (num_classes,) "balanced" weights, n_samples / (num_classes * count_c), as scikit-learn's.

    Rare classes weigh more, so each class contributes equally to a weighted loss. A class with
    no samples gets weight 0 (scikit-learn raises instead): it cannot affect the loss, and the
    caller decides whether a missing class is an error.

    >>> class_weights(torch.tensor([0, 0, 0, 1]), 3)
    tensor([0.4444, 1.3333, 0.0000])
    """
    labels = _check_labels(labels, "class_weights")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise CnnlabError(f"class_weights: num_classes must be a positive integer, got {num_classes!r}; "
                          f"pass data.num_classes")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise CnnlabError(f"class_weights: labels span {int(labels.min())}..{int(labels.max())} but "
                          f"num_classes={num_classes}; labels must be in 0..{num_classes - 1} (pass data.num_classes)")
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    weights = torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), 0.0)
    return weights.to(torch.float32)


def _check_labels(labels: object, where: str) -> torch.Tensor:
    if (not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point()
            or labels.is_complex() or labels.dtype == torch.bool):
        got = (f"shape {tuple(labels.shape)} dtype {labels.dtype}" if isinstance(labels, torch.Tensor)
               else type(labels).__name__)
        raise CnnlabError(f"{where}: labels must be a 1-D integer tensor, got {got}; pass data.labels")
    if len(labels) == 0:
        raise CnnlabError(f"{where}: labels are empty; pass the labels of a dataset with at least one sample")
    return labels.to(torch.int64)


def _check_fractions(fractions: object) -> list[float]:
    if (isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence) or not fractions
            or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions)):
        raise CnnlabError(f"stratified_split: fractions must be a sequence of numbers, got {fractions!r}; "
                          f"e.g. fractions=(0.8, 0.1, 0.1) for train/validation/test")
    shares = [float(f) for f in fractions]
    if not all(math.isfinite(f) and f > 0 for f in shares) or abs(sum(shares) - 1) > FRACTION_TOLERANCE:
        raise CnnlabError(f"stratified_split: fractions must be positive and sum to 1, got {tuple(fractions)!r} "
                          f"(sum {sum(shares):g}); e.g. fractions=(0.8, 0.1, 0.1)")
    return shares
