"""Keras-style callbacks. They observe each epoch's logs and set flags; they never own the loop.

The loop calls `on_train_begin(state)`, `on_epoch_begin(epoch, state)`, `on_epoch_end(epoch,
logs, state)` and `on_train_end(state)`. `on_train_begin` starts the callback afresh, so one
callback object serves several `fit` calls as Keras's do (a resumed run then puts its saved
counters back). A callback stops training by setting `state.stop_training`, changes the
learning rate by setting `state.lr` (the loop applies it), and keeps its own counters, which
`state_dict()` returns (JSON values, or tensors) so a checkpoint can resume them exactly.
"""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_write

__all__ = ["TrainState", "auto_mode", "Callback", "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "CSVLogger",
           "TrainingHints"]


@dataclass
class TrainState:
    """What the loop shares with callbacks."""

    model: nn.Module
    lr: float
    epoch: int = 0
    stop_training: bool = False


class Callback:
    def on_train_begin(self, state: TrainState) -> None:
        pass

    def on_epoch_begin(self, epoch: int, state: TrainState) -> None:
        pass

    def on_train_batch_end(self, step: int, logs: dict[str, float], state: TrainState) -> None:
        """After each step, with the epoch's running loss and accuracy (called only where overridden:
        it costs a synchronization per step)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: TrainState) -> None:
        pass

    def on_train_end(self, state: TrainState) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """The counters a resumed run needs: JSON values, tensors or dicts of tensors (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict()` returned."""


def auto_mode(monitor: str) -> str:
    """Keras's mode "auto": 'max' for accuracies, 'min' for everything else (losses).

    >>> auto_mode("val_accuracy"), auto_mode("val_loss")
    ('max', 'min')
    """
    return "max" if "acc" in monitor else "min"


class _Monitor:
    """Tracks the best value of one metric ('min' for losses, 'max' for accuracies)."""

    def __init__(self, monitor: str, mode: str, min_delta: float, who: str) -> None:
        if mode == "auto":
            mode = auto_mode(monitor)
        if mode not in ("min", "max"):
            raise CnnlabError(f"{who}: mode must be 'min', 'max' or 'auto'; got {mode!r}")
        self.monitor, self.mode, self.min_delta, self.who = monitor, mode, abs(min_delta), who
        self.best = self.start()

    def start(self) -> float:
        """The worst value: anything seen improves on it."""
        return math.inf if self.mode == "min" else -math.inf

    def value(self, logs: dict[str, float]) -> float:
        if self.monitor not in logs:
            raise CnnlabError(f"{self.who} monitors {self.monitor!r} but the logs have only {sorted(logs)}; "
                              f"use one of those (val_* needs validation data)")
        return logs[self.monitor]

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs; optionally restore the best weights.

    >>> es = EarlyStopping(patience=1)
    >>> s = TrainState(model=torch.nn.Linear(1, 1), lr=1e-3)
    >>> for e, loss in enumerate([1.0, 0.5, 0.6]):
    ...     es.on_epoch_end(e, {"val_loss": loss}, s)
    >>> s.stop_training, es.stopped_epoch, es.best_epoch
    (True, 2, 1)
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0, mode: str = "auto",
                 restore_best_weights: bool = False) -> None:
        self.tracker = _Monitor(monitor, mode, min_delta, "EarlyStopping")
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.on_train_begin(None)

    def on_train_begin(self, state: TrainState | None) -> None:
        self.tracker.best, self.wait, self.stopped_epoch, self.best_epoch = self.tracker.start(), 0, -1, -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: TrainState) -> None:
        value = self.tracker.value(logs)
        if self.tracker.improved(value):
            self.tracker.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_state = copy.deepcopy(state.model.state_dict())
            return
        self.wait += 1
        if self.wait >= self.patience and epoch > 0:  # Keras: patience=2 stops on the 2nd epoch without gain
            self.stopped_epoch, state.stop_training = epoch, True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.tracker.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch,
                "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.wait, self.best_state = state["best"], state["wait"], state["best_state"]
        self.stopped_epoch, self.best_epoch = state["stopped_epoch"], state["best_epoch"]

    def on_train_end(self, state: TrainState) -> None:
        if self.restore_best_weights and self.best_state is not None:
            state.model.load_state_dict(self.best_state)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` after `patience` epochs without improvement.

    >>> r = ReduceLROnPlateau(factor=0.5, patience=1, min_lr=0.2)
    >>> s = TrainState(model=torch.nn.Linear(1, 1), lr=1.0)
    >>> for e, loss in enumerate([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]):
    ...     r.on_epoch_end(e, {"val_loss": loss}, s)
    >>> s.lr
    0.2
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0, mode: str = "auto") -> None:
        if not 0.0 < factor < 1.0:
            raise CnnlabError(f"ReduceLROnPlateau: factor must be between 0 and 1; got {factor!r}")
        self.tracker = _Monitor(monitor, mode, min_delta, "ReduceLROnPlateau")
        self.factor, self.patience, self.cooldown, self.min_lr = factor, patience, cooldown, min_lr
        self.on_train_begin(None)

    def on_train_begin(self, state: TrainState | None) -> None:
        self.tracker.best, self.wait, self.cooldown_left = self.tracker.start(), 0, 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: TrainState) -> None:
        value = self.tracker.value(logs)
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self.tracker.improved(value):
            self.tracker.best, self.wait = value, 0
            return
        if self.cooldown_left > 0:
            return
        self.wait += 1
        if self.wait >= self.patience and state.lr > self.min_lr:
            state.lr = max(state.lr * self.factor, self.min_lr)
            self.cooldown_left, self.wait = self.cooldown, 0

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.tracker.best, "wait": self.wait, "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.wait, self.cooldown_left = state["best"], state["wait"], state["cooldown_left"]


