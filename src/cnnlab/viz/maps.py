"""Pictures of what a CNN computes: feature maps, first-layer filters, Grad-CAM overlays.

The numbers come from `cnnlab.interpret`; this module only draws them (seed 003's feature-map
grid uses viridis, as here).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import torch

from cnnlab.errors import CnnlabError

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from cnnlab.viz.figures import save_figure  # noqa: E402

__all__ = ["plot_feature_maps", "plot_filters", "plot_grad_cam"]

CELL_INCHES = 1.5    # per map or filter; at 100 dpi a 3x3 kernel becomes 150 pixels, each weight a 50-pixel block
OVERLAY_ALPHA = 0.4  # heatmap opacity over the image: the image stays readable beneath it


def _grid(count: int, columns: int) -> tuple[plt.Figure, np.ndarray]:
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(CELL_INCHES * columns, CELL_INCHES * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def plot_feature_maps(maps: torch.Tensor, path: str | Path, title: str = "", max_maps: int = 32,
                      columns: int = 8) -> Path:
    """Write the first `max_maps` channels of (C, H, W) feature maps as a viridis grid PNG; return its path.

    Each map is scaled to its own range, so a weak channel still shows its pattern.

    >>> import tempfile
    >>> p = plot_feature_maps(torch.rand(10, 12, 12), Path(tempfile.mkdtemp()) / "maps.png", max_maps=8, columns=4)
    >>> from PIL import Image
    >>> Image.open(p).size   # 4 columns x 2 rows of 150-pixel cells
    (600, 300)
    """
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3 or maps.shape[0] == 0:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise CnnlabError(f"plot_feature_maps: maps must be one layer's (C, H, W) tensor, got {got}; "
                          f"pass feature_maps(...)[name]")
    for what, value in (("max_maps", max_maps), ("columns", columns)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CnnlabError(f"plot_feature_maps: {what} must be a positive int, got {value!r}")
    shown = maps[:max_maps].detach().cpu().float().numpy()
    fig, axes = _grid(len(shown), columns)
    for index, fmap in enumerate(shown):
        ax = axes.flat[index]
        ax.imshow(fmap, cmap="viridis")
        ax.set_title(str(index), fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _filter_picture(kernel: np.ndarray) -> np.ndarray:
    """(C, kh, kw) -> an RGB (kh, kw, 3) picture in [0, 1] when C == 3, else channel 0 (kh, kw)."""
    picture = kernel.transpose(1, 2, 0) if kernel.shape[0] == 3 else kernel[0]
    low, high = picture.min(), picture.max()
    return (picture - low) / (high - low) if high > low else np.zeros_like(picture)


def plot_filters(filters: torch.Tensor, path: str | Path, columns: int = 8) -> Path:
    """Write first-layer kernels (F, C, kh, kw) as a grid PNG: RGB when C == 3, else grey (channel 0).

    Each filter is normalized to [0, 1] on its own and drawn with nearest interpolation, so the
    weights of a 3x3 kernel show as 9 sharp squares.

    >>> import tempfile
    >>> p = plot_filters(torch.randn(16, 3, 3, 3), Path(tempfile.mkdtemp()) / "filters.png")
    >>> from PIL import Image
    >>> Image.open(p).size   # 8 columns x 2 rows of 150-pixel cells
    (1200, 300)
    """
    if not isinstance(filters, torch.Tensor) or filters.ndim != 4 or filters.shape[0] == 0:
        got = tuple(filters.shape) if isinstance(filters, torch.Tensor) else type(filters).__name__
        raise CnnlabError(f"plot_filters: filters must be an (F, C, kh, kw) tensor, got {got}; "
                          f"pass first_layer_filters(model)")
    kernels = filters.detach().cpu().float().numpy()
    fig, axes = _grid(len(kernels), columns)
    for index, kernel in enumerate(kernels):
        picture = _filter_picture(kernel)
        axes.flat[index].imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1,
                                interpolation="nearest")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_grad_cam(image: torch.Tensor, heatmap: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Write the image, its Grad-CAM heatmap and the overlay (jet, alpha 0.4) side by side; return the path.

    `image` is (C, H, W), uint8 (0..255) or float (0..1); `heatmap` is (H, W) in [0, 1].

    >>> import tempfile
    >>> p = plot_grad_cam(torch.rand(3, 32, 32), torch.rand(32, 32), Path(tempfile.mkdtemp()) / "cam.png")
    >>> p.stat().st_size > 0
    True
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise CnnlabError(f"plot_grad_cam: image must be a (C, H, W) tensor with 1 or 3 channels, got {got}")
    if not isinstance(heatmap, torch.Tensor) or tuple(heatmap.shape) != tuple(image.shape[1:]):
        got = tuple(heatmap.shape) if isinstance(heatmap, torch.Tensor) else type(heatmap).__name__
        raise CnnlabError(f"plot_grad_cam: heatmap must be (H, W) = {tuple(image.shape[1:])} like the image, "
                          f"got {got}; pass grad_cam(model, image).heatmap")
    scaled = image.detach().cpu().float()
    pixels = (scaled / 255 if image.dtype == torch.uint8 else scaled).clamp(0, 1).permute(1, 2, 0).numpy()
    picture = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    heat = heatmap.detach().cpu().float().numpy()
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    panels = (("Image", None), ("Grad-CAM", heat), ("Overlay", heat))
    for ax, (name, layer) in zip(axes, panels, strict=True):
        ax.axis("off")
        ax.set_title(name, fontsize=10)
        if name != "Grad-CAM":
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
        if layer is not None:
            ax.imshow(layer, cmap="jet", vmin=0, vmax=1, alpha=OVERLAY_ALPHA if name == "Overlay" else 1.0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
