"""The speed-run recipe: train a `SpeedrunNet` in seconds on any in-memory dataset.

The CIFAR-10 speed-run line (tysam-code's hlb-CIFAR10, Keller Jordan's airbench94 and
airbench94_muon: 94.01% mean on CIFAR-10 in 2.59 A100-seconds, its README) applied to any
`ArrayDataset`. What the recipe does, top to bottom in `train_speedrun`:
1. The whole training set moves to the device once, as stored (uint8 stays uint8); each batch is
   indexed, scaled to [0, 1] and augmented there with whole-batch tensor ops (random mirror,
   random translate by reflect-padded crop): no per-sample Python, no loader processes.
2. The net's input normalization and frozen whitening filters come from a sample of the data.
3. Conv filters train with `Muon` (momentum orthogonalized by a Newton-Schulz iteration); the
   head, BatchNorm shifts and the whitening bias with Nesterov SGD, on the loss summed over the
   batch, so their learning rates are per example. One schedule: linear warmup, then linear
   decay to 0, set every step; the whitening bias stops training after `whiten_bias_epochs`.
4. Lookahead: every 5 steps the weights are pulled to a slow average of themselves, more
   strongly as training ends; the run ends on the averaged weights.
5. `evaluate_tta` averages logits over mirrored and 1-pixel-shifted views at test time.

>>> from cnnlab.data import load_dataset; from cnnlab.models.speedrun import SpeedrunNet
>>> from cnnlab.training.devices import resolve_runtime
>>> train = load_dataset("digits").subset(range(256))
>>> config = SpeedrunConfig(epochs=1, batch_size=128, widths=(8, 16, 16), flip=False)
>>> net = SpeedrunNet(train.input_shape, train.num_classes, config.widths)
>>> history = train_speedrun(net, train, config, resolve_runtime("cpu", "fp32"))
>>> sorted(history.history)
['accuracy', 'loss']
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data import ArrayDataset, ImageDataset, float_images
from cnnlab.data.augment import random_crop, random_cutout, random_flip
from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.models.speedrun import DEFAULT_WIDTHS, SpeedrunNet, init_whitening
from cnnlab.training.checkpoint import (
    FORMAT, Checkpoint, TrainingInterrupted, catch_sigint, load_optimizer, pack, pack_optimizer, unpack,
    write_checkpoint,
)
from cnnlab.training.devices import Runtime, resolve_runtime
from cnnlab.training.loop import History, Scores, evaluate
from cnnlab.training.muon import Muon

__all__ = ["SpeedrunConfig", "SpeedrunCheckpoints", "train_speedrun", "evaluate_tta", "time_training_steps",
           "augment_batch", "epoch_batches", "tta_logits", "lr_factor", "Lookahead", "TTA_LEVELS",
           "smoothed_loss_floor"]

TTA_LEVELS = (0, 1, 2)         # 0: the image; 1: + its mirror; 2: + mirrors of 1-pixel shifts (airbench's levels)
WHITEN_SAMPLE = 5000           # images whose patches set the whitening filters: airbench94's count (a 10th of CIFAR-10)
EVAL_BATCH = 1000              # images per evaluation forward pass: memory only, results do not depend on it
LOOKAHEAD_EVERY = 5            # steps between lookahead pulls (airbench94's)
LOOKAHEAD_BASE = 0.95          # airbench94's pull strength 0.95**5 * progress**3: 0 at the start, 0.77 at the end
THROUGHPUT_WARMUP_STEPS = 10   # untimed steps first: cuDNN autotuning and torch.compile happen in them


@dataclass
class SpeedrunConfig:
    """Every setting of the speed-run recipe, with its unit and where its default comes from.

    Defaults are airbench94's CIFAR-10 recipe (batch 1024, ~10 epochs, label smoothing 0.2, SGD
    momentum 0.85, lookahead, TTA level 2) with airbench94_muon's Muon settings for conv filters.

    >>> SpeedrunConfig(batch_size=512).batch_size
    512
    >>> SpeedrunConfig(batch_szie=512)
    Traceback (most recent call last):
    TypeError: SpeedrunConfig.__init__() got an unexpected keyword argument 'batch_szie'
    """

    epochs: int = 10                 # passes over the training set: airbench94 trains CIFAR-10 for 9.9
    batch_size: int = 1024           # images per step: airbench94's (full batches only; the remainder is skipped)
    lr: float = 1.5e-3               # head, per example (loss summed): airbench94's 11.5 per 1024 / (1 + 1/(1 - 0.85))
    bias_lr: float = 0.053           # BatchNorm shifts and whitening bias, per example: airbench94_muon's
    momentum: float = 0.85           # Nesterov SGD momentum for head and biases: airbench94's
    weight_decay: float = 2e-6       # decoupled, per example: a step shrinks SGD weights by this x batch x schedule
    label_smoothing: float = 0.2     # fraction of target mass spread over all classes: airbench94's
    warmup_fraction: float = 0.1     # of all steps, learning rates ramp linearly from ~0 before decaying linearly to 0
    muon_lr: float = 0.24            # conv filters: step relative to filter norm (held at sqrt(out)): airbench94_muon
    muon_momentum: float = 0.6       # Nesterov momentum of the Muon updates: airbench94_muon's
    lookahead: bool = True           # average the weights as airbench94 does (every 5 steps, stronger at the end)
    whiten_bias_epochs: float = 3.0  # epochs the whitening bias trains before it freezes: airbench94's
    tta_level: int = 2               # test-time augmentation for the final evaluation (see TTA_LEVELS): airbench94's
    flip: bool = True                # random horizontal mirror in training and mirrored TTA views; off for digits, text
    translate: int = 2               # pixels: random shift (reflect-padded crop) up to this far each way: airbench94's
    cutout: int = 0                  # pixels: side of a random square set to 0 per image (airbench96: 12 of 32); 0 off
    widths: tuple[int, int, int] = DEFAULT_WIDTHS  # channels of the three blocks: airbench94's 64/256/256
    seed: int | None = 0             # data order and augmentation draws; None draws a fresh seed

    def __post_init__(self) -> None:
        if isinstance(self.widths, list):  # from JSON
            self.widths = tuple(self.widths)  # type: ignore[assignment]
        _check_config(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SpeedrunConfig:
        """A config from a mapping (a config file's section); unknown keys fail naming the closest valid ones.

        >>> SpeedrunConfig.from_dict({"epochs": 3, "widths": [8, 16, 16]}).widths
        (8, 16, 16)
        """
        names = [f.name for f in fields(cls)]
        for key in values:
            if key not in names:
                raise CnnlabError(f"unknown speedrun setting {key!r}.{did_you_mean(str(key), names)} "
                                  f"Valid settings: {', '.join(names)}")
        return cls(**values)


def _check_config(c: SpeedrunConfig) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    rules: list[tuple[str, bool, str]] = [
        ("epochs", is_int(c.epochs) and c.epochs >= 1, "an integer >= 1, e.g. 10"),
        ("batch_size", is_int(c.batch_size) and c.batch_size >= 2,
         "an integer >= 2 (BatchNorm needs 2 images), e.g. 1024"),
        ("lr", is_number(c.lr) and c.lr > 0, "a number > 0 (per example), e.g. 1.5e-3"),
        ("bias_lr", is_number(c.bias_lr) and c.bias_lr > 0, "a number > 0 (per example), e.g. 0.053"),
        ("momentum", is_number(c.momentum) and 0 <= c.momentum < 1, "a number in [0, 1), e.g. 0.85"),
        ("weight_decay", is_number(c.weight_decay) and c.weight_decay >= 0, "a number >= 0 (per example), e.g. 2e-6"),
        ("label_smoothing", is_number(c.label_smoothing) and 0 <= c.label_smoothing < 1,
         "a number in [0, 1), e.g. 0.2"),
        ("warmup_fraction", is_number(c.warmup_fraction) and 0 <= c.warmup_fraction < 1,
         "a number in [0, 1), e.g. 0.1"),
        ("muon_lr", is_number(c.muon_lr) and c.muon_lr > 0, "a number > 0, e.g. 0.24"),
        ("muon_momentum", is_number(c.muon_momentum) and 0 <= c.muon_momentum < 1, "a number in [0, 1), e.g. 0.6"),
        ("lookahead", isinstance(c.lookahead, bool), "True or False"),
        ("whiten_bias_epochs", is_number(c.whiten_bias_epochs) and c.whiten_bias_epochs >= 0, "a number >= 0, e.g. 3"),
        ("tta_level", c.tta_level in TTA_LEVELS and is_int(c.tta_level), "0 (none), 1 (+ mirror) or 2 (+ shifts)"),
        ("flip", isinstance(c.flip, bool), "True or False"),
        ("translate", is_int(c.translate) and c.translate >= 0, "a whole number of pixels >= 0, e.g. 2"),
        ("cutout", is_int(c.cutout) and c.cutout >= 0, "a whole number of pixels >= 0, e.g. 8 (0: off)"),
        ("widths", isinstance(c.widths, tuple) and len(c.widths) == 3 and all(is_int(w) and w > 0 for w in c.widths),
         "three positive channel counts, e.g. (64, 256, 256)"),
        ("seed", c.seed is None or is_int(c.seed), "an integer or None"),
    ]
    for name, ok, expected in rules:
        if not ok:
            raise CnnlabError(f"SpeedrunConfig.{name} must be {expected}; got {getattr(c, name)!r}")


def augment_batch(images: torch.Tensor, flip: bool, translate: int,
                  generator: torch.Generator | None = None, cutout: int = 0) -> torch.Tensor:
    """Each image of (N, C, H, W) `images` mirrored with probability 1/2, shifted by a random
    (dy, dx) in [-translate, translate]^2 (mirrored edges, Keras's 'reflect'), then a random
    `cutout` x `cutout` square set to 0 (when cutout > 0), on the images' device.

    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> torch.equal(augment_batch(x, flip=False, translate=0), x)
    True
    """
    if flip:
        images = random_flip(images, generator=generator)
    if translate:
        images = random_crop(images, translate, "reflect", generator=generator)
    if cutout:
        images = random_cutout(images, cutout, generator=generator)
    return images


def epoch_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, flip: bool, translate: int,
                  generator: torch.Generator | None = None,
                  cutout: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (augmented float images in [0, 1], labels) batches, shuffled, full batches only.

    Everything happens on the device `images` live on; a last partial batch is dropped (a tiny
    batch gives BatchNorm noisy statistics), the shuffle moves different images into it each epoch.

    >>> batches = list(epoch_batches(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10), 4,
    ...                              flip=True, translate=1))
    >>> [tuple(x.shape) for x, _ in batches], batches[0][0].dtype
    ([(4, 1, 4, 4), (4, 1, 4, 4)], torch.float32)
    """
    order = torch.randperm(len(images), device=images.device, generator=generator)
    for start in range(0, len(images) - batch_size + 1, batch_size):
        index = order[start:start + batch_size]
        yield augment_batch(float_images(images[index]), flip, translate, generator, cutout), labels[index]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """The learning-rate multiplier at 0-based `step` of `total`: linear up to 1 at step `warmup`, then down toward 0.

    >>> [round(lr_factor(s, 5, 2), 2) for s in range(5)]
    [0.33, 0.67, 1.0, 0.67, 0.33]
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return (total - step) / (total - warmup)


class Lookahead:
    """airbench94's weight averaging: `update` pulls a slow copy toward the weights and sets the weights to it."""

    def __init__(self, model: nn.Module) -> None:
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        """decay 0 leaves the weights alone; 1 replaces them by the slow copy."""
        state = model.state_dict()
        for name, slow in self.slow.items():
            slow.lerp_(state[name], 1 - decay)
            state[name].copy_(slow)


@dataclass
class _Session:
    """What one speed-run needs on the device, built by `_start`."""

    images: torch.Tensor                 # (N, C, H, W) as stored (uint8), on the device
    labels: torch.Tensor                 # (N,) on the device
    net: nn.Module                       # the model, compiled when the runtime says so
    optimizers: list[torch.optim.Optimizer]
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator
    lookahead: Lookahead | None = None
    schedule: dict[str, int] = field(default_factory=dict)  # total, warmup and whiten steps


def _start(model: SpeedrunNet, images: torch.Tensor, labels: torch.Tensor, config: SpeedrunConfig,
           runtime: Runtime, total_steps: int) -> _Session:
    seed = config.seed if config.seed is not None else secrets.randbits(31)
    generator = torch.Generator(device=runtime.device).manual_seed(seed)
    images, labels = images.to(runtime.device), labels.to(runtime.device)
    runtime.prepare(model)
    sample = torch.randperm(len(images), device=runtime.device, generator=generator)[:WHITEN_SAMPLE]
    init_whitening(model, images[sample])
    filters = [p for p in model.parameters() if p.requires_grad and p.ndim == 4]
    biases = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim == 1 and not n.startswith("whiten.")]
    decay = config.weight_decay * config.batch_size  # per step at full learning rate; SGD multiplies it by lr
    groups = [{"params": [model.head.weight], "lr": config.lr, "weight_decay": decay / config.lr},
              {"params": biases, "lr": config.bias_lr, "weight_decay": decay / config.bias_lr},
              {"params": [model.whiten.bias], "lr": config.bias_lr, "weight_decay": decay / config.bias_lr,
               "whiten": True}]
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.SGD(groups, momentum=config.momentum, nesterov=True),
        Muon(filters, lr=config.muon_lr, momentum=config.muon_momentum)]
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
    steps_per_epoch = len(images) // config.batch_size
    schedule = {"total": total_steps, "warmup": int(config.warmup_fraction * total_steps),
                "whiten": min(total_steps, math.ceil(config.whiten_bias_epochs * steps_per_epoch))}
    net = cast(nn.Module, torch.compile(model)) if runtime.compile else model
    lookahead = Lookahead(model) if config.lookahead else None
    return _Session(images, labels, net, optimizers, runtime.grad_scaler(), generator, lookahead, schedule)


