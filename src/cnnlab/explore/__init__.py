"""`cnnlab explore`: an interactive model explorer in the browser (issue 20).

>>> from cnnlab.explore import architecture
"""

from cnnlab.explore.architecture import LayerInfo, Window, architecture, output_formula, params_worked, window_of

__all__ = ["LayerInfo", "Window", "architecture", "output_formula", "params_worked", "window_of"]
