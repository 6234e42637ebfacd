"""The training job behind the CLI: a run with its run directory (evaluating one: cnnlab.evaluate_jobs).

A run directory holds: config.json (resolved settings, including the seed actually used),
versions.json, history.csv (written as epochs finish), history.json, model.safetensors +
model.json (the final model; with early stopping, its best epoch), best.safetensors (the best
epoch by the monitored metric, when there is validation data), curves.png and metrics.json.
Every input is checked before the directory is created, and an existing directory is never
reused, so a mistake never costs a previous run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cnnlab.config import DEFAULT_HEAD, TrainConfig
from cnnlab.data import (
    ArrayDataset, Augmenter, AugmentSpec, archive_stem, class_weights, dataset_names, is_archive, load_dataset,
    parse_augment, stratified_split,
)
from cnnlab.data import ImageDataset as Dataset
from cnnlab.data.cache import resolve_data_dir
from cnnlab.data.images import set_max_image_pixels
from cnnlab.errors import CnnlabError
from cnnlab.models.files import build_from_file, load_model, read_card, resolve_model_path, save_model
from cnnlab.models.sequential import Sequential
from cnnlab.models.summary import count_parameters
from cnnlab.models.transfer import BACKBONES, TransferModel, backbone_preprocessing, transfer_model
from cnnlab.models.zoo import build_model
from cnnlab.rundir import LOCK_NAME, RunLock, claim_run_dir, write_file, write_json, writing
from cnnlab.startup import FirstStep, first_step_clock
from cnnlab.training.callbacks import auto_mode
from cnnlab.training.checkpoint import (
    CHECKPOINT_JSON, Checkpointer, TrainingInterrupted, check_writable, remove_checkpoint,
)
from cnnlab.training.devices import Runtime, resolve_runtime, runtime_line, use_deterministic
from cnnlab.training.threads import ThreadTuner
from cnnlab.training.features import FeatureSettings
from cnnlab.training.scoring import score, scoring_record
from cnnlab.training.distributed import check_batch, from_main, is_main, place, world_size
from cnnlab.training.tensorboard import tensorboard_callbacks
from cnnlab.training.speedrun import SpeedrunCheckpoints, SpeedrunConfig, evaluate_tta, train_speedrun
from cnnlab.recipes import RECIPES
from cnnlab.resume import config_digest, open_checkpoint
from cnnlab.models.speedrun import SpeedrunNet
from cnnlab.training import (
    Callback, CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, TrainingHints, fit,
)
from cnnlab.training.loop import Scores
from cnnlab.versions import versions

__all__ = ["RunResult", "Phase", "train_run", "new_run_dir"]


@dataclass
class RunResult:
    run_dir: Path
    history: dict[str, list[float]]
    test: dict[str, float] | None      # test loss/accuracy, when the dataset has a test split
    seconds: float
    epoch_seconds: list[float]
    skipped: list[str]                  # image files that could not be decoded and were left out
    # the epoch (0-based, over all phases) whose weights the model holds when EarlyStopping restored an
    # earlier one than the last; its numbers are the run's final numbers
    restored_epoch: int | None = None


def _restored_epoch(callbacks: list[Callback], before: int, epochs: int) -> int | None:
    """The run-wide index of the epoch whose weights EarlyStopping put back, when not the phase's last one."""
    for cb in callbacks:
        if isinstance(cb, EarlyStopping) and cb.restore_best_weights and cb.best_state is not None \
                and 0 <= cb.best_epoch < epochs - 1:
            return before + cb.best_epoch
    return None


PHASE_START = "phase_start.safetensors"  # the weights a fine-tuning phase starts from, until the run ends


def _keeps_best_phase(config: TrainConfig, phases: list[Phase]) -> bool:
    """Two phases restoring their best epochs: then the run keeps the better phase (`_better_phase`)."""
    return len(phases) > 1 and config.early_stopping_patience is not None and config.restore_best_weights


def _write_phase_start(run_dir: Path, model: nn.Module) -> None:
    """The model's weights as the last phase starts (the phase before's best), for `_better_phase` at the end."""
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    write_file(run_dir / PHASE_START, lambda tmp: save_file(state, str(tmp)), after=lambda: _resume_hint(run_dir))


