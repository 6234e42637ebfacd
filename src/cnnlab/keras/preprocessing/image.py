"""`keras.preprocessing.image`: `ImageDataGenerator` on cnnlab's batched augmentation, and the image utils.

A generator holds Keras's settings; `flow(x, y)` and `flow_from_directory(directory)` return
iterators (iterators.py) whose batches Keras's code can read with `next()`, and which `fit`
trains on at the engine's speed: the images stay uint8 (decoded once, into cnnlab's cache where
they fit), and augmentation plus standardization run on whole batches on the training device
(`affine_warp` and `random_flip` from cnnlab.data.augment: one `grid_sample` call per batch),
never image by image in Python as Keras does (the known `flow_from_directory` bottleneck).

Random draws follow Keras's ranges and units: rotation in degrees, width/height shifts as a
fraction of the size (< 1) or in pixels (>= 1; an int or list: whole pixels chosen from it, either
sign), zoom factors drawn apart for the two axes from [1 - z, 1 + z] (> 1 shows more of the image),
shear in degrees (cnnlab slants along x by tan(shear); Keras mixes sin and cos, a difference far
below one pixel at the usual 0.2), brightness a factor from `brightness_range`, channel shift an
offset clipped to the image's range. Differences, on purpose: shifts and warps are one batched
bilinear warp; "wrap" fill and ZCA whitening are refused; brightness multiplies the pixels in
their own range (Keras converts to 8-bit PIL images and back, which breaks [0, 1] inputs).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.augment import affine_warp, random_flip
from cnnlab.errors import CnnlabError
from cnnlab.keras.image_dataset import nhwc_numpy
from cnnlab.keras.preprocessing.iterators import DirectoryIterator, NumpyArrayIterator
from cnnlab.keras.utils import array_to_img, img_to_array, load_img, save_img

__all__ = ["ImageDataGenerator", "NumpyArrayIterator", "DirectoryIterator", "load_img", "img_to_array",
           "array_to_img", "save_img"]

FILL_MODES = ("nearest", "constant", "reflect")
EPSILON = 1e-6  # Keras divides by std + 1e-6


class ImageDataGenerator:
    """Keras's `ImageDataGenerator`: random augmentation and standardization of image batches.

    `flow(x, y)` iterates over NumPy images (N, H, W, C); `flow_from_directory(dir)` over a folder
    of class subfolders; `fit(x)` computes the per-channel mean and std that `featurewise_center`
    and `featurewise_std_normalization` use. The order is Keras's: augment, then
    preprocessing_function, rescale, samplewise, featurewise.

    With `validation_split`, `subset="validation"` takes the first `validation_split` of the data
    (of each class folder for flow_from_directory) and `subset="training"` the rest, as in Keras.
    Keras augments the validation subset too, because both subsets share the generator's settings
    (keras-preprocessing issue 218: validation metrics then measure augmented images). cnnlab does
    not: a `subset="validation"` iterator only standardizes (rescale, featurewise, ...), so
    validation scores the images as they are.

    >>> x = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype("uint8")
    >>> gen = ImageDataGenerator(rescale=1 / 255, rotation_range=20, horizontal_flip=True)
    >>> images, labels = next(gen.flow(x, np.arange(8), batch_size=4, seed=1))
    >>> images.shape, images.dtype, bool(0 <= images.min() and images.max() <= 1), labels.shape
    ((4, 16, 16, 3), dtype('float32'), True, (4,))
    """

    def __init__(self, featurewise_center: bool = False, samplewise_center: bool = False,
                 featurewise_std_normalization: bool = False, samplewise_std_normalization: bool = False,
                 zca_whitening: bool = False, zca_epsilon: float = 1e-6, rotation_range: float = 0,
                 width_shift_range: Any = 0.0, height_shift_range: Any = 0.0,
                 brightness_range: Sequence[float] | None = None, shear_range: float = 0.0, zoom_range: Any = 0.0,
                 channel_shift_range: float = 0.0, fill_mode: str = "nearest", cval: float = 0.0,
                 horizontal_flip: bool = False, vertical_flip: bool = False, rescale: float | None = None,
                 preprocessing_function: Callable[[np.ndarray], np.ndarray] | None = None,
                 data_format: str | None = None, validation_split: float = 0.0, interpolation_order: int = 1,
                 dtype: Any = None) -> None:
        where = "ImageDataGenerator"
        if zca_whitening:
            raise CnnlabError(f"{where}: zca_whitening is not supported; use featurewise_center and "
                              f"featurewise_std_normalization (per-channel standardization)")
        if fill_mode not in FILL_MODES:
            hint = "; 'wrap' (tiling) is not supported, use 'reflect'" if fill_mode == "wrap" else ""
            raise CnnlabError(f"{where}: fill_mode={fill_mode!r} is invalid; expected 'nearest', 'constant' or "
                              f"'reflect'{hint}")
        if interpolation_order not in (0, 1):
            raise CnnlabError(f"{where}: interpolation_order={interpolation_order!r} is not supported; use 1 "
                              f"(bilinear, Keras's default) or 0 (nearest)")
        if data_format not in (None, "channels_last"):
            raise CnnlabError(f"{where}: data_format={data_format!r} is not supported; cnnlab.keras images are "
                              f"channels_last (N, H, W, C)")
        if validation_split and not (isinstance(validation_split, (int, float)) and 0 < validation_split < 1):
            raise CnnlabError(f"{where}: validation_split must be strictly between 0 and 1; got {validation_split!r}")
        if preprocessing_function is not None and not callable(preprocessing_function):
            raise CnnlabError(f"{where}: preprocessing_function must be a function of an image array; got "
                              f"{type(preprocessing_function).__name__}")
        self.featurewise_center = bool(featurewise_center or featurewise_std_normalization)  # Keras: std implies it
        self.featurewise_std_normalization = bool(featurewise_std_normalization)
        self.samplewise_center = bool(samplewise_center or samplewise_std_normalization)
        self.samplewise_std_normalization = bool(samplewise_std_normalization)
        self.rotation_range = _non_negative(rotation_range, "rotation_range")
        self.width_shift_range = _shift_range(width_shift_range, "width_shift_range")
        self.height_shift_range = _shift_range(height_shift_range, "height_shift_range")
        self.shear_range = _non_negative(shear_range, "shear_range")
        self.zoom_range = _zoom_range(zoom_range)
        self.brightness_range = _brightness_range(brightness_range)
        self.channel_shift_range = _non_negative(channel_shift_range, "channel_shift_range")
        self.fill_mode, self.cval = fill_mode, float(cval)
        self.interpolation = "bilinear" if interpolation_order == 1 else "nearest"
        self.horizontal_flip, self.vertical_flip = bool(horizontal_flip), bool(vertical_flip)
        self.rescale = rescale
        self.preprocessing_function = preprocessing_function
        self._validation_split = float(validation_split or 0.0)
        self.mean: np.ndarray | None = None  # (1, 1, C) after fit, as Keras keeps them
        self.std: np.ndarray | None = None

    # ------------------------------------------------------------------ iterators
    def flow(self, x: Any, y: Any = None, batch_size: int = 32, shuffle: bool = True, sample_weight: Any = None,
             seed: int | None = None, save_to_dir: str | None = None, save_prefix: str = "",
             save_format: str = "png", ignore_class_split: bool = False,
             subset: str | None = None) -> NumpyArrayIterator:
        """An iterator over batches of `x` (N, H, W, C) (and `y`, `sample_weight`), augmented and standardized."""
        return NumpyArrayIterator(x, y, self, batch_size=batch_size, shuffle=shuffle, sample_weight=sample_weight,
                                  seed=seed, subset=subset, ignore_class_split=ignore_class_split,
                                  save_to_dir=save_to_dir, save_prefix=save_prefix, save_format=save_format)

    def flow_from_directory(self, directory: str | Path, target_size: tuple[int, int] = (256, 256),
                            color_mode: str = "rgb", classes: list[str] | None = None,
                            class_mode: str | None = "categorical", batch_size: int = 32, shuffle: bool = True,
                            seed: int | None = None, save_to_dir: str | None = None, save_prefix: str = "",
                            save_format: str = "png", follow_links: bool = False, subset: str | None = None,
                            interpolation: str = "nearest", keep_aspect_ratio: bool = False) -> DirectoryIterator:
        """An iterator over a folder of class subfolders, printing "Found N images belonging to K classes."."""
        return DirectoryIterator(directory, self, target_size=target_size, color_mode=color_mode, classes=classes,
                                 class_mode=class_mode, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                 subset=subset, interpolation=interpolation, keep_aspect_ratio=keep_aspect_ratio,
                                 save_to_dir=save_to_dir, save_prefix=save_prefix, save_format=save_format)

    # ------------------------------------------------------------------ statistics
    def fit(self, x: Any, augment: bool = False, rounds: int = 1, seed: int | None = None) -> None:
        """Per-channel mean (and std) of `x` (N, H, W, C) after rescale, for the featurewise options.

        >>> gen = ImageDataGenerator(featurewise_center=True)
        >>> gen.fit(np.stack([np.zeros((2, 2, 1)), np.full((2, 2, 1), 4.0)]))
        >>> gen.mean.ravel().tolist(), gen.standardize(np.full((2, 2, 1), 4.0)).ravel().tolist()
        ([2.0], [2.0, 2.0, 2.0, 2.0])
        """
        array = np.asarray(x, dtype=np.float32)
        if array.ndim != 4:
            raise CnnlabError(f"ImageDataGenerator.fit: x must be images (N, H, W, C); got shape {array.shape}")
        images = torch.from_numpy(array.copy()).permute(0, 3, 1, 2)  # (N, C, H, W)
        if self.rescale:
            images = images * self.rescale
        if augment:
            if seed is not None:
                torch.manual_seed(seed)  # Keras seeds NumPy's global generator here
            images = torch.cat([self.augment(images) for _ in range(rounds)])
        if self.featurewise_center:
            mean = images.mean(dim=(0, 2, 3), dtype=torch.float64)
            self.mean = mean.numpy().astype(np.float32).reshape(1, 1, -1)
            images = images - mean.float().view(1, -1, 1, 1)
        if self.featurewise_std_normalization:
            std = images.std(dim=(0, 2, 3), unbiased=False)
            self.std = std.numpy().astype(np.float32).reshape(1, 1, -1)

    # ------------------------------------------------------------------ the batched transforms
    def augment(self, images: torch.Tensor, bound: float = 255.0) -> torch.Tensor:
        """(N, C, H, W) images, each with its own random transform (float32 out); `bound` is the pixel maximum
        brightness clips to (255 for 0..255 data, 1 for [0, 1] data).

        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> out = ImageDataGenerator(vertical_flip=True).augment(x.repeat(32, 1, 1, 1))
        >>> all(torch.equal(o, x[0]) or torch.equal(o, x[0].flip(1)) for o in out)  # each flipped up-down or not
        True
        """
        x = images.to(torch.float32)
        n, _, height, width = x.shape
        if n == 0:
            return x
        device = x.device
        if self.rotation_range or self.width_shift_range or self.height_shift_range or self.shear_range \
                or self.zoom_range != (1.0, 1.0):
            angle = _uniform(n, self.rotation_range, device)
            shift = torch.stack([_shift(self.width_shift_range, width, n, device),
                                 _shift(self.height_shift_range, height, n, device)], 1)  # (N, 2): dx, dy pixels
            low, high = self.zoom_range
            zoom = low + (high - low) * torch.rand(n, 2, device=device)  # (N, 2): Keras's zx, zy drawn apart
            # Keras's zoom maps output to input coordinates, so 1.2 shows 1.2x as much: the content shrinks.
            x = affine_warp(x, angle, shift, 1 / zoom, _uniform(n, self.shear_range, device), self.fill_mode,
                            self.interpolation, self.cval)
        if self.channel_shift_range:
            low_x, high_x = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
            offset = _uniform(n, self.channel_shift_range, device).view(n, 1, 1, 1)
            x = torch.minimum(torch.maximum(x + offset, low_x), high_x)
        if self.horizontal_flip:
            x = random_flip(x)
        if self.vertical_flip:
            x = random_flip(x, vertical=True)
        if self.brightness_range is not None:
            low, high = self.brightness_range
            factor = low + (high - low) * torch.rand(n, device=device)
            x = (x * factor.view(n, 1, 1, 1)).clamp(0, bound)
        return x

    def standardize_batch(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float images through preprocessing_function, rescale, samplewise and featurewise steps.

        >>> gen = ImageDataGenerator(rescale=0.5, samplewise_center=True)
        >>> gen.standardize_batch(torch.tensor([[[[2.0, 6.0]]]])).tolist()
        [[[[-1.0, 1.0]]]]
        """
        x = images.to(torch.float32)
        if self.preprocessing_function is not None:
            x = _numpy_function(self.preprocessing_function, x)
        if self.rescale:
            x = x * self.rescale
        if self.samplewise_center:
            x = x - x.mean((1, 2, 3), keepdim=True)
        if self.samplewise_std_normalization:
            x = x / (x.std((1, 2, 3), unbiased=False, keepdim=True) + EPSILON)
        if self.featurewise_center:
            if self.mean is None:
                warnings.warn("This ImageDataGenerator specifies featurewise_center but was not fit on any "
                              "training data; call .fit(x_train) first", stacklevel=3)
            else:
                x = x - torch.as_tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        if self.featurewise_std_normalization and self.std is not None:
            x = x / (torch.as_tensor(self.std, device=x.device).view(1, -1, 1, 1) + EPSILON)
        return x

    # ------------------------------------------------------------------ Keras's NumPy methods
    def standardize(self, x: Any) -> np.ndarray:
        """Keras's `standardize` on one image (H, W, C) or a batch (N, H, W, C), returned as a new array.

        >>> ImageDataGenerator(rescale=1 / 255).standardize(np.full((2, 2, 3), 255.0)).max()
        np.float32(1.0)
        """
        array, single = _batch_of(x, "standardize")
        out = nhwc_numpy(self.standardize_batch(torch.from_numpy(array).permute(0, 3, 1, 2)))
        return out[0] if single else out

    def random_transform(self, x: Any, seed: int | None = None) -> np.ndarray:
        """One image (H, W, C) (or a batch) with a random augmentation, as Keras's `random_transform`.

        >>> gen = ImageDataGenerator(rotation_range=30)
        >>> image = np.random.default_rng(0).uniform(0, 255, (8, 8, 3))
        >>> np.array_equal(gen.random_transform(image, seed=1), gen.random_transform(image, seed=1))
        True
        """
        array, single = _batch_of(x, "random_transform")
        images = torch.from_numpy(array).permute(0, 3, 1, 2)
        if seed is None:
            out = nhwc_numpy(self.augment(images, float(max(array.max(), 1.0))))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = nhwc_numpy(self.augment(images, float(max(array.max(), 1.0))))
        return out[0] if single else out


