"""Stacks of layers: Keras's Sequential and cnnlab's residual block, built from models/layers.py's layers.

    model = Sequential([
        Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(10, activation="softmax"),
    ])

A Sequential builds its layers as soon as it knows the input shape, by calling each on the previous
one's symbolic output (models/symbolic.py), so shapes, names and `layer.output` exist before any data.
The result is an ordinary `nn.Sequential`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.layers import (
    ACTIVATIONS, Activation, BatchNormalization, Conv2D, InputLayer, Layer, MaxPooling2D, Shape, _activation,
    _check_name, _keras_name, _keras_order, _keras_text, _layer_config, _named, call_in_mode, layer_from_config,
    module_key, register_layer, set_weights_in_order,
)
from cnnlab.models.symbolic import (
    KerasTensor, Layout, Node, is_symbolic, keras_order, symbolic_call, traced_shape,
)

__all__ = ["Sequential", "Residual", "ResidualBlock"]


class Residual(Layer):
    """A residual connection (Keras's Add): output = activation(body(x) + shortcut(x)).

    The shortcut is the identity, or the given layers (e.g. a strided 1x1 Conv2D when the body
    changes the shape). Shapes of both branches must match.
    """

    def __init__(self, body: Sequence[Layer], shortcut: Sequence[Layer] = (), activation: str | None = "relu",
                 input_shape: Sequence[int] | None = None, name: str | None = None, trainable: bool = True) -> None:
        super().__init__(input_shape, name, trainable)
        self.body = _named_stack(body)
        self.shortcut = _named_stack(shortcut)
        self.activation = _activation(activation, "Residual")

    def build(self, shape: Shape) -> Shape:
        out = _build_stack(self.body, shape)
        skip = _build_stack(self.shortcut, shape)
        if out != skip:
            raise CnnlabError(f"Residual: the body gives shape {out} but the shortcut gives {skip} (C, H, W); "
                              f"add a shortcut such as Conv2D(filters, 1, strides=...) to match them")
        self.built, self.built_input_shape, self.built_shape = True, shape, out
        self.trainable = self._trainable
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x) + self.shortcut(x)
        act = ACTIVATIONS[self.activation] if self.activation else None
        return act(y) if act else y

    def get_config(self) -> dict[str, Any]:
        return {"body": [_layer_config(m) for m in self.body], "shortcut": [_layer_config(m) for m in self.shortcut],
                "activation": self.activation, **_named(self)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Residual:
        args = dict(config)
        body = [layer_from_config(c) for c in args.pop("body")]
        shortcut = [layer_from_config(c) for c in args.pop("shortcut")]
        return cls(body, shortcut, **args)  # type: ignore[arg-type]

    def keras_weights(self) -> list[torch.Tensor]:
        return [w for layer in (*self.body, *self.shortcut) for w in layer.keras_weights()]  # type: ignore[operator]

    def set_keras_weights(self, weights: Sequence[torch.Tensor]) -> None:
        set_weights_in_order([*self.body, *self.shortcut], weights, f"layer {self.name}")


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


def _named_stack(layers: Sequence[Layer]) -> nn.Sequential:
    named: OrderedDict[str, nn.Module] = OrderedDict()
    for layer in layers:
        if not isinstance(layer, nn.Module):
            raise CnnlabError(f"expected a layer such as Conv2D(...) but got {layer!r}")
        name = _unique_name(layer, named)
        if isinstance(layer, Layer):
            layer.name = name
        named[name] = layer
    return nn.Sequential(named)


def _build_stack(stack: Iterable[nn.Module], shape: Shape) -> Shape:
    for layer in stack:
        if isinstance(layer, Layer):
            shape = layer.build(shape) if not layer.built else layer.built_shape or shape
        else:  # a plain torch module: trace its shape with a dummy sample
            shape = traced_shape(layer, shape)
    return shape


class Sequential(nn.Sequential):
    """A stack of layers, as Keras's Sequential: from a list, or grown with `add` (and `pop`).

    The stack is built (weights created, shapes known) as soon as it knows its input shape:
    from the first layer's `input_shape`, from `input_shape=`, or later from `build((H, W, C))`.
    Children are named as Keras names them (conv2d, max_pooling2d, conv2d_1, ...) unless a
    layer has a `name`, so the summary reads like the tutorials'. `output_kind` says whether
    the last layer emits probabilities (a softmax or sigmoid) or logits, read from the last layer
    every time: the loss and `predict` use it.

    >>> from cnnlab.models.layers import Conv2D, Dense, Flatten
    >>> m = Sequential([Conv2D(8, 3, input_shape=(28, 28, 1)), Flatten()])
    >>> m.add(Dense(10, activation="softmax"))
    >>> m(torch.zeros(2, 1, 28, 28)).shape, m.output_kind, m.image_shape
    (torch.Size([2, 10]), 'probabilities', (28, 28, 1))
    """

    def __init__(self, layers: Sequence[Layer] = (), input_shape: Sequence[int] | None = None,
                 name: str | None = None) -> None:
        super().__init__()
        self.name = _check_name(name) if name is not None else "sequential"
        self.image_shape: tuple[int, int, int] | None = None  # (H, W, C), once known
        self.tensors: list[KerasTensor] = []  # once built: the symbolic input, then each layer's output
        self.inbound_nodes: list[Node] = []  # calls of this model as a layer of a functional model
        if isinstance(layers, nn.Module) or isinstance(layers, (str, bytes)):
            raise CnnlabError(f"Sequential takes a list of layers, like Sequential([Conv2D(...), ...]); "
                              f"got {type(layers).__name__}")
        if input_shape is not None:
            self.build(input_shape)
        for layer in layers:
            self.add(layer)

    @property
    def built(self) -> bool:
        return self.image_shape is not None

    @property
    def shapes(self) -> list[Shape]:
        """Each layer's output shape for one sample, channels first."""
        return [t.sample_shape for t in self.tensors[1:]]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args and is_symbolic(args[0]):  # used as a layer of a functional model
            return symbolic_call(self, args[0], dict(kwargs))
        return call_in_mode(self, nn.Sequential.__call__, args, kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each layer in turn, as nn.Sequential; a ReLU directly followed by a max-pool runs after the pool.

        max(relu(a), relu(b)) == relu(max(a, b)), and the gradients are the same too (both reach the window's
        first largest input, when it is positive), so a Conv2D(activation='relu') or Activation('relu') before
        MaxPooling2D applies its ReLU to the pooled tensor, a quarter of the size. Seed 004's CNN, bf16, 2-core
        AMD EPYC VMs, 2026-12-07: 3-5% faster a step on a Zen 5, 8-9% on a Zen 4 (benchmarks/README.md). Layers
        with hooks (feature maps, Grad-CAM, the explorer) run one by one, so every hook sees the layer's own output.
        """
        layers = list(self._modules.values())
        i = 0
        while i < len(layers):
            layer = layers[i]
            if i + 1 < len(layers) and _relu_then_max_pool(layer, layers[i + 1]):
                before = layer.convolve(x) if isinstance(layer, Conv2D) else x
                x = F.relu(layers[i + 1](before))
                i += 2
            else:
                x = layer(x)
                i += 1
        return x

    def symbolic_output(self, shape: Any, tensors: list[KerasTensor]) -> tuple[Any, Layout | None]:
        if isinstance(shape, list) or len(shape) != 3:
            raise CnnlabError(f"{self.name} takes one image input (H, W, C) but is called on "
                              f"{_keras_text(shape)}")
        self.build(keras_order(shape))
        last = self.tensors[-1]
        return last.sample_shape, last.layout

    @property
    def input(self) -> KerasTensor:
        """The model's symbolic input (Keras's `model.input`), once built."""
        self.require_built("input")
        return self.tensors[0]

    @property
    def output(self) -> KerasTensor:
        """The last layer's symbolic output (Keras's `model.output`)."""
        self.require_built("output")
        return self.tensors[-1]

    @property
    def inputs(self) -> list[KerasTensor]:
        return [self.input]

    @property
    def outputs(self) -> list[KerasTensor]:
        return [self.output]

    @property
    def output_kind(self) -> str:
        """'probabilities' when the last layer is a softmax or sigmoid, else 'logits'."""
        last = self[-1] if len(self) else None
        return "probabilities" if getattr(last, "activation", None) in ("softmax", "sigmoid") else "logits"

    def add(self, layer: Layer) -> None:
        """Append a layer (built at once when the input shape is known)."""
        if not isinstance(layer, nn.Module):
            raise CnnlabError(f"Sequential.add expects a layer such as Conv2D(...) but got {layer!r}")
        if not len(self) and not self.built:  # the first layer may know the input shape
            given = getattr(layer, "input_shape_hwc", None) or getattr(layer, "image_shape", None)
            if given is not None:  # input_shape=(H, W, C), or a built model (Keras's nested augmentation)
                self.build(given)
        name = _unique_name(layer, self._modules)
        if isinstance(layer, Layer) or isinstance(getattr(layer, "name", None), str):
            layer.name = name
        self.add_module(module_key(name, self), layer)
        if self.built:
            self._build_layer(layer)

    def append(self, module: nn.Module) -> Sequential:
        """torch's name for `add` (built and named the same way)."""
        self.add(module)  # type: ignore[arg-type]
        return self

    def pop(self, key: int | slice = -1) -> nn.Module:  # type: ignore[override]
        """Remove and return the last layer (Keras's pop takes no argument)."""
        if key != -1:
            raise CnnlabError("Sequential.pop removes the last layer only; build a new model to drop others")
        if not len(self):
            raise CnnlabError("Sequential.pop: the model has no layers to remove")
        name = list(self._modules)[-1]
        layer = self._modules.pop(name)
        if len(self.tensors) > 1:
            node = self.tensors.pop().node
            nodes = getattr(layer, "inbound_nodes", None)
            if isinstance(nodes, list) and node in nodes:
                nodes.remove(node)
        return layer

    def build(self, input_shape: Sequence[int]) -> None:
        """Create every layer's weights for images of `input_shape` = (H, W, C)."""
        hwc = tuple(input_shape)
        if len(hwc) == 4 and hwc[0] is None:  # Keras also accepts (None, H, W, C)
            hwc = hwc[1:]
        if len(hwc) != 3 or not all(isinstance(v, int) and v > 0 for v in hwc):
            raise CnnlabError(f"input_shape must be (height, width, channels) like (28, 28, 1); got {hwc!r}")
        if self.built:
            if hwc != self.image_shape:
                raise CnnlabError(f"{self.name} was built for input shape {self.image_shape} (H, W, C) and cannot "
                                  f"take {hwc}; build a new model for this input")
            return
        self.image_shape = hwc  # type: ignore[assignment]
        self.tensors = [InputLayer(shape=hwc).output]
        for layer in self:
            self._build_layer(layer)

    def _build_layer(self, layer: nn.Module) -> None:
        """Call `layer` on the last symbolic output: builds it and records the chain (model.output, layer.output)."""
        out = symbolic_call(layer, self.tensors[-1], {})
        if not isinstance(out, KerasTensor):
            raise CnnlabError(f"{self.name}: layer {getattr(layer, 'name', '?')} has {len(out)} outputs; a "
                              f"Sequential passes one tensor from layer to layer (use the functional API)")
        self.tensors.append(out)

    def require_built(self, where: str) -> tuple[int, int, int]:
        """The input shape (H, W, C), or a one-line error naming `where`."""
        if self.image_shape is None:
            raise CnnlabError(f"{where}: {self.name} does not know its input shape yet; give the first layer "
                              f"input_shape=(H, W, C) (e.g. Conv2D(32, 3, input_shape=(28, 28, 1))), or call "
                              f"model.build((H, W, C)) or fit it on data first")
        if not len(self):
            raise CnnlabError(f"{where}: {self.name} has no layers; add some with model.add(...)")
        return self.image_shape

    def layer_output_shapes(self) -> list[tuple[int, ...]]:
        """Each layer's output shape for one sample, as Keras prints it: (H, W, C) or (units,)."""
        return [_keras_order(s) for s in self.shapes]

    def get_config(self) -> dict[str, Any]:
        named = {"name": self.name} if self.name != "sequential" else {}
        return {"input_shape": list(self.require_built("save")), "layers": [_layer_config(m) for m in self],
                **named}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        return cls([layer_from_config(c) for c in config["layers"]],  # type: ignore[misc]
                   input_shape=config["input_shape"], name=config.get("name"))


