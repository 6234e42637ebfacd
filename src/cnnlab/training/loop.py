"""`fit` and `evaluate`: the seed programs' training loop, in plain PyTorch.

Keras semantics where users compare numbers with the tutorials: adam (lr 1e-3, eps 1e-7),
sparse categorical cross-entropy on probabilities (a softmax output, clipped like Keras) or on
logits, batch 32, shuffling every epoch, `validation_split` taken from the end of the training
data before shuffling. Data live in memory as uint8 (N, C, H, W) tensors and are scaled per
batch, so there is no per-sample Python in the hot loop.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab.data import ArrayDataset
from cnnlab.data import ImageDataset as Dataset
from cnnlab.data import float_images
from cnnlab.errors import CnnlabError
from cnnlab.models.zoo import output_kind
from cnnlab.recipes import SCHEDULES
from cnnlab.training.callbacks import Callback, ReduceLROnPlateau, TrainState
from cnnlab.training.checkpoint import Checkpointer, LoopParts, Position, epoch_order
from cnnlab.training.devices import Runtime, resolve_runtime
from cnnlab.training.distributed import (
    all_reduce_sums, check_batch, from_main, is_main, loss_share, place, seed_ranks, shard, sync_buffers,
    unwrap_sync_batchnorm, world_size, wrap,
)

__all__ = ["History", "fit", "evaluate", "predict_proba", "loss_fn", "check_compatible", "model_device"]

KERAS_EPSILON = 1e-7  # Keras clips probabilities to [eps, 1 - eps] before the log, and uses it as adam's eps
DEVICE_DATA_SHARE = 0.25  # keep an in-memory dataset on the GPU when it needs under this share of free memory


@dataclass
class History:
    """Per-epoch metrics, as Keras's `History.history`: {"loss": [...], "val_accuracy": [...]}."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)

    def append(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


def loss_fn(outputs: torch.Tensor, labels: torch.Tensor, kind: str,
            class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean sparse categorical cross-entropy on 'probabilities' or 'logits' (optionally class-weighted).

    With weights, the mean is weighted as Keras's class_weight is: sum(w_y * loss) / sum(w_y).
    Label smoothing mixes the one-hot target with the uniform distribution, as Keras does.
    """
    if kind == "probabilities":
        log_probs = torch.log(outputs.clamp(KERAS_EPSILON, 1 - KERAS_EPSILON))
        return F.cross_entropy(log_probs, labels, weight=class_weights, label_smoothing=label_smoothing) \
            if label_smoothing else F.nll_loss(log_probs, labels, weight=class_weights)
    return F.cross_entropy(outputs, labels, weight=class_weights, label_smoothing=label_smoothing)


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
        out = model.eval()(torch.zeros(1, c, h, w, device=model_device(model)))
        model.train(was)
    return int(out.shape[1])


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int = 256, runtime: Runtime | None = None,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Mean loss and accuracy of `model` on `data`: {"loss": ..., "accuracy": ...}.

    Runs where the model is, in fp32, unless a `runtime` says otherwise (`fit` validates in its
    run's precision, so bf16 validation metrics differ from fp32 ones in the 3rd-4th digit).
    `forward` replaces `model(images)` (e.g. test-time augmentation); it returns what the model does.
    Means are over the
    images actually evaluated: a streamed folder drops files that fail to decode.
    """
    check_compatible(model, data, "evaluate")
    runtime = runtime or Runtime(model_device(model), "fp32", compile=False)
    model.eval()
    kind, total_loss, correct, seen = output_kind(model), 0.0, 0, 0
    for images, labels in data.batches(batch_size):
        labels = labels.to(runtime.device)
        with runtime.autocast():
            out = (forward or model)(float_images(runtime.images(images)))
        out = out.float()
        total_loss += float(loss_fn(out, labels, kind)) * len(labels)
        correct += int((out.argmax(1) == labels).sum())
        seen += len(labels)
    if seen == 0:
        raise CnnlabError(f"evaluate: none of the {len(data)} images could be decoded; "
                          f"check them with cnnlab check-data")
    return {"loss": total_loss / seen, "accuracy": correct / seen}


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                  forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Class probabilities (N, classes) on the CPU for uint8 or float (N, C, H, W) images (`forward`: as `evaluate`)."""
    model.eval()
    device, outs = model_device(model), []
    for start in range(0, len(images), batch_size):  # images already in memory: plain slicing
        out = (forward or model)(float_images(images[start:start + batch_size].to(device))).float()
        outs.append((out if output_kind(model) == "probabilities" else F.softmax(out, dim=1)).cpu())
    return torch.cat(outs)


def fit(model: nn.Module, train: Dataset, *, epochs: int = 1, batch_size: int = 32,
        learning_rate: float = 1e-3, validation_split: float = 0.0, validation_data: Dataset | None = None,
        callbacks: Sequence[Callback] = (), seed: int | None = None, verbose: int = 1,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None, class_weights: torch.Tensor | None = None,
        workers: int = 0, runtime: Runtime | None = None, schedule: str = "constant",
        label_smoothing: float = 0.0, checkpoint: Checkpointer | None = None, sync_bn: bool = False) -> History:
    """Train `model` on `train` with adam and sparse categorical cross-entropy, Keras-style.

    `augment` transforms uint8 training batches only (never validation data); `class_weights`
    (one per class) weight the loss; only parameters with requires_grad are optimized, so a
    frozen backbone stays as it is. `runtime` (default: `resolve_runtime()`, the automatic
    device and precision) says where and how to compute; the model is moved there and stays.
    `schedule` "onecycle" warms the learning rate up to `learning_rate` and anneals it per step
    (the fast recipes); "constant" is Keras's. `label_smoothing` as in Keras's loss option.
    `checkpoint` saves the whole state at epoch ends, every N steps and on Ctrl-C, and resumes
    from its `resume` checkpoint (see training/checkpoint.py).
    Under torchrun (training/distributed.py) `batch_size` is the global batch: each process trains
    on its share of every batch in DistributedDataParallel (`sync_bn`: SyncBatchNorm, on GPUs), the
    logged metrics are all-reduced, and only rank 0 shows progress.

    >>> from cnnlab.data import load_dataset; from cnnlab.models.zoo import build_model
    >>> data = load_dataset("digits").subset(range(64))
    >>> fit(build_model("seed-mnist"), data, epochs=1, verbose=0).history["loss"][0] > 0
    True
    """
    _check_fit_arguments(epochs, batch_size, learning_rate, schedule, label_smoothing, callbacks)
    if validation_split and validation_data is not None:
        raise CnnlabError("give validation_split or validation_data, not both")
    if validation_split:
        train, validation_data = train.split_last(validation_split)
    steps = math.ceil(len(train) / batch_size)
    runtime = place(runtime or resolve_runtime(steps=steps * epochs))  # distributed: this rank's own GPU
    local_batch, verbose = check_batch(batch_size), verbose if is_main() else 0
    model = runtime.prepare(model)
    if runtime.device.type != "cpu" and isinstance(train, ArrayDataset) and _fits_on_device(train, runtime.device):
        train = train.to(runtime.device)  # uint8 on the GPU: no host-to-device copy per step
    check_compatible(model, train, "fit")
    forward = wrap(model, runtime, sync_bn)  # DDP when distributed; `model` stays the unwrapped module we save
    optimizer, scheduler = _optimizer(model, learning_rate, schedule, steps * epochs, runtime)
    forward = torch.compile(forward) if runtime.compile else forward  # type: ignore[assignment]
    state, history, kind = TrainState(model=model, lr=learning_rate), History(), output_kind(model)
    parts = LoopParts(model, optimizer, scheduler, runtime.grad_scaler(), list(callbacks), state, history.history,
                      history.epoch_seconds, seed if seed is not None else from_main(lambda: int(torch.seed() % 2**31)),
                      steps)
    seed_ranks(parts.order_seed)  # distributed: each rank its own augmentation and dropout draws
    at = checkpoint.restore(parts) if checkpoint is not None else Position()
    weights = None if class_weights is None else class_weights.to(runtime.device)
    eval_runtime = Runtime(runtime.device, runtime.precision, compile=False)  # validation: same precision, eager
    for cb in callbacks:
        cb.on_train_begin(state)
    # Ctrl-C is caught in a single process only: ranks would see it at different steps and save apart
    catch = checkpoint is not None and world_size() == 1
    with checkpoint.catch_interrupts() if catch and checkpoint is not None else contextlib.nullcontext():
        for epoch in range(epochs if state.stop_training else at.epoch, epochs):
            state.epoch, start = epoch, time.perf_counter() - at.elapsed
            model.train()
            order = epoch_order(len(train), parts.order_seed, epoch)[at.step * batch_size:]  # resumed: skip the done
            order = shard(order, batch_size)  # distributed: this rank's strided share of each global batch
            bar = tqdm(total=steps, initial=at.step, desc=f"Epoch {epoch + 1}/{epochs}", disable=verbose != 1,
                       file=sys.stderr, leave=True, dynamic_ncols=True,
                       mininterval=0.1 if sys.stderr.isatty() else 5.0)  # logs: few lines
            seen, loss_sum, correct = at.seen, at.loss_sum.to(runtime.device), at.correct.to(runtime.device)
            for step, (images, labels) in enumerate(train.batches(local_batch, order, augment, workers), at.step + 1):
                labels = labels.to(runtime.device, non_blocking=True)
                with runtime.autocast():
                    out = forward(float_images(runtime.images(images)))
                loss = loss_fn(out.float(), labels, kind, weights, label_smoothing)
                share = loss_share(len(labels), step, batch_size, len(train))  # 1.0 unless a last batch splits unevenly
                _step(loss * share if share != 1.0 else loss, optimizer, parts.scaler, scheduler)
                seen += len(labels)
                loss_sum += loss.detach() * len(labels)
                correct += (out.detach().argmax(1) == labels).sum()
                if step % runtime.sync_every == 0 or step == steps:  # a GPU syncs here only, not at every step
                    _check_loss(loss_sum, epoch, step, runtime.sync_every, checkpoint)
                    bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", accuracy=f"{int(correct) / seen:.4f}",
                                    refresh=False)
                bar.update(1)
                if checkpoint is not None and step < steps:
                    checkpoint.after_step(parts, Position(epoch, step, seen, loss_sum, correct,
                                                          time.perf_counter() - start))
            at = Position()
            seen_all, loss_all, correct_all = all_reduce_sums(seen, loss_sum, correct)  # over ranks (if several)
            logs = {"loss": loss_all / seen_all, "accuracy": correct_all / seen_all}
            sync_buffers(model)  # BatchNorm statistics: every rank validates rank 0's model
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in evaluate(model, validation_data, runtime=eval_runtime).items()})
            logs["lr"] = optimizer.param_groups[0]["lr"] if scheduler is not None else state.lr
            _end_epoch(bar, logs, history, time.perf_counter() - start, epoch, epochs, verbose)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs, state)
            if scheduler is None:
                for group in optimizer.param_groups:  # ReduceLROnPlateau asks for a new rate through state.lr
                    group["lr"] = state.lr
            if checkpoint is not None:
                checkpoint.after_epoch(parts, Position(epoch + 1))
            if state.stop_training:
                break
    for cb in callbacks:
        cb.on_train_end(state)
    if sync_bn:
        unwrap_sync_batchnorm(model)  # the saved model loads without a process group
    model.eval()
    return history


def _optimizer(model: nn.Module, learning_rate: float, schedule: str, total_steps: int,
               runtime: Runtime) -> tuple[torch.optim.Optimizer, Any]:
    """Adam with Keras's eps on the trainable parameters, and the onecycle scheduler when asked for."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise CnnlabError("every parameter of the model is frozen: nothing to train (unfreeze some layers)")
    fused = runtime.device.type in ("cpu", "cuda")  # one kernel for all parameters: ~1 ms less per step on 2 cores
    optimizer = torch.optim.Adam(trainable, lr=learning_rate, eps=KERAS_EPSILON, fused=fused or None)
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=total_steps)
                 if schedule == "onecycle" else None)
    return optimizer, scheduler


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
          scheduler: Any) -> None:
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if scheduler is not None:
        scheduler.step()


