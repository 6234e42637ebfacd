"""How `fit` shows its progress: tqdm bars for the CLI, Keras's progress bar for the Keras API.

Both take the same three calls from the loop: `start(epoch, epochs, steps, done)` when an epoch
begins, `step(step, metrics)` after every step (`metrics` only where the loop synchronized, else
None), and `end(logs, seconds)` with the epoch's logs. `verbose` is Keras's: 0 silent, 1 a live
bar, 2 one line per epoch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from tqdm import tqdm

__all__ = ["Progress", "TqdmProgress", "KerasProgbar"]


class Progress(Protocol):
    def start(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...

    def step(self, step: int, metrics: dict[str, float] | None) -> None: ...

    def end(self, logs: dict[str, float], seconds: float) -> None: ...


class TqdmProgress:
    """The CLI's bars on stderr (few lines when stderr is a log file, not a terminal)."""

    def __init__(self, verbose: int) -> None:
        self.verbose = verbose
        self.bar: tqdm | None = None
        self.epoch, self.epochs = 0, 0

    def start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        self.epoch, self.epochs = epoch, epochs
        self.bar = tqdm(total=steps, initial=done, desc=f"Epoch {epoch + 1}/{epochs}", disable=self.verbose != 1,
                        file=sys.stderr, leave=True, dynamic_ncols=True,
                        mininterval=0.1 if sys.stderr.isatty() else 5.0)

    def step(self, step: int, metrics: dict[str, float] | None) -> None:
        assert self.bar is not None
        if metrics is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=False)
        self.bar.update(1)

    def end(self, logs: dict[str, float], seconds: float) -> None:
        assert self.bar is not None
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
        self.bar.close()
        if self.verbose == 2:
            print(f"epoch {self.epoch + 1}/{self.epochs} " + " ".join(f"{k}={v:.4g}" for k, v in logs.items()),
                  file=sys.stderr)


class KerasProgbar:
    """Keras's `Epoch 1/5` and `1688/1688 [==============================] - 9s 5ms/step - loss: 0.2119 - ...`.

    On a terminal the bar is redrawn in place at most every `interval` seconds; elsewhere (a log,
    a notebook's captured output) only the finished line is written, as Keras does.
    """

    WIDTH = 30  # characters of "=" in Keras's bar

    def __init__(self, verbose: int, stream: TextIO | None = None, interval: float = 0.1,
                 names: Callable[[dict[str, float]], dict[str, float]] | None = None) -> None:
        self.verbose, self.stream, self.interval = verbose, stream or sys.stdout, interval
        self.names = names or (lambda logs: logs)  # the front end's metric names (Keras: acc, learning_rate)
        self.steps, self.started, self.shown = 0, 0.0, 0.0
        self.metrics: dict[str, float] = {}

    def start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        self.steps, self.started, self.shown, self.metrics = steps, time.perf_counter(), 0.0, {}
        if self.verbose:
            print(f"Epoch {epoch + 1}/{epochs}", file=self.stream, flush=True)

    def step(self, step: int, metrics: dict[str, float] | None) -> None:
        if metrics is not None:
            self.metrics = metrics
        now = time.perf_counter()
        if self.verbose == 1 and self.stream.isatty() and now - self.shown >= self.interval and step < self.steps:
            self.shown = now
            eta = (now - self.started) / step * (self.steps - step)
            print(f"\r{self._bar(step)} - ETA: {eta:.0f}s{_pairs(self.names(self.metrics))}", end="",
                  file=self.stream, flush=True)

    def _bar(self, step: int) -> str:
        return _bar_text(step, self.steps, self.WIDTH)

    def end(self, logs: dict[str, float], seconds: float) -> None:
        per_step, logs = seconds / max(self.steps, 1), self.names(logs)
        if self.verbose == 1:
            redraw = "\r" if self.stream.isatty() else ""  # over the live bar; a log gets the line alone
            print(f"{redraw}{self._bar(self.steps)} - {seconds:.0f}s {_per_step(per_step)}{_pairs(logs)}",
                  file=self.stream, flush=True)
        elif self.verbose == 2:
            print(f"{self.steps}/{self.steps} - {seconds:.0f}s - {_per_step(per_step)}{_pairs(logs)}",
                  file=self.stream, flush=True)


def _pairs(logs: dict[str, float]) -> str:
    return "".join(f" - {k}: {v:.4f}" for k, v in logs.items())


def _per_step(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms/step" if seconds >= 1e-3 else f"{seconds * 1e6:.0f}us/step"


def _bar_text(step: int, steps: int, width: int) -> str:
    digits = len(str(steps))
    filled = width * step // max(steps, 1)
    arrow = ">" if step < steps else ""
    return f"{step:>{digits}}/{steps} [" + "=" * max(filled - len(arrow), 0) + arrow + "." * (width - filled) + "]"

