"""ResNet50 (He et al., 2015) as keras.applications builds it: same layer names, same 25,636,712 weights.

    base = ResNet50(weights="imagenet", include_top=False, input_shape=(224, 224, 3))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnlab.keras.applications.common import (
    caffe_preprocess, check_arguments, decode_predictions, input_shape_for, load_application_weights,
    pool_features,
)
from cnnlab.models.conv_layers import ZeroPadding2D
from cnnlab.models.layers import (
    Activation, BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D, InputLayer, MaxPooling2D,
)
from cnnlab.models.merge_layers import Add

__all__ = ["ResNet50", "preprocess_input", "decode_predictions"]

WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
WEIGHTS = {True: "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
           False: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"}
BN_EPSILON = 1.001e-5  # Keras's ResNet value (the converted Caffe weights' epsilon)
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (filters, blocks, first stride) of conv2..conv5


def _block(x: Any, filters: int, stride: int, project: bool, name: str) -> Any:
    """Bottleneck: 1x1 -> 3x3 -> 1x1 (4 x filters), plus the input (or its 1x1 projection)."""
    if project:
        shortcut = Conv2D(4 * filters, 1, strides=stride, name=name + "_0_conv")(x)
        shortcut = BatchNormalization(epsilon=BN_EPSILON, name=name + "_0_bn")(shortcut)
    else:
        shortcut = x
    x = Conv2D(filters, 1, strides=stride, name=name + "_1_conv")(x)
    x = BatchNormalization(epsilon=BN_EPSILON, name=name + "_1_bn")(x)
    x = Activation("relu", name=name + "_1_relu")(x)
    x = Conv2D(filters, 3, padding="same", name=name + "_2_conv")(x)
    x = BatchNormalization(epsilon=BN_EPSILON, name=name + "_2_bn")(x)
    x = Activation("relu", name=name + "_2_relu")(x)
    x = Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
    x = BatchNormalization(epsilon=BN_EPSILON, name=name + "_3_bn")(x)
    x = Add(name=name + "_add")([shortcut, x])
    return Activation("relu", name=name + "_out")(x)


def ResNet50(include_top: bool = True, weights: Any = "imagenet", input_tensor: Any = None,
             input_shape: Sequence[int | None] | None = None, pooling: str | None = None, classes: int = 1000,
             classifier_activation: str | None = "softmax", name: str = "resnet50") -> Any:
    """Keras's ResNet50; `weights` 'imagenet' (Keras's file), None or a path to a Keras .h5 file."""
    from cnnlab.keras.models import Model

    check_arguments(weights, include_top, classes, pooling, "ResNet50")
    shape = input_shape_for(input_shape, 224, 32, include_top, weights, "ResNet50")
    inputs = input_tensor if input_tensor is not None else InputLayer(shape=shape).output
    x = ZeroPadding2D(((3, 3), (3, 3)), name="conv1_pad")(inputs)
    x = Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = BatchNormalization(epsilon=BN_EPSILON, name="conv1_bn")(x)
    x = Activation("relu", name="conv1_relu")(x)
    x = ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad")(x)
    x = MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (filters, blocks, stride) in enumerate(STAGES, 2):
        x = _block(x, filters, stride, True, f"conv{stage}_block1")
        for i in range(2, blocks + 1):
            x = _block(x, filters, 1, False, f"conv{stage}_block{i}")
    if include_top:
        x = GlobalAveragePooling2D(name="avg_pool")(x)
        x = Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = pool_features(x, pooling, named=True)
    model = Model(inputs, x, name=name)
    load_application_weights(model, weights, WEIGHTS[include_top], WEIGHTS_URL + WEIGHTS[include_top], "ResNet50")
    return model


def preprocess_input(x: Any, data_format: str | None = None) -> Any:
    """RGB 0..255 -> BGR minus ImageNet's mean pixel ('caffe'), what ResNet50's weights were trained on."""
    return caffe_preprocess(x)
