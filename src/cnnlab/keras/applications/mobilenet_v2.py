"""MobileNetV2 (Sandler et al., 2018) as keras.applications builds it: same names, same 3,538,984 weights.

    base = MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights="imagenet")
    base.trainable = False

Keras's network pads its stride-2 convolutions as TensorFlow does (the extra pixel after), which the
ImageNet weights were trained with. Besides Keras's .h5 files, `weights=` takes torchvision's ImageNet
state_dict for this architecture (a .safetensors file, e.g. ../shared/weights/): same tensors, mapped
layer by layer; each BatchNorm's variance is shifted by torchvision's epsilon minus Keras's, so every
layer normalizes exactly as it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.keras.applications.common import (
    check_arguments, decode_predictions, input_shape_for, load_application_weights,
    pool_features, tf_preprocess,
)
from cnnlab.models.conv_layers import DepthwiseConv2D, ReLU, ZeroPadding2D
from cnnlab.models.layers import BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D, InputLayer
from cnnlab.models.merge_layers import Add
from cnnlab.models.summary import layer_modules
from cnnlab.models.symbolic import KerasTensor

__all__ = ["MobileNetV2", "preprocess_input", "decode_predictions"]

WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.999  # Keras's MobileNetV2 BatchNorm settings
TORCHVISION_BN_EPSILON = 1e-5
# (filters, stride, expansion) of inverted residual blocks 0..16
BLOCKS = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
          (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
          (320, 1, 6))
ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
ROWS = (96, 128, 160, 192, 224)  # input sizes Keras publishes ImageNet weights for


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% down (the paper's rule).

    >>> make_divisible(32 * 0.35), make_divisible(16 * 1.0)
    (16, 16)
    """
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def correct_pad(x: KerasTensor, kernel: int = 3) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras's padding before a stride-2 'valid' convolution: TensorFlow's 'same' (the extra pixel after)."""
    h, w = x.shape[1], x.shape[2]
    adjust = (1, 1) if h is None or w is None else (1 - h % 2, 1 - w % 2)
    half = kernel // 2
    return (half - adjust[0], half), (half - adjust[1], half)


def _block(x: KerasTensor, filters: int, stride: int, expansion: int, alpha: float, block: int) -> KerasTensor:
    in_channels = x.shape[-1]
    out_channels = make_divisible(int(filters * alpha))
    prefix = f"block_{block}_" if block else "expanded_conv_"
    inputs = x
    if block:
        x = Conv2D(expansion * in_channels, 1, padding="same", use_bias=False, name=prefix + "expand")(x)
        x = BatchNormalization(BN_MOMENTUM, BN_EPSILON, name=prefix + "expand_BN")(x)
        x = ReLU(6.0, name=prefix + "expand_relu")(x)
    if stride == 2:
        x = ZeroPadding2D(correct_pad(x), name=prefix + "pad")(x)
    x = DepthwiseConv2D(3, strides=stride, use_bias=False, padding="same" if stride == 1 else "valid",
                        name=prefix + "depthwise")(x)
    x = BatchNormalization(BN_MOMENTUM, BN_EPSILON, name=prefix + "depthwise_BN")(x)
    x = ReLU(6.0, name=prefix + "depthwise_relu")(x)
    x = Conv2D(out_channels, 1, padding="same", use_bias=False, name=prefix + "project")(x)
    x = BatchNormalization(BN_MOMENTUM, BN_EPSILON, name=prefix + "project_BN")(x)
    if in_channels == out_channels and stride == 1:
        return Add(name=prefix + "add")([inputs, x])
    return x


def MobileNetV2(input_shape: Sequence[int | None] | None = None, alpha: float = 1.0, include_top: bool = True,
                weights: Any = "imagenet", input_tensor: Any = None, pooling: str | None = None, classes: int = 1000,
                classifier_activation: str | None = "softmax", name: str | None = None) -> Any:
    """Keras's MobileNetV2; `weights` 'imagenet', None, a Keras .h5 file or torchvision's .safetensors."""
    from cnnlab.keras.models import Model

    check_arguments(weights, include_top, classes, pooling, "MobileNetV2")
    if weights == "imagenet" and alpha not in ALPHAS:
        raise CnnlabError(f"MobileNetV2: ImageNet weights exist for alpha in {ALPHAS}; got alpha={alpha}")
    shape = input_shape_for(input_shape, 224, 32, include_top, weights, "MobileNetV2")
    inputs = input_tensor if input_tensor is not None else InputLayer(shape=shape).output
    x = Conv2D(make_divisible(32 * alpha), 3, strides=2, padding="same", use_bias=False, name="Conv1")(inputs)
    x = BatchNormalization(BN_MOMENTUM, BN_EPSILON, name="bn_Conv1")(x)
    x = ReLU(6.0, name="Conv1_relu")(x)
    for block, (filters, stride, expansion) in enumerate(BLOCKS):
        x = _block(x, filters, stride, expansion, alpha, block)
    x = Conv2D(make_divisible(1280 * alpha) if alpha > 1.0 else 1280, 1, use_bias=False, name="Conv_1")(x)
    x = BatchNormalization(BN_MOMENTUM, BN_EPSILON, name="Conv_1_bn")(x)
    x = ReLU(6.0, name="out_relu")(x)
    if include_top:
        x = GlobalAveragePooling2D()(x)
        x = Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = pool_features(x, pooling)
    rows = shape[0]
    model = Model(inputs, x, name=name or f"mobilenetv2_{alpha:0.2f}_{rows}")
    size = rows if rows in ROWS else 224  # Keras loads the 224 weights for other sizes too
    file = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}{'' if include_top else '_no_top'}.h5"
    if weights not in ("imagenet", None) and Path(weights).suffix == ".safetensors":
        load_torchvision_weights(model, Path(weights))
    else:
        load_application_weights(model, weights, file, WEIGHTS_URL + file, "MobileNetV2")
    return model


def load_torchvision_weights(model: nn.Module, path: Path) -> None:
    """torchvision's `mobilenet_v2()` state_dict (.safetensors) into Keras's MobileNetV2, layer by layer in order.

    torchvision's convolutions, BatchNorms and classifier come in the same order as Keras's layers with
    weights; torchvision's own module list gives that order (a safetensors file sorts its keys by name).
    """
    import torchvision
    from safetensors.torch import load_file

    if not path.is_file():
        raise CnnlabError(f"MobileNetV2: weights file {path} does not exist")
    state = load_file(str(path))
    reference = torchvision.models.mobilenet_v2(num_classes=int(state.get("classifier.1.bias", torch.zeros(1000))
                                                                .shape[0]))
    sources = [name for name, m in reference.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    targets = [layer for _, layer in layer_modules(model)
               if isinstance(layer, (Conv2D, DepthwiseConv2D, BatchNormalization, Dense))]
    if len(targets) not in (len(sources), len(sources) - 1):  # without the top, the classifier stays unused
        raise CnnlabError(f"MobileNetV2: {path} holds {len(sources)} layers of weights but this model has "
                          f"{len(targets)}; weights for alpha 1.0 (torchvision's mobilenet_v2) only")
    with torch.no_grad():
        for source, layer in zip(sources, targets, strict=False):
            names = ["weight", "bias", "running_mean", "running_var"] if isinstance(layer, BatchNormalization) \
                else ["weight", "bias"] if isinstance(layer, Dense) else ["weight"]
            for attr in names:
                key = f"{source}.{attr}"
                if key not in state:
                    raise CnnlabError(f"MobileNetV2: {path} has no {key}; is it torchvision's mobilenet_v2 state_dict?")
                value, target = state[key], getattr(layer, attr)
                if tuple(value.shape) != tuple(target.shape):
                    raise CnnlabError(f"MobileNetV2: {path}: {key} has shape {tuple(value.shape)} but layer "
                                      f"{layer.name} needs {tuple(target.shape)} (include_top/classes/alpha differ?)")
                if attr == "running_var":  # the same variance + epsilon torchvision normalized with
                    value = value + TORCHVISION_BN_EPSILON - BN_EPSILON
                target.copy_(value)


def preprocess_input(x: Any, data_format: str | None = None) -> Any:
    """0..255 -> -1..1, what MobileNetV2's weights were trained on."""
    return tf_preprocess(x)
