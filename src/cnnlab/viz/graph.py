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
SKIP_INCHES = 0.8   # room beside the boxes for arrows that skip rows (a residual connection's bend)
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


def plot_layer_stack(boxes: Sequence[LayerBox], path: str | Path, direction: str = "TB", dpi: int = 96,
                     edges: Sequence[tuple[int, int]] | None = None) -> Path:
    """Draw `boxes` joined by arrows and write the picture to `path`; return the path.

    `edges` are (from, to) box indices, each pointing forward (a functional model's connections; boxes in a
    topological order); None joins each box to the next (a stack). Boxes sit in rows by their longest
    path from a box with no inputs, side by side where branches run in parallel. The file format follows
    the extension (.png, .pdf, .svg, .jpg; none means PNG, written to `path` as given, as Keras does).

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
    links = list(edges) if edges is not None else [(i, i + 1) for i in range(len(boxes) - 1)]
    if any(not 0 <= a < b < len(boxes) for a, b in links):
        raise CnnlabError(f"plot_layer_stack: edges must join earlier boxes to later ones among {len(boxes)}; "
                          f"got {[e for e in links if not 0 <= e[0] < e[1] < len(boxes)][:3]}")
    path = Path(path)
    texts = [box.lines() for box in boxes]
    box_width = max(len(line) for lines in texts for line in lines) * CHAR_INCHES + 2 * PAD_INCHES
    heights = [len(lines) * LINE_INCHES + 2 * PAD_INCHES for lines in texts]
    rank = [0] * len(boxes)
    for a, b in sorted(links, key=lambda e: e[1]):  # forward edges: each box after its sources
        rank[b] = max(rank[b], rank[a] + 1)
    rows: list[list[int]] = [[] for _ in range(max(rank) + 1)]
    for index, r in enumerate(rank):
        rows[r].append(index)
    across = max(len(row) for row in rows)  # boxes side by side in the widest row
    depth = [max(heights[i] for i in row) for row in rows]
    span = across * box_width + (across - 1) * GAP_INCHES
    skips = [(a, b) for a, b in links if rank[b] - rank[a] > 1]
    bend = SKIP_INCHES if skips else 0.0  # skip arrows bend round the boxes, on the right (below for "LR")
    if direction == "TB":
        width = span + 2 * MARGIN_INCHES + bend
        height = sum(depth) + GAP_INCHES * (len(rows) - 1) + 2 * MARGIN_INCHES
    else:
        width = (box_width + GAP_INCHES) * len(rows) - GAP_INCHES + 2 * MARGIN_INCHES
        height = sum(heights[i] for i in max(rows, key=len)) + GAP_INCHES * (across - 1) + 2 * MARGIN_INCHES + bend
    fig = plt.figure(figsize=(width, height))
    try:
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_xlim(0, width)
        ax.set_ylim(0, height)
        ax.axis("off")
        frames = _frames(rows, heights, depth, box_width, width - (bend if direction == "TB" else 0.0),
                         height + (bend if direction == "LR" else 0.0), direction)
        _draw(ax, texts, frames, box_width, links, set(skips), direction)
        dpi = max(1, min(dpi, int(MAX_PIXELS / max(width, height))))
        _save(fig, path, dpi)
    finally:
        plt.close(fig)
    return path


def _frames(rows: list[list[int]], heights: list[float], depth: list[float], box_width: float, width: float,
            height: float, direction: str) -> dict[int, tuple[float, float, float]]:
    """(left, bottom, box height) of each box, in inches from the bottom left: rows (or columns, "LR")
    by rank, the boxes of a row centred side by side."""
    frames: dict[int, tuple[float, float, float]] = {}
    cursor = height - MARGIN_INCHES if direction == "TB" else MARGIN_INCHES
    for row, row_depth in zip(rows, depth, strict=True):
        if direction == "TB":
            row_span = len(row) * box_width + (len(row) - 1) * GAP_INCHES
            left = (width - row_span) / 2
            for index in row:
                frames[index] = (left, cursor - row_depth / 2 - heights[index] / 2, heights[index])
                left += box_width + GAP_INCHES
            cursor -= row_depth + GAP_INCHES
        else:
            row_span = sum(heights[i] for i in row) + (len(row) - 1) * GAP_INCHES
            top = (height + row_span) / 2
            for index in row:
                frames[index] = (cursor, top - heights[index], heights[index])
                top -= heights[index] + GAP_INCHES
            cursor += box_width + GAP_INCHES
    return frames


def _draw(ax: plt.Axes, texts: list[list[str]], frames: dict[int, tuple[float, float, float]], box_width: float,
          links: list[tuple[int, int]], skips: set[tuple[int, int]], direction: str) -> None:
    """The boxes at their frames, then an arrow along each edge (bent round the boxes where it skips rows)."""
    for index, lines in enumerate(texts):
        left, bottom, box_height = frames[index]
        ax.add_patch(FancyBboxPatch((left, bottom), box_width, box_height, boxstyle="round,pad=0,rounding_size=0.06",
                                    facecolor="#eef3fb", edgecolor="#3a5a8c", linewidth=1.0))
        # parse_math=False: a "$" in a layer name is text, not the start of a formula
        ax.text(left + box_width / 2, bottom + box_height / 2, "\n".join(lines), ha="center", va="center",
                family="monospace", fontsize=FONT_POINTS, linespacing=1.4, parse_math=False)
    for a, b in links:
        (left, bottom, box_height), (next_left, next_bottom, next_height) = frames[a], frames[b]
        if (a, b) in skips:
            if direction == "TB":  # from the right side of one box to the right side of the other, bulging right
                start, end = (left + box_width, bottom + box_height / 2), (next_left + box_width,
                                                                            next_bottom + next_height / 2)
            else:  # below the boxes
                start, end = (left + box_width / 2, bottom), (next_left + box_width / 2, next_bottom)
            ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "#3a5a8c", "lw": 1.0,
                                                              "connectionstyle": "arc3,rad=0.35"})
            continue
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
