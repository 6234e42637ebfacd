"""Every layer of a model as the explorer shows it: settings, output-size formula, receptive field, parameters.

One forward pass of a zero image with hooks on every module records each summary row's input and
output shapes and which rows fed it (the graph of a functional model). The sliding-window settings
of convolutions and pooling give three numbers a learner works out by hand, here with the layer's
own values put in:

- the output size, seed 003's `floor((n + 2p - k) / s) + 1` (with Keras's 'same' padding, the extra
  zero after: `floor((28 + 0 + 1 - 3) / 2) + 1 = 14`); a test checks it against every real layer;
- the receptive field on the input: r_out = r_in + (k - 1) * d * j_in, j_out = j_in * s, where j
  is how many input pixels one step of this layer's input moves (Araujo et al., Distill 2019);
- the parameter count: `(3*3*1 + 1) * 32 = 320` for a Conv2D, `(1600 + 1) * 64 = 102464` for a Dense.

    layers = architecture(build_model("seed-mnist"), (28, 28, 1))
    layers[0].formula["height"]        # 'floor((28 + 2*0 - 3) / 1) + 1 = 26'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError, first_line
from cnnlab.models.efficientnet_lite import SamePadConv2d
from cnnlab.models.conv_layers import Conv2DTranspose, DepthwiseConv2D, SeparableConv2D, ZeroPadding2D
from cnnlab.models.layers import AveragePooling2D, BatchNormalization, Conv2D, Dense, MaxPooling2D, same_padding
from cnnlab.models.summary import MOVING_STATS, layer_modules, model_summary

__all__ = ["Window", "LayerInfo", "architecture", "window_of", "output_formula", "params_worked"]

KERAS_WINDOWS = (Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, MaxPooling2D, AveragePooling2D)


@dataclass(frozen=True)
class Window:
    """How a convolution or pooling layer slides over one (H, W) input: per axis (height, width)."""

    kind: str                       # "conv", "pool", "transpose" (Conv2DTranspose) or "pad" (ZeroPadding2D)
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # (top, bottom, left, right) zeros added for this input size
    padding: str                    # "valid", "same" (Keras/torch string) or "explicit" (torch ints)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False         # torch pooling's ceil_mode: the last partial window counts


@dataclass
class LayerInfo:
    """One summary row as the explorer's architecture panel shows it (JSON-ready via `to_dict`)."""

    index: int
    name: str
    kind: str                                  # the module's class name, as the summary prints it
    output_shape: tuple[int, ...]              # Keras order: (H, W, C) or (features,)
    params: int                                # as `cnnlab summary` counts them
    trainable: bool | None                     # None: the layer has no weights
    input_shape: tuple[int, ...] | None = None  # Keras order, of its (first) input
    inputs: list[str] = field(default_factory=list)  # the rows (or "input") that feed it
    settings: dict[str, Any] = field(default_factory=dict)
    formula: dict[str, Any] | None = None      # {"general", "height", "width", "output": [h, w]}
    params_worked: str | None = None           # "(3*3*1 + 1) * 32 = 320"
    receptive_field: tuple[int, int] | None = None  # input pixels (H, W) one output value depends on
    jump: tuple[int, int] | None = None        # input pixels between neighbouring output values
    feature_map: bool = False                  # the output is an image (C, H, W): activations exist
    steppable: bool = False                    # a plain convolution the step-by-step view can take apart

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def window_of(module: nn.Module, size: tuple[int, int]) -> Window | None:
    """The sliding window of a convolution, pooling or zero-padding layer on an (H, W) input; None otherwise.

    >>> window_of(Conv2D(8, 3, strides=2, padding="same"), (28, 28)).pads
    (0, 1, 0, 1)
    >>> window_of(nn.MaxPool2d(3, 2, padding=1), (112, 112)).kernel
    (3, 3)
    """
    h, w = size
    if isinstance(module, ZeroPadding2D):
        (top, bottom), (left, right) = module.padding
        return Window("pad", (1, 1), (1, 1), (top, bottom, left, right), "explicit")
    if isinstance(module, KERAS_WINDOWS):
        pool = isinstance(module, (MaxPooling2D, AveragePooling2D))
        kernel: tuple[int, int] = _pair(module.pool_size if pool else module.kernel_size)
        kind = "transpose" if isinstance(module, Conv2DTranspose) else ("pool" if pool else "conv")
        strides, pads = _pair(module.strides), (0, 0, 0, 0)
        if module.padding == "same" and kind != "transpose":
            pads = (*same_padding(h, kernel[0], strides[0]), *same_padding(w, kernel[1], strides[1]))
        return Window(kind, kernel, strides, pads, str(module.padding))
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        conv = isinstance(module, nn.Conv2d)
        kernel = _pair(module.kernel_size)
        strides = _pair(module.stride if module.stride is not None else kernel)
        dilation = _pair(getattr(module, "dilation", 1))
        padding = module.padding
        if isinstance(module, SamePadConv2d):  # pads itself at run time, as Keras's 'same' does
            pads = (*same_padding(h, kernel[0], strides[0]), *same_padding(w, kernel[1], strides[1]))
            return Window("conv", kernel, strides, pads, "same", dilation)
        if padding == "same":  # torch: stride 1 only, the extra zero after
            totals = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
            pads = (totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2)
            name = "same"
        elif padding == "valid":
            pads, name = (0, 0, 0, 0), "valid"
        else:
            ph, pw = _pair(padding)
            pads, name = (ph, ph, pw, pw), "explicit"
        return Window("conv" if conv else "pool", kernel, strides, pads, name, dilation,
                      bool(getattr(module, "ceil_mode", False)))
    return None


