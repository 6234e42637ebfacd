"""VGG16 (Simonyan & Zisserman, 2014) as keras.applications builds it: same layer names, same 138,357,544 weights.

    base = VGG16(weights="imagenet", include_top=False, input_shape=(224, 224, 3))  # 14,714,688 weights
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnlab.keras.applications.common import (
    caffe_preprocess, check_arguments, decode_predictions, input_shape_for, load_application_weights,
    pool_features,
)
from cnnlab.models.layers import Conv2D, Dense, Flatten, InputLayer, MaxPooling2D

__all__ = ["VGG16", "preprocess_input", "decode_predictions"]

WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
WEIGHTS = {True: "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
           False: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"}
BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convolutions) of the five blocks


def VGG16(include_top: bool = True, weights: Any = "imagenet", input_tensor: Any = None,
          input_shape: Sequence[int | None] | None = None, pooling: str | None = None, classes: int = 1000,
          classifier_activation: str | None = "softmax", name: str = "vgg16") -> Any:
    """Keras's VGG16; `weights` 'imagenet' (Keras's file), None (random, Keras's initializers) or a path."""
    from cnnlab.keras.models import Model

    check_arguments(weights, include_top, classes, pooling, "VGG16")
    shape = input_shape_for(input_shape, 224, 32, include_top, weights, "VGG16")
    inputs = input_tensor if input_tensor is not None else InputLayer(shape=shape).output
    x = inputs
    for block, (filters, convs) in enumerate(BLOCKS, 1):
        for i in range(1, convs + 1):
            x = Conv2D(filters, (3, 3), activation="relu", padding="same", name=f"block{block}_conv{i}")(x)
        x = MaxPooling2D((2, 2), strides=(2, 2), name=f"block{block}_pool")(x)
    if include_top:
        x = Flatten(name="flatten")(x)
        x = Dense(4096, activation="relu", name="fc1")(x)
        x = Dense(4096, activation="relu", name="fc2")(x)
        x = Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = pool_features(x, pooling)
    model = Model(inputs, x, name=name)
    load_application_weights(model, weights, WEIGHTS[include_top], WEIGHTS_URL + WEIGHTS[include_top], "VGG16")
    return model


def preprocess_input(x: Any, data_format: str | None = None) -> Any:
    """RGB 0..255 -> BGR minus ImageNet's mean pixel ('caffe'), what VGG16's weights were trained on."""
    return caffe_preprocess(x)
