"""Keras 3's image preprocessing layers as cnnlab layers: resizing, rescaling and random augmentation in the model.

    model = Sequential([Rescaling(1 / 255, input_shape=(180, 180, 3)), RandomFlip("horizontal"),
                        RandomRotation(0.1), RandomZoom(0.1), Conv2D(16, 3, activation="relu"), ...])

Inputs are float (N, C, H, W) batches in 0..255 or 0..1. `Rescaling`, `Resizing` and `CenterCrop`
always apply, so a saved model resizes and scales its inputs itself at inference; the random layers
change images only in training mode (`model.train()`, i.e. inside `fit`) and are the identity in
`model.eval()`, as Keras's are at inference. Each draws one transform per image (Keras's RandomCrop
draws one per batch) on the batch's own device, through cnnlab.data.augment: flips move pixels,
rotations, zooms and translations are one `affine_warp` (grid_sample) call per batch.
Arguments mean what they mean in Keras 3: a rotation factor is a fraction of a full turn
(positive: counter-clockwise), a zoom factor > 0 zooms out and < 0 in, translations are fractions
of height and width (positive: down, right), fill modes are "reflect" (default), "nearest" and
"constant" (with `fill_value`); "wrap" is refused. Called on a NumPy batch (N, H, W, C) outside a
model, as the tutorials call `data_augmentation(images)`, a layer returns an (N, H, W, C) tensor
and the random ones augment (Keras's default `training=True` for a direct call).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.augment import affine_warp, random_flip
from cnnlab.errors import CnnlabError
from torch import nn

from cnnlab.models.layers import LAYER_TYPES, Layer, Shape, _expect_image, _named, register_layer
from cnnlab.models.symbolic import is_symbolic

__all__ = ["Rescaling", "Resizing", "CenterCrop", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
           "RandomContrast", "RandomBrightness", "RandomCrop", "PREPROCESSING_LAYERS", "RANDOM_LAYERS", "smart_resize",
           "augmenting", "rescales_inputs"]

FILL_MODES = ("reflect", "nearest", "constant")
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")
# Keras's resize names -> F.interpolate modes. TF's bilinear and nearest sample at half-pixel centres without
# antialiasing, as these modes do; torch's bicubic uses a = -0.75 where TF uses -0.5 (a small difference).
RESIZE_MODES = {"bilinear": "bilinear", "nearest": "nearest-exact", "bicubic": "bicubic", "area": "area"}


class _ImageLayer(Layer):
    """Base of the preprocessing layers: NumPy (N, H, W, C) calls as Keras, `training=` honoured."""

    def __init__(self, seed: int | None = None, input_shape: Sequence[int] | None = None, name: str | None = None,
                 trainable: bool = True, **ignored: Any) -> None:
        super().__init__(input_shape, name, trainable)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise CnnlabError(f"{type(self).__name__}: seed must be an integer or None; got {seed!r}")
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        x = args[0] if args else kwargs.pop("inputs", None)
        if isinstance(x, torch.Tensor) or is_symbolic(x):  # inside a model, or the functional API: as any layer
            return super().__call__(x, *args[1:], **kwargs)
        array = np.asarray(x, dtype=np.float32)  # Keras's eager call on channels-last arrays
        if array.ndim not in (3, 4):
            raise CnnlabError(f"{type(self).__name__}: expected images (N, H, W, C) or one image (H, W, C); "
                              f"got shape {array.shape}")
        batch = torch.from_numpy(np.ascontiguousarray(array[None] if array.ndim == 3 else array)).permute(0, 3, 1, 2)
        kwargs.setdefault("training", True)  # Keras's default for a direct call: random layers augment
        out = super().__call__(batch, **kwargs).permute(0, 2, 3, 1)  # (N, H, W, C) tensor, as Keras returns one
        return out[0] if array.ndim == 3 else out

    def compute_output_shape(self, shape: Shape) -> Shape:
        _expect_image(shape, type(self).__name__)
        return shape

    def _generator(self, device: torch.device) -> torch.Generator | None:
        """The layer's own generator on `device` when it has a seed (its draws then repeat), else None (global)."""
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def _uniform(self, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
        """(N,) uniform in [low, high), from the layer's generator."""
        return low + (high - low) * torch.rand(n, device=device, generator=self._generator(device))


def _factor_range(factor: Any, name: str, where: str, limit: float = 1.0) -> tuple[float, float]:
    """Keras's factor: a float f means (-f, f); a pair (lower, upper) is taken as is; values within +-limit."""
    if isinstance(factor, (int, float)) and not isinstance(factor, bool):
        low, high = -abs(float(factor)), abs(float(factor))
    elif isinstance(factor, (list, tuple)) and len(factor) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in factor):
        low, high = float(factor[0]), float(factor[1])
    else:
        raise CnnlabError(f"{where}: {name} must be a float or a pair (lower, upper); got {factor!r}, e.g. {name}=0.1")
    if low > high or max(abs(low), abs(high)) > limit:
        raise CnnlabError(f"{where}: {name}={factor!r} must be within [-{limit:g}, {limit:g}] with lower <= upper; "
                          f"e.g. {name}=(-0.2, 0.3)")
    return low, high


