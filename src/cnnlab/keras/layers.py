"""Keras's layers (`from cnnlab.keras import layers`; `layers.Conv2D(32, (3, 3), activation='relu')`).

They are cnnlab's own layers (models/layers.py, conv_layers.py, merge_layers.py): Keras's arguments,
names, initializers and weight layouts, computing in PyTorch. `Input(shape=...)` returns a symbolic
tensor: the first element of a Sequential, or the start of a functional model
(`keras.Model(inputs, outputs)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from cnnlab.models.conv_layers import (
    Conv2DTranspose, DepthwiseConv2D, GlobalMaxPooling2D, Lambda, LeakyReLU, ReLU, Reshape, SeparableConv2D,
    Softmax, UpSampling2D, ZeroPadding2D,
)
from cnnlab.models.layers import (
    Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D,
    InputLayer, Layer, MaxPooling2D,
)
from cnnlab.models.merge_layers import (
    Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract, add, average, concatenate, maximum, minimum,
    multiply, subtract,
)
from cnnlab.models.normalization import Normalization
from cnnlab.models.preprocessing_layers import (
    CenterCrop, RandomBrightness, RandomContrast, RandomCrop, RandomFlip, RandomRotation, RandomTranslation,
    RandomZoom, Rescaling, Resizing,
)
from cnnlab.models.symbolic import KerasTensor

__all__ = ["Layer", "Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
           "GlobalAveragePooling2D", "MaxPooling2D", "MaxPool2D", "AvgPool2D", "InputLayer", "Input",
           "Conv2DTranspose", "DepthwiseConv2D", "GlobalMaxPooling2D", "GlobalAvgPool2D", "GlobalMaxPool2D",
           "Lambda", "LeakyReLU", "ReLU", "Reshape", "SeparableConv2D", "SeparableConvolution2D", "Softmax",
           "UpSampling2D", "ZeroPadding2D", "Convolution2D",
           "Add", "Average", "Concatenate", "Maximum", "Minimum", "Multiply", "Subtract",
           "add", "average", "concatenate", "maximum", "minimum", "multiply", "subtract",
           "CenterCrop", "RandomBrightness", "RandomContrast", "RandomCrop", "RandomFlip", "RandomRotation",
           "RandomTranslation", "RandomZoom", "Rescaling", "Resizing", "Normalization", "experimental"]

MaxPool2D = MaxPooling2D  # Keras's aliases
AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D
SeparableConvolution2D = SeparableConv2D
Convolution2D = Conv2D
# TF 2.x-era tutorials write layers.experimental.preprocessing.Rescaling(...), RandomFlip(...), ...
experimental = SimpleNamespace(preprocessing=SimpleNamespace(
    CenterCrop=CenterCrop, RandomBrightness=RandomBrightness, RandomContrast=RandomContrast, RandomCrop=RandomCrop,
    RandomFlip=RandomFlip, RandomRotation=RandomRotation, RandomTranslation=RandomTranslation,
    RandomZoom=RandomZoom, Rescaling=Rescaling, Resizing=Resizing, Normalization=Normalization))


def Input(shape: Sequence[int | None] | None = None, batch_size: int | None = None, name: str | None = None,
          dtype: Any = None, **ignored: Any) -> KerasTensor:
    """Keras's `Input(shape=(H, W, C))`: the symbolic input of a model (H and W may be None: any size).

    >>> Input(shape=(28, 28, 1)).shape
    (None, 28, 28, 1)
    """
    return InputLayer(shape=shape, batch_size=batch_size, name=name).output
