"""Studio projects on disk: `PROJECTS_DIR/<name>/data/<class>/<images>` and `runs/`, as the CLI reads them.

The class folders are the single source of truth: every listing reads the disk, nothing is mirrored
in a database, so a folder edited from the command line (or from a second browser tab) is what the
studio shows next. Uploaded images are stored under names made from their content (the first 20 hex
digits of their sha256, then the extension of their real format), never under a name a client gave,
so a file uploaded twice is stored once. Nothing is ever deleted: projects, classes and images that
the user removes are moved into a trash folder (`PROJECTS_DIR/.trash/`, `PROJECT/.trash/`). Every
file is written atomically (a hidden temporary file, then a rename), so a crash leaves either the
old state or the new one.

>>> import tempfile; store = ProjectStore(Path(tempfile.mkdtemp()))
>>> store.create_project("flowers").name, [p["name"] for p in store.list_projects()]
('flowers', ['flowers'])
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cnnlab.data.images import IMAGE_EXTENSIONS, list_images, open_image
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_write

__all__ = ["ProjectStore", "StudioError", "check_name", "NAME_LIMIT", "THUMBNAIL_SIZE", "PAGE_LIMIT",
           "stored_name", "Stored"]

NAME_LIMIT = 64          # characters of a project or class name: a folder name every file system takes
THUMBNAIL_SIZE = 160     # longest side of a thumbnail in pixels: sharp in a 80-px grid cell at 2x zoom
PAGE_LIMIT = 500         # most images one listing request returns; the grid asks page by page as it scrolls
HASH_DIGITS = 20         # hex digits of sha256 in a stored name: 80 bits, no collision in any real project
EXTENSION = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}
# Letters (any script), digits, space, '-', '_', '.'; starting with a letter or digit, so never '.', '..'
# or a hidden name; no separators, so never a path.
_NAME = re.compile(r"[^\W_][\w .\-]*", re.UNICODE)


class StudioError(Exception):
    """A request the studio refuses: `status` is the HTTP status, the message one line for the page.

    >>> StudioError(404, "no project 'x'").status
    404
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def check_name(name: object, what: str) -> str:
    """`name` when it can be a project or class folder name, else a one-line 400 `StudioError`.

    >>> check_name("tulips 2", "class")
    'tulips 2'
    >>> check_name("../etc", "project")
    Traceback (most recent call last):
    cnnlab.studio.projects.StudioError: project name '../etc' is not allowed: use 1-64 letters, digits, spaces, \
'-', '_' or '.', starting with a letter or digit (e.g. 'my-flowers')
    """
    text = name if isinstance(name, str) else ""
    if not isinstance(name, str) or len(text) > NAME_LIMIT or not _NAME.fullmatch(text) or text != text.strip():
        shown = repr(name)[:NAME_LIMIT + 10]
        raise StudioError(400, f"{what} name {shown} is not allowed: use 1-{NAME_LIMIT} letters, digits, spaces, "
                               f"'-', '_' or '.', starting with a letter or digit (e.g. 'my-flowers')")
    return text


def stored_name(data: bytes, image_format: str) -> str:
    """The name an uploaded image is stored under: its content's hash and its real format's extension.

    >>> stored_name(b"abc", "PNG")
    'ba7816bf8f01cfea4141.png'
    """
    return hashlib.sha256(data).hexdigest()[:HASH_DIGITS] + EXTENSION[image_format]


@dataclass
class Stored:
    """What became of one uploaded file: stored under `name`, or a duplicate of `duplicate_of` (class/name)."""

    filename: str
    name: str
    duplicate_of: str | None = None


