"""Keras's merge layers: several tensors in, one out (residual additions, concatenations, gates).

    x = Add()([x, shortcut])                 # seed 003's skip connection
    y = Concatenate()([branch_a, branch_b])  # along the channels (Keras's axis=-1)

`Add`, `Subtract`, `Multiply`, `Average`, `Maximum` and `Minimum` take tensors of one shape;
`Concatenate` joins along Keras's `axis` (channels last: -1 is the channels of an image). The
lower-case functions (`add([a, b])`, `concatenate([...])`) are Keras's one-call forms.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.models.conv_layers import torch_axis
from cnnlab.models.layers import Layer, Shape, _keras_text, _named, register_layer
from cnnlab.models.symbolic import KerasTensor, Layout, joined_layout

__all__ = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
           "add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate"]


def _clash(a: int | None, b: int | None) -> bool:
    return a is not None and b is not None and a != b and 1 not in (a, b)


def _broadcast(a: int | None, b: int | None) -> int | None:
    """One axis of two broadcast shapes: size 1 stretches to the other; unknown (None) stays unknown."""
    if a == 1:
        return b
    if b == 1:
        return a
    return a if a is not None else b


class _Merge(Layer):
    """Elementwise merges: inputs of one shape, or of size 1 where they broadcast (a squeeze-excite gate)."""

    exactly: int | None = None  # Subtract takes exactly two inputs
    keeps_order = True  # elementwise: inputs in one feature order keep it

    def __init__(self, name: str | None = None, input_shape: Sequence[int] | None = None, trainable: bool = True,
                 **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)

    def compute_output_shape(self, shape: Any) -> Shape:
        kind = type(self).__name__
        if not isinstance(shape, list) or len(shape) < 2:
            raise CnnlabError(f"{kind} merges a list of at least 2 tensors, like {kind}()([a, b]); got one tensor")
        if self.exactly is not None and len(shape) != self.exactly:
            raise CnnlabError(f"{kind} takes exactly {self.exactly} tensors; got {len(shape)}")
        out = list(shape[0])
        for other in shape[1:]:
            if len(other) != len(out) or any(_clash(a, b) for a, b in zip(out, other, strict=True)):
                raise CnnlabError(f"{kind}: inputs have different shapes {_keras_text(shape)}; every input must have "
                                  f"the same shape, or size 1 where it broadcasts (add a Conv2D(filters, 1, "
                                  f"strides=...) on the shortcut to match)")
            out = [_broadcast(a, b) for a, b in zip(out, other, strict=True)]
        return tuple(out)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.merge(list(xs))

    def merge(self, xs: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


@register_layer
class Add(_Merge):
    """The sum of the inputs."""

    def merge(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return reduce(torch.add, xs)


@register_layer
class Subtract(_Merge):
    """The first input minus the second."""

    exactly = 2

    def merge(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return xs[0] - xs[1]


@register_layer
class Multiply(_Merge):
    """The elementwise product (e.g. a squeeze-and-excitation gate)."""

    def merge(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return reduce(torch.mul, xs)


@register_layer
class Average(_Merge):
    """The elementwise mean."""

    def merge(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return reduce(torch.add, xs) / len(xs)


@register_layer
class Maximum(_Merge):
    """The elementwise maximum."""

    def merge(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return reduce(torch.maximum, xs)


@register_layer
class Minimum(_Merge):
    """The elementwise minimum."""

    def merge(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return reduce(torch.minimum, xs)


@register_layer
class Concatenate(Layer):
    """Join along Keras's `axis` (-1, the default: channels); the other sizes must agree."""

    def __init__(self, axis: int = -1, name: str | None = None, input_shape: Sequence[int] | None = None,
                 trainable: bool = True, **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)
        self.axis = int(axis)

    def compute_output_shape(self, shape: Any) -> Shape:
        if not isinstance(shape, list) or len(shape) < 2:
            raise CnnlabError("Concatenate joins a list of at least 2 tensors, like Concatenate()([a, b])")
        rank = len(shape[0]) + 1
        if any(len(s) + 1 != rank for s in shape) or not -rank <= self.axis < rank or self.axis % rank == 0:
            raise CnnlabError(f"Concatenate(axis={self.axis}): inputs {_keras_text(shape)} need the same rank and "
                              f"an axis other than the batch axis")
        dim = torch_axis(self.axis, rank) - 1  # in the channels-first sample shape
        out = list(shape[0])
        for other in shape[1:]:
            for i, (a, b) in enumerate(zip(out, other, strict=True)):
                if i == dim:
                    out[i] = None if a is None or b is None else a + b
                elif a is not None and b is not None and a != b:
                    raise CnnlabError(f"Concatenate(axis={self.axis}): inputs {_keras_text(shape)} differ outside "
                                      f"the joined axis; resize or pad them to match")
                else:
                    out[i] = a if a is not None else b
        return tuple(out)

    def symbolic_output(self, shape: Any, tensors: list[KerasTensor]) -> tuple[Any, Layout | None]:
        out, _ = super().symbolic_output(shape, tensors)
        return out, (joined_layout(tensors) if self.axis in (-1, 1) else None)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(xs), dim=torch_axis(self.axis, xs[0].ndim))

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis, **_named(self)}


def add(inputs: Any, **kwargs: Any) -> Any:
    """Keras's `layers.add([a, b])`: Add()([a, b])."""
    return Add(**kwargs)(inputs)


def subtract(inputs: Any, **kwargs: Any) -> Any:
    return Subtract(**kwargs)(inputs)


def multiply(inputs: Any, **kwargs: Any) -> Any:
    return Multiply(**kwargs)(inputs)


def average(inputs: Any, **kwargs: Any) -> Any:
    return Average(**kwargs)(inputs)


def maximum(inputs: Any, **kwargs: Any) -> Any:
    return Maximum(**kwargs)(inputs)


def minimum(inputs: Any, **kwargs: Any) -> Any:
    return Minimum(**kwargs)(inputs)


def concatenate(inputs: Any, axis: int = -1, **kwargs: Any) -> Any:
    """Keras's `layers.concatenate([a, b], axis=-1)`."""
    return Concatenate(axis=axis, **kwargs)(inputs)
