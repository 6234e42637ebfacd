"""Keras's layers (`from cnnlab.keras import layers`; `layers.Conv2D(32, (3, 3), activation='relu')`).

They are cnnlab's own layers (models/layers.py): Keras's arguments, names, initializers and
weight layouts, computing in PyTorch. `Input(shape=...)` / `InputLayer` give a Sequential its
input shape, as in keras.io's examples (the functional API follows in its own issue).
"""

from __future__ import annotations

from collections.abc import Sequence

from cnnlab.errors import CnnlabError
from cnnlab.models.layers import (
    Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D,
    Layer, MaxPooling2D,
)

__all__ = ["Layer", "Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
           "GlobalAveragePooling2D", "MaxPooling2D", "MaxPool2D", "AvgPool2D", "InputLayer", "Input"]

MaxPool2D = MaxPooling2D  # Keras's aliases
AvgPool2D = AveragePooling2D


class InputLayer:
    """The input of a Sequential: `keras.Input(shape=(28, 28, 1))` as its first element."""

    def __init__(self, shape: Sequence[int] | None = None, batch_size: int | None = None, name: str | None = None,
                 input_shape: Sequence[int] | None = None, **ignored: object) -> None:
        shape = shape if shape is not None else input_shape
        if shape is None or len(tuple(shape)) != 3:
            raise CnnlabError(f"Input: shape must be (height, width, channels) like (28, 28, 1); got {shape!r}")
        self.shape = (None, *tuple(shape))
        self.name = name


def Input(shape: Sequence[int] | None = None, batch_size: int | None = None, name: str | None = None,
          **ignored: object) -> InputLayer:
    """Keras's `Input(shape=(H, W, C))`, for the first element of a Sequential."""
    return InputLayer(shape, batch_size, name)
