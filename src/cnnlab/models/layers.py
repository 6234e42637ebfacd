"""Keras-vocabulary layers on plain torch.nn: build a CNN layer by layer, as the tutorials do.

    model = Sequential([
        Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(10, activation="softmax"),
    ])

Shapes are given as the tutorials give them, (H, W, C); tensors flow as PyTorch's (N, C, H, W).
Each layer learns its input shape when it is built: `Sequential` (models/sequential.py) builds every
layer from the first layer's `input_shape`, and a functional model (models/graph.py) from its
`Input`, so parameters exist right away and the summary can count them; a layer used on its own
builds itself on its first call. Weights start as Keras starts them
(glorot-uniform kernels, zero biases; BatchNorm momentum 0.99 and epsilon 1e-3), so training
curves match the tutorials'. The result is an ordinary `nn.Module`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.models.symbolic import (
    KerasTensor, Layout, Node, eager_keras_call, is_symbolic, keras_index, keras_order, symbolic_call,
)

__all__ = [
    "Layer", "Conv2D", "Dense", "MaxPooling2D", "AveragePooling2D", "Flatten", "Dropout",
    "BatchNormalization", "GlobalAveragePooling2D", "Activation", "InputLayer", "layer_from_config", "register_layer",
    "same_padding", "same_conv2d", "input_pads", "conv_output_size", "DepthwiseConv", "with_depthwise_conv",
]

Shape = tuple[Any, ...]  # one sample's shape, channels first: (C, H, W) or (features,); H, W None = any size

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
    padding = padding.lower() if isinstance(padding, str) else padding  # Keras takes "SAME" too
    if padding not in ("valid", "same"):
        raise CnnlabError(f"{where}: padding must be 'valid' or 'same'; got {padding!r}")
    return padding


def conv_output_size(size: int | None, kernel: int, stride: int, padding: str) -> int | None:
    """Output length of a convolution or pooling window along one axis, as Keras computes it.

    'valid': floor((size - kernel) / stride) + 1; 'same': ceil(size / stride).

    >>> conv_output_size(28, 3, 1, "valid"), conv_output_size(28, 3, 2, "same")
    (26, 14)
    """
    if size is None:  # a model built for any image size
        return None
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def same_pads(size: tuple[Any, Any], kernel: tuple[int, int], strides: tuple[int, int]) -> tuple[int, ...] | None:
    """F.pad's (left, right, top, bottom) for Keras's 'same' on an (H, W) input; None while H or W is unknown."""
    if size[0] is None or size[1] is None:
        return None
    top, bottom = same_padding(size[0], kernel[0], strides[0])
    left, right = same_padding(size[1], kernel[1], strides[1])
    return (left, right, top, bottom)


def input_pads(x: torch.Tensor, pads: tuple[int, ...] | None, window: tuple[int, int],
               strides: tuple[int, int]) -> tuple[int, ...]:
    """A layer's padding in F.pad's order: `pads` as built, or Keras's 'same' for `x`'s size (None: built for any size).

    >>> input_pads(torch.zeros(1, 1, 5, 5), None, (3, 3), (2, 2))
    (1, 1, 1, 1)
    """
    found = pads or same_pads((x.shape[2], x.shape[3]), window, strides)
    assert found is not None  # the input's size is known at call time
    return found


def same_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, strides: tuple[int, int],
                pads: tuple[int, ...], groups: int = 1) -> torch.Tensor:
    """F.conv2d with the zero padding `pads` (F.pad's left, right, top, bottom), as Keras's 'same' pads.

    Keras puts an odd padding pixel after (bottom/right) and torch's convolution pads symmetrically, so a
    stride-2 'same' convolution used to pad a copy of its input first. Where a side gets one pixel more,
    the kernel gets one zero tap in front instead and the convolution pads both sides by the larger
    amount: each window then covers the same pixels with the same weights, and no padded copy of the
    input is made. Stride-2 convolutions of EfficientNet-Lite0 at 224 px, bf16, channels_last, batch 32,
    2-core AMD EPYC (2026-12-07): 2.1-4.8x faster than padding the input (96 channels at 112x112: 100 ->
    39 ms), identical outputs. Other padding (more than one pixel apart) pads the input, and so does an ONNX
    export (a Pad node before the Conv, which onnxruntime can fuse into it).

    >>> x, w = torch.rand(1, 2, 6, 6), torch.rand(3, 2, 3, 3)
    >>> pads = same_pads((6, 6), (3, 3), (2, 2)); pads
    (0, 1, 0, 1)
    >>> torch.allclose(same_conv2d(x, w, None, (2, 2), pads), F.conv2d(F.pad(x, pads), w, None, 2))
    True
    """
    left, right, top, bottom = pads
    if (left, top) == (right, bottom):
        padding = (top, left)
    elif right - left in (0, 1) and bottom - top in (0, 1) \
            and not (torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()):  # ONNX's Conv pads unevenly
        weight = F.pad(weight, (right - left, 0, bottom - top, 0))  # a zero tap in front: windows start one earlier
        padding = (bottom, right)
    else:
        x, padding = F.pad(x, pads), (0, 0)
    if groups > 1 and groups == x.shape[1] and _bf16_autocast_on_cpu(x) and torch.is_grad_enabled() \
            and (x.requires_grad or weight.requires_grad):
        return _DepthwiseFp32Grad.apply(x, weight, bias, tuple(strides), padding, groups)
    return F.conv2d(x, weight, bias, strides, padding, 1, groups)


def _bf16_autocast_on_cpu(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu") \
        and torch.get_autocast_dtype("cpu") == torch.bfloat16


class _DepthwiseFp32Grad(torch.autograd.Function):
    """A depthwise convolution computed as autocast computes it (bf16), its gradients computed in fp32.

    oneDNN's bf16 depthwise backward is slow on CPUs without AMX: on the 2-core AMD EPYC (AVX512-BF16,
    2026-12-07), EfficientNet-Lite0's 5x5 depthwise convolutions at batch 32, channels_last: weight
    gradient 52 ms in bf16 against 10 ms in fp32 (1,152 channels at 7x7), input gradient of the stride-2
    one 62 ms against 1.6 ms (672 channels at 17x17). The gradients are fp32 gradients of the inputs as
    given (bf16 activations, fp32 weights), each returned in its input's dtype: at least as exact as bf16's.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                strides: tuple[int, int], padding: tuple[int, int], groups: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.how = (strides, padding, groups, None if bias is None else [bias.shape[0]])
        ctx.bias_dtype = None if bias is None else bias.dtype
        return F.conv2d(x, weight, bias, strides, padding, 1, groups)  # autocast still applies here

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        strides, padding, groups, bias_sizes = ctx.how
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        wants = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias_sizes is not None and ctx.needs_input_grad[2])
        dx, dw, db = torch.ops.aten.convolution_backward(
            grad.float().contiguous(memory_format=layout), x.float().contiguous(memory_format=layout), weight.float(),
            bias_sizes, list(strides), list(padding), [1, 1], False, [0, 0], groups, list(wants))
        return (None if dx is None else dx.to(x.dtype), None if dw is None else dw.to(weight.dtype),
                None if db is None else db.to(ctx.bias_dtype), None, None, None)


