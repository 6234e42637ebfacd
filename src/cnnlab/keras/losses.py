"""Keras's losses (`loss='sparse_categorical_crossentropy'` or `keras.losses.SparseCategoricalCrossentropy(...)`).

Each resolves to the engine's `Objective` (training/objectives.py), where the numbers are computed.

    >>> resolve_loss(SparseCategoricalCrossentropy(from_logits=True))
    Objective(name='sparse_categorical_crossentropy', from_logits=True, label_smoothing=0.0)
"""

from __future__ import annotations

from typing import Any

from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.training.objectives import LOSSES, Objective

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "sparse_categorical_crossentropy", "categorical_crossentropy",
           "binary_crossentropy", "mean_squared_error", "mse", "resolve_loss", "resolve_metrics"]

ALIASES = {"mse": "mean_squared_error", "MSE": "mean_squared_error"}
METRICS = ("accuracy", "acc")  # Keras resolves both to the accuracy that fits the loss


class Loss:
    """A Keras loss object: its name, `from_logits` and `label_smoothing` (what `compile` needs)."""

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, **ignored: Any) -> None:
        self.from_logits, self.label_smoothing = bool(from_logits), float(label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class SparseCategoricalCrossentropy(Loss):
    name = "sparse_categorical_crossentropy"


class CategoricalCrossentropy(Loss):
    name = "categorical_crossentropy"


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def __init__(self, **ignored: Any) -> None:
        super().__init__()


# Keras also accepts its loss functions (keras.losses.sparse_categorical_crossentropy) in compile
sparse_categorical_crossentropy = "sparse_categorical_crossentropy"
categorical_crossentropy = "categorical_crossentropy"
binary_crossentropy = "binary_crossentropy"
mean_squared_error = mse = "mean_squared_error"


def resolve_loss(loss: Any) -> Objective:
    """The engine objective for a loss name or object; from_logits is False unless said (Keras's default)."""
    if isinstance(loss, Loss):
        return Objective(loss.name, loss.from_logits, loss.label_smoothing if loss.name != "mean_squared_error"
                         else 0.0)
    if isinstance(loss, str):
        name = ALIASES.get(loss, loss)
        if name not in LOSSES:
            raise CnnlabError(f"compile: unknown loss {loss!r}.{did_you_mean(loss, LOSSES)} "
                              f"Use one of: {', '.join(LOSSES)}.")
        return Objective(name, False)
    raise CnnlabError(f"compile: loss must be a name such as 'sparse_categorical_crossentropy' or a keras.losses "
                      f"object; got {type(loss).__name__} (custom loss functions are not supported yet)")


def resolve_metrics(metrics: Any) -> list[str]:
    """The metric names `fit` reports: [] or ['accuracy'] / ['acc'] (Keras's names for accuracy)."""
    if metrics is None:
        return []
    if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)):
        metrics = [metrics]
    names = []
    for m in metrics:
        name = m if isinstance(m, str) else getattr(m, "name", type(m).__name__)
        if name not in METRICS + ("sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy"):
            raise CnnlabError(f"compile: metric {name!r} is not supported yet; use metrics=['accuracy']")
        names.append(name)
    return names[:1]
