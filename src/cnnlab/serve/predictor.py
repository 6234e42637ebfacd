"""The model behind the server: a run directory, a cnnlab model file or an ONNX export, loaded once.

Whatever the source, the server sees one surface: the model card, a function from uint8
(N, C, H, W) images to (N, classes) probabilities, and the run's training curves when they exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.inference import load_inference
from cnnlab.models.files import ModelCard

__all__ = ["LoadedModel", "load_predictor"]


@dataclass
class LoadedModel:
    """A model ready to serve: `predict_proba` maps uint8 (N, C, H, W) images to (N, classes) probabilities."""

    card: ModelCard
    predict_proba: Callable[[torch.Tensor], np.ndarray]
    path: Path                # the weights file (.safetensors or .onnx)
    curves: Path | None       # the run's curves.png, when the model sits in a run directory
    runtime: str              # "torch" or "onnxruntime"

    @property
    def name(self) -> str:
        """The run directory's name (or the file's stem), the way people refer to the model."""
        return self.path.parent.name if self.path.stem in ("model", "best") else self.path.stem

    def describe(self) -> dict[str, Any]:
        """The model card as JSON-ready data, plus what the server adds (name, runtime, curves)."""
        h, w, c = self.card.input_shape
        return {"name": self.name, "runtime": self.runtime, **asdict(self.card),
                "input_size": {"height": h, "width": w, "channels": c},
                "curves": "/model/curves.png" if self.curves else None}


def load_predictor(source: str | Path, runtime: str = "torch") -> LoadedModel:
    """Load a run directory, a .safetensors/.json model file or a .onnx file for serving.

    `runtime` (torch, onnxruntime or auto; `cnnlab serve`'s default is auto) says what runs a
    model file: under auto and onnxruntime its ONNX twin (see `cnnlab.inference`). A .onnx file
    always runs through onnxruntime.

    >>> import tempfile; from cnnlab.models import build_model, save_model
    >>> d = Path(tempfile.mkdtemp())
    >>> p = save_model(build_model("seed-mnist"), d / "model.safetensors", list("0123456789"), (28, 28, 1))
    >>> m = load_predictor(d)
    >>> m.predict_proba(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape, m.runtime
    ((2, 10), 'torch')
    """
    path = Path(source)
    if path.suffix.lower() == ".onnx" or (path.is_dir() and not (path / "model.safetensors").is_file()
                                          and (path / "model.onnx").is_file()):
        path = path / "model.onnx" if path.is_dir() else path
        if not path.is_file():
            raise CnnlabError(f"model not found: {path} does not exist; give a run directory, a .safetensors model "
                              f"file or a .onnx file written by `cnnlab export`")
        runtime = "onnxruntime"  # whatever was asked: only onnxruntime runs an ONNX file
    inference = load_inference(path, runtime)
    if inference.model is not None:
        inference.model.requires_grad_(False)
    return LoadedModel(inference.card, inference.predict_proba, inference.path, _curves_beside(inference.path),
                       inference.runtime)


def _curves_beside(path: Path) -> Path | None:
    curves = path.parent / "curves.png"
    return curves if curves.is_file() else None
