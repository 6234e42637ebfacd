"""Symbolic tensors: what Keras's functional API passes between layers before any data flows.

    inputs = Input(shape=(32, 32, 3))          # a KerasTensor: shape (None, 32, 32, 3), no values
    x = Conv2D(16, 3)(inputs)                  # calling a layer on it builds the layer and records a Node
    model = Functional(inputs, x)              # models/graph.py walks the Nodes back from the outputs

A `KerasTensor` holds one sample's shape, channels first as the layers build with it ((C, H, W) or
(features,); H and W may be None when the model takes any image size), and the `Node` (one call of a
layer) that produced it. Nothing here computes; models/graph.py turns the recorded calls into one
`nn.Module` whose forward runs them in order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError

__all__ = ["KerasTensor", "Node", "symbolic_call", "is_symbolic", "flat_tensors", "keras_order", "Layout",
           "keras_index", "joined_layout", "KerasArray", "eager_keras_call", "channels_last", "traced_shape"]

Shape = tuple[Any, ...]  # one sample's shape, channels first; an image's H and W may be None
# How a vector's features are ordered, where that differs from Keras's: segments in order, each an int n
# (n features, same order as Keras) or a (C, H, W) image unrolled channels first (Keras unrolls (H, W, C)).
# cnnlab's Flatten keeps torch's order (a copy-free view, and every saved model relies on it); Dense and
# Reshape use the layout to read and write Keras-layout weights and values exactly as Keras orders them.
Layout = tuple[Any, ...]
_CALLS = itertools.count()  # global call order: a model names its unnamed layers in the order they were called


def keras_order(shape: Shape) -> Shape:
    """(C, H, W) -> (H, W, C); vectors unchanged.

    >>> keras_order((3, 32, 32)), keras_order((10,))
    ((32, 32, 3), (10,))
    """
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else tuple(shape)


class KerasTensor:
    """A symbolic batch: `shape` as Keras prints it ((None, H, W, C)), the producing call in `node`."""

    dtype = "float32"

    def __init__(self, sample_shape: Shape, node: Node | None = None, index: int = 0,
                 layout: Layout | None = None) -> None:
        self.sample_shape = tuple(sample_shape)  # channels first, without the batch axis
        self.node = node
        self.index = index  # which of the node's outputs
        self.layout = layout  # a vector's feature order where it differs from Keras's (see Layout)

    @property
    def shape(self) -> tuple[Any, ...]:
        return (None, *keras_order(self.sample_shape))

    @property
    def ndim(self) -> int:
        return len(self.sample_shape) + 1

    @property
    def name(self) -> str:
        return self.node.layer_name if self.node is not None else "keras_tensor"

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}, dtype=float32, sparse=False, name={self.name}>"

    def __bool__(self) -> bool:
        raise CnnlabError("a KerasTensor (a layer's symbolic output) has no value to test with `if`; it only "
                          "describes a shape. Build the model with Model(inputs, outputs), then call it on data")


@dataclass(eq=False)
class Node:
    """One call of `layer` on symbolic `inputs` (as given: a tensor or a list), producing `outputs`."""

    layer: nn.Module
    inputs: list[KerasTensor]
    as_list: bool                   # the layer was called on a list (merge layers), not one tensor
    outputs: list[KerasTensor] = field(default_factory=list)
    training: bool | None = None    # `layer(x, training=False)`: this call always runs in inference mode
    order: int = field(default_factory=lambda: next(_CALLS))

    @property
    def layer_name(self) -> str:
        return str(getattr(self.layer, "name", None) or type(self.layer).__name__.lower())

    @property
    def parents(self) -> list[Node]:
        return [t.node for t in self.inputs if t.node is not None]


def is_symbolic(value: object) -> bool:
    """True for a KerasTensor or a non-empty list/tuple of them (what a merge layer is called on)."""
    if isinstance(value, KerasTensor):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, KerasTensor) for v in value)


def flat_tensors(value: KerasTensor | Sequence[KerasTensor]) -> list[KerasTensor]:
    return [value] if isinstance(value, KerasTensor) else list(value)


def symbolic_call(layer: nn.Module, inputs: KerasTensor | Sequence[KerasTensor],
                  kwargs: dict[str, Any]) -> KerasTensor | list[KerasTensor]:
    """Record `layer(inputs)` on symbolic tensors: build the layer for their shapes, return its output(s).

    The layer says what it makes through `symbolic_output(shapes, tensors)` -> (output shapes, layout);
    a plain torch module is traced with a zero sample.
    """
    training = kwargs.pop("training", None)
    kwargs.pop("mask", None)
    if kwargs:
        raise CnnlabError(f"layer {getattr(layer, 'name', type(layer).__name__)}: unexpected call arguments "
                          f"{sorted(kwargs)}; a layer is called on its input tensor(s) (and training=)")
    tensors = flat_tensors(inputs)
    as_list = not isinstance(inputs, KerasTensor)
    shapes: Any = [t.sample_shape for t in tensors] if as_list else tensors[0].sample_shape
    describe = getattr(layer, "symbolic_output", None)
    if describe is not None:
        out_shapes, layout = describe(shapes, tensors)
    else:
        out_shapes, layout = traced_shape(layer, shapes), None
    node = Node(layer, tensors, as_list, training=training if training is None else bool(training))
    several = isinstance(out_shapes, list)
    for i, shape in enumerate(out_shapes if several else [out_shapes]):
        node.outputs.append(KerasTensor(shape, node, i, layout))
    nodes = getattr(layer, "inbound_nodes", None)
    if isinstance(nodes, list):
        nodes.append(node)
    return node.outputs if several else node.outputs[0]


def traced_shape(module: nn.Module, shape: Any) -> Shape:
    """One sample's output shape of a plain torch module, from a zero sample in eval mode (mode restored)."""
    if isinstance(shape, list) or any(d is None for d in shape):
        raise CnnlabError(f"{type(module).__name__} is a plain torch module: it can be called on one input of a "
                          f"known size only; wrap it in a Lambda layer or give the model a fixed input_shape")
    was = module.training
    with torch.no_grad():
        out = module.eval()(torch.zeros(1, *shape))
    module.train(was)
    return tuple(out.shape[1:])


