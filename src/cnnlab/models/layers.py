"""Keras-vocabulary layers on plain torch.nn: build a CNN layer by layer, as the tutorials do.

    model = Sequential([
        Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(10, activation="softmax"),
    ])

Shapes are given as the tutorials give them, (H, W, C); tensors flow as PyTorch's (N, C, H, W).
Each layer learns its input shape when it is built: `Sequential` builds every layer from the
first layer's `input_shape`, so parameters exist right away and the summary can count them; a
layer used on its own builds itself on its first call. Weights start as Keras starts them
(glorot-uniform kernels, zero biases; BatchNorm momentum 0.99 and epsilon 1e-3), so training
curves match the tutorials'. The result is an ordinary `nn.Module`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError, did_you_mean

__all__ = [
    "Layer", "Conv2D", "Dense", "MaxPooling2D", "AveragePooling2D", "Flatten", "Dropout",
    "BatchNormalization", "GlobalAveragePooling2D", "Activation", "Residual", "ResidualBlock",
    "Sequential", "layer_from_config", "same_padding", "conv_output_size",
]

Shape = tuple[int, ...]  # one sample's shape, channels first: (C, H, W) or (features,)

ACTIVATIONS: dict[str, Any] = {
    "linear": None, "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "softmax": lambda x: F.softmax(x, dim=1), "elu": F.elu, "selu": F.selu, "gelu": F.gelu,
    "swish": F.silu, "silu": F.silu, "leaky_relu": F.leaky_relu, "relu6": F.relu6,
}


def _activation(name: str | None, where: str) -> str | None:
    if name is None or name == "linear":
        return None
    if name not in ACTIVATIONS:
        raise CnnlabError(f"{where}: unknown activation {name!r}.{did_you_mean(name, ACTIVATIONS)} "
                          f"Use one of: {', '.join(ACTIVATIONS)}.")
    return name


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise CnnlabError(f"{what} must be a positive int or a pair of them, like 3 or (3, 3); got {value!r}")
    return pair  # type: ignore[return-value]


def _padding(padding: str, where: str) -> str:
    if padding not in ("valid", "same"):
        raise CnnlabError(f"{where}: padding must be 'valid' or 'same'; got {padding!r}")
    return padding


def conv_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a convolution or pooling window along one axis, as Keras computes it.

    'valid': floor((size - kernel) / stride) + 1; 'same': ceil(size / stride).

    >>> conv_output_size(28, 3, 1, "valid"), conv_output_size(28, 3, 2, "same")
    (26, 14)
    """
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding Keras/TensorFlow add for 'same' (the extra pixel goes after).

    >>> same_padding(28, 3, 2)
    (0, 1)
    """
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Layer(nn.Module):
    """Base of the Keras-style layers: `build(input_shape)` creates the weights, once.

    `input_shape` is (H, W, C) as the tutorials write it; only the first layer of a
    `Sequential` needs it. `get_config()` returns the arguments that rebuild the layer, which is
    what a saved model file stores as its architecture.
    """

    def __init__(self, input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.input_shape_hwc = tuple(input_shape) if input_shape is not None else None
        self.built = False
        self.output_shape: Shape | None = None

    def build(self, shape: Shape) -> Shape:
        """Create weights for one sample of `shape` (channels first); return the output shape."""
        self.built = True
        self.output_shape = self.compute_output_shape(shape)
        return self.output_shape

    def compute_output_shape(self, shape: Shape) -> Shape:
        return shape

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.built and args and isinstance(args[0], torch.Tensor):
            self.build(tuple(args[0].shape[1:]))
            self.to(args[0].device)
        return super().__call__(*args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())


def _expect_image(shape: Shape, where: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise CnnlabError(f"{where} needs image input (H, W, C) but gets a flat vector of shape "
                          f"{shape}; put it before Flatten/GlobalAveragePooling2D")
    return shape  # type: ignore[return-value]


class Conv2D(Layer):
    """2-D convolution, Keras arguments: Conv2D(filters, kernel_size, strides, padding, activation).

    >>> Sequential([Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1))]).layer_output_shapes()
    [(26, 26, 32)]
    """

    def __init__(self, filters: int, kernel_size: int | Sequence[int], strides: int | Sequence[int] = 1,
                 padding: str = "valid", activation: str | None = None, use_bias: bool = True,
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__(input_shape)
        if not isinstance(filters, int) or filters <= 0:
            raise CnnlabError(f"Conv2D: filters must be a positive int; got {filters!r}")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "Conv2D kernel_size")
        self.strides = _pair(strides, "Conv2D strides")
        self.padding = _padding(padding, "Conv2D")
        self.activation = _activation(activation, "Conv2D")
        self.use_bias = use_bias
        self.pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def build(self, shape: Shape) -> Shape:
        c, h, w = _expect_image(shape, "Conv2D")
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(self.filters, c, kh, kw))
        nn.init.xavier_uniform_(self.weight)  # Keras default: glorot_uniform
        self.bias = nn.Parameter(torch.zeros(self.filters)) if self.use_bias else None
        if self.padding == "same":
            top, bottom = same_padding(h, kh, self.strides[0])
            left, right = same_padding(w, kw, self.strides[1])
            self.pads = (left, right, top, bottom)
        return super().build(shape)

    def compute_output_shape(self, shape: Shape) -> Shape:
        c, h, w = _expect_image(shape, "Conv2D")
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        oh, ow = conv_output_size(h, kh, sh, self.padding), conv_output_size(w, kw, sw, self.padding)
        if oh <= 0 or ow <= 0:
            raise CnnlabError(f"Conv2D: a {kh}x{kw} kernel does not fit a {h}x{w} input with padding "
                              f"'valid'; use padding='same', a smaller kernel, or a larger input")
        return (self.filters, oh, ow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, filters, H', W')
        left, right, top, bottom = self.pads
        if left == right and top == bottom:
            x = F.conv2d(x, self.weight, self.bias, self.strides, (top, left))
        else:  # Keras puts the odd padding pixel after; torch pads symmetrically
            x = F.conv2d(F.pad(x, self.pads), self.weight, self.bias, self.strides)
        act = ACTIVATIONS[self.activation] if self.activation else None
        return act(x) if act else x

    def get_config(self) -> dict[str, Any]:
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "activation": self.activation, "use_bias": self.use_bias}


class Dense(Layer):
    """Fully connected layer: Dense(units, activation)."""

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__(input_shape)
        if not isinstance(units, int) or units <= 0:
            raise CnnlabError(f"Dense: units must be a positive int; got {units!r}")
        self.units = units
        self.activation = _activation(activation, "Dense")
        self.use_bias = use_bias

    def build(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise CnnlabError(f"Dense needs a flat input but gets shape {shape} (C, H, W); "
                              f"add Flatten() or GlobalAveragePooling2D() before it")
        self.weight = nn.Parameter(torch.empty(self.units, shape[0]))
        nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(self.units)) if self.use_bias else None
        return super().build(shape)

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (self.units,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, features) -> (N, units)
        x = F.linear(x, self.weight, self.bias)
        act = ACTIVATIONS[self.activation] if self.activation else None
        return act(x) if act else x

    def get_config(self) -> dict[str, Any]:
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias}


class _Pooling2D(Layer):
    mode = "max"

    def __init__(self, pool_size: int | Sequence[int] = (2, 2), strides: int | Sequence[int] | None = None,
                 padding: str = "valid", input_shape: Sequence[int] | None = None) -> None:
        super().__init__(input_shape)
        name = type(self).__name__
        self.pool_size = _pair(pool_size, f"{name} pool_size")
        self.strides = _pair(strides, f"{name} strides") if strides is not None else self.pool_size
        self.padding = _padding(padding, name)
        self.pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def build(self, shape: Shape) -> Shape:
        _, h, w = _expect_image(shape, type(self).__name__)
        if self.padding == "same":
            top, bottom = same_padding(h, self.pool_size[0], self.strides[0])
            left, right = same_padding(w, self.pool_size[1], self.strides[1])
            self.pads = (left, right, top, bottom)
        return super().build(shape)

    def compute_output_shape(self, shape: Shape) -> Shape:
        c, h, w = _expect_image(shape, type(self).__name__)
        oh = conv_output_size(h, self.pool_size[0], self.strides[0], self.padding)
        ow = conv_output_size(w, self.pool_size[1], self.strides[1], self.padding)
        if oh <= 0 or ow <= 0:
            raise CnnlabError(f"{type(self).__name__}: a {self.pool_size} window does not fit a {h}x{w} "
                              f"input; remove a pooling layer or use a larger input")
        return (c, oh, ow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H', W')
        if not any(self.pads):  # 'valid', or 'same' that needs no padding: skip the copy F.pad makes
            pool = F.max_pool2d if self.mode == "max" else F.avg_pool2d
            return pool(x, self.pool_size, self.strides)
        if self.mode == "max":  # padded cells never win the max
            return F.max_pool2d(F.pad(x, self.pads, value=-math.inf), self.pool_size, self.strides)
        # Keras averages over real pixels only: divide window sums by window counts
        ones = torch.ones_like(x[:1, :1])
        total = F.avg_pool2d(F.pad(x, self.pads), self.pool_size, self.strides)
        count = F.avg_pool2d(F.pad(ones, self.pads), self.pool_size, self.strides)
        return total / count

    def get_config(self) -> dict[str, Any]:
        return {"pool_size": list(self.pool_size), "strides": list(self.strides), "padding": self.padding}


class MaxPooling2D(_Pooling2D):
    """Max pooling: MaxPooling2D((2, 2)) halves height and width."""

    mode = "max"


class AveragePooling2D(_Pooling2D):
    """Average pooling: AveragePooling2D((2, 2)); 'same' padding averages real pixels only."""

    mode = "avg"


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W)."""

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)


