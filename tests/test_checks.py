"""Contracts of cnnlab.data.checks: every finding in a folder built here with known flaws, exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import DataReport, check_dataset, load_dataset
from cnnlab.data.checks import IMBALANCE_LIMIT, UNSPLIT, ClassStats
from cnnlab.errors import CnnlabError

RNG = np.random.default_rng(0)


def image(path: Path, mode: str = "RGB", size: tuple[int, int] = (16, 16)) -> Path:
    """A random-pixel image of `size` (W, H) in `mode`, saved in the format its extension names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = RNG.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path)
    return path


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def flawed_tree(root: Path) -> None:
    """train/ and test/ with bird, cat, dog; cat holds most of the flaws, dog outnumbers bird 7:2."""
    train, test = root / "train", root / "test"
    image(train / "bird" / "b1.png")
    for i in range(1, 7):
        image(train / "dog" / f"d{i}.png")
    image(train / "dog" / "d7.png", size=(20, 12))
    copy(train / "dog" / "d1.png", train / "bird" / "b2.png")  # the same picture labelled bird and dog
    c1 = image(train / "cat" / "c1.png")
    copy(c1, train / "cat" / "c1_copy.png")  # duplicate within the class
    copy(c1, test / "cat" / "leak.png")  # a training image in the test split
    image(train / "cat" / "c2.jpg")
    image(train / "cat" / "c3_gray.png", "L")
    image(train / "cat" / "c4_rgba.png", "RGBA")
    jpeg = image(root / "source.jpg", size=(64, 64)).read_bytes()
    (root / "source.jpg").unlink()
    (train / "cat" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    (train / "cat" / "empty.png").write_bytes(b"")
    (train / "cat" / "fake.png").write_text("a text file with an image extension")
    (train / "cat" / "notes.txt").write_text("stray")
    (train / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    image(train / "dog" / ".thumbs" / "t.png")  # a hidden folder: never read
    image(test / "bird" / "tb.png")
    image(test / "dog" / "td.jpg")
    (root / "README.md").write_text("about this dataset")


def test_every_finding_in_a_flawed_folder(tmp_path: Path) -> None:
    flawed_tree(tmp_path)
    report = check_dataset(tmp_path)
    assert report.ok and report.errors == [] and report.root == str(tmp_path)
    assert report.splits == {
        "train": {
            "bird": ClassStats(2, 0, {(16, 16): 2}, {"RGB": 2}),
            "cat": ClassStats(5, 3, {(16, 16): 5}, {"RGB": 3, "L": 1, "RGBA": 1}),
            "dog": ClassStats(7, 0, {(16, 16): 6, (20, 12): 1}, {"RGB": 7}),
        },
        "test": {name: ClassStats(1, 0, {(16, 16): 1}, {"RGB": 1}) for name in ("bird", "cat", "dog")},
    }
    assert [(b.path, b.reason) for b in report.undecodable[1:]] == [
        ("train/cat/empty.png", "empty file (0 bytes)"),
        ("train/cat/fake.png", "not an image (Pillow cannot identify its format)"),
    ]
    assert report.undecodable[0].path == "train/cat/cut.jpg"
    assert report.undecodable[0].reason.startswith("truncated or corrupt (OSError: image file is truncated")
    assert report.duplicates_within_class == [["train/cat/c1.png", "train/cat/c1_copy.png"]]
    assert report.duplicates_across_classes == [["train/bird/b2.png", "train/dog/d1.png"]]
    assert report.duplicates_across_splits == [["test/cat/leak.png", "train/cat/c1.png", "train/cat/c1_copy.png"]]
    assert report.stray == ["README.md", "train/cat/notes.txt"]
    assert report.hidden == ["train/cat/.DS_Store", "train/dog/.thumbs/"]
    assert report.imbalance == {"train": 3.5, "test": 1.0} and 3.5 > IMBALANCE_LIMIT
    assert report.problems == [
        f"undecodable image train/cat/cut.jpg: {report.undecodable[0].reason}",
        "undecodable image train/cat/empty.png: empty file (0 bytes)",
        "undecodable image train/cat/fake.png: not an image (Pillow cannot identify its format)",
        "duplicate images within a class: train/cat/c1.png, train/cat/c1_copy.png",
        "the same image in different classes (conflicting labels): train/bird/b2.png, train/dog/d1.png",
        "the same image in different splits (leakage between them): test/cat/leak.png, train/cat/c1.png, "
        "train/cat/c1_copy.png",
        "stray entry, ignored for training: README.md",
        "stray entry, ignored for training: train/cat/notes.txt",
        "hidden entry, ignored for training: train/cat/.DS_Store",
        "hidden entry, ignored for training: train/dog/.thumbs/",
        "train/: classes are imbalanced: 'dog' has 7 images, 'bird' 2 (ratio 3.5 > 3); consider class weights "
        "or more images of the small classes",
    ]
    # The loader agrees: it skips exactly the undecodable files and reads every decodable one.
    data = load_dataset(tmp_path)
    assert len(data) == 14 and sorted(data.skipped) == sorted(str(tmp_path / b.path) for b in report.undecodable)


def test_report_as_text_and_json(tmp_path: Path) -> None:
    flawed_tree(tmp_path)
    report = check_dataset(tmp_path, threads=1)
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["ok"] is True and as_dict["errors"] == [] and as_dict["problems"] == report.problems
    assert as_dict["splits"]["train"]["dog"] == {"images": 7, "undecodable": 0, "sizes": {"16x16": 6, "20x12": 1},
                                                 "modes": {"RGB": 7}}
    assert as_dict["duplicates"]["across_splits"] == report.duplicates_across_splits
    assert as_dict["undecodable"][1] == {"path": "train/cat/empty.png", "reason": "empty file (0 bytes)"}
    lines = report.to_text().splitlines()
    assert lines[0] == f"Dataset check of {tmp_path}: training would run, but 11 problem(s) need a look (listed below)"
    assert lines[1] == "train/: 3 classes, 14 images, imbalance 3.5"
    assert lines[3].split() == ["cat", "5", "images,", "3", "undecodable", "sizes", "16x16", "(5)", "modes",
                                "RGB", "(3),", "L", "(1),", "RGBA", "(1)"]
    assert "Problems:" in lines and "Errors:" not in lines and len(lines) == 1 + 4 + 4 + 1 + 11


def write_classes(root: Path, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image(root / name / f"{i}.png", size=(8, 8))


@pytest.mark.parametrize("case", ["missing", "file", "one class", "no classes", "undecodable class", "split differs"])
def test_errors_are_what_makes_loading_fail(tmp_path: Path, case: str) -> None:
    root = tmp_path / "data"
    if case == "file":
        root.write_text("not a folder")
    elif case == "one class":
        write_classes(root, {"only": 2})
    elif case == "no classes":
        write_classes(root, {})
        image(root / "loose.png")
    elif case == "undecodable class":
        write_classes(root, {"good": 2, "bad": 0})
        (root / "bad" / "empty.png").write_bytes(b"")
    elif case == "split differs":
        write_classes(root / "train", {"a": 1, "b": 1})
        write_classes(root / "test", {"a": 1, "c": 1})
    report = check_dataset(root)
    expected = {
        "missing": f"dataset folder {str(root)!r} does not exist; give a folder with one subfolder per class "
                   f"(or train/ and test/ folders of them)",
        "file": f"dataset folder {str(root)!r} is a file; give a folder with one subfolder per class "
                f"(or train/ and test/ folders of them)",
        "one class": f"folder {str(root)!r} has 1 class folder(s) (only); a classifier needs at least 2: "
                     f"put the images in one subfolder per class",
        "no classes": f"folder {str(root)!r} has 0 class folder(s); a classifier needs at least 2: "
                      f"put the images in one subfolder per class",
        "undecodable class": "class folder 'bad' has no decodable images (1 undecodable); add images or remove "
                             "the folder",
        "split differs": f"folder {str(root / 'test')!r}: class folders differ from train/ (missing ['b'], "
                         f"extra ['c']); every split needs the same class folders",
    }[case]
    assert report.errors == [expected] and not report.ok
    assert ("Errors:\n  - " + expected) in report.to_text()
    if case == "no classes":
        assert report.stray == ["loose.png"]
    with pytest.raises(CnnlabError):  # what the check calls an error, the loader refuses too
        load_dataset(root, split="test" if case == "split differs" else "train")


def test_unsplit_folder_and_balanced_classes(tmp_path: Path) -> None:
    write_classes(tmp_path, {"a": 3, "b": 1})
    report = check_dataset(tmp_path)
    assert list(report.splits) == [UNSPLIT] and report.imbalance == {UNSPLIT: 3.0}  # 3 is not above the limit
    assert report.ok and report.problems == [] and report.to_text().splitlines()[1] == (
        "class folders: 2 classes, 4 images, imbalance 3.0")
    assert isinstance(report, DataReport) and report.splits[UNSPLIT]["a"].sizes == {(8, 8): 3}
