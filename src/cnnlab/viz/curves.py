"""Training curves: accuracy and loss per epoch, training vs validation (as seed 004 plots)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from cnnlab.viz.figures import save_figure  # noqa: E402

__all__ = ["plot_history", "plot_runs"]


def plot_history(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Write a PNG with accuracy (left) and loss (right) curves; return its path.

    >>> import tempfile
    >>> p = plot_history({"loss": [1.0, 0.5], "accuracy": [0.5, 0.8]}, Path(tempfile.mkdtemp()) / "c.png")
    >>> p.stat().st_size > 0
    True
    """
    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = history.get(key)
            if values:
                epochs = range(1, len(values) + 1)
                ax.plot(epochs, values, marker="o", label=label)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(metric.capitalize())
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if metric == "accuracy" else "upper right")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_runs(histories: dict[str, dict[str, list[float]]], path: str | Path, title: str = "") -> Path:
    """Compare runs on one PNG: accuracy (left) and loss (right); solid train, dashed validation.

    >>> import tempfile
    >>> runs = {"a": {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, "b": {"loss": [0.9, 0.4]}}
    >>> plot_runs(runs, Path(tempfile.mkdtemp()) / "runs.png").suffix
    '.png'
    """
    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, history) in enumerate(histories.items()):
        color = colors[i % len(colors)]
        for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                values = history.get(key)
                if values:
                    label = f"{name} ({'validation' if style == '--' else 'train'})"
                    ax.plot(range(1, len(values) + 1), values, style, color=color, marker="o", label=label)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.set_xlabel("Epoch")
        ax.set_ylabel(metric.capitalize())
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a metric no run logged leaves the panel empty
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
