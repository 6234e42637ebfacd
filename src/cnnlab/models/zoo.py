"""The model registry: the tutorials' models, classic small CNNs, and torchvision's famous ones.

Every entry builds an `nn.Module` for an input shape (H, W, C) and a class count, so one code
path trains, summarizes, saves and loads all of them (contract tests run over the registry).
Each entry's default shape, source, description and parameter count are its record in cnnlab.catalog,
which `cnnlab models` lists without importing torch; tests/test_catalog.py checks the counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.catalog import MODEL_RECORDS
from cnnlab.errors import CnnlabError, first_line
from cnnlab.models.efficientnet_lite import EfficientNetLite0
from cnnlab.models.layers import (
    Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
    GlobalAveragePooling2D, MaxPooling2D, with_depthwise_conv,
)
from cnnlab.models.sequential import ResidualBlock, Sequential
from cnnlab.registry import Registry

__all__ = ["ModelSpec", "MODELS", "NOT_EXPORTABLE", "build_model", "model_names", "output_kind"]

InputShape = tuple[int, int, int]  # (H, W, C)
BN_MOMENTUM_FAST = 0.9  # BatchNorm moving-average momentum for non-seed models (see resnet_small)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model, and what it expects."""

    name: str
    build: Callable[..., nn.Module]
    default_input_shape: InputShape
    source: str        # where it comes from (a seed, a paper, torchvision)
    description: str
    learning_rate: float | None = None  # adam rate the seed recipe uses from scratch; None: Keras's 1e-3
    params: int | None = None  # total at the default shape with 10 classes (cnnlab.catalog); None: not recorded


MODELS: Registry[ModelSpec] = Registry("model")
# Registered models `cnnlab export` cannot convert to ONNX, with the reason; tests/test_export.py
# exports every other one and checks it against torch. Empty: every registered model exports.
NOT_EXPORTABLE: dict[str, str] = {}


def _spec(name: str, build: Callable[..., nn.Module]) -> ModelSpec:
    """Registered model `name`'s builder with its record from cnnlab.catalog (its shape, source, description)."""
    r = MODEL_RECORDS.get(name)
    return ModelSpec(name, build, r.default_input_shape, r.source, r.description, r.learning_rate, r.params)


def _add(name: str) -> Callable[[Callable[[InputShape, int], nn.Module]], Callable[[InputShape, int], nn.Module]]:
    def wrap(build: Callable[[InputShape, int], nn.Module]) -> Callable[[InputShape, int], nn.Module]:
        MODELS.add(name, _spec(name, build))
        return build
    return wrap


@_add("seed-mnist")
def seed_mnist(input_shape: InputShape, num_classes: int) -> nn.Module:
    return Sequential([
        Conv2D(32, (3, 3), activation="relu", input_shape=input_shape),
        MaxPooling2D((2, 2)),
        Conv2D(64, (3, 3), activation="relu"),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(num_classes, activation="softmax"),
    ])


@_add("seed-cifar10")
def seed_cifar10(input_shape: InputShape, num_classes: int) -> nn.Module:
    return Sequential([
        Conv2D(32, (3, 3), activation="relu", input_shape=input_shape),
        MaxPooling2D((2, 2)),
        Conv2D(64, (3, 3), activation="relu"),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(num_classes),
    ])


@_add("tf-cifar10")
def tf_cifar10(input_shape: InputShape, num_classes: int) -> nn.Module:
    return Sequential([
        Conv2D(32, (3, 3), activation="relu", input_shape=input_shape),
        MaxPooling2D((2, 2)),
        Conv2D(64, (3, 3), activation="relu"),
        MaxPooling2D((2, 2)),
        Conv2D(64, (3, 3), activation="relu"),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(num_classes),
    ])


@_add("seed-shapes")
def seed_shapes(input_shape: InputShape, num_classes: int) -> nn.Module:
    return Sequential([
        Conv2D(16, (3, 3), activation="relu", input_shape=input_shape),   # 26x26x16
        MaxPooling2D((2, 2)),                                              # 13x13x16
        Conv2D(32, (3, 3), activation="relu"),                             # 11x11x32
        MaxPooling2D((2, 2)),                                              # 5x5x32
        Conv2D(64, (3, 3), activation="relu"),                             # 3x3x64
        Flatten(),                                                         # 576
        Dense(128, activation="relu"),
        Dense(num_classes, activation="softmax"),
    ])


def _vgg_block(filters: int, input_shape: InputShape | None = None) -> list:
    first = Conv2D(filters, (3, 3), activation="relu", padding="same", input_shape=input_shape)
    return [first, BatchNormalization(),
            Conv2D(filters, (3, 3), activation="relu", padding="same"), BatchNormalization(),
            MaxPooling2D((2, 2)), Dropout(0.25)]


@_add("seed-cifar10-bn")
def seed_cifar10_bn(input_shape: InputShape, num_classes: int) -> nn.Module:
    return Sequential([
        *_vgg_block(32, input_shape), *_vgg_block(64), *_vgg_block(128),
        Flatten(),
        Dense(256, activation="relu"),
        BatchNormalization(),
        Dropout(0.5),
        Dense(num_classes, activation="softmax"),
    ])


@_add("lenet5")
def lenet5(input_shape: InputShape, num_classes: int) -> nn.Module:
    # ReLU rather than the paper's scaled tanh: it trains faster with adam and is what modern
    # re-implementations use; the layer sizes are the paper's.
    return Sequential([
        Conv2D(6, (5, 5), activation="relu", padding="same", input_shape=input_shape),
        AveragePooling2D((2, 2)),
        Conv2D(16, (5, 5), activation="relu"),
        AveragePooling2D((2, 2)),
        Flatten(),
        Dense(120, activation="relu"),
        Dense(84, activation="relu"),
        Dense(num_classes, activation="softmax"),
    ])


