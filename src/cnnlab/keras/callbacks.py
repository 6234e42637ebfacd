"""Keras's callbacks (`keras.callbacks.EarlyStopping(...)`, ...) with Keras's arguments, on cnnlab's engine.

The built-in ones are cnnlab's own callbacks (training/callbacks.py) under Keras's signatures, so
their state checkpoints and resumes like the CLI's. A user's own `Callback` subclass keeps Keras's
hooks, `on_epoch_end(self, epoch, logs)` and the rest, with `self.model` set and
`self.model.stop_training = True` honoured; `Bridge` connects it to the loop and gives every
callback the logs under Keras's names (`accuracy` or `acc`, `val_*`, `learning_rate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.training import callbacks as engine
from cnnlab.training.checkpoint import read_checkpoint
from cnnlab.training.tensorboard import TensorBoard as EngineTensorBoard
from cnnlab.training.tensorboard import tensorboard_available

__all__ = ["Callback", "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "CSVLogger", "TensorBoard",
           "LearningRateScheduler", "TerminateOnNaN", "BackupAndRestore", "LambdaCallback", "History", "Bridge"]


class Callback:
    """Base class of a user's callback, as Keras's: override the hooks you need.

    >>> class Stop(Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         if logs["loss"] < 0.1:
    ...             self.model.stop_training = True
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None: ...
    def on_train_end(self, logs: dict[str, float] | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        self.on_batch_end(batch, logs)  # Keras's default: the older name's hook

    def on_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None: ...


class History(Callback):
    """What `fit` returns: `.history` (metric name -> one value per epoch), `.epoch`, `.params`, `.model`."""

    def __init__(self, history: dict[str, list[float]], epochs: list[int], params: dict[str, Any],
                 model: Any) -> None:
        super().__init__()
        self.history, self.epoch, self.params, self.model = history, epochs, params, model


class EarlyStopping(engine.EarlyStopping):
    """Keras's EarlyStopping. Restores the best epoch's weights at the end (with restore_best_weights)."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:
        self.baseline, self.start_from_epoch, self.verbose = baseline, start_from_epoch, verbose
        super().__init__(monitor, patience, min_delta, mode, restore_best_weights)

    def on_train_begin(self, state: engine.TrainState | None) -> None:
        super().on_train_begin(state)
        if self.baseline is not None:
            self.tracker.best = self.baseline  # Keras: stop unless the baseline is beaten within `patience`

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: engine.TrainState) -> None:
        if epoch >= self.start_from_epoch:
            super().on_epoch_end(epoch, logs, state)

    def on_train_end(self, state: engine.TrainState) -> None:
        super().on_train_end(state)
        if self.verbose and self.stopped_epoch >= 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.verbose and self.restore_best_weights and self.best_state is not None:
            print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")


class ReduceLROnPlateau(engine.ReduceLROnPlateau):
    """Keras's ReduceLROnPlateau."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        self.verbose = verbose
        super().__init__(monitor, factor, patience, min_delta, cooldown, min_lr, mode)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: engine.TrainState) -> None:
        before = state.lr
        super().on_epoch_end(epoch, logs, state)
        if self.verbose and state.lr != before:
            print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {state.lr}.")


class ModelCheckpoint(engine.ModelCheckpoint):
    """Keras's ModelCheckpoint; `filepath` may name the epoch and logs: "model-{epoch:02d}-{val_loss:.2f}.keras"."""

    def __init__(self, filepath: str | Path, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str = "epoch") -> None:
        if save_freq != "epoch":
            raise CnnlabError(f"ModelCheckpoint: save_freq={save_freq!r} is not supported; use 'epoch'")
        self.template, self.verbose, self.weights_only = str(filepath), verbose, save_weights_only
        super().__init__(filepath, self._write, monitor, save_best_only, mode)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: engine.TrainState) -> None:
        try:
            self.path = Path(self.template.format(epoch=epoch + 1, **logs))
        except (KeyError, IndexError, ValueError) as exc:
            raise CnnlabError(f"ModelCheckpoint: cannot fill in {self.template!r} ({exc!r}); name only epoch and "
                              f"logged metrics {sorted(logs)}") from None
        super().on_epoch_end(epoch, logs, state)
        if self.verbose and self.saved_epoch == epoch:
            print(f"\nEpoch {epoch + 1}: saving model to {self.path}")

    def _write(self, model: Any, path: Path) -> None:  # the loop's model is the Keras model itself
        model.save_weights(path) if self.weights_only else model.save(path)


class CSVLogger(engine.CSVLogger):
    """Keras's CSVLogger (one row per epoch; `append` continues an existing file)."""

    def __init__(self, filename: str | Path, separator: str = ",", append: bool = False) -> None:
        if separator != ",":
            raise CnnlabError(f"CSVLogger: separator {separator!r} is not supported; use ','")
        self.append = append
        super().__init__(filename)

    def on_train_begin(self, state: engine.TrainState | None) -> None:
        super().on_train_begin(state)
        if getattr(self, "append", False) and self.path.is_file() and self.path.stat().st_size:
            lines = self.path.read_text().splitlines()
            self.fields, self.rows = lines[0].split(","), len(lines) - 1


class TensorBoard(EngineTensorBoard):
    """Keras's TensorBoard: loss, accuracy and learning rate per epoch under `log_dir` (needs `tensorboard`)."""

    def __init__(self, log_dir: str | Path = "logs", **ignored: Any) -> None:
        if not tensorboard_available():
            raise CnnlabError("TensorBoard needs the tensorboard package: pip install 'cnnlab[tensorboard]'")
        super().__init__(log_dir)


