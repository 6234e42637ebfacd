"""`fit` and `evaluate`: the seed programs' training loop, in plain PyTorch.

Keras semantics where users compare numbers with the tutorials: adam (lr 1e-3, eps 1e-7),
sparse categorical cross-entropy on probabilities (a softmax output, clipped like Keras) or on
logits, batch 32, shuffling every epoch, `validation_split` taken from the end of the training
data before shuffling. Data live in memory as uint8 (N, C, H, W) tensors and are scaled per
batch, so there is no per-sample Python in the hot loop: by `float_images` (x / 255), or by the
dataset's own `normalize` where a front end feeds something else (Keras's raw 0..255 pixels, an
ImageDataGenerator's augmentation and standardization), on the training device.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnlab.data import ArrayDataset, Augmenter, float_images, model_inputs, parse_augment, stratified_split
from cnnlab.data import ImageDataset as Dataset
from cnnlab.errors import CnnlabError
from cnnlab.models.sequential import Sequential
from cnnlab.models.zoo import output_kind
from cnnlab.recipes import SCHEDULES
from cnnlab.training.callbacks import Callback, ReduceLROnPlateau, TrainState
from cnnlab.training.checkpoint import Checkpointer, LoopParts, Position, epoch_order
from cnnlab.training.devices import Runtime, resolve_runtime
from cnnlab.training.objectives import Objective, probabilities
from cnnlab.training.optimizers import OptimizerSpec
from cnnlab.training.progress import Progress, TqdmProgress
from cnnlab.training.threads import ThreadTuner
from cnnlab.training.features import FeatureSettings, plan_features, prefix_every_step
from cnnlab.training.distributed import (
    all_reduce_sums, check_batch, from_main, is_main, loss_share, place, seed_ranks, shard, sync_buffers,
    unwrap_sync_batchnorm, world_size, wrap,
)

__all__ = ["History", "Scores", "NonFiniteLoss", "fit", "evaluate", "predict_proba", "check_compatible",
           "model_device", "per_sample_weights", "optimizer_step"]

DEVICE_DATA_SHARE = 0.25  # keep an in-memory dataset on the GPU when it needs under this share of free memory


@dataclass
class History:
    """Per-epoch metrics, as Keras's `History.history`: {"loss": [...], "val_accuracy": [...]}."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    threads: dict[str, object] = field(default_factory=dict)  # the CPU thread policy and its decisions
    features: dict[str, object] = field(default_factory=dict)  # frozen features computed once (training/features.py)

    def append(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


def check_compatible(model: nn.Module, data: Dataset, where: str, objective: Objective | None = None) -> None:
    """Fail with one line when the data's image shape or class count cannot fit the model."""
    expected = getattr(model, "image_shape", None)
    if expected is not None and tuple(expected) != tuple(data.input_shape):
        h, w, c = expected
        dh, dw, dc = data.input_shape
        hint = (f"the model takes {c} channel(s) but the images have {dc}" if c != dc
                else f"the model takes {h}x{w} images but these are {dh}x{dw}")
        raise CnnlabError(f"{where}: {hint} (model input {h}x{w}x{c}, data {dh}x{dw}x{dc}); "
                          f"use a model built for this data (--input-shape / a matching dataset)")
    outputs, top = _num_outputs(model, data), int(data.labels.max())
    name = objective.name if objective is not None else "sparse_categorical_crossentropy"
    if outputs == 1 and name in ("sparse_categorical_crossentropy", "categorical_crossentropy") and top <= 1:
        raise CnnlabError(f"{where}: the model has 1 output (a binary classifier) but the loss is {name}, which "
                          f"needs one output per class; use loss='binary_crossentropy' or end in Dense(2)")
    if top >= max(outputs, 2 if outputs == 1 else 0):
        raise CnnlabError(f"{where}: labels go up to {top} but the model has {outputs} outputs; "
                          f"build it with num_classes={data.num_classes} (a last layer of {top + 1} units)")


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
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
             objective: Objective | None = None) -> Scores:
    """Mean loss and accuracy of `model` on `data`: Scores(loss=..., accuracy=...), also a {"loss", "accuracy"} dict.

    Runs where the model is, in fp32, unless a `runtime` says otherwise (`fit` validates in its
    run's precision, so bf16 validation metrics differ from fp32 ones in the 3rd-4th digit).
    `forward` replaces `model(images)` (e.g. test-time augmentation); it returns what the model does.
    `objective` is the loss (default: sparse categorical cross-entropy on what the model emits).
    Means are over the images actually evaluated: a streamed folder drops files that fail to decode.
    """
    _build_for(model, data)
    objective = (objective or Objective()).resolve(model)
    check_compatible(model, data, "evaluate", objective)
    runtime = runtime or Runtime(model_device(model), "fp32", compile=False)
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in data.batches(batch_size):
        labels = labels.to(runtime.device)
        with runtime.autocast():
            out = (forward or model)(model_inputs(data, runtime.images(images)))
        out = out.float()
        total_loss += float(objective.loss(out, labels)) * len(labels)
        correct += int(objective.correct(out, labels))
        seen += len(labels)
    if seen == 0:
        raise CnnlabError(f"evaluate: none of the {len(data)} images could be decoded; "
                          f"check them with cnnlab check-data")
    return Scores(loss=total_loss / seen, accuracy=correct / seen)


