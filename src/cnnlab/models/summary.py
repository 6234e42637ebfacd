"""Keras-style model summary: each layer's name, output shape and parameter count.

One code path for every model: a forward pass on a zero batch with hooks on the layers. cnnlab
layers are rows of their own (a Residual block is one row); other modules, such as torchvision's,
contribute their leaf modules. Counting follows Keras so the numbers match the tutorials: the
moving mean and variance of BatchNorm are parameters, non-trainable; frozen weights are
non-trainable too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from cnnlab.errors import CnnlabError, first_line
from cnnlab.models.layers import Layer
from cnnlab.models.sequential import Sequential

__all__ = ["LayerRow", "Summary", "model_summary", "count_parameters", "layer_modules"]

# Buffers Keras counts as (non-trainable) weights: BatchNorm's moving statistics, Normalization's statistics
MOVING_STATS = ("running_mean", "running_var", "norm_mean", "norm_variance", "norm_count")


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]  # one sample, Keras order: (H, W, C) or (features,)
    params: int


@dataclass
class Summary:
    """What `model_summary` measured; `str(summary)` is the printed table."""

    rows: list[LayerRow] = field(default_factory=list)
    total: int = 0
    trainable: int = 0
    non_trainable: int = 0
    input_shape: tuple[int, int, int] = (0, 0, 0)

    def __str__(self) -> str:
        width = max([len(f"{r.name} ({r.kind})") for r in self.rows] + [28]) + 2
        lines = [f"{'Layer (type)':<{width}}{'Output Shape':<22}{'Param #':>12}", "=" * (width + 34)]
        for r in self.rows:
            shape = "(None, " + ", ".join(str(d) for d in r.output_shape) + ")"
            lines.append(f"{r.name + ' (' + r.kind + ')':<{width}}{shape:<22}{r.params:>12,}")
        lines += ["=" * (width + 34), f"Total params: {self.total:,}", f"Trainable params: {self.trainable:,}",
                  f"Non-trainable params: {self.non_trainable:,}"]
        return "\n".join(lines)


def _own_count(module: nn.Module, seen: set[int]) -> int:
    """Parameters + moving statistics of a module's subtree not counted in an earlier row."""
    total = 0
    tensors = list(module.parameters()) + [b for n, b in module.named_buffers() if n.split(".")[-1] in MOVING_STATS]
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel()
    return total


def count_parameters(model: nn.Module) -> tuple[int, int, int]:
    """(total, trainable, non_trainable), Keras-style (BatchNorm moving stats are non-trainable).

    >>> from cnnlab.models.zoo import build_model
    >>> count_parameters(build_model("seed-mnist"))
    (121930, 121930, 0)
    """
    params = {id(p): p for p in model.parameters()}
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    frozen = sum(p.numel() for p in params.values() if not p.requires_grad)
    stats = sum(b.numel() for n, b in model.named_buffers() if n.split(".")[-1] in MOVING_STATS)
    return trainable + frozen + stats, trainable, frozen + stats


def layer_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The summary's rows: (name, module) for each cnnlab layer, and each leaf of other modules.

    >>> from cnnlab.models.zoo import build_model
    >>> [name for name, _ in layer_modules(build_model("seed-mnist"))][:3]
    ['conv2d', 'max_pooling2d', 'conv2d_1']
    """
    rows: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        children = list(module.named_children())
        if isinstance(module, Layer) or not children:
            rows.append((prefix or type(module).__name__.lower(), module))
            return
        for name, child in children:
            walk(f"{prefix}.{name}" if prefix else name, child)

    walk("", model)
    return rows


def _keras_shape(shape: Sequence[int]) -> tuple[int, ...]:
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else tuple(shape)


def model_summary(model: nn.Module, input_shape: Sequence[int] | None = None,
                  print_fn: Callable[[str], None] | None = None) -> Summary:
    """Trace a zero batch through `model`; return (and optionally print) the per-layer table.

    `input_shape` is (H, W, C); a cnnlab `Sequential` knows its own.

    >>> from cnnlab.models.zoo import build_model
    >>> s = model_summary(build_model("seed-mnist"))
    >>> s.rows[0].output_shape, s.rows[0].params, s.total
    ((26, 26, 32), 320, 121930)
    """
    if input_shape is None and isinstance(model, Sequential):
        input_shape = model.require_built("summary")
    hwc = tuple(input_shape) if input_shape is not None else getattr(model, "image_shape", None)
    if hwc is None or len(hwc) != 3:
        raise CnnlabError(f"model_summary needs input_shape=(H, W, C) for {type(model).__name__}; got {hwc!r}")
    summary = Summary(input_shape=hwc)  # type: ignore[arg-type]
    seen: set[int] = set()
    handles = []
    for name, module in layer_modules(model):
        def hook(mod: nn.Module, args: object, out: object, _name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                shape = _keras_shape(tuple(out.shape[1:]))
                summary.rows.append(LayerRow(_name, type(mod).__name__, shape, _own_count(mod, seen)))
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, hwc[2], hwc[0], hwc[1]))
    except RuntimeError as exc:
        raise CnnlabError(f"{type(model).__name__} cannot take input shape {tuple(hwc)} (H, W, C): "
                          f"{first_line(exc)}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    summary.total, summary.trainable, summary.non_trainable = count_parameters(model)
    if print_fn is not None:
        print_fn(str(summary))
    return summary