def _better_phase(history: dict[str, list[float]], monitor: str, phases: int) -> int | None:
    """The run-wide epoch to go back to when the last phase's best `monitor` value is no better than the
    phase before's best (each phase restored its best epoch), else None.

    >>> _better_phase({"val_loss": [0.5, 0.3, 0.4, 0.35], "phase": [0, 0, 1, 1]}, "val_loss", 2)
    1
    >>> _better_phase({"val_loss": [0.5, 0.3, 0.4, 0.2], "phase": [0, 0, 1, 1]}, "val_loss", 2) is None
    True
    """
    values, phase_of = history.get(monitor, []), history.get("phase", [])
    if len(values) != len(phase_of):
        return None
    sign = -1.0 if auto_mode(monitor) == "max" else 1.0  # EarlyStopping's mode "auto": accuracies up, losses down
    scored = [(sign * v, i, int(p)) for i, (v, p) in enumerate(zip(values, phase_of, strict=True)) if not math.isnan(v)]
    earlier = [(v, i) for v, i, p in scored if p == phases - 2]
    last = [(v, i) for v, i, p in scored if p == phases - 1]
    if not earlier or not last:
        return None
    best_earlier, best_last = min(earlier), min(last)
    return best_earlier[1] if best_last[0] >= best_earlier[0] else None


def new_run_dir(config: TrainConfig) -> Path:
    """The run directory to create: the given one (which must not exist yet) or a fresh name."""
    if config.run_dir:
        path = Path(config.run_dir)
        # (a lock or temporary file alone is what a run killed before writing anything leaves: claim_run_dir takes it)
        if path.exists() and (not path.is_dir() or any(p.name != LOCK_NAME and not p.name.endswith(".tmp")
                                                       for p in path.iterdir())):
            raise CnnlabError(f"run directory {path} already exists and is not empty; cnnlab never overwrites a run. "
                              f"Choose another --run-dir or delete that one")
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = archive_stem(config.dataset) if _is_folder(config) else config.dataset
    base = Path(config.runs_root) / f"{dataset}-{_model_label(config)}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _model_label(config: TrainConfig) -> str:
    """What the run trains, for its directory name: the registry name, or the model file or run it comes from."""
    source = config.init_from or (config.model if _is_model_file(config.model) else None)
    if source is None:
        return config.model
    path = Path(source)
    return (path.name if path.is_dir() else path.stem) or "model"


def _is_folder(config: TrainConfig) -> bool:
    """An image folder, or an archive of one (read as the folder it extracts to)."""
    return config.dataset.lower().replace("_", "-") not in dataset_names() and (
        Path(config.dataset).is_dir() or is_archive(config.dataset))


def _uses_transfer(config: TrainConfig) -> bool:
    return config.pretrained or config.weights is not None or config.freeze or (
        config.unfreeze_top is not None and config.init_from is None)


def _image_size(config: TrainConfig) -> tuple[int, int] | None:
    """--image-size, else the size a pretrained torchvision backbone was trained at (224), else native."""
    if config.image_size:
        return (int(config.image_size[0]), int(config.image_size[1]))
    source = config.init_from or (config.model if _is_model_file(config.model) else None)
    if source:  # continue (or start afresh) at the size the model file was made for
        h, w, _ = read_card(resolve_model_path(source)).input_shape
        return (h, w)
    if _uses_transfer(config) and config.model in BACKBONES and not _is_model_file(config.weights):
        size = backbone_preprocessing(config.model)["size"]
        return (size[0], size[1])
    return None


def _is_model_file(path: str | None) -> bool:
    """A cnnlab model file (not a bare state_dict)?"""
    if path is None:
        return False
    p = Path(path)
    return p.is_dir() or p.with_suffix(".json").is_file()


def _load_split(config: TrainConfig, split: str, size: tuple[int, int] | None) -> Dataset:
    return load_dataset(config.dataset, split=split, data_dir=config.data_dir, download=config.download,
                        image_size=size)


def _test_split(config: TrainConfig, size: tuple[int, int] | None) -> Dataset | None:
    try:
        return _load_split(config, "test", size)
    except CnnlabError as exc:
        if "no test" in str(exc):  # an unsplit image folder: carve a test part out below
            return None
        raise


