"""What training minimizes and how it counts a right answer: the loss and its accuracy, as Keras computes them.

One `Objective` serves every front end: the CLI and `cnnlab.fit` use sparse categorical
cross-entropy on whatever the model emits (read from its last layer when training starts), the
Keras API (`model.compile(loss=...)`) names any of `LOSSES`. Labels are always class indices
(N,): the Keras front end turns one-hot labels into indices for the categorical loss, where both
give the same numbers. Weighted losses reduce as Keras's do, sum(w * loss) / N.

    >>> obj = Objective("binary_crossentropy", from_logits=False)  # a Dense(1, activation="sigmoid") model
    >>> obj.from_logits, round(float(obj.loss(torch.tensor([[0.9], [0.2]]), torch.tensor([1, 0]))), 4)
    (False, 0.1643)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.models.zoo import output_kind

__all__ = ["Objective", "LOSSES", "KERAS_EPSILON", "probabilities"]

KERAS_EPSILON = 1e-7  # Keras clips probabilities to [eps, 1 - eps] before the log (and uses it as adam's eps)
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy", "mean_squared_error")


@dataclass(frozen=True)
class Objective:
    """A loss by Keras's name; `from_logits` None means "read it from the model's last layer"."""

    name: str = "sparse_categorical_crossentropy"
    from_logits: bool | None = None
    label_smoothing: float = 0.0  # mixes the one-hot target with the uniform one, as Keras's option

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise CnnlabError(f"unknown loss {self.name!r}.{did_you_mean(self.name, LOSSES)} "
                              f"Use one of: {', '.join(LOSSES)}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise CnnlabError(f"label_smoothing must be in [0, 1), e.g. 0.1; got {self.label_smoothing!r}")

    def resolve(self, model: nn.Module) -> Objective:
        """This objective with `from_logits` fixed: from the model's last layer unless given."""
        if self.from_logits is not None:
            return self
        return replace(self, from_logits=output_kind(model) != "probabilities")

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss of (N, K) `outputs` for (N,) class-index `labels`; `weights` (N,) per sample."""
        per_sample = self.per_sample(outputs, labels)
        if weights is None:
            return per_sample.mean()
        return (per_sample * weights).sum() / len(per_sample)  # Keras: sum over the batch / batch size

    def per_sample(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits, smooth = self.from_logits is not False, self.label_smoothing
        if self.name == "binary_crossentropy":
            target = _binary_target(outputs, labels) * (1 - smooth) + 0.5 * smooth
            if logits:
                return F.binary_cross_entropy_with_logits(outputs, target, reduction="none").mean(1)
            p = outputs.clamp(KERAS_EPSILON, 1 - KERAS_EPSILON)
            return -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean(1)
        if self.name == "mean_squared_error":
            target = _binary_target(outputs, labels) if outputs.shape[1] == 1 else \
                F.one_hot(labels, outputs.shape[1]).to(outputs.dtype)
            return ((outputs - target) ** 2).mean(1)
        if logits:
            return F.cross_entropy(outputs, labels, reduction="none", label_smoothing=smooth)
        # Keras on probabilities: renormalize each row, clip, then the log
        probs = outputs / outputs.sum(1, keepdim=True)
        log_probs = torch.log(probs.clamp(KERAS_EPSILON, 1 - KERAS_EPSILON))
        return F.cross_entropy(log_probs, labels, reduction="none", label_smoothing=smooth) if smooth \
            else F.nll_loss(log_probs, labels, reduction="none")

    def correct(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """How many predictions are right: argmax for several outputs, p > 0.5 (logit > 0) for one."""
        if outputs.shape[1] == 1:
            threshold = 0.0 if self.from_logits is not False else 0.5
            return ((outputs[:, 0] > threshold).long() == labels).sum()
        return (outputs.argmax(1) == labels).sum()


def _binary_target(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if outputs.shape[1] != 1:
        raise CnnlabError(f"binary_crossentropy needs one output per image (Dense(1, activation='sigmoid')), "
                          f"but the model has {outputs.shape[1]}; use sparse_categorical_crossentropy for "
                          f"{outputs.shape[1]} classes")
    return labels.to(outputs.dtype)[:, None]


def probabilities(outputs: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, K) class probabilities from what a model emits ('logits' or 'probabilities').

    A single output is a binary model's P(class 1): it becomes the two columns (1 - p, p).

    >>> probabilities(torch.tensor([[0.0]]), "logits")
    tensor([[0.5000, 0.5000]])
    """
    if outputs.shape[1] == 1:
        p = outputs if kind == "probabilities" else torch.sigmoid(outputs)
        return torch.cat([1 - p, p], dim=1)
    return outputs if kind == "probabilities" else F.softmax(outputs, dim=1)
