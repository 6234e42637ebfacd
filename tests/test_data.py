"""Contracts of cnnlab.data: exact pixels and labels from every file format, Keras's conventions, clear errors.

Files in the canonical formats are written here with known contents; the real Fashion-MNIST and
MNIST copies in ../shared/datasets are checked against their published facts when present.
"""

from __future__ import annotations

import gzip
import json
import io
import os
import pickle  # only to write CIFAR-10 batch files, which are pickles by definition
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import (
    IMAGE_EXTENSIONS,
    ArrayDataset,
    FolderDataset,
    class_weights,
    dataset_names,
    default_data_dir,
    float_images,
    list_images,
    load_dataset,
    read_image,
    resolve_data_dir,
    stratified_split,
)
from cnnlab.errors import CnnlabError
from cnnlab.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX, npz)

def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8) as an IDX file, gzip-compressed when the name ends in .gz."""
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def digits_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def test_evaluate_finds_a_run_s_data_where_the_run_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cnnlab evaluate RUN` needs no --data-dir when the run was trained with one."""
    for split, n in (("train", 64), ("t10k", 16)):
        x, y = digits_like(n, seed=n)
        write_idx(tmp_path / "data" / "mnist" / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(tmp_path / "data" / "mnist" / f"{split}-labels-idx1-ubyte.gz", y)
    run = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--model", "fast-cnn",
                 "--epochs", "1", "--run-dir", str(run), "--quiet"]) in (0, None)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--no-download"]) in (0, None)
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["n"] == 16
    assert evaluated["accuracy"] == json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert main(["evaluate", str(run), "--data-dir", str(tmp_path / "elsewhere"), "--no-download"]) == 2  # yours wins
    assert "elsewhere" in capsys.readouterr().err


def test_idx_gzip_and_raw_give_exact_pixels_and_labels(tmp_path: Path) -> None:
    train_x, train_y = digits_like(5, seed=1)
    test_x, test_y = digits_like(3, seed=2)
    write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", train_x)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte", test_x)  # raw, uncompressed
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", test_y)
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        data = load_dataset("mnist", split=split, data_dir=tmp_path, download=False)
        assert data.images.shape == (len(x), 1, 28, 28) and data.images.dtype == torch.uint8
        assert torch.equal(data.images[:, 0], torch.from_numpy(x))
        assert data.labels.dtype == torch.int64 and data.labels.tolist() == y.tolist()
        assert data.class_names == [str(i) for i in range(10)] and data.name == "mnist"


