"""Confusion-matrix heatmaps and images as PNG data URIs (for self-contained HTML reports)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image

from cnnlab.errors import CnnlabError

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from cnnlab.viz.figures import save_figure  # noqa: E402

__all__ = ["plot_confusion_matrix", "image_to_data_uri", "png_to_data_uri"]

CELL_INCHES = 0.6  # per class: room for "0.00" in 9-point type inside a cell
MAX_ANNOTATED_CLASSES = 30  # beyond this the numbers no longer fit in the cells; the colours still tell


def plot_confusion_matrix(confusion: torch.Tensor, class_names: Sequence[str], path: str | Path,
                          normalize: bool = False, title: str = "") -> Path:
    """Write a (K, K) confusion matrix as a heatmap PNG (rows actual, columns predicted); return its path.

    With `normalize=True` each row is divided by its total (recall on the diagonal); a class with no
    samples stays all zero. Each cell shows its count (or fraction) when K <= 30.

    >>> import tempfile
    >>> c = torch.tensor([[5, 1], [2, 7]])
    >>> p = plot_confusion_matrix(c, ["cat", "dog"], Path(tempfile.mkdtemp()) / "cm.png", normalize=True)
    >>> from PIL import Image
    >>> Image.open(p).size
    (500, 500)
    """
    names = [str(name) for name in class_names]
    if not isinstance(confusion, torch.Tensor) or tuple(confusion.shape) != (len(names), len(names)) or not names:
        got = tuple(confusion.shape) if isinstance(confusion, torch.Tensor) else type(confusion).__name__
        raise CnnlabError(f"plot_confusion_matrix: confusion must be a ({len(names)}, {len(names)}) tensor for "
                          f"{len(names)} class names, got {got}; build it with evaluation.confusion_matrix")
    counts = confusion.detach().cpu().double().numpy()
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals != 0)
    else:
        values = counts
    side = max(5.0, CELL_INCHES * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(values.max(), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    if len(names) <= MAX_ANNOTATED_CLASSES:
        threshold = (values.max() or 1) / 2
        for i in range(len(names)):
            for j in range(len(names)):
                text = f"{values[i, j]:.2f}" if normalize else str(int(values[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        color="white" if values[i, j] > threshold else "black")
    ax.set_title(title or ("Confusion matrix (rows normalized)" if normalize else "Confusion matrix"))
    return save_figure(fig, path)


def image_to_data_uri(image: torch.Tensor) -> str:
    """Encode one uint8 (C, H, W) image (C = 1, 3 or 4) as a 'data:image/png;base64,...' URI.

    >>> uri = image_to_data_uri(torch.zeros((1, 4, 4), dtype=torch.uint8))
    >>> uri.startswith("data:image/png;base64,")
    True
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3, 4) \
            or image.dtype != torch.uint8:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise CnnlabError(f"image_to_data_uri: image must be one uint8 (C, H, W) tensor with C = 1, 3 or 4, "
                          f"got {got}; for a batch pick one image, e.g. images[0]")
    pixels = image.detach().cpu().permute(1, 2, 0).numpy()  # (H, W, C)
    picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else np.ascontiguousarray(pixels))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return png_to_data_uri(buffer.getvalue())


def png_to_data_uri(png: bytes | str | Path) -> str:
    """Encode PNG bytes, or the PNG file at a path, as a 'data:image/png;base64,...' URI.

    >>> png_to_data_uri(b"abc")
    'data:image/png;base64,YWJj'
    """
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
