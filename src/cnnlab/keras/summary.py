"""`model.summary()` as Keras 3 prints it: the same table, the same numbers, character for character.

The numbers come from cnnlab's one summary (models/summary.py: a forward pass with hooks); this
file only draws Keras's box table, 76 characters wide (what Keras prints in an 80-column terminal,
Jupyter and Colab), wrapping long cells at spaces as Keras does.
"""

from __future__ import annotations

import textwrap

from torch import nn

from cnnlab.models.summary import model_summary

__all__ = ["keras_summary", "readable_size"]

WIDTHS = (31, 22, 13)  # text width of the three columns at Keras's 76-character line
BYTES_PER_PARAM = 4  # float32, as Keras reports the size


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


def _row(cells: tuple[str, str, str], left: str, mid: str, right: str) -> list[str]:
    wrapped = [textwrap.wrap(text, width, break_on_hyphens=False) or [""]
               for text, width in zip(cells, WIDTHS, strict=True)]
    lines = []
    for i in range(max(len(w) for w in wrapped)):
        parts = [w[i] if i < len(w) else "" for w in wrapped]
        texts = [f" {parts[0]:<{WIDTHS[0]}} ", f" {parts[1]:<{WIDTHS[1]}} ", f" {parts[2]:>{WIDTHS[2]}} "]
        lines.append(left + mid.join(texts) + right)
    return lines


def _rule(left: str, fill: str, mid: str, right: str) -> str:
    return left + mid.join(fill * (w + 2) for w in WIDTHS) + right


def keras_summary(model: nn.Module, name: str) -> str:
    """The whole summary text of a built model, as Keras 3's `model.summary()` prints it."""
    summary = model_summary(model)
    lines = [f'Model: "{name}"', _rule("┏", "━", "┳", "┓"),
             *_row(("Layer (type)", "Output Shape", "Param #"), "┃", "┃", "┃"), _rule("┡", "━", "╇", "┩")]
    for i, row in enumerate(summary.rows):
        shape = "(None, " + ", ".join(str(d) for d in row.output_shape) + ")"
        lines += _row((f"{row.name} ({row.kind})", shape, f"{row.params:,}"), "│", "│", "│")
        lines.append(_rule("├", "─", "┼", "┤") if i < len(summary.rows) - 1 else _rule("└", "─", "┴", "┘"))
    for label, count in (("Total", summary.total), ("Trainable", summary.trainable),
                         ("Non-trainable", summary.non_trainable)):
        lines.append(f" {label} params: {count:,} ({readable_size(count * BYTES_PER_PARAM)})")
    return "\n".join(lines)