def _relu_then_max_pool(layer: nn.Module, after: nn.Module) -> bool:
    """Whether `layer` ends in a ReLU, `after` is a built max-pool and neither is hooked: pool, then ReLU."""
    relu = isinstance(layer, (Conv2D, Activation)) and layer.activation == "relu" and layer.built
    return relu and isinstance(after, MaxPooling2D) and after.built and not _hooked(layer) and not _hooked(after)


def _hooked(module: nn.Module) -> bool:
    """Whether a hook watches `module`'s call (its own hooks, or torch's global module hooks)."""
    own = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)
    everyone = (nn.modules.module._global_forward_hooks, nn.modules.module._global_forward_pre_hooks,
                nn.modules.module._global_backward_hooks, nn.modules.module._global_backward_pre_hooks)
    return any(own) or any(everyone)


def _unique_name(layer: nn.Module, taken: dict[str, Any]) -> str:
    """The layer's own name, else Keras's automatic one: conv2d, conv2d_1, conv2d_2, ...

    A nested model keeps its name ('mobilenetv2_1.00_224'), numbered if another child has it."""
    own = getattr(layer, "name", None)
    if getattr(layer, "name_given", False):
        if module_key(str(own)) in taken:
            raise CnnlabError(f"two layers are named {own!r}; layer names in a model must be unique")
        return str(own)
    base = own if isinstance(own, str) and not isinstance(layer, Layer) else _keras_name(type(layer).__name__)
    name, count = base, 0
    while module_key(name) in taken:
        count += 1
        name = f"{base}_{count}"
    return name



register_layer(Sequential)
register_layer(Residual)
