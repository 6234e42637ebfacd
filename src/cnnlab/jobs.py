"""Whole jobs behind the CLI: a training run with its run directory, and evaluation of a saved model.

A run directory holds: config.json (resolved settings, including the seed actually used),
versions.json, history.csv (written as epochs finish), history.json, model.safetensors +
model.json (the final model; with early stopping, its best epoch), best.safetensors (the best
epoch by the monitored metric, when there is validation data), curves.png and metrics.json.
Every input is checked before the directory is created, and an existing directory is never
reused, so a mistake never costs a previous run.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from cnnlab.config import TrainConfig
from cnnlab.data import ArrayDataset, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.models.files import ModelCard, atomic_write, load_model, save_model
from cnnlab.models.zoo import build_model
from cnnlab.training import (
    Callback, CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, evaluate, fit,
)
from cnnlab.versions import versions
from cnnlab.viz import plot_history

__all__ = ["RunResult", "train_run", "evaluate_model", "new_run_dir"]


@dataclass
class RunResult:
    run_dir: Path
    history: dict[str, list[float]]
    test: dict[str, float] | None      # test loss/accuracy, when the dataset has a test split
    seconds: float
    epoch_seconds: list[float]


def new_run_dir(config: TrainConfig) -> Path:
    """The run directory to create: the given one (which must not exist yet) or a fresh name."""
    if config.run_dir:
        path = Path(config.run_dir)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise CnnlabError(f"run directory {path} already exists and is not empty; cnnlab never overwrites a run. "
                              f"Choose another --run-dir or delete that one")
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = Path(config.dataset).name if Path(config.dataset).is_dir() else config.dataset
    base = Path(config.runs_root) / f"{dataset}-{config.model}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _load_split(config: TrainConfig, split: str) -> ArrayDataset:
    size = tuple(config.image_size) if config.image_size else None
    return load_dataset(config.dataset, split=split, data_dir=config.data_dir, download=config.download,
                        image_size=size)  # type: ignore[arg-type]


def _test_split(config: TrainConfig) -> ArrayDataset | None:
    try:
        return _load_split(config, "test")
    except CnnlabError as exc:
        if "no test" in str(exc):  # an unsplit image folder: nothing to test on
            return None
        raise


def _callbacks(config: TrainConfig, run_dir: Path, save: Any) -> list[Callback]:
    callbacks: list[Callback] = [CSVLogger(run_dir / "history.csv")]
    if config.validation_split > 0 or not config.monitor.startswith("val_"):
        callbacks.append(ModelCheckpoint(run_dir / "best.safetensors", save, monitor=config.monitor))
    if config.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(config.monitor, patience=config.early_stopping_patience,
                                       restore_best_weights=config.restore_best_weights))
    if config.reduce_lr_patience is not None:
        callbacks.append(ReduceLROnPlateau(config.monitor, factor=config.reduce_lr_factor,
                                           patience=config.reduce_lr_patience, min_lr=config.min_lr))
    return callbacks


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def train_run(config: TrainConfig, verbose: int = 1) -> RunResult:
    """Load data, build the model, train, test once, and write the run directory.

    >>> import tempfile
    >>> r = train_run(TrainConfig(epochs=1, run_dir=tempfile.mkdtemp() + "/run"), verbose=0)
    >>> sorted(p.name for p in r.run_dir.iterdir())[:3]
    ['best.json', 'best.safetensors', 'config.json']
    """
    config.validate()
    run_dir = new_run_dir(config)
    train = _load_split(config, "train")
    test = _test_split(config)
    if config.seed is None:
        config.seed = random.SystemRandom().randrange(2**31)
    torch.manual_seed(config.seed)
    model = build_model(config.model, train.input_shape, train.num_classes)
    classes, shape = train.class_names, train.input_shape
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "config.json", {**config.to_dict(), "class_names": classes, "input_shape": list(shape),
                                          "train_size": len(train), "test_size": len(test) if test else 0})
    _write_json(run_dir / "versions.json", versions())

    def save(m: torch.nn.Module, path: Path, metrics: dict[str, float] | None = None) -> Path:
        return save_model(m, path, classes, shape, metrics)

    start = time.perf_counter()
    history = fit(model, train, epochs=config.epochs, batch_size=config.batch_size,
                  learning_rate=config.learning_rate, validation_split=config.validation_split,
                  callbacks=_callbacks(config, run_dir, save), seed=config.seed, verbose=verbose)
    seconds = time.perf_counter() - start
    test_metrics = evaluate(model, test) if test is not None else None
    final = {k: v[-1] for k, v in history.history.items()}
    metrics = {**final, **({f"test_{k}": v for k, v in test_metrics.items()} if test_metrics else {})}
    save(model, run_dir / "model.safetensors", metrics)
    _write_json(run_dir / "history.json", {"history": history.history, "epoch_seconds": history.epoch_seconds})
    _write_json(run_dir / "metrics.json", {**metrics, "train_seconds": seconds})
    plot_history(history.history, run_dir / "curves.png", title=f"{config.model} on {config.dataset}")
    return RunResult(run_dir, history.history, test_metrics, seconds, history.epoch_seconds)


def evaluate_model(source: str | Path, dataset: str | None = None, split: str = "test",
                   data_dir: str | None = None, download: bool = True,
                   batch_size: int = 256) -> tuple[dict[str, float], ModelCard, str, int]:
    """Evaluate a run directory or model file on a dataset split: (metrics, card, dataset name, n)."""
    model, card = load_model(source)
    if dataset is None:
        config_path = Path(source) / "config.json"
        if not config_path.is_file():
            raise CnnlabError(f"which dataset? {source} is not a run directory with a config.json; "
                              f"pass --dataset NAME_OR_FOLDER")
        dataset = str(json.loads(config_path.read_text())["dataset"])
    h, w, _ = card.input_shape
    data = load_dataset(dataset, split=split, data_dir=data_dir, download=download)
    if data.input_shape[:2] != (h, w) and data.input_shape[2] == card.input_shape[2]:
        data = load_dataset(dataset, split=split, data_dir=data_dir, download=download, image_size=(h, w))
    if data.class_names != card.class_names:
        raise CnnlabError(f"{dataset} ({split}) has classes {data.class_names[:5]}... but the model was trained on "
                          f"{card.class_names[:5]}...; evaluate it on the dataset it was trained for")
    return evaluate(model, data, batch_size), card, dataset, len(data)