@dataclass(frozen=True)
class Scores:
    """evaluate's loss and accuracy: `scores["accuracy"]`, `.items()` and `dict(scores)` as a dict, and
    iterated or indexed as Keras's [loss, accuracy] list, so the tutorials' `test_loss, test_acc =
    evaluate(model, test)` gets the numbers (a dict would give its key names).

    >>> scores = Scores(loss=0.5, accuracy=0.9)
    >>> test_loss, test_acc = scores
    >>> test_acc, scores["accuracy"], dict(scores)
    (0.9, 0.9, {'loss': 0.5, 'accuracy': 0.9})
    """

    loss: float
    accuracy: float

    def __iter__(self) -> Iterator[float]:
        return iter((self.loss, self.accuracy))

    def __len__(self) -> int:
        return 2

    def keys(self) -> tuple[str, str]:
        return ("loss", "accuracy")

    def values(self) -> tuple[float, float]:
        return (self.loss, self.accuracy)

    def items(self) -> list[tuple[str, float]]:
        return [("loss", self.loss), ("accuracy", self.accuracy)]

    def __getitem__(self, key: str | int) -> float:
        """scores["accuracy"], or scores[1] as in Keras's [loss, accuracy] list."""
        if key in (0, 1):
            return self.values()[int(key)]
        if key not in ("loss", "accuracy"):
            raise KeyError(f"{key!r}: evaluate gives 'loss' and 'accuracy' (or [0] and [1])")
        return float(getattr(self, str(key)))

    def __contains__(self, key: object) -> bool:
        return key in ("loss", "accuracy")

    def get(self, key: str, default: float | None = None) -> float | None:
        return self[key] if key in self else default


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                  forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Class probabilities (N, classes) on the CPU for uint8 or float (N, C, H, W) images (`forward`: as `evaluate`).

    A binary model's single output becomes two columns, P(class 0) and P(class 1).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise CnnlabError(f"predict_proba takes a (N, C, H, W) tensor of images, got {_describe(images)}; "
                          f"for NumPy arrays use cnnlab.keras (model.predict) or ArrayDataset.from_arrays")
    model.eval()
    device, outs = model_device(model), []
    for start in range(0, len(images), batch_size):  # images already in memory: plain slicing
        out = (forward or model)(float_images(images[start:start + batch_size].to(device))).float()
        outs.append(probabilities(out, output_kind(model)).cpu())
    return torch.cat(outs)


