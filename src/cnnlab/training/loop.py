"""`fit` and `evaluate`: the seed programs' training loop, in plain PyTorch.

Keras semantics where users compare numbers with the tutorials: adam (lr 1e-3, eps 1e-7),
sparse categorical cross-entropy on probabilities (a softmax output, clipped like Keras) or on
logits, batch 32, shuffling every epoch, `validation_split` taken from the end of the training
data before shuffling. Data live in memory as uint8 (N, C, H, W) tensors and are scaled per
batch, so there is no per-sample Python in the hot loop.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab.data import ImageDataset as Dataset
from cnnlab.data import float_images
from cnnlab.errors import CnnlabError
from cnnlab.models.zoo import output_kind
from cnnlab.training.callbacks import Callback, TrainState

__all__ = ["History", "fit", "evaluate", "predict_proba", "loss_fn", "check_compatible"]

KERAS_EPSILON = 1e-7  # Keras clips probabilities to [eps, 1 - eps] before the log, and uses it as adam's eps


@dataclass
class History:
    """Per-epoch metrics, as Keras's `History.history`: {"loss": [...], "val_accuracy": [...]}."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)

    def append(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


def loss_fn(outputs: torch.Tensor, labels: torch.Tensor, kind: str,
            class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean sparse categorical cross-entropy on 'probabilities' or 'logits' (optionally class-weighted).

    With weights, the mean is weighted as Keras's class_weight is: sum(w_y * loss) / sum(w_y).
    """
    if kind == "probabilities":
        return F.nll_loss(torch.log(outputs.clamp(KERAS_EPSILON, 1 - KERAS_EPSILON)), labels, weight=class_weights)
    return F.cross_entropy(outputs, labels, weight=class_weights)


def check_compatible(model: nn.Module, data: Dataset, where: str) -> None:
    """Fail with one line when the data's image shape or class count cannot fit the model."""
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(expected) != tuple(data.input_shape):
        h, w, c = expected
        dh, dw, dc = data.input_shape
        hint = (f"the model takes {c} channel(s) but the images have {dc}" if c != dc
                else f"the model takes {h}x{w} images but these are {dh}x{dw}")
        raise CnnlabError(f"{where}: {hint} (model input {h}x{w}x{c}, data {dh}x{dw}x{dc}); "
                          f"use a model built for this data (--input-shape / a matching dataset)")
    outputs = _num_outputs(model, data)
    if int(data.labels.max()) >= outputs:
        raise CnnlabError(f"{where}: labels go up to {int(data.labels.max())} but the model has "
                          f"{outputs} outputs; build it with num_classes={data.num_classes}")


def _num_outputs(model: nn.Module, data: Dataset) -> int:
    h, w, c = data.input_shape
    with torch.no_grad():
        was = model.training
        out = model.eval()(torch.zeros(1, c, h, w))
        model.train(was)
    return int(out.shape[1])


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int = 256) -> dict[str, float]:
    """Mean loss and accuracy of `model` on `data`: {"loss": ..., "accuracy": ...}.

    Means are over the images actually evaluated: a streamed folder drops files that fail to decode.
    """
    check_compatible(model, data, "evaluate")
    model.eval()
    kind, total_loss, correct, seen = output_kind(model), 0.0, 0, 0
    for images, labels in data.batches(batch_size):
        out = model(float_images(images))
        total_loss += float(loss_fn(out, labels, kind)) * len(labels)
        correct += int((out.argmax(1) == labels).sum())
        seen += len(labels)
    if seen == 0:
        raise CnnlabError(f"evaluate: none of the {len(data)} images could be decoded; "
                          f"check them with cnnlab check-data")
    return {"loss": total_loss / seen, "accuracy": correct / seen}


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities (N, classes) for uint8 or float (N, C, H, W) images."""
    model.eval()
    outs = []
    for start in range(0, len(images), batch_size):  # images already in memory: plain slicing
        out = model(float_images(images[start:start + batch_size]))
        outs.append(out if output_kind(model) == "probabilities" else F.softmax(out, dim=1))
    return torch.cat(outs)


def fit(model: nn.Module, train: Dataset, *, epochs: int = 1, batch_size: int = 32,
        learning_rate: float = 1e-3, validation_split: float = 0.0, validation_data: Dataset | None = None,
        callbacks: Sequence[Callback] = (), seed: int | None = None, verbose: int = 1,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None, class_weights: torch.Tensor | None = None,
        workers: int = 0) -> History:
    """Train `model` on `train` with adam and sparse categorical cross-entropy, Keras-style.

    `augment` transforms uint8 training batches only (never validation data); `class_weights`
    (one per class) weight the loss; only parameters with requires_grad are optimized, so a
    frozen backbone stays as it is.

    >>> from cnnlab.data import load_dataset; from cnnlab.models.zoo import build_model
    >>> data = load_dataset("digits").subset(range(64))
    >>> fit(build_model("seed-mnist"), data, epochs=1, verbose=0).history["loss"][0] > 0
    True
    """
    if not isinstance(epochs, int) or epochs <= 0:
        raise CnnlabError(f"epochs must be a positive integer; got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise CnnlabError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not learning_rate > 0:
        raise CnnlabError(f"learning_rate must be > 0; got {learning_rate!r}")
    if validation_split and validation_data is not None:
        raise CnnlabError("give validation_split or validation_data, not both")
    if validation_split:
        train, validation_data = train.split_last(validation_split)
    check_compatible(model, train, "fit")
    generator = torch.Generator().manual_seed(seed if seed is not None else int(torch.seed() % 2**31))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise CnnlabError("every parameter of the model is frozen: nothing to train (unfreeze some layers)")
    optimizer = torch.optim.Adam(trainable, lr=learning_rate, eps=KERAS_EPSILON)
    state, history, kind = TrainState(model=model, lr=learning_rate), History(), output_kind(model)
    steps = math.ceil(len(train) / batch_size)
    for cb in callbacks:
        cb.on_train_begin(state)
    for epoch in range(epochs):
        state.epoch, start = epoch, time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=generator)
        bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", disable=verbose != 1, file=sys.stderr,
                   leave=True, dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 5.0)  # logs: few lines
        seen, loss_sum, correct = 0, 0.0, 0
        for images, labels in train.batches(batch_size, order, augment, workers):
            out = model(float_images(images))
            loss = loss_fn(out, labels, kind, class_weights)
            if not torch.isfinite(loss):
                step = seen // batch_size + 1
                raise CnnlabError(f"the loss became {float(loss.detach())} at epoch {epoch + 1}, step {step}; "
                                  f"lower the learning rate (--lr) or check the data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(labels)
            loss_sum += float(loss.detach()) * len(labels)
            correct += int((out.argmax(1) == labels).sum())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", accuracy=f"{correct / seen:.4f}", refresh=False)
        logs = {"loss": loss_sum / seen, "accuracy": correct / seen}
        if validation_data is not None:
            logs.update({f"val_{k}": v for k, v in evaluate(model, validation_data).items()})
        logs["lr"] = state.lr
        bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
        bar.close()
        history.append(logs)
        history.epoch_seconds.append(time.perf_counter() - start)
        if verbose == 2:
            print(f"epoch {epoch + 1}/{epochs} " + " ".join(f"{k}={v:.4g}" for k, v in logs.items()), file=sys.stderr)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs, state)
        for group in optimizer.param_groups:  # ReduceLROnPlateau asks for a new rate through state.lr
            group["lr"] = state.lr
        if state.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end(state)
    model.eval()
    return history
