"""NumPy arrays as the Keras tutorials hand them over, turned into cnnlab datasets and back.

Keras takes images channels-last (N, H, W, C), in whatever dtype and range the program made
them, and uses them as they are: no hidden rescaling (a uint8 image goes in as 0..255 floats).
Labels are class indices (N,) or (N, 1), or one-hot rows for the categorical loss. What Keras
would only report deep in its backend gets one line here: a missing channel axis, a single image
without its batch axis, one-hot labels given to a sparse loss, labels the model has no output for.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from cnnlab.data import ArrayDataset
from cnnlab.errors import CnnlabError
from cnnlab.models.symbolic import channels_last as keras_layout  # NumPy, channels last, as Keras returns

__all__ = ["images_nchw", "labels_vector", "to_dataset", "keras_layout"]

RAW_PIXEL_MAX = 1.5  # inputs above this were never divided by 255


def images_nchw(x: Any, expected: tuple[Any, ...] | None, where: str) -> torch.Tensor:
    """float32 (N, C, H, W) from channels-last images `x`; `expected` is the model's (H, W, C) if known."""
    if isinstance(x, (list, tuple)) and x and not isinstance(x[0], (int, float)):
        x = np.stack([np.asarray(v) for v in x])
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise CnnlabError(f"{where}: x must be a numeric array of images (N, H, W, C); got dtype {array.dtype}")
    shape = tuple(array.shape)
    if expected is not None and (expected[0] is None or expected[1] is None):  # a model for any image size
        if len(shape) != 4 or shape[3] != expected[2]:
            raise CnnlabError(f"{where}: x has shape {shape} but the model takes (None, None, None, {expected[2]}) "
                              f"(images of any height and width with {expected[2]} channels)")
    elif expected is not None:
        h, w, c = expected
        if shape == (h, w, c):
            raise CnnlabError(f"{where}: x has shape {shape}, one image without its batch axis; the model takes "
                              f"(None, {h}, {w}, {c}): pass x[None] (or np.expand_dims(x, 0))")
        if len(shape) == 3 and shape[1:] == (h, w) and c == 1:
            raise CnnlabError(f"{where}: x has shape {shape} but the model takes (None, {h}, {w}, 1): add the "
                              f"channel axis with x[..., None] (or np.expand_dims(x, -1))")
        if len(shape) != 4 or shape[1:] != (h, w, c):
            raise CnnlabError(f"{where}: x has shape {shape} but the model takes (None, {h}, {w}, {c}) "
                              f"(images, height, width, channels); reshape or resize the images to match")
    elif len(shape) != 4:
        raise CnnlabError(f"{where}: x has shape {shape}; expected images (N, H, W, C), e.g. (60000, 28, 28, 1)")
    if shape[0] == 0:
        raise CnnlabError(f"{where}: x holds no images (shape {shape})")
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not torch.isfinite(values).all():
        raise CnnlabError(f"{where}: x contains NaN or infinite values; clean or drop those images")
    return values.permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)


def warn_unscaled(images: torch.Tensor, model: Any) -> None:
    """Warn once per model when pixels look like raw 0..255 values (Keras trains on them, badly)."""
    if getattr(model, "_warned_unscaled", False) or float(images.max()) <= RAW_PIXEL_MAX:
        return
    model._warned_unscaled = True
    warnings.warn(f"inputs go up to {float(images.max()):g}: the model gets raw 0..255 pixels; the tutorials "
                  f"divide by 255 first (x = x / 255.0), which trains far better", stacklevel=4)


def labels_vector(y: Any, loss: str, outputs: int | None, count: int, where: str) -> torch.Tensor:
    """int64 class indices (N,) from Keras labels for `loss`; one-hot rows only for the categorical loss."""
    array = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if array.dtype.kind not in "biuf":
        raise CnnlabError(f"{where}: y must be numeric labels; got dtype {array.dtype}")
    if len(array) != count:
        raise CnnlabError(f"{where}: {count} images but {len(array)} labels; give exactly one label per image")
    if array.ndim == 2 and array.shape[1] > 1:
        if loss != "categorical_crossentropy" and loss != "mean_squared_error":
            raise CnnlabError(f"{where}: y has one-hot rows {array.shape} but the loss is {loss}, which takes class "
                              f"indices; use loss='categorical_crossentropy' or pass y.argmax(axis=1)")
        if not (np.isin(array, (0, 1)).all() and (array.sum(1) == 1).all()):
            raise CnnlabError(f"{where}: y has rows that are not one-hot (soft labels are not supported yet); "
                              f"give one-hot rows (keras.utils.to_categorical) or class indices")
        if outputs is not None and array.shape[1] != outputs:
            raise CnnlabError(f"{where}: y has {array.shape[1]} columns but the model has {outputs} outputs; "
                              f"end the model in Dense({array.shape[1]}) or fix the labels")
        array = array.argmax(1)
    elif loss == "categorical_crossentropy" and (outputs or 0) > 1:
        raise CnnlabError(f"{where}: the loss categorical_crossentropy takes one-hot labels (N, {outputs}) but y has "
                          f"shape {array.shape}; use loss='sparse_categorical_crossentropy' for class indices, or "
                          f"keras.utils.to_categorical(y)")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise CnnlabError(f"{where}: y must have shape (N,) or (N, 1); got {array.shape}")
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.round(array)).all()):
        raise CnnlabError(f"{where}: y must hold whole class indices; got fractional or NaN values")
    if len(array) and array.min() < 0:
        raise CnnlabError(f"{where}: labels must be class indices >= 0; got {array.min()}")
    return torch.from_numpy(array.astype(np.int64))


def to_dataset(images: torch.Tensor, labels: torch.Tensor, outputs: int | None, where: str) -> ArrayDataset:
    """A float32 ArrayDataset (used as given: no rescaling) with classes named 0..K-1."""
    top = int(labels.max()) if len(labels) else 0
    if outputs is not None and outputs > 1 and top >= outputs:
        raise CnnlabError(f"{where}: labels go up to {top} but the model has {outputs} outputs; end the model in "
                          f"Dense({top + 1}) or fix the labels")
    classes = max(outputs or 0, top + 1, 2)
    return ArrayDataset(images, labels, [str(i) for i in range(classes)], "arrays")


