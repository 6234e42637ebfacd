"""More of Keras's layers: the ones MobileNet, ResNet, U-Net-style and autoencoder code builds from.

ZeroPadding2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, UpSampling2D, GlobalMaxPooling2D,
Reshape, ReLU, LeakyReLU, Softmax and Lambda, with Keras's arguments, names, output shapes, weight
layouts (`get_weights()`: a depthwise kernel is (kh, kw, in, multiplier), a transposed one
(kh, kw, out, in)) and 'same' padding (the odd pixel after, as TensorFlow pads). Tensors flow
channels first, (N, C, H, W), as in every cnnlab layer; `Reshape` and `Softmax` take Keras's axes
(channels last) and translate them, so a program means what it means in Keras.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.layers import (
    ACTIVATIONS, Layer, Shape, _activation, _assign, _expect_count, _expect_image, _initializer, _keras_text,
    _named, _pair, _padding, conv_output_size, initialize, input_pads, register_layer, same_conv2d, same_pads,
)
from cnnlab.models.symbolic import KerasTensor, Layout, keras_index

__all__ = ["ZeroPadding2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "UpSampling2D",
           "GlobalMaxPooling2D", "Reshape", "ReLU", "LeakyReLU", "Softmax", "Lambda"]


def _activate(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    act = ACTIVATIONS[activation] if activation else None
    return act(x) if act else x


@register_layer
class ZeroPadding2D(Layer):
    """Zeros around the image: ZeroPadding2D(1), ((top, bottom), (left, right)) or (rows, cols)."""

    def __init__(self, padding: Any = (1, 1), name: str | None = None, input_shape: Sequence[int] | None = None,
                 trainable: bool = True, **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)
        if isinstance(padding, int):
            padding = ((padding, padding), (padding, padding))
        elif isinstance(padding, (list, tuple)) and len(padding) == 2 and all(isinstance(p, int) for p in padding):
            padding = ((padding[0], padding[0]), (padding[1], padding[1]))
        try:
            (top, bottom), (left, right) = padding
            valid = all(isinstance(p, int) and p >= 0 for p in (top, bottom, left, right))
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise CnnlabError(f"ZeroPadding2D: padding must be an int, (rows, cols) or ((top, bottom), (left, right)) "
                              f"of non-negative ints; got {padding!r}")
        self.padding = ((top, bottom), (left, right))

    def compute_output_shape(self, shape: Shape) -> Shape:
        c, h, w = _expect_image(shape, "ZeroPadding2D")
        (top, bottom), (left, right) = self.padding
        return (c, None if h is None else h + top + bottom, None if w is None else w + left + right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self.padding
        return F.pad(x, (left, right, top, bottom))

    def get_config(self) -> dict[str, Any]:
        return {"padding": [list(p) for p in self.padding], **_named(self)}


class _Conv(Layer):
    """What the convolutions share: kernel, strides, 'same'/'valid' padding, activation, initializers."""

    def __init__(self, kernel_size: Any, strides: Any, padding: str, activation: str | None, use_bias: bool,
                 input_shape: Sequence[int] | None, name: str | None, trainable: bool) -> None:
        super().__init__(input_shape, name, trainable)
        where = type(self).__name__
        self.kernel_size = _pair(kernel_size, f"{where} kernel_size")
        self.strides = _pair(strides, f"{where} strides")
        self.padding = _padding(padding, where)
        self.activation = _activation(activation, where)
        self.use_bias = bool(use_bias)
        self.pads: tuple[int, ...] | None = (0, 0, 0, 0)

    def build(self, shape: Shape) -> Shape:
        _, h, w = _expect_image(shape, type(self).__name__)
        if self.padding == "same":
            self.pads = same_pads((h, w), self.kernel_size, self.strides)
        self.create_weights(shape[0])
        return super().build(shape)

    def create_weights(self, channels: int) -> None:
        raise NotImplementedError

    def spatial(self, shape: Shape) -> tuple[Any, Any]:
        _, h, w = _expect_image(shape, type(self).__name__)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        oh, ow = conv_output_size(h, kh, sh, self.padding), conv_output_size(w, kw, sw, self.padding)
        if (oh is not None and oh <= 0) or (ow is not None and ow <= 0):
            raise CnnlabError(f"{type(self).__name__}: a {kh}x{kw} kernel does not fit a {h}x{w} input with "
                              f"padding 'valid'; use padding='same', a smaller kernel, or a larger input")
        return oh, ow

    def config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "strides": list(self.strides), "padding": self.padding,
                "activation": self.activation, "use_bias": self.use_bias}


@register_layer
class DepthwiseConv2D(_Conv):
    """One filter per input channel (times `depth_multiplier`): MobileNet's spatial convolution."""

    def __init__(self, kernel_size: Any, strides: Any = 1, padding: str = "valid", depth_multiplier: int = 1,
                 activation: str | None = None, use_bias: bool = True, name: str | None = None,
                 input_shape: Sequence[int] | None = None, trainable: bool = True,
                 depthwise_initializer: str = "glorot_uniform", bias_initializer: str = "zeros",
                 **ignored: Any) -> None:
        super().__init__(kernel_size, strides, padding, activation, use_bias, input_shape, name, trainable)
        if not isinstance(depth_multiplier, int) or depth_multiplier <= 0:
            raise CnnlabError(f"DepthwiseConv2D: depth_multiplier must be a positive int; got {depth_multiplier!r}")
        self.depth_multiplier = depth_multiplier
        self.depthwise_initializer = _initializer(depthwise_initializer, "DepthwiseConv2D depthwise_initializer")
        self.bias_initializer = _initializer(bias_initializer, "DepthwiseConv2D bias_initializer")

    def create_weights(self, channels: int) -> None:
        kh, kw = self.kernel_size
        m = self.depth_multiplier
        self.weight = nn.Parameter(torch.empty(channels * m, 1, kh, kw))  # groups=channels: out = c * m + k
        initialize(self.weight, self.depthwise_initializer, fan_in=kh * kw, fan_out=kh * kw * m)
        self.bias = nn.Parameter(torch.zeros(channels * m)) if self.use_bias else None

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (shape[0] * self.depth_multiplier, *self.spatial(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C * multiplier, H', W')
        pads = input_pads(x, self.pads, self.kernel_size, self.strides)
        return _activate(same_conv2d(x, self.weight, self.bias, self.strides, pads, x.shape[1]), self.activation)

    def keras_weights(self) -> list[torch.Tensor]:
        kh, kw = self.kernel_size
        m = self.depth_multiplier
        kernel = self.weight.detach().reshape(-1, m, kh, kw).permute(2, 3, 0, 1)  # -> (kh, kw, in, multiplier)
        return [kernel] + ([self.bias.detach()] if self.bias is not None else [])

    def set_keras_weights(self, weights: Sequence[torch.Tensor]) -> None:
        _expect_count(self, weights, 2 if self.bias is not None else 1)
        _assign(self.weight, _depthwise_torch(weights[0], self.weight, self.depth_multiplier, self.name),
                f"{self.name} depthwise kernel")
        if self.bias is not None:
            _assign(self.bias, weights[1], f"{self.name} bias")

    def get_config(self) -> dict[str, Any]:
        return {**self.config(), "depth_multiplier": self.depth_multiplier, **_named(self)}


def _depthwise_torch(kernel: Any, target: torch.Tensor, multiplier: int, name: str | None) -> torch.Tensor:
    """Keras's depthwise kernel (kh, kw, in, multiplier) -> torch's grouped (in * multiplier, 1, kh, kw)."""
    kernel = torch.as_tensor(kernel)
    _, _, kh, kw = target.shape
    expected = (kh, kw, target.shape[0] // multiplier, multiplier)
    if tuple(kernel.shape) != expected:
        raise CnnlabError(f"{name} depthwise kernel: expected an array of shape {expected} (kh, kw, in, multiplier), "
                          f"got {tuple(kernel.shape)}")
    return kernel.permute(2, 3, 0, 1).reshape(target.shape)


@register_layer
class SeparableConv2D(_Conv):
    """A depthwise convolution, then a 1x1 convolution to `filters` channels (Xception's building block)."""

    def __init__(self, filters: int, kernel_size: Any, strides: Any = 1, padding: str = "valid",
                 depth_multiplier: int = 1, activation: str | None = None, use_bias: bool = True,
                 name: str | None = None, input_shape: Sequence[int] | None = None, trainable: bool = True,
                 **ignored: Any) -> None:
        super().__init__(kernel_size, strides, padding, activation, use_bias, input_shape, name, trainable)
        if not isinstance(filters, int) or filters <= 0:
            raise CnnlabError(f"SeparableConv2D: filters must be a positive int; got {filters!r}")
        if not isinstance(depth_multiplier, int) or depth_multiplier <= 0:
            raise CnnlabError(f"SeparableConv2D: depth_multiplier must be a positive int; got {depth_multiplier!r}")
        self.filters, self.depth_multiplier = filters, depth_multiplier

    def create_weights(self, channels: int) -> None:
        kh, kw = self.kernel_size
        m = self.depth_multiplier
        self.depthwise = nn.Parameter(torch.empty(channels * m, 1, kh, kw))
        initialize(self.depthwise, "glorot_uniform", fan_in=kh * kw, fan_out=kh * kw * m)
        self.pointwise = nn.Parameter(torch.empty(self.filters, channels * m, 1, 1))
        initialize(self.pointwise, "glorot_uniform", fan_in=channels * m, fan_out=self.filters)
        self.bias = nn.Parameter(torch.zeros(self.filters)) if self.use_bias else None

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (self.filters, *self.spatial(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, filters, H', W')
        pads = input_pads(x, self.pads, self.kernel_size, self.strides)
        x = same_conv2d(x, self.depthwise, None, self.strides, pads, x.shape[1])
        return _activate(F.conv2d(x, self.pointwise, self.bias), self.activation)

    def keras_weights(self) -> list[torch.Tensor]:
        kh, kw = self.kernel_size
        depthwise = self.depthwise.detach().reshape(-1, self.depth_multiplier, kh, kw).permute(2, 3, 0, 1)
        pointwise = self.pointwise.detach().permute(2, 3, 1, 0)  # (filters, in*m, 1, 1) -> (1, 1, in*m, filters)
        return [depthwise, pointwise] + ([self.bias.detach()] if self.bias is not None else [])

    def set_keras_weights(self, weights: Sequence[torch.Tensor]) -> None:
        _expect_count(self, weights, 3 if self.bias is not None else 2)
        _assign(self.depthwise, _depthwise_torch(weights[0], self.depthwise, self.depth_multiplier, self.name),
                f"{self.name} depthwise kernel")
        pointwise = torch.as_tensor(weights[1])
        if pointwise.ndim != 4:
            raise CnnlabError(f"{self.name} pointwise kernel: expected (1, 1, in*multiplier, filters), got "
                              f"{tuple(pointwise.shape)}")
        _assign(self.pointwise, pointwise.permute(3, 2, 0, 1), f"{self.name} pointwise kernel (1, 1, in, filters)")
        if self.bias is not None:
            _assign(self.bias, weights[2], f"{self.name} bias")

    def get_config(self) -> dict[str, Any]:
        return {"filters": self.filters, **self.config(), "depth_multiplier": self.depth_multiplier, **_named(self)}


@register_layer
class Conv2DTranspose(_Conv):
    """The transposed convolution (learned upsampling): 'same' gives H * strides, as Keras."""

    def __init__(self, filters: int, kernel_size: Any, strides: Any = 1, padding: str = "valid",
                 activation: str | None = None, use_bias: bool = True, name: str | None = None,
                 input_shape: Sequence[int] | None = None, trainable: bool = True, **ignored: Any) -> None:
        super().__init__(kernel_size, strides, padding, activation, use_bias, input_shape, name, trainable)
        if not isinstance(filters, int) or filters <= 0:
            raise CnnlabError(f"Conv2DTranspose: filters must be a positive int; got {filters!r}")
        self.filters = filters
        self.pads = None  # computed per size below

    def build(self, shape: Shape) -> Shape:
        _expect_image(shape, "Conv2DTranspose")
        self.create_weights(shape[0])
        return Layer.build(self, shape)

    def create_weights(self, channels: int) -> None:
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(channels, self.filters, kh, kw))
        initialize(self.weight, "glorot_uniform", fan_in=self.filters * kh * kw, fan_out=channels * kh * kw)
        self.bias = nn.Parameter(torch.zeros(self.filters)) if self.use_bias else None

    def _length(self, size: int | None, kernel: int, stride: int) -> tuple[Any, int]:
        """Keras's output length and how many of the full transposed output's leading pixels it drops."""
        if size is None:
            return None, 0
        if self.padding == "same":
            return size * stride, max(kernel - stride, 0) // 2
        return size * stride + max(kernel - stride, 0), 0

    def compute_output_shape(self, shape: Shape) -> Shape:
        _, h, w = _expect_image(shape, "Conv2DTranspose")
        return (self.filters, self._length(h, self.kernel_size[0], self.strides[0])[0],
                self._length(w, self.kernel_size[1], self.strides[1])[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, filters, H * s, W * s)
        full = F.conv_transpose2d(x, self.weight, None, self.strides)  # (N, filters, (H-1)*s + k, ...)
        (oh, top), (ow, left) = (self._length(x.shape[2], self.kernel_size[0], self.strides[0]),
                                 self._length(x.shape[3], self.kernel_size[1], self.strides[1]))
        full = full[:, :, top:top + oh, left:left + ow]
        if full.shape[2] < oh or full.shape[3] < ow:  # kernel smaller than stride: Keras's output ends in zeros
            full = F.pad(full, (0, ow - full.shape[3], 0, oh - full.shape[2]))
        if self.bias is not None:
            full = full + self.bias[:, None, None]
        return _activate(full, self.activation)

    def keras_weights(self) -> list[torch.Tensor]:
        kernel = self.weight.detach().permute(2, 3, 1, 0)  # (in, out, kh, kw) -> Keras's (kh, kw, out, in)
        return [kernel] + ([self.bias.detach()] if self.bias is not None else [])

    def set_keras_weights(self, weights: Sequence[torch.Tensor]) -> None:
        _expect_count(self, weights, 2 if self.bias is not None else 1)
        _assign(self.weight, torch.as_tensor(weights[0]).permute(3, 2, 0, 1), f"{self.name} kernel (kh, kw, out, in)")
        if self.bias is not None:
            _assign(self.bias, weights[1], f"{self.name} bias")

    def get_config(self) -> dict[str, Any]:
        return {"filters": self.filters, **self.config(), **_named(self)}


@register_layer
class UpSampling2D(Layer):
    """Repeat rows and columns `size` times ('nearest') or interpolate ('bilinear')."""

    def __init__(self, size: Any = (2, 2), interpolation: str = "nearest", name: str | None = None,
                 input_shape: Sequence[int] | None = None, trainable: bool = True, **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)
        self.size = _pair(size, "UpSampling2D size")
        if interpolation not in ("nearest", "bilinear"):
            raise CnnlabError(f"UpSampling2D: interpolation must be 'nearest' or 'bilinear'; got {interpolation!r}")
        self.interpolation = interpolation

    def compute_output_shape(self, shape: Shape) -> Shape:
        c, h, w = _expect_image(shape, "UpSampling2D")
        return (c, None if h is None else h * self.size[0], None if w is None else w * self.size[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpolation == "nearest":
            return x.repeat_interleave(self.size[0], dim=2).repeat_interleave(self.size[1], dim=3)
        return F.interpolate(x, scale_factor=self.size, mode="bilinear", align_corners=False)

    def get_config(self) -> dict[str, Any]:
        return {"size": list(self.size), "interpolation": self.interpolation, **_named(self)}


@register_layer
class GlobalMaxPooling2D(Layer):
    """(N, C, H, W) -> (N, C): the largest value of each feature map."""

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (_expect_image(shape, "GlobalMaxPooling2D")[0],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


@register_layer
class Reshape(Layer):
    """Reshape each sample to `target_shape`, given and read in Keras's order (channels last; one -1 allowed)."""

    def __init__(self, target_shape: Sequence[int], name: str | None = None, input_shape: Sequence[int] | None = None,
                 trainable: bool = True, **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)
        target = tuple(target_shape) if isinstance(target_shape, (list, tuple)) else None
        if not target or not all(isinstance(d, int) and (d > 0 or d == -1) for d in target) or \
                list(target).count(-1) > 1:
            raise CnnlabError(f"Reshape: target_shape must be a tuple of positive ints with at most one -1, like "
                              f"(7, 7, 64); got {target_shape!r}")
        self.target_shape = target
        self.keras_features: torch.Tensor | None = None  # a vector input not in Keras's order: Keras's order

    def symbolic_output(self, shape: Any, tensors: list[KerasTensor]) -> tuple[Any, Layout | None]:
        if not self.built and tensors[0].layout is not None:
            self.keras_features = keras_index(tensors[0].layout)
        return super().symbolic_output(shape, tensors)

    def compute_output_shape(self, shape: Shape) -> Shape:
        if any(d is None for d in shape):
            raise CnnlabError(f"Reshape needs a known input size but gets {_keras_text(shape)}; give the model a "
                              f"fixed input_shape")
        size = math.prod(shape)
        known = math.prod(d for d in self.target_shape if d != -1)
        target = tuple(size // known if d == -1 else d for d in self.target_shape)
        if math.prod(target) != size:
            raise CnnlabError(f"Reshape: cannot reshape {_keras_text(shape)} ({size} values) into "
                              f"{self.target_shape}; the sizes must multiply to {size}")
        return (target[2], target[0], target[1]) if len(target) == 3 else target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if x.ndim == 4:
            x = x.permute(0, 2, 3, 1)  # Keras reads an image row by row, channels last
        elif self.keras_features is not None:  # a vector a Flatten unrolled (C, H, W): Keras's is (H, W, C)
            x = x[:, self.keras_features.to(x.device)]
        assert self.built_shape is not None
        out_shape = self.built_shape
        keras_target = (out_shape[1], out_shape[2], out_shape[0]) if len(out_shape) == 3 else out_shape
        y = x.reshape(n, *keras_target)
        return y.permute(0, 3, 1, 2) if y.ndim == 4 else y

    def get_config(self) -> dict[str, Any]:
        return {"target_shape": list(self.target_shape), **_named(self)}


@register_layer
class ReLU(Layer):
    """Keras's ReLU layer: max_value caps it (ReLU(6.0) is MobileNet's ReLU6), negative_slope leaks below threshold."""

    keeps_order = True

    def __init__(self, max_value: float | None = None, negative_slope: float = 0.0, threshold: float = 0.0,
                 name: str | None = None, input_shape: Sequence[int] | None = None, trainable: bool = True,
                 **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)
        if max_value is not None and max_value < 0 or negative_slope < 0:
            raise CnnlabError(f"ReLU: max_value and negative_slope must be >= 0; got {max_value!r}, {negative_slope!r}")
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope, self.threshold = float(negative_slope), float(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.negative_slope == 0 and self.threshold == 0:
            return F.relu(x) if self.max_value is None else x.clamp(0.0, self.max_value)
        y = torch.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
        return y if self.max_value is None else y.clamp(max=self.max_value)

    def get_config(self) -> dict[str, Any]:
        return {"max_value": self.max_value, "negative_slope": self.negative_slope, "threshold": self.threshold,
                **_named(self)}


@register_layer
class LeakyReLU(Layer):
    """x for x >= 0, negative_slope * x below (Keras 3's default slope 0.3; Keras 2 called it alpha)."""

    keeps_order = True

    def __init__(self, negative_slope: float = 0.3, name: str | None = None, input_shape: Sequence[int] | None = None,
                 trainable: bool = True, alpha: float | None = None, **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)
        self.negative_slope = float(alpha if alpha is not None else negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope, **_named(self)}


@register_layer
class Softmax(Layer):
    """Softmax over Keras's `axis` (-1: the channels of an image, the features of a vector)."""

    def __init__(self, axis: int = -1, name: str | None = None, input_shape: Sequence[int] | None = None,
                 trainable: bool = True, **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)
        self.axis = int(axis)
        self.activation = "softmax" if self.axis == -1 else None  # what output_kind reads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(x, dim=torch_axis(self.axis, x.ndim))

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis, **_named(self)}


def torch_axis(axis: int, ndim: int) -> int:
    """Keras's axis (batch first, channels last) -> torch's dim for a tensor of `ndim` dims, channels first.

    >>> torch_axis(-1, 4), torch_axis(1, 4), torch_axis(-1, 2)
    (1, 2, 1)
    """
    axis = axis % ndim
    if ndim == 4 and axis > 0:
        return {1: 2, 2: 3, 3: 1}[axis]
    return axis


@register_layer
class Lambda(Layer):
    """A Python function on tensors as a layer. It receives torch tensors channels first, (N, C, H, W).

    Models holding one cannot be saved: a model file stores no code (Keras's safe mode refuses to load
    them for the same reason).
    """

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor], output_shape: Any = None,
                 name: str | None = None, input_shape: Sequence[int] | None = None, trainable: bool = True,
                 **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)
        if not callable(function):
            raise CnnlabError(f"Lambda: function must be callable, like lambda x: x / 255.0; got {function!r}")
        self.function = function
        self.output_shape_hint = output_shape

    def compute_output_shape(self, shape: Any) -> Shape:
        if self.output_shape_hint is not None:
            hint = tuple(self.output_shape_hint)
            return (hint[2], hint[0], hint[1]) if len(hint) == 3 else hint
        shapes = shape if isinstance(shape, list) else [shape]
        probe = [torch.zeros(1, *[8 if d is None else d for d in s]) for s in shapes]
        with torch.no_grad():
            out = self.function(probe if isinstance(shape, list) else probe[0])  # type: ignore[arg-type]
        traced: tuple[Any, ...] = tuple(out.shape[1:])
        if not isinstance(shape, list) and len(traced) == len(shape):  # sizes that follow an unknown input size
            traced = tuple(None if d is None and t == 8 else t for d, t in zip(shape, traced, strict=True))
        return traced

    def forward(self, x: Any) -> Any:
        return self.function(x)

    def get_config(self) -> dict[str, Any]:
        raise CnnlabError(f"cannot save layer {self.name or 'lambda'}: a Lambda layer holds Python code, which a "
                          f"model file never stores; replace it with a built-in layer (e.g. Rescaling for x / 255) "
                          f"or save the weights only with model.save_weights(...)")