class DepthwiseConv(nn.Conv2d):
    """A depthwise nn.Conv2d (torchvision's MobileNetV2 and EfficientNet-B0 have them) computed through
    `same_conv2d`: the same parameters, names and function, with fp32 gradients under bf16 autocast on the
    CPU (`_DepthwiseFp32Grad`). torchvision's MobileNetV2 at 96 px, batch 32, bf16 channels_last, 2-core AMD
    EPYC (2026-12-07): 223-230 ms a training step against 269-323 ms with its own convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = int(self.padding[0]), int(self.padding[1])  # pixels: `with_depthwise_conv` takes no other padding
        return same_conv2d(x, self.weight, self.bias, (self.stride[0], self.stride[1]), (pw, pw, ph, ph), self.groups)


def with_depthwise_conv(model: nn.Module) -> nn.Module:
    """`model`, its depthwise nn.Conv2d modules (zero padding given in pixels, no dilation) replaced in place by
    `DepthwiseConv`s holding the same parameter tensors; other modules are left as they are.

    >>> net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 8, 1))
    >>> [type(m).__name__ for m in with_depthwise_conv(net)]
    ['DepthwiseConv', 'Conv2d']
    """
    for parent in list(model.modules()):
        for name, conv in list(parent.named_children()):
            if type(conv) is not nn.Conv2d or conv.groups == 1 or conv.groups != conv.in_channels \
                    or conv.padding_mode != "zeros" or isinstance(conv.padding, str) or conv.dilation != (1, 1):
                continue
            twin = DepthwiseConv(conv.in_channels, conv.out_channels, conv.kernel_size,  # type: ignore[arg-type]
                                 conv.stride, conv.padding, groups=conv.groups,  # type: ignore[arg-type]
                                 bias=conv.bias is not None, device="meta")
            twin.weight, twin.bias = conv.weight, conv.bias
            twin.train(conv.training)
            setattr(parent, name, twin)
    return model


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
    `Sequential` needs it. `name` is Keras's layer name (the model names unnamed layers
    conv2d, conv2d_1, ...). `get_config()` returns the arguments that rebuild the layer, which is
    what a saved model file stores as its architecture. `trainable = False` freezes the layer's
    weights (and, as in Keras, runs a BatchNormalization layer in inference mode).
    """

    def __init__(self, input_shape: Sequence[int] | None = None, name: str | None = None,
                 trainable: bool = True) -> None:
        super().__init__()
        self.input_shape_hwc = tuple(input_shape) if input_shape is not None else None
        self.built = False
        self.name = _check_name(name) if name is not None else None
        self.name_given = name is not None  # saved in the architecture; automatic names are made again on load
        self._trainable = bool(trainable)
        self.built_shape: Shape | None = None  # one sample's output shape, channels first
        self.inbound_nodes: list[Node] = []  # each call on symbolic tensors (the functional API), in order

    def build(self, shape: Shape) -> Shape:
        """Create weights for one sample of `shape` (channels first); return the output shape."""
        self.built = True
        self.built_input_shape = shape
        self.built_shape = self.compute_output_shape(shape)
        self.trainable = self._trainable  # weights created now take the layer's trainable flag
        return self.built_shape

    def compute_output_shape(self, shape: Shape) -> Shape:
        return shape

    keeps_order = False  # an elementwise layer: a vector's feature order (its Layout) passes through

    def symbolic_output(self, shape: Any, tensors: list[KerasTensor]) -> tuple[Any, Layout | None]:
        """Build for `shape` (the first call) or check it (a shared layer called again); return the
        output shape and, for a vector whose features are not in Keras's order, that order (see Layout)."""
        if not self.built:
            self.build(shape)
        elif shape != self.built_input_shape:
            raise CnnlabError(f"layer {self.name or type(self).__name__} was built for input shape "
                              f"{_keras_text(self.built_input_shape)} and cannot also take "
                              f"{_keras_text(shape)}; use a new layer for this input")
        layouts = {t.layout for t in tensors}
        keep = self.keeps_order and len(layouts) == 1 and self.built_shape == tensors[0].sample_shape
        return self.built_shape, (tensors[0].layout if keep else None)

    @property
    def output(self) -> Any:
        """The symbolic output of this layer's first call (Keras's `layer.output`)."""
        return self._first_node("output").outputs[0]

    @property
    def input(self) -> Any:
        """The symbolic input of this layer's first call (Keras's `layer.input`)."""
        node = self._first_node("input")
        return node.inputs if node.as_list else node.inputs[0]

    def _first_node(self, what: str) -> Node:
        if not self.inbound_nodes:
            raise CnnlabError(f"layer {self.name or type(self).__name__} has no {what} yet: it gets one when it is "
                              f"called on a model's input (functional API) or its model is built")
        return self.inbound_nodes[0]

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """Keras's output shape with the batch axis: (None, H, W, C) or (None, units)."""
        if self.built_shape is None:
            raise CnnlabError(f"layer {self.name or type(self).__name__} has no output shape yet: it is built when "
                              f"the model knows its input shape (give input_shape=(H, W, C) to the first layer)")
        return (None, *_keras_order(self.built_shape))

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        for p in self.parameters():
            p.requires_grad_(self._trainable)

    def count_params(self) -> int:
        """Weights of this layer, as Keras counts them (BatchNorm's moving statistics included)."""
        return sum(t.numel() for t in self.keras_weights())

    def keras_weights(self) -> list[torch.Tensor]:
        """This layer's weights in Keras's order and layouts (a Conv2D kernel is (kh, kw, in, out))."""
        return []

    def set_keras_weights(self, weights: Sequence[torch.Tensor]) -> None:
        """Take weights in Keras's order and layouts (what `keras_weights` returns)."""
        if weights:
            raise CnnlabError(f"layer {self.name or type(self).__name__} has no weights but got {len(weights)} arrays")

    def get_weights(self) -> list[Any]:
        """Keras's `layer.get_weights()`: NumPy arrays in Keras's order and layouts."""
        return [t.detach().cpu().numpy().copy() for t in self.keras_weights()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Keras's `layer.set_weights(arrays)`, arrays in Keras's layouts (shapes checked)."""
        self.set_keras_weights([torch.as_tensor(w) for w in weights])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args and is_symbolic(args[0]):  # the functional API: record the call, compute nothing
            return symbolic_call(self, args[0], dict(kwargs))
        if args and _is_numpy(args[0]):  # Keras's eager call on arrays: channels last in and out
            device = next((p.device for p in self.parameters()), torch.device("cpu"))
            return eager_keras_call(lambda x: self(x, **kwargs), args[0], device)
        if not self.built and args:
            first = args[0]
            if isinstance(first, torch.Tensor):
                self.build(tuple(first.shape[1:]))
                self.to(first.device)
            elif isinstance(first, (list, tuple)) and first and all(isinstance(t, torch.Tensor) for t in first):
                self.build([tuple(t.shape[1:]) for t in first])  # type: ignore[arg-type]  # a merge layer's inputs
                self.to(first[0].device)
        return call_in_mode(self, nn.Module.__call__, args, kwargs)

    def get_config(self) -> dict[str, Any]:
        return _named(self)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())


_keras_order = keras_order


def _is_numpy(value: Any) -> bool:
    """NumPy data (an array, or a list of arrays for a merge layer): Keras's channels-last eager input."""
    import numpy as np

    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(v, np.ndarray) for v in value)
    return isinstance(value, np.ndarray)