class ProjectStore:
    """The projects under one folder, and every change to them; a lock serialises changes within the server.

    >>> import tempfile; store = ProjectStore(Path(tempfile.mkdtemp()))
    >>> _ = store.create_project("pets"); store.create_class("pets", "cat"); store.classes("pets")
    [{'name': 'cat', 'images': 0}]
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        # per project: (its class folders' names and modification times, content key -> "class/name"); a
        # listing of every image per stored file made an import of 10,000 photos quadratic (30 a second)
        self._known: dict[str, tuple[tuple[tuple[str, int], ...], dict[str, str]]] = {}
        self._listings: dict[Path, tuple[int, list[str]]] = {}  # class folder -> (its mtime, sorted image names)

    def _class_listing(self, folder: Path) -> list[str]:
        """A class folder's image names, sorted; listed again only when the folder changed (a page of a
        10,000-photo class took 143 ms when every page listed and sorted the folder)."""
        stamp = folder.stat().st_mtime_ns
        cached = self._listings.get(folder)
        if cached is None or cached[0] != stamp:
            cached = (stamp, _image_names(folder))
            if len(self._listings) > 256:  # folders of projects deleted or renamed meanwhile
                self._listings.clear()
            self._listings[folder] = cached
        return cached[1]

    def sweep_partial_writes(self) -> int:
        """Remove what a killed studio left half written in class folders (atomic_write's hidden `.NAME.*.tmp`
        files; the photo itself was never renamed into place, so nothing is lost); returns how many. For
        the start of a studio, before anything writes."""
        removed = 0
        for leftover in self.root.glob("*/data/*/.*.tmp"):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    # projects ----------------------------------------------------------------------------------------
    def project(self, name: str) -> Path:
        """The folder of existing project `name` (a 404 when there is none)."""
        folder = self.root / check_name(name, "project")
        if not (folder / "data").is_dir():
            raise StudioError(404, f"no project {name!r} in {self.root}; create it first or pick one from the list")
        return folder

    def list_projects(self) -> list[dict[str, Any]]:
        """Every project: name, classes, images, runs (folders with a `data/` subfolder)."""
        found = []
        for folder in sorted(self.root.iterdir(), key=lambda p: p.name.lower()):
            if folder.name.startswith(".") or not (folder / "data").is_dir():
                continue
            classes = self.classes(folder.name)
            runs = folder / "runs"
            found.append({"name": folder.name, "classes": len(classes), "images": sum(c["images"] for c in classes),
                          "runs": len([r for r in runs.iterdir() if r.is_dir()]) if runs.is_dir() else 0})
        return found

    def create_project(self, name: str) -> Path:
        """Make `PROJECTS_DIR/name/` with `data/` and `runs/`; a 409 when the name is taken."""
        folder = self.root / check_name(name, "project")
        with self.lock:
            if folder.exists():
                raise StudioError(409, f"project {name!r} exists already; pick another name or open it")
            (folder / "data").mkdir(parents=True)
            (folder / "runs").mkdir()
        return folder

    def rename_project(self, name: str, new: str) -> Path:
        """Rename a project's folder; a 409 when `new` is taken."""
        with self.lock:
            folder, target = self.project(name), self.root / check_name(new, "project")
            if target.exists():
                raise StudioError(409, f"project {new!r} exists already; pick another name")
            folder.rename(target)
        return target

    def delete_project(self, name: str) -> Path:
        """Move a project into `PROJECTS_DIR/.trash/` (nothing is removed); returns where it went."""
        with self.lock:
            folder = self.project(name)
            target = self._trash_path(self.root / ".trash", name)
            folder.rename(target)
        return target

    # classes -----------------------------------------------------------------------------------------
    def class_folder(self, project: str, name: str, must_exist: bool = True) -> Path:
        folder = self.project(project) / "data" / check_name(name, "class")
        if must_exist and not folder.is_dir():
            raise StudioError(404, f"project {project!r} has no class {name!r}; create it first")
        return folder

    def classes(self, project: str) -> list[dict[str, Any]]:
        """The class folders of a project, sorted as training sorts them, with their image counts."""
        data = self.project(project) / "data"
        return [{"name": c.name, "images": len(list_images(c))} for c in sorted(data.iterdir())
                if c.is_dir() and not c.name.startswith(".")]

    def create_class(self, project: str, name: str) -> None:
        """Make an empty class folder; a 409 when it exists."""
        with self.lock:
            folder = self.class_folder(project, name, must_exist=False)
            if folder.exists():
                raise StudioError(409, f"class {name!r} exists already in project {project!r}")
            folder.mkdir()

    def rename_class(self, project: str, name: str, new: str) -> None:
        """Rename a class folder; a 409 when `new` exists (merge it instead)."""
        with self.lock:
            folder, target = self.class_folder(project, name), self.class_folder(project, new, must_exist=False)
            if target.exists():
                raise StudioError(409, f"class {new!r} exists already; merge {name!r} into it instead of renaming")
            folder.rename(target)

    def merge_class(self, project: str, name: str, into: str) -> int:
        """Move every image of class `name` into class `into`, then trash the empty folder; returns images moved."""
        with self.lock:
            folder = self.class_folder(project, name)
            moved = self.move_images(project, name, [p.name for p in list_images(folder)], into)
            self.delete_class(project, name)
        return moved

    def delete_class(self, project: str, name: str) -> Path:
        """Move a class folder, with its images, into `PROJECT/.trash/classes/`."""
        with self.lock:
            folder = self.class_folder(project, name)
            target = self._trash_path(self.project(project) / ".trash" / "classes", name)
            folder.rename(target)
        return target

    # images ------------------------------------------------------------------------------------------
    def images(self, project: str, name: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """One page of a class's image names (sorted), and how many there are in all."""
        if offset < 0 or not 0 < limit <= PAGE_LIMIT:
            raise StudioError(422, f"offset must be >= 0 and limit 1..{PAGE_LIMIT}; got offset {offset}, "
                                   f"limit {limit}")
        files = self._class_listing(self.class_folder(project, name))
        return {"class": name, "total": len(files), "offset": offset, "images": files[offset:offset + limit]}

    def image_path(self, project: str, name: str, image: str) -> Path:
        """The file of one image of a class (a 404 for a name that is not one of its images)."""
        folder = self.class_folder(project, name)
        if "/" in image or "\\" in image or image.startswith(".") or Path(image).suffix.lower() not in IMAGE_EXTENSIONS:
            raise StudioError(400, f"image name {image[:80]!r} is not an image file name of class {name!r}")
        path = folder / image
        if not path.is_file():
            raise StudioError(404, f"class {name!r} has no image {image[:80]!r}; reload the page to see its images")
        return path

    def known_names(self, project: str) -> dict[str, str]:
        """Every image's content key (its stored name's stem) -> "class/name", for duplicate detection.

        Listed again only when a class folder changed (its modification time moves with every file added,
        removed or renamed in it, by the studio or by anyone else), else the last listing is returned.
        """
        data = self.project(project) / "data"
        folders = sorted(f for f in data.iterdir() if f.is_dir() and not f.name.startswith("."))
        signature = tuple((f.name, f.stat().st_mtime_ns) for f in folders)
        cached = self._known.get(project)
        if cached is not None and cached[0] == signature:
            return cached[1]
        found: dict[str, str] = {}
        for folder in folders:
            for name in self._class_listing(folder):
                found.setdefault(Path(name).stem, f"{folder.name}/{name}")
        self._known[project] = (signature, found)
        return found

    def add_images(self, project: str, name: str, files: list[tuple[str, bytes]]) -> list[Stored]:
        """Store uploads (client file name, bytes already checked by serve's upload rules) in a class.

        A file whose content is in the project already (in any class) is not stored again.
        """
        stored = []
        with self.lock:
            folder = self.class_folder(project, name)
            known = self.known_names(project)
            for filename, data in files:
                with open_image(io.BytesIO(data)) as image:
                    target = stored_name(data, str(image.format))
                stem = Path(target).stem
                if stem in known:
                    stored.append(Stored(filename, Path(known[stem]).name, duplicate_of=known[stem]))
                    continue
                atomic_write(folder / target, functools.partial(_write_bytes, data=data))
                known[stem] = f"{name}/{target}"
                stored.append(Stored(filename, target))
            cached = self._known.get(project)
            if cached is not None and cached[1] is known:  # the listing plus what was just written: still current
                self._known[project] = (tuple((n, (folder.parent / n).stat().st_mtime_ns if n == name else t)
                                              for n, t in cached[0]), known)
        return stored

    def move_images(self, project: str, name: str, images: list[str], to: str) -> int:
        """Move images of class `name` into class `to` (a rename each); returns how many moved."""
        with self.lock:
            sources = [self.image_path(project, name, image) for image in images]
            target = self.class_folder(project, to)
            for source in sources:
                if target != source.parent:
                    os.replace(source, _free_name(target, source.name))
        return len(sources)

    def delete_images(self, project: str, name: str, images: list[str]) -> int:
        """Move images of a class into `PROJECT/.trash/images/<class>/`; returns how many."""
        with self.lock:
            sources = [self.image_path(project, name, image) for image in images]
            trash = self.project(project) / ".trash" / "images" / name
            trash.mkdir(parents=True, exist_ok=True)
            for source in sources:
                os.replace(source, _free_name(trash, source.name))
        return len(sources)

    def thumbnail(self, project: str, name: str, image: str) -> Path:
        """A JPEG thumbnail of an image (longest side THUMBNAIL_SIZE), made once and kept in `PROJECT/.thumbs/`.

        Its key is the file's name, size and modification time, so a thumbnail follows its image through a
        move (a rename keeps both) and an image changed in place gets a new one.
        """
        path = self.image_path(project, name, image)
        stat = path.stat()
        key = hashlib.sha256(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:24]
        thumb = self.project(project) / ".thumbs" / key[:2] / f"{key}.jpg"
        if not thumb.is_file():
            with open_image(path) as opened:
                picture = opened.convert("RGB")
            picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            atomic_write(thumb, lambda tmp: picture.save(tmp, "JPEG", quality=85))
        return thumb

    def _trash_path(self, trash: Path, name: str) -> Path:
        trash.mkdir(parents=True, exist_ok=True)
        return _free_name(trash, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def lock_projects_folder(root: Path) -> IO[str] | None:
    """Hold `root/.studio.lock` for this process (released when it ends, however it ends): two studios on one
    folder would run two job queues and two imports over the same projects. None where the platform has no
    fcntl (Windows), which then relies on the user.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); held = lock_projects_folder(d)
    >>> import subprocess, sys
    >>> code = "from pathlib import Path; from cnnlab.studio.projects import lock_projects_folder as f; "
    >>> code += f"f(Path({str(d)!r}))"
    >>> last = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr.splitlines()[-1]
    >>> last.startswith(f"cnnlab.errors.CnnlabError: another cnnlab studio (process {os.getpid()}) serves --dir")
    True
    """
    try:
        import fcntl
    except ImportError:
        return None
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / ".studio.lock", "a+", encoding="utf-8")  # noqa: SIM115  (held for the process's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise CnnlabError(f"another cnnlab studio (process {holder}) serves --dir {root}; stop it first, or give "
                          f"this one another folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _image_names(folder: Path) -> list[str]:
    return sorted(p.name for p in list_images(folder))


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/stem-2.ext`, `-3`... when taken: a move never overwrites a file."""
    target, n = folder / name, 1
    while target.exists():
        n += 1
        target = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
    return target