def fit(model: nn.Module, train: Dataset, *, epochs: int = 1, batch_size: int = 32,
        learning_rate: float | None = None, optimizer: OptimizerSpec | None = None,
        objective: Objective | None = None, validation_split: float = 0.0, validation_data: Dataset | None = None,
        callbacks: Sequence[Callback] = (), seed: int | None = None, verbose: int = 1,
        augment: Callable[[torch.Tensor], torch.Tensor] | str | None = None,
        class_weights: torch.Tensor | None = None, sample_weights: torch.Tensor | None = None,
        shuffle: bool = True, initial_epoch: int = 0, steps_per_epoch: int | None = None,
        workers: int = 0, runtime: Runtime | None = None, schedule: str = "constant",
        label_smoothing: float = 0.0, checkpoint: Checkpointer | None = None, sync_bn: bool = False,
        progress: Progress | None = None, thread_tuner: ThreadTuner | None = None,
        features: FeatureSettings | None = None) -> History:
    """Train `model` on `train`, Keras-style: adam and sparse categorical cross-entropy unless told otherwise.

    `optimizer` (default adam at `learning_rate`, 1e-3) and `objective` (the loss; default sparse
    categorical cross-entropy on what the model's last layer emits) are what `model.compile` names
    in Keras. `augment` (a function or a text such as "rotate=20,flip=h") transforms uint8
    training batches only (never validation data); `class_weights` (one per class) and
    `sample_weights` (one per training image) weight the loss as Keras does; only parameters with
    requires_grad are optimized, so a frozen backbone stays as it is. `shuffle`, `initial_epoch`
    and `steps_per_epoch` are Keras's. `runtime` (default: `resolve_runtime()`, the automatic
    device and precision) says where and how to compute; the model is moved there and stays.
    `schedule` "onecycle" warms the learning rate up and anneals it per step (the fast recipes);
    "constant" is Keras's. `checkpoint` saves the whole state at epoch ends, every N steps and on
    Ctrl-C, and resumes from its `resume` checkpoint (see training/checkpoint.py).
    Under torchrun (training/distributed.py) `batch_size` is the global batch: each process trains
    on its share of every batch in DistributedDataParallel (`sync_bn`: SyncBatchNorm, on GPUs), the
    logged metrics are all-reduced, and only rank 0 shows progress (`progress`: how; default tqdm bars).
    On the CPU the thread count is measured in the first steps unless the runtime fixes it (`thread_tuner`:
    the tuner to use, e.g. one that reports its decisions; see training/threads.py); `History.threads`
    records what it chose. When the model's first layers are frozen and deterministic (a frozen backbone),
    their output is computed once per image and only the rest trains on it (`features`: how; see
    training/features.py); `History.features` records it.

    >>> from cnnlab.data import load_dataset; from cnnlab.models.zoo import build_model
    >>> data = load_dataset("digits").subset(range(64))
    >>> fit(build_model("seed-mnist"), data, epochs=1, verbose=0).history["loss"][0] > 0
    True
    """
    optimizer, objective = _settings(optimizer, learning_rate, objective, label_smoothing)
    _check_fit_arguments(epochs, batch_size, optimizer.lr, schedule, callbacks, initial_epoch, steps_per_epoch)
    if validation_split and validation_data is not None:
        raise CnnlabError("give validation_split or validation_data, not both")
    if validation_split:
        train, validation_data = _split_validation(train, validation_split, seed, sample_weights is None)
    augment = _augmenter(augment)
    weights = per_sample_weights(sample_weights, class_weights, train)
    steps = math.ceil(len(train) / batch_size)
    steps = min(steps, steps_per_epoch) if steps_per_epoch else steps
    runtime = place(runtime or resolve_runtime(steps=steps * epochs))  # distributed: this rank's own GPU
    local_batch, verbose = check_batch(batch_size), verbose if is_main() else 0
    _build_for(model, train)
    model = runtime.prepare(model)
    objective = objective.resolve(model)  # what the last layer emits now, not when the model was made
    check_compatible(model, train, "fit", objective)
    net, plan = model, plan_features(model, train, validation_data, augment, runtime, features or FeatureSettings(),
                                     workers)
    if plan is not None:  # a frozen backbone's output, computed once: only the head runs from here on
        # (FeatureViews, K augmented views per image, has the surface of a dataset that the loop uses)
        net, train, validation_data, augment = plan.head, plan.train, plan.validation, None  # type: ignore[assignment]
        feature_record = plan.record
    else:  # a frozen prefix that runs every step (live augmentation) still runs folded, without autograd
        every_step = prefix_every_step(model, train, runtime)
        net, feature_record = every_step if every_step is not None else (model, {"used": False})
    if runtime.device.type != "cpu" and isinstance(train, ArrayDataset) and _fits_on_device(train, runtime.device):
        train = train.to(runtime.device)  # uint8 on the GPU: no host-to-device copy per step
    forward = wrap(net, runtime, sync_bn)  # DDP when distributed; `model` stays the unwrapped module we save
    torch_optimizer, scheduler = _optimizer(model, optimizer, schedule, steps * epochs, runtime)
    forward = torch.compile(forward) if runtime.compile else forward  # type: ignore[assignment]
    state, history = TrainState(model=model, lr=optimizer.lr), History()
    parts = LoopParts(model, torch_optimizer, scheduler, runtime.grad_scaler(), list(callbacks), state,
                      history.history, history.epoch_seconds,
                      seed if seed is not None else from_main(_draw_seed), steps)
    seed_ranks(parts.order_seed)  # distributed: each rank its own augmentation and dropout draws
    for cb in callbacks:  # before a resume puts the callbacks' saved counters back
        cb.on_train_begin(state)
    at = checkpoint.restore(parts) if checkpoint is not None else Position(epoch=initial_epoch)
    eval_runtime = Runtime(runtime.device, runtime.precision, compile=False)  # validation: same precision, eager
    progress = progress or TqdmProgress(verbose)
    threads = thread_tuner or ThreadTuner(runtime.thread_policy(steps * (epochs - at.epoch)))
    batch_hooks = [cb for cb in callbacks if _wants_batches(cb)]
    # Ctrl-C is caught in a single process only: ranks would see it at different steps and save apart
    catch = checkpoint is not None and world_size() == 1
    with checkpoint.catch_interrupts() if catch and checkpoint is not None else contextlib.nullcontext():
        for epoch in range(epochs if state.stop_training else at.epoch, epochs):
            state.epoch, start = epoch, time.perf_counter() - at.elapsed
            for cb in callbacks:
                cb.on_epoch_begin(epoch, state)
            _apply_lr(torch_optimizer, scheduler, state)
            model.train()
            order = epoch_order(len(train), parts.order_seed, epoch) if shuffle else torch.arange(len(train))
            order = shard(order[at.step * batch_size:steps * batch_size], batch_size)  # resumed: skip the done
            progress.start(epoch, epochs, steps, at.step)
            threads.epoch_start()
            seen, loss_sum, correct = at.seen, at.loss_sum.to(runtime.device), at.correct.to(runtime.device)
            for step, (images, labels) in enumerate(train.batches(local_batch, order, augment, workers), at.step + 1):
                labels = labels.to(runtime.device, non_blocking=True)
                with runtime.autocast():
                    out = forward(model_inputs(train, runtime.images(images)))
                w = None if weights is None else _batch_weights(weights, order, step - at.step - 1, local_batch,
                                                                labels)
                loss = objective.loss(out.float(), labels, w)
                share = loss_share(len(labels), step, batch_size, len(train))  # 1.0 unless a last batch splits unevenly
                optimizer_step(loss * share if share != 1.0 else loss, torch_optimizer, parts.scaler, scheduler,
                               optimizer)
                threads.step_done()  # times the step; may change the thread count (training/threads.py)
                seen += len(labels)
                loss_sum += loss.detach() * len(labels)
                correct += objective.correct(out.detach(), labels)
                synced = step % runtime.sync_every == 0 or step == steps  # a GPU syncs here only, not every step
                if synced:
                    _check_loss(loss_sum, epoch, step, runtime.sync_every, checkpoint)
                running = {"loss": float(loss_sum) / seen, "accuracy": int(correct) / seen} \
                    if synced or batch_hooks else None
                progress.step(step, running if synced else None)
                for cb in batch_hooks:
                    cb.on_train_batch_end(step - 1, running, state)  # type: ignore[arg-type]
                if checkpoint is not None and step < steps:
                    checkpoint.after_step(parts, Position(epoch, step, seen, loss_sum, correct,
                                                          time.perf_counter() - start))
            at = Position()
            seen_all, loss_all, correct_all = all_reduce_sums(seen, loss_sum, correct)  # over ranks (if several)
            logs = {"loss": loss_all / seen_all, "accuracy": correct_all / seen_all}
            sync_buffers(model)  # BatchNorm statistics: every rank validates rank 0's model
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in evaluate(net, validation_data, runtime=eval_runtime,
                                                                 objective=objective).items()})
            logs["lr"] = torch_optimizer.param_groups[0]["lr"]
            seconds = time.perf_counter() - start
            progress.end(logs, seconds)
            history.append(logs)
            history.epoch_seconds.append(seconds)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs, state)
            if checkpoint is not None:
                checkpoint.after_epoch(parts, Position(epoch + 1), sparse=plan is not None)  # epochs of 0.1 s
            if state.stop_training:
                break
    for cb in callbacks:
        cb.on_train_end(state)
    if sync_bn:
        unwrap_sync_batchnorm(model)  # the saved model loads without a process group
    model.eval()
    history.threads = threads.record()
    history.features = feature_record
    return history


