"""`check_dataset`: what an image folder holds and what in it would hurt training, before training on it.

One pass over the files: each is read once, hashed (sha256 of its bytes) and fully decoded with
Pillow, in a thread pool (Pillow's decoders and hashlib release the GIL). The report lists image
counts, sizes and modes per split and class; files that cannot be decoded and why; exact
duplicates within a class, across classes (the same picture with two labels) and across splits
(test images that the model also trains on); stray and hidden files; and class imbalance.
`errors` are what makes `load_dataset` or training fail; `problems` are everything else worth a look.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from cnnlab.data.download import one_line
from cnnlab.data.folders import SPLIT_FOLDERS
from cnnlab.data.images import IMAGE_EXTENSIONS, ImageTooLarge, foreign_format, link_loop, open_image
from cnnlab.data.archives import extract_archive, is_archive
from cnnlab.data.cache import resolve_data_dir
from cnnlab.errors import CnnlabError

__all__ = ["check_dataset", "DataReport", "ClassStats", "BadFile", "IMBALANCE_LIMIT", "UNSPLIT"]

# Largest class / smallest class above 3 is flagged. A rule of thumb, not a measured cliff: at 3:1 a
# model that ignores the small class still scores 75% on two classes, so plain accuracy starts to
# hide it; the fix (class weights, more images) is cheap, so the flag errs on the side of asking.
IMBALANCE_LIMIT = 3.0

UNSPLIT = "."  # the split name of a folder with class subfolders directly, not train/ test/ ...

# Pillow reads at most a few threads' worth of files at once well; more only adds disk contention.
MAX_THREADS = 8


@dataclass
class ClassStats:
    """One class folder of one split: decodable images, undecodable files, sizes (W, H) and modes."""

    images: int = 0
    undecodable: int = 0
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)  # (W, H) as stored, before EXIF rotation
    modes: Counter[str] = field(default_factory=Counter)  # Pillow modes: "RGB", "L", "RGBA", "P", ...


@dataclass
class BadFile:
    """A file with an image extension that Pillow cannot decode, and why."""

    path: str  # relative to the checked folder, with "/" separators
    reason: str


@dataclass
class DataReport:
    """The findings of `check_dataset`; `ok` when nothing in `errors` would stop training.

    Paths are relative to `root`. `splits` maps split name ("train", "test", ... or "." for a
    folder of class subfolders) to class name to `ClassStats`. `imbalance` is largest / smallest
    class size per split (None when a class has no images or there are fewer than 2 classes).

    >>> report = DataReport(root="flowers", errors=["flowers: only 1 class folder"])
    >>> report.ok, report.to_dict()["errors"]
    (False, ['flowers: only 1 class folder'])
    """

    root: str
    splits: dict[str, dict[str, ClassStats]] = field(default_factory=dict)
    undecodable: list[BadFile] = field(default_factory=list)
    duplicates_within_class: list[list[str]] = field(default_factory=list)
    duplicates_across_classes: list[list[str]] = field(default_factory=list)
    duplicates_across_splits: list[list[str]] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)  # files training ignores: other extensions, loose files
    hidden: list[str] = field(default_factory=list)  # names starting with "."; folders end with "/"
    imbalance: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able dicts and lists (sizes as "WxH" keys)."""
        return {
            "root": self.root, "ok": self.ok,
            "splits": {split: {name: {"images": s.images, "undecodable": s.undecodable,
                                      "sizes": {f"{w}x{h}": n for (w, h), n in sorted(s.sizes.items())},
                                      "modes": dict(sorted(s.modes.items()))}
                               for name, s in classes.items()}
                       for split, classes in self.splits.items()},
            "undecodable": [{"path": b.path, "reason": b.reason} for b in self.undecodable],
            "duplicates": {"within_class": self.duplicates_within_class,
                           "across_classes": self.duplicates_across_classes,
                           "across_splits": self.duplicates_across_splits},
            "stray": self.stray, "hidden": self.hidden, "imbalance": self.imbalance,
            "problems": self.problems, "errors": self.errors,
        }

    def to_text(self) -> str:
        """A readable multi-line report: a verdict, a table per split, then errors and problems."""
        # "OK, 7 problem(s)" read as a contradiction: say whether training runs, then what is left to look at
        if not self.ok:
            verdict = f"{len(self.errors)} error(s): training would fail"
            verdict += f"; {len(self.problems)} other problem(s)" if self.problems else ""
        elif self.problems:
            verdict = f"training would run, but {len(self.problems)} problem(s) need a look (listed below)"
        else:
            verdict = "OK, no problems found"
        lines = [f"Dataset check of {self.root}: {verdict}"]
        for split, classes in self.splits.items():
            total = sum(s.images for s in classes.values())
            ratio = self.imbalance.get(split)
            balance = f", imbalance {ratio:.1f}" if ratio is not None else ""
            title = "class folders" if split == UNSPLIT else f"{split}/"
            lines.append(f"{title}: {len(classes)} classes, {total} images{balance}")
            width = max((len(name) for name in classes), default=0)
            for name, s in classes.items():
                sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in s.sizes.most_common(3))
                more = f" +{len(s.sizes) - 3} more" if len(s.sizes) > 3 else ""
                modes = ", ".join(f"{m} ({n})" for m, n in s.modes.most_common())
                bad = f", {s.undecodable} undecodable" if s.undecodable else ""
                lines.append(f"  {name:<{width}}  {s.images:>6} images{bad}  sizes {sizes or '-'}{more}  "
                             f"modes {modes or '-'}")
        for title, items in (("Errors", self.errors), ("Problems", self.problems)):
            if items:
                lines.append(f"{title}:")
                lines.extend(f"  - {item}" for item in items)
        return "\n".join(lines)


