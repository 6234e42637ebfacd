"""Import a folder or archive on the server's disk into a project: a background job, every file checked.

The source's layout is the one `cnnlab train` reads: each image's class is the name of the folder it
sits in (`SOURCE/<class>/<image>`, or `.../val/<class>/<image>` deeper down); a file directly in the
source has no class and is refused. Archives (.zip, .tar, .tar.gz, .tgz) are read member by member,
never extracted, so a member named `../../etc/x` is only ever a name. Every file goes through the
upload checks of `cnnlab serve` (size before reading, pixels from the header before decoding, then a
full decode), and is stored by `ProjectStore.add_images`, so a duplicate is stored once.

The job's plan (every file and its class) and its progress are written to
`PROJECT/.studio/imports/<id>.json` as it goes; a studio that stops mid-import continues at the next
start from the last file recorded, and lists the files that disappeared from the source meanwhile
as missing (state "incomplete").

>>> import tempfile; from cnnlab.studio.projects import ProjectStore
>>> root = Path(tempfile.mkdtemp()); _ = ProjectStore(root).create_project("p")
>>> (root / "src" / "tulip").mkdir(parents=True); _ = (root / "src" / "tulip" / "a.txt").write_text("hi")
>>> imports = Importer(ProjectStore(root)); job = imports.submit("p", str(root / "src")); imports.wait(job)
>>> job.state, job.refused[0]["reason"][:33]
('done', "file 'tulip/a.txt' is not a JPEG,")
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cnnlab.fileio import atomic_write
from cnnlab.serve.uploads import Upload, UploadError, decode_pixels, probe_upload
from cnnlab.studio.projects import ProjectStore, StudioError, check_name

__all__ = ["Importer", "ImportJob", "ARCHIVES"]

ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")
CHECK_SIZE = (32, 32)   # files are decoded in full (a truncated one is refused) at this small size, as uploads are
SAVE_EVERY_S = 1.0      # progress is written at most this often: a restart redoes at most a second of files
SHOWN_LIMIT = 1000      # refused, duplicate and missing files listed per job (the counts are always exact)


@dataclass
class ImportJob:
    """One import: its plan (`files`: [path in the source, class]), progress and outcome, as saved on disk."""

    id: str
    project: str
    source: str
    files: list[list[str]] = field(default_factory=list)
    done: int = 0                     # files of the plan handled so far (in order)
    added: int = 0
    duplicates: int = 0
    refused_count: int = 0
    missing_count: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)     # {"file", "reason"}
    duplicate_files: list[dict[str, str]] = field(default_factory=list)  # {"file", "duplicate_of"}
    missing: list[str] = field(default_factory=list)
    state: str = "running"            # running, done, incomplete (files went missing), failed
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def view(self) -> dict[str, Any]:
        """The job as the page shows it: everything but the plan, plus `total`."""
        shown = {k: v for k, v in asdict(self).items() if k != "files"}
        return {**shown, "total": len(self.files)}


class Importer:
    """The imports of the projects of `store`; each runs in a thread of its own, one file at a time.

    `max_bytes` and `max_pixels` are the upload limits of the studio (per file here).
    """

    def __init__(self, store: ProjectStore, max_bytes: int = 20 * 1024 * 1024, max_pixels: int = 89_478_485) -> None:
        self.store, self.max_bytes, self.max_pixels = store, max_bytes, max_pixels
        self.lock = threading.Lock()
        self.jobs: dict[str, ImportJob] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.closing = False
        for path in sorted(store.root.glob("*/.studio/imports/*.json")):
            try:
                job = ImportJob(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue  # a damaged file stays on disk for a look; it is not a job
            self.jobs[job.id] = job

    def start(self) -> None:
        """Continue the imports that were running when the studio stopped."""
        for job in list(self.jobs.values()):
            if job.state == "running":
                self._launch(job)

    def close(self) -> None:
        """Stop the imports after their current file; they continue at the next start."""
        self.closing = True
        for thread in list(self.threads.values()):
            thread.join(timeout=30)

    def submit(self, project: str, source: str) -> ImportJob:
        """Plan the import of folder or archive `source` into `project` and start it."""
        self.store.project(project)
        path = Path(source).expanduser()
        if not path.is_absolute():
            raise StudioError(422, f"import path {source[:200]!r} is not absolute; give the full path of a folder "
                                   f"or archive on the server (e.g. /home/me/photos)")
        if not path.exists():
            raise StudioError(404, f"import path {source[:200]!r} does not exist on the server; check the spelling")
        if path.is_file() and not path.name.lower().endswith(ARCHIVES):
            raise StudioError(422, f"import path {source[:200]!r} is a file but not an archive; give a folder or "
                                   f"a {', '.join(ARCHIVES)} file")
        try:
            files = _plan(path)
        except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise StudioError(422, f"import path {source[:200]!r} cannot be read ({exc}); check it is a "
                                   f"folder or an undamaged archive") from None
        with self.lock:
            stamp, n = time.strftime("%Y%m%d-%H%M%S"), 1
            job_id = f"{project}/import-{stamp}"
            while job_id in self.jobs:
                n += 1
                job_id = f"{project}/import-{stamp}-{n}"
            job = ImportJob(job_id, project, str(path), files)
            self.jobs[job_id] = job
        self._save(job)
        self._launch(job)
        return job

    def find(self, job_id: str) -> ImportJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise StudioError(404, f"no import {job_id!r}; reload the page to see the imports")
        return job

    def wait(self, job: ImportJob, timeout: float | None = None) -> None:
        """Wait for an import's thread to end (tests and scripts)."""
        thread = self.threads.get(job.id)
        if thread is not None:
            thread.join(timeout)

    def _file(self, job: ImportJob) -> Path:
        return self.store.root / job.project / ".studio" / "imports" / f"{job.id.split('/', 1)[1]}.json"

    def _save(self, job: ImportJob) -> None:
        text = json.dumps(asdict(job))
        atomic_write(self._file(job), lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _launch(self, job: ImportJob) -> None:
        thread = threading.Thread(target=self._run, args=(job,), name=f"cnnlab-import-{job.id}", daemon=True)
        self.threads[job.id] = thread
        thread.start()

    def _run(self, job: ImportJob) -> None:
        try:
            with _Reader(Path(job.source)) as reader:
                saved = time.monotonic()
                while job.done < len(job.files) and not self.closing:
                    name, label = job.files[job.done]
                    self._one(job, reader, name, label)
                    job.done += 1
                    if time.monotonic() - saved > SAVE_EVERY_S:
                        self._save(job)
                        saved = time.monotonic()
            if not self.closing:
                job.state = "incomplete" if job.missing_count else "done"
                job.finished = time.time()
        except Exception as exc:  # the source vanished or broke: what was imported stays, the job says why
            job.state, job.error, job.finished = "failed", f"{type(exc).__name__}: {exc}", time.time()
        self._save(job)

    def _one(self, job: ImportJob, reader: _Reader, name: str, label: str) -> None:
        shown = name
        try:
            try:
                data = reader.read(name, self.max_bytes)
            except FileNotFoundError:
                job.missing_count += 1
                if len(job.missing) < SHOWN_LIMIT:
                    job.missing.append(shown)
                return
            if not label:
                raise UploadError(400, f"file {shown!r} is not inside a class folder; put it in a folder named "
                                       f"after its class")
            check_name(label, "class")
            if data is None:
                raise UploadError(413, f"file {shown!r} is over the limit of {self.max_bytes:,} bytes "
                                       f"(resize it first)")
            upload = Upload(shown, data)
            probe_upload(upload, self.max_pixels)
            decode_pixels(upload, 3, CHECK_SIZE)
        except (UploadError, StudioError) as exc:
            job.refused_count += 1
            if len(job.refused) < SHOWN_LIMIT:
                job.refused.append({"file": shown, "reason": str(exc)})
            return
        with self.store.lock:
            if not self.store.class_folder(job.project, label, must_exist=False).is_dir():
                self.store.create_class(job.project, label)
            stored = self.store.add_images(job.project, label, [(shown, data)])[0]
        if stored.duplicate_of is None:
            job.added += 1
        else:
            job.duplicates += 1
            if len(job.duplicate_files) < SHOWN_LIMIT:
                job.duplicate_files.append({"file": shown, "duplicate_of": stored.duplicate_of})


def _plan(path: Path) -> list[list[str]]:
    """Every file of the source (sorted), with its class: the name of the folder holding it ('' at the top).

    >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / "val" / "cat").mkdir(parents=True)
    >>> _ = (d / "val" / "cat" / "1.jpg").write_bytes(b""); _ = (d / "x.png").write_bytes(b"")
    >>> _plan(d)
    [['val/cat/1.jpg', 'cat'], ['x.png', '']]
    """
    if path.is_dir():
        names = []
        for folder, dirs, files in os.walk(path):  # links to folders are not followed
            dirs.sort()
            names += [str(Path(folder, f).relative_to(path).as_posix()) for f in files]
    elif path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            names = [i.filename for i in archive.infolist() if not i.is_dir()]
    else:
        with tarfile.open(path) as archive:
            names = [m.name for m in archive.getmembers() if m.isfile()]
    return [[name, PurePosixPath(name).parent.name] for name in sorted(names)]


class _Reader:
    """Reads a planned file's bytes from a folder or an open archive: None when over `limit` bytes, without
    reading it; FileNotFoundError when gone; UploadError for a link (it could point anywhere on the server)."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.zip: zipfile.ZipFile | None = None
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}

    def __enter__(self) -> _Reader:
        if self.source.is_file():
            if self.source.name.lower().endswith(".zip"):
                self.zip = zipfile.ZipFile(self.source)
            else:
                self.tar = tarfile.open(self.source)
                self.members = {m.name: m for m in self.tar.getmembers() if m.isfile()}
        elif not self.source.is_dir():
            raise FileNotFoundError(self.source)
        return self

    def __exit__(self, *exc: object) -> None:
        for archive in (self.zip, self.tar):
            if archive is not None:
                archive.close()

    def read(self, name: str, limit: int) -> bytes | None:
        if self.zip is not None:
            try:
                info = self.zip.getinfo(name)
            except KeyError:
                raise FileNotFoundError(name) from None
            if info.file_size > limit:
                return None
            with self.zip.open(info) as f:
                data = f.read(limit + 1)  # the declared size may lie: never read more than the limit
        elif self.tar is not None:
            member = self.members.get(name)
            if member is None:
                raise FileNotFoundError(name)
            if member.size > limit:
                return None
            extracted = self.tar.extractfile(member)
            if extracted is None:
                raise FileNotFoundError(name)
            data = extracted.read(limit + 1)
        else:
            path = self.source / name
            if path.is_symlink():
                raise UploadError(400, f"file {name!r} is a link; import the file it points to instead")
            if not path.is_file():
                raise FileNotFoundError(name)
            if path.stat().st_size > limit:
                return None
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        return None if len(data) > limit else data
