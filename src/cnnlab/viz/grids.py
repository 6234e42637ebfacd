"""Image grids: a batch of images with titles in one PNG, and seed 003's "Original vs Augmented" picture."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch

from cnnlab.config import check_seed
from cnnlab.errors import CnnlabError

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from cnnlab.viz.figures import save_figure  # noqa: E402

__all__ = ["plot_image_grid", "augment_preview", "preview_size", "PREVIEW_SIDE", "MAX_PREVIEW_IMAGES"]

CELL_INCHES = 2.0  # width per image; at 100 dpi a 28x28 digit is drawn 7x larger, so it stays legible
TITLE_INCHES = 0.3  # room above each image for one line of a 10-point title
# augment_preview shrinks larger images to this longest side (pixels) before augmenting: twice the 200-pixel
# cell, so the PNG loses no visible detail, while 10 augmented copies of a 40-megapixel photo would take
# 5 GB as float32 (a 169-megapixel image reached 21.5 GB before this bound).
PREVIEW_SIDE = 400
# At most 50 augmented images: 11 rows of 5, about 5 s on a 2-core machine (100 took 14 s; 100,000 ran
# for over 300 s). Seed 003 shows 9; more stop being a picture anyone looks at.
MAX_PREVIEW_IMAGES = 50


def plot_image_grid(images: torch.Tensor, titles: Sequence[str] | None, path: str | Path, columns: int = 5) -> Path:
    """Write (N, C, H, W) images as a grid PNG, `columns` wide (fewer if N is smaller); return its path.

    uint8 images are shown as 0..255 and float images as 0..1, both without rescaling, so a dark
    image looks dark; one channel is drawn in grey. At 100 dpi each cell is 200 pixels wide, as
    tall as the images' shape makes it, plus 30 pixels for a title.

    >>> import tempfile
    >>> images = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8)
    >>> p = plot_image_grid(images, [f"#{i}" for i in range(7)], Path(tempfile.mkdtemp()) / "grid.png", columns=4)
    >>> from PIL import Image
    >>> Image.open(p).size   # 4 columns x 2 rows of 200 x (200 + 30 for the title) pixel cells
    (800, 460)
    """
    pictures = _as_pictures(images)
    if titles is not None and (isinstance(titles, str) or len(titles) != len(pictures)):
        got = repr(titles) if isinstance(titles, str) else f"{len(titles)} titles"
        raise CnnlabError(f"plot_image_grid: titles must hold one string per image ({len(pictures)}), got {got}; "
                          f"pass a list of {len(pictures)} strings or None")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise CnnlabError(f"plot_image_grid: columns must be a positive integer, got {columns!r}; e.g. columns=5")
    columns = min(columns, len(pictures))
    rows = math.ceil(len(pictures) / columns)
    height, width = pictures[0].shape[:2]
    title_lines = max(str(t).count("\n") + 1 for t in titles) if titles is not None else 0
    cell_height = CELL_INCHES * min(max(height / width, 0.25), 4.0) + TITLE_INCHES * title_lines
    fig, axes = plt.subplots(rows, columns, figsize=(CELL_INCHES * columns, cell_height * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= len(pictures):
            continue
        picture = pictures[index]
        gray = picture.ndim == 2
        # nearest: a 28x28 digit blown up to 200 pixels should show its pixels, not a blur
        ax.imshow(picture, cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[index]), fontsize=10)
    return save_figure(fig, path)


def augment_preview(image: torch.Tensor, augmenter: Callable[[torch.Tensor], torch.Tensor], n: int,
                    path: str | Path, seed: int = 0, columns: int = 5) -> Path:
    """Write the original (C, H, W) image and `n` augmented versions of it as one grid PNG (seed 003's picture).

    The augmentations are drawn with torch seeded by `seed` (0..2**32 - 1), so the same seed gives
    the same picture; the caller's random state is left as it was. An image larger than
    PREVIEW_SIDE is shrunk to it first (so `crop` and `cutout` count pixels of the shrunk image),
    and `n` is at most MAX_PREVIEW_IMAGES: memory and time stay bounded whatever the input.

    >>> import tempfile
    >>> from cnnlab.data.augment import Augmenter, parse_augment
    >>> image = torch.zeros((3, 32, 32), dtype=torch.uint8)
    >>> image[:, 8:24, 8:24] = 255
    >>> p = augment_preview(image, Augmenter(parse_augment("rotate=30")), 9, Path(tempfile.mkdtemp()) / "a.png")
    >>> from PIL import Image
    >>> Image.open(p).size   # original + 9 in 5 columns: 2 rows
    (1000, 460)
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise CnnlabError(f"augment_preview: image must be one (C, H, W) tensor, got {got}; "
                          f"for a batch pick one image, e.g. images[0]")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PREVIEW_IMAGES:
        raise CnnlabError(f"augment_preview: n (-n) must be a whole number in 1..{MAX_PREVIEW_IMAGES} (a picture "
                          f"to look at, not a dataset), got {n!r}; e.g. n=9 as in seed 003")
    check_seed(seed, "augment_preview: seed (--seed)")
    image = _shrink(image, preview_size(image.shape[1], image.shape[2]))
    copies = image.unsqueeze(0).expand(n, *image.shape).contiguous()  # (n, C, H, W)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        augmented = augmenter(copies)
    titles = ["Original"] + [f"Augmented {i}" for i in range(1, n + 1)]
    return plot_image_grid(torch.cat([image.unsqueeze(0), augmented.to(image.dtype)]), titles, path, columns)


def preview_size(height: int, width: int) -> tuple[int, int]:
    """(H, W) an image is shown at in augment_preview: its own, or shrunk to PREVIEW_SIDE on its longest side.

    >>> preview_size(28, 28), preview_size(13000, 13000), preview_size(1, 100_000_000)
    ((28, 28), (400, 400), (1, 400))
    """
    scale = min(1.0, PREVIEW_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _shrink(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) resized to `size` with antialiasing (a plain bilinear shrink aliases), same dtype."""
    if tuple(image.shape[1:]) == size:
        return image
    shrunk = torch.nn.functional.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True)[0]
    return shrunk.round().clamp(0, 255).to(image.dtype) if image.dtype == torch.uint8 else shrunk.to(image.dtype)


def _as_pictures(images: torch.Tensor) -> list[np.ndarray]:
    """(N, C, H, W) uint8 or float -> list of numpy arrays in [0, 1], (H, W) for gray or (H, W, C)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0 \
            or images.shape[1] not in (1, 3, 4):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise CnnlabError(f"plot_image_grid: images must be a non-empty (N, C, H, W) tensor with C = 1, 3 or 4, "
                          f"got {got}; add a batch dimension with image[None]")
    if images.dtype == torch.uint8:
        scaled = images.detach().cpu().float() / 255
    elif images.is_floating_point():
        scaled = images.detach().cpu().float().clamp(0, 1)
    else:
        raise CnnlabError(f"plot_image_grid: images must be uint8 (0..255) or float (0..1), got {images.dtype}")
    # (N, C, H, W) -> (N, H, W, C); a single channel becomes (H, W) for the grey colormap
    pixels = scaled.permute(0, 2, 3, 1).numpy()
    return [p[:, :, 0] if p.shape[2] == 1 else p for p in pixels]