@dataclass
class _Data:
    train: Dataset
    validation: Dataset | None          # None: fit takes validation_split from the end (Keras)
    test: Dataset | None
    split: dict[str, Any] | None        # how an image folder was split (written to split.json)


def _prepare_data(config: TrainConfig, seed: int) -> _Data:
    size = _image_size(config)
    train, test = _load_split(config, "train", size), _test_split(config, size)
    if not _is_folder(config):
        return _Data(train, None, test, None)
    # Image folders are sorted by class, so Keras's "last 10%" would validate on one class only:
    # split per class instead, seeded, and record it in the run.
    wanted = [("train", 1.0 - config.validation_split - (config.test_fraction if test is None else 0.0)),
              ("validation", config.validation_split), ("test", config.test_fraction if test is None else 0.0)]
    wanted = [(name, fraction) for name, fraction in wanted if fraction > 0]
    parts = stratified_split(train.labels, [fraction for _, fraction in wanted], seed)
    by_name = {name: idx for (name, _), idx in zip(wanted, parts, strict=True)}
    record = {"seed": seed, "fractions": dict(wanted), **{n: idx.tolist() for n, idx in by_name.items()}}
    if "test" in by_name:
        test = train.subset(by_name["test"])
    validation = train.subset(by_name["validation"]) if "validation" in by_name else None
    return _Data(train.subset(by_name["train"]), validation, test, record)


def _build(config: TrainConfig, train: Dataset) -> nn.Module:
    if config.init_from:
        model, card = load_model(config.init_from)
        if card.class_names != train.class_names:
            raise CnnlabError(f"--init-from {config.init_from} was trained on classes {card.class_names[:5]}..., "
                              f"not this dataset's {train.class_names[:5]}...; to reuse its features on new "
                              f"classes use --weights {config.init_from} --freeze")
        return model.train()
    if _is_model_file(config.model) and not _uses_transfer(config):
        return _model_from_file(config.model, train)
    if not _uses_transfer(config):
        if config.head != DEFAULT_HEAD:
            raise CnnlabError(f"--head {config.head!r} shapes the new head of a transfer model; add --pretrained, "
                              f"--freeze or --weights, or drop --head")
        options = {"widths": list(config.widths)} if config.widths else {}
        return build_model(config.model, train.input_shape, train.num_classes, **options)
    if _is_model_file(config.weights):
        backbone, _ = load_model(str(config.weights))
        if not isinstance(backbone, Sequential):
            raise CnnlabError(f"--weights {config.weights}: only cnnlab Sequential models can serve as a backbone")
        return transfer_model(backbone, train.num_classes, train.input_shape, head=config.head)
    if config.model not in BACKBONES:
        raise CnnlabError(f"--pretrained/--freeze need a backbone: one of {', '.join(BACKBONES)} "
                          f"(got --model {config.model!r}), or --weights a cnnlab model file")
    return transfer_model(config.model, train.num_classes, train.input_shape, config.pretrained or bool(config.weights),
                          config.weights, head=config.head,
                          class_names=train.class_names if config.head_init == "auto" else None)


def _model_from_file(source: str, train: Dataset) -> nn.Module:
    """--model FILE: the file's architecture with fresh weights, when it fits the data's images and classes."""
    model, card = build_from_file(source)
    classes, channels = len(card.class_names), card.input_shape[2]
    if classes != train.num_classes:
        raise CnnlabError(f"--model {source} has {classes} classes but the data has {train.num_classes}; build it "
                          f"with {train.num_classes} outputs, or reuse its features on these classes with "
                          f"--weights {source} --freeze")
    if channels != train.input_shape[2]:
        raise CnnlabError(f"--model {source} takes {channels}-channel images but the data has "
                          f"{train.input_shape[2]}; build it for {train.input_shape[2]} channels")
    return model


@dataclass
class Phase:
    name: str
    epochs: int
    learning_rate: float
    unfreeze_top: int | None            # None: every parameter trains
    trainable: int = 0
    non_trainable: int = 0


