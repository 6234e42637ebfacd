"""Writing matplotlib figures to PNG files, one way for every picture cnnlab draws."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["save_figure"]

DPI = 100  # pixels per inch: figure sizes in inches are chosen for this


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Lay out `fig`, write it to `path` as a PNG (creating folders), close it, return the path.

    >>> import tempfile
    >>> fig, _ = plt.subplots()
    >>> save_figure(fig, Path(tempfile.mkdtemp()) / "a" / "f.png").is_file()
    True
    """
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
