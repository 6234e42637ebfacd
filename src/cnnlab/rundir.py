"""A run directory's files: read with one-line errors, written atomically with one-line errors, claimed by one process.

Three mechanisms every entry point that touches a run directory goes through (train, --resume,
fine-tune, the speed-run, rank 0 of a torchrun job; evaluate, curves and the CLI's printout read):
- `read_json`: a run's JSON file (config.json, checkpoint.json, history.json, split.json...) or a
  one-line `CnnlabError` naming it: missing, unreadable, not UTF-8, not JSON, nested too deeply,
  not the kind of value expected. A hand-edited file never becomes a traceback.
- `write_file` / `write_json` / `writing`: atomic writes (temporary file, then rename: the old file
  survives any failure), where an OSError (a full disk, a read-only mount, lost permissions)
  becomes one line naming the file, the reason and the fix.
- `claim_run_dir`: a run directory belongs to one process at a time. The claim is a lock file
  (`.cnnlab.lock`, the owner's pid inside) locked with flock(2): the kernel drops the lock when its
  owner dies however it dies, so a stale lock is simply taken over, and a second training, resume
  or fine-tune on the same directory is refused in one line naming the owner's pid. The claimant
  also removes the temporary files a killed writer left behind (`.NAME.XXXX.tmp`).
`hold_lock` is the same flock primitive for other shared folders (archive extraction).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_write

__all__ = ["LOCK_NAME", "MAX_JSON_BYTES", "RunLock", "claim_run_dir", "hold_lock", "read_json", "write_file",
           "write_json", "writing", "disk_error", "remove_temp_files"]

LOCK_NAME = ".cnnlab.lock"
PROBE_NAME = ".write-probe"  # check_writable's test file (training/checkpoint.py)
# A run's largest JSON file is checkpoint.json: a line per tensor of the model and the optimizer plus the
# history, about 1 MB for a ResNet-50. 64 MiB is far above any real one and far below a memory problem.
MAX_JSON_BYTES = 64 * 1024**2
_WRITE_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)  # no read fails so
# What each errno means for the user: the one fix to try.
_FIXES = {errno.ENOSPC: "free disk space", errno.EDQUOT: "free space within your disk quota",
          errno.EROFS: "the file system is read-only: choose a writable folder",
          errno.EACCES: "fix the folder's permissions or choose another folder",
          errno.EPERM: "fix the folder's permissions or choose another folder",
          errno.EFBIG: "the file system takes no file this large: choose another folder"}


def read_json(path: str | Path, expect: type = dict, fix: str = "restore it or start the run again") -> Any:
    """The JSON value in `path` (of type `expect`), or a one-line CnnlabError naming the file and `fix`.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "config.json"; _ = p.write_text('{"epochs": 3}')
    >>> read_json(p)
    {'epochs': 3}
    >>> _ = p.write_bytes(b'{"epochs": 3'); read_json(p, fix="start the run again")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: ... is not valid JSON (Expecting ',' delimiter at line 1, column 13); start the run again
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            blob = handle.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise CnnlabError(f"{path} cannot be read: {exc.strerror or exc}; {fix}") from None
    if len(blob) > MAX_JSON_BYTES:
        raise CnnlabError(f"{path} is larger than {MAX_JSON_BYTES // 1024**2} MiB, which no file cnnlab writes is; "
                          f"{fix}")
    try:
        value = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CnnlabError(f"{path} is not UTF-8 text (byte 0x{blob[exc.start]:02x} at offset {exc.start}); "
                          f"{fix}") from None
    except json.JSONDecodeError as exc:
        raise CnnlabError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                          f"{fix}") from None
    except RecursionError:
        raise CnnlabError(f"{path} is nested too deeply to be a file cnnlab wrote; {fix}") from None
    if not isinstance(value, expect):
        raise CnnlabError(f"{path} holds a JSON {type(value).__name__}, expected a JSON "
                          f"{'object' if expect is dict else expect.__name__}; {fix}")
    return value


def disk_error(path: Path, exc: OSError, after: str = "") -> CnnlabError:
    """The one-line error for an OSError met while writing `path`: reason, errno name, fix, then `after`.

    >>> str(disk_error(Path("run/best.safetensors"), OSError(errno.ENOSPC, "No space left on device")))
    'could not write run/best.safetensors: No space left on device (ENOSPC); free disk space'
    """
    code = errno.errorcode.get(exc.errno or 0, "OSError")
    fix = _FIXES.get(exc.errno or 0, "check the disk and the folder")
    return CnnlabError(f"could not write {path}: {exc.strerror or exc} ({code}); {fix}{after}")


@contextlib.contextmanager
def writing(path: Path, after: str | Callable[[], str] = "", within: bool = False) -> Iterator[None]:
    """Writes inside the block that fail with an OSError fail as `disk_error(path, ...)` (`after` may be computed).

    `within`: `path` is a folder and the block does more than write there (a training run), so only
    an OSError about a file in that folder, or one that only writes cause (a full disk, a read-only
    file system), is converted, naming that file when the OS names it.

    >>> with writing(Path("run"), within=True): raise OSError(errno.ENOSPC, "No space left on device", "run/x.csv")
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: could not write run/x.csv: No space left on device (ENOSPC); free disk space
    """
    try:
        yield
    except OSError as exc:
        if not within:
            raise disk_error(path, exc, after() if callable(after) else after) from None
        named = Path(os.fsdecode(exc.filename)) if isinstance(exc.filename, (str, bytes, os.PathLike)) else None
        inside = named is not None and Path(path).resolve() in named.resolve().parents
        if not inside and exc.errno not in _WRITE_ONLY:
            raise
        target = _target_of(named) if inside and named is not None else path
        raise disk_error(target, exc, after() if callable(after) else after) from None


