"""Image-folder datasets shipped as one archive (.tar.gz, .tgz, .tar, .zip), extracted once into the cache.

    load_dataset("cifar10-jpg.tar.gz")  ->  <data_dir>/extracted/cifar10-jpg-<key>/train/<class>/...

The key hashes the archive's size, mtime and first MiB, which is cheap (no full read) and changes
when the archive is replaced. Extraction goes into a temporary folder that is renamed into place
only when complete, so a killed extraction is never mistaken for a finished one; it holds a lock
(`.<name>.lock`), so two processes extracting one archive take turns, and the lock's holder
removes the `.partial` folders killed extractions left. Members are checked before anything is
written: absolute paths and `..` components are refused, and tar members go through Python's
"data" filter (no links out of the folder, no devices).

Size: the bytes the headers declare are bounded before anything is written (in all, and per byte
of archive above a floor: a 1 MB zip of zeros once wrote 1.1 GB), the data directory must have
room for them. Headers that lie cannot write more: tarfile writes exactly each header's size and
zipfile stops each member at its declared size (a member whose data runs longer fails its CRC).
$CNNLAB_MAX_EXTRACT_GB and $CNNLAB_MAX_EXTRACT_RATIO raise the bounds for a genuinely huge dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import errno
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from cnnlab.errors import CnnlabError, one_line
from cnnlab.rundir import hold_lock

__all__ = ["ARCHIVE_SUFFIXES", "is_archive", "archive_stem", "extract_archive"]

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")

# 1 MiB: enough to tell two archives of equal size and mtime apart in practice (it covers the
# compressed headers of the first hundreds of members) while costing about a millisecond.
KEY_PREFIX_BYTES = 1024**2
KEY_HEX_DIGITS = 12  # 48 bits: collisions between one user's archives are not a practical concern

# An image dataset archive extracts to about its own size (JPEG and PNG are compressed already);
# raw formats such as BMP reach 10-50x. 100x per archive byte, checked only above 1 GiB extracted
# (small archives cannot fill a disk whatever their ratio), and 20 GiB in all leave real datasets
# room while a bomb stops before it writes.
MAX_EXTRACT_GB = 20.0
MAX_EXTRACT_RATIO = 100.0
RATIO_FLOOR_BYTES = 1024**3
FREE_SPACE_MARGIN_BYTES = 64 * 1024**2  # left free after extraction, for the decoded-image cache and the system

# Folders archivers add that are not dataset content (macOS Finder's zip resource forks).
IGNORED_TOP_LEVEL = frozenset({"__MACOSX"})


def is_archive(path: str | Path) -> bool:
    """True for an existing file whose name ends in one of ARCHIVE_SUFFIXES (any case).

    >>> is_archive("/nonexistent/data.tar.gz"), is_archive("/")
    (False, False)
    """
    p = Path(path).expanduser()
    return p.is_file() and p.name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(path: str | Path) -> str:
    """The archive's name without its archive suffix.

    >>> archive_stem("data/cifar10-jpg.tar.gz"), archive_stem("flowers.ZIP")
    ('cifar10-jpg', 'flowers')
    """
    name = Path(path).name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def extract_archive(archive: str | Path, data_dir: str | Path) -> Path:
    """Extract `archive` once into `<data_dir>/extracted/<stem>-<key>/` and return the dataset root.

    The root is the archive's single top-level folder if it has exactly one, else the extracted
    folder itself. A second call with the unchanged archive extracts nothing.

    >>> import tempfile, zipfile
    >>> work = Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(work / "pets.zip", "w") as z:
    ...     z.writestr("pets/cat/1.png", b""); z.writestr("pets/dog/1.png", b"")
    >>> root = extract_archive(work / "pets.zip", work / "cache")
    >>> root.name, sorted(p.name for p in root.iterdir()), extract_archive(work / "pets.zip", work / "cache") == root
    ('pets', ['cat', 'dog'], True)
    """
    archive = Path(archive).expanduser().resolve()
    target = Path(data_dir).expanduser() / "extracted" / f"{archive_stem(archive)}-{_archive_key(archive)}"
    if target.is_dir():
        return _dataset_root(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with hold_lock(target.parent / f".{target.name}.lock"):  # another process may be extracting it now
            for stale in target.parent.glob(f".{target.name}.*.partial"):  # killed extractions' leftovers
                shutil.rmtree(stale, ignore_errors=True)
            if not target.is_dir():
                _extract_into(archive, target)
    except OSError as exc:
        raise CnnlabError(f"could not extract {archive} into {target.parent}: {exc.strerror or exc} "
                          f"({errno.errorcode.get(exc.errno or 0, 'OSError')}); nothing was kept. Free disk space, "
                          f"or give --data-dir (or $CNNLAB_DATA) on a disk with room") from None
    return _dataset_root(target)


def _extract_into(archive: Path, target: Path) -> None:
    """Extract into a `.partial` folder beside `target`, then rename it into place (removed on any failure)."""
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, partial)
        else:
            _extract_tar(archive, partial)
        os.rename(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _limit(name: str, default: float) -> float:
    """A bound from the environment variable `name` (a positive number), else `default`."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise CnnlabError(f"${name}={text!r} is not a positive number; set it to e.g. {default:g}, or unset it")
    return value