class GlobalAveragePooling2D(Layer):
    """(N, C, H, W) -> (N, C): the mean of each feature map."""

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (_expect_image(shape, "GlobalAveragePooling2D")[0],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Dropout(Layer):
    """Dropout(rate): zeroes a fraction of activations while training, none at inference."""

    def __init__(self, rate: float, input_shape: Sequence[int] | None = None) -> None:
        super().__init__(input_shape)
        if not 0.0 <= rate < 1.0:
            raise CnnlabError(f"Dropout: rate must be in [0, 1); got {rate!r}")
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.rate, self.training)

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate}


class Activation(Layer):
    """Activation('relu') as a layer of its own."""

    def __init__(self, activation: str, input_shape: Sequence[int] | None = None) -> None:
        super().__init__(input_shape)
        self.activation = _activation(activation, "Activation")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation] if self.activation else None
        return act(x) if act else x

    def get_config(self) -> dict[str, Any]:
        return {"activation": self.activation}


class BatchNormalization(Layer):
    """Batch normalization over channels (images) or features (vectors), Keras defaults.

    Keras counts the moving mean and variance as (non-trainable) parameters; so does our
    summary. momentum=0.99 is Keras's (the running average keeps 99% of its old value), which is
    torch's momentum 0.01.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3,
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__(input_shape)
        if not 0.0 <= momentum < 1.0:
            raise CnnlabError(f"BatchNormalization: momentum must be in [0, 1); got {momentum!r}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, shape: Shape) -> Shape:
        channels = shape[0]
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        return super().build(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, 1.0 - self.momentum, self.epsilon)

    def get_config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "epsilon": self.epsilon}


class Residual(Layer):
    """A residual connection (Keras's Add): output = activation(body(x) + shortcut(x)).

    The shortcut is the identity, or the given layers (e.g. a strided 1x1 Conv2D when the body
    changes the shape). Shapes of both branches must match.
    """

    def __init__(self, body: Sequence[Layer], shortcut: Sequence[Layer] = (), activation: str | None = "relu",
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__(input_shape)
        self.body = _named_stack(body)
        self.shortcut = _named_stack(shortcut)
        self.activation = _activation(activation, "Residual")

    def build(self, shape: Shape) -> Shape:
        out = _build_stack(self.body, shape)
        skip = _build_stack(self.shortcut, shape)
        if out != skip:
            raise CnnlabError(f"Residual: the body gives shape {out} but the shortcut gives {skip} (C, H, W); "
                              f"add a shortcut such as Conv2D(filters, 1, strides=...) to match them")
        self.built, self.output_shape = True, out
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x) + self.shortcut(x)
        act = ACTIVATIONS[self.activation] if self.activation else None
        return act(y) if act else y

    def get_config(self) -> dict[str, Any]:
        return {"body": [_layer_config(m) for m in self.body], "shortcut": [_layer_config(m) for m in self.shortcut],
                "activation": self.activation}


def ResidualBlock(filters: int, strides: int = 1, project: bool = False, momentum: float = 0.99) -> Residual:
    """Seed 003's residual block: Conv-BN-ReLU-Conv-BN, add the input, ReLU.

    With strides > 1 or `project`, the shortcut is a 1x1 Conv2D + BN so both branches match.
    `momentum` is the BatchNorm moving-average momentum (Keras's 0.99 by default).
    """
    body = [Conv2D(filters, 3, strides=strides, padding="same"), BatchNormalization(momentum),
            Activation("relu"), Conv2D(filters, 3, padding="same"), BatchNormalization(momentum)]
    shortcut: list[Layer] = []
    if strides != 1 or project:
        shortcut = [Conv2D(filters, 1, strides=strides, padding="same"), BatchNormalization(momentum)]
    return Residual(body, shortcut, activation="relu")


def _keras_name(cls_name: str) -> str:
    """Conv2D -> conv2d, MaxPooling2D -> max_pooling2d, BatchNormalization -> batch_normalization."""
    out = ""
    for i, ch in enumerate(cls_name):
        if ch.isupper() and i and not cls_name[i - 1].isupper() and not cls_name[i - 1].isdigit():
            out += "_"
        out += ch.lower()
    return out


def _named_stack(layers: Sequence[Layer]) -> nn.Sequential:
    names: dict[str, int] = {}
    named: OrderedDict[str, nn.Module] = OrderedDict()
    for layer in layers:
        if not isinstance(layer, nn.Module):
            raise CnnlabError(f"expected a layer such as Conv2D(...) but got {layer!r}")
        base = _keras_name(type(layer).__name__)
        count = names.get(base, 0)
        names[base] = count + 1
        named[base if count == 0 else f"{base}_{count}"] = layer
    return nn.Sequential(named)


def _build_stack(stack: Iterable[nn.Module], shape: Shape) -> Shape:
    for layer in stack:
        if isinstance(layer, Layer):
            shape = layer.build(shape) if not layer.built else layer.output_shape or shape
        else:  # a plain torch module: trace its shape with a dummy sample
            with torch.no_grad():
                shape = tuple(layer.eval()(torch.zeros(1, *shape)).shape[1:])
    return shape


LAYER_TYPES: dict[str, type[Layer]] = {cls.__name__: cls for cls in (
    Conv2D, Dense, MaxPooling2D, AveragePooling2D, Flatten, Dropout, BatchNormalization,
    GlobalAveragePooling2D, Activation)}


def _layer_config(layer: nn.Module) -> dict[str, Any]:
    if not isinstance(layer, Layer):
        raise CnnlabError(f"cannot describe {type(layer).__name__} in a model file: only cnnlab layers can be saved "
                          f"as a Sequential architecture")
    return {"class": type(layer).__name__, **layer.get_config()}


def layer_from_config(config: dict[str, Any]) -> Layer:
    """Rebuild a layer from `{"class": "Conv2D", ...arguments}` (what a model file stores)."""
    args = dict(config)
    cls_name = args.pop("class", None)
    if cls_name == "Residual":
        body = [layer_from_config(c) for c in args.pop("body")]
        shortcut = [layer_from_config(c) for c in args.pop("shortcut")]
        return Residual(body, shortcut, **args)
    if cls_name not in LAYER_TYPES:
        raise CnnlabError(f"unknown layer type {cls_name!r} in the architecture."
                          f"{did_you_mean(str(cls_name), LAYER_TYPES)}")
    return LAYER_TYPES[cls_name](**args)


class Sequential(nn.Sequential):
    """A stack of layers, built from the first layer's input_shape (or `input_shape=`).

    Children are named as Keras names them (conv2d, max_pooling2d, conv2d_1, ...), so the
    summary reads like the tutorials'. `outputs` says whether the last layer emits
    probabilities (a softmax) or logits; the loss and `predict` use it.

    >>> m = Sequential([Conv2D(8, 3, input_shape=(28, 28, 1)), Flatten(), Dense(10, activation="softmax")])
    >>> m(torch.zeros(2, 1, 28, 28)).shape, m.outputs
    (torch.Size([2, 10]), 'probabilities')
    """

    def __init__(self, layers: Sequence[Layer], input_shape: Sequence[int] | None = None) -> None:
        if not layers:
            raise CnnlabError("Sequential needs at least one layer")
        super().__init__(OrderedDict(_named_stack(layers).named_children()))
        first = layers[0]
        hwc = input_shape or getattr(first, "input_shape_hwc", None)
        if hwc is None:
            raise CnnlabError("Sequential: give the input shape, e.g. Conv2D(..., input_shape=(28, 28, 1)) "
                              "or Sequential([...], input_shape=(28, 28, 1))")
        hwc = tuple(hwc)
        if len(hwc) != 3 or not all(isinstance(v, int) and v > 0 for v in hwc):
            raise CnnlabError(f"input_shape must be (height, width, channels) like (28, 28, 1); got {hwc!r}")
        self.input_shape = hwc
        self.shapes: list[Shape] = []
        shape: Shape = (hwc[2], hwc[0], hwc[1])
        for layer in self:
            shape = _build_stack([layer], shape)
            self.shapes.append(shape)
        last = layers[-1]
        self.outputs = "probabilities" if getattr(last, "activation", None) == "softmax" else "logits"

    def layer_output_shapes(self) -> list[tuple[int, ...]]:
        """Each layer's output shape for one sample, as Keras prints it: (H, W, C) or (units,)."""
        return [(s[1], s[2], s[0]) if len(s) == 3 else s for s in self.shapes]

    def get_config(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "layers": [_layer_config(m) for m in self]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        return cls([layer_from_config(c) for c in config["layers"]], input_shape=config["input_shape"])
