"""Contracts of cnnlab.keras's images from folders: image_dataset_from_directory, ImageDataGenerator and fit on them.

File orders and splits are checked against what real tf.keras listed for the same tree
(tests/data/keras_image_data_reference.json, from benchmarks/keras_image_data_reference.py); label shapes
against Keras's documentation; fit end to end against an accuracy number.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import keras
from cnnlab.errors import CnnlabError
from cnnlab.keras import layers
from cnnlab.keras.preprocessing.image import ImageDataGenerator
from cnnlab.models.preprocessing_layers import RandomFlip, Rescaling

REFERENCE = json.loads((Path(__file__).parent / "data" / "keras_image_data_reference.json").read_text())
IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "imagenette-224" / "imagenette-224.tar.gz"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The reference tree: grey PNGs (4x6) whose level identifies the file."""
    root = tmp_path / "tree"
    for relative, level in REFERENCE["tree"]:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 4), (level, level, level)).save(path)
    return root


def levels(root: Path) -> dict[int, str]:
    return {level: relative for relative, level in REFERENCE["tree"]}


def files_of(dataset: object, root: Path) -> list[str]:
    return [Path(p).relative_to(root.resolve()).as_posix() for p in dataset.file_paths]  # type: ignore[attr-defined]


def test_file_order_split_and_printed_lines_equal_keras(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = REFERENCE["image_dataset_from_directory"]
    train, val = keras.utils.image_dataset_from_directory(tree, image_size=(4, 6), batch_size=4, seed=123,
                                                          validation_split=0.25, subset="both")
    assert capsys.readouterr().out.splitlines() == ["Found 22 files belonging to 3 classes.",
                                                    "Using 17 files for training.", "Using 5 files for validation."]
    assert train.class_names == expected["class_names"] == ["birds", "cats", "dogs"]
    assert files_of(train, tree) == expected["training"] and files_of(val, tree) == expected["validation"]
    val_images, val_labels = (np.concatenate(part) for part in zip(*val, strict=True))
    assert val_labels.tolist() == expected["validation_labels"]
    by_level = levels(tree)  # each image's grey level names its file: images follow file_paths
    assert [by_level[int(v)] for v in val_images[:, 0, 0, 0]] == expected["validation"]
    ordered = keras.preprocessing.image_dataset_from_directory(tree, image_size=(4, 6), shuffle=False)
    assert files_of(ordered, tree) == expected["unshuffled"]
    assert np.concatenate([y for _, y in ordered]).tolist() == expected["unshuffled_labels"]


def test_subsets_from_two_calls_with_one_seed_do_not_overlap(tree: Path) -> None:
    kwargs = dict(image_size=(4, 6), seed=7, validation_split=0.3)
    train = keras.utils.image_dataset_from_directory(tree, subset="training", **kwargs)
    val = keras.utils.image_dataset_from_directory(tree, subset="validation", **kwargs)
    assert len(train.file_paths) == 22 - int(0.3 * 22) and len(val.file_paths) == int(0.3 * 22)
    assert set(train.file_paths).isdisjoint(val.file_paths)
    with pytest.raises(CnnlabError, match="seed"):
        keras.utils.image_dataset_from_directory(tree, validation_split=0.2, subset="training")


@pytest.mark.parametrize("label_mode, shape, dtype", [("int", (4,), np.int32), ("categorical", (4, 3), np.float32),
                                                      ("binary", (4, 1), np.float32)])
def test_label_modes_have_keras_shapes(tree: Path, label_mode: str, shape: tuple, dtype: type) -> None:
    classes = ["cats", "dogs"] if label_mode == "binary" else None
    data = keras.utils.image_dataset_from_directory(tree, image_size=(4, 6), batch_size=4, label_mode=label_mode,
                                                    class_names=classes, shuffle=False)
    images, labels = next(iter(data))
    assert images.shape == (4, 4, 6, 3) and images.dtype == np.float32 and isinstance(images, np.ndarray)
    assert labels.shape == shape and labels.dtype == dtype
    assert images[0].numpy().astype("uint8").shape == (4, 6, 3)  # the tutorials' tf-style .numpy() works too
    if label_mode == "categorical":
        assert labels.sum(1).tolist() == [1.0] * 4
    if label_mode == "binary":  # class_names picks and orders the classes: cats 0, dogs 1
        assert data.class_names == ["cats", "dogs"] and labels.ravel().tolist() == [0.0] * 4


def test_images_are_keras_float_pixels_in_the_color_mode(tree: Path) -> None:
    grey = keras.utils.image_dataset_from_directory(tree, image_size=(4, 6), color_mode="grayscale", shuffle=False,
                                                    label_mode=None)
    first = next(iter(grey))
    assert first.shape == (22, 4, 6, 1) and first[0, 0, 0, 0] == 200.0  # birds/0.png, no division by 255
    rgba = keras.utils.image_dataset_from_directory(tree, image_size=(2, 3), color_mode="rgba", shuffle=False)
    images, _ = next(iter(rgba))
    assert images.shape[-1] == 4 and images[..., 3].min() == 255.0


def test_take_cache_prefetch_map_and_unbatch(tree: Path) -> None:
    data = keras.utils.image_dataset_from_directory(tree, image_size=(4, 6), batch_size=5, shuffle=False)
    assert len(data) == 5 and len(data.take(2)) == 2
    tuned = data.cache().prefetch(buffer_size=keras.preprocessing.image_dataset_from_directory.__globals__["AUTOTUNE"])
    assert len(list(tuned.take(2))) == 2 and data.prefetch(8) is data
    scaled = data.map(lambda x, y: (x / 255.0, y))
    x, _ = next(iter(scaled))
    assert x.max() <= 1.0 and np.allclose(x * 255, next(iter(data))[0])
    samples = list(data.unbatch())
    assert len(samples) == 22 and samples[0][0].shape == (4, 6, 3) and samples[0][1] == 0
    rebatched = data.unbatch().batch(11)
    assert [len(y) for _, y in rebatched] == [11, 11]
    assert [y.tolist() for _, y in data.skip(4)] == [[2, 2]] and len(data.skip(1).take(2)) == 2
    head, tail = data.shuffle(100, seed=2).take(1), data.shuffle(100, seed=2).skip(1)
    heads = {tuple(x[:, 0, 0, 0]) for x, _ in head} | {tuple(x[:, 0, 0, 0]) for x, _ in head}
    tail_levels = {v for x, _ in tail for v in x[:, 0, 0, 0]}
    assert all(set(h).isdisjoint(tail_levels) for h in heads)  # take/skip of a shuffled dataset never overlap
    first_batch = data.as_numpy_iterator().next()
    assert np.array_equal(first_batch[0], next(iter(data))[0])
    layer_mapped = data.map(lambda x, y: (Rescaling(1 / 255)(x), y)).map(lambda x, y: (x.astype(np.float16), y))
    assert next(iter(layer_mapped))[0].dtype == np.float16  # a layer in a map: NumPy again for the next map
    shuffled = data.shuffle(100, seed=1)
    first, second = (np.concatenate([y for _, y in shuffled]) for _ in range(2))
    assert sorted(first.tolist()) == sorted(second.tolist()) and first.tolist() != second.tolist()


def test_flow_from_directory_lists_classes_and_files_as_keras(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = REFERENCE["flow_from_directory"]
    gen = ImageDataGenerator(validation_split=0.25)
    for subset in (None, "training", "validation"):
        it = gen.flow_from_directory(tree, target_size=(4, 6), subset=subset, shuffle=False)
        want = expected[str(subset)]
        assert it.filenames == want["filenames"] and it.classes.tolist() == want["classes"]
        assert it.class_indices == want["class_indices"] and it.samples == len(want["filenames"])
    assert capsys.readouterr().out.splitlines() == ["Found 22 images belonging to 3 classes.",
                                                    "Found 18 images belonging to 3 classes.",
                                                    "Found 4 images belonging to 3 classes."]


@pytest.mark.parametrize("class_mode, shape", [("categorical", (8, 3)), ("sparse", (8,)), ("binary", (8,)),
                                               ("input", (8, 4, 6, 3)), (None, None)])
def test_flow_from_directory_label_shapes(tree: Path, class_mode: str | None, shape: tuple | None) -> None:
    it = ImageDataGenerator(rescale=1 / 255).flow_from_directory(tree, target_size=(4, 6), class_mode=class_mode,
                                                                 batch_size=8, shuffle=False)
    batch = next(it)
    if shape is None:
        assert batch.shape == (8, 4, 6, 3)
        return
    images, labels = batch
    assert images.shape == (8, 4, 6, 3) and labels.shape == shape and labels.dtype == np.float32
    assert np.allclose(images[0], 200 / 255)  # birds/0.png, rescaled
    if class_mode == "sparse":
        assert labels.tolist() == it.classes[:8].tolist()


def test_iterator_is_a_sequence_and_an_endless_iterator(tree: Path) -> None:
    it = ImageDataGenerator().flow_from_directory(tree, target_size=(4, 6), batch_size=8, shuffle=False,
                                                  class_mode="sparse")
    assert len(it) == 3 and it.batch_size == 8
    sizes = [len(next(it)[1]) for _ in range(4)]
    assert sizes == [8, 8, 6, 8]  # wraps round after the last, shorter batch
    assert it[2][1].tolist() == it.classes[16:].astype(np.float32).tolist()
    with pytest.raises(CnnlabError, match="out of range"):
        it[3]


def test_flow_batches_subsets_and_seeded_augmentation() -> None:
    x = np.arange(10 * 4 * 4 * 1, dtype=np.uint8).reshape(10, 4, 4, 1)
    y = np.array([0, 1] * 5)
    gen = ImageDataGenerator(validation_split=0.2)
    val = gen.flow(x, y, batch_size=4, shuffle=False, subset="validation")
    images, labels = next(val)
    assert np.array_equal(images, x[:2].astype(np.float32)) and labels.tolist() == [0, 1]  # Keras: the first 20%
    train = gen.flow(x, y, batch_size=4, shuffle=False, subset="training")
    assert np.array_equal(next(train)[0], x[2:6].astype(np.float32))
    moving = ImageDataGenerator(rotation_range=40, zoom_range=0.3)
    a, b = (next(moving.flow(x, y, batch_size=10, shuffle=False, seed=3))[0] for _ in range(2))
    assert np.array_equal(a, b) and not np.array_equal(a, x.astype(np.float32))  # a seed repeats the draws
    unseeded = moving.flow(x, y, batch_size=10, shuffle=False)
    assert not np.array_equal(next(unseeded)[0], next(unseeded)[0])  # without one, every batch draws anew
    assert not np.array_equal(a, next(moving.flow(x, y, batch_size=10, shuffle=False, seed=4))[0])


def test_featurewise_statistics_and_standardize_equal_keras() -> None:
    expected = REFERENCE["featurewise"]
    x = np.asarray(expected["x"], dtype=np.float32)
    gen = ImageDataGenerator(rescale=1 / 255, featurewise_center=True, featurewise_std_normalization=True)
    gen.fit(x)
    assert np.allclose(gen.mean.ravel(), expected["mean"], atol=1e-6)
    assert np.allclose(gen.std.ravel(), expected["std"], atol=1e-6)
    assert np.allclose(gen.standardize(x[0]), expected["standardized"], atol=1e-5)
    batch, _ = next(gen.flow(x, np.zeros(2), batch_size=2, shuffle=False))
    assert np.allclose(batch.mean((0, 1, 2)), 0, atol=1e-5) and np.allclose(batch.std((0, 1, 2)), 1, atol=1e-4)


def test_the_validation_subset_is_not_augmented(tree: Path) -> None:
    augmenting = ImageDataGenerator(rescale=1 / 255, rotation_range=90, horizontal_flip=True, zoom_range=0.5,
                                    brightness_range=(0.2, 0.4), validation_split=0.5)
    plain = ImageDataGenerator(rescale=1 / 255, validation_split=0.5)
    kwargs = dict(target_size=(4, 6), subset="validation", shuffle=False, batch_size=64)
    val, reference = (g.flow_from_directory(tree, **kwargs) for g in (augmenting, plain))
    assert np.array_equal(next(val)[0], next(reference)[0])
    train = augmenting.flow_from_directory(tree, **{**kwargs, "subset": "training"})
    assert next(train)[0].max() <= 0.4 + 1e-6  # brightness 0.2..0.4 of 200/255 at most: augmented


def test_engine_gets_keras_scale_raw_pixels_or_the_generator_rescale(tree: Path) -> None:
    raw = keras.utils.image_dataset_from_directory(tree, image_size=(4, 6), shuffle=False).engine_feed("fit").data
    assert raw.normalize(raw.images[:1]).max().item() == 200.0  # 0..255, as Keras feeds them
    rescaled = ImageDataGenerator(rescale=1 / 255).flow_from_directory(tree, target_size=(4, 6), shuffle=False)
    data = rescaled.engine_feed("fit").data
    assert data.normalize(data.images[:1]).max().item() == pytest.approx(200 / 255)


def test_preprocessing_function_gets_0_to_255_pixels_and_feeds_the_model_its_output(tree: Path) -> None:
    seen = []

    def preprocess_input(x: np.ndarray) -> np.ndarray:  # MobileNetV2's: [0, 255] -> [-1, 1]
        seen.append(x.shape)
        return x / 127.5 - 1

    it = ImageDataGenerator(preprocessing_function=preprocess_input).flow_from_directory(tree, target_size=(4, 6),
                                                                                      shuffle=False)
    data = it.engine_feed("fit").data
    assert torch.allclose(data.normalize(data.images[:2]), data.images[:2].float() / 127.5 - 1)
    assert seen == [(2, 4, 6, 3)]  # once per batch, channels-last

    def one_image_only(x: np.ndarray) -> np.ndarray:  # written for Keras's per-image call
        if x.ndim != 3:
            raise ValueError("one image please")
        return x * 0 + x.ndim

    batch, _ = next(ImageDataGenerator(preprocessing_function=one_image_only).flow_from_directory(
        tree, target_size=(4, 6), shuffle=False, batch_size=3))
    assert np.array_equal(batch, np.full((3, 4, 6, 3), 3.0))  # called image by image when it refuses a batch


@pytest.mark.filterwarnings("ignore:inputs go up to")  # raw 0..255 pixels on purpose: the two paths must agree
def test_predict_and_evaluate_on_a_dataset_equal_the_same_arrays(tree: Path) -> None:
    data = keras.utils.image_dataset_from_directory(tree, image_size=(4, 6), batch_size=5, shuffle=False)
    images, labels = (np.concatenate(part) for part in zip(*data, strict=True))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([layers.Flatten(input_shape=(4, 6, 3)), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert np.allclose(model.predict(data, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    assert np.allclose(model.evaluate(data, verbose=0), model.evaluate(images, labels, verbose=0), atol=1e-6)
    assert model.predict(data.take(2), verbose=0).shape == (10, 3)


def test_labels_are_checked_against_the_loss_and_generators_refused(tree: Path) -> None:
    model = keras.Sequential([layers.Flatten(input_shape=(4, 6, 3)), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    one_hot = keras.utils.image_dataset_from_directory(tree, image_size=(4, 6), label_mode="categorical", seed=1)
    with pytest.raises(CnnlabError, match="categorical_crossentropy"):
        model.fit(one_hot, epochs=1, verbose=0)
    with pytest.raises(CnnlabError, match="generator") as info:
        model.fit((np.zeros((2, 4, 6, 3)) for _ in range(3)), epochs=1, verbose=0)
    assert "\n" not in str(info.value)
    with pytest.raises(CnnlabError, match="y must not be given"):
        model.fit(one_hot, np.zeros(22), verbose=0)


def test_a_folder_too_big_for_memory_streams_the_same_batches(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = dict(image_size=(4, 6), batch_size=5, seed=9, validation_split=0.25, subset="training")
    in_memory = keras.utils.image_dataset_from_directory(tree, **kwargs)
    monkeypatch.setattr("cnnlab.data.folders.MEMORY_BUDGET_BYTES", 0)
    streamed = keras.utils.image_dataset_from_directory(tree, **kwargs)
    assert type(streamed.data).__name__ == "FolderDataset" and type(in_memory.data).__name__ == "ArrayDataset"
    assert streamed.file_paths == in_memory.file_paths
    for (a, y), (b, z) in zip(in_memory.take(2).shuffle(1, seed=1), streamed.take(2).shuffle(1, seed=1), strict=True):
        assert np.array_equal(a, b) and np.array_equal(y, z)
    model = keras.Sequential([layers.Flatten(input_shape=(4, 6, 3)), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert np.allclose(model.predict(streamed, verbose=0), model.predict(in_memory, verbose=0), atol=1e-6)
    history = model.fit(streamed, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1


def stripes(root: Path, count: int) -> Path:
    """Two classes a linear model cannot tell by brightness: horizontal vs vertical noisy stripes (16x16)."""
    rng = np.random.default_rng(0)
    for name, axis in (("horizontal", 0), ("vertical", 1)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            base = np.indices((16, 16))[axis] % 4 < 2
            pixels = np.clip(base * 160 + 40 + rng.normal(0, 25, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(np.roll(pixels, rng.integers(4), axis=axis)).convert("RGB").save(root / name / f"{i}.png")
    return root


def small_cnn(first: list) -> keras.Sequential:
    model = keras.Sequential([*first, layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(),
                              layers.Flatten(), layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def test_fit_on_a_folder_learns_with_rescaling_and_flip_layers(tmp_path: Path) -> None:
    root = stripes(tmp_path / "stripes", 40)
    keras.utils.set_random_seed(1)
    train, val = keras.utils.image_dataset_from_directory(root, image_size=(16, 16), batch_size=16, seed=3,
                                                          validation_split=0.25, subset="both")
    model = small_cnn([Rescaling(1 / 255, input_shape=(16, 16, 3)), RandomFlip("horizontal")])
    history = model.fit(train.cache().prefetch(buffer_size=-1), validation_data=val, epochs=8, verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.9, history.history
    assert len(history.history["loss"]) == 8


def test_fit_on_flow_from_directory_with_steps_learns(tmp_path: Path) -> None:
    root = stripes(tmp_path / "stripes", 40)
    keras.utils.set_random_seed(2)
    gen = ImageDataGenerator(rescale=1 / 255, horizontal_flip=True, width_shift_range=0.1, validation_split=0.25)
    train = gen.flow_from_directory(root, target_size=(16, 16), batch_size=10, class_mode="sparse", subset="training")
    val = gen.flow_from_directory(root, target_size=(16, 16), batch_size=10, class_mode="sparse",
                                  subset="validation")
    model = small_cnn([layers.InputLayer(shape=(16, 16, 3))])
    history = model.fit(train, steps_per_epoch=train.samples // 10, validation_data=val,
                        validation_steps=val.samples // 10, epochs=8, verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.9, history.history
    assert model.evaluate(val, verbose=0)[1] >= 0.9


@pytest.mark.skipif(not IMAGENETTE.exists(), reason=f"the Imagenette photos are not at {IMAGENETTE}")
def test_real_photos_decode_as_pillow_does_and_list_in_keras_order(tmp_path: Path) -> None:
    wanted = ("imagenette-224/val/church/", "imagenette-224/val/parachute/", "imagenette-224/val/tench/")
    with tarfile.open(IMAGENETTE) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.startswith(wanted)]
        picked = [m for folder in wanted for m in sorted((m for m in members if m.name.startswith(folder)),
                                                         key=lambda m: m.name)[:6]]
        archive.extractall(tmp_path, members=picked, filter="data")
    root = tmp_path / "imagenette-224" / "val"
    data = keras.utils.image_dataset_from_directory(root, image_size=(224, 224), batch_size=6, shuffle=False)
    assert data.class_names == ["church", "parachute", "tench"]
    images, labels = next(iter(data))
    first = sorted((root / "church").iterdir())[0]
    assert np.array_equal(images[0], np.asarray(Image.open(first).convert("RGB"), dtype=np.float32))
    assert labels.tolist() == [0] * 6
    it = ImageDataGenerator(rescale=1 / 255).flow_from_directory(root, target_size=(64, 64), batch_size=18)
    x, y = next(it)
    assert x.shape == (18, 64, 64, 3) and y.shape == (18, 3) and 0 <= x.min() and x.max() <= 1
    assert it.filenames[:2] == [f"church/{p.name}" for p in sorted((root / "church").iterdir())[:2]]
    assert torch.as_tensor(x).isfinite().all()