def _phases(config: TrainConfig, model: nn.Module) -> list[Phase]:
    transfer = isinstance(model, TransferModel)
    if config.unfreeze_top is not None and not transfer:
        raise CnnlabError("--unfreeze-top applies to transfer-learning models (--pretrained/--weights/--freeze)")
    if config.init_from or config.unfreeze_top is None:
        top = config.unfreeze_top if config.unfreeze_top is not None else (0 if config.freeze else None)
        return [Phase("train" if top is None else "head" if top == 0 else "fine-tune", config.epochs,
                      config.learning_rate, top if transfer else None)]
    return [Phase("head", config.epochs, config.learning_rate, 0),
            Phase("fine-tune", config.fine_tune_epochs, config.fine_tune_lr, config.unfreeze_top)]


def _apply_phase(model: nn.Module, phase: Phase) -> None:
    if isinstance(model, TransferModel):
        if phase.unfreeze_top is None:
            model.requires_grad_(True)
            model.unfrozen_top = -1
        else:
            model.freeze(phase.unfreeze_top)
    _, phase.trainable, phase.non_trainable = count_parameters(model)


def _feature_settings(config: TrainConfig, say: Callable[[str], None] | None,
                      fine_tuning: bool = False) -> FeatureSettings:
    """Frozen features computed once (training/features.py), kept in the data folder's features/ for the next run.

    Fine-tuning with --augment trains on live augmented images, as it always did: only the frozen bottom
    would be cached, and the augmentation would be lost (--feature-views K still asks for K views).
    """
    live = fine_tuning and bool(config.augment) and config.feature_views == 1
    return FeatureSettings("off" if live else config.feature_cache, config.feature_views,
                           resolve_data_dir(config.data_dir) / "features", say)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _callbacks(config: TrainConfig, run_dir: Path, save: Any, has_validation: bool) -> list[Callback]:
    callbacks: list[Callback] = [CSVLogger(run_dir / "history.csv")]
    if has_validation or not config.monitor.startswith("val_"):
        callbacks.append(ModelCheckpoint(run_dir / "best.safetensors", save, monitor=config.monitor))
    if config.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(config.monitor, patience=config.early_stopping_patience,
                                       restore_best_weights=config.restore_best_weights))
    if config.reduce_lr_patience is not None:
        callbacks.append(ReduceLROnPlateau(config.monitor, factor=config.reduce_lr_factor,
                                           patience=config.reduce_lr_patience, min_lr=config.min_lr))
    return callbacks


def _speedrun_config(config: TrainConfig, data: _Data, model: nn.Module) -> SpeedrunConfig:
    """The speedrun trainer's settings from a TrainConfig, refusing what that trainer cannot do."""
    if not isinstance(model, SpeedrunNet):
        raise CnnlabError(f"--recipe speedrun trains the speedrun model, not {config.model!r}; drop --model "
                          f"(or --model speedrun), or use --recipe fast for other models")
    if not isinstance(data.train, ArrayDataset):
        raise CnnlabError("--recipe speedrun keeps the training images in memory, but this folder is too large; "
                          "use smaller images (--image-size) or --recipe seed")
    refused = [flag for flag, value in (("--early-stopping", config.early_stopping_patience),
                                        ("--reduce-lr", config.reduce_lr_patience),
                                        ("--class-weights", config.class_weights),
                                        ("--checkpoint-every", config.checkpoint_every)) if value is not None]
    if refused:  # (it checkpoints at every epoch end, which --resume continues from)
        raise CnnlabError(f"--recipe speedrun runs a fixed short schedule; drop {', '.join(refused)}")
    spec = parse_augment(config.augment) if config.augment else None
    if spec is not None and replace(spec, flip="", crop=0, cutout=0) != replace(AugmentSpec(), fill=spec.fill):
        raise CnnlabError(f"--recipe speedrun augments with flip, crop and cutout only (got --augment "
                          f"{config.augment!r}); use e.g. --augment flip=h,crop=2,cutout=8, or crop=2 for digits")
    digit_like = Path(config.dataset).name in ("digits", "mnist")  # a mirrored digit is another glyph
    defaults = SpeedrunConfig()
    scale = config.learning_rate / RECIPES.get("speedrun").learning_rate  # --lr scales all of its rates
    return SpeedrunConfig(
        epochs=config.epochs, batch_size=config.batch_size, label_smoothing=config.label_smoothing,
        lr=defaults.lr * scale, bias_lr=defaults.bias_lr * scale, muon_lr=defaults.muon_lr * scale,
        flip=("h" in spec.flip) if spec is not None else not digit_like,
        translate=spec.crop if spec is not None else defaults.translate,
        cutout=spec.cutout if spec is not None else defaults.cutout,
        widths=model.widths, seed=config.seed)