def _keras_text(shape: Any) -> str:
    """A channels-first sample shape (or a list of them) as Keras prints it: (None, H, W, C)."""
    if isinstance(shape, list):
        return "[" + ", ".join(_keras_text(s) for s in shape) + "]"
    return str((None, *keras_order(shape)))


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or not name.isprintable() or "/" in name:
        raise CnnlabError(f"a layer name must be a non-empty printable string without '/', like 'conv_1'; "
                          f"got {name!r}")
    return name


def module_key(name: str, owner: nn.Module | None = None) -> str:
    """The child-module name for a layer called `name`: torch forbids '.' (Keras's 'mobilenetv2_1.00_224') and
    names the model class already uses (a layer named 'outputs' or 'input'), which get a trailing '_'."""
    key = name.replace(".", "_")
    return key + "_" if owner is not None and hasattr(type(owner), key) else key


def _assign(target: torch.Tensor, value: object, what: str) -> None:
    """Copy `value` (array or tensor) into `target`, shapes checked."""
    tensor = torch.as_tensor(value, dtype=target.dtype)
    if tuple(tensor.shape) != tuple(target.shape):
        raise CnnlabError(f"{what}: expected an array of shape {tuple(target.shape)}, got {tuple(tensor.shape)}")
    with torch.no_grad():
        target.copy_(tensor)


