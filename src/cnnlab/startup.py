"""How long a command takes to start working: its process's start, and the end of a run's first optimizer step.

A training run records `seconds_to_first_step` in its metrics.json: from the start of the `cnnlab` process
(the Python interpreter's own start included) to the end of the first optimizer step, so a slow import,
decode or build before training shows as a number. Importing this module imports no torch.

>>> 0.0 <= time.perf_counter() - process_started() < 3600 * 24 * 365
True
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["process_started", "FirstStep", "first_step_clock"]


def process_started() -> float:
    """This process's start as a time.perf_counter() value (Linux: from /proc, 10 ms steps), else now."""
    try:
        with open("/proc/self/stat") as stat:  # field 22, starttime: clock ticks after boot
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc, or no CLOCK_BOOTTIME (macOS)
        age = 0.0
    return time.perf_counter() - max(age, 0.0)


@dataclass
class FirstStep:
    """When the first optimizer step ended, against when the work started (both time.perf_counter() values)."""

    started: float
    at: float | None = None  # None: no step yet

    def seconds(self) -> float | None:
        return None if self.at is None else self.at - self.started


@contextlib.contextmanager
def first_step_clock(model: Any, started: float) -> Iterator[FirstStep]:
    """While open, note when the first optimizer step over `model`'s parameters ends.

    It is a global optimizer hook, removed at that step: a batch callback would cost a synchronization
    per step (Callback.on_train_batch_end), and a new callback would change the callback list that
    checkpoints record. Other optimizers stepping meanwhile (another model's) are not counted.

    >>> import torch
    >>> model = torch.nn.Linear(1, 1)
    >>> with first_step_clock(model, time.perf_counter()) as clock:
    ...     torch.optim.SGD(model.parameters(), lr=0.1).step()
    >>> clock.seconds() is not None
    True
    """
    from torch.optim.optimizer import register_optimizer_step_post_hook

    clock = FirstStep(started)
    params = {id(p) for p in model.parameters()}

    def stepped(optimizer: Any, args: Any, kwargs: Any) -> None:
        if clock.at is None and any(id(p) in params for group in optimizer.param_groups for p in group["params"]):
            clock.at = time.perf_counter()
            handle.remove()

    handle = register_optimizer_step_post_hook(stepped)
    try:
        yield clock
    finally:
        handle.remove()
