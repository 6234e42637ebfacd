"""Keras's legacy HDF5 weights (.h5: keras.applications' ImageNet files, Keras 2's save_weights), read with h5py.

The file holds one group per layer, named as the layer, with its arrays in Keras's order and layouts
(`weight_names`); they go into the layer with the same name through `layer.set_weights`, so a file
written by TensorFlow loads without TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from cnnlab.errors import CnnlabError, one_line
from cnnlab.models.summary import layer_modules

__all__ = ["load_h5_weights", "save_h5_weights"]


def load_h5_weights(model: nn.Module, path: Path, where: str) -> None:
    """Keras's legacy .h5 weights (the applications' files) into `model`, layer by layer, matched by name."""
    import h5py

    if not path.is_file():
        raise CnnlabError(f"{where}: weights file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f  # a whole saved model keeps them there
            for name, layer in layer_modules(model):
                get = getattr(layer, "keras_weights", None)
                if get is None or not get():
                    continue
                key = getattr(layer, "name", None) or name
                if key not in root:
                    raise CnnlabError(f"{where}: {path} has no weights for layer {key!r} (it holds "
                                      f"{', '.join(list(root.keys())[:6])}, ...); is it this model's file?")
                group = root[key]
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
                layer.set_weights([np.asarray(group[n]) for n in names])  # type: ignore[operator]
    except OSError as error:
        raise CnnlabError(f"{where}: cannot read {path} as a Keras .h5 weights file ({one_line(error)})") from None


def save_h5_weights(model: nn.Module, path: Path) -> None:
    """The model's weights in Keras's legacy .h5 layout (what load_h5_weights and Keras 2's load_weights read):
    one group per layer, its arrays in Keras's order and layouts under `<layer>/<layer>/<weight>`."""
    import h5py

    variables = model._variables() if hasattr(model, "_variables") else []  # type: ignore[operator]
    by_layer: dict[str, list[tuple[str, np.ndarray]]] = {}
    for variable in variables:
        layer_name, _, weight = variable.name.rpartition("/")
        by_layer.setdefault(layer_name, []).append((f"{layer_name}/{weight}", variable.numpy()))
    names = [getattr(layer, "name", None) or row for row, layer in layer_modules(model)]
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "cnnlab"
        f.attrs["layer_names"] = np.array(names, dtype=h5py.string_dtype())
        for name in names:
            group = f.create_group(name)
            weights = by_layer.get(name, [])
            group.attrs["weight_names"] = np.array([w for w, _ in weights], dtype=h5py.string_dtype())
            for weight_name, value in weights:
                group.create_dataset(weight_name, data=value)