def set_weights_in_order(layers: Sequence[Any], weights: Sequence[Any], where: str) -> None:
    """Hand `weights` (Keras's get_weights() list) out to `layers` in order, each taking as many as it holds."""
    counts = [len(layer.keras_weights()) for layer in layers]
    if len(weights) != sum(counts):
        raise CnnlabError(f"{where} has {sum(counts)} weight arrays (Keras's order: get_weights()) "
                          f"but got {len(weights)}")
    start = 0
    for layer, n in zip(layers, counts, strict=True):
        layer.set_weights(weights[start:start + n])
        start += n


def _expect_count(layer: Layer, weights: Sequence[object], count: int) -> None:
    if len(weights) != count:
        raise CnnlabError(f"layer {layer.name or type(layer).__name__} takes {count} weight arrays "
                          f"(Keras's order: layer.get_weights()), got {len(weights)}")


def _named(layer: Layer) -> dict[str, Any]:
    """The layer's name for its config when the user chose it (automatic names are made again on load)."""
    return {"name": layer.name} if layer.name_given else {}


INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
                "zeros", "ones", "random_normal", "random_uniform")
TRUNCATION = 0.87962566103423978  # std of a unit normal truncated at +-2: Keras divides by it so the std is right


def _initializer(name: object, what: str) -> str:
    if not isinstance(name, str) or name.lower() not in INITIALIZERS:
        raise CnnlabError(f"{what}: unknown initializer {name!r}.{did_you_mean(str(name), INITIALIZERS)} "
                          f"Use one of: {', '.join(INITIALIZERS)}.")
    return name.lower()


@torch.no_grad()
def initialize(tensor: torch.Tensor, name: str, fan_in: int, fan_out: int) -> None:
    """Fill `tensor` as Keras's initializer `name` does (the 'normal' variance-scaling ones are truncated).

    >>> w = torch.empty(64, 32); initialize(w, "he_normal", fan_in=32, fan_out=64)
    >>> bool(w.abs().max() <= 2 * 0.25 / TRUNCATION)  # std sqrt(2 / 32) = 0.25, cut at two (pre-scale) stds
    True
    """
    if name in ("zeros", "ones"):
        tensor.fill_(0.0 if name == "zeros" else 1.0)
        return
    if name in ("random_normal", "random_uniform"):  # Keras: stddev 0.05 / range +-0.05
        tensor.normal_(0.0, 0.05) if name == "random_normal" else tensor.uniform_(-0.05, 0.05)
        return
    family, dist = name.split("_")
    scale = {"glorot": 2.0 / (fan_in + fan_out), "he": 2.0 / fan_in, "lecun": 1.0 / fan_in}[family]
    if dist == "uniform":
        limit = math.sqrt(3.0 * scale)
        tensor.uniform_(-limit, limit)
    else:
        std = math.sqrt(scale) / TRUNCATION
        nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std)


