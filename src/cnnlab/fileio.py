"""Writing files so that readers never see half of one (model files, run records, dataset caches)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "new_file_mode", "user_cache_folder"]


def atomic_write(path: Path, write: Callable[[Path], Any], *, fsync: bool = False) -> None:
    """Call `write(tmp_path)`, then rename onto `path`: readers never see half a file.

    The temporary file sits in the same folder (a rename across file systems is not atomic) and is
    removed when `write` fails, so a killed or failed write leaves the previous `path` untouched.
    The file gets the permissions a new file gets (`new_file_mode`), not mkstemp's 0600.
    `fsync` also flushes the file to disk before the rename and the folder after it, so a power
    cut cannot leave the new name pointing at unwritten blocks (checkpoints use it).

    >>> import tempfile; target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(target, lambda tmp: tmp.write_text("done")); target.read_text()
    'done'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, new_file_mode())  # mkstemp makes 0600; a server or colleague running as another user reads it
        if fsync:
            _fsync(Path(tmp))
        os.replace(tmp, path)
        if fsync and os.name == "posix":  # the rename itself lives in the folder's entry table
            _fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def new_file_mode() -> int:
    """0o666 less the process's umask: the permissions open() gives a new file (0o644 under umask 022).

    >>> oct(new_file_mode() & 0o600)
    '0o600'
    """
    try:  # Linux says it without changing it; os.umask() can only read it by setting it (racy in threads)
        with open("/proc/self/status", encoding="ascii") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def user_cache_folder(env: str, subfolder: str = "") -> Path:
    """The folder named by the environment variable `env` when it is set, else `subfolder` of the user
    cache folder (e.g. ~/.cache/cnnlab/datasets): where cnnlab keeps what it can make again.

    >>> os.environ["CNNLAB_TEST_FOLDER"] = "/tmp/x"; str(user_cache_folder("CNNLAB_TEST_FOLDER", "datasets"))
    '/tmp/x'
    >>> del os.environ["CNNLAB_TEST_FOLDER"]; user_cache_folder("CNNLAB_TEST_FOLDER", "datasets").name
    'datasets'
    """
    from_env = os.environ.get(env, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    import platformdirs  # here: a command that never caches does not import it

    return Path(platformdirs.user_cache_dir("cnnlab")) / subfolder