class LearningRateScheduler(engine.Callback):
    """Keras's LearningRateScheduler: `schedule(epoch, lr)` (or `schedule(epoch)`) sets each epoch's rate."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch: int, state: engine.TrainState) -> None:
        try:
            lr = self.schedule(epoch, state.lr)
        except TypeError:  # Keras 2 also accepted a one-argument schedule
            lr = self.schedule(epoch)
        if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise CnnlabError(f"LearningRateScheduler: the schedule returned {lr!r} for epoch {epoch}; "
                              f"it must return a learning rate > 0")
        state.lr = float(lr)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {state.lr}.")


class TerminateOnNaN(engine.Callback):
    """Keras's TerminateOnNaN: a NaN or infinite loss ends `fit` (which returns the history so far).

    cnnlab always stops there (and never writes non-finite weights); with this callback `fit`
    returns instead of raising, as Keras's does.
    """


class BackupAndRestore(engine.Callback):
    """Keras's BackupAndRestore: a `fit` that was killed continues from its last epoch when run again.

    Backed by cnnlab's exact resume: the checkpoint in `backup_dir` holds weights, optimizer
    moments, callback counters, random states and the epoch; it is deleted when `fit` finishes.
    """

    def __init__(self, backup_dir: str | Path, save_freq: str = "epoch", delete_checkpoint: bool = True) -> None:
        if save_freq != "epoch":
            raise CnnlabError(f"BackupAndRestore: save_freq={save_freq!r} is not supported; use 'epoch'")
        self.backup_dir, self.delete_checkpoint = Path(backup_dir), delete_checkpoint

    def existing(self) -> Any:
        """The checkpoint a killed fit left, or None."""
        if not (self.backup_dir / "checkpoint.json").is_file():
            return None
        return read_checkpoint(self.backup_dir)


class LambdaCallback(Callback):
    """Keras's LambdaCallback: functions for the hooks, e.g. LambdaCallback(on_epoch_end=lambda epoch, logs: ...)."""

    def __init__(self, on_epoch_begin: Callable[..., Any] | None = None, on_epoch_end: Callable[..., Any] | None = None,
                 on_batch_begin: Callable[..., Any] | None = None, on_batch_end: Callable[..., Any] | None = None,
                 on_train_begin: Callable[..., Any] | None = None, on_train_end: Callable[..., Any] | None = None,
                 **others: Callable[..., Any]) -> None:
        super().__init__()
        hooks = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end, "on_batch_begin": on_batch_begin,
                 "on_batch_end": on_batch_end, "on_train_begin": on_train_begin, "on_train_end": on_train_end,
                 **others}
        for name, function in hooks.items():
            if function is not None:
                if not hasattr(Callback, name):
                    raise CnnlabError(f"LambdaCallback: unknown hook {name!r}")
                setattr(self, name, function)


# ----------------------------------------------------------------------------------------------------------
# Connecting callbacks to the loop


class Bridge(engine.Callback):
    """One callback as the loop sees it: Keras's hooks for a user's Callback, Keras's log names for all."""

    def __init__(self, inner: Any, model: Any, rename: Callable[[dict[str, float]], dict[str, float]],
                 params: dict[str, Any]) -> None:
        self.keras_style = isinstance(inner, Callback)
        if not self.keras_style and not isinstance(inner, engine.Callback):
            raise CnnlabError(f"callbacks must be keras.callbacks objects (EarlyStopping(...), a Callback "
                              f"subclass, ...); got {type(inner).__name__}")
        self.inner: Any = inner
        self.model, self.rename = model, rename
        if self.keras_style:
            self.inner.set_model(model)
            self.inner.set_params(params)
        self.batch_hooks = self.keras_style and (_overrides(self.inner, "on_train_batch_end")
                                                 or _overrides(self.inner, "on_batch_end"))

    def on_train_begin(self, state: engine.TrainState | None) -> None:
        if self.keras_style:
            self.model.stop_training = False
            self.inner.on_train_begin({})
            self._stop(state)
        else:
            self.inner.on_train_begin(state)

    def on_epoch_begin(self, epoch: int, state: engine.TrainState) -> None:
        if self.keras_style:
            self.inner.on_epoch_begin(epoch, {})
            self._stop(state)
        else:
            self.inner.on_epoch_begin(epoch, state)

    def on_train_batch_end(self, step: int, logs: dict[str, float], state: engine.TrainState) -> None:
        if self.batch_hooks:
            self.inner.on_train_batch_end(step, self.rename(logs))
            self._stop(state)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: engine.TrainState) -> None:
        if self.keras_style:
            self.inner.on_epoch_end(epoch, self.rename(logs))
            self._stop(state)
        else:
            self.inner.on_epoch_end(epoch, self.rename(logs), state)

    def on_train_end(self, state: engine.TrainState) -> None:
        if self.keras_style:
            self.inner.on_train_end({})
        else:
            self.inner.on_train_end(state)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.keras_style else self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.keras_style:
            self.inner.load_state_dict(state)

    def _stop(self, state: engine.TrainState | None) -> None:
        if state is not None and getattr(self.model, "stop_training", False):
            state.stop_training = True


def _overrides(callback: Any, hook: str) -> bool:
    return getattr(type(callback), hook) is not getattr(Callback, hook) or hook in vars(callback)