def _target_of(path: Path) -> Path:
    """The file a temporary `.NAME.XXXX.tmp` of `atomic_write` stands for (else `path` itself)."""
    name = path.name
    if name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3:
        return path.with_name(name[1:].rsplit(".", 2)[0])
    return path


def write_file(path: Path, write: Callable[[Path], Any], *, fsync: bool = False,
               after: str | Callable[[], str] = "") -> None:
    """`atomic_write` (the old file survives any failure) whose OSError is one line naming `path`.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "notes.txt"
    >>> write_file(p, lambda tmp: tmp.write_text("hi")); p.read_text()
    'hi'
    """
    with writing(path, after):
        atomic_write(path, write, fsync=fsync)


def write_json(path: Path, data: Any, *, after: str | Callable[[], str] = "") -> None:
    """`data` as indented JSON, written by `write_file`.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "a.json"; write_json(p, {"a": 1}); read_json(p)
    {'a': 1}
    """
    write_file(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"), after=after)


def remove_temp_files(directory: Path) -> list[str]:
    """Delete the temporary files (`.NAME.XXXX.tmp`, left by `atomic_write` when its process was killed) in `directory`.

    Call it only while holding the directory's claim: then no live writer owns them.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / ".best.safetensors.ab12.tmp").write_bytes(b"x")
    >>> remove_temp_files(d), list(d.iterdir())
    (['.best.safetensors.ab12.tmp'], [])
    """
    removed = []
    for path in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.name)
    return sorted(removed)


class RunLock:
    """The claim on a run directory (see `claim_run_dir`): hold it for the run, then `release()` it."""

    def __init__(self, path: Path, fd: int, created: bool) -> None:
        self.path, self.fd, self.created = path, fd, created

    def release(self) -> None:
        """Give the directory up: remove the lock file (still holding it), and the directory if it stayed empty."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            (self.path / LOCK_NAME).unlink()
        os.close(self.fd)
        self.fd = -1
        if self.created:  # a run that failed before writing anything leaves no directory behind
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_run_dir(path: Path, *, new: bool, numbered: bool = False) -> RunLock:
    """Claim `path` for this process: create it (`new`; it must then hold no run) or take an existing run (resume).

    `numbered`: `path` is an automatic name, so when it exists already the next free `path-2`,
    `path-3`... is taken instead (two runs started in the same second get two names).

    >>> import tempfile; root = Path(tempfile.mkdtemp())
    >>> with claim_run_dir(root / "run", new=True) as lock:
    ...     claim_run_dir(root / "run", new=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: run directory .../run is in use by process ... (it holds .../run/.cnnlab.lock); ...
    """
    path, created = Path(path), False
    try:
        base, n = path, 1
        while new:
            try:
                path.mkdir(parents=True)  # atomic: of two processes creating one name, one gets FileExistsError
                created = True
                break
            except FileExistsError:
                if not numbered:
                    break
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        fd = _lock(path / LOCK_NAME, wait=False)
    except OSError as exc:
        raise CnnlabError(f"run directory {path} cannot be written: {exc.strerror or exc}; choose another "
                          f"--run-dir, or free disk space / fix its permissions") from None
    if fd is None:
        raise CnnlabError(f"run directory {path} is in use by process {_owner(path / LOCK_NAME)} (it holds "
                          f"{path / LOCK_NAME}); wait for that run to end, or choose another --run-dir")
    lock = RunLock(path, fd, created)
    others = [p.name for p in path.iterdir() if p.name not in (LOCK_NAME, PROBE_NAME) and not p.name.endswith(".tmp")]
    if new and others:
        lock.release()
        raise CnnlabError(f"run directory {path} already exists and is not empty; cnnlab never overwrites a run. "
                          f"Choose another --run-dir or delete that one")
    remove_temp_files(path)  # a killed writer's leftovers: no live process owns them while we hold the claim
    (path / PROBE_NAME).unlink(missing_ok=True)
    return lock


@contextlib.contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """Hold the flock on the file `path` for the block, waiting for another holder to finish first.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / ".x.lock"
    >>> with hold_lock(p): p.is_file()
    True
    """
    fd = _lock(path, wait=True)
    assert fd is not None  # a waiting lock is always granted
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _lock(path: Path, wait: bool) -> int | None:
    """An open descriptor of `path` holding its exclusive flock, with this process's pid inside; None if held elsewhere.

    The holder removes the file when done, so a lock taken on a file that was removed meanwhile is
    taken again on the new file (else two processes could each hold a lock on a different file).
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _owner(path: Path) -> str:
    """The pid written in a lock file, for the message (the file may be mid-write: then 'another process')."""
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "(unknown pid)"
