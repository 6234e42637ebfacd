"""The explorer's engine: one model, its inputs, and what happens inside it for each input.

No web code here (app.py serves it). For an input image (uint8 (C, H, W) at the model's size, as
`cnnlab serve` decodes uploads) one forward pass with hooks records every layer's output and every
convolution's input (`Trace`); the activation tiles are PNGs made from it on demand and cached per
(input, layer, channel). The convolution step-by-step recomputes one output value from the captured
input, kernel and bias with explicit products, so the page can show the k x k multiplications and
their sum beside the number torch computed (`conv_step`; a test holds them equal).

    explorer = Explorer(model, card, "digits-run")
    key = explorer.add_input(pixels, "upload.png")
    explorer.activation_png(key, "conv2d")                 # a grid of 32 feature maps
    explorer.conv_step(key, "conv2d", channel=3, row=5, col=7)["sum_plus_bias"]
"""

from __future__ import annotations

import hashlib
import io
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnlab.cards import ModelCard
from cnnlab.data.arrays import float_images
from cnnlab.errors import CnnlabError
from cnnlab.explore.architecture import LayerInfo, architecture, window_of
from cnnlab.interpret import first_layer_filters, grad_cam
from cnnlab.models.layers import ACTIVATIONS, Conv2D, MaxPooling2D
from cnnlab.models.summary import layer_modules
from cnnlab.models.zoo import output_kind
from cnnlab.training.objectives import probabilities

__all__ = ["Explorer", "Trace", "ExploreError", "MAX_INPUTS", "MAX_TRACES", "TRACE_BYTES", "MAX_GRID_CHANNELS",
           "MAX_KERNEL_TILES", "grid_layout", "moved"]

MAX_INPUTS = 96          # images kept (test samples, mistakes, least confident, uploads); the oldest upload goes first
MAX_TRACES = 8           # inputs whose activations stay in memory (a ResNet-18 at 224x224: ~10 MB each)
TRACE_BYTES = 512 * 2**20  # and at most this many bytes of them (VGG16 at 224x224: ~0.2 GB a trace), the newest kept
MAX_GRID_CHANNELS = 64   # feature maps per grid image; a 1280-channel layer shows its first 64 (the page says so)
GAP = 1                  # pixels between the tiles of a grid
OVERLAY_SIZE = 224       # Grad-CAM overlays are drawn at least this large (a 28x28 heatmap is a blur otherwise)
MAX_KERNEL_TILES = 64    # input channels of one filter drawn as heat maps (a 512-channel VGG filter shows 64)
KERNEL_CELL = 12         # pixels per kernel weight in the heat maps: a 3x3 kernel is a 36x36 tile