def _write_json(path: Path, data: Any) -> None:
    write_json(path, data, after=lambda: _resume_hint(path.parent))


def _resume_hint(run_dir: Path) -> str:
    """What a failed write keeps, for its one-line error."""
    if (run_dir / CHECKPOINT_JSON).is_file():
        return f"; the last checkpoint is kept, then resume with: cnnlab train --resume {run_dir}"
    return ""


def _claim(config: TrainConfig, run_dir: Path, resume: bool) -> tuple[Path, RunLock | None]:
    """Rank 0 claims the run directory for this run (cnnlab.rundir); every rank gets its final name.

    A name cnnlab chose gets the next free suffix if another run took it meanwhile; a --run-dir
    given, or resumed, is refused while another process holds it.
    """
    locks: list[RunLock] = []

    def claim() -> str:
        locks.append(claim_run_dir(run_dir, new=not resume, numbered=not resume and not config.run_dir))
        return str(locks[0].path)

    return Path(from_main(claim)), (locks[0] if locks else None)


def _runtime(config: TrainConfig, epochs: int, images: int, speedrun: bool = False) -> Runtime:
    """The runtime of a phase of `epochs` over `images` (its steps decide compile=auto)."""
    per_epoch = images // config.batch_size if speedrun else math.ceil(images / config.batch_size)
    return resolve_runtime(config.device, config.precision, config.compile, steps=epochs * per_epoch,
                           threads=config.threads)


def _start(config: TrainConfig, resume: bool = False) -> tuple[Path, _Data, nn.Module, list[Phase], Augmenter]:
    """Everything that can fail on user input, before the run directory exists."""
    config.validate()
    if config.deterministic:
        use_deterministic()
    resolve_runtime(config.device, config.precision, config.compile)  # a wrong --device fails before any file exists
    check_batch(config.batch_size)  # distributed: the global batch must split evenly over the processes
    if world_size() > 1 and RECIPES.get(config.recipe).trainer == "speedrun":
        raise CnnlabError("--recipe speedrun trains on one GPU (its whole run takes seconds); drop --nproc/torchrun")
    # distributed: rank 0 names the run and draws the seed, every rank uses them
    run_dir = Path(str(config.run_dir)) if resume else from_main(lambda: new_run_dir(config))
    if config.seed is None:
        config.seed = from_main(lambda: random.SystemRandom().randrange(2**31))
    data = _prepare_data(config, config.seed)
    torch.manual_seed(config.seed)
    model = _build(config, data.train)
    phases = _phases(config, model)
    for phase in phases:  # the parameter counts of each phase, for config.json and the printout
        _apply_phase(model, phase)
    if RECIPES.get(config.recipe).trainer == "speedrun":
        _speedrun_config(config, data, model)  # its checks, before the run directory exists
    return run_dir, data, model, phases, Augmenter(parse_augment(config.augment))


def train_run(config: TrainConfig, verbose: int = 1, resume: bool = False,
              print_fn: Callable[[str], None] | None = None, started: float | None = None) -> RunResult:
    """Load data, build the model, train (in one or two phases), test once, write the run directory.

    Checkpoints go into the run directory at every epoch end (and every `checkpoint_every` steps);
    `resume` continues the stopped run `config.run_dir` from its checkpoint (see cnnlab.resume).
    The run directory is this process's alone while it runs (cnnlab.rundir.claim_run_dir), and a
    write that fails there (a full disk) is one CnnlabError naming the file. `print_fn` (e.g. print)
    gets the runtime chosen and the class weights of class_weights="auto", as config.json records them.
    metrics.json's seconds_to_first_step counts from `started` (a time.perf_counter() value: the CLI
    passes its process's start) or else from this call, to the end of the first optimizer step.

    >>> import tempfile
    >>> r = train_run(TrainConfig(epochs=1, run_dir=tempfile.mkdtemp() + "/run"), verbose=0)
    >>> sorted(p.name for p in r.run_dir.iterdir())[:3]
    ['best.json', 'best.safetensors', 'config.json']
    """
    # the run's decode budget (recorded in config.json, so --resume and fine-tune read the same images)
    started = time.perf_counter() if started is None else started
    previous_budget = set_max_image_pixels(config.max_image_pixels, "--max-image-pixels")
    try:
        run_dir, data, model, phases, augment = _start(config, resume)
        run_dir, lock = _claim(config, run_dir, resume)  # after every input check: a refused run leaves nothing
        try:  # any other write into the run (history.csv, TensorBoard) that fails: one line too
            with writing(run_dir, after=lambda: _resume_hint(run_dir), within=True), \
                    first_step_clock(model, started) as clock:
                return _train(config, verbose, resume, print_fn, run_dir, data, model, phases, augment, clock)
        finally:
            if lock is not None:
                lock.release()
    finally:
        set_max_image_pixels(previous_budget)