def _expect_image(shape: Shape, where: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise CnnlabError(f"{where} needs image input (H, W, C) but gets a flat vector of shape "
                          f"{shape}; put it before Flatten/GlobalAveragePooling2D")
    return shape  # type: ignore[return-value]


class Conv2D(Layer):
    """2-D convolution, Keras arguments: Conv2D(filters, kernel_size, strides, padding, activation).

    >>> from cnnlab.models.sequential import Sequential
    >>> Sequential([Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1))]).layer_output_shapes()
    [(26, 26, 32)]
    """

    def __init__(self, filters: int, kernel_size: int | Sequence[int], strides: int | Sequence[int] = 1,
                 padding: str = "valid", activation: str | None = None, use_bias: bool = True,
                 input_shape: Sequence[int] | None = None, name: str | None = None, trainable: bool = True,
                 kernel_initializer: str = "glorot_uniform", bias_initializer: str = "zeros") -> None:
        super().__init__(input_shape, name, trainable)
        self.kernel_initializer = _initializer(kernel_initializer, "Conv2D kernel_initializer")
        self.bias_initializer = _initializer(bias_initializer, "Conv2D bias_initializer")
        if not isinstance(filters, int) or filters <= 0:
            raise CnnlabError(f"Conv2D: filters must be a positive int; got {filters!r}")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "Conv2D kernel_size")
        self.strides = _pair(strides, "Conv2D strides")
        self.padding = _padding(padding, "Conv2D")
        self.activation = _activation(activation, "Conv2D")
        self.use_bias = use_bias
        self.pads: tuple[int, ...] | None = (0, 0, 0, 0)  # None: 'same' on an image size known per call

    def build(self, shape: Shape) -> Shape:
        c, h, w = _expect_image(shape, "Conv2D")
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(self.filters, c, kh, kw))
        initialize(self.weight, self.kernel_initializer, fan_in=c * kh * kw, fan_out=self.filters * kh * kw)
        self.bias = nn.Parameter(torch.empty(self.filters)) if self.use_bias else None
        if self.bias is not None:
            initialize(self.bias, self.bias_initializer, fan_in=c * kh * kw, fan_out=self.filters * kh * kw)
        if self.padding == "same":
            self.pads = same_pads((h, w), self.kernel_size, self.strides)
        return super().build(shape)

    def compute_output_shape(self, shape: Shape) -> Shape:
        c, h, w = _expect_image(shape, "Conv2D")
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        oh, ow = conv_output_size(h, kh, sh, self.padding), conv_output_size(w, kw, sw, self.padding)
        if (oh is not None and oh <= 0) or (ow is not None and ow <= 0):
            raise CnnlabError(f"Conv2D: a {kh}x{kw} kernel does not fit a {h}x{w} input with padding "
                              f"'valid'; use padding='same', a smaller kernel, or a larger input")
        return (self.filters, oh, ow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, filters, H', W')
        x = self.convolve(x)
        act = ACTIVATIONS[self.activation] if self.activation else None
        return act(x) if act else x

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution without the activation (Sequential applies a ReLU after a following max-pool)."""
        return same_conv2d(x, self.weight, self.bias, self.strides,
                           input_pads(x, self.pads, self.kernel_size, self.strides))

    def keras_weights(self) -> list[torch.Tensor]:
        kernel = self.weight.detach().permute(2, 3, 1, 0)  # (out, in, kh, kw) -> Keras's (kh, kw, in, out)
        return [kernel] + ([self.bias.detach()] if self.bias is not None else [])

    def set_keras_weights(self, weights: Sequence[torch.Tensor]) -> None:
        _expect_count(self, weights, 2 if self.bias is not None else 1)
        _assign(self.weight, torch.as_tensor(weights[0]).permute(3, 2, 0, 1), f"{self.name} kernel (kh, kw, in, out)")
        if self.bias is not None:
            _assign(self.bias, weights[1], f"{self.name} bias")

    def get_config(self) -> dict[str, Any]:
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "activation": self.activation, "use_bias": self.use_bias,
                **_named(self)}


class Dense(Layer):
    """Fully connected layer: Dense(units, activation)."""

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 input_shape: Sequence[int] | None = None, name: str | None = None, trainable: bool = True,
                 kernel_initializer: str = "glorot_uniform", bias_initializer: str = "zeros") -> None:
        super().__init__(input_shape, name, trainable)
        self.kernel_initializer = _initializer(kernel_initializer, "Dense kernel_initializer")
        self.bias_initializer = _initializer(bias_initializer, "Dense bias_initializer")
        # Keras's feature k is torch's feature keras_rows[k] when the input vector is not in Keras's order
        # (a Flatten unrolls (C, H, W) where Keras unrolls (H, W, C)): Keras-layout kernels are reordered
        self.keras_rows: torch.Tensor | None = None
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
        initialize(self.weight, self.kernel_initializer, fan_in=shape[0], fan_out=self.units)
        self.bias = nn.Parameter(torch.empty(self.units)) if self.use_bias else None
        if self.bias is not None:
            initialize(self.bias, self.bias_initializer, fan_in=shape[0], fan_out=self.units)
        return super().build(shape)

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (self.units,)

    def symbolic_output(self, shape: Any, tensors: list[KerasTensor]) -> tuple[Any, Shape | None]:
        if not self.built and tensors[0].layout is not None:
            self.keras_rows = keras_index(tensors[0].layout)
        return super().symbolic_output(shape, tensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, features) -> (N, units)
        x = F.linear(x, self.weight, self.bias)
        act = ACTIVATIONS[self.activation] if self.activation else None
        return act(x) if act else x

    def keras_weights(self) -> list[torch.Tensor]:
        kernel = self.weight.detach()  # (units, in)
        if self.keras_rows is not None:  # inputs unrolled (C, H, W) here, (H, W, C) in Keras
            kernel = kernel[:, self.keras_rows]
        return [kernel.t()] + ([self.bias.detach()] if self.bias is not None else [])

    def set_keras_weights(self, weights: Sequence[torch.Tensor]) -> None:
        _expect_count(self, weights, 2 if self.bias is not None else 1)
        kernel = torch.as_tensor(weights[0])
        if kernel.ndim != 2 or tuple(kernel.shape) != (self.weight.shape[1], self.units):
            raise CnnlabError(f"{self.name} kernel: expected an array of shape {(self.weight.shape[1], self.units)} "
                              f"(in, units), got {tuple(kernel.shape)}")
        kernel = kernel.t()
        if self.keras_rows is not None:
            kernel = torch.empty_like(kernel).index_copy_(1, self.keras_rows, kernel)
        _assign(self.weight, kernel, f"{self.name} kernel")
        if self.bias is not None:
            _assign(self.bias, weights[1], f"{self.name} bias")

    def get_config(self) -> dict[str, Any]:
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias, **_named(self)}


class _Pooling2D(Layer):
    mode = "max"

    def __init__(self, pool_size: int | Sequence[int] = (2, 2), strides: int | Sequence[int] | None = None,
                 padding: str = "valid", input_shape: Sequence[int] | None = None, name: str | None = None,
                 trainable: bool = True) -> None:
        super().__init__(input_shape, name, trainable)
        name = type(self).__name__
        self.pool_size = _pair(pool_size, f"{name} pool_size")
        self.strides = _pair(strides, f"{name} strides") if strides is not None else self.pool_size
        self.padding = _padding(padding, name)
        self.pads: tuple[int, ...] | None = (0, 0, 0, 0)  # None: 'same' on an image size known per call

    def build(self, shape: Shape) -> Shape:
        _, h, w = _expect_image(shape, type(self).__name__)
        if self.padding == "same":
            self.pads = same_pads((h, w), self.pool_size, self.strides)
        return super().build(shape)

    def compute_output_shape(self, shape: Shape) -> Shape:
        c, h, w = _expect_image(shape, type(self).__name__)
        oh = conv_output_size(h, self.pool_size[0], self.strides[0], self.padding)
        ow = conv_output_size(w, self.pool_size[1], self.strides[1], self.padding)
        if (oh is not None and oh <= 0) or (ow is not None and ow <= 0):
            raise CnnlabError(f"{type(self).__name__}: a {self.pool_size} window does not fit a {h}x{w} "
                              f"input; remove a pooling layer or use a larger input")
        return (c, oh, ow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H', W')
        pads = input_pads(x, self.pads, self.pool_size, self.strides)
        if not any(pads):  # 'valid', or 'same' that needs no padding: skip the copy F.pad makes
            pool = F.max_pool2d if self.mode == "max" else F.avg_pool2d
            return pool(x, self.pool_size, self.strides)
        if self.mode == "max":  # padded cells never win the max
            return F.max_pool2d(F.pad(x, pads, value=-math.inf), self.pool_size, self.strides)
        # Keras averages over real pixels only: divide window sums by window counts
        ones = torch.ones_like(x[:1, :1])
        total = F.avg_pool2d(F.pad(x, pads), self.pool_size, self.strides)
        count = F.avg_pool2d(F.pad(ones, pads), self.pool_size, self.strides)
        return total / count

    def get_config(self) -> dict[str, Any]:
        return {"pool_size": list(self.pool_size), "strides": list(self.strides), "padding": self.padding,
                **_named(self)}


class MaxPooling2D(_Pooling2D):
    """Max pooling: MaxPooling2D((2, 2)) halves height and width."""

    mode = "max"


class AveragePooling2D(_Pooling2D):
    """Average pooling: AveragePooling2D((2, 2)); 'same' padding averages real pixels only."""

    mode = "avg"


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W)."""

    def compute_output_shape(self, shape: Shape) -> Shape:
        if any(d is None for d in shape):
            raise CnnlabError(f"Flatten needs a known image size but gets {_keras_text(shape)}; give the model "
                              f"an input_shape=(H, W, C), or use GlobalAveragePooling2D(), which takes any size")
        return (math.prod(shape),)

    def symbolic_output(self, shape: Any, tensors: list[KerasTensor]) -> tuple[Any, Layout | None]:
        out, _ = super().symbolic_output(shape, tensors)
        return out, ((tuple(shape),) if len(shape) == 3 else tensors[0].layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)