def output_formula(n: int, window: Window, axis: int) -> tuple[str, int]:
    """The output length along `axis` (0: height, 1: width) of an input of length `n`, written out and computed.

    >>> output_formula(28, window_of(Conv2D(32, 3), (28, 28)), 0)
    ('floor((28 + 2*0 - 3) / 1) + 1 = 26', 26)
    >>> output_formula(28, window_of(Conv2D(8, 3, strides=2, padding="same"), (28, 28)), 0)
    ('floor((28 + 0 + 1 - 3) / 2) + 1 = 14', 14)
    """
    k, s, d = window.kernel[axis], window.strides[axis], window.dilation[axis]
    before, after = window.pads[2 * axis], window.pads[2 * axis + 1]
    if window.kind == "pad":
        return f"{n} + {before} + {after} = {n + before + after}", n + before + after
    if window.kind == "transpose":
        if window.padding == "same":
            return f"{n} * {s} = {n * s}", n * s
        value = (n - 1) * s + max(k, s)
        return f"({n} - 1) * {s} + max({k}, {s}) = {value}", value
    pads = f"2*{before}" if before == after else f"{before} + {after}"
    span = f"{d}*({k} - 1) + 1" if d > 1 else f"{k}"
    extent = n + before + after - (d * (k - 1) + 1)
    rounding = "ceil" if window.ceil_mode else "floor"
    value = (math.ceil(extent / s) if window.ceil_mode else extent // s) + 1
    if window.ceil_mode and (value - 1) * s >= n + before:  # torch: the last window must start inside
        value -= 1
    return f"{rounding}(({n} + {pads} - {span}) / {s}) + 1 = {value}", value


def _general(window: Window) -> str:
    if window.kind == "pad":
        return "n + top + bottom"
    if window.kind == "transpose":
        return "n * s ('same')" if window.padding == "same" else "(n - 1) * s + max(k, s) ('valid')"
    general = "floor((n + 2p - k) / s) + 1"
    if window.padding == "same":
        general += ", with 'same' p so that the output is ceil(n / s)"
    return general


def _own_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters and moving statistics of the module's subtree: what the summary counts."""
    return list(module.named_parameters()) + [(n, b) for n, b in module.named_buffers()
                                              if n.split(".")[-1] in MOVING_STATS]


def params_worked(module: nn.Module) -> str | None:
    """The layer's parameter count worked out, as a learner writes it; None for a layer without weights.

    >>> from cnnlab.models.sequential import Sequential
    >>> params_worked(Sequential([Conv2D(32, 3, input_shape=(28, 28, 1))])[0])
    '(3*3*1 + 1) * 32 = 320'
    """
    tensors = _own_tensors(module)
    total = sum(t.numel() for _, t in tensors)
    if total == 0:
        return None
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    if isinstance(module, (Conv2D, nn.Conv2d)) and isinstance(weight, torch.Tensor) and len(tensors) <= 2:
        out, per_group, kh, kw = weight.shape
        inner = f"{kh}*{kw}*{per_group}"
        return f"({inner} + 1) * {out} = {total}" if bias is not None else f"{inner} * {out} = {total}"
    if isinstance(module, (Dense, nn.Linear)) and isinstance(weight, torch.Tensor) and len(tensors) <= 2:
        out, fan_in = weight.shape  # (units, inputs) in both
        return f"({fan_in} + 1) * {out} = {total}" if bias is not None else f"{fan_in} * {out} = {total}"
    if isinstance(module, (BatchNormalization, nn.BatchNorm2d)) and len(tensors) == 4:
        channels = tensors[0][1].numel()
        return f"4 * {channels} = {total} (gamma, beta, moving mean, moving variance)"
    parts = ["*".join(str(d) for d in t.shape) or "1" for _, t in tensors]
    return f"{' + '.join(parts)} = {total}" if len(parts) > 1 else f"{parts[0]} = {total}"


def _trainable(module: nn.Module) -> bool | None:
    flags = {p.requires_grad for p in module.parameters()}
    return None if not flags else all(flags)


def _settings(module: nn.Module, window: Window | None) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for attribute in ("filters", "units", "out_channels", "out_features", "groups", "depth_multiplier", "rate",
                      "p", "epsilon", "eps", "momentum"):
        value = getattr(module, attribute, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            settings[attribute] = value
    if window is not None:
        settings.update(kernel=list(window.kernel), strides=list(window.strides), padding=window.padding,
                        pads={"top": window.pads[0], "bottom": window.pads[1], "left": window.pads[2],
                              "right": window.pads[3]})
        if window.dilation != (1, 1):
            settings["dilation"] = list(window.dilation)
    activation = getattr(module, "activation", None)
    if isinstance(activation, str) or activation is None and hasattr(module, "activation"):
        settings["activation"] = activation or "linear"
    elif type(module).__name__ in ("ReLU", "ReLU6", "SiLU", "Hardswish", "Sigmoid", "GELU"):
        settings["activation"] = type(module).__name__.lower()
    return settings


def _steppable(module: nn.Module) -> bool:
    if isinstance(module, Conv2D):
        return True
    return isinstance(module, nn.Conv2d) and module.padding_mode == "zeros"


class _Tracer:
    """Hooks on every module that follow receptive fields and producers from tensor to tensor."""

    def __init__(self, model: nn.Module, rows: list[tuple[str, nn.Module]], image_hw: tuple[int, int]) -> None:
        self.row_names = {id(m): name for name, m in rows}
        self.image_hw = image_hw
        self.fields: dict[int, tuple[torch.Tensor, tuple[int, int], tuple[int, int]]] = {}  # id -> (t, rf, jump)
        self.producer: dict[int, str] = {}
        self.recent: list[tuple[tuple[int, int], tuple[int, int]]] = [((1, 1), (1, 1))]
        self.started: list[int] = []
        self.seen: dict[str, dict[str, Any]] = {}
        self.image_id: int | None = None  # the model's input tensor: its consumers are fed by "input"
        self.last_row: str | None = None  # the row that produced last (what an operation between rows transformed)
        self.handles = []
        for _, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self.pre))
            self.handles.append(module.register_forward_hook(self.post))

    def remember(self, tensor: torch.Tensor, rf: tuple[int, int], jump: tuple[int, int]) -> None:
        self.fields[id(tensor)] = (tensor, rf, jump)  # the tensor is kept: its id stays unique during the pass
        self.recent.append((rf, jump))

    def pre(self, module: nn.Module, args: Any) -> None:
        self.started.append(len(self.recent))

    def post(self, module: nn.Module, args: Any, out: Any) -> None:
        start = self.started.pop()
        inputs = [a for a in _flat(args) if isinstance(a, torch.Tensor)]
        known = [self.fields[id(t)] for t in inputs if id(t) in self.fields]
        if known:
            rf = (max(k[1][0] for k in known), max(k[1][1] for k in known))
            jump = (max(k[2][0] for k in known), max(k[2][1] for k in known))
        else:  # made by an operation outside modules (a + b, torch.flatten): the latest field seen
            rf, jump = self.recent[-1]
        if not isinstance(out, torch.Tensor):
            return
        first = inputs[0] if inputs else None
        window = window_of(module, (first.shape[2], first.shape[3])) if first is not None and first.ndim == 4 else None
        if window is not None and window.kind in ("conv", "pool"):
            spans = [(k - 1) * d for k, d in zip(window.kernel, window.dilation, strict=True)]
            rf = (rf[0] + spans[0] * jump[0], rf[1] + spans[1] * jump[1])
            jump = (jump[0] * window.strides[0], jump[1] * window.strides[1])
        elif id(out) in self.fields:  # a container whose last inner module made the output: keep its field
            _, rf, jump = self.fields[id(out)]
        elif len(self.recent) > start + 1:  # a container that combined its inner results (a residual sum)
            inner = self.recent[start:]
            rf = (max(rf[0], *(r[0][0] for r in inner)), max(rf[1], *(r[0][1] for r in inner)))
            jump = (max(jump[0], *(r[1][0] for r in inner)), max(jump[1], *(r[1][1] for r in inner)))
        if out.ndim != 4 or (window is None and isinstance(module, nn.AdaptiveAvgPool2d)):
            rf = self.image_hw  # global pooling, flatten, dense: every input pixel counts
        self.remember(out, rf, jump)
        name = self.row_names.get(id(module))
        if name is not None and name not in self.seen:  # a module run twice (a shared ReLU) reports its first call
            self.seen[name] = {"inputs": [self.feeder(t) for t in inputs],
                               "input": tuple(first.shape[1:]) if first is not None else None,
                               "window": window, "rf": rf, "jump": jump, "module": module}
        if name is not None:
            self.producer[id(out)] = name
            self.last_row = name

    def feeder(self, tensor: torch.Tensor) -> str:
        """The row that made `tensor`: its producer, "input" for the image, else the row before the operation
        outside modules (torch.flatten, a + b) that made it."""
        if id(tensor) in self.producer:
            return self.producer[id(tensor)]
        return "input" if id(tensor) == self.image_id or self.last_row is None else self.last_row

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.fields.clear()


