"""Contracts of cnnlab.keras.datasets and cnnlab.keras.utils: Keras's shapes, dtypes and values.

The datasets are read from files each test writes in the canonical formats (IDX .gz, the CIFAR
pickle tarballs, the CIFAR-10 image-folder archive); nothing is ever downloaded (`no_download`
fails any attempt). The real Fashion-MNIST is used when ../shared/datasets has it. The utils'
expected values are written by hand; they match tf.keras 3.x on the same inputs (checked once
against benchmarks/.venv-tf: load_img in every color mode / interpolation / keep_aspect_ratio,
img_to_array, array_to_img, to_categorical, 111 outputs, all equal).
"""

from __future__ import annotations

import gzip
import io
import pickle  # only to write CIFAR batch files, which are pickles by definition
import random
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab.keras.datasets
from cnnlab.data import download
from cnnlab.data.cache import DATA_DIR_ENV
from cnnlab.errors import CnnlabError
from cnnlab.keras.datasets import cifar10, cifar100, fashion_mnist, mnist
from cnnlab.keras.utils import (
    array_to_img,
    img_to_array,
    load_img,
    plot_model,
    save_img,
    set_random_seed,
    to_categorical,
)
from cnnlab.viz import graph

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any download attempt is recorded and fails as it would offline."""
    attempts: list[str] = []

    def offline(dataset: str, split: str, data_dir: Path) -> str:
        attempts.append(dataset)
        return "URLError: network disabled in tests"

    monkeypatch.setattr(download, "_download", offline)
    return attempts


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    return folder


# ---------------------------------------------------------------- files in the canonical formats

def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """An IDX file of uint8 values: 0x0000, type 0x08, ndim, big-endian sizes, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_mnist_like(folder: Path, n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for key, stem in [("x_train", "train-images-idx3-ubyte"), ("y_train", "train-labels-idx1-ubyte"),
                      ("x_test", "t10k-images-idx3-ubyte"), ("y_test", "t10k-labels-idx1-ubyte")]:
        write_idx_gz(folder / f"{stem}.gz", arrays[key])
    return arrays


def pickled(entries: dict[str, object]) -> bytes:
    # Bytes keys, as the originals. Protocol 4: Python 3's protocol 2 writes arrays through _codecs.encode,
    # which the array-only unpickler refuses; tests/test_data.py covers Python 2's own pickles.
    return pickle.dumps({k.encode(): v for k, v in entries.items()}, protocol=4)


def write_tar_gz(path: Path, folder: str, files: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(f"{folder}/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))


def write_cifar10(data_dir: Path, per_batch: int = 2, test_rows: int = 3) -> dict[str, np.ndarray]:
    """cifar-10-python.tar.gz with 5 tiny training batches, a test batch and batches.meta."""
    rng = np.random.default_rng(1)
    rows = {"train": rng.integers(0, 256, (5 * per_batch, 3072), dtype=np.uint8),
            "test": rng.integers(0, 256, (test_rows, 3072), dtype=np.uint8)}
    labels = {"train": rng.integers(0, 10, 5 * per_batch), "test": rng.integers(0, 10, test_rows)}
    files = {}
    for i in range(5):
        part = slice(i * per_batch, (i + 1) * per_batch)
        files[f"data_batch_{i + 1}"] = pickled({"data": rows["train"][part],
                                                 "labels": [int(v) for v in labels["train"][part]]})
    files["test_batch"] = pickled({"data": rows["test"], "labels": [int(v) for v in labels["test"]]})
    files["batches.meta"] = pickled({"label_names": [n.encode() for n in CIFAR10_NAMES]})
    write_tar_gz(data_dir / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    return {"train_rows": rows["train"], "train_labels": labels["train"],
            "test_rows": rows["test"], "test_labels": labels["test"]}


def write_cifar100(data_dir: Path) -> dict[str, np.ndarray]:
    """cifar-100-python.tar.gz with tiny `train` (4 images) and `test` (3) files and `meta`."""
    rng = np.random.default_rng(2)
    out: dict[str, np.ndarray] = {}
    files = {}
    for split, n in (("train", 4), ("test", 3)):
        out[f"{split}_rows"] = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        out[f"{split}_fine"] = rng.integers(0, 100, n)
        out[f"{split}_coarse"] = rng.integers(0, 20, n)
        files[split] = pickled({"data": out[f"{split}_rows"], "fine_labels": [int(v) for v in out[f"{split}_fine"]],
                                "coarse_labels": [int(v) for v in out[f"{split}_coarse"]],
                                "filenames": [b"x.png"] * n, "batch_label": split.encode()})
    files["meta"] = pickled({"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                             "coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    write_tar_gz(data_dir / "cifar100" / "cifar-100-python.tar.gz", "cifar-100-python", files)
    return out


def keras_pixels(rows: np.ndarray) -> np.ndarray:
    """CIFAR rows (R plane, G plane, B plane, each 32x32 row-major) in Keras's (N, 32, 32, 3), by loops."""
    out = np.zeros((len(rows), 32, 32, 3), np.uint8)
    for c in range(3):
        for y in range(32):
            out[:, y, :, c] = rows[:, c * 1024 + y * 32: c * 1024 + y * 32 + 32]
    return out


# ---------------------------------------------------------------- datasets

def described(x: np.ndarray, y: np.ndarray) -> tuple[object, ...]:
    return x.shape, x.dtype, y.shape, y.dtype


@pytest.mark.parametrize("module, folder", [(mnist, "mnist"), (fashion_mnist, "fashion-mnist")])
def test_mnist_like_from_idx_files(data_dir: Path, module: object, folder: str) -> None:
    written = write_mnist_like(data_dir / folder)
    (x_train, y_train), (x_test, y_test) = module.load_data()  # type: ignore[attr-defined]
    assert described(x_train, y_train) == ((5, 28, 28), np.uint8, (5,), np.uint8)
    assert described(x_test, y_test) == ((3, 28, 28), np.uint8, (3,), np.uint8)
    for key, value in zip(["x_train", "y_train", "x_test", "y_test"], [x_train, y_train, x_test, y_test],
                          strict=True):
        np.testing.assert_array_equal(value, written[key])


def test_mnist_path_names_an_npz_elsewhere(tmp_path: Path, data_dir: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = {"x_train": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), "y_train": np.arange(4, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), "y_test": np.array([7, 1], np.uint8)}
    (tmp_path / "elsewhere").mkdir()
    np.savez(tmp_path / "elsewhere" / "mnist.npz", **arrays)
    (x_train, y_train), (x_test, y_test) = mnist.load_data(path=str(tmp_path / "elsewhere" / "mnist.npz"))
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    assert y_test.tolist() == [7, 1] and y_test.dtype == np.uint8
    with pytest.raises(CnnlabError, match="must name a file called 'mnist.npz'"):
        mnist.load_data(path="digits.npz")


def test_missing_files_fail_offline_with_one_line_naming_files_and_folder(data_dir: Path,
                                                                          no_download: list[str]) -> None:
    with pytest.raises(CnnlabError) as caught:
        fashion_mnist.load_data()
    message = str(caught.value)
    assert "train-images-idx3-ubyte.gz" in message and str(data_dir / "fashion-mnist") in message
    assert "network disabled" in message and "\n" not in message
    assert no_download == ["fashion-mnist"]
    with pytest.raises(CnnlabError, match=r"cifar100 \(train\): files not found: cifar-100-python.tar.gz"):
        cifar100.load_data()


def test_cifar10_from_the_canonical_tarball(data_dir: Path) -> None:
    written = write_cifar10(data_dir)
    (x_train, y_train), (x_test, y_test) = cnnlab.keras.datasets.cifar10.load_data()
    assert described(x_train, y_train) == ((10, 32, 32, 3), np.uint8, (10, 1), np.uint8)
    assert (x_test.shape, y_test.shape) == ((3, 32, 32, 3), (3, 1))
    np.testing.assert_array_equal(x_train, keras_pixels(written["train_rows"]))
    np.testing.assert_array_equal(x_test, keras_pixels(written["test_rows"]))
    assert y_train[:, 0].tolist() == written["train_labels"].tolist()


@pytest.mark.parametrize("label_mode", ["fine", "coarse"])
def test_cifar100_from_the_canonical_tarball(data_dir: Path, label_mode: str) -> None:
    written = write_cifar100(data_dir)
    (x_train, y_train), (x_test, y_test) = cifar100.load_data(label_mode=label_mode)
    assert described(x_train, y_train) == ((4, 32, 32, 3), np.uint8, (4, 1), np.uint8)
    assert (x_test.shape, y_test.shape) == ((3, 32, 32, 3), (3, 1))
    np.testing.assert_array_equal(x_test, keras_pixels(written["test_rows"]))
    assert y_train[:, 0].tolist() == written[f"train_{label_mode}"].tolist()
    assert y_test[:, 0].tolist() == written[f"test_{label_mode}"].tolist()


def test_cifar100_rejects_an_unknown_label_mode(data_dir: Path) -> None:
    with pytest.raises(CnnlabError, match="label_mode must be one of 'fine', 'coarse', got 'medium'"):
        cifar100.load_data(label_mode="medium")


def write_cifar10_image_folder(archive: Path) -> None:
    """The cifar10-jpg layout (train/<class>/, test/<class>/), with PNGs whose value is 20 * class index."""
    files = {}
    for split, count in (("train", 2), ("test", 1)):
        for index, name in enumerate(CIFAR10_NAMES):
            for k in range(count):
                buffer = io.BytesIO()
                Image.new("RGB", (32, 32), (20 * index, 20 * index + 1, 20 * index + 2)).save(buffer, "PNG")
                files[f"{split}/{name}/{k}.png"] = buffer.getvalue()
    write_tar_gz(archive, "cifar10-jpg", files)


def test_cifar10_falls_back_to_the_image_folder_copy(data_dir: Path) -> None:
    write_cifar10_image_folder(data_dir / "cifar10-jpg" / "cifar10-jpg.tar.gz")
    with pytest.warns(UserWarning, match="reading the JPEG copy"):
        (x_train, y_train), (x_test, y_test) = cifar10.load_data()
    assert described(x_train, y_train) == ((20, 32, 32, 3), np.uint8, (20, 1), np.uint8)
    assert (x_test.shape, y_test.shape) == ((10, 32, 32, 3), (10, 1))
    for x, y in ((x_train, y_train), (x_test, y_test)):
        np.testing.assert_array_equal(x[:, 0, 0, 0], 20 * y[:, 0].astype(int))  # each label with its own pixels
    assert sorted(y_train[:, 0].tolist()) == sorted(list(range(10)) * 2)
    assert y_train[:, 0].tolist() != sorted(y_train[:, 0].tolist())  # shuffled: validation_split is not one class


def test_cifar10_canonical_files_win_over_the_image_folder_copy(data_dir: Path) -> None:
    write_cifar10_image_folder(data_dir / "cifar10-jpg.tar.gz")
    written = write_cifar10(data_dir)
    (x_train, _), _ = cifar10.load_data()
    np.testing.assert_array_equal(x_train, keras_pixels(written["train_rows"]))


@pytest.mark.skipif(not (SHARED / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file(),
                    reason=f"the real Fashion-MNIST is not in {SHARED / 'fashion-mnist'}")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(SHARED))
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert described(x_train, y_train) == ((60000, 28, 28), np.uint8, (60000,), np.uint8)
    assert described(x_test, y_test) == ((10000, 28, 28), np.uint8, (10000,), np.uint8)
    assert round(float(x_train.mean()), 2) == 72.94  # ../shared/datasets/README.md
    assert y_train[:5].tolist() == [9, 0, 0, 3, 0]  # the first labels of the original train file
    assert np.bincount(y_test).tolist() == [1000] * 10


# ---------------------------------------------------------------- to_categorical, set_random_seed

def test_to_categorical_hand_computed() -> None:
    expected = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], np.float32)
    result = to_categorical([0, 2, 1])
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, expected)
    column = to_categorical(np.array([[2], [0]], np.uint8), num_classes=4)  # (N, 1) as CIFAR's y: trailing 1 dropped
    np.testing.assert_array_equal(column, [[0, 0, 1, 0], [1, 0, 0, 0]])
    assert to_categorical(np.array([[1, 0], [0, 1]])).shape == (2, 2, 2)
    assert to_categorical(3, num_classes=5).tolist() == [0, 0, 0, 1, 0]
    assert to_categorical([1, 0], dtype="int64").dtype == np.int64
    assert to_categorical(torch.tensor([1, 0])).tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("y, num_classes, message", [
    ([0, 3], 3, r"labels must be in 0..2 for num_classes=3, got labels from 0 to 3"),
    ([-1, 1], None, r"labels must be in 0..1 .* from -1 to 1"),
    ([0.5, 1.0], None, "non-integer values"),
    ([], None, "y is empty"),
    ([0, 1], 0, "num_classes must be a positive integer"),
])
def test_to_categorical_rejects_bad_labels(y: list[float], num_classes: int | None, message: str) -> None:
    with pytest.raises(CnnlabError, match=message):
        to_categorical(y, num_classes=num_classes)


def test_set_random_seed_repeats_python_numpy_and_torch_draws() -> None:
    def draws() -> tuple[float, list[float], list[float]]:
        return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()

    set_random_seed(123)
    first = draws()
    set_random_seed(123)
    assert draws() == first
    set_random_seed(124)
    assert all(a != b for a, b in zip(draws(), first, strict=True))
    with pytest.raises(CnnlabError, match="seed must be an integer"):
        set_random_seed(-1)


# ---------------------------------------------------------------- images

@pytest.mark.parametrize("channels, color_mode", [(3, "rgb"), (1, "grayscale"), (4, "rgba")])
def test_png_round_trip(tmp_path: Path, channels: int, color_mode: str) -> None:
    x = np.random.default_rng(channels).integers(0, 256, (7, 5, channels)).astype(np.float32)
    path = tmp_path / "image.png"
    save_img(path, x, scale=False)
    image = load_img(path, color_mode=color_mode)
    assert image.size == (5, 7)  # PIL gives (width, height)
    array = img_to_array(image)
    assert array.dtype == np.float32 and array.shape == (7, 5, channels)
    np.testing.assert_array_equal(array, x)
    np.testing.assert_array_equal(img_to_array(image, data_format="channels_first"), x.transpose(2, 0, 1))


def test_load_img_converts_between_color_modes(tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    Image.new("RGB", (3, 2), (255, 0, 0)).save(path)
    assert img_to_array(load_img(path, color_mode="rgba"))[0, 0].tolist() == [255.0, 0.0, 0.0, 255.0]  # opaque
    assert img_to_array(load_img(path, color_mode="grayscale"))[0, 0].tolist() == [76.0]  # ITU-R 601: 0.299 * 255


def test_array_to_img_scales_min_to_0_and_max_to_255() -> None:
    image = array_to_img(np.array([[[-1.0], [0.0], [1.0]]]))  # (1, 3, 1): -1 -> 0, 0 -> 127.5 -> 127, 1 -> 255
    assert image.mode == "L" and img_to_array(image).ravel().tolist() == [0.0, 127.0, 255.0]
    with pytest.raises(CnnlabError, match="with scale=False values must be in 0..255"):
        array_to_img(np.full((2, 2, 3), 300.0), scale=False)
    with pytest.raises(CnnlabError, match="expected 1, 3 or 4 channels"):
        array_to_img(np.zeros((3, 8, 8)))


def test_load_img_target_size_is_height_width(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (64, 48), "red").save(path)
    image = load_img(path, target_size=(10, 20))
    assert image.size == (20, 10) and img_to_array(image).shape == (10, 20, 3)
    assert img_to_array(load_img(path, color_mode="grayscale", target_size=(28, 28))).shape == (28, 28, 1)


def test_load_img_keep_aspect_ratio_crops_the_centre(tmp_path: Path) -> None:
    pixels = np.zeros((2, 6), np.uint8)
    pixels[:, 2:4] = 255  # a white 2x2 centre between black sides
    path = tmp_path / "strip.png"
    Image.fromarray(pixels).save(path)
    cropped = img_to_array(load_img(path, color_mode="grayscale", target_size=(2, 2), keep_aspect_ratio=True))
    assert cropped.ravel().tolist() == [255.0] * 4
    stretched = img_to_array(load_img(path, color_mode="grayscale", target_size=(2, 2)))
    assert stretched.ravel().tolist() == [0.0] * 4  # nearest samples column centres 1.5 and 4.5: black


def test_load_img_turns_the_image_upright_by_exif(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    path = tmp_path / "portrait.jpg"
    Image.new("RGB", (40, 20), "blue").save(path, exif=exif)
    assert load_img(path).size == (20, 40)


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_undecodable_image_is_one_line_naming_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / f"{content}_photo.png"
    if content == "garbage":
        path.write_bytes(b"this is not an image at all")
    else:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(CnnlabError, match=f"could not decode image .*{content}_photo.png") as caught:
        load_img(path)
    assert "\n" not in str(caught.value)


def test_save_img_unknown_extension_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match=r"cannot write .*picture\.xyz"):
        save_img(tmp_path / "picture.xyz", np.zeros((2, 2, 3)))


# ---------------------------------------------------------------- plot_model

class StandInLayer:
    """The layer surface plot_model reads: name, class name, output_shape, count_params()."""

    def __init__(self, name: str, output_shape: tuple[int | None, ...], params: int) -> None:
        self.name, self.output_shape, self.params = name, output_shape, params

    def count_params(self) -> int:
        return self.params


class Conv2D(StandInLayer):
    pass


class MaxPooling2D(StandInLayer):
    pass


class Flatten(StandInLayer):
    pass


class Dense(StandInLayer):
    pass


class StandInModel:
    def __init__(self) -> None:
        self.layers = [Conv2D("conv2d", (None, 26, 26, 32), 320), MaxPooling2D("max_pooling2d", (None, 13, 13, 32), 0),
                       Flatten("flatten", (None, 5408), 0), Dense("dense", (None, 10), 54090)]


def test_plot_model_writes_a_png(tmp_path: Path) -> None:
    tall, wide = tmp_path / "plots" / "model.png", tmp_path / "wide.png"
    assert plot_model(StandInModel(), to_file=tall, show_shapes=True) is None
    plot_model(StandInModel(), to_file=wide, rankdir="LR")
    for path in (tall, wide):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tall) as top_bottom, Image.open(wide) as left_right:
        assert top_bottom.height > top_bottom.width and left_right.width > left_right.height


def test_plot_model_boxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[list[graph.LayerBox]] = []
    monkeypatch.setattr(graph, "plot_layer_stack",
                        lambda boxes, path, direction, dpi, edges=None: drawn.append(list(boxes)))
    plot_model(StandInModel(), to_file=tmp_path / "m.png", show_shapes=True)
    assert [box.lines() for box in drawn[0]] == [
        ["conv2d (Conv2D)", "output: (None, 26, 26, 32)"],
        ["max_pooling2d (MaxPooling2D)", "output: (None, 13, 13, 32)"],
        ["flatten (Flatten)", "output: (None, 5408)"],
        ["dense (Dense)", "output: (None, 10)"]]
    plot_model(StandInModel(), to_file=tmp_path / "m.png", show_layer_names=False, layer_range=["max_pool", "flatten"])
    assert [box.lines() for box in drawn[1]] == [["MaxPooling2D"], ["Flatten"]]
    with pytest.raises(CnnlabError, match="no layer matches 'conv3d'"):
        plot_model(StandInModel(), to_file=tmp_path / "m.png", layer_range=["conv3d", "dense"])
