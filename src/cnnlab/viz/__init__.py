"""Pictures: the only package that imports matplotlib."""

from cnnlab.viz.curves import plot_history
from cnnlab.viz.grids import augment_preview, plot_image_grid

__all__ = ["plot_history", "plot_image_grid", "augment_preview"]
