"""`keras.utils` on cnnlab: labels to one-hot, seeding, image files to arrays and back, `plot_model`.

Signatures and results follow tf.keras (channels-last arrays, float32, PIL images). Where cnnlab
differs, it is on purpose: images are turned upright by their EXIF orientation (as every cnnlab
decode is, so `load_img` gives the pixels `cnnlab predict` sees); a file that cannot be decoded,
or an argument Keras would reject with a bare ValueError or IndexError, raises one `CnnlabError`
line that names the file or the argument and the fix.
"""

from __future__ import annotations

import io
import random
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch
from numpy.typing import ArrayLike, DTypeLike
from PIL import Image, ImageOps

from cnnlab.data.images import _convert, _decode_error, _wide_to_8bit, open_image
from cnnlab.errors import CnnlabError, one_line
from cnnlab.keras.image_dataset import image_dataset_from_directory

__all__ = ["to_categorical", "set_random_seed", "load_img", "img_to_array", "array_to_img", "save_img",
           "plot_model", "image_dataset_from_directory"]

COLOR_MODES = ("grayscale", "rgb", "rgba")
DATA_FORMATS = ("channels_last", "channels_first")
INTERPOLATIONS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                  "bicubic": Image.Resampling.BICUBIC, "hamming": Image.Resampling.HAMMING,
                  "box": Image.Resampling.BOX, "lanczos": Image.Resampling.LANCZOS}
# Modes Keras's load_img keeps for color_mode="grayscale" (8-, 16- and 32-bit gray); others become "L".
KERAS_GRAY_MODES = ("L", "I;16", "I")
SEED_LIMIT = 2**32  # numpy's global seed must be below this


def to_categorical(y: ArrayLike, num_classes: int | None = None, dtype: DTypeLike = "float32") -> np.ndarray:
    """Integer class labels -> one-hot rows: shape y.shape + (num_classes,), a trailing axis of 1 dropped.

    `num_classes` defaults to the largest label + 1.

    >>> to_categorical([0, 2, 1])
    array([[1., 0., 0.],
           [0., 0., 1.],
           [0., 1., 0.]], dtype=float32)
    >>> to_categorical(np.array([[1], [0]]), num_classes=4).shape   # (N, 1) labels, as CIFAR-10's
    (2, 4)
    """
    labels = _integer_labels(y)
    shape = labels.shape
    if len(shape) > 1 and shape[-1] == 1:  # Keras: (N, 1) -> (N, C), not (N, 1, C)
        shape = shape[:-1]
    flat = labels.reshape(-1)
    if num_classes is None:
        if flat.size == 0:
            raise CnnlabError("to_categorical: y is empty, so the number of classes cannot be inferred; "
                              "pass num_classes")
        num_classes = int(flat.max()) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise CnnlabError(f"to_categorical: num_classes must be a positive integer, got {num_classes!r}")
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= num_classes):
        raise CnnlabError(f"to_categorical: labels must be in 0..{num_classes - 1} for num_classes={num_classes}, "
                          f"got labels from {int(flat.min())} to {int(flat.max())}; pass a larger num_classes or "
                          f"map the labels to 0..{num_classes - 1}")
    one_hot = np.zeros((flat.size, int(num_classes)), dtype=dtype)
    one_hot[np.arange(flat.size), flat] = 1
    return one_hot.reshape(*shape, int(num_classes))