@dataclass
class _File:
    split: str
    class_name: str
    path: str  # relative
    digest: str = ""
    mode: str = ""
    size: tuple[int, int] = (0, 0)
    reason: str | None = None  # why it cannot be decoded; None when it can


def check_dataset(path: str | Path, threads: int | None = None) -> DataReport:
    """Check an image folder (class subfolders, or train/ test/ val/ validation/ of them) for problems.

    An archive (.tar.gz, .tgz, .tar, .zip) is extracted once into the data directory and checked there.

    `threads` decode files in parallel (default: the CPU count, at most MAX_THREADS).

    >>> import tempfile; from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for file, color in [("cat/a.png", "red"), ("cat/b.png", "red"), ("dog/c.png", "blue")]:
    ...     (root / file).parent.mkdir(exist_ok=True); Image.new("RGB", (8, 8), color).save(root / file)
    >>> _ = (root / "dog" / "notes.txt").write_text("hi")
    >>> report = check_dataset(root)
    >>> report.ok, report.splits["."]["cat"].images, report.duplicates_within_class, report.stray
    (True, 2, [['cat/a.png', 'cat/b.png']], ['dog/notes.txt'])
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise CnnlabError(f"check_dataset: threads must be a positive integer or None (automatic), got {threads!r}")
    root = Path(path).expanduser()
    if is_archive(root):  # an archive is checked as the folder it extracts to (once, into the data dir)
        root = extract_archive(root, resolve_data_dir(None))
    report = DataReport(root=str(root))
    if not root.is_dir():
        state = "is a file" if root.exists() else "does not exist"
        report.errors.append(f"dataset folder {str(root)!r} {state}; give a folder with one subfolder per class "
                             f"(or train/ and test/ folders of them)")
        return report
    files = _collect_files(root, _find_splits(root, report), report)
    with ThreadPoolExecutor(max_workers=threads or min(os.cpu_count() or 1, MAX_THREADS)) as pool:
        inspected = list(pool.map(lambda f: _inspect(root, f), files))
    for f in inspected:
        stats = report.splits[f.split][f.class_name]
        if f.reason is not None:
            stats.undecodable += 1
            report.undecodable.append(BadFile(f.path, f.reason))
        else:
            stats.images += 1
            stats.sizes[f.size] += 1
            stats.modes[f.mode] += 1
    report.hidden.sort()
    report.stray.sort()
    _find_duplicates([f for f in inspected if f.reason is None], report)
    _find_errors(report)
    _measure_imbalance(report)
    _list_problems(report)
    return report


def _find_splits(root: Path, report: DataReport) -> dict[str, Path]:
    """{split name: folder}, as `load_dataset` reads the layout; what training ignores at the top is recorded."""
    subfolders, hidden, loose = _entries(root, root)
    report.hidden.extend(hidden)
    report.stray.extend(loose)  # training reads only class subfolders
    split_names = [s for s in SPLIT_FOLDERS if s in subfolders]
    if "train" not in split_names or len(split_names) < 2:
        return {UNSPLIT: root}
    report.stray.extend(f"{name}/" for name in subfolders if name not in split_names)
    return {split: root / split for split in split_names}


def _entries(folder: Path, root: Path) -> tuple[list[str], list[str], list[str]]:
    """(visible subfolder names, hidden entries, visible files) directly in `folder`; entries relative to root."""
    subfolders, hidden, files = [], [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            hidden.append(_relative(entry, root) + ("/" if entry.is_dir() else ""))
        elif entry.is_dir():
            subfolders.append(entry.name)
        else:
            files.append(_relative(entry, root))
    return subfolders, hidden, files


def _collect_files(root: Path, splits: dict[str, Path], report: DataReport) -> list[_File]:
    """Every image file to inspect; hidden entries and other files are recorded, as `list_images` skips them."""
    files: list[_File] = []
    for split, folder in splits.items():
        class_names, hidden, loose = _entries(folder, root)
        if split != UNSPLIT:  # the root's own entries were recorded by _find_splits
            report.hidden.extend(hidden)
            report.stray.extend(loose)
        report.splits[split] = {}
        for class_name in class_names:
            target = link_loop(folder / class_name)
            if target is not None:  # load_dataset refuses it; its files would be the parent's again
                report.errors.append(f"class folder {_relative(folder / class_name, root)!r} is a symbolic link to "
                                     f"{str(target)!r}, which contains it (a loop); remove the link")
                continue
            report.splits[split][class_name] = ClassStats()
            for directory, subfolders, names in os.walk(folder / class_name):
                subfolders.sort()
                report.hidden.extend(_relative(Path(directory) / d, root) + "/" for d in subfolders if d[0] == ".")
                # os.walk (here and in training) does not descend into linked folders, so loops end
                report.stray.extend(_relative(Path(directory) / d, root) + "/" for d in subfolders
                                    if d[0] != "." and os.path.islink(os.path.join(directory, d)))
                subfolders[:] = [d for d in subfolders if not d.startswith(".")]  # not descended, as in training
                for name in sorted(names):
                    relative = _relative(Path(directory) / name, root)
                    if name.startswith("."):
                        report.hidden.append(relative)
                    elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                        files.append(_File(split, class_name, relative))
                    else:
                        report.stray.append(relative)
    return files


def _inspect(root: Path, file: _File) -> _File:
    """Hash and fully decode one file, reading it once."""
    try:
        if not stat.S_ISREG(os.stat(root / file.path).st_mode):  # reading a named pipe would block forever
            file.reason = "not a regular file (a named pipe, socket or device)"
            return file
        data = (root / file.path).read_bytes()
    except OSError as error:
        file.reason = f"unreadable ({one_line(error)})"
        return file
    file.digest = hashlib.sha256(data).hexdigest()
    if not data:
        file.reason = "empty file (0 bytes)"
        return file
    try:
        with open_image(io.BytesIO(data)) as image:  # allowed formats only, within the decode budget
            file.mode, file.size = image.mode, image.size
            image.load()  # open() reads only the header; load() decodes every pixel
    except UnidentifiedImageError:
        foreign = foreign_format(root / file.path)  # a TIFF or PostScript file: name it, its decoder never runs
        file.reason = (f"a {foreign} file, which cnnlab does not decode (convert it to PNG or JPEG)" if foreign
                       else "not an image (Pillow cannot identify its format)")
    except ImageTooLarge as error:  # refused from the header, before any pixel is allocated
        file.reason = f"{error}; downscale it or raise the limit with --max-image-pixels"
    except Image.DecompressionBombError as error:  # over Pillow's own limit, also refused from the header
        file.reason = f"too large ({one_line(error)}); downscale it"
    # Pillow reports damaged pixel data as OSError, SyntaxError, ValueError, struct.error and others.
    except Exception as error:
        file.reason = f"truncated or corrupt ({one_line(error)})"
    return file


def _find_duplicates(files: list[_File], report: DataReport) -> None:
    """Group decodable files by content hash and sort each group of 2+ by where its copies are."""
    groups: dict[str, list[_File]] = defaultdict(list)
    for f in files:
        groups[f.digest].append(f)
    for group in sorted((g for g in groups.values() if len(g) > 1), key=lambda g: min(f.path for f in g)):
        paths = sorted(f.path for f in group)
        by_place: dict[tuple[str, str], list[str]] = defaultdict(list)
        for f in group:
            by_place[(f.split, f.class_name)].append(f.path)
        report.duplicates_within_class.extend(sorted(p) for p in by_place.values() if len(p) > 1)
        if len({f.class_name for f in group}) > 1:
            report.duplicates_across_classes.append(paths)
        if len({f.split for f in group}) > 1:
            report.duplicates_across_splits.append(paths)


def _find_errors(report: DataReport) -> None:
    """What makes `load_dataset` fail: < 2 classes, a class with no decodable image, splits that disagree."""
    train_classes = list(report.splits.get("train", report.splits.get(UNSPLIT, {})))
    for split, classes in report.splits.items():
        where = f"{report.root!r}" if split == UNSPLIT else f"{str(Path(report.root) / split)!r}"
        if len(classes) < 2:
            found = f" ({', '.join(classes)})" if classes else ""
            report.errors.append(f"folder {where} has {len(classes)} class folder(s){found}; a classifier needs at "
                                 f"least 2: put the images in one subfolder per class")
        if split not in ("train", UNSPLIT) and list(classes) != train_classes:
            missing = sorted(set(train_classes) - set(classes))
            extra = sorted(set(classes) - set(train_classes))
            report.errors.append(f"folder {where}: class folders differ from train/ (missing {missing}, extra "
                                 f"{extra}); every split needs the same class folders")
        for name, stats in classes.items():
            if stats.images == 0:
                place = name if split == UNSPLIT else f"{split}/{name}"
                report.errors.append(f"class folder {place!r} has no decodable images ({stats.undecodable} "
                                     f"undecodable); add images or remove the folder")


def _measure_imbalance(report: DataReport) -> None:
    for split, classes in report.splits.items():
        counts = [s.images for s in classes.values()]
        usable = len(counts) >= 2 and min(counts) > 0
        report.imbalance[split] = max(counts) / min(counts) if usable else None


def _list_problems(report: DataReport) -> None:
    """One line per finding that does not stop training."""
    lines = report.problems
    lines.extend(f"undecodable image {b.path}: {b.reason}" for b in report.undecodable)
    lines.extend(f"duplicate images within a class: {', '.join(g)}" for g in report.duplicates_within_class)
    lines.extend(f"the same image in different classes (conflicting labels): {', '.join(g)}"
                 for g in report.duplicates_across_classes)
    lines.extend(f"the same image in different splits (leakage between them): {', '.join(g)}"
                 for g in report.duplicates_across_splits)
    lines.extend(f"stray entry, ignored for training: {p}" for p in report.stray)
    lines.extend(f"hidden entry, ignored for training: {p}" for p in report.hidden)
    for split, ratio in report.imbalance.items():
        if ratio is not None and ratio > IMBALANCE_LIMIT:
            classes = report.splits[split]
            big = max(classes, key=lambda c: classes[c].images)
            small = min(classes, key=lambda c: classes[c].images)
            where = "" if split == UNSPLIT else f"{split}/: "
            lines.append(f"{where}classes are imbalanced: {big!r} has {classes[big].images} images, {small!r} "
                         f"{classes[small].images} (ratio {ratio:.1f} > {IMBALANCE_LIMIT:g}); consider class "
                         f"weights or more images of the small classes")


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
