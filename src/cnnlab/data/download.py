"""Finding a built-in dataset's files, downloading them once with torchvision when allowed.

Downloads go through torchvision's own downloaders (mirrors and checksums included) into the
data folder; the files are then read by cnnlab's readers, so an offline copy and a downloaded
one load the same way. When the files cannot be found, the error says which files to put where.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.error import URLError

from cnnlab.errors import CnnlabError
from cnnlab.network import socket_timeout

__all__ = ["locate_or_download", "one_line"]

T = TypeVar("T")

# Long enough for a slow mirror to answer, short enough that an offline machine fails in seconds.
DOWNLOAD_TIMEOUT_S = 10.0

_TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10",
                        "cifar100": "CIFAR100"}


def locate_or_download(dataset: str, split: str, data_dir: Path, download: bool, find: Callable[[], T | None],
                       expected: Sequence[str], folder: Path, note: Callable[[], str] = lambda: "") -> T:
    """`find()`'s result; if it finds nothing, download (when allowed) and look again.

    `expected` and `folder` are the file names and the place the error message asks for;
    `note()` may add what was found instead (", found X but not Y").

    >>> locate_or_download("mnist", "test", Path("/nowhere"), False, lambda: None,
    ...                    ["t10k-images-idx3-ubyte.gz"], Path("/nowhere/mnist"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: mnist (test): files not found: t10k-images-idx3-ubyte.gz. Put them in ...
    """
    found = find()
    if found is not None:
        return found
    if download:
        failure = _download(dataset, split, data_dir)
        found = find()
        if found is not None:
            return found
        outcome = f"download failed: {failure}" if failure else "the download finished but the files are not there"
    else:
        outcome = "automatic download is off (download=False)"
    raise CnnlabError(f"{dataset} ({split}): files not found: {', '.join(expected)}{note()}. Put them in {folder}/ "
                      f"(or set --data-dir / CNNLAB_DATA to a folder that has them); {outcome}.")


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one short line (some carry multi-line messages), for use inside an error.

    >>> one_line(OSError("no route\\nto host"))
    'OSError: no route to host'
    """
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _download(dataset: str, split: str, data_dir: Path) -> str | None:
    """Download `dataset` into `data_dir` with torchvision; None on success, else the reason it failed."""
    try:
        from torchvision import datasets

        with socket_timeout(DOWNLOAD_TIMEOUT_S):
            getattr(datasets, _TORCHVISION_CLASSES[dataset])(root=str(data_dir), train=split == "train",
                                                             download=True)
    except (URLError, OSError, RuntimeError, ImportError) as error:  # URLError is an OSError; listed for the reader
        return one_line(error)
    return None