def _fill(fill_mode: str, interpolation: str, where: str) -> tuple[str, str]:
    if fill_mode not in FILL_MODES:
        hint = " ('wrap' is not supported: use 'reflect')" if fill_mode == "wrap" else ""
        raise CnnlabError(f"{where}: fill_mode={fill_mode!r} is invalid{hint}; expected 'reflect', 'nearest' or "
                          f"'constant'")
    if interpolation not in ("bilinear", "nearest"):
        raise CnnlabError(f"{where}: interpolation={interpolation!r} is invalid; expected 'bilinear' or 'nearest'")
    return fill_mode, interpolation


def _size(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CnnlabError(f"{where}: {name} must be a positive integer of pixels; got {value!r}")
    return value


def _value_range(value: Any, where: str) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and float(value[0]) < float(value[1])):
        raise CnnlabError(f"{where}: value_range must be (low, high) with low < high, e.g. (0, 255); got {value!r}")
    return float(value[0]), float(value[1])


def smart_resize(images: torch.Tensor, height: int, width: int, mode: str = "bilinear") -> torch.Tensor:
    """(N, C, H, W) float images centre-cropped to the aspect ratio of (height, width), then resized to it (Keras's
    `smart_resize`: no distortion).

    >>> smart_resize(torch.arange(8.0).view(1, 1, 2, 4), 2, 2).tolist()  # the middle 2x2, unchanged
    [[[[1.0, 2.0], [5.0, 6.0]]]]
    """
    _, _, h, w = images.shape
    crop_h = max(min(h, int(w * height / width)), 1)
    crop_w = max(min(w, int(h * width / height)), 1)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return _resize(images[:, :, top:top + crop_h, left:left + crop_w], height, width, mode)


def _resize(images: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    if tuple(images.shape[2:]) == (height, width):
        return images
    align = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(images, size=(height, width), mode=RESIZE_MODES[mode], **align)


class Rescaling(_ImageLayer):
    """x * scale + offset, always (Keras's Rescaling): Rescaling(1 / 255) maps 0..255 to [0, 1],
    Rescaling(1 / 127.5, offset=-1) to [-1, 1]. `scale` may be one value per channel.

    >>> Rescaling(1 / 255)(torch.full((1, 3, 2, 2), 255.0)).unique().tolist()
    [1.0]
    """

    def __init__(self, scale: float | Sequence[float], offset: float | Sequence[float] = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(None, **kwargs)
        self.scale, self.offset = _number_or_list(scale, "scale"), _number_or_list(offset, "offset")

    keeps_order = True  # elementwise: a vector's feature order passes through (see Layer.symbolic_output)

    def compute_output_shape(self, shape: Shape) -> Shape:
        return shape  # any input: images or vectors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _per_channel(self.scale, x) + _per_channel(self.offset, x)

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale, "offset": self.offset, **_named(self)}


def _number_or_list(value: Any, name: str) -> float | list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (list, tuple, np.ndarray)) and all(isinstance(float(v), float) for v in value):
        return [float(v) for v in value]
    raise CnnlabError(f"Rescaling: {name} must be a number or one number per channel; got {value!r}")


