"""Predict class names for image files with a saved model; returns data, the CLI prints it.

With `runtime` "auto" or "onnxruntime" (the command's default is auto, see `cnnlab.inference`), a
model whose ONNX twin is cached, or a .onnx file, is predicted without importing torch: images are
decoded to NumPy (`read_pixels`) and run by onnxruntime: `cnnlab predict` on 5,000 28x28 PNGs took
1.4-1.9 s against 7.5-9.5 s with --runtime torch (seed-mnist, a 2-core VM shared with other jobs, 2026-12-07).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.data.images import list_images, read_pixels
from cnnlab.errors import CnnlabError
from cnnlab.inference import Inference, load_inference

__all__ = ["Prediction", "Predictions", "predict_files", "predict_images", "predictions_csv"]


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first


@dataclass
class Predictions:
    """What `predict_images` found, and how: which runtime ran (and why), and lines worth telling the user."""

    predictions: list[Prediction]
    runtime: str                  # "onnxruntime" or "torch"
    reason: str
    notes: list[str] = field(default_factory=list)


def predict_files(model_source: str | Path, inputs: Sequence[str | Path], top_k: int = 3,
                  runtime: str = "torch") -> list[Prediction]:
    """Classify image files (and every image in given folders) with a run directory or model file.

    Images are converted to the model's channels and resized to its input size, so any photo
    works; all are decoded before anything is predicted, so a bad file fails the whole call. A file
    named twice (`a.png a.png`, or a folder and a file in it) is predicted once, where first named.
    `runtime`: torch, onnxruntime or auto (see `cnnlab.inference.load_inference`).

    >>> import tempfile; from PIL import Image
    >>> from cnnlab.models import build_model, save_model
    >>> d = Path(tempfile.mkdtemp()); Image.new("L", (28, 28)).save(d / "x.png")
    >>> m = save_model(build_model("seed-mnist"), d / "m.safetensors", list("0123456789"), (28, 28, 1))
    >>> len(predict_files(m, [d / "x.png"], top_k=2)[0].top)
    2
    """
    return predict_images(model_source, inputs, top_k, runtime).predictions


def predict_images(model: str | Path | Inference, inputs: Sequence[str | Path], top_k: int = 3,
                   runtime: str = "torch") -> Predictions:
    """`predict_files`, with which runtime ran. `model` may be an `Inference` already loaded (then
    `runtime` is not used); with a cached twin or a .onnx file, no torch is imported."""
    if not isinstance(top_k, int) or top_k <= 0:
        raise CnnlabError(f"--top-k must be a positive integer; got {top_k!r}")
    inference = model if isinstance(model, Inference) else load_inference(model, runtime)
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
    card = inference.card
    h, w, c = card.input_shape
    pixels = [read_pixels(f, channels=c, size=(h, w)) for f in files]  # each (C, H, W) uint8
    probs = inference.predict_proba(np.stack(pixels)) if pixels else np.zeros((0, len(card.class_names)))
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # most likely first; ties: the lower class index
    predictions = [Prediction(str(f), [(card.class_names[int(i)], float(row[i])) for i in top])
                   for f, row, top in zip(files, probs, order, strict=True)]
    return Predictions(predictions, inference.runtime, inference.reason, inference.notes)


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
