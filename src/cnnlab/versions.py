"""Library and platform versions, recorded in every run directory and model file."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

__all__ = ["__version__", "versions"]

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries a result depends on.

    >>> versions()["cnnlab"] == __version__
    True
    """
    found = {"cnnlab": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("torch", "torchvision", "numpy", "safetensors", "pillow"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
