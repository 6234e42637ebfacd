"""Predict class names for image files with a saved model; returns data, the CLI prints it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data import list_images, read_image
from cnnlab.errors import CnnlabError
from cnnlab.models.files import load_model
from cnnlab.training import predict_proba

__all__ = ["Prediction", "predict_files"]


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first


def predict_files(model_source: str | Path, inputs: Sequence[str | Path], top_k: int = 3) -> list[Prediction]:
    """Classify image files (and every image in given folders) with a run directory or model file.

    Images are converted to the model's channels and resized to its input size, so any photo
    works; all are decoded before anything is predicted, so a bad file fails the whole call.

    >>> import tempfile; from PIL import Image
    >>> from cnnlab.models import build_model, save_model
    >>> d = Path(tempfile.mkdtemp()); Image.new("L", (28, 28)).save(d / "x.png")
    >>> m = save_model(build_model("seed-mnist"), d / "m.safetensors", list("0123456789"), (28, 28, 1))
    >>> len(predict_files(m, [d / "x.png"], top_k=2)[0].top)
    2
    """
    if not isinstance(top_k, int) or top_k <= 0:
        raise CnnlabError(f"--top-k must be a positive integer; got {top_k!r}")
    model, card = load_model(model_source)
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            link = " (a symbolic link to a missing file, or a link loop)" if path.is_symlink() else ""
            raise CnnlabError(f"image not found: {path}{link}; give existing image files or folders")
        found = list_images(path)
        if path.is_dir() and not found:
            raise CnnlabError(f"no images (.jpg/.png/.bmp/.gif/.webp) found in folder {path}")
        files.extend(found)
    h, w, c = card.input_shape
    images = torch.stack([read_image(f, channels=c, size=(h, w)) for f in files])  # (N, C, H, W) uint8
    probs = predict_proba(model, images)
    k = min(top_k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    return [Prediction(str(f), [(card.class_names[int(i)], float(v)) for v, i in zip(vs, idx, strict=True)])
            for f, vs, idx in zip(files, values, indices, strict=True)]