def keras_index(layout: Layout) -> torch.Tensor:
    """For a vector ordered as `layout`: index[k] is the position of Keras's k-th feature.

    >>> keras_index(((2, 1, 2), 1)).tolist()  # a 2-channel 1x2 image unrolled channels first, then 1 feature
    [0, 2, 1, 3, 4]
    """
    parts, offset = [], 0
    for segment in layout:
        if isinstance(segment, int):
            parts.append(torch.arange(offset, offset + segment))
            offset += segment
        else:
            c, h, w = segment
            parts.append(offset + torch.arange(c * h * w).reshape(c, h, w).permute(1, 2, 0).reshape(-1))
            offset += c * h * w
    return torch.cat(parts)


def joined_layout(tensors: list[KerasTensor]) -> Layout | None:
    """The layout of vectors joined end to end (Concatenate), None when every part is in Keras's order."""
    if all(t.layout is None for t in tensors) or any(len(t.sample_shape) != 1 for t in tensors):
        return None
    return tuple(seg for t in tensors for seg in (t.layout if t.layout is not None else (t.sample_shape[0],)))


class KerasArray(np.ndarray):
    """A NumPy array that also answers tf's `.numpy()`, as Keras's eager tensors do: what a layer or model
    returns for NumPy input (channels last) and what datasets yield (`images[i].numpy().astype("uint8")`).

    >>> batch = np.zeros((2, 4, 4, 3), np.float32).view(KerasArray)
    >>> type(batch[0].numpy()).__name__, batch[0].numpy().shape
    ('ndarray', (4, 4, 3))
    """

    def numpy(self) -> np.ndarray:
        return np.asarray(self)


def _to_channels_first(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_to_channels_first(v) for v in value]
    tensor = torch.as_tensor(np.asarray(value, dtype=np.float32))
    return tensor.permute(0, 3, 1, 2).contiguous() if tensor.ndim == 4 else tensor


def channels_last(value: Any) -> Any:
    """A model's output as Keras returns it: NumPy, channels last for feature maps (a list for several outputs)."""
    if isinstance(value, (list, tuple)):
        return [channels_last(v) for v in value]
    out = value.detach().float().cpu()
    return (out.permute(0, 2, 3, 1) if out.ndim == 4 else out).numpy()


def eager_keras_call(call: Any, value: Any, device: torch.device) -> Any:
    """`call` on NumPy data the Keras way: images channels last in and out ((N, H, W, C)), results as KerasArray."""
    inputs = _to_channels_first(value)
    moved = [t.to(device) for t in inputs] if isinstance(inputs, list) else inputs.to(device)
    with torch.no_grad():
        out = channels_last(call(moved))
    return [o.view(KerasArray) for o in out] if isinstance(out, list) else out.view(KerasArray)
