"""Packages whose public names are imported on first use (PEP 562): one `__getattr__` for all of them.

`cnnlab`, `cnnlab.data` and `cnnlab.export` list where each public name lives and import it when it
is first read, so `import cnnlab` (and the `cnnlab` command's start) imports no torch and no
onnxruntime until something needs them. Standard library only.

>>> import cnnlab.data
>>> lazy_attribute("cnnlab.data", {"list_images": "images"}, "list_images", {}) is cnnlab.data.images.list_images
True
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["lazy_attribute"]


def lazy_attribute(package: str, homes: dict[str, str], name: str, namespace: dict[str, Any]) -> Any:
    """`package`'s public `name`, imported from its home module (a module name relative to `package`,
    or absolute when it starts with "cnnlab.") and kept in `namespace` (the package's globals), so later
    reads are plain attribute reads; else `package`'s submodule `name`; else AttributeError."""
    home = homes.get(name)
    if home is not None:
        module = home if home.startswith("cnnlab.") else f"{package}.{home}"
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.{name}":
            raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