def _record(config: TrainConfig, run_dir: Path, data: _Data, phases: list[Phase], weights: torch.Tensor | None,
            print_fn: Callable[[str], None] | None, model: nn.Module) -> None:
    """config.json (the settings, the data's shape, the runtime chosen, class weights, where the head started),
    versions.json, split.json."""
    train, speedrun = data.train, RECIPES.get(config.recipe).trainer == "speedrun"
    runtime = place(_runtime(config, phases[0].epochs if phases and not speedrun else config.epochs, len(train),
                             speedrun))
    runtime_record = {**runtime.record(), "processes": world_size()}
    extra: dict[str, object] = {"runtime": runtime_record}
    if weights is not None:
        weight_values = dict(zip(train.class_names, weights.tolist(), strict=True))
        extra["class_weight_values"] = weight_values
    from_imagenet = bool(getattr(model, "head_from_imagenet", False))  # a model from --init-from has it False
    if from_imagenet:
        extra["head_start"] = "imagenet"
    check_writable(run_dir)  # an unwritable directory or a full disk fails here, not after an epoch of training
    _write_json(run_dir / "config.json", {**config.to_dict(), "class_names": train.class_names, "input_shape":
                                          list(train.input_shape), "train_size": len(train), "test_size":
                                          len(data.test) if data.test else 0, "phases": [vars(p) for p in phases],
                                          "processes": world_size(), **extra})
    _write_json(run_dir / "versions.json", versions())
    if data.split is not None:
        _write_json(run_dir / "split.json", data.split)
    if print_fn is not None:
        print_fn(runtime_line(runtime_record, world_size()))
        if weights is not None:
            shown = ", ".join(f"{n} {w:.3g}" for n, w in list(weight_values.items())[:10])
            more = f", ... ({len(train.class_names)} in config.json)" if len(train.class_names) > 10 else ""
            print_fn(f"class weights (auto, inverse class frequency): {shown}{more}")
        if from_imagenet:
            print_fn(f"every class is an ImageNet class: the new head starts from the ImageNet classifier's "
                     f"{len(train.class_names)} rows for them (--head-init random to start it at random)")