class GlobalAveragePooling2D(Layer):
    """(N, C, H, W) -> (N, C): the mean of each feature map."""

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (_expect_image(shape, "GlobalAveragePooling2D")[0],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Dropout(Layer):
    """Dropout(rate): zeroes a fraction of activations while training, none at inference.

    `noise_shape=(None, 1, 1, 1)` (Keras's form) drops whole samples: EfficientNet's stochastic depth.
    """

    def __init__(self, rate: float, noise_shape: Sequence[int | None] | None = None,
                 input_shape: Sequence[int] | None = None, name: str | None = None, trainable: bool = True) -> None:
        super().__init__(input_shape, name, trainable)
        if not 0.0 <= rate < 1.0:
            raise CnnlabError(f"Dropout: rate must be in [0, 1); got {rate!r}")
        if noise_shape is not None and any(d not in (None, 1) for d in list(noise_shape)[1:]):
            raise CnnlabError(f"Dropout: noise_shape {noise_shape!r} is not supported; use None or (None, 1, 1, 1) "
                              f"(one draw per sample)")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else list(noise_shape)

    keeps_order = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise_shape is None or not self.training or self.rate == 0.0:
            return F.dropout(x, self.rate, self.training)
        keep = F.dropout(torch.ones(x.shape[0], *[1] * (x.ndim - 1), device=x.device, dtype=x.dtype), self.rate)
        return x * keep  # one draw per sample, scaled by 1 / (1 - rate) as Keras does

    def get_config(self) -> dict[str, Any]:
        shape = {"noise_shape": self.noise_shape} if self.noise_shape is not None else {}
        return {"rate": self.rate, **shape, **_named(self)}


class Activation(Layer):
    """Activation('relu') as a layer of its own."""

    def __init__(self, activation: str, input_shape: Sequence[int] | None = None, name: str | None = None,
                 trainable: bool = True) -> None:
        super().__init__(input_shape, name, trainable)
        self.activation = _activation(activation, "Activation")

    keeps_order = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation] if self.activation else None
        return act(x) if act else x

    def get_config(self) -> dict[str, Any]:
        return {"activation": self.activation, **_named(self)}