@_add("resnet-small")
def resnet_small(input_shape: InputShape, num_classes: int) -> nn.Module:
    # BatchNorm momentum 0.9 (PyTorch's default), not Keras's 0.99: with 0.99 the moving statistics
    # still hold 40% of their initial values after 90 steps, and a short run evaluated at 20%
    # accuracy on its own training digits (measured); 0.9 forgets the initial values in ~40 steps.
    bn = BN_MOMENTUM_FAST
    return Sequential([
        Conv2D(32, (3, 3), padding="same", input_shape=input_shape),
        BatchNormalization(bn),
        Activation("relu"),
        ResidualBlock(32, momentum=bn),
        ResidualBlock(64, strides=2, momentum=bn),
        ResidualBlock(128, strides=2, momentum=bn),
        GlobalAveragePooling2D(),
        Dense(num_classes),
    ])


@_add("fast-cnn")
def fast_cnn(input_shape: InputShape, num_classes: int) -> nn.Module:
    # Half the seed CNN's filters cut its multiply-adds from 2.5 M to 0.66 M per 28x28 image; with
    # the fast recipe's one-cycle schedule it still beats the seed program's 1-epoch accuracy
    # (benchmarks/README.md). Logits out: the softmax lives in the loss, as in seed 004.
    return Sequential([
        Conv2D(16, (3, 3), activation="relu", input_shape=input_shape),
        MaxPooling2D((2, 2)),
        Conv2D(32, (3, 3), activation="relu"),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(num_classes),
    ])


FIRST_CONV = {"alexnet": "features.0", "vgg16": "features.0", "resnet50": "conv1", "mobilenet_v2": "features.0.0"}


def _torchvision(name: str, input_shape: InputShape, num_classes: int) -> nn.Module:
    import torchvision  # here, not at the top: with its import of torch._dynamo it costs 1.2-2 s (2 cores)

    model: nn.Module = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    channels = input_shape[2]
    if channels != 3:  # a grayscale dataset: same first conv, other input depth
        old = model.get_submodule(FIRST_CONV[name])
        assert isinstance(old, nn.Conv2d)
        model.set_submodule(FIRST_CONV[name], nn.Conv2d(
            channels, old.out_channels, old.kernel_size, old.stride, old.padding,  # type: ignore[arg-type]
            bias=old.bias is not None))
    return with_depthwise_conv(model)  # MobileNetV2's depthwise convolutions: fp32 gradients under CPU bf16


def _torchvision_builder(name: str) -> Callable[[InputShape, int], nn.Module]:
    def build(input_shape: InputShape, num_classes: int) -> nn.Module:
        return _torchvision(name, input_shape, num_classes)
    return build


for _name in ("alexnet", "vgg16", "resnet50", "mobilenet_v2"):  # their scratch rates: catalog.SCRATCH_RATE
    MODELS.add(_name, _spec(_name, _torchvision_builder(_name)))


@_add("efficientnet_lite0")
def efficientnet_lite0(input_shape: InputShape, num_classes: int) -> nn.Module:
    return EfficientNetLite0(num_classes, in_channels=input_shape[2])


def model_names() -> list[str]:
    """Names of all registered models, in registry order.

    >>> "seed-mnist" in model_names()
    True
    """
    return MODELS.names()


def output_kind(model: nn.Module) -> str:
    """'probabilities' when the model ends in a softmax or sigmoid (Keras style), else 'logits'.

    Read from the model now, never cached: a layer appended after construction counts.
    """
    return str(getattr(model, "output_kind", "logits"))


def build_model(name: str, input_shape: Sequence[int] | None = None, num_classes: int = 10,
                **options: Any) -> nn.Module:
    """Build a registered model for an input shape (H, W, C) and a number of classes.

    `options` go to models that take them (the speedrun net's `widths`); others refuse them.

    >>> build_model("seed-mnist")(torch.zeros(1, 1, 28, 28)).shape
    torch.Size([1, 10])
    """
    spec = MODELS.get(name)
    shape = tuple(input_shape) if input_shape is not None else spec.default_input_shape
    if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise CnnlabError(f"input shape must be (height, width, channels) like 28 28 1; got {shape!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise CnnlabError(f"num_classes must be an int >= 2; got {num_classes!r}")
    try:
        model = spec.build(shape, num_classes, **options)  # type: ignore[arg-type]
    except TypeError as exc:
        if not options:
            raise
        raise CnnlabError(f"model {name!r} takes no options {sorted(options)} ({exc})") from None
    if not isinstance(model, Sequential):  # torchvision nets: check the input is large enough
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, shape[2], shape[0], shape[1]))
        except RuntimeError as exc:
            raise CnnlabError(
                f"model {name!r} cannot take {shape[0]}x{shape[1]}x{shape[2]} inputs: its feature maps shrink "
                f"to nothing ({first_line(exc)}). Use larger images, e.g. --image-size "
                f"{spec.default_input_shape[0]} {spec.default_input_shape[1]}") from None
        model.train()
    model.cnnlab_name = name  # type: ignore[assignment]
    if getattr(model, "image_shape", None) is None:  # the one model surface: every model knows its input
        model.image_shape = shape  # type: ignore[assignment]
    return model
