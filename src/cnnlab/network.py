"""Network access for the few downloads cnnlab makes (datasets, pretrained weights)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["socket_timeout"]


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Give up on unanswered connections after `seconds` (torchvision's downloaders set none), then restore.

    Offline machines then fail in seconds instead of hanging.

    >>> with socket_timeout(3.0):
    ...     socket.getdefaulttimeout()
    3.0
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