class BatchNormalization(Layer):
    """Batch normalization over channels (images) or features (vectors), Keras defaults.

    Keras counts the moving mean and variance as (non-trainable) parameters; so does our
    summary. momentum=0.99 is Keras's (the running average keeps 99% of its old value), which is
    torch's momentum 0.01.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3,
                 input_shape: Sequence[int] | None = None, name: str | None = None, trainable: bool = True) -> None:
        super().__init__(input_shape, name, trainable)
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
        # A frozen BatchNorm layer normalizes with its moving statistics and leaves them alone (Keras 2+)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training and self.trainable, 1.0 - self.momentum, self.epsilon)

    def keras_weights(self) -> list[torch.Tensor]:
        return [self.weight.detach(), self.bias.detach(), self.running_mean, self.running_var]  # gamma, beta, ...

    def set_keras_weights(self, weights: Sequence[torch.Tensor]) -> None:
        _expect_count(self, weights, 4)
        for target, value, what in zip((self.weight, self.bias, self.running_mean, self.running_var), weights,
                                       ("gamma", "beta", "moving_mean", "moving_variance"), strict=True):
            _assign(target, value, f"{self.name} {what}")

    def get_config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "epsilon": self.epsilon, **_named(self)}


def _keras_name(cls_name: str) -> str:
    """Conv2D -> conv2d, MaxPooling2D -> max_pooling2d, BatchNormalization -> batch_normalization."""
    out = ""
    for i, ch in enumerate(cls_name):
        if ch.isupper() and i and not cls_name[i - 1].isupper() and not cls_name[i - 1].isdigit():
            out += "_"
        out += ch.lower()
    return out


class InputLayer(Layer):
    """A model's input (Keras's InputLayer): `Input(shape=(28, 28, 1))` is its symbolic output.

    `shape` is one sample's, (H, W, C) (H and W may be None: any image size) or (features,).

    >>> InputLayer(shape=(28, 28, 1)).output.shape
    (None, 28, 28, 1)
    """

    def __init__(self, shape: Sequence[int | None] | None = None, batch_size: int | None = None,
                 name: str | None = None, input_shape: Sequence[int | None] | None = None, **ignored: Any) -> None:
        super().__init__(None, name)
        given = shape if shape is not None else input_shape
        hwc = tuple(given) if isinstance(given, (list, tuple)) else None
        valid = hwc is not None and (
            (len(hwc) == 3 and all(d is None or (isinstance(d, int) and d > 0) for d in hwc[:2])
             and isinstance(hwc[2], int) and hwc[2] > 0)
            or (len(hwc) == 1 and isinstance(hwc[0], int) and hwc[0] > 0))
        if not valid or hwc is None:
            raise CnnlabError(f"Input: shape must be (height, width, channels) like (28, 28, 1) (height and width "
                              f"may be None), or (features,); got {given!r}")
        self.shape = (None, *hwc)
        sample = (hwc[2], hwc[0], hwc[1]) if len(hwc) == 3 else hwc
        self.built, self.built_input_shape, self.built_shape = True, sample, sample
        node = Node(self, [], False)
        node.outputs.append(KerasTensor(sample, node))
        self.inbound_nodes.append(node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def get_config(self) -> dict[str, Any]:
        return {"shape": list(self.shape[1:]), **_named(self)}


LAYER_TYPES: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (
    Conv2D, Dense, MaxPooling2D, AveragePooling2D, Flatten, Dropout, BatchNormalization,
    GlobalAveragePooling2D, Activation, InputLayer)}


def register_layer(cls: Any) -> Any:
    """Make a layer class rebuildable from a model file's architecture (by its class name)."""
    known = LAYER_TYPES.get(cls.__name__, cls)
    same_source = getattr(sys.modules.get(known.__module__), "__file__", None) == \
        getattr(sys.modules.get(cls.__module__), "__file__", None)  # the same file imported twice (doctests)
    if known is not cls and not same_source:
        raise CnnlabError(f"two layer classes are called {cls.__name__}; give yours another name")
    LAYER_TYPES[cls.__name__] = cls
    return cls


