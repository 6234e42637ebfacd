"""What each `cnnlab` command checks before torch is imported: cli.main runs `check_arguments` first.

Importing torch takes 2-3.5 s on a 2-core machine (2026-12-07), so a misspelt name, a value out of
range, a missing file or a broken config file is refused before it, within about 0.2 s. Each check
calls the function the command itself goes through later (which checks again, for Python callers),
so a message is the same either way. What only the loaded data or model can tell (a folder without
images, a model file that does not load) is the command's to find. This module imports no torch.

>>> from cnnlab.cli import build_parser
>>> check_arguments(build_parser().parse_args(["summary", "lenet"]))  # doctest: +ELLIPSIS
Traceback (most recent call last):
cnnlab.errors.CnnlabError: unknown model 'lenet'. Did you mean 'lenet5'...
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from cnnlab.catalog import MODEL_RECORDS, check_dataset_source, resolve_model_path
from cnnlab.config import TrainConfig, check_image_shape, load_config_file
from cnnlab.errors import CnnlabError
from cnnlab.outputs import output_path
from cnnlab.recipes import recipe_settings
from cnnlab.resume import resume_config

__all__ = ["TORCH_FREE", "TORCH_WHEN_NEEDED", "check_arguments", "train_config", "scratch_rate", "resume_settings"]

TORCH_FREE = frozenset({"models", "datasets"})  # commands that never import torch (cli.main imports it for the rest)
# Commands that import torch themselves when they need it: predict runs a cached ONNX twin or a .onnx
# file without it (cnnlab.inference), and imports it, Ctrl-C held as cli.main holds it, only otherwise.
TORCH_WHEN_NEEDED = frozenset({"predict"})


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse what is wrong in a parsed command line without importing torch; one CnnlabError line."""
    check = CHECKS.get(args.command)
    if check is not None:
        check(args)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """`cnnlab train`'s settings: the recipe's, then the --config file's, then the flags given."""
    from_file: dict[str, Any] = load_config_file(args.config) if args.config else {}
    settings = recipe_settings(args.recipe or from_file.get("recipe", "seed"))
    settings.update(from_file)
    if args.data and args.dataset and args.data != args.dataset:
        raise CnnlabError(f"two datasets given: {args.data!r} and --dataset {args.dataset!r}; give one")
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            settings[f.name] = value
    if args.data:
        settings["dataset"] = args.data
    config = TrainConfig(**settings)
    rate = scratch_rate(config)
    if rate is not None and "learning_rate" not in from_file and args.learning_rate is None:
        config = replace(config, learning_rate=rate)
    return config


def scratch_rate(config: TrainConfig) -> float | None:
    """The registry's adam rate for training `config.model` from scratch with the seed recipe, if it has one."""
    transfer = config.pretrained or config.weights or config.init_from or config.freeze
    if config.recipe != "seed" or transfer or config.model not in MODEL_RECORDS:
        return None
    return MODEL_RECORDS.get(config.model).learning_rate


def resume_settings(args: argparse.Namespace) -> TrainConfig:
    """`train --resume RUN_DIR`: the run's own config, with the flags given checked against it."""
    if args.config:
        raise CnnlabError(f"--resume {args.resume} uses the run's own config.json; drop --config {args.config}")
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return resume_config(args.resume, {**given, **({"dataset": args.data} if args.data else {})})


def _train(args: argparse.Namespace) -> None:
    if args.resume:
        resume_settings(args)
        return
    config = train_config(args)
    config.validate()
    check_dataset_source(config.dataset)
    if config.init_from:
        resolve_model_path(config.init_from)
    transfer = config.pretrained or config.weights or config.freeze or config.unfreeze_top is not None
    model = Path(config.model)
    # a registry name unless it names a model file (cnnlab.jobs reads those) or a transfer run picks the backbone
    if not (config.init_from or transfer or model.exists() or (model.name and model.with_suffix(".json").is_file())):
        MODEL_RECORDS.get(config.model)


def _fine_tune(args: argparse.Namespace) -> None:
    if not (Path(args.run) / "config.json").is_file():
        raise CnnlabError(f"{args.run} is not a run directory (no config.json); give the run to fine-tune")


def _summary(args: argparse.Namespace) -> None:
    if args.input_shape is not None:  # bounded before any model is built for it
        args.input_shape = check_image_shape(args.input_shape, "--input-shape")
    if Path(args.model).exists():
        resolve_model_path(args.model)
    else:
        MODEL_RECORDS.get(args.model)


def _model_file(args: argparse.Namespace) -> None:
    """Commands that read a cnnlab model file (a run directory, a .safetensors file or its .json)."""
    resolve_model_path(args.model)


def _predict(args: argparse.Namespace) -> None:
    """predict reads a cnnlab model file or a .onnx file (cnnlab.inference says when one is missing)."""
    if Path(args.model).suffix.lower() != ".onnx":
        resolve_model_path(args.model)


def _model_file_and_output(args: argparse.Namespace) -> None:
    output_path(args.output, "-o")
    resolve_model_path(args.model)


def _evaluate(args: argparse.Namespace) -> None:
    if args.report:
        output_path(args.report, "--report", folder=True)
    resolve_model_path(args.model)
    if args.dataset:
        check_dataset_source(args.dataset)


def _serve(args: argparse.Namespace) -> None:
    model = Path(args.model)
    if model.suffix.lower() != ".onnx" and not model.exists():  # (a run folder may hold model.onnx alone)
        resolve_model_path(model)


def _conv_arithmetic(args: argparse.Namespace) -> None:
    if (args.size is None) != (args.kernel is None):
        given = "--size" if args.kernel is None else "--kernel"
        raise CnnlabError(f"conv-arithmetic: {given} alone; --size and --kernel go together, "
                          f"e.g. --size 10 --kernel 3 (a 10x10 input, a 3x3 kernel)")


def _curves(args: argparse.Namespace) -> None:
    output_path(args.output, "-o")
    for run in args.runs:
        if not (Path(run) / "history.json").is_file():
            raise CnnlabError(f"{run} is not a run directory with a history.json (runs write one when they finish)")


def _feature_maps(args: argparse.Namespace) -> None:
    output_path(args.output, "-o", folder=True)
    resolve_model_path(args.model)


def _studio(args: argparse.Namespace) -> None:
    folder = Path(args.dir)
    if folder.exists() and not folder.is_dir():
        raise CnnlabError(f"--dir {folder} is a file; give a folder for the studio's projects (made when missing)")


def _augment_preview(args: argparse.Namespace) -> None:
    output_path(args.output, "-o")


CHECKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "train": _train, "fine-tune": _fine_tune, "summary": _summary, "evaluate": _evaluate, "serve": _serve,
    "predict": _predict, "export": _model_file, "filters": _model_file_and_output,
    "gradcam": _model_file_and_output, "feature-maps": _feature_maps, "conv-arithmetic": _conv_arithmetic,
    "curves": _curves, "augment-preview": _augment_preview, "explore": _model_file, "studio": _studio,
}