def _draw_seed() -> int:
    """A data-order seed drawn from torch's generator, so keras.utils.set_random_seed / torch.manual_seed fix it
    (torch.seed() would reseed that generator from the OS and make every later draw unrepeatable)."""
    return int(torch.randint(2**31 - 1, ()).item())


def _wants_batches(callback: Callback) -> bool:
    hook = getattr(type(callback), "on_train_batch_end", None)
    return hook is not Callback.on_train_batch_end and getattr(callback, "batch_hooks", True)


def _settings(optimizer: OptimizerSpec | None, learning_rate: float | None, objective: Objective | None,
              label_smoothing: float) -> tuple[OptimizerSpec, Objective]:
    """The optimizer and loss from `fit`'s arguments (each setting given once)."""
    if optimizer is not None and learning_rate is not None:
        raise CnnlabError("give learning_rate inside the optimizer (OptimizerSpec(..., learning_rate=...)) "
                          "or as fit's learning_rate, not both")
    if objective is not None and label_smoothing:
        raise CnnlabError("give label_smoothing inside the objective (Objective(..., label_smoothing=...)), not both")
    return (optimizer or OptimizerSpec("adam", learning_rate if learning_rate is not None else 1e-3),
            objective or Objective(label_smoothing=label_smoothing))


def _split_validation(train: Dataset, fraction: float, seed: int | None,
                      may_stratify: bool) -> tuple[Dataset, Dataset]:
    """Keras's split: the last `fraction`, before shuffling. Data sorted by class (an image folder, the
    CIFAR-10 archive, arrays sorted by label) would then validate on one class only, so those are split
    per class instead, seeded as the CLI splits folders (not with sample weights, which follow the tail)."""
    labels = train.labels.cpu()
    one_class_tail = len(labels) > 1 and int(labels[0]) != int(labels[-1]) and bool((labels[1:] >= labels[:-1]).all())
    if not (may_stratify and one_class_tail):
        return train.split_last(fraction)
    split_seed = 0 if seed is None else seed
    warnings.warn(f"the training data are sorted by class, so the last {fraction:.0%} would hold only class "
                  f"{int(labels[-1])}: validation takes {fraction:.0%} of every class instead (seed {split_seed})",
                  stacklevel=3)
    kept, held = stratified_split(labels, (1 - fraction, fraction), split_seed)
    return train.subset(kept), train.subset(held)