def _set_learning_rates(session: _Session, step: int) -> None:
    total, warmup, whiten = session.schedule["total"], session.schedule["warmup"], session.schedule["whiten"]
    main = lr_factor(min(step, total - 1), total, warmup)
    whiten_factor = lr_factor(step, whiten, min(warmup, whiten)) if step < whiten else 0.0
    for optimizer in session.optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * (whiten_factor if group.get("whiten") else main)


def _train_step(session: _Session, images: torch.Tensor, labels: torch.Tensor, runtime: Runtime,
                label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns (summed loss, logits), detached, without a device sync."""
    with runtime.autocast():
        logits = session.net(runtime.images(images))
    # Summed, not averaged: learning rates are per example, so a bigger batch takes a bigger step.
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, reduction="sum")
    for optimizer in session.optimizers:
        optimizer.zero_grad(set_to_none=True)
    if session.scaler is None:
        loss.backward()
        for optimizer in session.optimizers:
            optimizer.step()
    else:
        session.scaler.scale(loss).backward()
        for optimizer in session.optimizers:
            session.scaler.step(optimizer)
        session.scaler.update()
    return loss.detach(), logits.detach()


@dataclass
class SpeedrunCheckpoints:
    """Where and with what a speed-run checkpoints at every epoch end (long CPU runs), and what it resumes.

    `run` is stored with each checkpoint (jobs keep the settings digest there); `started` is the
    run's start on `time.perf_counter`'s clock, so the stored seconds count earlier attempts too.
    """

    directory: Path
    run: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    resume: Checkpoint | None = None
    interrupted: bool = False  # set by Ctrl-C (or `stop`); the run stops after its current step

    def stop(self) -> None:
        self.interrupted = True

    def check(self, saved: bool) -> None:
        """Stop here if asked to: the last epoch-end checkpoint is kept (`saved`: one exists), the rest is redone."""
        if self.interrupted:
            raise TrainingInterrupted(self.directory) if saved else KeyboardInterrupt


def _snapshot(session: _Session, model: nn.Module, epoch: int, step: int, history: History,
              keep: SpeedrunCheckpoints) -> Checkpoint:
    """Everything a speed-run needs to go on after `epoch` epochs (`step` steps): a Checkpoint."""
    tensors: dict[str, torch.Tensor] = {}
    meta = {"format": FORMAT, "trainer": "speedrun", "global_step": step, "total_steps": session.schedule["total"],
            "position": {"epoch": epoch, "step": 0, "seen": 0, "elapsed": 0.0},
            "run": {**keep.run, "seconds": time.perf_counter() - keep.started},
            "history": history.history, "epoch_seconds": history.epoch_seconds,
            "model": pack(model.state_dict(), "model", tensors),
            "optimizers": [pack_optimizer(o, f"optimizers.{i}", tensors) for i, o in enumerate(session.optimizers)],
            "lookahead": None if session.lookahead is None else pack(session.lookahead.slow, "lookahead", tensors),
            "generator": pack(session.generator.get_state(), "generator", tensors),
            "scaler": None if session.scaler is None else session.scaler.state_dict()}
    return Checkpoint(tensors, json.loads(json.dumps(meta)))


def _restore(session: _Session, model: nn.Module, checkpoint: Checkpoint, history: History) -> tuple[int, int]:
    """Put a speed-run checkpoint back; return (epochs done, steps done)."""
    meta, tensors = checkpoint.meta, checkpoint.tensors
    if meta.get("trainer") != "speedrun" or meta.get("total_steps") != session.schedule["total"]:
        raise CnnlabError(f"the checkpoint was written by another trainer or schedule ({meta.get('trainer')!r}, "
                          f"{meta.get('total_steps')} steps; this run has {session.schedule['total']}); resume "
                          f"with the run's own settings")
    model.load_state_dict(unpack(meta["model"], tensors))
    for optimizer, saved in zip(session.optimizers, meta["optimizers"], strict=True):
        load_optimizer(optimizer, saved, tensors)
    if session.lookahead is not None:
        session.lookahead.slow = {k: v.to(session.images.device) for k, v in unpack(meta["lookahead"], tensors).items()}
    session.generator.set_state(unpack(meta["generator"], tensors))
    if session.scaler is not None and meta["scaler"] is not None:
        session.scaler.load_state_dict(meta["scaler"])
    history.history.update({k: list(v) for k, v in meta["history"].items()})
    history.epoch_seconds[:] = meta["epoch_seconds"]
    return int(meta["position"]["epoch"]), int(meta["global_step"])


def train_speedrun(model: SpeedrunNet, train: ArrayDataset, config: SpeedrunConfig | None = None,
                   runtime: Runtime | None = None, validation_data: ImageDataset | None = None,
                   verbose: int = 0, checkpoints: SpeedrunCheckpoints | None = None) -> History:
    """Train `model` on `train` with the speed-run recipe; per-epoch loss/accuracy (+ val_* on `validation_data`).

    The training loss is the label-smoothed loss that is optimized, and accuracy is on augmented
    batches. Validation uses no test-time augmentation; call `evaluate_tta` for the final number.
    The model ends in eval mode, on the runtime's device, holding the lookahead-averaged weights.
    With `checkpoints`, the state is saved at every epoch end and a given checkpoint is resumed
    from: the resumed run ends with the uninterrupted run's weights (on the CPU, bit for bit).
    Ctrl-C then stops after the current step (TrainingInterrupted; the part of the epoch since the
    last checkpoint is redone on resume); a second Ctrl-C stops at once.
    """
    config = config if config is not None else SpeedrunConfig()
    _check_training(model, train, config, validation_data)
    steps_per_epoch = len(train) // config.batch_size
    total = steps_per_epoch * config.epochs
    runtime = runtime if runtime is not None else resolve_runtime(steps=total)
    session = _start(model, train.images, train.labels, config, runtime, total)
    history, step, seen, first = History(), 0, steps_per_epoch * config.batch_size, 0
    if checkpoints is not None and checkpoints.resume is not None:
        first, step = _restore(session, model, checkpoints.resume, history)
    if verbose and config.label_smoothing > 0:  # else "loss=0.98 at accuracy 0.994" reads like a bug
        print(f"loss is the label-smoothed loss that is optimized (label_smoothing={config.label_smoothing:g}): "
              f"{smoothed_loss_floor(model.num_classes, config.label_smoothing):.3f} at best, even for perfect "
              f"predictions; accuracy is on augmented images; val_accuracy without test-time augmentation",
              file=sys.stderr)
    with catch_sigint(checkpoints.stop) if checkpoints is not None else contextlib.nullcontext():
        for epoch in range(first, config.epochs):
            start = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=runtime.device)
            correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
            for images, labels in epoch_batches(session.images, session.labels, config.batch_size, flip=config.flip,
                                                translate=config.translate, generator=session.generator,
                                                cutout=config.cutout):
                _set_learning_rates(session, step)
                loss, logits = _train_step(session, images, labels, runtime, config.label_smoothing)
                step += 1
                if session.lookahead is not None and step % LOOKAHEAD_EVERY == 0:
                    session.lookahead.update(model, LOOKAHEAD_BASE ** LOOKAHEAD_EVERY * (step / total) ** 3)
                loss_sum += loss
                correct += (logits.argmax(1) == labels).sum()
                if checkpoints is not None:
                    checkpoints.check(saved=epoch > 0)
            if session.lookahead is not None and step == total:
                session.lookahead.update(model, 1.0)  # end on the averaged weights
            logs = {"loss": float(loss_sum) / seen, "accuracy": int(correct) / seen}
            if not math.isfinite(logs["loss"]):
                raise CnnlabError(f"train_speedrun: the loss became {logs['loss']} in epoch {epoch + 1}; lower "
                                  f"SpeedrunConfig.lr / bias_lr / muon_lr, or check the data")
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in evaluate_tta(model, validation_data, runtime, 0).items()})
            history.append(logs)
            history.epoch_seconds.append(time.perf_counter() - start)
            if verbose:
                print(f"epoch {epoch + 1}/{config.epochs} " + " ".join(f"{k}={v:.4g}" for k, v in logs.items())
                      + f" ({history.epoch_seconds[-1]:.2f} s)", file=sys.stderr)
            if checkpoints is not None and epoch + 1 < config.epochs:  # the last epoch's result is the saved model
                snapshot = _snapshot(session, model, epoch + 1, step, history, checkpoints)
                write_checkpoint(checkpoints.directory, snapshot)
                checkpoints.check(saved=True)  # (Ctrl-C during the last epoch's validation lets the run finish)
    model.eval()
    return history


def smoothed_loss_floor(num_classes: int, label_smoothing: float) -> float:
    """The lowest mean cross-entropy reachable with `label_smoothing`: the entropy of the smoothed target.

    Smoothing moves `label_smoothing` of each target's mass evenly over all classes, so even a
    model that predicts exactly that target pays its entropy (torch's and Keras's definition).

    >>> round(smoothed_loss_floor(10, 0.2), 4), smoothed_loss_floor(10, 0.0)
    (0.8669, 0.0)
    """
    other = label_smoothing / num_classes
    true = 1.0 - label_smoothing + other
    return 0.0 - sum(p * math.log(p) for p in (true, *[other] * (num_classes - 1)) if p > 0)  # not -0.0


def tta_logits(model: nn.Module, images: torch.Tensor, level: int, flip: bool = True) -> torch.Tensor:
    """Logits for (N, C, H, W) `images` averaged over test-time views (airbench's weights).

    Level 0: the images. Level 1: + their mirror images (when `flip`). Level 2: half level 1, half
    the mean of level 1 on the images shifted one pixel down-right and one pixel up-left.
    """
    def views(batch: torch.Tensor) -> torch.Tensor:
        out = model(batch)
        return 0.5 * out + 0.5 * model(batch.flip(3)) if flip else out

    if level == 0:
        return model(images)
    logits = views(images)
    if level == 1:
        return logits
    h, w = images.shape[2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")          # (N, C, H+2, W+2)
    down_right, up_left = padded[:, :, :h, :w], padded[:, :, 2:, 2:]
    return 0.5 * logits + 0.25 * (views(down_right) + views(up_left))


@torch.no_grad()
def evaluate_tta(model: nn.Module, data: ImageDataset, runtime: Runtime | None = None, level: int = 0, *,
                 flip: bool = True, batch_size: int = EVAL_BATCH) -> Scores:
    """Mean cross-entropy and accuracy of `model` on `data` with test-time augmentation `level` (see `tta_logits`).

    `flip=False` leaves the mirrored views out (for data where mirroring changes the class).

    >>> from cnnlab.data import load_dataset; from cnnlab.models.speedrun import SpeedrunNet
    >>> data = load_dataset("digits", split="test").subset(range(8))
    >>> sorted(evaluate_tta(SpeedrunNet((28, 28, 1), 10, (8, 8, 8)), data, level=2, flip=False).keys())
    ['accuracy', 'loss']
    """
    if level not in TTA_LEVELS or isinstance(level, bool):
        raise CnnlabError(f"evaluate_tta: level must be 0 (none), 1 (+ mirror) or 2 (+ mirror and shifts); "
                          f"got {level!r}")
    runtime = runtime if runtime is not None else resolve_runtime()
    _check_data(model, data, "evaluate_tta")
    runtime.prepare(model)
    return evaluate(model, data, batch_size, runtime, forward=lambda x: tta_logits(model, x, level, flip))


def time_training_steps(model: SpeedrunNet, images: torch.Tensor, labels: torch.Tensor, config: SpeedrunConfig,
                        runtime: Runtime, steps: int) -> float:
    """Images per second of the full training step (batching, augmentation, forward, backward, both
    optimizers, lookahead) over `steps` timed steps, after THROUGHPUT_WARMUP_STEPS untimed ones.

    `images` (N, C, H, W) uint8 and `labels` (N,) may be synthetic; the device is synchronized
    before and after the timed steps.

    >>> x, y = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8), torch.randint(0, 10, (64,))
    >>> ips = time_training_steps(SpeedrunNet((16, 16, 3), 10, (8, 8, 8)), x, y,
    ...                           SpeedrunConfig(batch_size=32, widths=(8, 8, 8)), resolve_runtime("cpu", "fp32"), 2)
    >>> ips > 0
    True
    """
    if not isinstance(steps, int) or steps < 1:
        raise CnnlabError(f"time_training_steps: steps must be an integer >= 1, got {steps!r}")
    data = ArrayDataset(images, labels, [str(i) for i in range(int(labels.max()) + 1)], "synthetic")
    _check_training(model, data, config, None)
    session = _start(model, images, labels, config, runtime, THROUGHPUT_WARMUP_STEPS + steps)
    model.train()

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from epoch_batches(session.images, session.labels, config.batch_size, flip=config.flip,
                                     translate=config.translate, generator=session.generator, cutout=config.cutout)

    stream, start = batches(), 0.0
    for step in range(THROUGHPUT_WARMUP_STEPS + steps):
        if step == THROUGHPUT_WARMUP_STEPS:
            _synchronize(runtime.device)
            start = time.perf_counter()
        images_batch, labels_batch = next(stream)
        _set_learning_rates(session, step)
        _train_step(session, images_batch, labels_batch, runtime, config.label_smoothing)
        if session.lookahead is not None and (step + 1) % LOOKAHEAD_EVERY == 0:
            progress = (step + 1) / session.schedule["total"]
            session.lookahead.update(model, LOOKAHEAD_BASE ** LOOKAHEAD_EVERY * progress ** 3)
    _synchronize(runtime.device)
    return steps * config.batch_size / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _check_data(model: nn.Module, data: ImageDataset, where: str) -> None:
    expected = getattr(model, "image_shape", None)
    if expected is not None and tuple(expected)[2] != data.input_shape[2]:
        raise CnnlabError(f"{where}: the model takes {expected[2]}-channel images but {data.name} has "
                          f"{data.input_shape[2]}; build the model for this data (input_shape={data.input_shape})")
    classes = getattr(model, "num_classes", None)
    if classes is not None and len(data) and int(data.labels.max()) >= classes:
        raise CnnlabError(f"{where}: labels go up to {int(data.labels.max())} but the model has {classes} outputs; "
                          f"build it with num_classes={data.num_classes}")


def _check_training(model: nn.Module, train: ImageDataset, config: SpeedrunConfig,
                    validation_data: ImageDataset | None) -> None:
    if not isinstance(model, SpeedrunNet):
        raise CnnlabError(f"train_speedrun trains a SpeedrunNet (build_model('speedrun', ...)), got a "
                          f"{type(model).__name__}; train other models with fit()")
    if not isinstance(config, SpeedrunConfig):
        raise CnnlabError(f"train_speedrun: config must be a SpeedrunConfig, got {type(config).__name__}")
    if not isinstance(train, ArrayDataset):
        raise CnnlabError(f"train_speedrun needs the training set in memory, got a {type(train).__name__}; "
                          f"load it with load_dataset(..., in_memory=True)")
    if tuple(config.widths) != tuple(model.widths):
        raise CnnlabError(f"train_speedrun: the model has widths {model.widths} but config.widths is "
                          f"{config.widths}; build it with SpeedrunNet(..., widths=config.widths)")
    if config.batch_size > len(train):
        raise CnnlabError(f"train_speedrun: batch_size {config.batch_size} is larger than the {len(train)} training "
                          f"images; use SpeedrunConfig(batch_size={max(2, len(train) // 4)}) or more data")
    height, width = train.input_shape[:2]
    if config.translate >= min(height, width):
        raise CnnlabError(f"train_speedrun: translate={config.translate} pixels needs images larger than "
                          f"{config.translate}x{config.translate}, got {height}x{width}; use translate=2 or 0")
    _check_data(model, train, "train_speedrun")
    if validation_data is not None:
        _check_data(model, validation_data, "train_speedrun (validation_data)")
