"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is two files in the run directory: `checkpoint-E<epoch>-S<step>-<id>.safetensors`
(every tensor: weights, optimizer moments, RNG states, the epoch's running sums) and
`checkpoint.json` (everything else, plus that file's name and sha256). Both are written to a
temporary file, fsynced and renamed; the JSON goes last and is the commit point, so a run killed
or out of disk at any moment keeps its previous complete checkpoint. Loading reads safetensors and
JSON only: nothing is unpickled, and a changed byte fails a sha256 check: the JSON records the
tensor file's digest and its own (`manifest_sha256`, over its other entries), so a hand-edited
checkpoint.json is refused in one line instead of failing somewhere inside the restore.

Exactness: the epoch's data order is a function of (seed, epoch) (`epoch_order`), so a resumed
epoch skips the batches it already trained on; augmentation and dropout draw from torch's global
RNGs, whose states are saved. A resumed CPU run then ends with the same weights, bit for bit, as
an uninterrupted one (tests/test_resume.py). Not exact: folder datasets streamed with --workers > 0
and augmentation (the DataLoader seeds its workers from a fresh draw when the epoch resumes).

Gathering (`gather_checkpoint`) and writing (`write_checkpoint`) are separate so a distributed run
can gather on every rank and let rank 0 alone write.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from cnnlab.errors import CnnlabError, first_line
from cnnlab.fileio import atomic_write
from cnnlab.rundir import read_json
from cnnlab.training.callbacks import Callback, TrainState
from cnnlab.training.distributed import all_reduce_sums, gather_objects, is_main, rank, seed_ranks, world_size

__all__ = ["Position", "LoopParts", "Checkpoint", "Checkpointer", "TrainingInterrupted", "catch_sigint", "epoch_order",
           "gather_checkpoint", "write_checkpoint", "read_checkpoint", "remove_checkpoint", "check_writable",
           "pack", "unpack", "pack_optimizer", "load_optimizer", "manifest_digest",
           "CHECKPOINT_JSON", "FORMAT"]

FORMAT = "cnnlab-checkpoint/1"
CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_GAP = 10.0  # an epoch-end checkpoint waits until this many times the last write's duration has passed
_TENSOR = "__tensor__"  # JSON placeholder: {"__tensor__": key} stands for that entry of the safetensors file


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of `epoch`: a function of (seed, epoch) only, so a resumed run rebuilds it.

    >>> [torch.equal(epoch_order(10, 3, 1), epoch_order(10, 3, e)) for e in (1, 0)]
    [True, False]
    """
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=generator)


@dataclass
class Position:
    """Where a run stands: `step` batches of epoch `epoch` (0-based) done, with that epoch's running sums."""

    epoch: int = 0
    step: int = 0
    seen: int = 0
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    correct: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    elapsed: float = 0.0     # seconds spent in this epoch before the checkpoint


@dataclass
class LoopParts:
    """Everything with state that `fit` owns; a checkpoint saves and restores all of it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any                      # an LR scheduler with state_dict(), or None
    scaler: torch.amp.GradScaler | None
    callbacks: list[Callback]
    state: TrainState
    history: dict[str, list[float]]     # this fit's History.history (filled in place on resume)
    epoch_seconds: list[float]
    order_seed: int
    steps_per_epoch: int


@dataclass
class Checkpoint:
    """A checkpoint in memory: safetensors-ready tensors and JSON-ready metadata."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def run(self) -> dict[str, Any]:
        """What the caller of `fit` stored with it (jobs: the phase, earlier phases' history)."""
        return dict(self.meta["run"])

    def where(self) -> str:
        p = self.meta["position"]
        return f"epoch {p['epoch'] + 1}, step {p['step']}" if p["step"] else f"end of epoch {p['epoch']}"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`: a checkpoint was saved; `resume_command` continues the run."""

    def __init__(self, directory: Path) -> None:
        super().__init__(f"interrupted; checkpoint saved in {directory}")
        self.resume_command = f"cnnlab train --resume {directory}"


def pack(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` with every tensor moved into `tensors` (under a dotted key) and replaced by a placeholder.

    >>> tensors = {}; pack({"w": torch.ones(2), "n": 3}, "model", tensors), list(tensors)
    ({'w': {'__tensor__': 'model.w'}, 'n': 3}, ['model.w'])
    >>> unpack({'w': {'__tensor__': 'model.w'}, 'n': 3}, tensors)["w"].tolist()
    [1.0, 1.0]
    """
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().cpu().contiguous().clone()
        return {_TENSOR: prefix}
    if isinstance(value, dict):
        return {str(k): pack(v, f"{prefix}.{k}", tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [pack(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]
    return value


def unpack(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`pack`'s inverse: placeholders replaced by their tensors (JSON turned tuples into lists)."""
    if isinstance(value, dict):
        if set(value) == {_TENSOR}:
            return tensors[value[_TENSOR]]
        return {k: unpack(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [unpack(v, tensors) for v in value]
    return value


def _check_finite(model: nn.Module, position: Position) -> None:
    """Never save a broken state: the loss or a weight that is NaN/inf stops the run instead."""
    broken = not bool(torch.isfinite(position.loss_sum)) or any(
        not bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())
    if broken:
        raise CnnlabError(f"the loss or the weights became NaN/inf by epoch {position.epoch + 1}, step "
                          f"{position.step}; lower the learning rate (--lr) or check the data")


def gather_checkpoint(parts: LoopParts, position: Position, global_step: int,
                      run: dict[str, Any] | None = None) -> Checkpoint:
    """Everything needed to resume `fit` at `position` (on every rank; `write_checkpoint` on one)."""
    _check_finite(parts.model, position)
    tensors: dict[str, torch.Tensor] = {}
    meta = {
        "format": FORMAT, "global_step": global_step, "order_seed": parts.order_seed,
        "steps_per_epoch": parts.steps_per_epoch, "run": run or {},
        "position": {"epoch": position.epoch, "step": position.step, "seen": position.seen,
                     "elapsed": position.elapsed},
        "model": pack(parts.model.state_dict(), "model", tensors),
        "optimizer": pack_optimizer(parts.optimizer, "optimizer", tensors),
        "scheduler": None if parts.scheduler is None else parts.scheduler.state_dict(),
        "scaler": None if parts.scaler is None else parts.scaler.state_dict(),
        "callbacks": [{"type": type(cb).__name__, "state": pack(cb.state_dict(), f"callbacks.{i}", tensors)}
                      for i, cb in enumerate(parts.callbacks)],
        "train_state": {"lr": parts.state.lr, "stop_training": parts.state.stop_training},
        "history": parts.history, "epoch_seconds": parts.epoch_seconds,
        # distributed: every rank's stream (they differ, see seed_ranks), in rank order; else one
        "rng": pack(_rng_states(), "rng", tensors) if world_size() == 1 else
               pack(gather_objects(_rng_states()), "rng", tensors),
        "sums": pack({"loss_sum": position.loss_sum, "correct": position.correct}, "sums", tensors),
    }
    return Checkpoint(tensors, json.loads(json.dumps(meta)))  # a deep copy: later training cannot change it


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng(saved: dict[str, Any] | list[dict[str, Any]], fresh_seed: int) -> None:
    """Put back this process's random stream: its own rank's when the checkpoint has one per rank.

    A run resumed on another number of processes shards its batches differently anyway (not bit
    for bit); each rank then starts a fresh stream from `fresh_seed`.
    """
    ranks = saved if isinstance(saved, list) else [saved]
    if len(ranks) != world_size():
        if world_size() == 1:
            torch.manual_seed(fresh_seed % 2**63)
        else:
            seed_ranks(fresh_seed)
        return
    states = ranks[rank()]
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and torch.cuda.device_count() == len(states["cuda"]):
        torch.cuda.set_rng_state_all(states["cuda"])


def restore_checkpoint(checkpoint: Checkpoint, parts: LoopParts) -> Position:
    """Put the saved state back into `parts`; return the position to continue from."""
    meta, tensors = checkpoint.meta, checkpoint.tensors
    if meta["steps_per_epoch"] != parts.steps_per_epoch or len(meta["callbacks"]) != len(parts.callbacks):
        raise CnnlabError(f"the checkpoint was taken with {meta['steps_per_epoch']} steps per epoch and "
                          f"{len(meta['callbacks'])} callbacks, this run has {parts.steps_per_epoch} and "
                          f"{len(parts.callbacks)}; resume with the run's own settings")
    try:
        parts.model.load_state_dict(unpack(meta["model"], tensors))
    except RuntimeError as exc:
        raise CnnlabError(f"the checkpoint's weights do not fit this model: {first_line(exc)}") from None
    load_optimizer(parts.optimizer, meta["optimizer"], tensors)
    if parts.scheduler is not None:
        parts.scheduler.load_state_dict(meta["scheduler"])
    if parts.scaler is not None:
        parts.scaler.load_state_dict(meta["scaler"])
    for cb, saved in zip(parts.callbacks, meta["callbacks"], strict=True):
        cb.load_state_dict(unpack(saved["state"], tensors))
    parts.state.lr, parts.state.stop_training = meta["train_state"]["lr"], meta["train_state"]["stop_training"]
    parts.history.clear()
    parts.history.update({k: list(v) for k, v in meta["history"].items()})
    parts.epoch_seconds[:] = meta["epoch_seconds"]
    parts.order_seed = meta["order_seed"]
    _restore_rng(unpack(meta["rng"], tensors), fresh_seed=parts.order_seed + int(meta["global_step"]))
    sums, p = unpack(meta["sums"], tensors), meta["position"]
    parts.state.epoch = p["epoch"]
    return Position(p["epoch"], p["step"], p["seen"], sums["loss_sum"], sums["correct"], p["elapsed"])


def pack_optimizer(optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """An optimizer's state_dict for a checkpoint: moments into `tensors`, the rest JSON-ready."""
    state = optimizer.state_dict()
    return {"state": pack(state["state"], prefix, tensors), "param_groups": state["param_groups"]}


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Put `pack_optimizer`'s record back into `optimizer` (its parameters keep their memory layout)."""
    groups = [{k: tuple(v) if isinstance(now.get(k), tuple) else v for k, v in group.items()}
              for group, now in zip(saved["param_groups"], optimizer.param_groups, strict=True)]
    state = {int(k): v for k, v in unpack(saved["state"], tensors).items()}
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    _match_layouts(optimizer)


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each moment its parameter's memory layout (channels_last on CPU/CUDA): checkpoints store them
    contiguous, and the fused Adam kernel walks a moment and its parameter as flat memory, so a layout
    mismatch pairs the wrong elements (measured: the resumed loss drifted in the 3rd digit)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def write_checkpoint(directory: Path, checkpoint: Checkpoint) -> Path:
    """Write `checkpoint` into `directory` durably; return the tensor file. The previous one survives failures.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> ck = Checkpoint({"w": torch.ones(2)}, {"format": FORMAT, "position": {"epoch": 1, "step": 0}})
    >>> write_checkpoint(d, ck).name.startswith("checkpoint-E1-S0-"), read_checkpoint(d).tensors["w"].tolist()
    (True, [1.0, 1.0])
    """
    directory = Path(directory)
    position = checkpoint.meta["position"]
    name = f"checkpoint-E{position['epoch']}-S{position['step']}-{secrets.token_hex(4)}.safetensors"
    target, manifest = directory / name, directory / CHECKPOINT_JSON
    try:
        blob = save_tensors(checkpoint.tensors, metadata={"format": FORMAT})
        atomic_write(target, lambda tmp: tmp.write_bytes(blob), fsync=True)
        meta = {**checkpoint.meta, "tensors": {"file": name, "sha256": hashlib.sha256(blob).hexdigest()}}
        meta["manifest_sha256"] = manifest_digest(meta)
        atomic_write(manifest, lambda tmp: tmp.write_text(json.dumps(meta, indent=1) + "\n"), fsync=True)
    except OSError as exc:
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)
        kept = "the previous checkpoint is kept" if manifest.is_file() else "no earlier checkpoint exists"
        raise CnnlabError(f"could not write checkpoint {target}: {exc.strerror or exc} "
                          f"({errno.errorcode.get(exc.errno or 0, 'OSError')}); {kept}; free disk space or fix "
                          f"the permissions, then resume with: cnnlab train --resume {directory}") from None
    for old in directory.glob("checkpoint-*.safetensors"):
        if old.name != name:
            with contextlib.suppress(OSError):
                old.unlink()
    return target


def manifest_digest(meta: dict[str, Any]) -> str:
    """sha256 of a checkpoint.json's entries other than `manifest_sha256` (key order and spacing do not count).

    >>> manifest_digest({"a": 1, "b": [2]}) == manifest_digest({"b": [2], "a": 1, "manifest_sha256": "x"})
    True
    """
    entries = {k: v for k, v in meta.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def read_checkpoint(directory: Path) -> Checkpoint:
    """The checkpoint in `directory`, checked (format, both sha256) and loaded without unpickling anything."""
    manifest = Path(directory) / CHECKPOINT_JSON
    if not manifest.is_file():
        raise CnnlabError(f"{directory} has no {CHECKPOINT_JSON}: the run stopped before its first checkpoint "
                          f"(written at each epoch end and every --checkpoint-every steps); start it again")
    damaged = f"checkpoint {manifest} is damaged"
    meta = read_json(manifest, fix="the run cannot be resumed, start it again")
    if "manifest_sha256" in meta and meta["manifest_sha256"] != manifest_digest(meta):
        raise CnnlabError(f"{manifest} was changed since it was written (its manifest_sha256 differs); a checkpoint "
                          f"cannot be edited by hand: put the original back, or start the run again")
    try:
        tensor_file = Path(directory) / Path(str(meta["tensors"]["file"])).name  # never a path out of the run
        expected, format_ = meta["tensors"]["sha256"], meta["format"]
    except (KeyError, TypeError) as exc:
        raise CnnlabError(f"{damaged} (cannot read it: {exc!r}); the run cannot be resumed, start it again") from None
    if format_ != FORMAT:
        raise CnnlabError(f"{damaged}: format {format_!r}, expected {FORMAT!r}; resume with the cnnlab that wrote it")
    blob = tensor_file.read_bytes() if tensor_file.is_file() else b""
    if hashlib.sha256(blob).hexdigest() != expected:
        raise CnnlabError(f"checkpoint tensors {tensor_file} are missing or changed since they were written "
                          f"(sha256 differs from {manifest}); the run cannot be resumed, start it again")
    try:
        return Checkpoint(load_tensors(blob), meta)
    except SafetensorError as exc:
        raise CnnlabError(f"{damaged} ({tensor_file}: {exc}); start the run again") from None


def remove_checkpoint(directory: Path) -> None:
    """Delete a finished run's checkpoint files (they only serve to resume)."""
    for path in [Path(directory) / CHECKPOINT_JSON, *Path(directory).glob("checkpoint-*.safetensors")]:
        path.unlink(missing_ok=True)


def check_writable(directory: Path) -> None:
    """Create `directory` and prove it takes a durable write (a probe file, fsynced, removed), or fail in one line.

    >>> import tempfile; check_writable(Path(tempfile.mkdtemp()) / "run")
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / ".write-probe", lambda tmp: tmp.write_bytes(b"\0" * 4096), fsync=True)
        (directory / ".write-probe").unlink()
    except OSError as exc:
        raise CnnlabError(f"run directory {directory} cannot be written: {exc.strerror or exc}; choose another "
                          f"--run-dir, or free disk space / fix its permissions") from None


class Checkpointer:
    """Saves `fit`'s state at epoch ends, every `every_steps` steps and on Ctrl-C; restores it on resume.

    `run` is stored with every checkpoint (jobs keep the phase and earlier phases' history there);
    `resume` is a checkpoint to continue from; `started` is the run's start on `time.perf_counter`'s clock.
    """

    def __init__(self, directory: Path, every_steps: int | None = None, run: dict[str, Any] | None = None,
                 resume: Checkpoint | None = None, started: float | None = None,
                 write: Callable[[Path, Checkpoint], Path] | None = None) -> None:
        self.directory, self.every_steps, self.run, self.resume = Path(directory), every_steps, run or {}, resume
        self.started = time.perf_counter() if started is None else started
        self.write, self.global_step, self.interrupted = write, 0, False
        self.last: Checkpoint | None = resume
        self.saved_at, self.save_seconds = -math.inf, 0.0  # the last write: when it ended, how long it took

    def restore(self, parts: LoopParts) -> Position:
        if self.resume is None:
            return Position()
        try:
            self.global_step = int(self.resume.meta["global_step"])
            position = restore_checkpoint(self.resume, parts)
        except CnnlabError as exc:  # name the file: the user may have more than one run to look at
            raise CnnlabError(f"{self.directory / CHECKPOINT_JSON}: {exc}") from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            # a checkpoint.json from before manifest_sha256, edited by hand: one line, not a traceback
            raise CnnlabError(f"{self.directory / CHECKPOINT_JSON} does not describe this run's state "
                              f"({type(exc).__name__}: {first_line(exc)}); was it edited? Start the run "
                              f"again") from None
        if not is_main():  # distributed: rank 0 carries the saved sums, so the epoch's all-reduce counts them once
            position = replace(position, seen=0, loss_sum=torch.zeros_like(position.loss_sum),
                               correct=torch.zeros_like(position.correct))
        return position

    def save(self, parts: LoopParts, position: Position) -> None:
        """Gather the state on every rank (with the epoch's sums over all ranks); rank 0 alone writes it."""
        if world_size() > 1:
            seen, loss_sum, correct = all_reduce_sums(position.seen, position.loss_sum, position.correct)
            position = replace(position, seen=int(seen), correct=torch.tensor(correct, dtype=position.correct.dtype),
                               loss_sum=torch.tensor(loss_sum, dtype=position.loss_sum.dtype))
        begun = time.perf_counter()
        checkpoint = gather_checkpoint(parts, position, self.global_step,
                                       {**self.run, "seconds": time.perf_counter() - self.started})
        if is_main():
            (self.write or write_checkpoint)(self.directory, checkpoint)
        self.last = checkpoint
        self.saved_at = time.perf_counter()
        self.save_seconds = self.saved_at - begun

    def after_step(self, parts: LoopParts, position: Position) -> None:
        """Called after each optimizer step that does not end an epoch."""
        self.global_step += 1
        if self.interrupted or (self.every_steps and self.global_step % self.every_steps == 0):
            self.save(parts, position)
        if self.interrupted:
            raise TrainingInterrupted(self.directory)

    def after_epoch(self, parts: LoopParts, position: Position, sparse: bool = False) -> None:
        """Called once an epoch's callbacks ran; `position` is the start of the next epoch.

        `sparse` (epochs that may be shorter than their checkpoint: a head trained on stored features,
        0.1 s an epoch against 0.1 s to write EfficientNet-Lite0's state): checkpoint only once
        CHECKPOINT_GAP times the last write's duration has passed since it, so writing stays under about a
        tenth of the run; a resume then repeats at most those few seconds, exactly (the data order is a
        function of the seed and the epoch). Otherwise every epoch end is checkpointed.
        """
        self.global_step += 1
        since = time.perf_counter() - self.saved_at
        if not sparse or self.interrupted or world_size() > 1 or since >= CHECKPOINT_GAP * self.save_seconds:
            self.save(parts, position)
        if self.interrupted:
            raise TrainingInterrupted(self.directory)

    def kept(self) -> str:
        """Where the last good checkpoint is, for error messages."""
        if self.last is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint ({self.last.where()}) is kept in {self.directory}"

    def stop(self) -> None:
        """Ask the loop to save and stop at its next step (what Ctrl-C does under `catch_interrupts`)."""
        self.interrupted = True

    def catch_interrupts(self) -> contextlib.AbstractContextManager[None]:
        """Ctrl-C sets a flag the loop checks at the next step (a safe point); a second Ctrl-C stops at once."""
        return catch_sigint(self.stop)


@contextlib.contextmanager
def catch_sigint(on_first: Callable[[], None]) -> Iterator[None]:
    """The first Ctrl-C calls `on_first` (the loop then stops at its next safe point); a second one stops at once.

    A KeyboardInterrupt raised wherever the signal lands can be lost (inside a finalizer Python only
    prints it) or can cut a checkpoint write short; a flag checked between steps cannot. Outside the
    main thread, where signal handlers cannot be set, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal caught
        if caught:
            raise KeyboardInterrupt
        caught = True
        on_first()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