def _build_for(model: nn.Module, data: Dataset) -> None:
    """A Sequential that does not know its input shape yet is built for the data's (as Keras's fit does)."""
    if isinstance(model, Sequential) and not model.built:
        model.build(data.input_shape)


def _augmenter(augment: Callable[[torch.Tensor], torch.Tensor] | str | None) -> \
        Callable[[torch.Tensor], torch.Tensor] | None:
    if isinstance(augment, str):  # the CLI's --augment text, e.g. "rotate=20,flip=h"
        spec = parse_augment(augment)
        return None if spec.is_off else Augmenter(spec)
    if isinstance(augment, Augmenter) and augment.spec.is_off:
        return None  # no work, and nothing random: a frozen backbone's features can be computed once
    if augment is not None and not callable(augment):  # type: ignore[unreachable]
        raise CnnlabError(f"augment must be a function of uint8 batches or a text such as 'rotate=20,flip=h'; "
                          f"got {type(augment).__name__}")
    return augment


def per_sample_weights(sample_weights: torch.Tensor | None, class_weights: torch.Tensor | None,
                       train: Dataset) -> torch.Tensor | None:
    """One weight per training image (sample weight x its class's weight), or None."""
    if sample_weights is None and class_weights is None:
        return None
    weights = torch.ones(len(train))
    if sample_weights is not None:
        given = torch.as_tensor(sample_weights, dtype=torch.float32).flatten()
        if len(given) < len(train):
            raise CnnlabError(f"sample_weights has {len(given)} values but there are {len(train)} training "
                              f"images; give one weight per image")
        weights = weights * given[:len(train)]  # validation_split took the tail off the images
    if class_weights is not None:
        cw = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        if len(cw) <= int(train.labels.max()):
            raise CnnlabError(f"class_weights has {len(cw)} values but the labels go up to "
                              f"{int(train.labels.max())}; give one weight per class")
        weights = weights * cw[train.labels.cpu()]
    if not torch.isfinite(weights).all() or bool((weights < 0).any()):
        raise CnnlabError("sample and class weights must be finite and >= 0")
    return weights


