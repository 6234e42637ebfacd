"""Classification metrics on tensors: confusion matrix, per-class report, top-k, most confused, top losses.

Pure torch/numpy: nothing here knows about models, data loaders or plots. The per-class report
equals `sklearn.metrics.classification_report(..., output_dict=True, zero_division=0)` to 1e-12
(tests/test_evaluation.py checks it over random cases), so numbers match what people already know.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cnnlab.errors import CnnlabError

__all__ = [
    "ClassScores",
    "ClassificationReport",
    "confusion_matrix",
    "classification_report",
    "top_k_accuracy",
    "most_confused",
    "top_losses",
    "sample_losses",
    "PROBABILITY_FLOOR",
]

PROBABILITY_FLOOR = 1e-7  # the clip Keras (and training.loop.loss_fn) applies before the log: a 0 costs 16.1, not inf


def _as_labels(values: torch.Tensor | Sequence[int], name: str, where: str) -> torch.Tensor:
    """A 1-D int64 tensor from a tensor, array or list of class indices; CnnlabError otherwise."""
    tensor = torch.as_tensor(values)
    if tensor.ndim != 1 or tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise CnnlabError(f"{where}: {name} must be a 1-D tensor of class indices, got dtype {tensor.dtype} "
                          f"shape {tuple(tensor.shape)}; pass e.g. probabilities.argmax(1)")
    return tensor.to(torch.int64).cpu()


def _check_range(values: torch.Tensor, num_classes: int, name: str, where: str) -> None:
    if len(values) and (int(values.min()) < 0 or int(values.max()) >= num_classes):
        raise CnnlabError(f"{where}: {name} must lie in 0..{num_classes - 1} ({num_classes} classes), got values "
                          f"{int(values.min())}..{int(values.max())}; check the class names match the data")


def _as_probabilities(probabilities: torch.Tensor, labels: torch.Tensor, where: str) -> torch.Tensor:
    """Check (N, K) probabilities against N labels; return them as float64 on the CPU."""
    if not isinstance(probabilities, torch.Tensor) or probabilities.ndim != 2 or not probabilities.is_floating_point():
        got = tuple(probabilities.shape) if isinstance(probabilities, torch.Tensor) else type(probabilities).__name__
        raise CnnlabError(f"{where}: probabilities must be a float (N, classes) tensor, got {got}; "
                          f"use training.loop.predict_proba(model, images)")
    if len(probabilities) != len(labels):
        raise CnnlabError(f"{where}: {len(probabilities)} rows of probabilities but {len(labels)} labels; "
                          f"pass one row per labelled sample")
    _check_range(labels, probabilities.shape[1], "labels", where)
    return probabilities.detach().cpu().double()


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (K, K) int64: row = true class, column = predicted class.

    >>> confusion_matrix(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]), 3)
    tensor([[1, 1, 0],
            [0, 1, 0],
            [0, 1, 0]])
    """
    labels = _as_labels(labels, "labels", "confusion_matrix")
    predictions = _as_labels(predictions, "predictions", "confusion_matrix")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise CnnlabError(f"confusion_matrix: num_classes must be a positive integer, got {num_classes!r}")
    if len(labels) != len(predictions):
        raise CnnlabError(f"confusion_matrix: {len(labels)} labels but {len(predictions)} predictions; "
                          f"pass one prediction per label")
    _check_range(labels, num_classes, "labels", "confusion_matrix")
    _check_range(predictions, num_classes, "predictions", "confusion_matrix")
    flat = labels * num_classes + predictions  # cell index, row-major
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall, F1 and support of one class (or of an average over classes)."""

    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, float | int]:
        """sklearn's keys: {'precision', 'recall', 'f1-score', 'support'}.

        >>> ClassScores(0.5, 1.0, 2 / 3, 2).to_dict()["f1-score"]
        0.6666666666666666
        """
        return {"precision": self.precision, "recall": self.recall, "f1-score": self.f1, "support": self.support}


@dataclass(frozen=True)
class ClassificationReport:
    """Per-class scores, accuracy and macro/weighted averages, as sklearn's classification_report.

    `per_class` keeps the order of the class names; absent or never-predicted classes score 0
    (sklearn's zero_division=0) and still count in the macro average.
    """

    per_class: dict[str, ClassScores]
    accuracy: float
    macro_avg: ClassScores
    weighted_avg: ClassScores

    def to_dict(self) -> dict[str, object]:
        """The dict `sklearn.metrics.classification_report(output_dict=True)` returns.

        >>> r = classification_report(torch.tensor([0, 1]), torch.tensor([0, 0]), ["a", "b"])
        >>> sorted(r.to_dict())
        ['a', 'accuracy', 'b', 'macro avg', 'weighted avg']
        """
        out: dict[str, object] = {name: scores.to_dict() for name, scores in self.per_class.items()}
        out["accuracy"] = self.accuracy
        out["macro avg"] = self.macro_avg.to_dict()
        out["weighted avg"] = self.weighted_avg.to_dict()
        return out

    def to_text(self, digits: int = 2) -> str:
        """The report in sklearn's text layout (`digits` decimals).

        >>> r = classification_report(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), ["cat", "dog"])
        >>> print(r.to_text())
                      precision    recall  f1-score   support
        <BLANKLINE>
                 cat       0.50      1.00      0.67         1
                 dog       1.00      0.50      0.67         2
        <BLANKLINE>
            accuracy                           0.67         3
           macro avg       0.75      0.75      0.67         3
        weighted avg       0.83      0.67      0.67         3
        <BLANKLINE>
        """
        averages = {"macro avg": self.macro_avg, "weighted avg": self.weighted_avg}
        width = max([len(name) for name in self.per_class] + [len("weighted avg"), digits])
        head = "{:>{width}s} " + " {:>9}" * 4
        row = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
        text = head.format("", "precision", "recall", "f1-score", "support", width=width) + "\n\n"
        for name, s in self.per_class.items():
            text += row.format(name, s.precision, s.recall, s.f1, s.support, width=width, digits=digits)
        text += "\n"
        accuracy_row = "{:>{width}s} " + " {:>9}" * 2 + " {:>9.{digits}f} {:>9}\n"
        text += accuracy_row.format("accuracy", "", "", self.accuracy, self.macro_avg.support,
                                    width=width, digits=digits)
        for name, s in averages.items():
            text += row.format(name, s.precision, s.recall, s.f1, s.support, width=width, digits=digits)
        return text


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def classification_report(labels: torch.Tensor, predictions: torch.Tensor,
                          class_names: Sequence[str]) -> ClassificationReport:
    """Precision, recall, F1 and support per class, accuracy, macro and weighted averages.

    >>> r = classification_report(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]), ["a", "b", "c"])
    >>> r.per_class["b"]
    ClassScores(precision=0.3333333333333333, recall=1.0, f1=0.5, support=1)
    >>> r.accuracy
    0.5
    """
    names = [str(name) for name in class_names]
    if not names or len(set(names)) != len(names):
        raise CnnlabError(f"classification_report: class_names must be non-empty and unique, got {names!r}")
    counts = confusion_matrix(labels, predictions, len(names)).numpy().astype(np.float64)  # (K, K)
    true_positives = np.diag(counts)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    precision = _safe_divide(true_positives, predicted)
    recall = _safe_divide(true_positives, support)
    f1 = _safe_divide(2 * true_positives, support + predicted)  # = 2PR / (P + R), and 0 where both are 0
    total = int(support.sum())
    per_class = {name: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
                 for i, name in enumerate(names)}
    macro = ClassScores(float(precision.mean()), float(recall.mean()), float(f1.mean()), total)
    weights = support / total if total else np.zeros_like(support)
    weighted = ClassScores(float((precision * weights).sum()), float((recall * weights).sum()),
                           float((f1 * weights).sum()), total)
    accuracy = float(true_positives.sum() / total) if total else 0.0
    return ClassificationReport(per_class, accuracy, macro, weighted)


def top_k_accuracy(probabilities: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of samples whose true class is among the `k` most probable.

    >>> p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    >>> top_k_accuracy(p, torch.tensor([1, 2, 2]), 1), top_k_accuracy(p, torch.tensor([1, 2, 2]), 2)
    (0.3333333333333333, 0.6666666666666666)
    """
    labels = _as_labels(labels, "labels", "top_k_accuracy")
    probabilities = _as_probabilities(probabilities, labels, "top_k_accuracy")
    num_classes = probabilities.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_classes:
        raise CnnlabError(f"top_k_accuracy: k must be an integer in 1..{num_classes}, got {k!r}")
    if len(labels) == 0:
        raise CnnlabError("top_k_accuracy: no samples; pass at least one labelled prediction")
    top = probabilities.topk(k, dim=1).indices  # (N, k)
    return float((top == labels[:, None]).any(dim=1).double().mean())