def _check_loss(loss_sum: torch.Tensor, epoch: int, step: int, sync_every: int,
                checkpoint: Checkpointer | None) -> None:
    """Stop on a NaN/inf loss naming the step (on a GPU: the steps since the last sync), as Keras's TerminateOnNaN."""
    if torch.isfinite(loss_sum):
        return
    where = f"step {step}" if sync_every == 1 else f"step {max(1, step - sync_every + 1)}-{step}"
    kept = f"; {checkpoint.kept()}" if checkpoint is not None else ""
    raise CnnlabError(f"the loss became {float(loss_sum)} at epoch {epoch + 1}, {where}; "
                      f"lower the learning rate (--lr) or check the data{kept}")


def _end_epoch(bar: tqdm, logs: dict[str, float], history: History, seconds: float, epoch: int, epochs: int,
               verbose: int) -> None:
    bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
    bar.close()
    history.append(logs)
    history.epoch_seconds.append(seconds)
    if verbose == 2:
        print(f"epoch {epoch + 1}/{epochs} " + " ".join(f"{k}={v:.4g}" for k, v in logs.items()), file=sys.stderr)


def _fits_on_device(data: ArrayDataset, device: torch.device) -> bool:
    """True when the uint8 images take under DEVICE_DATA_SHARE of the GPU's memory."""
    if device.type != "cuda":
        return False
    return data.images.numel() * data.images.element_size() < DEVICE_DATA_SHARE * torch.cuda.mem_get_info(device)[0]


def _check_fit_arguments(epochs: int, batch_size: int, learning_rate: float, schedule: str,
                         label_smoothing: float, callbacks: Sequence[Callback]) -> None:
    if not isinstance(epochs, int) or epochs <= 0:
        raise CnnlabError(f"epochs must be a positive integer; got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise CnnlabError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not learning_rate > 0:
        raise CnnlabError(f"learning_rate must be > 0; got {learning_rate!r}")
    if schedule not in SCHEDULES:
        raise CnnlabError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise CnnlabError(f"label_smoothing must be in [0, 1), e.g. 0.1; got {label_smoothing!r}")
    if schedule == "onecycle" and any(isinstance(cb, ReduceLROnPlateau) for cb in callbacks):
        raise CnnlabError("the onecycle schedule sets the learning rate at every step; "
                          "drop ReduceLROnPlateau (--reduce-lr) or use the constant schedule")
