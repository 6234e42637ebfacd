"""`model.summary()` as Keras 3 prints it: the same table, the same numbers, character for character.

Rows are the model's layers with the output shape each has in this model (read from the symbolic
tensors the model was built with, nothing traced) and its weight count (models/summary.py counts as
Keras: BatchNorm's moving statistics are non-trainable weights; a nested model is one row). A
graph that is not a chain gets Keras's fourth column, "Connected to". The table is Keras's box
table at 76 characters (what Keras prints in an 80-column terminal, Jupyter and Colab); cells wrap
at spaces and a word too long for its cell ends in "…", as Keras's rich table does.
"""

from __future__ import annotations

import textwrap
from typing import Any

from torch import nn

from cnnlab.models.graph import Functional
from cnnlab.models.summary import count_parameters

__all__ = ["keras_summary", "readable_size", "sequential_like"]

WIDTHS = (31, 22, 13)  # text width of the three columns at Keras's 76-character line
GRAPH_WIDTHS = (19, 17, 10, 17)  # ... and of the four columns of a graph's table
BYTES_PER_PARAM = 4  # float32, as Keras reports the size
KINDS = {"Model": "Functional"}  # what Keras prints for a nested model's class


def readable_size(n_bytes: float) -> str:
    """Keras's memory size text: 476.29 KB, 3.12 MB, 0.00 B (units of 1024).

    >>> readable_size(121930 * 4), readable_size(0)
    ('476.29 KB', '0.00 B')
    """
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def _wrap(text: str, width: int) -> list[str]:
    lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]
    return [line if len(line) <= width else line[:width - 1] + "…" for line in lines]


def _row(cells: tuple[str, ...], widths: tuple[int, ...], edge: str) -> list[str]:
    wrapped = [_wrap(text, width) for text, width in zip(cells, widths, strict=True)]
    lines = []
    for i in range(max(len(w) for w in wrapped)):
        texts = []
        for column, (w, width) in enumerate(zip(wrapped, widths, strict=True)):
            part = w[i] if i < len(w) else ""
            texts.append(f" {part:>{width}} " if column == 2 else f" {part:<{width}} ")
        lines.append(edge + edge.join(texts) + edge)
    return lines


def _rule(widths: tuple[int, ...], left: str, fill: str, mid: str, right: str) -> str:
    return left + mid.join(fill * (w + 2) for w in widths) + right


def sequential_like(model: nn.Module) -> bool:
    """Keras's test for the three-column table: a chain, one call per depth, each on one tensor, no shared layer."""
    if not isinstance(model, Functional):
        return True
    per_depth: dict[int, int] = {}
    for node in [t.node for t in model.input_tensors] + model.nodes:
        assert node is not None
        depth = model.node_depths[id(node)]
        per_depth[depth] = per_depth.get(depth, 0) + 1
        if len(node.inputs) > 1:
            return False
    calls = [id(node.layer) for node in model.nodes]
    return all(n == 1 for n in per_depth.values()) and len(calls) == len(set(calls))


def _rows(model: Any) -> list[tuple[str, ...]]:
    """(name (type), output shape, params, connected to) per layer of the model."""
    graph = isinstance(model, Functional)
    refs = model.tensor_references() if graph else {}
    outputs = [model.layer_output(layer) for layer in model.layers] if graph else model.tensors[1:]
    rows: list[tuple[str, ...]] = []
    for layer, out in zip(model.layers, outputs, strict=True):
        kind = KINDS.get(type(layer).__name__, type(layer).__name__)
        shape = "(None, " + ", ".join(str(d) for d in out.shape[1:]) + ")"
        node = out.node
        links = ", ".join("{}[{}][{}]".format(*refs[id(t)]) for t in node.inputs) if graph and node else ""
        rows.append((f"{layer.name} ({kind})", shape, f"{count_parameters(layer)[0]:,}", links or "-"))
    return rows


def keras_summary(model: nn.Module, name: str) -> str:
    """The whole summary text of a built model, as Keras 3's `model.summary()` prints it."""
    four = not sequential_like(model)
    widths = GRAPH_WIDTHS if four else WIDTHS
    header = ("Layer (type)", "Output Shape", "Param #", "Connected to")[:len(widths)]
    lines = [f'Model: "{name}"', _rule(widths, "┏", "━", "┳", "┓"), *_row(header, widths, "┃"),
             _rule(widths, "┡", "━", "╇", "┩")]
    rows = _rows(model)
    for i, row in enumerate(rows):
        lines += _row(row[:len(widths)], widths, "│")
        lines.append(_rule(widths, "├", "─", "┼", "┤") if i < len(rows) - 1 else _rule(widths, "└", "─", "┴", "┘"))
    total, trainable, frozen = count_parameters(model)
    for label, count in (("Total", total), ("Trainable", trainable), ("Non-trainable", frozen)):
        lines.append(f" {label} params: {count:,} ({readable_size(count * BYTES_PER_PARAM)})")
    return "\n".join(lines)