def _train(config: TrainConfig, verbose: int, resume: bool, print_fn: Callable[[str], None] | None, run_dir: Path,
           data: _Data, model: nn.Module, phases: list[Phase], augment: Augmenter,
           clock: FirstStep | None = None) -> RunResult:
    saved = open_checkpoint(run_dir, config, len(phases)) if resume else None
    train, classes, shape = data.train, data.train.class_names, data.train.input_shape
    weights = class_weights(train.labels, train.num_classes) if config.class_weights == "auto" else None
    if is_main():  # distributed: rank 0 alone writes the run directory
        _record(config, run_dir, data, phases, weights, print_fn, model)

    tta: dict[str, Any] = {}  # a speed-run's test-time augmentation, filled in below: the model file records it

    scoring: dict[str, Any] = {}  # how the test split was scored (training/scoring.py): the model file records it
    scoring_extra: dict[str, Any] = {}  # and whether stored frozen features were used: metrics.json records it

    def save(m: nn.Module, path: Path, metrics: dict[str, float] | None = None) -> Path:
        with writing(path, after=lambda: _resume_hint(run_dir)):
            return save_model(m, path, classes, shape, metrics, tta, scoring=scoring)

    # earlier phases' history (a speed-run's own is in its checkpoint: train_speedrun puts it back)
    history: dict[str, list[float]] = saved.run.get("history", {}) if saved else {}
    epoch_seconds: list[float] = saved.run.get("epoch_seconds", []) if saved else []
    start = time.perf_counter() - (saved.run["seconds"] if saved else 0.0)
    test_metrics = None
    if RECIPES.get(config.recipe).trainer == "speedrun":
        runtime = _runtime(config, config.epochs, len(train), speedrun=True)
        settings = _speedrun_config(config, data, model)
        fit_on, validation = train, data.validation
        if validation is None and config.validation_split:
            fit_on, validation = train.split_last(config.validation_split)  # type: ignore[union-attr]
        keep = SpeedrunCheckpoints(run_dir, {"phase": 0, "config_sha256": config_digest(config)}, start, saved)
        try:
            h = train_speedrun(model, fit_on, settings, runtime, validation,  # type: ignore[arg-type]
                               verbose=verbose, checkpoints=keep)
        except KeyboardInterrupt:  # a second Ctrl-C stops at once; the last epoch-end checkpoint is kept
            if (run_dir / CHECKPOINT_JSON).is_file():
                raise TrainingInterrupted(run_dir) from None
            raise
        if settings.tta_level:
            tta.update(level=settings.tta_level, flip=settings.flip)
        if data.test is not None and config.evaluate_test:
            # scored as `cnnlab evaluate` scores it (fp32, which the model card records): a later evaluation
            # gives the run's own number
            test_metrics = evaluate_tta(model, data.test, Runtime(runtime.device, "fp32", compile=False),
                                        settings.tta_level, flip=settings.flip)
        phases, history, epoch_seconds = [], dict(h.history), list(h.epoch_seconds)
    thread_records: list[dict[str, object]] = []  # each phase's CPU thread policy and decisions, for history.json
    feature_records: list[dict[str, object]] = []  # each phase's frozen features computed once, or not
    for index, phase in enumerate(phases):
        if saved is not None and index < saved.run["phase"]:
            continue  # finished before the checkpoint: its history is in `history` already
        _apply_phase(model, phase)
        if index == len(phases) - 1 and _keeps_best_phase(config, phases) and is_main() \
                and not (saved is not None and index == saved.run["phase"]):  # resumed: written before
            _write_phase_start(run_dir, model)
        keeper = Checkpointer(run_dir, config.checkpoint_every, resume=saved if saved and index == saved.run["phase"]
                              else None, started=start, run={"phase": index, "history": history, "epoch_seconds":
                                                             epoch_seconds, "config_sha256": config_digest(config)})
        callbacks = _callbacks(config, run_dir, save, config.validation_split > 0 or data.validation is not None) \
            + tensorboard_callbacks(config.tensorboard, run_dir, data.validation if data.validation is not None
                                    else train, len(epoch_seconds))
        say = print_fn if print_fn is not None and is_main() else (lambda line: None)
        runtime = _runtime(config, phase.epochs, len(train))
        callbacks.append(TrainingHints(train.num_classes, phase.learning_rate, _has_batchnorm(model), say))
        if not is_main():  # files are rank 0's; placeholders keep the callback list (and checkpoints) aligned
            callbacks = [cb if isinstance(cb, (EarlyStopping, ReduceLROnPlateau)) else Callback() for cb in callbacks]
        h = fit(model, train, epochs=phase.epochs, batch_size=config.batch_size, learning_rate=phase.learning_rate,
                validation_split=config.validation_split if data.validation is None else 0.0,
                validation_data=data.validation, seed=config.seed, verbose=verbose, checkpoint=keeper,
                callbacks=callbacks, sync_bn=config.sync_bn,
                augment=augment, class_weights=weights, workers=config.workers, schedule=config.schedule,
                label_smoothing=config.label_smoothing, runtime=runtime,
                thread_tuner=ThreadTuner(runtime.thread_policy(), say=say),
                features=_feature_settings(config, say, fine_tuning=bool(phase.unfreeze_top)))
        thread_records.append(h.threads)
        feature_records.append(h.features)
        restored = _restored_epoch(callbacks, len(history.get("loss", [])), len(h.history["loss"]))
        for key, values in h.history.items():
            history.setdefault(key, []).extend(values)
        history.setdefault("phase", []).extend([float(phases.index(phase))] * len(h.history["loss"]))
        epoch_seconds += h.epoch_seconds
    seconds = time.perf_counter() - start
    if not is_main():  # distributed: rank 0 tests the model and writes the results
        return RunResult(run_dir, history, None, seconds, epoch_seconds, [])
    if _keeps_best_phase(config, phases) and (run_dir / PHASE_START).is_file():
        back = _better_phase(history, config.monitor, len(phases))
        if back is not None:  # fine-tuning did not beat the phase before it on validation: keep that phase's model
            model.load_state_dict(load_file(str(run_dir / PHASE_START)))
            restored = back
            if print_fn is not None:
                print_fn(f"{phases[-1].name}: no better {config.monitor} than the {phases[-2].name} phase's best "
                         f"(epoch {back + 1}); the model keeps that phase's weights")
    if test_metrics is not None:  # the speed-run's own scoring: fp32, with its test-time augmentation
        scoring.update(precision="fp32")
    else:  # how this run scores, now or later with `cnnlab evaluate RUN` (--no-test): the model file records it
        runtime = _runtime(config, 1, len(train))
        scoring.update(scoring_record(runtime))
        if data.test is not None and config.evaluate_test:
            test_metrics, from_features = score(model, data.test, runtime, _feature_settings(config, None),
                                                workers=config.workers)
            scoring_extra["features_once"] = from_features
    result = _finish(run_dir, model, save, data, history, epoch_seconds, seconds, config, test_metrics,
                     restored if phases else None, thread_records, clock.seconds() if clock else None,
                     feature_records, {**scoring, **scoring_extra})
    remove_checkpoint(run_dir)  # the run is complete: model.safetensors and metrics.json replace it
    (run_dir / PHASE_START).unlink(missing_ok=True)
    return result


