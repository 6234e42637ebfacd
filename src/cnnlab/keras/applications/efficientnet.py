"""EfficientNetB0 (Tan & Le, 2019) as keras.applications builds it: same names, same 5,330,571 weights.

    base = EfficientNetB0(include_top=False, weights="imagenet", input_shape=(224, 224, 3))

The network takes raw 0..255 pixels: its first layers rescale and normalize (preprocess_input passes
inputs through, as Keras's does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cnnlab.keras.applications.common import (
    check_arguments, decode_predictions, input_shape_for, load_application_weights,
    pool_features,
)
from cnnlab.keras.applications.mobilenet_v2 import correct_pad
from cnnlab.models.conv_layers import DepthwiseConv2D, Reshape, ZeroPadding2D
from cnnlab.models.layers import (
    Activation, BatchNormalization, Conv2D, Dense, Dropout, GlobalAveragePooling2D, InputLayer,
)
from cnnlab.models.merge_layers import Add, Multiply
from cnnlab.models.normalization import Normalization
from cnnlab.models.preprocessing_layers import Rescaling
from cnnlab.models.symbolic import KerasTensor

__all__ = ["EfficientNetB0", "preprocess_input", "decode_predictions"]

WEIGHTS_URL = "https://storage.googleapis.com/keras-applications/"
WEIGHTS = {True: "efficientnetb0.h5", False: "efficientnetb0_notop.h5"}
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
DROP_CONNECT_RATE = 0.2  # stochastic depth, growing linearly over the blocks to this rate
# (kernel, repeats, filters in, filters out, expansion, strides) of the seven stages; squeeze-excite 0.25 each
STAGES = ((3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
          (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1))
SE_RATIO = 0.25


def _block(inputs: KerasTensor, drop_rate: float, name: str, filters_in: int, filters_out: int, kernel: int,
           strides: int, expansion: int) -> KerasTensor:
    """Inverted residual with squeeze-and-excitation (MBConv)."""
    filters = filters_in * expansion
    x = inputs
    if expansion != 1:
        x = Conv2D(filters, 1, padding="same", use_bias=False, name=name + "expand_conv")(x)
        x = BatchNormalization(name=name + "expand_bn")(x)
        x = Activation("swish", name=name + "expand_activation")(x)
    if strides == 2:
        x = ZeroPadding2D(correct_pad(x, kernel), name=name + "dwconv_pad")(x)
    x = DepthwiseConv2D(kernel, strides=strides, padding="valid" if strides == 2 else "same", use_bias=False,
                        name=name + "dwconv")(x)
    x = BatchNormalization(name=name + "bn")(x)
    x = Activation("swish", name=name + "activation")(x)
    se = GlobalAveragePooling2D(name=name + "se_squeeze")(x)
    se = Reshape((1, 1, filters), name=name + "se_reshape")(se)
    se = Conv2D(max(1, int(filters_in * SE_RATIO)), 1, padding="same", activation="swish", name=name + "se_reduce")(se)
    se = Conv2D(filters, 1, padding="same", activation="sigmoid", name=name + "se_expand")(se)
    x = Multiply(name=name + "se_excite")([x, se])
    x = Conv2D(filters_out, 1, padding="same", use_bias=False, name=name + "project_conv")(x)
    x = BatchNormalization(name=name + "project_bn")(x)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            x = Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = Add(name=name + "add")([x, inputs])
    return x


def EfficientNetB0(include_top: bool = True, weights: Any = "imagenet", input_tensor: Any = None,
                   input_shape: Sequence[int | None] | None = None, pooling: str | None = None, classes: int = 1000,
                   classifier_activation: str | None = "softmax", name: str = "efficientnetb0") -> Any:
    """Keras's EfficientNetB0 (width and depth 1.0, 224 px, dropout 0.2)."""
    from cnnlab.keras.models import Model

    check_arguments(weights, include_top, classes, pooling, "EfficientNetB0")
    shape = input_shape_for(input_shape, 224, 32, include_top, weights, "EfficientNetB0")
    inputs = input_tensor if input_tensor is not None else InputLayer(shape=shape).output
    x = Rescaling(1.0 / 255.0)(inputs)
    x = Normalization(axis=-1)(x)
    if weights == "imagenet":  # Keras's correction: the file's Normalization holds variances, not stddevs
        x = Rescaling([1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB])(x)
    x = ZeroPadding2D(correct_pad(x, 3), name="stem_conv_pad")(x)
    x = Conv2D(32, 3, strides=2, padding="valid", use_bias=False, name="stem_conv")(x)
    x = BatchNormalization(name="stem_bn")(x)
    x = Activation("swish", name="stem_activation")(x)
    total = sum(stage[1] for stage in STAGES)
    done = 0
    for i, (kernel, repeats, filters_in, filters_out, expansion, strides) in enumerate(STAGES):
        for j in range(repeats):
            x = _block(x, DROP_CONNECT_RATE * done / total, f"block{i + 1}{chr(j + 97)}_",
                       filters_in if j == 0 else filters_out, filters_out, kernel, strides if j == 0 else 1,
                       expansion)
            done += 1
    x = Conv2D(1280, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = BatchNormalization(name="top_bn")(x)
    x = Activation("swish", name="top_activation")(x)
    if include_top:
        x = GlobalAveragePooling2D(name="avg_pool")(x)
        x = Dropout(0.2, name="top_dropout")(x)
        x = Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = pool_features(x, pooling, named=True)
    model = Model(inputs, x, name=name)
    load_application_weights(model, weights, WEIGHTS[include_top], WEIGHTS_URL + WEIGHTS[include_top],
                             "EfficientNetB0")
    return model


def preprocess_input(x: Any, data_format: str | None = None) -> Any:
    """The identity: EfficientNet takes 0..255 pixels and rescales inside the model (as Keras's does)."""
    return x