def _per_channel(value: float | list[float], x: torch.Tensor) -> Any:
    return value if isinstance(value, float) else torch.tensor(value, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)


class Resizing(_ImageLayer):
    """Resize every image to (height, width), always; `crop_to_aspect_ratio` crops the centre first (no distortion).

    >>> Resizing(4, 6)(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 3, 4, 6])
    """

    def __init__(self, height: int, width: int, interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
                 pad_to_aspect_ratio: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.height, self.width = _size(height, "height", "Resizing"), _size(width, "width", "Resizing")
        if interpolation not in RESIZE_MODES:
            raise CnnlabError(f"Resizing: interpolation={interpolation!r} is not supported; expected one of "
                              f"{', '.join(RESIZE_MODES)}")
        if pad_to_aspect_ratio:
            raise CnnlabError("Resizing: pad_to_aspect_ratio is not supported; use crop_to_aspect_ratio=True")
        self.interpolation, self.crop_to_aspect_ratio = interpolation, bool(crop_to_aspect_ratio)

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (_expect_image(shape, "Resizing")[0], self.height, self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop_to_aspect_ratio:
            return smart_resize(x, self.height, self.width, self.interpolation)
        return _resize(x, self.height, self.width, self.interpolation)

    def get_config(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "interpolation": self.interpolation,
                "crop_to_aspect_ratio": self.crop_to_aspect_ratio, **_named(self)}


class CenterCrop(_ImageLayer):
    """The central (height, width) window of every image, always; a smaller image is centre-cropped to the
    aspect ratio and resized instead (Keras 3).

    >>> CenterCrop(2, 2)(torch.arange(16.0).view(1, 1, 4, 4))[0, 0].tolist()
    [[5.0, 6.0], [9.0, 10.0]]
    """

    def __init__(self, height: int, width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.height, self.width = _size(height, "height", "CenterCrop"), _size(width, "width", "CenterCrop")

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (_expect_image(shape, "CenterCrop")[0], self.height, self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        if h < self.height or w < self.width:
            return smart_resize(x, self.height, self.width)
        top, left = (h - self.height) // 2, (w - self.width) // 2
        return x[:, :, top:top + self.height, left:left + self.width]

    def get_config(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, **_named(self)}


class RandomFlip(_ImageLayer):
    """In training, mirror each image left-right ("horizontal"), up-down ("vertical") or each independently
    ("horizontal_and_vertical", the default), each with probability 0.5.

    >>> layer = RandomFlip("horizontal").eval()
    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> torch.equal(layer(x), x)   # inference: the identity
    True
    """

    def __init__(self, mode: str = "horizontal_and_vertical", seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        if mode not in FLIP_MODES:
            raise CnnlabError(f"RandomFlip: mode={mode!r} is invalid; expected one of {', '.join(FLIP_MODES)}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        generator = self._generator(x.device)
        if self.mode != "vertical":
            x = random_flip(x, generator=generator)
        if self.mode != "horizontal":
            x = random_flip(x, generator=generator, vertical=True)
        return x

    def get_config(self) -> dict[str, Any]:
        return {"mode": self.mode, "seed": self.seed, **_named(self)}


class _RandomAffine(_ImageLayer):
    """Rotation, zoom and translation: one affine warp per image in training, identity at inference."""

    def __init__(self, fill_mode: str, interpolation: str, seed: int | None, fill_value: float,
                 **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self.fill_mode, self.interpolation = _fill(fill_mode, interpolation, type(self).__name__)
        self.fill_value = float(fill_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] == 0:
            return x
        n, device = x.shape[0], x.device
        angle, shift, scale = self._draw(n, x.shape[2], x.shape[3], device)
        zero = torch.zeros(n, device=device)
        return affine_warp(x, zero if angle is None else angle, torch.zeros(n, 2, device=device) if shift is None
                           else shift, torch.ones(n, device=device) if scale is None else scale, zero,
                           self.fill_mode, self.interpolation, self.fill_value)

    def _draw(self, n: int, height: int, width: int, device: torch.device) -> tuple[Any, Any, Any]:
        raise NotImplementedError

    def _fill_config(self) -> dict[str, Any]:
        return {"fill_mode": self.fill_mode, "interpolation": self.interpolation, "seed": self.seed,
                "fill_value": self.fill_value, **_named(self)}


class RandomRotation(_RandomAffine):
    """In training, turn each image by factor * 360 degrees, factor uniform in (lower, upper) (a float f: (-f, f));
    positive turns counter-clockwise (Keras 3).

    >>> x = torch.arange(9.0).view(1, 1, 3, 3)
    >>> RandomRotation((0.25, 0.25))(x).round()[0, 0].tolist()  # a quarter turn counter-clockwise
    [[2.0, 5.0, 8.0], [1.0, 4.0, 7.0], [0.0, 3.0, 6.0]]
    """

    def __init__(self, factor: float | Sequence[float], fill_mode: str = "reflect", interpolation: str = "bilinear",
                 seed: int | None = None, fill_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.factor = factor if isinstance(factor, (int, float)) else list(factor)
        self.low, self.high = _factor_range(factor, "factor", "RandomRotation")

    def _draw(self, n: int, height: int, width: int, device: torch.device) -> tuple[Any, Any, Any]:
        # affine_warp turns clockwise for positive angles (y points down); Keras's positive is counter-clockwise
        return -360.0 * self._uniform(n, self.low, self.high, device), None, None

    def get_config(self) -> dict[str, Any]:
        return {"factor": self.factor, **self._fill_config()}


class RandomZoom(_RandomAffine):
    """In training, zoom each image by 1 + factor (factor uniform in the range; > 0 zooms out, < 0 in), the width by
    its own `width_factor` draw or, when None, by the height's (the aspect ratio kept).

    >>> RandomZoom((1.0, 1.0), fill_mode="constant")(torch.ones(1, 1, 4, 4))[0, 0].tolist()  # 2x out: half size
    [[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """

    def __init__(self, height_factor: float | Sequence[float], width_factor: float | Sequence[float] | None = None,
                 fill_mode: str = "reflect", interpolation: str = "bilinear", seed: int | None = None,
                 fill_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.height_factor = height_factor if isinstance(height_factor, (int, float)) else list(height_factor)
        self.width_factor = width_factor if width_factor is None or isinstance(width_factor, (int, float)) \
            else list(width_factor)
        self.height_range = _factor_range(height_factor, "height_factor", "RandomZoom")
        self.width_range = None if width_factor is None else _factor_range(width_factor, "width_factor", "RandomZoom")

    def _draw(self, n: int, height: int, width: int, device: torch.device) -> tuple[Any, Any, Any]:
        zoom_y = 1 + self._uniform(n, *self.height_range, device)
        zoom_x = zoom_y if self.width_range is None else 1 + self._uniform(n, *self.width_range, device)
        # Keras's zoom maps output to input coordinates: 1.2 shows 1.2x as much, i.e. the content shrinks.
        return None, None, torch.stack([1 / zoom_x, 1 / zoom_y], 1)

    def get_config(self) -> dict[str, Any]:
        return {"height_factor": self.height_factor, "width_factor": self.width_factor, **self._fill_config()}


class RandomTranslation(_RandomAffine):
    """In training, move each image by a fraction of its height (positive: down) and of its width (positive: right),
    each uniform in its range (a float f: (-f, f)).

    >>> x = torch.arange(4.0).view(1, 1, 1, 4)
    >>> RandomTranslation(0, (0.25, 0.25), fill_mode="constant", fill_value=9.0)(x).tolist()  # 1 pixel right
    [[[[9.0, 0.0, 1.0, 2.0]]]]
    """

    def __init__(self, height_factor: float | Sequence[float], width_factor: float | Sequence[float],
                 fill_mode: str = "reflect", interpolation: str = "bilinear", seed: int | None = None,
                 fill_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.height_factor = height_factor if isinstance(height_factor, (int, float)) else list(height_factor)
        self.width_factor = width_factor if isinstance(width_factor, (int, float)) else list(width_factor)
        self.height_range = _factor_range(height_factor, "height_factor", "RandomTranslation")
        self.width_range = _factor_range(width_factor, "width_factor", "RandomTranslation")

    def _draw(self, n: int, height: int, width: int, device: torch.device) -> tuple[Any, Any, Any]:
        dy = self._uniform(n, *self.height_range, device) * height
        dx = self._uniform(n, *self.width_range, device) * width
        return None, torch.stack([dx, dy], 1), None

    def get_config(self) -> dict[str, Any]:
        return {"height_factor": self.height_factor, "width_factor": self.width_factor, **self._fill_config()}


class RandomContrast(_ImageLayer):
    """In training, (x - mean) * f + mean per image and channel (mean over the image), f uniform in
    [1 - lower, 1 + upper] (a float c: [1 - c, 1 + c]), clipped to `value_range`.

    >>> out = RandomContrast(0.5)(torch.tensor([[[[100.0, 200.0]]]]))  # the mean 150 stays
    >>> out.mean().item(), bool(25 <= (out[0, 0, 0, 1] - out[0, 0, 0, 0]).item() <= 150)
    (150.0, True)
    """

    def __init__(self, factor: float | Sequence[float], value_range: Sequence[float] = (0, 255),
                 seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self.factor = factor if isinstance(factor, (int, float)) else list(factor)
        low, high = _factor_range(factor, "factor", "RandomContrast")
        self.lower, self.upper = (-low, high) if isinstance(factor, (int, float)) else (low, high)
        if not (0 <= self.lower <= 1 and self.upper >= 0):
            raise CnnlabError(f"RandomContrast: factor={factor!r} must be in [0, 1] (the factor range is "
                              f"[1 - lower, 1 + upper]); e.g. factor=0.2")
        self.value_range = _value_range(value_range, "RandomContrast")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] == 0:
            return x
        n = x.shape[0]
        factor = self._uniform(n, 1 - self.lower, 1 + self.upper, x.device).view(n, 1, 1, 1)
        mean = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1): per image and channel, as Keras 3
        return ((x - mean) * factor + mean).clamp(*self.value_range)

    def get_config(self) -> dict[str, Any]:
        return {"factor": self.factor, "value_range": list(self.value_range), "seed": self.seed, **_named(self)}


class RandomBrightness(_ImageLayer):
    """In training, add delta * (high - low) of `value_range` to each image, delta uniform in the factor range
    (a float f: (-f, f)), clipped to `value_range`.

    >>> out = RandomBrightness((0.1, 0.1))(torch.tensor([[[[0.0, 250.0]]]]))  # + 0.1 * 255, clipped at 255
    >>> [round(v, 1) for v in out.flatten().tolist()]
    [25.5, 255.0]
    """

    def __init__(self, factor: float | Sequence[float], value_range: Sequence[float] = (0, 255),
                 seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self.factor = factor if isinstance(factor, (int, float)) else list(factor)
        self.low, self.high = _factor_range(factor, "factor", "RandomBrightness")
        self.value_range = _value_range(value_range, "RandomBrightness")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] == 0:
            return x
        n, (low, high) = x.shape[0], self.value_range
        delta = self._uniform(n, self.low, self.high, x.device).view(n, 1, 1, 1) * (high - low)
        return (x + delta).clamp(low, high)

    def get_config(self) -> dict[str, Any]:
        return {"factor": self.factor, "value_range": list(self.value_range), "seed": self.seed, **_named(self)}


class RandomCrop(_ImageLayer):
    """A random (height, width) window of each image in training; at inference (or when an image is smaller)
    the centre cropped to that aspect ratio and resized to it, as Keras 3 does.

    >>> RandomCrop(2, 3).eval()(torch.zeros(1, 1, 4, 6)).shape
    torch.Size([1, 1, 2, 3])
    """

    def __init__(self, height: int, width: int, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self.height, self.width = _size(height, "height", "RandomCrop"), _size(width, "width", "RandomCrop")

    def compute_output_shape(self, shape: Shape) -> Shape:
        return (_expect_image(shape, "RandomCrop")[0], self.height, self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if not self.training or h <= self.height or w <= self.width or n == 0:
            return smart_resize(x, self.height, self.width)
        generator = self._generator(x.device)
        top = torch.randint(0, h - self.height + 1, (n,), device=x.device, generator=generator)
        left = torch.randint(0, w - self.width + 1, (n,), device=x.device, generator=generator)
        rows = (top[:, None] + torch.arange(self.height, device=x.device))[:, None, :, None]  # (N, 1, h, 1)
        cols = (left[:, None] + torch.arange(self.width, device=x.device))[:, None, None, :]  # (N, 1, 1, w)
        out = x.gather(2, rows.expand(n, c, self.height, w))  # (N, C, h, W): each image its own rows
        return out.gather(3, cols.expand(n, c, self.height, self.width))

    def get_config(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "seed": self.seed, **_named(self)}


PREPROCESSING_LAYERS = (Rescaling, Resizing, CenterCrop, RandomFlip, RandomRotation, RandomZoom, RandomTranslation,
                        RandomContrast, RandomBrightness, RandomCrop)
RANDOM_LAYERS = (RandomFlip, RandomRotation, RandomZoom, RandomTranslation, RandomContrast, RandomBrightness,
                 RandomCrop)
for _layer_class in PREPROCESSING_LAYERS:  # model files rebuild them by class name (cnnlab.models imports this)
    if _layer_class.__name__ not in LAYER_TYPES:  # a second import of this file (pytest's doctests) keeps the first
        register_layer(_layer_class)


@contextlib.contextmanager
def augmenting(model: nn.Module, active: bool = True) -> Iterator[None]:
    """The model's random preprocessing layers in training mode for a while (the rest as they are): Keras's
    direct call `data_augmentation(images)` augments, while `predict` does not.

    >>> model = nn.Sequential(RandomFlip("horizontal", seed=0)).eval()
    >>> x = torch.arange(8.0).view(2, 1, 2, 2)
    >>> with augmenting(model):
    ...     changed = not torch.equal(model(x), x)
    >>> changed, model[0].training
    (True, False)
    """
    layers = [m for m in model.modules() if isinstance(m, RANDOM_LAYERS)] if active else []
    modes = [m.training for m in layers]
    for layer in layers:
        layer.train()
    try:
        yield
    finally:
        for layer, mode in zip(layers, modes, strict=True):
            layer.train(mode)


def rescales_inputs(model: nn.Module) -> bool:
    """True when the model scales its own inputs (a Rescaling or Normalization layer), so raw 0..255 pixels
    are what it expects.

    >>> rescales_inputs(nn.Sequential(Rescaling(1 / 255))), rescales_inputs(nn.Sequential(RandomFlip()))
    (True, False)
    """
    return any(isinstance(m, Rescaling) or type(m).__name__ == "Normalization" for m in model.modules())
