"""keras.applications.imagenet_utils: decode_predictions and preprocess_input(mode=...)."""

from __future__ import annotations

from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.keras.applications.common import caffe_preprocess, decode_predictions, tf_preprocess

__all__ = ["decode_predictions", "preprocess_input"]


def preprocess_input(x: Any, data_format: str | None = None, mode: str = "caffe") -> Any:
    """Keras's preprocessing modes: 'caffe' (BGR minus mean), 'tf' (-1..1), 'torch' (0..1, ImageNet mean/std)."""
    import numpy as np

    if mode == "caffe":
        return caffe_preprocess(x)
    if mode == "tf":
        return tf_preprocess(x)
    if mode == "torch":
        mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
        return (np.asarray(x, np.float32) / 255.0 - mean) / std
    raise CnnlabError(f"preprocess_input: mode must be 'caffe', 'tf' or 'torch'; got {mode!r}")
