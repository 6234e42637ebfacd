"""The registered models and built-in datasets as plain data, and the checks of a model or dataset argument.

`cnnlab models`, `cnnlab datasets` and the CLI's argument checks read this module, which imports no
torch: importing torch costs 2-3.5 s on a 2-core machine (measured 2026-12-07), and listing names or
refusing a misspelt one needs none of it. The model registry (cnnlab.models.zoo) takes each model's
shape, source and description from here, so they are written once; tests/test_catalog.py checks that
the registries hold exactly these names, in this order, and that every model built at its default
shape for 10 classes has the parameter count recorded here, so no record can go stale.

>>> MODEL_RECORDS.get("seed-mnist").params
121930
>>> builtin_dataset("Fashion_MNIST")
'fashion-mnist'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.registry import Registry

__all__ = ["ModelRecord", "MODEL_RECORDS", "DATASET_NAMES", "builtin_dataset", "unknown_dataset",
           "check_dataset_source", "resolve_model_path"]

InputShape = tuple[int, int, int]  # (H, W, C)


@dataclass(frozen=True)
class ModelRecord:
    """What `cnnlab models` lists about one registered model; its builder lives in cnnlab.models."""

    name: str
    default_input_shape: InputShape
    source: str                         # where it comes from (a seed, a paper, torchvision)
    description: str
    params: int                         # Keras's total (BatchNorm moving statistics included) at the default
    #                                     input shape with 10 classes; tests/test_catalog.py builds each to check
    learning_rate: float | None = None  # adam rate the seed recipe uses from scratch; None: Keras's 1e-3


# AlexNet and VGG16 have no BatchNorm, and adam at Keras's 1e-3 barely moves them from scratch. Digits,
# 3 epochs, test accuracy at 1e-3 against 1e-4: AlexNet (64 px) 0.34 against 0.65, VGG16 (32 px) 0.08
# (chance) against 0.86 (`cnnlab train --dataset digits --model M --image-size ...`, 2026-12-07, 2-core EPYC).
SCRATCH_RATE = 1e-4

MODEL_RECORDS: Registry[ModelRecord] = Registry("model")
for _record in [
    ModelRecord("seed-mnist", (28, 28, 1), "seeds 000/001/002",
                "The tutorials' MNIST CNN: 2 conv + 2 max-pool, Dense 64, softmax", 121_930),
    ModelRecord("seed-cifar10", (32, 32, 3), "seed 004",
                "Seed 004's CIFAR-10 CNN as written: 2 conv + 2 max-pool, Dense 64, logits", 167_562),
    ModelRecord("tf-cifar10", (32, 32, 3), "TensorFlow's CNN tutorial (the source seed 004 abridges)",
                "Seed 004's CNN with the TensorFlow tutorial's third Conv2D(64): logits", 122_570),
    ModelRecord("seed-shapes", (28, 28, 1), "seed 003 (shape tracing)",
                "Seed 003's shape-tracing CNN: 16-32-64 filters, Dense 128, softmax", 98_442),
    ModelRecord("seed-cifar10-bn", (32, 32, 3), "seed 003 (CIFAR-10 code example)",
                "Seed 003's CIFAR-10 CNN: 3 blocks of 2 conv + BatchNorm + Dropout, Dense 256", 816_938),
    ModelRecord("lenet5", (28, 28, 1), "LeCun et al. 1998, as in seed 003",
                "LeNet-5: conv 6 (5x5, same) - avg-pool - conv 16 (5x5) - avg-pool - 120 - 84, ReLU", 61_706),
    ModelRecord("resnet-small", (32, 32, 3), "seed 003's residual block",
                "A small ResNet: stem + residual blocks 32, 64/2, 128/2 of seed 003's block, GAP, logits", 310_666),
    ModelRecord("fast-cnn", (28, 28, 1), "cnnlab's fast CPU recipe",
                "The seed MNIST CNN at half width (conv 16, conv 32): a quarter of its FLOPs, logits", 56_714),
    ModelRecord("alexnet", (224, 224, 3), "torchvision (untrained)",
                "AlexNet (Krizhevsky 2012): 5 conv + 3 dense, ReLU, Dropout", 57_044_810, SCRATCH_RATE),
    ModelRecord("vgg16", (224, 224, 3), "torchvision (untrained)",
                "VGG16 (Simonyan & Zisserman 2014): 13 conv 3x3 + 3 dense", 134_301_514, SCRATCH_RATE),
    ModelRecord("resnet50", (224, 224, 3), "torchvision (untrained)",
                "ResNet-50 (He et al. 2015): bottleneck residual blocks", 23_581_642),
    ModelRecord("mobilenet_v2", (224, 224, 3), "torchvision (untrained)",
                "MobileNetV2 (Sandler et al. 2018): inverted residuals, depthwise convs", 2_270_794),
    ModelRecord("efficientnet_lite0", (224, 224, 3),
                "Google's EfficientNet-Lite (untrained; --pretrained: cnnlab[pretrained])",
                "EfficientNet-Lite0: B0 without squeeze-excite, ReLU6; ImageNet weights offline "
                "(4.65 M params with their 1,000-class head)", 3_425_834),
    ModelRecord("speedrun", (32, 32, 3), "Keller Jordan's airbench94 (CIFAR-10 speed runs; hlb-CIFAR10 lineage)",
                "CIFAR-10 speed-run net: frozen 2x2 patch whitening, 3 blocks 64-256-256, global max pool; "
                "train with train_speedrun (whitening needs the training data)", 1_975_096),
]:
    MODEL_RECORDS.add(_record.name, _record)

# The built-in datasets (cnnlab.data.loading registers a loader for each, in this order) and the other
# spellings users type for them.
DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10")
DATASET_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
                   "cifar-10": "cifar10", "cifar_10": "cifar10"}


def builtin_dataset(name_or_path: str | Path) -> str | None:
    """The built-in dataset a string names (any case, or an alias), else None; a Path is never one.

    >>> builtin_dataset("CIFAR-10"), builtin_dataset("my_images/")
    ('cifar10', None)
    """
    if not isinstance(name_or_path, str):
        return None
    key = name_or_path.strip().lower()
    key = DATASET_ALIASES.get(key, key)
    return key if key in DATASET_NAMES else None


def unknown_dataset(name_or_path: str | Path) -> CnnlabError:
    """The error for a dataset argument that is neither a built-in name nor an existing file or folder.

    >>> print(unknown_dataset("mnsit"))  # doctest: +ELLIPSIS
    unknown dataset 'mnsit'. Did you mean 'mnist'? Built-in: digits, mnist, fashion-mnist, cifar10; ...
    """
    text, names = str(name_or_path), ", ".join(DATASET_NAMES)
    if isinstance(name_or_path, Path) or "/" in text or os.sep in text:
        return CnnlabError(f"dataset folder {text!r} does not exist; give a folder with one subfolder per class "
                           f"or a built-in name: {names}")
    return CnnlabError(f"unknown dataset {text!r}.{did_you_mean(text, DATASET_NAMES)} Built-in: {names}; or give a "
                       f"folder with one subfolder per class.")


def check_dataset_source(name_or_path: str | Path) -> None:
    """Refuse a dataset argument that names neither a built-in dataset nor an existing file or folder.

    What an existing path holds is the loader's to judge (cnnlab.data.load_dataset).

    >>> check_dataset_source("digits")
    >>> check_dataset_source("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: unknown dataset 'nope'. Built-in: digits, mnist, fashion-mnist, cifar10; ...
    """
    if builtin_dataset(name_or_path) is None and not Path(name_or_path).expanduser().exists():
        raise unknown_dataset(name_or_path)


def resolve_model_path(source: str | Path) -> Path:
    """A run directory, a .safetensors file or its .json -> the .safetensors path (which must exist).

    >>> resolve_model_path("runs/none")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: model not found: runs/none does not exist; give a run directory (runs/NAME), ...
    """
    path = Path(source)
    if path.suffix.lower() == ".onnx":
        raise CnnlabError(f"{path} is an ONNX export: `cnnlab serve {path}` serves it, and onnxruntime runs it; "
                          f"this command reads cnnlab model files: give the run directory or the .safetensors "
                          f"file it was exported from")
    if path.is_dir():
        path = path / "model.safetensors"
    elif path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise CnnlabError(f"model not found: {path} does not exist; give a run directory (runs/NAME), "
                          f"a .safetensors model file, or its .json")
    return path