def _layer_config(layer: nn.Module) -> dict[str, Any]:
    config = getattr(layer, "get_config", None)
    if LAYER_TYPES.get(type(layer).__name__) is None or not callable(config):
        raise CnnlabError(f"cannot describe {type(layer).__name__} in a model file: only cnnlab layers and "
                          f"models can be saved as an architecture")
    return {"class": type(layer).__name__, **config()}


def layer_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a layer from `{"class": "Conv2D", ...arguments}` (what a model file stores)."""
    args = dict(config)
    cls_name = args.pop("class", None)
    cls = LAYER_TYPES.get(str(cls_name))
    if cls is None:
        raise CnnlabError(f"unknown layer type {cls_name!r} in the architecture."
                          f"{did_you_mean(str(cls_name), LAYER_TYPES)}")
    from_config = getattr(cls, "from_config", None)
    return from_config(args) if callable(from_config) else cls(**args)


def any_trainable(model: nn.Module) -> bool:
    """Keras's `model.trainable`: True while any weight trains (or there are none)."""
    params = list(model.parameters())
    return not params or any(p.requires_grad for p in params)


def set_trainable(model: nn.Module, value: bool) -> None:
    """Keras's `model.trainable = value`: each layer's flag (a frozen BatchNorm also normalizes as at inference)."""
    for layer in model.children():
        if hasattr(layer, "trainable"):
            layer.trainable = value  # type: ignore[assignment]
        else:  # a plain torch module
            layer.requires_grad_(value)


def call_in_mode(module: nn.Module, call: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`call(module, *args)`; with Keras's `training=True/False`, in that mode for this call only."""
    training = kwargs.pop("training", None)
    if training is None or bool(training) == module.training:
        return call(module, *args, **kwargs)
    was = module.training
    module.train(bool(training))
    try:
        return call(module, *args, **kwargs)
    finally:
        module.train(was)