def test_idx_torchvision_layout_and_alias(tmp_path: Path) -> None:
    x, y = digits_like(4, seed=3)
    write_idx(tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte", x)
    write_idx(tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte", y)
    data = load_dataset("Fashion_MNIST", split="test", data_dir=tmp_path, download=False)
    assert torch.equal(data.images[:, 0], torch.from_numpy(x)) and data.class_names == FASHION


def test_named_folder_wins_over_data_dir_itself(tmp_path: Path) -> None:
    for folder, seed in ((tmp_path / "mnist", 4), (tmp_path, 5)):
        x, y = digits_like(2, seed)
        write_idx(folder / "t10k-images-idx3-ubyte.gz", x)
        write_idx(folder / "t10k-labels-idx1-ubyte.gz", y)
    expected, _ = digits_like(2, seed=4)
    data = load_dataset("mnist", split="test", data_dir=tmp_path, download=False)
    assert torch.equal(data.images[:, 0], torch.from_numpy(expected))


def test_keras_mnist_npz(tmp_path: Path) -> None:
    train_x, train_y = digits_like(6, seed=6)
    test_x, test_y = digits_like(2, seed=7)
    np.savez(tmp_path / "mnist.npz", x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
    data = load_dataset("mnist", split="train", data_dir=tmp_path, download=False)
    assert torch.equal(data.images[:, 0], torch.from_numpy(train_x)) and data.labels.tolist() == train_y.tolist()
    assert len(load_dataset("mnist", split="test", data_dir=tmp_path, download=False)) == 2


@pytest.mark.parametrize("damage", ["magic", "truncated", "bad gzip"])
def test_corrupt_idx_names_the_file(tmp_path: Path, damage: str) -> None:
    x, y = digits_like(3, seed=8)
    images = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    write_idx(images, x)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", y)
    payload = gzip.decompress(images.read_bytes())
    if damage == "magic":
        images.write_bytes(gzip.compress(b"\x12\x34" + payload[2:]))
    elif damage == "truncated":
        images.write_bytes(gzip.compress(payload[:-100]))
    else:
        images.write_bytes(images.read_bytes()[:50])
    with pytest.raises(CnnlabError, match="t10k-images-idx3-ubyte.gz") as caught:
        load_dataset("mnist", split="test", data_dir=tmp_path, download=False)
    expected = {"magic": "magic number", "truncated": "truncated", "bad gzip": "could not read"}[damage]
    assert expected in str(caught.value)


def test_missing_files_error_names_files_and_folder(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError) as caught:
        load_dataset("fashion-mnist", split="train", data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("fashion-mnist (train): files not found")
    assert "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message
    assert f"Put them in {tmp_path / 'fashion-mnist'}/" in message and "CNNLAB_DATA" in message


# ---------------------------------------------------------------- real data (../shared/datasets)

needs_fashion = pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(),
                                   reason=f"real Fashion-MNIST not present at {SHARED / 'fashion-mnist'}")
needs_mnist = pytest.mark.skipif(not (SHARED / "mnist").is_dir(),
                                 reason=f"real MNIST not present at {SHARED / 'mnist'}")


@needs_fashion
def test_real_fashion_mnist() -> None:
    train = load_dataset("fashion-mnist", split="train", data_dir=SHARED, download=False)
    test = load_dataset("fashion-mnist", split="test", data_dir=SHARED, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.float().mean().item() == pytest.approx(72.94, abs=0.01)  # published train mean
    assert train.labels.bincount().tolist() == [6000] * 10 and test.labels.bincount().tolist() == [1000] * 10
    assert train.class_names == FASHION and train.input_shape == (28, 28, 1)


@needs_mnist
def test_real_mnist_test_split_and_missing_train_images() -> None:
    test = load_dataset("mnist", split="test", data_dir=SHARED, download=False)
    assert test.images.shape == (10000, 1, 28, 28)
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the first ten t10k labels
    assert test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    with pytest.raises(CnnlabError, match="train-images-idx3-ubyte") as caught:
        load_dataset("mnist", split="train", data_dir=SHARED, download=False)
    assert str(SHARED / "mnist") in str(caught.value)


# ---------------------------------------------------------------- CIFAR-10 (restricted unpickling)

PurePythonPickler: Any = pickle._Pickler  # the pure-Python pickler, whose dispatch table can be extended


class Python2Pickler(PurePythonPickler):
    """Writes bytes as Python 2 `str` (BINSTRING), like the cPickle that wrote the canonical files."""

    dispatch = dict(PurePythonPickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj if len(obj) < 256
                   else pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


CIFAR_NAMES = ["Airplane", "Automobile", "Bird", "Cat", "Deer", "Dog", "Frog", "Horse", "Ship", "Truck"]


def write_cifar(folder: Path, per_batch: int = 3, python2: bool = True) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A canonical cifar-10-batches-py/ with small batches; returns {batch name: (data rows, labels)}."""
    dump = py2_pickle if python2 else (lambda obj: pickle.dumps(obj, protocol=4))
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        rng = np.random.default_rng(i)
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batches[name] = (data, labels)
        entry = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{j}.png".encode() for j in range(per_batch)]}
        (root / name).write_bytes(dump(entry))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    (root / "batches.meta").write_bytes(dump(meta))
    return batches


def check_cifar(data: ArrayDataset, batches: dict[str, tuple[np.ndarray, list[int]]], names: list[str]) -> None:
    rows = np.concatenate([batches[n][0] for n in names])
    assert data.images.shape == (len(rows), 3, 32, 32) and data.images.dtype == torch.uint8
    # Row layout is R plane, G plane, B plane, each 32x32 row-major: pixel (c, y, x) is at c*1024 + y*32 + x.
    assert data.images[1, 2, 5, 7].item() == rows[1, 2 * 1024 + 5 * 32 + 7]
    assert data.images[-1, 0, 31, 0].item() == rows[-1, 31 * 32]
    assert data.labels.tolist() == sum((batches[n][1] for n in names), [])
    assert data.class_names == CIFAR_NAMES


@pytest.mark.parametrize("python2", [True, False], ids=["python2-pickle", "python3-pickle"])
def test_cifar_extracted_folder(tmp_path: Path, python2: bool) -> None:
    batches = write_cifar(tmp_path, python2=python2)
    train = load_dataset("cifar10", split="train", data_dir=tmp_path, download=False)
    check_cifar(train, batches, [f"data_batch_{k}" for k in range(1, 6)])
    check_cifar(load_dataset("cifar10", split="test", data_dir=tmp_path, download=False), batches, ["test_batch"])


def test_cifar_tar_gz_is_read_without_extracting(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path / "build")
    (tmp_path / "cifar10").mkdir()
    with tarfile.open(tmp_path / "cifar10" / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data_dir = tmp_path / "cifar10"
    check_cifar(load_dataset("cifar10", split="test", data_dir=data_dir, download=False), batches, ["test_batch"])
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-python.tar.gz"]  # nothing extracted


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_cifar_pickle_with_foreign_object_is_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    marker = tmp_path / "code-ran"
    evil = {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "extra": RunsCode(marker)}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(evil, protocol=4))
    with pytest.raises(CnnlabError, match=r"refusing to load .*test_batch.*mkdir.*hold only arrays"):
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)
    assert not marker.exists()


def test_cifar_missing_names_archive(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match=r"cifar10 \(test\): files not found: cifar-10-python.tar.gz"):
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------- digits (offline, scikit-learn)

def test_digits_split_and_scale() -> None:
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(10))
    assert int(train.images.min()) == 0 and int(train.images.max()) == 255
    assert torch.equal(load_dataset("digits", split="test").images, test.images)  # deterministic split
    all_counts = torch.bincount(torch.cat([train.labels, test.labels]))
    assert all_counts.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # scikit-learn's digits
    # Pinned: a changed seed or split would silently change every reported digits test accuracy.
    assert test.labels.bincount().tolist() == [39, 37, 47, 28, 42, 32, 37, 27, 30, 41]


# ---------------------------------------------------------------- image folders

def save(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(path)


def gray(value: int, size: tuple[int, int] = (6, 4)) -> np.ndarray:
    return np.full(size, value, dtype=np.uint8)


def grayscale_tree(root: Path) -> None:
    save(root / "cat" / "b.png", gray(10))
    save(root / "cat" / "a.jpg", gray(20))
    save(root / "cat" / "sub" / "c.bmp", gray(30))
    save(root / "ant" / "d.png", gray(40))
    save(root / "ant" / ".hidden.png", gray(99))
    save(root / "ant" / ".cache" / "e.png", gray(99))
    save(root / ".trash" / "f.png", gray(99))
    (root / "ant" / "notes.txt").write_text("not an image")


def test_folder_grayscale_counts_order_and_pixels(tmp_path: Path) -> None:
    grayscale_tree(tmp_path / "animals")
    data = load_dataset(tmp_path / "animals")
    assert data.class_names == ["ant", "cat"] and data.name == "animals"
    assert data.images.shape == (4, 1, 6, 4) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0, 1, 1, 1]
    # samples sorted by (class, path): ant/d.png, cat/a.jpg, cat/b.png, cat/sub/c.bmp
    assert [int(data.images[i, 0, 3, 2]) for i in (0, 2, 3)] == [40, 10, 30]  # lossless formats exactly
    assert abs(int(data.images[1, 0, 3, 2]) - 20) <= 2  # JPEG


def test_folder_rgb_when_any_image_has_colour(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    save(root / "a" / "1.png", gray(50))
    save(root / "a" / "2.GIF", gray(60))  # palette mode: makes the dataset RGB
    save(root / "b" / "3.webp", np.zeros((6, 4, 3), np.uint8))
    rgba = np.zeros((6, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    save(root / "b" / "4.png", rgba)
    data = load_dataset(root)
    assert data.images.shape == (4, 3, 6, 4)
    assert data.images[0, :, 0, 0].tolist() == [50, 50, 50]  # gray replicated
    assert data.images[3, :, 0, 0].tolist() == [200, 0, 0]  # alpha dropped


def test_folder_size_most_common_or_given(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    save(root / "a" / "1.png", gray(1, (8, 8)))
    save(root / "a" / "2.png", gray(1, (8, 8)))
    save(root / "b" / "3.png", gray(1, (16, 12)))
    assert load_dataset(root).images.shape == (3, 1, 8, 8)
    assert load_dataset(root, image_size=(5, 7)).images.shape == (3, 1, 5, 7)


def test_split_folder(tmp_path: Path) -> None:
    root = tmp_path / "split"
    for split, count in (("train", 3), ("test", 1)):
        for label in ("x", "y"):
            for i in range(count):
                save(root / split / label / f"{i}.png", gray(i))
    train, test = load_dataset(root), load_dataset(root, split="test")
    assert (len(train), len(test)) == (6, 2) and train.class_names == test.class_names == ["x", "y"]
    save(root / "test" / "z" / "0.png", gray(0))
    with pytest.raises(CnnlabError, match=r"test/ differ from train/ \(missing \[\], extra \['z'\]\)"):
        load_dataset(root, split="test")


@pytest.mark.parametrize("problem, pattern", [
    ("one class", r"only one class subfolder \('a'\).*at least 2 classes"),
    ("empty class", r"class folder '.*/b' has no images"),
    ("corrupt image", r"class folder '.*/b' has no decodable images \(1 file\(s\) could not be decoded: broken.png\)"),
    ("no subfolders", r"has no class subfolders \(it holds 1 image directly"),
    ("no test split", r"has no test/ subfolder"),
])
def test_folder_errors(tmp_path: Path, problem: str, pattern: str) -> None:
    root = tmp_path / "bad"
    if problem == "no subfolders":
        save(root / "1.png", gray(1))
    else:
        save(root / "a" / "1.png", gray(1))
    if problem in ("empty class", "corrupt image", "no test split"):
        (root / "b").mkdir()
    if problem == "corrupt image":
        (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    if problem == "no test split":
        save(root / "b" / "2.png", gray(2))
    with pytest.raises(CnnlabError, match=pattern):
        load_dataset(root, split="test" if problem == "no test split" else "train")


# ---------------------------------------------------------------- single images

def test_read_image_conversions(tmp_path: Path) -> None:
    save(tmp_path / "deep.png", np.array([[0, 65535], [257 * 100, 1000]], dtype=np.uint16))  # 16-bit gray
    assert read_image(tmp_path / "deep.png", channels=1).tolist() == [[[0, 255], [100, 4]]]
    save(tmp_path / "gray.png", gray(7, (2, 3)))
    assert read_image(tmp_path / "gray.png", channels=3).shape == (3, 2, 3)
    assert read_image(tmp_path / "gray.png", channels=1, size=(5, 4)).shape == (1, 5, 4)


def test_read_image_applies_exif_rotation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(gray(128, (2, 5))).save(tmp_path / "phone.jpg", exif=exif)
    assert read_image(tmp_path / "phone.jpg", channels=1).shape == (1, 5, 2)


@pytest.mark.parametrize("content", [b"", b"plain text, not an image", None])
def test_read_image_undecodable_names_the_file(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "photo.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CnnlabError, match=r"could not decode image '.*photo.png'"):
        read_image(path, channels=3)


def test_list_images(tmp_path: Path) -> None:
    grayscale_tree(tmp_path)
    save(tmp_path / "cat" / "UPPER.PNG", gray(1))
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["ant/d.png", "cat/UPPER.PNG", "cat/a.jpg", "cat/b.png", "cat/sub/c.bmp"]
    assert list_images(tmp_path / "cat" / "b.png") == [tmp_path / "cat" / "b.png"]
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"} == IMAGE_EXTENSIONS


# ---------------------------------------------------------------- arrays

def test_from_arrays_layouts_and_scales() -> None:
    hw = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    data = ArrayDataset.from_arrays(hw, [0, 1])
    assert data.images.shape == (2, 1, 4, 5) and data.images.dtype == torch.uint8 and data.input_shape == (4, 5, 1)
    assert torch.equal(data.images[:, 0], torch.from_numpy(hw)) and data.class_names == ["0", "1"]

    unscaled = (hw[..., None] * 6).astype(np.float64)  # (N, H, W, 1) in 0..255: the missing /255
    scaled = ArrayDataset.from_arrays(unscaled, np.array([[1], [0]]))
    assert scaled.images.dtype == torch.float32 and scaled.labels.tolist() == [1, 0]
    assert torch.allclose(scaled.images[:, 0], torch.from_numpy(unscaled[..., 0] / 255).float())

    unit = np.random.default_rng(0).random((3, 4, 5, 3)).astype(np.float32)  # (N, H, W, 3) already in [0, 1]
    kept = ArrayDataset.from_arrays(unit, [0, 1, 2], ["a", "b", "c"])
    assert torch.equal(kept.images, torch.from_numpy(unit).permute(0, 3, 1, 2))

    first = torch.zeros((2, 3, 7, 9), dtype=torch.uint8)
    assert ArrayDataset.from_arrays(first, torch.tensor([0, 1])).input_shape == (7, 9, 3)


@pytest.mark.parametrize("images, labels, names, pattern", [
    (np.zeros((3, 8, 8)), [0, 1], None, r"3 images but 2 labels"),
    (np.zeros((2, 8, 8)), [0, 5], ["a", "b"], r"labels go up to 5 but only 2 class names"),
    (np.zeros((2, 8, 8, 2)), [0, 1], None, r"shape \(2, 8, 8, 2\); expected \(N, H, W\)"),
    (np.zeros((0, 8, 8)), [], None, r"empty"),
    (np.zeros((2, 8, 8)), np.eye(2), None, r"one-hot labels pass labels.argmax\(1\)"),
])
def test_from_arrays_errors(images: np.ndarray, labels: object, names: list[str] | None, pattern: str) -> None:
    with pytest.raises(CnnlabError, match=pattern):
        ArrayDataset.from_arrays(images, labels, names)  # type: ignore[arg-type]


def test_split_last_is_keras_validation_split() -> None:
    data = ArrayDataset.from_arrays(np.zeros((37, 4, 4), np.uint8), np.arange(37) % 10)
    train, val = data.split_last(0.1)
    assert len(train) == int(37 * (1 - 0.1)) == 33 and val.labels.tolist() == [3, 4, 5, 6]
    assert train.class_names == val.class_names == data.class_names
    for bad in (0, 1, 1.5, -0.2):
        with pytest.raises(CnnlabError, match="validation_split"):
            data.split_last(bad)
    with pytest.raises(CnnlabError, match="leaves no training samples"):
        data.subset([0, 1]).split_last(0.6)  # int(2 * 0.4) == 0
    with pytest.raises(CnnlabError, match="leaves no validation samples"):
        data.split_last(1e-17)  # 1 - 1e-17 == 1.0


def test_float_images() -> None:
    batch = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    assert float_images(batch).flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])
    already = torch.rand(2, 1, 3, 3)
    assert torch.equal(float_images(already), already)
    assert float_images(already.double()).dtype == torch.float32


# ---------------------------------------------------------------- load_dataset arguments

def test_names_and_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert dataset_names() == ["digits", "mnist", "fashion-mnist", "cifar10"]
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    assert default_data_dir().parts[-2:] == ("cnnlab", "datasets")
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    assert default_data_dir() == resolve_data_dir(None) == tmp_path
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"


def test_unknown_name_and_bad_arguments() -> None:
    with pytest.raises(CnnlabError, match=r"unknown dataset 'fashion-mnst'\. Did you mean 'fashion-mnist'\? "
                                          r"Built-in: digits, mnist, fashion-mnist, cifar10; or give a folder"):
        load_dataset("fashion-mnst", download=False)
    with pytest.raises(CnnlabError, match=r"split must be 'train' or 'test', got 'validation'"):
        load_dataset("digits", split="validation")
    with pytest.raises(CnnlabError, match="image_size"):
        load_dataset("digits", image_size=(0, 32))  # type: ignore[arg-type]


def test_image_size_resizes_builtin() -> None:
    data = load_dataset("digits", split="test", image_size=(32, 40))
    assert data.images.shape == (360, 1, 32, 40) and data.images.dtype == torch.uint8
    assert data.input_shape == (32, 40, 1)


# ---------------------------------------------------------------- batches: in memory and streaming alike

def invert(batch: torch.Tensor) -> torch.Tensor:
    return 255 - batch


def invert_in_place(batch: torch.Tensor) -> torch.Tensor:
    return batch.bitwise_not_()  # 255 - x for uint8, written into the batch it was given


def colour_tree(root: Path) -> None:
    """9 RGB images in 3 classes, two sizes (so both loaders resize), distinct pixels."""
    rng = np.random.default_rng(0)
    for i in range(9):
        hw = (12, 10) if i % 4 else (9, 14)
        save(root / f"class{i % 3}" / f"{i}.png", rng.integers(0, 256, (*hw, 3), dtype=np.uint8))


def all_batches(data: ArrayDataset | FolderDataset, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    parts = list(data.batches(**kwargs))
    return torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])


@pytest.mark.parametrize("workers", [0, 2])
def test_array_and_folder_batches_are_identical(tmp_path: Path, workers: int) -> None:
    colour_tree(tmp_path)
    memory, stream = load_dataset(tmp_path, in_memory=True), load_dataset(tmp_path, in_memory=False)
    assert isinstance(memory, ArrayDataset) and isinstance(stream, FolderDataset)
    assert stream.input_shape == memory.input_shape == (12, 10, 3) and stream.class_names == memory.class_names
    assert torch.equal(stream.labels, memory.labels) and len(stream) == len(memory) == 9
    order = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    for kwargs in ({"batch_size": 4, "order": order}, {"batch_size": 5}):
        from_memory = list(memory.batches(workers=workers, **kwargs))
        from_disk = list(stream.batches(workers=workers, **kwargs))
        assert [len(labels) for _, labels in from_disk] == [len(labels) for _, labels in from_memory]
        for (a_images, a_labels), (b_images, b_labels) in zip(from_memory, from_disk, strict=True):
            assert a_images.dtype == b_images.dtype == torch.uint8 and b_labels.dtype == torch.int64
            assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    images, labels = all_batches(memory, batch_size=4, order=order)
    assert torch.equal(images, memory.images[order]) and torch.equal(labels, memory.labels[order])


@pytest.mark.parametrize("augment", [invert, invert_in_place])
def test_augment_applies_only_to_the_batches_asked_for(tmp_path: Path, augment: Any) -> None:
    colour_tree(tmp_path)
    memory, stream = load_dataset(tmp_path, in_memory=True), load_dataset(tmp_path, in_memory=False)
    stored = memory.images.clone()
    order = torch.tensor([8, 0, 4, 2, 6, 1, 3, 5, 7])
    for data, workers in ((memory, 0), (stream, 0), (stream, 2)):
        for kwargs in ({"batch_size": 4}, {"batch_size": 4, "order": order}):
            plain, _ = all_batches(data, workers=workers, **kwargs)
            augmented, _ = all_batches(data, augment=augment, workers=workers, **kwargs)
            assert torch.equal(augmented, 255 - plain)
            assert torch.equal(all_batches(data, workers=workers, **kwargs)[0], plain)  # nothing stuck
    assert torch.equal(memory.images, stored)  # the in-place augment changed copies, never the dataset


def test_float_arrays_are_not_augmented_and_bad_augment_is_named() -> None:
    floats = ArrayDataset.from_arrays(np.full((3, 4, 4), 0.25, np.float32), [0, 1, 0])
    images, labels = all_batches(floats, batch_size=2, augment=invert)
    assert images.dtype == torch.float32 and torch.equal(images, floats.images) and labels.tolist() == [0, 1, 0]
    uint8 = ArrayDataset.from_arrays(np.zeros((3, 4, 4), np.uint8), [0, 1, 0])
    with pytest.raises(CnnlabError, match=r"augment returned torch.float32 \(2, 1, 4, 4\).*uint8"):
        next(uint8.batches(2, augment=float_images))
    for bad, pattern in ((0, "batch_size must be a positive integer"), (2.5, "batch_size")):
        with pytest.raises(CnnlabError, match=pattern):
            next(uint8.batches(bad))  # type: ignore[arg-type]
    with pytest.raises(CnnlabError, match=r"order: indices span 0\.\.3 but arrays has 3 samples"):
        next(uint8.batches(2, order=torch.tensor([0, 3])))
    with pytest.raises(CnnlabError, match="workers must be an integer >= 0"):
        next(uint8.batches(2, workers=-1))


# ---------------------------------------------------------------- undecodable files

def broken_tree(root: Path) -> dict[str, Path]:
    """Good images in two classes plus a zero-byte PNG, a text 'PNG' and a JPEG cut in half."""
    rng = np.random.default_rng(1)
    for i in range(4):
        save(root / ("a" if i < 2 else "b") / f"{i}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    save(root / "b" / "photo.jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    bad = {"empty": root / "a" / "empty.png", "text": root / "b" / "readme.png", "truncated": root / "a" / "cut.jpg"}
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("this is not a PNG")
    jpeg = (root / "b" / "photo.jpg").read_bytes()
    bad["truncated"].write_bytes(jpeg[: len(jpeg) // 2])
    return bad


def test_undecodable_files_are_skipped_and_named_in_memory(tmp_path: Path) -> None:
    bad = broken_tree(tmp_path)
    data = load_dataset(tmp_path, in_memory=True)
    assert isinstance(data, ArrayDataset) and len(data) == 5 and data.labels.tolist() == [0, 0, 1, 1, 1]
    assert sorted(data.skipped) == sorted(str(p) for p in bad.values())
    assert data.subset([0]).skipped == data.skipped and data.split_last(0.4)[1].skipped == data.skipped


def test_undecodable_files_are_skipped_and_named_streaming(tmp_path: Path) -> None:
    bad = broken_tree(tmp_path)
    data = load_dataset(tmp_path, in_memory=False)
    assert isinstance(data, FolderDataset)
    # Streaming reads only headers up front: empty and non-image files are skipped now...
    assert sorted(data.skipped) == sorted([str(bad["empty"]), str(bad["text"])])
    assert data.subset([1, 0]).skipped == data.skipped
    # ...and the half JPEG, whose header is intact, is dropped when its batch is decoded.
    images, labels = all_batches(data, batch_size=2)
    assert len(labels) == len(data) - 1 == 5 and data.skipped_during_training == [str(bad["truncated"])]


@pytest.mark.parametrize("workers", [0, 2])
def test_file_corrupted_after_loading_is_dropped_and_recorded(tmp_path: Path, workers: int) -> None:
    colour_tree(tmp_path)
    data = load_dataset(tmp_path, in_memory=False)
    assert isinstance(data, FolderDataset)
    expected, _ = all_batches(data, batch_size=4)
    victim = data.paths[4]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n damaged on disk")
    train, validation = data.split_last(0.3)
    for _ in range(2):  # two epochs: the name is recorded once
        images, labels = all_batches(train, batch_size=4, workers=workers)
        assert torch.equal(images, torch.cat([expected[:4], expected[5:6]])) and len(labels) == 5
    assert data.skipped_during_training == train.skipped_during_training == [str(victim)]  # shared with parts
    assert [len(lab) for _, lab in train.batches(1, workers=workers)] == [1] * 5  # the all-bad batch is gone
    assert data.skipped == []


def test_in_memory_none_decides_by_decoded_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    colour_tree(tmp_path)
    assert isinstance(load_dataset(tmp_path), ArrayDataset)
    monkeypatch.setattr("cnnlab.data.folders.MEMORY_BUDGET_BYTES", 9 * 3 * 12 * 10)  # exactly fits
    assert isinstance(load_dataset(tmp_path), ArrayDataset)
    monkeypatch.setattr("cnnlab.data.folders.MEMORY_BUDGET_BYTES", 9 * 3 * 12 * 10 - 1)
    data = load_dataset(tmp_path, image_size=(6, 5))
    assert isinstance(load_dataset(tmp_path), FolderDataset) and isinstance(data, ArrayDataset)
    assert isinstance(load_dataset(tmp_path, in_memory=True), ArrayDataset)
    assert isinstance(load_dataset("digits", split="test", in_memory=False), ArrayDataset)  # built-ins: memory
    with pytest.raises(CnnlabError, match="in_memory must be True, False or None"):
        load_dataset(tmp_path, in_memory="yes")  # type: ignore[arg-type]


def test_folder_dataset_surface(tmp_path: Path) -> None:
    colour_tree(tmp_path)
    data = load_dataset(tmp_path, in_memory=False)
    assert isinstance(data, FolderDataset)
    assert (data.name, data.channels, data.size, data.num_classes) == (tmp_path.name, 3, (12, 10), 3)
    assert [p.name for p in data.paths[:3]] == ["0.png", "3.png", "6.png"] and data.labels[:4].tolist() == [0] * 3 + [1]
    part = data.subset(torch.tensor([8, 0]))
    assert [p.name for p in part.paths] == ["8.png", "0.png"] and part.labels.tolist() == [2, 0]
    assert repr(part) == f"FolderDataset(name={tmp_path.name!r}, files=2, classes=3, image=3x12x10, skipped=0)"
    with pytest.raises(CnnlabError, match="2 paths but 1 labels"):
        FolderDataset(data.paths[:2], data.labels[:1], data.class_names, 3, (4, 4))
    with pytest.raises(CnnlabError, match="channels must be 1"):
        FolderDataset(data.paths, data.labels, data.class_names, 2, (4, 4))  # 4 is RGBA (Keras's color_mode)


# ---------------------------------------------------------------- stratified splits, class weights

def test_stratified_split_properties() -> None:
    counts = [50, 20, 7, 3, 2]
    shuffle = torch.randperm(82, generator=torch.Generator().manual_seed(5))
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])[shuffle]
    parts = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    everything = torch.cat(parts)
    assert sorted(everything.tolist()) == list(range(82))  # disjoint and complete
    assert all(torch.equal(p, p.sort().values) and p.dtype == torch.int64 for p in parts)
    per_part = [labels[p].bincount(minlength=5).tolist() for p in parts]
    # Largest remainder per class; classes of >= 3 images appear in every part; the 2-image class cannot.
    assert per_part == [[40, 16, 5, 1, 2], [5, 2, 1, 1, 0], [5, 2, 1, 1, 0]]
    again = stratified_split(labels, [0.8, 0.1, 0.1], seed=0)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    other = stratified_split(labels, (0.8, 0.1, 0.1), seed=1)
    assert not torch.equal(parts[1], other[1])
    # Halves of the odd classes (7, 3) round per class; ties go to the first part: 25+10+4+2+1, 25+10+3+1+1.
    assert [len(p) for p in stratified_split(labels, (0.5, 0.5), seed=0)] == [42, 40]


@pytest.mark.parametrize("fractions, pattern", [
    ((0.8, 0.1), r"positive and sum to 1, got \(0.8, 0.1\) \(sum 0.9\)"),
    ((1.2, -0.2), "positive and sum to 1"),
    ("0.8", "a sequence of numbers"),
    ((), "a sequence of numbers"),
])
def test_stratified_split_rejects_bad_fractions(fractions: Any, pattern: str) -> None:
    with pytest.raises(CnnlabError, match=pattern):
        stratified_split(torch.tensor([0, 1, 0, 1]), fractions, seed=0)


def test_class_weights_match_scikit_learn() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    labels = torch.tensor([0] * 30 + [1] * 5 + [2] * 12 + [3])
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels.numpy())
    weights = class_weights(labels, 4)
    assert weights.dtype == torch.float32 and weights.shape == (4,)
    assert weights.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    assert class_weights(torch.tensor([0, 0, 2]), 3).tolist() == pytest.approx([0.5, 0.0, 1.0])  # absent: 0
    with pytest.raises(CnnlabError, match=r"labels span 0..3 but num_classes=3"):
        class_weights(labels, 3)
