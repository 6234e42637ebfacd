"""Archives of image folders (extracted once, safely) and the decoded-image cache."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnlab.data.archives as archives
import cnnlab.data.folders as folders
from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset
from cnnlab.data.cache import read_decoded
from cnnlab.data.folders import load_image_folder
from cnnlab.errors import CnnlabError
from cnnlab.jobs import _is_folder, new_run_dir

REAL_ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-jpg" / "cifar10-jpg.tar.gz"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
COLORS = {"cat": (255, 0, 0), "dog": (0, 0, 255)}  # one pure colour per class, so pixels tell the label


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $CNNLAB_DATA at a temporary folder, so no test writes into the user's real cache."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CNNLAB_DATA", str(data_dir))
    return data_dir


def write_split_tree(root: Path, per_class: dict[str, int]) -> None:
    """root/{train,test}/<class>/<i>.png (or .jpg for every other image), 8x6 pixels of the class colour."""
    for split, count in [("train", per_class), ("test", {name: 1 for name in per_class})]:
        for name, n in count.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                suffix = ".png" if i % 2 == 0 else ".jpg"
                Image.new("RGB", (8, 6), COLORS[name]).save(root / split / name / f"{i}{suffix}", quality=100)


def make_archive(source: Path, archive: Path, top_folder: bool) -> Path:
    """Pack `source`'s split tree, inside one top-level folder named like the source or at the archive root."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    names = [(f, (f"{source.name}/" if top_folder else "") + f.relative_to(source).as_posix()) for f in files]
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as zipped:
            for file, name in names:
                zipped.write(file, name)
    else:
        mode = "w" if archive.name.endswith(".tar") else "w:gz"
        with tarfile.open(archive, mode) as tar:
            for file, name in names:
                tar.add(file, name)
    return archive


@pytest.mark.parametrize(("suffix", "top_folder"), [(".tar.gz", True), (".tgz", False), (".tar", False),
                                                    (".zip", True), (".zip", False)])
def test_archive_loads_as_its_folder(tmp_path: Path, private_data_dir: Path, suffix: str, top_folder: bool) -> None:
    work = tmp_path / "work"
    write_split_tree(work / "pets", {"cat": 2, "dog": 3})
    archive = make_archive(work / "pets", work / f"pets{suffix}", top_folder)
    (work / "pets").rename(work / "source")  # so a folder named like the archive cannot pass for its extraction
    beside = sorted(p.name for p in work.rglob("*"))

    train = load_dataset(archive, split="train")
    test = load_dataset(str(archive), split="test")

    assert train.class_names == test.class_names == ["cat", "dog"]
    assert train.labels.tolist() == [0, 0, 1, 1, 1] and test.labels.tolist() == [0, 1]
    assert tuple(train.images.shape) == (5, 3, 6, 8) and train.images.dtype == torch.uint8
    for image, label in zip(train.images, train.labels, strict=True):  # each image is its class colour
        assert image[:, 0, 0].tolist() == pytest.approx(COLORS[train.class_names[int(label)]], abs=3)
    extracted = list((private_data_dir / "extracted").iterdir())
    assert [p.name[:-13] for p in extracted] == ["pets"] and len(extracted[0].name) == len("pets-") + 12
    assert sorted(p.name for p in work.rglob("*")) == beside  # nothing extracted next to the archive
    assert len(list((private_data_dir / "decoded").glob("*.safetensors"))) == 2  # train and test


def test_second_load_extracts_and_decodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_split_tree(tmp_path / "pets", {"cat": 2, "dog": 2})
    archive = make_archive(tmp_path / "pets", tmp_path / "pets.tar.gz", top_folder=True)
    first = load_dataset(archive)

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("called on a cached load")

    monkeypatch.setattr(archives, "_extract_tar", must_not_run)
    monkeypatch.setattr(folders, "read_image", must_not_run)
    again = load_dataset(archive)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.class_names == first.class_names and again.name == first.name == "pets"


def test_changed_image_changes_key_and_is_decoded_again(tmp_path: Path, private_data_dir: Path) -> None:
    write_split_tree(tmp_path / "pets", {"cat": 2, "dog": 2})
    first = load_image_folder(tmp_path / "pets")
    changed = tmp_path / "pets" / "train" / "cat" / "0.png"
    Image.new("RGB", (8, 6), (0, 255, 0)).save(changed)
    os.utime(changed, ns=(1, 1))  # a different mtime even on a filesystem with coarse timestamps

    again = load_image_folder(tmp_path / "pets")
    assert first.images[0, :, 0, 0].tolist() == [255, 0, 0] and again.images[0, :, 0, 0].tolist() == [0, 255, 0]
    assert len(list((private_data_dir / "decoded").glob("*.safetensors"))) == 2


