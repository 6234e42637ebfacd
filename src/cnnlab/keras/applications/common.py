"""What keras.applications' models share: input shapes, ImageNet weight files, preprocessing, decoding.

Weights are data (torchvision's rule): each file is named with where it comes from. `weights='imagenet'`
reads Keras's own .h5 file (h5py, no TensorFlow) from Keras's cache folder (~/.keras/models, or
$KERAS_HOME/models), downloading it there once when the machine is online; offline, the error names
the file, the folder and the address to fetch it from. `weights='path'` reads such a file from
anywhere (or, for MobileNetV2, torchvision's ImageNet state_dict as .safetensors).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cnnlab.errors import CnnlabError, one_line
from cnnlab.keras.h5 import load_h5_weights
from cnnlab.models.conv_layers import GlobalMaxPooling2D
from cnnlab.models.layers import GlobalAveragePooling2D
from cnnlab.models.symbolic import KerasTensor
from cnnlab.network import socket_timeout

__all__ = ["input_shape_for", "keras_cache", "fetch_weights", "load_application_weights", "load_h5_weights",
           "caffe_preprocess", "tf_preprocess", "decode_predictions", "check_arguments", "pool_features"]

DOWNLOAD_TIMEOUT_S = 30.0  # weight files are 14-550 MB: allow a slow start, but fail offline in seconds
CLASS_INDEX_URL = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # ImageNet's mean pixel, BGR, as VGG16's and ResNet50's weights expect


def check_arguments(weights: Any, include_top: bool, classes: int, pooling: Any, where: str) -> None:
    if not (weights in ("imagenet", None) or isinstance(weights, (str, os.PathLike))):
        raise CnnlabError(f"{where}: weights must be 'imagenet', None or the path to a weights file; got {weights!r}")
    if weights == "imagenet" and include_top and classes != 1000:
        raise CnnlabError(f"{where}: weights='imagenet' with include_top=True has 1000 classes; got classes={classes}. "
                          f"Use include_top=False and add your own head, or weights=None")
    if pooling not in (None, "avg", "max"):
        raise CnnlabError(f"{where}: pooling must be None, 'avg' or 'max'; got {pooling!r}")


def pool_features(x: Any, pooling: str | None, named: bool = False) -> Any:
    """Keras's `pooling` option of a network without its top: 'avg' or 'max' global pooling, or the maps.

    `named`: the layer names 'avg_pool' / 'max_pool' (ResNet50, EfficientNet), else Keras's automatic ones.

    >>> from cnnlab.keras import Input
    >>> maps = Input((7, 7, 8)); pool_features(maps, "max").shape, pool_features(maps, None) is maps
    ((None, 8), True)
    """
    if pooling == "avg":
        return GlobalAveragePooling2D(name="avg_pool" if named else None)(x)
    if pooling == "max":
        return GlobalMaxPooling2D(name="max_pool" if named else None)(x)
    return x


def input_shape_for(input_shape: Sequence[int | None] | None, default: int, minimum: int, include_top: bool,
                    weights: Any, where: str) -> tuple[Any, Any, int]:
    """Keras's obtain_input_shape: (H, W, 3); with ImageNet weights and the top, exactly (default, default, 3)."""
    if input_shape is None:
        return (default, default, 3) if include_top else (None, None, 3)
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[2] != 3 and weights == "imagenet":
        raise CnnlabError(f"{where}: input_shape must be (height, width, 3) (ImageNet weights take RGB); got {shape!r}")
    if weights == "imagenet" and include_top and shape[:2] != (default, default):
        raise CnnlabError(f"{where}: with include_top=True and ImageNet weights, input_shape must be "
                          f"({default}, {default}, 3); got {shape}. Use include_top=False for other sizes")
    if any(d is not None and d < minimum for d in shape[:2]):
        raise CnnlabError(f"{where}: input images must be at least {minimum}x{minimum}; got {shape}")
    return shape  # type: ignore[return-value]


def keras_cache() -> Path:
    """Keras's cache of downloaded files: $KERAS_HOME/models, else ~/.keras/models."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def fetch_weights(file_name: str, url: str, where: str) -> Path:
    """The cached weights file, downloaded once (with a progress bar) if missing; one line when that fails."""
    path = keras_cache() / file_name
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".part")
    try:
        with socket_timeout(DOWNLOAD_TIMEOUT_S), urllib.request.urlopen(url) as response, open(partial, "wb") as out:
            from tqdm import tqdm

            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {file_name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        shutil.move(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise CnnlabError(f"{where}: weights='imagenet' needs {file_name}, which is not in {path.parent} and could "
                          f"not be downloaded ({one_line(error)}); download {url} into {path.parent}/ or pass "
                          f"weights='path/to/{file_name}'") from None
    return path


def load_application_weights(model: nn.Module, weights: Any, file_name: str, url: str, where: str) -> None:
    """`weights`: 'imagenet' (Keras's `file_name`, cached or fetched from `url`), None, or a Keras .h5 path."""
    if weights == "imagenet":
        load_h5_weights(model, fetch_weights(file_name, url, where), where)
    elif weights is not None:
        load_h5_weights(model, Path(weights), where)


def caffe_preprocess(x: Any) -> np.ndarray:
    """VGG16/ResNet50 ('caffe'): RGB 0..255 -> BGR with ImageNet's mean pixel subtracted (Keras's preprocess_input)."""
    if isinstance(x, KerasTensor):
        raise CnnlabError("preprocess_input ('caffe': BGR minus the mean pixel) runs on NumPy images; apply it to "
                          "the arrays before fit/predict rather than inside the model")
    array = np.array(x, dtype=np.float32, copy=True)
    if array.shape[-1] != 3:
        raise CnnlabError(f"preprocess_input: expected RGB images (..., H, W, 3), got shape {array.shape}")
    return array[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)


def tf_preprocess(x: Any) -> Any:
    """MobileNetV2/Xception ('tf'): 0..255 -> -1..1 (Keras's preprocess_input); on a model's symbolic
    tensor (the transfer-learning tutorial's `x = preprocess_input(x)`), a Rescaling layer that does it."""
    if isinstance(x, KerasTensor):
        from cnnlab.models.preprocessing_layers import Rescaling

        return Rescaling(1 / 127.5, offset=-1.0)(x)
    return np.asarray(x, dtype=np.float32) / 127.5 - 1.0


def decode_predictions(preds: Any, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """Keras's decode_predictions: per image, the `top` (wordnet id, class name, score) triples, best first.

    The class index is Keras's imagenet_class_index.json (cached as Keras caches it); offline without it,
    torchvision's ImageNet names are used with ids "n?" (the names and order are the same).
    """
    scores = np.asarray(preds)
    if scores.ndim != 2 or scores.shape[1] != 1000:
        raise CnnlabError(f"decode_predictions expects ImageNet predictions of shape (samples, 1000); got "
                          f"{scores.shape}")
    index = _class_index()
    out = []
    for row in scores:
        best = np.argsort(row)[::-1][:top]
        out.append([(index[i][0], index[i][1], float(row[i])) for i in best])
    return out


def _class_index() -> list[tuple[str, str]]:
    path = keras_cache() / "imagenet_class_index.json"
    if not path.is_file():
        try:
            fetch_weights("imagenet_class_index.json", CLASS_INDEX_URL, "decode_predictions")
        except CnnlabError:
            from torchvision.models import MobileNet_V2_Weights

            names = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
            return [("n?", name.replace(" ", "_")) for name in names]
    table = json.loads(path.read_text())
    return [(table[str(i)][0], table[str(i)][1]) for i in range(1000)]