def most_confused(confusion: torch.Tensor, class_names: Sequence[str], n: int | None = 5,
                  min_count: int = 1) -> list[tuple[str, str, int]]:
    """The off-diagonal cells with at least `min_count` samples, largest first: (actual, predicted, count).

    Ties keep row-major order (by actual, then predicted index); `n=None` returns them all.

    >>> c = torch.tensor([[5, 2, 0], [3, 4, 2], [0, 0, 6]])
    >>> most_confused(c, ["a", "b", "c"], n=2)
    [('b', 'a', 3), ('a', 'b', 2)]
    """
    names = [str(name) for name in class_names]
    if not isinstance(confusion, torch.Tensor) or confusion.ndim != 2 or tuple(confusion.shape) != (len(names),) * 2:
        got = tuple(confusion.shape) if isinstance(confusion, torch.Tensor) else type(confusion).__name__
        raise CnnlabError(f"most_confused: confusion must be a ({len(names)}, {len(names)}) tensor for "
                          f"{len(names)} class names, got {got}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise CnnlabError(f"most_confused: n must be a non-negative integer or None, got {n!r}")
    counts = confusion.detach().cpu().tolist()
    cells = [(names[i], names[j], int(counts[i][j])) for i in range(len(names)) for j in range(len(names))
             if i != j and counts[i][j] >= min_count]
    cells.sort(key=lambda cell: -cell[2])  # stable: ties stay in row-major order
    return cells if n is None else cells[:n]


def top_losses(probabilities: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and cross-entropy losses (-log p_true, p clipped at 1e-7) of the `n` worst samples, largest first.

    Ties keep sample order. Fewer than `n` samples give them all.

    >>> p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> indices, losses = top_losses(p, torch.tensor([0, 0, 1]), 2)
    >>> indices.tolist(), [round(v, 4) for v in losses.tolist()]
    ([1, 2], [1.6094, 0.9163])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CnnlabError(f"top_losses: n must be a non-negative integer, got {n!r}")
    losses = sample_losses(probabilities, labels)
    order = torch.sort(losses, descending=True, stable=True).indices[:n]
    return order, losses[order]


def sample_losses(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (N,) float64: -log p_true with p clipped at 1e-7.

    >>> sample_losses(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.tensor([0, 1]))
    tensor([ 0.6931, 16.1181], dtype=torch.float64)
    """
    labels = _as_labels(labels, "labels", "sample_losses")
    probabilities = _as_probabilities(probabilities, labels, "sample_losses")
    true_probability = probabilities.gather(1, labels[:, None])[:, 0]  # (N,)
    return -true_probability.clamp(min=PROBABILITY_FLOOR).log()