def _finish(run_dir: Path, model: nn.Module, save: Any, data: _Data, history: dict[str, list[float]],
            epoch_seconds: list[float], seconds: float, config: TrainConfig,
            test_metrics: Scores | None = None, restored: int | None = None,
            threads: list[dict[str, object]] | None = None, first_step: float | None = None,
            features: list[dict[str, object]] | None = None, scoring: dict[str, Any] | None = None) -> RunResult:
    # the model's own epoch: the last, or the one EarlyStopping restored
    final = {k: v[-1 if restored is None else restored] for k, v in history.items() if k != "phase"}
    metrics = {**final, **({f"test_{k}": v for k, v in test_metrics.items()} if test_metrics else {})}
    save(model, run_dir / "model.safetensors", metrics)
    _write_json(run_dir / "history.json", {"history": history, "epoch_seconds": epoch_seconds,
                                           **({"threads": threads} if threads else {}),
                                           **({"features": features} if features else {})})
    skipped = sorted(set(getattr(data.train, "skipped", [])) | set(getattr(data.train, "skipped_during_training", [])))
    if skipped:
        # backslashreplace: a name that is not UTF-8 is written as the CLI prints it (b"\xff" -> "\udcff")
        write_file(run_dir / "skipped_files.txt", lambda tmp: tmp.write_text("\n".join(skipped) + "\n",
                                                                              errors="backslashreplace"),
                   after=lambda: _resume_hint(run_dir))
    with writing(run_dir / "curves.png", after=lambda: _resume_hint(run_dir)):
        from cnnlab.viz.curves import plot_history  # here: matplotlib's import (0.4 s) would delay the first step

        plot_history(history, run_dir / "curves.png", title=f"{_model_label(config)} on {Path(config.dataset).name}")
    # last: metrics.json marks the run finished, so a write that failed before it leaves a run --resume completes
    _write_json(run_dir / "metrics.json", {**metrics, "train_seconds": seconds, "skipped_files": len(skipped),
                                           **({"scoring": scoring} if scoring else {}),
                                           **({"seconds_to_first_step": first_step} if first_step is not None else {})})
    return RunResult(run_dir, history, dict(test_metrics) if test_metrics else None, seconds, epoch_seconds, skipped,
                     restored)
