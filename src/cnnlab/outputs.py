"""Where a command writes: one check of its output path before any work, one line when the write fails.

Every CLI command that writes (`-o`, `--report`, `--csv`) passes its path through `output_path`
first, so a typo fails in a second, not after an evaluation, and never creates folders the user
did not ask for (`-o /nonexistent/dir/x.png` used to make /nonexistent/dir). The writing itself
runs inside `writing_to`, which turns an OSError about that output (a full disk, a read-only file
system, permissions changed meanwhile) into one `CnnlabError` line naming the argument and path.
Standard library only: checking a path must not wait for torch to import.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from cnnlab.errors import CnnlabError, one_line

__all__ = ["output_path", "writing_to"]

# errors that say a write failed wherever the file was (a temporary file elsewhere included); a failing
# write() names no file at all, so these are also how such an error is recognised
_WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def output_path(value: str | Path, argument: str, *, folder: bool = False) -> Path:
    """`value` checked as what `argument` writes: a file (`folder=False`) or a folder, whose parent
    folder must exist and, like the output itself when it exists, be writable. Nothing is created.

    >>> import tempfile; d = tempfile.mkdtemp()
    >>> output_path(f"{d}/plot.png", "-o").name
    'plot.png'
    >>> output_path("/nonexistent/dir/x.png", "-o")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: -o /nonexistent/dir/x.png: folder /nonexistent/dir does not exist; create it ...
    """
    path = Path(value)
    parent = path.parent
    if not parent.exists():
        raise CnnlabError(f"{argument} {path}: folder {parent} does not exist; create it (mkdir -p {parent}) or "
                          f"give another {argument}")
    if not parent.is_dir():
        raise CnnlabError(f"{argument} {path}: {parent} is a file, not a folder; give another {argument}")
    if folder and path.exists() and not path.is_dir():
        raise CnnlabError(f"{argument} {path} is a file; {argument} takes a folder to write into: give a new "
                          f"folder name")
    if not folder and path.is_dir():
        raise CnnlabError(f"{argument} {path} is a folder; {argument} takes a file name: give one inside it, "
                          f"e.g. {path / ('output' + (path.suffix or '.png'))}")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
        what = "folder" if target.is_dir() else "file"
        raise CnnlabError(f"{argument} {path}: the {what} {target} is not writable by this user; give another "
                          f"{argument} or change its permissions")
    return path


@contextlib.contextmanager
def writing_to(path: Path, argument: str) -> Iterator[None]:
    """Turn an OSError about writing `path` (or a file beside or inside it) into one CnnlabError line.

    Other OSErrors (an input that cannot be read, a closed stdout pipe) pass through unchanged.

    >>> with writing_to(Path("/x/report"), "--report"):  # doctest: +ELLIPSIS
    ...     raise OSError(errno.ENOSPC, "No space left on device")
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: --report /x/report: writing failed ([Errno 28] No space left on device); free ...
    """
    try:
        yield
    except OSError as exc:
        if not _about(exc, path):
            raise
        raise CnnlabError(f"{argument} {path}: writing failed ({one_line(exc, 200)}); free disk space, fix "
                          f"permissions or give another {argument}") from None


def _about(exc: OSError, path: Path) -> bool:
    """Whether `exc` is about writing `path`: it names `path`, a file beside it (a temporary file renamed
    onto it) or inside it (a folder output), or it is a failure that only writing causes."""
    if exc.errno in _WRITE_FAILURES:
        return True
    names = [Path(os.fsdecode(n)) for n in (exc.filename, exc.filename2) if isinstance(n, (str, bytes))]
    places = {path.absolute(), path.absolute().parent}
    return any(n.absolute() in places or n.absolute().parent in places or path.absolute() in n.absolute().parents
               for n in names)