class ExploreError(CnnlabError):
    """A request the explorer cannot answer: `status` is the HTTP status (404 unknown, 422 out of range)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class InputImage:
    pixels: torch.Tensor   # uint8 (C, H, W) at the model's input size
    label: str             # file name, or "test image 12 (class 7)"
    true_class: int | None = None


@dataclass
class Trace:
    """One forward pass: each image-shaped layer output (C, H, W), each convolution's and max pooling's input
    (`conv_inputs`), the probabilities."""

    outputs: dict[str, torch.Tensor]
    conv_inputs: dict[str, torch.Tensor]
    probabilities: list[float]
    milliseconds: float
    pngs: dict[tuple[str, int | None], bytes] = field(default_factory=dict)


def grid_layout(channels: int) -> tuple[int, int, int]:
    """(channels shown, columns, rows) of a layer's grid: a near-square, at most MAX_GRID_CHANNELS tiles.

    >>> grid_layout(32), grid_layout(64), grid_layout(1280)
    ((32, 6, 6), (64, 8, 8), (64, 8, 8))
    """
    shown = min(channels, MAX_GRID_CHANNELS)
    columns = int(np.ceil(np.sqrt(shown)))
    return shown, columns, int(np.ceil(shown / columns))


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", compress_level=1)  # level 1: a tenth of the time of 6, tiles are tiny
    return buffer.getvalue()


def _scaled(maps: torch.Tensor) -> np.ndarray:
    """(C, H, W) float -> uint8, each channel stretched from its own min (black) to its max (white)."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    span = (high - low).clamp_min(1e-12)
    return ((maps - low) / span * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def _grid(maps: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> one uint8 image of the first channels as tiles, row by row, GAP pixels apart (white)."""
    shown, columns, rows = grid_layout(maps.shape[0])
    _, h, w = maps.shape
    tiles = _scaled(maps[:shown].float())
    grid = np.full((rows * h + (rows - 1) * GAP, columns * w + (columns - 1) * GAP), 255, np.uint8)
    for index in range(shown):
        r, c = divmod(index, columns)
        grid[r * (h + GAP):r * (h + GAP) + h, c * (w + GAP):c * (w + GAP) + w] = tiles[index]
    return grid


def _is_max_pool(module: nn.Module) -> bool:
    return isinstance(module, (MaxPooling2D, nn.MaxPool2d))


def _is_relu_conv(module: nn.Module) -> bool:
    return isinstance(module, Conv2D) and module.activation == "relu"


def _is_relu(module: nn.Module) -> bool:
    """A convolution with activation='relu', or a ReLU layer of its own (torchvision's conv, batch norm, ReLU)."""
    return _is_relu_conv(module) or isinstance(module, nn.ReLU)


def mean_order(maps: torch.Tensor) -> list[int]:
    """Channel indices of (C, H, W) maps by mean activation, highest first (ties keep channel order).

    >>> mean_order(torch.tensor([1.0, 3.0, 2.0, 3.0]).reshape(4, 1, 1))
    [1, 3, 2, 0]
    """
    means = maps.reshape(maps.shape[0], -1).double().mean(1)
    return sorted(range(maps.shape[0]), key=lambda c: -float(means[c]))


def moved(pixels: torch.Tensor, shift_x: int = 0, shift_y: int = 0, rotate: float = 0.0) -> torch.Tensor:
    """uint8 (C, H, W) shifted right/down by whole pixels (zeros come in) and/or rotated `rotate` degrees
    counter-clockwise about the centre (bilinear; corners filled with zeros). The same size, the same dtype.

    >>> x = torch.arange(1, 5, dtype=torch.uint8).reshape(1, 2, 2)
    >>> moved(x, shift_x=1).tolist(), moved(x, rotate=90).tolist()
    ([[[0, 1], [0, 3]]], [[[2, 4], [1, 3]]])
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import rotate as rotated

    out = pixels
    if rotate % 90 == 0 and out.shape[1] == out.shape[2]:  # exact: whole pixels move, none is interpolated
        out = torch.rot90(out, int(rotate // 90) % 4, dims=(1, 2))
    elif rotate % 360:
        out = rotated(out, float(rotate), interpolation=InterpolationMode.BILINEAR, fill=[0.0])
    if shift_x or shift_y:
        h, w = out.shape[1:]
        shifted = torch.zeros_like(out)
        rows, cols = slice(max(shift_y, 0), h + min(shift_y, 0)), slice(max(shift_x, 0), w + min(shift_x, 0))
        source_rows = slice(max(-shift_y, 0), h - max(shift_y, 0))
        source_cols = slice(max(-shift_x, 0), w - max(shift_x, 0))
        if abs(shift_x) < w and abs(shift_y) < h:
            shifted[:, rows, cols] = out[:, source_rows, source_cols]
        out = shifted
    return out


def _diverging(values: np.ndarray, limit: float) -> np.ndarray:
    """(H, W) weights -> (H, W, 3) uint8: blue for negative, white for 0, red for positive, +-limit saturated."""
    t = np.clip(values / max(limit, 1e-12), -1, 1)[..., None]
    white, blue, red = np.array([255, 255, 255.0]), np.array([37, 99, 235.0]), np.array([220, 38, 38.0])
    rgb = np.where(t < 0, white + (blue - white) * -t, white + (red - white) * t)
    return rgb.round().astype(np.uint8)


def _heat(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8, dark blue through green and yellow to red (a jet-like map)."""
    v = np.clip(values, 0, 1)[..., None]
    stops = np.array([[0, 0, 128], [0, 96, 255], [0, 200, 120], [255, 220, 0], [220, 20, 20]], np.float32)
    position = v[..., 0] * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    t = (position - low)[..., None]
    return (stops[low] * (1 - t) + stops[low + 1] * t).astype(np.uint8)


class Explorer:
    """A loaded model and the inputs explored with it; every method is safe to call from one thread at a time.

    >>> from cnnlab.models.zoo import build_model; from cnnlab.models.files import ModelCard
    >>> card = ModelCard({"name": "seed-mnist"}, list("0123456789"), [28, 28, 1])
    >>> explorer = Explorer(build_model("seed-mnist"), card, "demo")
    >>> key = explorer.add_input(torch.zeros(1, 28, 28, dtype=torch.uint8), "black.png")
    >>> explorer.conv_step(key, "conv2d", 0, 0, 0)["window"]
    [[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]
    """

    def __init__(self, model: nn.Module, card: ModelCard, name: str) -> None:
        self.layers: list[LayerInfo] = architecture(model, card.input_shape)  # before freezing: trainable flags
        self.model = model.eval().requires_grad_(False)  # gradients only where Grad-CAM asks for them
        self.card, self.name = card, name
        self.by_name = {layer.name: layer for layer in self.layers}
        self.modules = dict(layer_modules(model))
        self.inputs: OrderedDict[str, InputImage] = OrderedDict()
        self.traces: OrderedDict[str, Trace] = OrderedDict()
        self.cams: dict[tuple[str, int, str], bytes] = {}
        self.kind = output_kind(model)
        self.notes: list[str] = []  # for the page: why there are no test images, say
        self.ranked: dict[str, list[dict[str, Any]]] = {"mistakes": [], "least_confident": []}  # app.py fills them
        self.ranked_only: set[str] = set()  # inputs listed only as mistakes or least confident, not by class
        self.test_data: tuple[Any, str] | None = None  # (the run's test split, dataset name) when it has one
        self.ranking = "pending"  # the search for mistakes: pending, running, done, or "failed: why"

    # ------------------------------------------------------------------ inputs
    def add_input(self, pixels: torch.Tensor, label: str, true_class: int | None = None, key: str | None = None) -> str:
        """Keep a uint8 (C, H, W) image at the model's size; returns its key (the same pixels: the same key)."""
        h, w, c = self.card.input_shape
        if pixels.dtype != torch.uint8 or tuple(pixels.shape) != (c, h, w):
            raise CnnlabError(f"add_input: pixels must be uint8 {(c, h, w)} (C, H, W), got {pixels.dtype} "
                              f"{tuple(pixels.shape)}; decode the image at the model's size first")
        key = key or "u" + hashlib.sha256(pixels.numpy().tobytes()).hexdigest()[:12]
        self.inputs[key] = InputImage(pixels.clone(), label, true_class)
        self.inputs.move_to_end(key)
        while len(self.inputs) > MAX_INPUTS:
            oldest = next((k for k in self.inputs if k[0] in "uv" and k != key), next(iter(self.inputs)))
            del self.inputs[oldest]
            self.traces.pop(oldest, None)
        return key

    def add_variant(self, key: str, shift_x: int = 0, shift_y: int = 0, rotate: float = 0.0) -> str:
        """A copy of input `key` shifted and/or rotated (`moved`), kept as a new input with the same true class:
        the tutorials' point that a CNN shrugs off a shift more easily than a rotation, seen side by side."""
        base = self.image(key)
        h, w = base.pixels.shape[1:]
        if not (abs(shift_x) < w and abs(shift_y) < h and -360 <= rotate <= 360):
            raise ExploreError(422, f"shift_x={shift_x}, shift_y={shift_y}, rotate={rotate}: expected shifts "
                                    f"within -{w - 1}..{w - 1} and -{h - 1}..{h - 1} pixels and an angle within "
                                    f"-360..360 degrees")
        changes = [f"shifted {abs(shift_x)} px {'right' if shift_x > 0 else 'left'}" if shift_x else "",
                   f"shifted {abs(shift_y)} px {'down' if shift_y > 0 else 'up'}" if shift_y else "",
                   f"rotated {rotate:g}°" if rotate % 360 else ""]
        label = f"{base.label}, " + ", ".join(c for c in changes if c) if any(changes) else base.label
        pixels = moved(base.pixels, shift_x, shift_y, rotate)
        return self.add_input(pixels, label, base.true_class,
                              key="v" + hashlib.sha256(pixels.numpy().tobytes()).hexdigest()[:12])

    def image(self, key: str) -> InputImage:
        if key not in self.inputs:
            raise ExploreError(404, f"no input {key!r}; pick one from /api/inputs or upload an image again "
                                    f"(the server keeps the last {MAX_INPUTS})")
        return self.inputs[key]

    def input_png(self, key: str) -> bytes:
        """The input as the model sees it: resized to its input size, with its number of channels."""
        pixels = self.image(key).pixels.numpy()
        return _png(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))

    # ------------------------------------------------------------------ one forward pass
    def trace(self, key: str) -> Trace:
        """Every layer's output for one input in one forward pass (cached for the last MAX_TRACES inputs, within
        TRACE_BYTES)."""
        if key in self.traces:
            self.traces.move_to_end(key)
            return self.traces[key]
        image = self.image(key)
        outputs: dict[str, torch.Tensor] = {}
        conv_inputs: dict[str, torch.Tensor] = {}
        handles = []
        for layer in self.layers:
            def hook(module: nn.Module, args: Any, out: Any, name: str = layer.name,
                     step: bool = layer.steppable or _is_max_pool(self.modules[layer.name])) -> None:
                if name in outputs or not isinstance(out, torch.Tensor):
                    return  # a module run twice (torchvision's shared ReLU) reports its first call, as the summary
                if out.ndim == 4:
                    outputs[name] = out[0].detach().clone()  # clone: an in-place ReLU later must not change it
                if step and isinstance(args[0], torch.Tensor):
                    conv_inputs[name] = args[0][0].detach().clone()
            def before(module: nn.Module, args: Any, name: str = layer.name) -> None:
                if name not in conv_inputs and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
                    conv_inputs[name] = args[0][0].detach().clone()  # before an in-place ReLU overwrites it

            module = self.modules[layer.name]
            handles.append(module.register_forward_hook(hook))
            if isinstance(module, nn.ReLU):
                handles.append(module.register_forward_pre_hook(before))
        started = time.perf_counter()
        try:
            with torch.no_grad():
                out = self.model(float_images(image.pixels[None]))
        finally:
            for handle in handles:
                handle.remove()
        probs = probabilities(out.float(), self.kind)[0].tolist()
        trace = Trace(outputs, conv_inputs, probs, (time.perf_counter() - started) * 1000)
        self.traces[key] = trace
        while len(self.traces) > MAX_TRACES or (len(self.traces) > 1 and self._trace_bytes() > TRACE_BYTES):
            self.traces.popitem(last=False)
        return trace

    def _trace_bytes(self) -> int:
        return sum(t.nbytes for trace in self.traces.values()
                   for t in (*trace.outputs.values(), *trace.conv_inputs.values()))

    def activations(self, key: str) -> dict[str, Any]:
        """What the page needs to lay out the feature maps of one input: per layer its grid and value ranges."""
        trace = self.trace(key)
        layers = []
        for layer in self.layers:
            maps = trace.outputs.get(layer.name)
            if maps is None:
                continue
            shown, columns, rows = grid_layout(maps.shape[0])
            flat = maps.reshape(maps.shape[0], -1).float()
            layers.append({"name": layer.name, "kind": layer.kind, "channels": maps.shape[0],
                           "height": maps.shape[1], "width": maps.shape[2], "shown": shown, "columns": columns,
                           "rows": rows, "gap": GAP, "min": float(flat.min()), "max": float(flat.max()),
                           "channel_min": flat.min(1).values.tolist()[:shown],
                           "channel_max": flat.max(1).values.tolist()[:shown],
                           "channel_mean": flat.mean(1).tolist()[:shown], "order": mean_order(maps),
                           "relu": _is_relu(self.modules[layer.name]),
                           "max_pool": _is_max_pool(self.modules[layer.name])})
        return {"input": key, "forward_ms": round(trace.milliseconds, 2), "layers": layers,
                "probabilities": trace.probabilities, "classes": self.card.class_names}

    def activation_png(self, key: str, layer: str, channel: int | None = None, order: str = "index") -> bytes:
        """A layer's feature maps as one grid PNG, or one channel's map (`channel`), each stretched to 0..255.

        `order="mean"` tiles the grid by mean activation, highest first (the order `activations` gives).
        """
        if order not in ("index", "mean"):
            raise ExploreError(422, f"order={order!r} is not a channel order; use 'index' or 'mean'")
        trace = self.trace(key)
        if layer not in trace.outputs:
            raise ExploreError(404, self._not_a_map(layer))
        maps = trace.outputs[layer]
        if channel is not None and not 0 <= channel < maps.shape[0]:
            raise ExploreError(422, f"channel={channel} is out of range: layer {layer!r} has channels 0.."
                                    f"{maps.shape[0] - 1}")
        cache_key = (layer, channel if channel is not None else (None if order == "index" else -1))
        cached = trace.pngs.get(cache_key)
        if cached is None:
            if channel is not None:
                cached = _png(_scaled(maps[channel:channel + 1].float())[0])
            else:
                cached = _png(_grid(maps if order == "index" else maps[mean_order(maps)]))
            trace.pngs[cache_key] = cached
        return cached

    def _not_a_map(self, layer: str) -> str:
        if layer not in self.by_name:
            return f"no layer {layer!r}; use a name from /api/architecture"
        shape = self.by_name[layer].output_shape
        return f"layer {layer!r} outputs {shape}, not feature maps; pick an image-shaped layer"

    # ------------------------------------------------------------------ the convolution step by step
    def conv_step(self, key: str, layer: str, channel: int, row: int, col: int) -> dict[str, Any]:
        """Output value (channel, row, col) of a convolution recomputed as k x k products per input channel.

        `window` holds the input values under the kernel (zeros where it hangs over the border into the
        'same' padding, marked in `padding_mask`); `sum_plus_bias` is sum(products) + bias and `value`
        that after the layer's own activation, to compare with `torch_value`, the layer's output.
        """
        self._require_steppable(layer, "the stepper takes apart")
        trace = self.trace(key)
        x, out = trace.conv_inputs[layer], trace.outputs[layer]  # (C_in, H, W), (C_out, H', W')
        for what, given, size in (("channel", channel, out.shape[0]), ("row", row, out.shape[1]),
                                  ("col", col, out.shape[2])):
            if not 0 <= given < size:
                raise ExploreError(422, f"{what}={given} is out of range for layer {layer!r}: 0..{size - 1}")
        module = self.modules[layer]
        window = window_of(module, (x.shape[1], x.shape[2]))
        assert window is not None
        weight: torch.Tensor = module.weight.detach()  # type: ignore[operator]  # (C_out, C_in / groups, kh, kw)
        groups = int(getattr(module, "groups", 1))
        per_group = weight.shape[1]
        first = (channel // (weight.shape[0] // groups)) * per_group  # the input channels this filter sees
        (kh, kw), (sh, sw), (dh, dw) = window.kernel, window.strides, window.dilation
        top, left = row * sh - window.pads[0], col * sw - window.pads[2]  # window origin on the unpadded input
        rows = [top + i * dh for i in range(kh)]
        cols = [left + j * dw for j in range(kw)]
        inside = np.array([[0 <= r < x.shape[1] and 0 <= c < x.shape[2] for c in cols] for r in rows])
        values = np.zeros((per_group, kh, kw), np.float64)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                if inside[i, j]:
                    values[:, i, j] = x[first:first + per_group, r, c].double().numpy()
        kernel = weight[channel].double().numpy()
        products = values * kernel
        bias_vector: torch.Tensor | None = module.bias  # type: ignore[assignment]
        bias: float = float(bias_vector[channel]) if bias_vector is not None else 0.0
        total = float(products.sum()) + bias
        activation = module.activation if isinstance(module, Conv2D) else None
        value = total if activation is None else float(ACTIVATIONS[activation](torch.tensor([[total]]))[0, 0])
        return {"layer": layer, "channel": channel, "row": row, "col": col,
                "input_shape": list(x.shape), "output_shape": list(out.shape),
                "kernel_size": [kh, kw], "strides": [sh, sw], "dilation": [dh, dw], "padding": window.padding,
                "pads": {"top": window.pads[0], "bottom": window.pads[1], "left": window.pads[2],
                         "right": window.pads[3]},
                "origin": [top, left], "in_channels": list(range(first, first + per_group)),
                "window": values.tolist(), "padding_mask": (~inside).tolist(), "kernel": kernel.tolist(),
                "products": products.tolist(), "channel_sums": products.sum(axis=(1, 2)).tolist(),
                "sum": float(products.sum()), "bias": bias, "sum_plus_bias": total,
                "activation": activation or "linear", "value": value, "torch_value": float(out[channel, row, col])}

    def _require_steppable(self, layer: str, what: str) -> None:
        """A 404 naming the layers that are, unless `layer` is a plain convolution the stepper can take apart."""
        if layer not in self.by_name or not self.by_name[layer].steppable:
            steppable = [item.name for item in self.layers if item.steppable]
            raise ExploreError(404, f"layer={layer!r} is not a convolution {what}; use one of: "
                                    f"{', '.join(steppable[:12]) or 'none in this model'}")

    def layer_input_png(self, key: str, layer: str, channel: int) -> bytes:
        """One channel of a convolution's input (what its window slides over), stretched to 0..255."""
        self._require_steppable(layer, "the stepper takes apart")
        x = self.trace(key).conv_inputs[layer]
        if not 0 <= channel < x.shape[0]:
            raise ExploreError(422, f"channel={channel} is out of range: the input of {layer!r} has channels "
                                    f"0..{x.shape[0] - 1}")
        return _png(_scaled(x[channel:channel + 1].float())[0])

    # ------------------------------------------------------------------ ReLU and max pooling taken apart
    def relu_before_after(self, key: str, layer: str, channel: int) -> dict[str, Any]:
        """One channel of a ReLU before (a convolution's sum plus bias, or a ReLU layer's input) and after it.

        After is max(before, 0): the tests hold this, and `before` equal to torch's convolution or to the
        output of the layer feeding a ReLU layer.
        """
        module = self.modules.get(layer)
        if module is None or not _is_relu(module) or layer not in self.trace(key).outputs:
            names = [n for n, m in self.modules.items() if _is_relu(m)]
            raise ExploreError(404, f"layer={layer!r} is not a ReLU or a convolution with activation='relu'; use "
                                    f"one of: {', '.join(names[:12]) or 'none in this model'}")
        trace = self.trace(key)
        after = trace.outputs[layer]
        self._check_channel(channel, after.shape[0], layer)
        if isinstance(module, nn.ReLU):
            before = trace.conv_inputs[layer][channel]
        else:
            assert isinstance(module, Conv2D)
            module.activation = None  # the layer's own code without its ReLU; one thread runs the model
            try:
                with torch.no_grad():
                    before = module(trace.conv_inputs[layer][None])[0, channel]
            finally:
                module.activation = "relu"
        return {"layer": layer, "channel": channel, "before": before.tolist(), "after": after[channel].tolist(),
                "before_range": [float(before.min()), float(before.max())],
                "zeroed": int((before <= 0).sum()), "size": before.numel()}

    def pool_windows(self, key: str, layer: str, channel: int) -> dict[str, Any]:
        """One channel of a max pooling layer: its input, each window's origin and the position of its maximum.

        Positions are (row, col) on the unpadded input; 'same' padding never wins (it pads with -inf).
        """
        module = self.modules.get(layer)
        if module is None or not _is_max_pool(module):
            names = [n for n, m in self.modules.items() if _is_max_pool(m)]
            raise ExploreError(404, f"layer={layer!r} is not a max pooling layer; use one of: "
                                    f"{', '.join(names[:12]) or 'none in this model'}")
        trace = self.trace(key)
        x, out = trace.conv_inputs[layer], trace.outputs[layer]  # (C, H, W), (C, H', W')
        self._check_channel(channel, out.shape[0], layer)
        h, w = x.shape[1:]
        window = window_of(module, (h, w))
        assert window is not None
        (kh, kw), (sh, sw) = window.kernel, window.strides
        plane = x[channel].double().numpy()
        windows = []
        for row in range(out.shape[1]):
            for col in range(out.shape[2]):
                top, left = row * sh - window.pads[0], col * sw - window.pads[2]
                r0, c0 = max(top, 0), max(left, 0)
                block = plane[r0:min(top + kh, h), c0:min(left + kw, w)]
                r, c = divmod(int(np.argmax(block)), block.shape[1])  # the first maximum, as torch keeps it
                windows.append({"origin": [top, left], "argmax": [r0 + r, c0 + c], "value": float(block[r, c])})
        return {"layer": layer, "channel": channel, "input": plane.tolist(), "kernel": [kh, kw],
                "strides": [sh, sw], "pads": list(window.pads), "output_shape": list(out.shape[1:]),
                "windows": windows}

    def _check_channel(self, channel: int, channels: int, layer: str) -> None:
        if not 0 <= channel < channels:
            raise ExploreError(422, f"channel={channel} is out of range: layer {layer!r} has channels 0.."
                                    f"{channels - 1}")

    # ------------------------------------------------------------------ decision and filters
    def grad_cam_png(self, key: str, class_index: int, layer: str) -> bytes:
        """Grad-CAM of `class_index` at `layer`, over the input (blended half and half), as a PNG."""
        classes = len(self.card.class_names)
        if not 0 <= class_index < classes:
            raise ExploreError(422, f"class_index={class_index} is out of range: 0..{classes - 1}")
        if layer not in self.by_name or not self.by_name[layer].feature_map:
            raise ExploreError(404, self._not_a_map(layer))
        cached = self.cams.get((key, class_index, layer))
        if cached is not None:
            return cached
        pixels = self.image(key).pixels
        cam = grad_cam(self.model, pixels, class_index, layer).heatmap  # (H, W) in [0, 1]
        h, w = cam.shape
        scale = max(1, int(np.ceil(OVERLAY_SIZE / max(h, w))))
        big = F.interpolate(cam[None, None], scale_factor=scale, mode="bilinear", align_corners=False)[0, 0]
        base = pixels.float()[None] / 255
        base = F.interpolate(base, scale_factor=scale, mode="nearest")[0]  # (C, H*s, W*s)
        gray = base.mean(0) if base.shape[0] != 3 else None
        rgb = (gray[None].expand(3, -1, -1) if gray is not None else base).permute(1, 2, 0).numpy() * 255
        blended = 0.5 * rgb + 0.5 * _heat(big.numpy()).astype(np.float32)
        png = _png(blended.clip(0, 255).astype(np.uint8))
        if len(self.cams) > 64:
            self.cams.clear()
        self.cams[(key, class_index, layer)] = png
        return png

    def kernels(self, layer: str, channel: int) -> dict[str, Any]:
        """How `kernels_png` lays out the filter of output `channel` of a convolution: one heat map per input
        channel it sees, on one symmetric scale (+-max_abs: blue negative, white 0, red positive)."""
        weight = self._filter(layer, channel)
        shown, columns, rows = grid_layout(min(weight.shape[0], MAX_KERNEL_TILES))
        return {"layer": layer, "channel": channel, "in_channels": int(weight.shape[0]), "shown": shown,
                "columns": columns, "rows": rows, "kernel": list(weight.shape[1:]), "cell": KERNEL_CELL,
                "max_abs": float(weight.abs().max())}

    def kernels_png(self, layer: str, channel: int) -> bytes:
        """The filter of output `channel` of a convolution as heat maps, one tile per input channel (first 64)."""
        weight = self._filter(layer, channel).double().numpy()
        limit = float(np.abs(weight).max())
        shown, columns, rows = grid_layout(min(weight.shape[0], MAX_KERNEL_TILES))
        kh, kw = weight.shape[1] * KERNEL_CELL, weight.shape[2] * KERNEL_CELL
        gap = 4
        grid = np.full((rows * (kh + gap) - gap, columns * (kw + gap) - gap, 3), 255, np.uint8)
        for index in range(shown):
            r, c = divmod(index, columns)
            tile = np.kron(_diverging(weight[index], limit), np.ones((KERNEL_CELL, KERNEL_CELL, 1))).astype(np.uint8)
            grid[r * (kh + gap):r * (kh + gap) + kh, c * (kw + gap):c * (kw + gap) + kw] = tile
        return _png(grid)

    def _filter(self, layer: str, channel: int) -> torch.Tensor:
        """The (C_in / groups, kh, kw) kernel of output `channel` of a steppable convolution."""
        self._require_steppable(layer, "with a kernel to draw")
        weight: torch.Tensor = self.modules[layer].weight.detach()  # type: ignore[operator]
        self._check_channel(channel, weight.shape[0], layer)
        return weight[channel].float()

    def filters_png(self) -> bytes:
        """The first convolution's kernels, each stretched to 0..255: RGB for 3 input channels, else channel 0."""
        weights = first_layer_filters(self.model).float()  # (F, C, kh, kw)
        if weights.shape[1] == 3:
            low = weights.amin(dim=(1, 2, 3), keepdim=True)
            span = (weights.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-12)
            tiles = ((weights - low) / span * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            shown, columns, rows = grid_layout(tiles.shape[0])
            kh, kw = tiles.shape[1:3]
            grid = np.full((rows * (kh + GAP) - GAP, columns * (kw + GAP) - GAP, 3), 255, np.uint8)
            for index in range(shown):
                r, c = divmod(index, columns)
                grid[r * (kh + GAP):r * (kh + GAP) + kh, c * (kw + GAP):c * (kw + GAP) + kw] = tiles[index]
            return _png(grid)
        return _png(_grid(weights[:, 0]))