def _batch_weights(weights: torch.Tensor, order: torch.Tensor, index: int, local_batch: int,
                   labels: torch.Tensor) -> torch.Tensor:
    """The weights of the images in this epoch's `index`-th batch (rows of `order`)."""
    rows = order[index * local_batch:index * local_batch + len(labels)]
    return weights[rows].to(labels.device, non_blocking=True)


def _optimizer(model: nn.Module, spec: OptimizerSpec, schedule: str, total_steps: int,
               runtime: Runtime) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer on the trainable parameters, and the onecycle scheduler when asked for."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise CnnlabError("every parameter of the model is frozen: nothing to train (unfreeze some layers)")
    optimizer = spec.build(trainable, runtime.device)
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimizer, spec.lr, total_steps=total_steps)
                 if schedule == "onecycle" else None)
    return optimizer, scheduler


def _apply_lr(optimizer: torch.optim.Optimizer, scheduler: Any, state: TrainState) -> None:
    """Callbacks ask for a new rate through state.lr (ReduceLROnPlateau, LearningRateScheduler)."""
    if scheduler is None:
        for group in optimizer.param_groups:
            group["lr"] = state.lr


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                   scheduler: Any, spec: OptimizerSpec) -> None:
    """Backward, the spec's gradient clipping, one optimizer (and scheduler) step."""
    optimizer.zero_grad(set_to_none=True)
    clipping = spec.clipnorm is not None or spec.global_clipnorm is not None
    params = [p for group in optimizer.param_groups for p in group["params"]] if clipping else []
    if scaler is None:
        loss.backward()
        if clipping:
            spec.clip(params)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if clipping:
            scaler.unscale_(optimizer)
            spec.clip(params)
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
    raise NonFiniteLoss(f"the loss became {float(loss_sum)} at epoch {epoch + 1}, {where}; "
                        f"lower the learning rate (--lr) or check the data{kept}")


class NonFiniteLoss(CnnlabError):
    """The loss became NaN or infinite: training stopped (Keras's TerminateOnNaN returns on it instead)."""


def _fits_on_device(data: ArrayDataset, device: torch.device) -> bool:
    """True when the uint8 images take under DEVICE_DATA_SHARE of the GPU's memory."""
    if device.type != "cuda":
        return False
    return data.images.numel() * data.images.element_size() < DEVICE_DATA_SHARE * torch.cuda.mem_get_info(device)[0]


def _check_fit_arguments(epochs: int, batch_size: int, learning_rate: float, schedule: str,
                         callbacks: Sequence[Callback], initial_epoch: int, steps_per_epoch: int | None) -> None:
    if not isinstance(epochs, int) or epochs <= 0:
        raise CnnlabError(f"epochs must be a positive integer; got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise CnnlabError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not learning_rate > 0:
        raise CnnlabError(f"learning_rate must be > 0; got {learning_rate!r}")
    if schedule not in SCHEDULES:
        raise CnnlabError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    if not isinstance(initial_epoch, int) or not 0 <= initial_epoch < epochs:
        raise CnnlabError(f"initial_epoch must be an integer from 0 to {epochs - 1} (epochs - 1); "
                          f"got {initial_epoch!r}")
    if steps_per_epoch is not None and (not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0):
        raise CnnlabError(f"steps_per_epoch must be a positive integer or None; got {steps_per_epoch!r}")
    if schedule == "onecycle" and any(isinstance(cb, ReduceLROnPlateau) for cb in callbacks):
        raise CnnlabError("the onecycle schedule sets the learning rate at every step; "
                          "drop ReduceLROnPlateau (--reduce-lr) or use the constant schedule")


def _describe(value: object) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else type(value).__name__
