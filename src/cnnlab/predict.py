"""Predict class names for image files with a saved model; returns data, the CLI prints it."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data import list_images, read_image
from cnnlab.errors import CnnlabError
from cnnlab.models.files import load_model
from cnnlab.training import predict_proba

__all__ = ["Prediction", "predict_files", "predictions_csv"]


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first


def predict_files(model_source: str | Path, inputs: Sequence[str | Path], top_k: int = 3) -> list[Prediction]:
    """Classify image files (and every image in given folders) with a run directory or model file.

    Images are converted to the model's channels and resized to its input size, so any photo
    works; all are decoded before anything is predicted, so a bad file fails the whole call. A file
    named twice (`a.png a.png`, or a folder and a file in it) is predicted once, where first named.

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
    files = _once(files)
    h, w, c = card.input_shape
    images = torch.stack([read_image(f, channels=c, size=(h, w)) for f in files])  # (N, C, H, W) uint8
    probs = predict_proba(model, images)
    k = min(top_k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    return [Prediction(str(f), [(card.class_names[int(i)], float(v)) for v, i in zip(vs, idx, strict=True)])
            for f, vs, idx in zip(files, values, indices, strict=True)]


def _once(files: list[Path]) -> list[Path]:
    """`files` without repeats (the same absolute path, however spelt), in the order first given.

    >>> [str(p) for p in _once([Path("a.png"), Path("b.png"), Path("./a.png")])]
    ['a.png', 'b.png']
    """
    seen: set[str] = set()
    kept = []
    for f in files:
        key = os.path.abspath(f)  # "./a.png", "a.png" and "d/../a.png" are one file; links stay distinct names
        if key not in seen:
            seen.add(key)
            kept.append(f)
    return kept


def predictions_csv(predictions: Sequence[Prediction]) -> str:
    """CSV text, one row per image: path, then class_1, probability_1, ... (most likely first).

    >>> print(predictions_csv([Prediction("a.png", [("cat", 0.75), ("dog", 0.25)])]), end="")
    path,class_1,probability_1,class_2,probability_2
    a.png,cat,0.750000,dog,0.250000
    """
    k = max((len(p.top) for p in predictions), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", *(f"{what}_{i}" for i in range(1, k + 1) for what in ("class", "probability"))])
    for p in predictions:
        writer.writerow([p.path, *(f"{v:.6f}" if isinstance(v, float) else v for pair in p.top for v in pair)])
    return buffer.getvalue()