def test_corrupt_cache_file_is_ignored_and_rewritten(tmp_path: Path, private_data_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_split_tree(tmp_path / "pets", {"cat": 2, "dog": 2})
    first = load_image_folder(tmp_path / "pets")
    [cache_file] = (private_data_dir / "decoded").glob("*.safetensors")
    cache_file.write_bytes(cache_file.read_bytes()[:100])  # cut short, as by a full disk
    decoded = []
    real_read_image = folders.read_image
    monkeypatch.setattr(folders, "read_image", lambda *a, **k: decoded.append(a) or real_read_image(*a, **k))

    again = load_image_folder(tmp_path / "pets")
    # every image decoded again (the first colour file once more, at 1x1, to decide the channel count)
    assert len(decoded) == 4 + 1 and torch.equal(again.images, first.images)
    rewritten = read_decoded(cache_file, "pets")
    assert rewritten is not None and torch.equal(rewritten.images, first.images)


def test_cache_off_writes_nothing(tmp_path: Path, private_data_dir: Path) -> None:
    write_split_tree(tmp_path / "pets", {"cat": 1, "dog": 1})
    load_dataset(tmp_path / "pets", cache=False)
    load_image_folder(tmp_path / "pets", split="test", cache=False)
    assert not (private_data_dir / "decoded").exists()


def evil_tar(path: Path, member: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("pets/train/cat/0.png")
        tar.addfile(good, io.BytesIO(b""))
        member.size = 0 if member.type != tarfile.REGTYPE else 4
        tar.addfile(member, io.BytesIO(b"evil") if member.type == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink out", "hardlink out"])
def test_malicious_tar_is_refused_and_writes_nothing(tmp_path: Path, private_data_dir: Path, kind: str) -> None:
    outside = tmp_path / "evil.txt"
    member = tarfile.TarInfo({"dotdot": "pets/../../../evil.txt", "absolute": str(outside)}.get(kind, "pets/link"))
    if kind == "symlink out":
        member.type, member.linkname = tarfile.SYMTYPE, str(outside)
    if kind == "hardlink out":
        member.type, member.linkname = tarfile.LNKTYPE, "../../evil.txt"
    archive = evil_tar(tmp_path / "pets.tar.gz", member)

    with pytest.raises(CnnlabError) as caught:
        load_dataset(archive)
    message = str(caught.value)
    assert str(archive) in message and "refusing to extract" in message and "\n" not in message
    assert not outside.exists() and not (private_data_dir / "evil.txt").exists()
    assert list((private_data_dir / "extracted").iterdir()) == []  # no partial folder left behind


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/cnnlab-evil.txt", "pets/../../evil.txt"])
def test_malicious_zip_is_refused(tmp_path: Path, private_data_dir: Path, name: str) -> None:
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("pets/train/cat/0.png", b"")
        zipped.writestr(zipfile.ZipInfo(name), b"evil")  # ZipInfo keeps the name as given
    with pytest.raises(CnnlabError, match=r"pets\.zip.*refusing to extract"):
        load_dataset(archive)
    assert not (tmp_path / "evil.txt").exists() and not (private_data_dir / "evil.txt").exists()
    assert list((private_data_dir / "extracted").iterdir()) == []


@pytest.mark.parametrize("name", ["data.tar.gz", "data.tgz", "data.tar", "data.zip"])
def test_file_that_is_not_an_archive_gives_one_line(tmp_path: Path, private_data_dir: Path, name: str) -> None:
    fake = tmp_path / name
    fake.write_bytes(b"<html>404 not found</html>\n" * 50)
    with pytest.raises(CnnlabError) as caught:
        load_dataset(fake)
    message = str(caught.value)
    assert message.startswith(f"archive {str(fake)!r} could not be read as a ") and "\n" not in message
    assert "download it again" in message
    assert list((private_data_dir / "extracted").iterdir()) == []


def test_other_file_is_not_a_dataset(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(CnnlabError, match=r"is a file but not an archive \(\.tar\.gz, \.tgz, \.tar, \.zip\)"):
        load_dataset(notes)


def test_train_job_treats_archive_as_folder(tmp_path: Path) -> None:
    write_split_tree(tmp_path / "pets", {"cat": 1, "dog": 1})
    archive = make_archive(tmp_path / "pets", tmp_path / "pets.tar.gz", top_folder=True)
    config = TrainConfig(dataset=str(archive), model="seed-mnist", runs_root=str(tmp_path / "runs"))
    assert _is_folder(config) and not _is_folder(TrainConfig(dataset="digits"))
    assert new_run_dir(config).name.startswith("pets-seed-mnist-")  # not the whole path with slashes


@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"real CIFAR-10 JPEG archive not found at {REAL_ARCHIVE}")
def test_real_cifar10_jpeg_archive_test_split(private_data_dir: Path) -> None:
    data = load_dataset(REAL_ARCHIVE, split="test", data_dir=private_data_dir)
    assert data.class_names == CIFAR_CLASSES and len(data.skipped) == 0
    assert tuple(data.images.shape) == (10_000, 3, 32, 32)
    assert data.labels.bincount().tolist() == [1_000] * 10


def test_check_data_reads_an_archive_as_its_folder(tmp_path: Path, private_data_dir: Path) -> None:
    from cnnlab.data import check_dataset

    write_split_tree(tmp_path / "pets", {"cat": 2, "dog": 3})
    archive = make_archive(tmp_path / "pets", tmp_path / "pets.tar.gz", top_folder=True)
    report = check_dataset(archive)
    assert report.ok, report.errors
    assert report.splits["train"]["dog"].images == 3 and report.splits["test"]["cat"].images == 1
    assert Path(report.root).is_relative_to(private_data_dir)