class ModelCheckpoint(Callback):
    """Call `save(model, path)` at epoch ends: every epoch, or when `monitor` improves."""

    def __init__(self, path: str | Path, save: Callable[[nn.Module, Path], object], monitor: str = "val_loss",
                 save_best_only: bool = True, mode: str = "auto") -> None:
        self.path, self.save, self.save_best_only = Path(path), save, save_best_only
        self.tracker = _Monitor(monitor, mode, 0.0, "ModelCheckpoint")
        self.on_train_begin(None)

    def on_train_begin(self, state: TrainState | None) -> None:
        self.tracker.best, self.saved_epoch = self.tracker.start(), -1

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: TrainState) -> None:
        if self.save_best_only:
            value = self.tracker.value(logs)
            if not self.tracker.improved(value):
                return
            self.tracker.best = value
        self.save(state.model, self.path)
        self.saved_epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.tracker.best, "saved_epoch": self.saved_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.saved_epoch = state["best"], state["saved_epoch"]


class CSVLogger(Callback):
    """Append one row per epoch (epoch, then the logs) to a CSV file, flushed as it goes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.on_train_begin(None)

    def on_train_begin(self, state: TrainState | None) -> None:
        self.fields: list[str] | None = None
        self.rows = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: TrainState) -> None:
        new = self.fields is None
        if self.fields is None:
            self.fields = ["epoch", *logs]
        try:
            with self.path.open("w" if new else "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields)
                if new:
                    writer.writeheader()
                writer.writerow({"epoch": epoch, **logs})
        except OSError as exc:  # a full disk fails in write(), whose error names no file: name it for the caller
            exc.filename = exc.filename or str(self.path)
            raise
        self.rows += 1

    def state_dict(self) -> dict[str, Any]:
        return {"fields": self.fields, "rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Cut the file back to the rows written before the checkpoint: a resumed epoch never appears twice."""
        self.fields, self.rows = state["fields"], state["rows"]
        if self.fields is not None and self.path.is_file():
            lines = self.path.read_text().splitlines(keepends=True)
            kept = "".join(lines[:self.rows + 1])  # header + rows
            atomic_write(self.path, lambda tmp: tmp.write_text(kept))  # a kill here must not lose the rows


CHANCE_MARGIN = 0.05  # accuracy within 5 points of chance (0.15 for 10 classes, 0.55 for 2) counts as "at chance"
TRAIN_VAL_GAP = 0.3  # training accuracy 30 points above a validation accuracy at chance: the BatchNorm case


class TrainingHints(Callback):
    """One-line hints for the two ways a run fails silently, told once each through `say` (e.g. print).

    - The first epoch ends at chance (accuracy < chance + CHANCE_MARGIN): the learning rate is the
      usual cause (AlexNet and VGG16 from scratch stay at chance with adam 1e-3; 1e-4 trains them).
    - Training accuracy is high but validation accuracy sits near chance: with BatchNorm after few
      steps, the moving statistics that evaluation uses still hold their initial values.

    >>> said = []
    >>> hints = TrainingHints(10, learning_rate=1e-3, has_batchnorm=False, say=said.append)
    >>> hints.on_epoch_end(0, {"loss": 2.30, "accuracy": 0.10}, TrainState(torch.nn.Linear(1, 1), 1e-3))
    >>> said[0][:56]
    'hint: accuracy 0.100 after epoch 1 is chance for 10 clas'
    """

    def __init__(self, num_classes: int, learning_rate: float, has_batchnorm: bool,
                 say: Callable[[str], None]) -> None:
        self.chance, self.learning_rate, self.has_batchnorm, self.say = 1.0 / num_classes, learning_rate, \
            has_batchnorm, say
        self.on_train_begin(None)

    def on_train_begin(self, state: TrainState | None) -> None:
        self.told: set[str] = set()

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: TrainState) -> None:
        accuracy, val_accuracy = logs.get("accuracy"), logs.get("val_accuracy")
        if epoch == 0 and accuracy is not None and accuracy < self.chance + CHANCE_MARGIN:
            self._tell("chance", f"hint: accuracy {accuracy:.3f} after epoch 1 is chance for "
                       f"{round(1 / self.chance)} classes; if it stays there, the learning rate "
                       f"{self.learning_rate:g} is the usual cause: try --lr {self.learning_rate / 10:g} (too high "
                       f"stalls a network, as 1e-3 does AlexNet and VGG16) or --lr {self.learning_rate * 10:g} "
                       f"(too low barely moves it)")
        if (self.has_batchnorm and accuracy is not None and val_accuracy is not None
                and val_accuracy < self.chance + CHANCE_MARGIN and accuracy > val_accuracy + TRAIN_VAL_GAP):
            self._tell("batchnorm", f"hint: training accuracy {accuracy:.3f} but validation {val_accuracy:.3f} "
                       f"(epoch {epoch + 1}): BatchNorm's moving statistics, which evaluation uses, have not "
                       f"settled yet after few steps; train more epochs")

    def _tell(self, key: str, line: str) -> None:
        if key not in self.told:
            self.told.add(key)
            self.say(line)