def _batch_of(x: Any, where: str) -> tuple[np.ndarray, bool]:
    array = np.asarray(x, dtype=np.float32)
    if array.ndim not in (3, 4):
        raise CnnlabError(f"{where}: expected an image (H, W, C) or a batch (N, H, W, C); got shape {array.shape}")
    return (array[None], True) if array.ndim == 3 else (array, False)


def _numpy_function(function: Callable[[np.ndarray], np.ndarray], x: torch.Tensor) -> torch.Tensor:
    """A user's preprocessing_function on a (N, C, H, W) batch: called once on the (N, H, W, C) NumPy batch
    (Keras's preprocess_input functions take batches); a function that only takes single images (it raises,
    or returns another shape) is called image by image."""
    array = nhwc_numpy(x)
    try:
        out = np.asarray(function(array.copy()), dtype=np.float32)
    except Exception:  # a function written for one (H, W, C) image; its own error repeats below if it is a bug
        out = None
    if out is None or out.shape != array.shape:
        out = np.stack([np.asarray(function(image), dtype=np.float32) for image in array.copy()])
    return torch.from_numpy(np.ascontiguousarray(out)).permute(0, 3, 1, 2).to(x.device)


def _uniform(n: int, bound: float, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, device=device) * 2 - 1) * bound  # (N,) uniform in [-bound, bound)