def check_extract_size(archive: Path, declared: int, destination: Path) -> int:
    """Refuse, before writing, an archive whose members declare too many bytes or more than `destination` has free.

    Returns `declared`, the bound on what extraction writes.

    >>> import tempfile; work = Path(tempfile.mkdtemp()); (work / "a.zip").write_bytes(b"x" * 100)
    100
    >>> check_extract_size(work / "a.zip", 5_000, work)
    5000
    """
    limit_gb = _limit("CNNLAB_MAX_EXTRACT_GB", MAX_EXTRACT_GB)
    ratio_limit = _limit("CNNLAB_MAX_EXTRACT_RATIO", MAX_EXTRACT_RATIO)
    size = max(archive.stat().st_size, 1)
    if declared > limit_gb * 1024**3:
        raise CnnlabError(f"archive {str(archive)!r} would extract to {declared / 1024**3:.1f} GiB, more than the "
                          f"{limit_gb:g} GiB allowed; set $CNNLAB_MAX_EXTRACT_GB higher if this dataset is that "
                          f"large, or extract it yourself and give the folder")
    if declared > RATIO_FLOOR_BYTES and declared > ratio_limit * size:
        raise CnnlabError(f"archive {str(archive)!r} ({size:,} bytes) would extract to {declared:,} bytes, "
                          f"{declared / size:.0f}x its size (image datasets stay under {ratio_limit:g}x): a "
                          f"decompression bomb? Set $CNNLAB_MAX_EXTRACT_RATIO higher if you trust it")
    free = shutil.disk_usage(destination).free
    if declared + FREE_SPACE_MARGIN_BYTES > free:
        raise CnnlabError(f"archive {str(archive)!r} extracts to {declared / 1024**2:,.0f} MiB but {destination} "
                          f"has {free / 1024**2:,.0f} MiB free; free disk space, or give --data-dir (or "
                          f"$CNNLAB_DATA) on a disk with room")
    return declared


def _archive_key(archive: Path) -> str:
    status = archive.stat()
    digest = hashlib.sha256(f"{status.st_size}:{status.st_mtime_ns}:".encode())
    with open(archive, "rb") as handle:
        digest.update(handle.read(KEY_PREFIX_BYTES))
    return digest.hexdigest()[:KEY_HEX_DIGITS]


def _check_member_name(archive: Path, name: str) -> None:
    """Refuse a member that would land outside the extraction folder."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\")):
        raise CnnlabError(f"archive {str(archive)!r} holds a member with an absolute path ({name!r}); refusing to "
                          f"extract it. Rebuild the archive with relative paths (e.g. `tar czf data.tar.gz -C parent "
                          f"folder`)")
    if ".." in posix.parts or ".." in windows.parts:
        raise CnnlabError(f"archive {str(archive)!r} holds a member with '..' in its path ({name!r}) that would be "
                          f"written outside the extraction folder; refusing to extract it. Rebuild the archive "
                          f"without '..' paths")


def _extract_tar(archive: Path, destination: Path) -> None:
    try:
        with tarfile.open(archive) as tar:  # mode "r:*": plain or compressed, detected from the content
            members = tar.getmembers()
            for member in members:
                _check_member_name(archive, member.name)
                if member.islnk() or member.issym():
                    _check_member_name(archive, member.linkname)
            # tarfile writes exactly each header's size, read from the stream, so the headers' sum is the bound
            check_extract_size(archive, sum(m.size for m in members if m.isfile()), destination)
            tar.extractall(destination, members=members, filter="data")
    except tarfile.FilterError as error:
        raise CnnlabError(f"archive {str(archive)!r} holds an unsafe member ({error}); refusing to extract it. "
                          f"Rebuild the archive from plain files and folders") from None
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as error:  # not a tar, or cut short
        raise CnnlabError(f"archive {str(archive)!r} could not be read as a tar archive ({one_line(error)}); "
                          f"check the file is complete (download it again) or give the extracted folder") from None


def _extract_zip(archive: Path, destination: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            infos = zipped.infolist()
            for info in infos:
                _check_member_name(archive, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise CnnlabError(f"archive {str(archive)!r} holds a symbolic link ({info.filename!r}); "
                                      f"refusing to extract it. Rebuild the archive from plain files and folders")
            # zipfile stops each member at the size its header declares (and a member cut short fails its
            # CRC), so the headers' sum bounds what is written even when the compressed data says otherwise
            check_extract_size(archive, sum(i.file_size for i in infos if not i.is_dir()), destination)
            zipped.extractall(destination, members=infos)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise CnnlabError(f"archive {str(archive)!r} could not be read as a zip archive ({one_line(error)}); "
                          f"check the file is complete (download it again) or give the extracted folder") from None


def _dataset_root(extracted: Path) -> Path:
    entries = [p for p in extracted.iterdir() if not p.name.startswith(".") and p.name not in IGNORED_TOP_LEVEL]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return extracted