def _flat(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [item for part in value for item in _flat(part)]
    return [value]


def _keras(shape: Sequence[int]) -> tuple[int, ...]:
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else tuple(shape)


def architecture(model: nn.Module, input_shape: Sequence[int]) -> list[LayerInfo]:
    """Every summary row of `model` on an (H, W, C) input, in order, with what the explorer shows of it.

    >>> from cnnlab.models.zoo import build_model
    >>> rows = architecture(build_model("seed-mnist"), (28, 28, 1))
    >>> rows[0].name, rows[0].output_shape, rows[0].params_worked, rows[2].receptive_field
    ('conv2d', (26, 26, 32), '(3*3*1 + 1) * 32 = 320', (8, 8))
    """
    h, w, c = (int(d) for d in input_shape)
    summary = model_summary(model, (h, w, c))
    rows = layer_modules(model)
    modules = dict(rows)
    tracer = _Tracer(model, rows, (h, w))
    was_training = model.training
    try:
        with torch.no_grad():
            image = torch.zeros(1, c, h, w)
            tracer.remember(image, (1, 1), (1, 1))
            tracer.image_id = id(image)
            model.eval()(image)
    except RuntimeError as exc:
        raise CnnlabError(f"{type(model).__name__} cannot take input shape {(h, w, c)} (H, W, C): "
                          f"{first_line(exc)}") from None
    finally:
        tracer.close()
        model.train(was_training)
    layers: list[LayerInfo] = []
    done: set[str] = set()
    for row in summary.rows:
        if row.name in done:  # the summary prints a module run twice twice; the explorer lists it once
            continue
        done.add(row.name)
        module, seen = modules[row.name], tracer.seen.get(row.name, {})
        window: Window | None = seen.get("window")
        info = LayerInfo(len(layers), row.name, row.kind, row.output_shape, row.params, _trainable(module),
                         _keras(seen["input"]) if seen.get("input") else None, seen.get("inputs", []),
                         _settings(module, window), params_worked=params_worked(module),
                         receptive_field=seen.get("rf"), jump=seen.get("jump"),
                         feature_map=len(row.output_shape) == 3, steppable=_steppable(module))
        if window is not None and seen.get("input") and len(seen["input"]) == 3:
            _, in_h, in_w = seen["input"]
            height, width = output_formula(in_h, window, 0), output_formula(in_w, window, 1)
            info.formula = {"general": _general(window), "height": height[0], "width": width[0],
                            "output": [height[1], width[1]]}
        layers.append(info)
    return layers
