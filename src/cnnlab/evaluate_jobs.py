"""Evaluation jobs behind the CLI: a run or model file judged on its data, as numbers or as a full report.

`cnnlab evaluate` and `cnnlab export`'s parity check find a run's test data here, exactly where the
run found it (split.json for image folders), so a run is never judged on images it trained on.

The forward passes run on torch or through the model's ONNX twin (`runtime`, see `cnnlab.inference`;
the command's default is auto). Through the twin, only the forward passes change: the loss, the
accuracy and the report are computed by the same code. The twin gave torch's top-1 class on every
one of 256 check images when it was made (`check_parity`, as `cnnlab export` checks): drawn from the
images evaluated when evaluation made it, else from the run's test split, as export draws them. Test-time
augmentation runs on torch (the graph has no augmented views), and so does a dataset that
normalizes its images itself (the graph takes pixels); the result records which ran, and why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnlab.data import ImageDataset as Dataset
from cnnlab.data import load_dataset, resolve_data_dir
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import EvaluationResult, evaluate_predictions, write_report
from cnnlab.fileio import atomic_write
from cnnlab.inference import Inference, check_runtime, load_inference
from cnnlab.models.files import ModelCard, load_model, resolve_model_path
from cnnlab.rundir import read_json
from cnnlab.training import evaluate, predict_proba
from cnnlab.training.loop import Scores
from cnnlab.training.devices import Runtime
from cnnlab.training.features import FeatureSettings
from cnnlab.training.scoring import recorded_precision, score, score_probabilities
from cnnlab.training.speedrun import tta_logits

if TYPE_CHECKING:
    from cnnlab.export.runtime import OnnxClassifier

__all__ = ["evaluation_data", "run_data", "evaluate_model", "tta_level", "report_model", "evaluation_runtime"]


def evaluation_data(source: str | Path, dataset: str | None = None, split: str = "test",
                    data_dir: str | None = None, download: bool = True) -> tuple[nn.Module, ModelCard, Dataset, str]:
    """The model of a run or model file and the data to judge it on: (model, card, data, dataset name).

    Without `dataset`, a run is judged on its own dataset's test split, found where the run found it
    (its --data-dir, unless `data_dir` is given); for an image folder, on the run's own test part
    recorded in split.json (never on images it trained on). See `run_data` for the data alone.
    """
    model, card = load_model(source)
    data, name = run_data(source, card, dataset, split, data_dir, download)
    return model, card, data, name


def run_data(source: str | Path, card: ModelCard, dataset: str | None = None, split: str = "test",
             data_dir: str | None = None, download: bool = True) -> tuple[Dataset, str]:
    """(data, dataset name) of `evaluation_data`, for a model already loaded (its `card`).

    `cnnlab explore` shows a run's own test images this way, offline (`download=False`).

    >>> run_data("no-such-run", ModelCard.__new__(ModelCard))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: which dataset? no-such-run is not a run directory with a config.json; ...
    """
    run_split = Path(source) / "split.json"
    config_path = Path(source) / "config.json"
    if dataset is None and not config_path.is_file():
        raise CnnlabError(f"which dataset? {source} is not a run directory with a config.json; "
                          f"pass --dataset NAME_OR_FOLDER")
    h, w, c = card.input_shape
    if dataset is None:
        fix = "pass --dataset NAME_OR_FOLDER, or restore the file"
        run_config = read_json(config_path, fix=fix)
        if not isinstance(run_config.get("dataset"), str):
            raise CnnlabError(f"{config_path} names no dataset (\"dataset\": {run_config.get('dataset')!r}); {fix}")
        dataset = run_config["dataset"]
        data_dir = data_dir if data_dir is not None else run_config.get("data_dir")
        recorded = read_json(run_split, fix=fix) if run_split.is_file() else {}
        if split in recorded and split != "train":
            data = load_dataset(dataset, "train", data_dir, download, image_size=(h, w)).subset(recorded[split])
            return _checked(card, data, dataset, split), dataset
    data = load_dataset(dataset, split=split, data_dir=data_dir, download=download)
    if data.input_shape[:2] != (h, w) and data.input_shape[2] == c:
        data = load_dataset(dataset, split=split, data_dir=data_dir, download=download, image_size=(h, w))
    return _checked(card, data, dataset, split), dataset


def evaluate_model(source: str | Path, dataset: str | None = None, split: str = "test",
                   data_dir: str | None = None, download: bool = True, batch_size: int = 256,
                   tta: int | None = None, runtime: str = "torch", precision: str = "auto"
                   ) -> tuple[Scores, ModelCard, str, int, dict[str, Any]]:
    """Evaluate a run directory or model file on a dataset split: (metrics, card, dataset name, n, what ran).

    With the test-time augmentation the model file records (speed-runs: the number the run reported),
    or at level `tta` (0: none); see `tta_level`. On torch as the run scored its own test split (the
    precision its card records, `precision` "auto"; BatchNorm folded; a frozen backbone's features from
    the data folder's feature store: training/scoring.py), or through the model's ONNX twin (`runtime`
    auto or onnxruntime, in fp32); "what ran" is `Inference.describe()` (runtime, reason, twin, notes).
    """
    model, card, data, name = evaluation_data(source, dataset, split, data_dir, download)
    level = tta_level(card, tta)
    device = torch.device("cpu")  # where load_model puts the model
    chosen, why = recorded_precision(card.scoring, device, precision)
    ran = evaluation_runtime(source, model, card, data, runtime, level, chosen, why)
    if ran.onnx is None and level == 0:
        folder = resolve_data_dir(data_dir if data_dir is not None else _run_data_dir(source)) / "features"
        scores, used = score(model, data, Runtime(device, chosen, False), FeatureSettings(folder=folder))
        return scores, card, name, len(data), {**ran.describe(), "precision": chosen, "features_once": used}
    forward = _tta_forward(model, card, tta) if ran.onnx is None else _onnx_forward(ran.onnx)
    return evaluate(model, data, batch_size, forward=forward), card, name, len(data), \
        {**ran.describe(), "precision": "fp32"}


def _run_data_dir(source: str | Path) -> str | None:
    """The --data-dir the run in `source` used (None: a model file, or the default folder)."""
    config = Path(source) / "config.json"
    if not config.is_file():
        return None
    value = read_json(config, fix="restore the file").get("data_dir")
    return value if isinstance(value, str) else None


def evaluation_runtime(source: str | Path, model: nn.Module, card: ModelCard, data: Dataset, runtime: str,
                       tta: int = 0, precision: str = "fp32", why: str = "") -> Inference:
    """What runs an evaluation's forward passes: the model's ONNX twin when `runtime` allows and the
    evaluation needs nothing the graph lacks (fp32, no test-time augmentation), else torch (with the reason)."""
    check_runtime(runtime)
    file = resolve_model_path(source)
    if runtime != "torch" and tta:
        return Inference("torch", f"test-time augmentation (level {tta}) runs on torch: the ONNX graph has no "
                         f"augmented views", card, file, model=model)
    if runtime != "torch" and precision != "fp32":
        if runtime == "onnxruntime":
            raise CnnlabError(f"--runtime onnxruntime computes in fp32, but {why}; add --precision fp32, "
                              f"or use --runtime auto")
        return Inference("torch", f"{why}; the ONNX twin computes fp32", card, file, model=model)
    images = getattr(data, "images", None)
    if runtime != "torch" and (getattr(data, "normalize", None) is not None
                               or (images is not None and images.dtype != torch.uint8)):
        return Inference("torch", "the dataset prepares its images itself; the ONNX graph takes uint8 pixels",
                         card, file, model=model)
    return load_inference(source, runtime, loaded=(model, card), probe=images)  # a new twin is checked on these


def _onnx_forward(onnx: OnnxClassifier) -> Callable[[torch.Tensor], torch.Tensor]:
    """`evaluate`'s forward through the twin: its inputs (pixels / 255, float_images) back to the exact pixels."""

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        pixels = (inputs * 255).round().to(torch.uint8)  # (N, C, H, W): float_images' x / 255, undone exactly
        return torch.from_numpy(onnx.outputs(pixels))    # the model's own output, as model(inputs) gives it

    return forward


def tta_level(card: ModelCard, tta: int | None = None) -> int:
    """The test-time augmentation level to evaluate with: `tta` when given (0, 1 or 2), else the model's own.

    >>> tta_level(ModelCard({"name": "speedrun"}, ["a"], [8, 8, 1], test_time_augmentation={"level": 2, "flip": False}))
    2
    """
    if tta is None:
        return int(card.test_time_augmentation.get("level", 0))
    if tta not in (0, 1, 2) or isinstance(tta, bool):
        raise CnnlabError(f"--tta must be 0 (none), 1 (+ mirror) or 2 (+ mirror and shifts), got {tta!r}")
    return tta


def _tta_forward(model: nn.Module, card: ModelCard, tta: int | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The model's outputs averaged over the test-time views of `tta_level(card, tta)`; None for level 0."""
    level, flip = tta_level(card, tta), card.test_time_augmentation.get("flip", True)
    return (lambda images: tta_logits(model, images, level, flip)) if level else None


def _checked(card: ModelCard, data: Dataset, dataset: str, split: str) -> Dataset:
    if data.class_names != card.class_names:
        raise CnnlabError(f"{dataset} ({split}) has classes {data.class_names[:5]}... but the model was trained on "
                          f"{card.class_names[:5]}...; evaluate it on the dataset it was trained for")
    return data


def report_model(source: str | Path, directory: str | Path, dataset: str | None = None, split: str = "test",
                 data_dir: str | None = None, download: bool = True, batch_size: int = 256,
                 tta: int | None = None, runtime: str = "torch", precision: str = "auto"
                 ) -> tuple[EvaluationResult, dict[str, Path], str, dict[str, Any]]:
    """Full evaluation report of a run or model file: metrics, confusion, top losses, HTML page (with the
    model's test-time augmentation, or level `tta`, as `evaluate_model`); the last item says what ran,
    and the report's metrics.json records it under "inference"."""
    model, card, data, name = evaluation_data(source, dataset, split, data_dir, download)
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CnnlabError(f"report directory {target} already exists and is not empty; choose another --report DIR")
    images, labels = [], []
    for batch, batch_labels in data.batches(batch_size):  # one pass: pictures for the report too
        images.append(batch)
        labels.append(batch_labels)
    pixels = torch.cat(images)
    level = tta_level(card, tta)
    chosen, why = recorded_precision(card.scoring, torch.device("cpu"), precision)
    ran = evaluation_runtime(source, model, card, data, runtime, level, chosen, why)
    if ran.onnx is None and level == 0:  # as `cnnlab evaluate` and the run itself score: the same numbers
        probabilities = score_probabilities(model, pixels, Runtime(torch.device("cpu"), chosen, False))
    elif ran.onnx is None:
        probabilities = predict_proba(model, pixels, batch_size, _tta_forward(model, card, tta))
    else:
        probabilities = torch.from_numpy(ran.onnx.predict_proba(pixels))
    result = evaluate_predictions(probabilities, torch.cat(labels), card.class_names)
    if pixels.dtype != torch.uint8:  # float datasets: back to 8-bit for the pictures
        pixels = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
    files = write_report(result, pixels, target, title=f"{Path(str(source)).name} on {name} ({split})")
    _record_runtime(files["metrics"], ran.describe())
    return result, files, name, ran.describe()


def _record_runtime(metrics: Path, ran: dict[str, Any]) -> None:
    """Add what ran (`Inference.describe()`) to the report's metrics.json, as "inference"."""
    recorded = json.loads(metrics.read_text())
    atomic_write(metrics, lambda tmp: tmp.write_text(json.dumps({**recorded, "inference": ran}, indent=2) + "\n"))
