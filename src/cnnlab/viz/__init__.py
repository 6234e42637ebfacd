"""Pictures: the only package that imports matplotlib."""

from cnnlab.viz.curves import plot_history

__all__ = ["plot_history"]