def _shift(spec: Any, size: int, n: int, device: torch.device) -> torch.Tensor:
    """(N,) pixel shifts drawn as Keras draws width/height_shift_range."""
    if isinstance(spec, float):
        pixels = _uniform(n, spec, device)
        return pixels * size if spec < 1 else pixels
    choices = torch.arange(spec, dtype=torch.float32) if isinstance(spec, int) else torch.tensor(spec)
    picked = choices[torch.randint(len(choices), (n,))] * (torch.randint(2, (n,)) * 2 - 1)  # a value, either sign
    if float(choices.max()) < 1:
        picked = picked * size
    return picked.to(device, torch.float32)


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CnnlabError(f"ImageDataGenerator: {name} must be a number >= 0; got {value!r}")
    return float(value)


def _shift_range(value: Any, name: str) -> Any:
    """Keras's shift spec: a float (fraction if < 1, pixels if >= 1), an int (pixels 0..n-1) or a list of values."""
    if isinstance(value, (list, tuple, np.ndarray)):
        values = [float(v) for v in value]
        if not values:
            raise CnnlabError(f"ImageDataGenerator: {name} is an empty list; give shifts to choose from, e.g. [0, 4]")
        return values
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CnnlabError(f"ImageDataGenerator: {name} must be a float (a fraction, or pixels if >= 1), an int or "
                          f"a list; got {value!r}")
    return value if isinstance(value, int) and value > 0 else float(value)


def _zoom_range(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 1.0 - value, 1.0 + value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    raise CnnlabError(f"ImageDataGenerator: zoom_range must be a float or [lower, upper]; got {value!r}")


def _brightness_range(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise CnnlabError(f"ImageDataGenerator: brightness_range must be [lower, upper] factors, e.g. [0.8, 1.2]; "
                          f"got {value!r}")
    return float(value[0]), float(value[1])
