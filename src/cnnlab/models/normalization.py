"""Keras's Normalization layer: (x - mean) / sqrt(variance) per channel, with statistics learned by `adapt`.

    norm = Normalization()          # axis=-1: one mean and variance per channel (RGB)
    norm.adapt(train_images)        # NumPy (N, H, W, C): the statistics, computed once
    x = norm(inputs)

Keras counts mean, variance and the sample count as non-trainable weights (7 for RGB, as EfficientNet's
summary shows); they are buffers here (norm_mean, norm_variance, norm_count) and go into the model file
with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models.layers import Layer, Shape, _assign, _expect_count, _named, register_layer

__all__ = ["Normalization"]

EPSILON = 1e-7  # Keras's backend epsilon: the smallest standard deviation divided by


@register_layer
class Normalization(Layer):
    """Per-channel standardization (Keras's axis=-1), from given or `adapt`-ed statistics."""

    keeps_order = True
    norm_mean: torch.Tensor
    norm_variance: torch.Tensor
    norm_count: torch.Tensor

    def __init__(self, axis: int | None = -1, mean: Any = None, variance: Any = None, invert: bool = False,
                 name: str | None = None, input_shape: Sequence[int] | None = None, trainable: bool = True,
                 **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)
        if axis != -1:
            raise CnnlabError(f"Normalization: only axis=-1 (one mean and variance per channel) is supported; "
                              f"got axis={axis!r}")
        if (mean is None) != (variance is None):
            raise CnnlabError("Normalization: give both mean and variance, or neither (then call adapt(data))")
        self.given = None if mean is None else (np.asarray(mean, np.float32), np.asarray(variance, np.float32))
        self.invert = bool(invert)

    def build(self, shape: Shape) -> Shape:
        channels = shape[0]
        mean, variance = self.given if self.given is not None else (np.zeros(channels), np.ones(channels))
        def per_channel(value: Any) -> torch.Tensor:
            return torch.as_tensor(np.broadcast_to(value, (channels,)).copy(), dtype=torch.float32)

        self.register_buffer("norm_mean", per_channel(mean))
        self.register_buffer("norm_variance", per_channel(variance))
        self.register_buffer("norm_count", torch.zeros((), dtype=torch.float32))
        return super().build(shape)

    def adapt(self, data: Any) -> None:
        """Learn the mean and variance of `data` (NumPy, channels last: (N, H, W, C) or (N, C))."""
        array = np.asarray(data, dtype=np.float64)
        if not self.built:
            self.build((array.shape[-1], *array.shape[1:-1]) if array.ndim == 4 else (array.shape[-1],))
        if array.shape[-1] != self.norm_mean.shape[0]:
            raise CnnlabError(f"Normalization.adapt: data has {array.shape[-1]} channels (last axis) but the layer "
                              f"was built for {self.norm_mean.shape[0]}")
        flat = array.reshape(-1, array.shape[-1])
        with torch.no_grad():
            self.norm_mean.copy_(torch.as_tensor(flat.mean(0)))
            self.norm_variance.copy_(torch.as_tensor(flat.var(0)))
            self.norm_count.fill_(float(len(flat)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
        mean, std = self.norm_mean.view(shape), self.norm_variance.sqrt().clamp_min(EPSILON).view(shape)
        return x * std + mean if self.invert else (x - mean) / std

    def keras_weights(self) -> list[torch.Tensor]:
        return [self.norm_mean, self.norm_variance, self.norm_count]

    def set_keras_weights(self, weights: Sequence[torch.Tensor]) -> None:
        _expect_count(self, weights, 3)
        _assign(self.norm_mean, weights[0], f"{self.name} mean")
        _assign(self.norm_variance, weights[1], f"{self.name} variance")
        _assign(self.norm_count, torch.as_tensor(weights[2], dtype=torch.float32).reshape(()), f"{self.name} count")

    def get_config(self) -> dict[str, Any]:
        return {"axis": -1, "invert": self.invert, **_named(self)}
