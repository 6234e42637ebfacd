"""keras.metrics: the accuracy metrics `compile(metrics=[...])` takes as objects.

    model.compile(..., metrics=[keras.metrics.BinaryAccuracy(threshold=0.5, name="accuracy")])

Each is computed by the engine's objective (training/objectives.py), which picks the right accuracy for the
loss as Keras does; the object sets the name the logs use. The binary threshold is the decision
probability 0.5 (on a model that outputs logits, logit 0: the same decision; Keras compares raw logits
with 0.5 there, a known quirk of threshold=0.5 with from_logits=True).
"""

from __future__ import annotations

from cnnlab.errors import CnnlabError

__all__ = ["Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy"]


class _AccuracyMetric:
    default_name = "accuracy"

    def __init__(self, name: str | None = None, dtype: object = None) -> None:
        self.name = name or self.default_name

    def get_config(self) -> dict[str, object]:
        return {"name": self.name}


class Accuracy(_AccuracyMetric):
    """Accuracy as the loss implies it (Keras's 'accuracy')."""


class BinaryAccuracy(_AccuracyMetric):
    """The share of samples on the right side of the decision threshold (0.5 probability, or logit 0)."""

    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, dtype: object = None, threshold: float = 0.5) -> None:
        super().__init__(name, dtype)
        if threshold not in (0.5, 0, 0.0):
            raise CnnlabError(f"BinaryAccuracy: threshold {threshold!r} is not supported yet; use 0.5 (probabilities) "
                              f"or 0 (logits): both mean the same decision")
        self.threshold = threshold


class CategoricalAccuracy(_AccuracyMetric):
    """Accuracy for one-hot labels."""

    default_name = "categorical_accuracy"


class SparseCategoricalAccuracy(_AccuracyMetric):
    """Accuracy for class-index labels."""

    default_name = "sparse_categorical_accuracy"
