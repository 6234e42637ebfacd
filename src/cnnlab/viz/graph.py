"""A model's layer stack as boxes joined by arrows, top to bottom (or left to right): Keras's
`plot_model` picture, drawn with matplotlib instead of graphviz.

This module draws plain data (one `LayerBox` per layer); `cnnlab.keras.utils.plot_model` reads
the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib

from cnnlab.errors import CnnlabError, one_line

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

__all__ = ["LayerBox", "plot_layer_stack", "DIRECTIONS"]

DIRECTIONS = ("TB", "LR")  # Keras's rankdir values: top to bottom, left to right

# Sizes in inches for 10-point monospace text: a character is 0.6 em wide (6 pt = 0.083 in) and a
# line 1.4 em high; the paddings keep the text off the box edges and the arrows visible.
FONT_POINTS = 10
CHAR_INCHES = 0.6 * FONT_POINTS / 72
LINE_INCHES = 1.4 * FONT_POINTS / 72
PAD_INCHES = 0.12   # inside a box, each side
GAP_INCHES = 0.35   # between boxes: room for the arrow
MARGIN_INCHES = 0.15
MAX_CHARS = 100     # a longer line is cut with "..." so one odd name cannot make the picture unreadable
# Agg cannot draw a side over 2**16 pixels; the dpi is lowered for very deep models to stay below.
MAX_PIXELS = 60_000


class LayerBox(NamedTuple):
    """One box: the layer's name and class ("" leaves a part out), its output shape text and extra lines."""

    name: str
    class_name: str
    shape: str = ""
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """The box's text, one string per line.

        >>> LayerBox("conv2d", "Conv2D", "(None, 26, 26, 32)").lines()
        ['conv2d (Conv2D)', 'output: (None, 26, 26, 32)']
        """
        title = f"{self.name} ({self.class_name})" if self.name and self.class_name else self.name or self.class_name
        lines = [title, *([f"output: {self.shape}"] if self.shape else []), *self.notes]
        return [line if len(line) <= MAX_CHARS else line[: MAX_CHARS - 3] + "..." for line in lines]


def plot_layer_stack(boxes: Sequence[LayerBox], path: str | Path, direction: str = "TB", dpi: int = 96) -> Path:
    """Draw `boxes` in order, joined by arrows, and write the picture to `path`; return the path.

    The file format follows the extension (.png, .pdf, .svg, .jpg; none means PNG, written to
    `path` as given, as Keras does).

    >>> import tempfile
    >>> boxes = [LayerBox("conv2d", "Conv2D", "(None, 26, 26, 32)"), LayerBox("flatten", "Flatten", "(None, 21632)")]
    >>> plot_layer_stack(boxes, Path(tempfile.mkdtemp()) / "model.png").stat().st_size > 0
    True
    """
    if not boxes:
        raise CnnlabError("plot_layer_stack: no layers to draw; build the model (give it an input shape) first")
    if direction not in DIRECTIONS:
        raise CnnlabError(f"plot_layer_stack: direction must be 'TB' (top to bottom) or 'LR' (left to right), "
                          f"got {direction!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi <= 0:
        raise CnnlabError(f"plot_layer_stack: dpi must be a positive integer, got {dpi!r}; e.g. dpi=96")
    path = Path(path)
    texts = [box.lines() for box in boxes]
    box_width = max(len(line) for lines in texts for line in lines) * CHAR_INCHES + 2 * PAD_INCHES
    heights = [len(lines) * LINE_INCHES + 2 * PAD_INCHES for lines in texts]
    if direction == "TB":
        width, height = box_width + 2 * MARGIN_INCHES, sum(heights) + GAP_INCHES * (len(boxes) - 1) + 2 * MARGIN_INCHES
    else:
        width, height = (box_width + GAP_INCHES) * len(boxes) - GAP_INCHES + 2 * MARGIN_INCHES, \
            max(heights) + 2 * MARGIN_INCHES
    fig = plt.figure(figsize=(width, height))
    try:
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_xlim(0, width)
        ax.set_ylim(0, height)
        ax.axis("off")
        _draw(ax, texts, heights, box_width, width, height, direction)
        dpi = max(1, min(dpi, int(MAX_PIXELS / max(width, height))))
        _save(fig, path, dpi)
    finally:
        plt.close(fig)
    return path


def _draw(ax: plt.Axes, texts: list[list[str]], heights: list[float], box_width: float, width: float,
          height: float, direction: str) -> None:
    """Boxes at their places (inches from the bottom left), then an arrow from each to the next."""
    frames = []  # (left, bottom, box height) per box
    cursor = height - MARGIN_INCHES if direction == "TB" else MARGIN_INCHES
    for box_height in heights:
        if direction == "TB":
            frames.append(((width - box_width) / 2, cursor - box_height, box_height))
            cursor -= box_height + GAP_INCHES
        else:
            frames.append((cursor, (height - box_height) / 2, box_height))
            cursor += box_width + GAP_INCHES
    for (left, bottom, box_height), lines in zip(frames, texts, strict=True):
        ax.add_patch(FancyBboxPatch((left, bottom), box_width, box_height, boxstyle="round,pad=0,rounding_size=0.06",
                                    facecolor="#eef3fb", edgecolor="#3a5a8c", linewidth=1.0))
        # parse_math=False: a "$" in a layer name is text, not the start of a formula
        ax.text(left + box_width / 2, bottom + box_height / 2, "\n".join(lines), ha="center", va="center",
                family="monospace", fontsize=FONT_POINTS, linespacing=1.4, parse_math=False)
    for (left, bottom, box_height), (next_left, next_bottom, next_height) in zip(frames, frames[1:], strict=False):
        if direction == "TB":
            start, end = (left + box_width / 2, bottom), (next_left + box_width / 2, next_bottom + next_height)
        else:
            start, end = (left + box_width, bottom + box_height / 2), (next_left, next_bottom + next_height / 2)
        ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "#3a5a8c", "lw": 1.0})


def _save(fig: plt.Figure, path: Path, dpi: int) -> None:
    file_format = path.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if file_format not in supported:
        raise CnnlabError(f"cannot write {str(path)!r}: unknown picture format {file_format!r}; use one of "
                          f"{', '.join('.' + f for f in sorted(supported))}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, format=file_format)
    except OSError as error:
        raise CnnlabError(f"cannot write {str(path)!r} ({one_line(error)}); choose a writable file") from error
