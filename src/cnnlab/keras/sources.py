"""Keras datasets and generator iterators as the engine's data: what `fit`/`evaluate`/`predict` do with them.

A source (`image_dataset_from_directory`'s dataset, `ImageDataGenerator.flow*` iterators) gives a
`Feed`: a cnnlab dataset of uint8 images whose `normalize` makes the inputs Keras would feed
(0..255 floats, or the generator's augmentation and standardization), its batch size, order and
labels in Keras's form. Here the labels are checked against the compiled loss as arrays are
(one-hot rows need categorical_crossentropy, ...), and the model is built for the images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.data.arrays import ArrayDataset, model_inputs
from cnnlab.data.streaming import FolderDataset
from cnnlab.errors import CnnlabError
from cnnlab.keras.arrays import keras_layout, labels_vector
from cnnlab.training.loop import model_device

__all__ = ["Feed", "is_keras_source", "source_feed", "source_dataset", "source_predict", "check_not_generator",
           "loader_workers"]

Engine = ArrayDataset | FolderDataset
EVAL_BATCH = 256
# A folder too big for memory decodes in DataLoader workers: up to this many, one CPU core left to the training.
MAX_WORKERS = 8


def loader_workers(data: Any) -> int:
    """DataLoader workers for `data`: several for a streamed folder (decoding JPEGs is the bottleneck), else 0.

    >>> from cnnlab.data import load_dataset
    >>> loader_workers(load_dataset("digits"))
    0
    """
    if not isinstance(data, FolderDataset):
        return 0
    return max(0, min(MAX_WORKERS, (os.cpu_count() or 1) - 1))


@dataclass
class Feed:
    """What `fit`/`evaluate`/`predict` hand the engine for a Keras dataset or generator iterator.

    `data` is a cnnlab dataset whose `normalize` makes the model input Keras would feed; `labels`
    are the labels in Keras's form (one-hot rows, (N, 1) floats, ...) for checking against the
    loss, or None without labels.
    """

    data: Engine
    batch_size: int
    shuffle: bool
    seed: int | None
    labels: np.ndarray | None
    name: str = "dataset"
    sample_weights: np.ndarray | None = None  # flow(x, y, sample_weight=...): one weight per image

    def limited(self, steps: int | None) -> Engine:
        """The data cut to its first `steps` batches (validation_steps, evaluate's steps), in stored order."""
        if steps is None:
            return self.data
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
            raise CnnlabError(f"steps must be a positive integer or None; got {steps!r}")
        return self.data.subset(range(min(len(self.data), steps * self.batch_size)))


def is_keras_source(x: object) -> bool:
    """True for the objects `fit` takes instead of arrays: these datasets and ImageDataGenerator iterators.

    >>> class Source:
    ...     def engine_feed(self, where): ...
    >>> is_keras_source(np.zeros((2, 8, 8, 3))), is_keras_source(Source())
    (False, True)
    """
    return callable(getattr(x, "engine_feed", None))


def check_not_generator(x: Any, where: str) -> None:
    """One line for what fit cannot take: Python generators, tf.data pipelines, PyTorch loaders.

    >>> check_not_generator(iter([np.zeros((1, 4, 4, 1))]), "fit")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: fit: x is a list_iterator, which cnnlab.keras cannot train on; give NumPy arrays ...
    """
    if x is None or isinstance(x, (np.ndarray, torch.Tensor, list, tuple)) or is_keras_source(x):
        return
    if hasattr(x, "__next__") or hasattr(x, "__iter__") and not hasattr(x, "shape"):
        raise CnnlabError(f"{where}: x is a {type(x).__name__}, which cnnlab.keras cannot train on; give NumPy arrays "
                          f"(x, y), a keras.utils.image_dataset_from_directory dataset or an ImageDataGenerator "
                          f"flow / flow_from_directory iterator")


def source_feed(x: Any, y: Any, where: str) -> Feed:
    """The source's Feed, refusing a separate `y` (the source yields its own labels), as Keras does."""
    if y is not None:
        raise CnnlabError(f"{where}: y must not be given with a dataset or generator, which yields its own labels; "
                          f"drop y")
    feed: Feed = x.engine_feed(where)
    return feed


def source_dataset(model: nn.Module, feed: Feed, objective: Any, where: str, steps: int | None = None) -> Any:
    """The feed's data (cut to `steps` batches) for the engine, its labels checked against the loss."""
    data = feed.limited(steps)
    if feed.labels is None:
        raise CnnlabError(f"{where}: this {feed.name} yields images without labels (label_mode=None or "
                          f"class_mode=None); give it labels to train or evaluate, or use predict")
    _build(model, data)
    outputs = model._num_outputs() or None  # type: ignore[operator]
    labels_vector(feed.labels[:len(data)], objective.name, outputs, len(data), where)
    return data


def source_predict(model: nn.Module, feed: Feed, steps: int | None) -> np.ndarray:
    """The model's outputs for the feed's images in stored order (Keras's layout), `steps` batches at most."""
    data = feed.limited(steps)
    _build(model, data)
    device, outs = model_device(model), []
    model.eval()
    with torch.no_grad():
        for images, _ in data.batches(EVAL_BATCH):
            outs.append(keras_layout(nn.Module.__call__(model, model_inputs(data, images.to(device)))))
    if not outs:
        raise CnnlabError(f"predict: the {feed.name} holds no decodable images")
    return np.concatenate(outs)


def _build(model: nn.Module, data: Any) -> None:
    """A Sequential without an input shape is built for the source's images, as Keras builds on the first batch."""
    if getattr(model, "image_shape", "absent") is None:
        model.build(tuple(data.input_shape))  # type: ignore[operator]