def _integer_labels(y: ArrayLike) -> np.ndarray:
    try:
        labels = np.asarray(y)
    except (TypeError, ValueError, RuntimeError) as error:  # ragged lists, tensors on a GPU, ...
        raise CnnlabError(f"to_categorical: y must be an array of integer labels ({one_line(error)})") from error
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise CnnlabError("to_categorical: y holds non-integer values (e.g. probabilities or NaN); "
                              "pass integer class labels such as [0, 2, 1]")
    elif labels.dtype.kind not in "iub":
        raise CnnlabError(f"to_categorical: y must hold integer class labels, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def set_random_seed(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (every device), as Keras seeds
    random, numpy and its backend, so a program's draws repeat run after run.

    >>> set_random_seed(42); a = np.random.rand(), torch.rand(1).item()
    >>> set_random_seed(42); a == (np.random.rand(), torch.rand(1).item())
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise CnnlabError(f"set_random_seed: seed must be an integer in 0..{SEED_LIMIT - 1}, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed))
    torch.manual_seed(int(seed))


def load_img(path: str | Path | io.BytesIO, color_mode: str = "rgb", target_size: tuple[int, int] | None = None,
             interpolation: str = "nearest", keep_aspect_ratio: bool = False) -> Image.Image:
    """An image file as a PIL image in `color_mode` ("grayscale", "rgb", "rgba"), optionally resized to
    `target_size` = (height, width) with `interpolation`; `keep_aspect_ratio` crops the centre to the
    target's aspect ratio first instead of stretching. Unlike Keras, only JPEG, PNG, WebP, BMP and GIF
    files are decoded, and only within cnnlab's decode budget (`cnnlab.data.images.set_max_image_pixels`).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "wide.png"
    >>> Image.new("RGB", (64, 48), "red").save(path)
    >>> image = load_img(path, color_mode="grayscale", target_size=(28, 28))
    >>> image.mode, image.size
    ('L', (28, 28))
    """
    if color_mode not in COLOR_MODES:
        raise CnnlabError(f"load_img: color_mode must be 'grayscale', 'rgb' or 'rgba', got {color_mode!r}")
    if interpolation not in INTERPOLATIONS:
        raise CnnlabError(f"load_img: interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    size = _target_size(target_size)
    if not isinstance(path, (str, Path, io.BytesIO)):
        raise CnnlabError(f"load_img: path must be a file path (str or Path) or an io.BytesIO, got "
                          f"{type(path).__name__}")
    name = "<BytesIO>" if isinstance(path, io.BytesIO) else str(path)
    try:
        # cnnlab's one gate: allowed formats only, the decode budget checked from the header, no named pipes
        with open_image(path) as opened:
            image = ImageOps.exif_transpose(opened)  # decodes every pixel into a copy: the file can close
        image = _to_color_mode(image, color_mode)
        if size is not None and image.size != (size[1], size[0]):
            image = _resize(image, size, INTERPOLATIONS[interpolation], keep_aspect_ratio)
    # Pillow signals a bad file with OSError, SyntaxError, ValueError, struct.error and others;
    # to the user they all mean this file cannot be read.
    except Exception as error:
        raise _decode_error(name, error) from error
    return image


def _target_size(target_size: object) -> tuple[int, int] | None:
    if target_size is None:
        return None
    if (isinstance(target_size, (tuple, list)) and len(target_size) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in target_size)):
        return int(target_size[0]), int(target_size[1])
    raise CnnlabError(f"load_img: target_size must be (height, width), two positive integers, got {target_size!r}")


def _to_color_mode(image: Image.Image, color_mode: str) -> Image.Image:
    """Keras's conversions, with cnnlab's for the modes Pillow converts badly (palette transparency,
    16-bit and float images, which Pillow clips to white instead of scaling)."""
    if color_mode == "grayscale":
        return image if image.mode in KERAS_GRAY_MODES else _convert(image, 1)
    if color_mode == "rgb":
        return image if image.mode == "RGB" else _convert(image, 3)
    if image.mode == "RGBA":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _wide_to_8bit(image)
    return image.convert("RGBA")


def _resize(image: Image.Image, size: tuple[int, int], resample: Image.Resampling,
            keep_aspect_ratio: bool) -> Image.Image:
    target_width, target_height = size[1], size[0]
    if not keep_aspect_ratio:
        return image.resize((target_width, target_height), resample)
    # Keras's centre crop: the largest box of the target's aspect ratio inside the image.
    width, height = image.size
    crop_height = min(height, (width * target_height) // target_width)
    crop_width = min(width, (height * target_width) // target_height)
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return image.resize((target_width, target_height), resample, box=(left, top, left + crop_width, top + crop_height))


def img_to_array(img: Image.Image | ArrayLike, data_format: str | None = None, dtype: DTypeLike = "float32"
                 ) -> np.ndarray:
    """A PIL image -> array (H, W, C) (channels-last, the default) or (C, H, W), as `dtype` (float32).

    >>> img_to_array(Image.new("L", (4, 2), 7)).shape, img_to_array(Image.new("RGB", (4, 2))).dtype
    ((2, 4, 1), dtype('float32'))
    """
    channels_first = _channels_first(data_format, "img_to_array")
    x = np.asarray(img, dtype=dtype)
    if x.ndim == 2:
        return x[None] if channels_first else x[:, :, None]
    if x.ndim == 3:
        return x.transpose(2, 0, 1) if channels_first else x
    raise CnnlabError(f"img_to_array: expected an image (2-D gray or 3-D color), got an array of shape {x.shape}")


def array_to_img(x: ArrayLike, data_format: str | None = None, scale: bool = True, dtype: DTypeLike = "float32"
                 ) -> Image.Image:
    """A (H, W, C) array (C = 1, 3 or 4) -> PIL image "L", "RGB" or "RGBA".

    With `scale` (the default) values are stretched to 0..255 (min -> 0, max -> 255), so [0, 1]
    floats work; without it they must already be 0..255. Fractions are cut, as Keras does.

    >>> img_to_array(array_to_img(np.array([[[0.0], [0.5], [1.0]]]))).ravel().tolist()
    [0.0, 127.0, 255.0]
    """
    channels_first = _channels_first(data_format, "array_to_img")
    try:
        values = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise CnnlabError(f"array_to_img: x must be a numeric array ({one_line(error)})") from error
    if values.ndim != 3:
        raise CnnlabError(f"array_to_img: expected one image of rank 3 (height, width, channels), got shape "
                          f"{values.shape}; for a batch pass x[i]")
    if channels_first:
        values = values.transpose(1, 2, 0)
    if values.shape[2] not in (1, 3, 4):
        raise CnnlabError(f"array_to_img: expected 1, 3 or 4 channels (gray, RGB, RGBA), got shape {values.shape}"
                          + ("; for (C, H, W) arrays pass data_format='channels_first'" if not channels_first else ""))
    if values.size == 0:
        raise CnnlabError(f"array_to_img: x is empty (shape {values.shape}); expected at least one pixel")
    if not np.all(np.isfinite(values)):
        raise CnnlabError("array_to_img: x holds NaN or infinite values")
    if scale:
        values = values - values.min()
        peak = values.max()
        if peak != 0:
            values = values / peak
        values = values * 255
    elif values.min() < 0 or (values.shape[2] != 1 and values.max() > 255):
        raise CnnlabError(f"array_to_img: with scale=False values must be in 0..255, got {values.min()}.."
                          f"{values.max()}; pass scale=True to stretch them")
    if values.shape[2] == 1:
        if values.max() > 255:  # Keras keeps wide gray values as 32-bit mode "I"
            return Image.fromarray(values[:, :, 0].astype("int32"), "I")
        return Image.fromarray(values[:, :, 0].astype("uint8"), "L")
    return Image.fromarray(values.astype("uint8"), "RGBA" if values.shape[2] == 4 else "RGB")


def save_img(path: str | Path | IO[bytes], x: ArrayLike, data_format: str | None = None,
             file_format: str | None = None, scale: bool = True, **kwargs: Any) -> None:
    """Write a (H, W, C) array as an image file; the format follows the extension unless `file_format`
    is given (needed for file objects). `scale` as in `array_to_img`; `kwargs` go to PIL's `save`.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "gradient.png"
    >>> save_img(path, np.arange(12, dtype=np.uint8).reshape(2, 2, 3), scale=False)
    >>> img_to_array(load_img(path))[1, 1].tolist()
    [9.0, 10.0, 11.0]
    """
    if file_format is None and isinstance(path, (str, Path)):
        file_format = Path(path).suffix[1:].lower() or None
    if file_format is not None and file_format.lower() == "jpg":
        file_format = "jpeg"  # Pillow's name
    image = array_to_img(x, data_format=data_format, scale=scale)
    if image.mode == "RGBA" and file_format is not None and file_format.lower() == "jpeg":
        warnings.warn("The JPEG format does not support RGBA images, converting to RGB.", stacklevel=2)
        image = image.convert("RGB")
    name = str(path) if isinstance(path, (str, Path)) else "<file object>"
    try:
        image.save(path, format=file_format, **kwargs)
    except (ValueError, KeyError) as error:  # Pillow: unknown extension or format name
        raise CnnlabError(f"save_img: cannot write {name!r} as {file_format or 'an image'} ({one_line(error)}); "
                          f"use an extension such as .png or .jpg, or pass file_format='png'") from error
    except OSError as error:
        raise CnnlabError(f"save_img: cannot write {name!r} ({one_line(error)})") from error


def _channels_first(data_format: str | None, caller: str) -> bool:
    if data_format is None:
        return False  # Keras's default image_data_format(), and cnnlab.keras's only one
    if data_format not in DATA_FORMATS:
        raise CnnlabError(f"{caller}: data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
    return data_format == "channels_first"


class _Model(Protocol):
    @property
    def layers(self) -> Sequence[Any]: ...


def plot_model(model: _Model, to_file: str | Path = "model.png", show_shapes: bool = False, show_dtype: bool = False,
               show_layer_names: bool = True, rankdir: str = "TB", expand_nested: bool = False, dpi: int = 96,
               layer_range: Sequence[str] | None = None, show_layer_activations: bool = False,
               show_trainable: bool = False, splines: str = "ortho") -> None:
    """Draw the model's layers as boxes joined by arrows (top to bottom; `rankdir="LR"`: left to right)
    into `to_file` (.png, .pdf, .svg, ...), with matplotlib: no graphviz needed.

    Each box shows "name (ClassName)" (only the class with `show_layer_names=False`), and with
    `show_shapes` the output shape; `show_dtype`, `show_layer_activations` and `show_trainable`
    add a line where the layer has that attribute. `layer_range` = [first, last] (names or
    regular expressions matched at the start of names) draws only those layers, both included.
    `expand_nested` draws the layers of a nested model in its place. `splines` (graphviz's edge
    style) is accepted and ignored: arrows are straight. Returns None (Keras returns an IPython image
    in notebooks).

    >>> import tempfile
    >>> class Dense:
    ...     def __init__(self, name, units): self.name, self.output_shape = name, (None, units)
    >>> class Model:
    ...     layers = [Dense("dense", 128), Dense("dense_1", 10)]
    >>> path = Path(tempfile.mkdtemp()) / "model.png"
    >>> plot_model(Model(), to_file=path, show_shapes=True)
    >>> path.stat().st_size > 0
    True
    """
    from cnnlab.viz.graph import LayerBox, plot_layer_stack  # matplotlib is imported only when drawing

    layers = _flatten(_model_layers(model), expand_nested)
    if layer_range is not None:
        layers = _select_range(layers, layer_range)
    boxes = []
    for prefix, layer in layers:
        notes = []
        if show_dtype and getattr(layer, "dtype", None) is not None:
            notes.append(f"dtype: {_dtype_text(layer.dtype)}")
        activation = getattr(layer, "activation", None)
        if show_layer_activations and activation is not None:
            notes.append(f"activation: {getattr(activation, '__name__', activation)}")
        if show_trainable and getattr(layer, "trainable", None) is not None:
            notes.append(f"trainable: {bool(layer.trainable)}")
        name = f"{prefix}{getattr(layer, 'name', '')}" if show_layer_names else ""
        shape = _shape_text(layer) if show_shapes else ""
        boxes.append(LayerBox(name, type(layer).__name__, shape, tuple(notes)))
    edges = None if expand_nested or layer_range is not None else _graph_edges(model, [layer for _, layer in layers])
    plot_layer_stack(boxes, to_file, direction=rankdir, dpi=dpi, edges=edges)


def _graph_edges(model: object, layers: list[Any]) -> list[tuple[int, int]] | None:
    """A functional model's connections as (producer, consumer) indices into `layers`; None for a stack."""
    plan = getattr(model, "nodes", None)
    if not isinstance(plan, list):
        return None
    where = {id(layer): i for i, layer in enumerate(layers)}
    edges = set()
    for node in plan:
        for tensor in node.inputs:
            if tensor.node is not None and id(tensor.node.layer) in where and id(node.layer) in where:
                edges.add((where[id(tensor.node.layer)], where[id(node.layer)]))
    return sorted(edges)


def _model_layers(model: object) -> list[Any]:
    layers = getattr(model, "layers", None)
    if layers is None or isinstance(layers, (str, bytes)):
        raise CnnlabError(f"plot_model: expected a model with a .layers list, got {type(model).__name__}")
    layers = list(layers)
    if not layers:
        raise CnnlabError("plot_model: the model has no layers yet; add layers (and an input shape) first")
    return layers


def _flatten(layers: list[Any], expand_nested: bool, prefix: str = "") -> list[tuple[str, Any]]:
    """(name prefix, layer) pairs; a nested model's layers take its place when `expand_nested`."""
    flat: list[tuple[str, Any]] = []
    for layer in layers:
        inner = getattr(layer, "layers", None)
        if expand_nested and isinstance(inner, (list, tuple)) and inner:
            flat.extend(_flatten(list(inner), True, f"{prefix}{getattr(layer, 'name', '')}/"))
        else:
            flat.append((prefix, layer))
    return flat


def _select_range(layers: list[tuple[str, Any]], layer_range: Sequence[str]) -> list[tuple[str, Any]]:
    if isinstance(layer_range, str) or len(layer_range) != 2 or not all(isinstance(p, str) for p in layer_range):
        raise CnnlabError(f"plot_model: layer_range must be [first layer name, last layer name], got {layer_range!r}")
    names = [f"{prefix}{getattr(layer, 'name', '')}" for prefix, layer in layers]
    bounds = []
    for pattern in layer_range:
        try:
            index = next((i for i, n in enumerate(names) if n == pattern or re.match(pattern, n)), None)
        except re.error as error:
            raise CnnlabError(f"plot_model: layer_range entry {pattern!r} is not a valid pattern ({error})") from error
        if index is None:
            raise CnnlabError(f"plot_model: no layer matches {pattern!r} in layer_range; layers: {', '.join(names)}")
        bounds.append(index)
    if bounds[0] > bounds[1]:
        raise CnnlabError(f"plot_model: layer_range {list(layer_range)} ends before it starts; give the first layer "
                          f"first")
    return layers[bounds[0]: bounds[1] + 1]


def _shape_text(layer: object) -> str:
    try:
        shape = layer.output_shape  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # not built yet: Keras prints "?" too
        return "?"
    if isinstance(shape, list) and not any(isinstance(s, (tuple, list)) for s in shape):
        shape = tuple(shape)  # [None, 26, 26, 32] reads as Keras's (None, 26, 26, 32)
    return str(shape)


def _dtype_text(dtype: object) -> str:
    text = str(dtype)
    return text.removeprefix("torch.")
