"""Reference numbers from real tf.keras for tests/test_keras_image_data.py and tests/test_preprocessing_layers.py.

Run in the TensorFlow venv (never a cnnlab dependency):

    nice -n 19 benchmarks/.venv-tf/bin/python benchmarks/keras_image_data_reference.py

It builds a small folder tree (described in the JSON, so the tests rebuild the same one), asks Keras 3 for
`image_dataset_from_directory`'s file order and split, `flow_from_directory`'s file lists, an
ImageDataGenerator's featurewise statistics, and the outputs of the preprocessing layers at fixed
(degenerate) random ranges, and writes tests/data/keras_image_data_reference.json.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
# Keras 3.15 keeps ImageDataGenerator (removed from its public API) as legacy code; the tutorials' programs use it.
from keras.src.legacy.preprocessing.image import ImageDataGenerator  # noqa: E402  # writes the PNGs: this venv has no Pillow (flow_from_directory only lists here)

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "keras_image_data_reference.json"

# (relative path, grey level): class folders created out of order, a nested folder, names that sort oddly
TREE = [(f"dogs/{i:02d}.png", 10 * i) for i in range(5)] + [("dogs/extra/z.png", 60), ("dogs/b0.png", 70)] + \
       [(f"cats/{i:02d}.png", 100 + 10 * i) for i in range(7)] + [(f"birds/{i}.png", 200 + i) for i in range(8)]


def build_tree(root: Path) -> None:
    for relative, level in TREE:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tf.io.encode_png(np.full((4, 6, 3), level, np.uint8)).numpy())


def relative(paths: list[str], root: Path) -> list[str]:
    return [Path(p).resolve().relative_to(root.resolve()).as_posix() for p in paths]


def directory_dataset(root: Path) -> dict:
    out: dict = {}
    train, val = keras.utils.image_dataset_from_directory(root, image_size=(4, 6), batch_size=4, seed=123,
                                                          validation_split=0.25, subset="both")
    out["class_names"] = train.class_names
    out["training"] = relative(train.file_paths, root)
    out["validation"] = relative(val.file_paths, root)
    out["validation_labels"] = np.concatenate([y.numpy() for _, y in val]).tolist()
    ordered = keras.utils.image_dataset_from_directory(root, image_size=(4, 6), batch_size=4, shuffle=False)
    out["unshuffled"] = relative(ordered.file_paths, root)
    out["unshuffled_labels"] = np.concatenate([y.numpy() for _, y in ordered]).tolist()
    return out


def directory_iterator(root: Path) -> dict:
    gen = ImageDataGenerator(validation_split=0.25)
    out: dict = {}
    for subset in (None, "training", "validation"):
        it = gen.flow_from_directory(root, target_size=(4, 6), subset=subset, shuffle=False)
        out[str(subset)] = {"filenames": it.filenames, "classes": it.classes.tolist(),
                            "class_indices": it.class_indices}
    return out


def featurewise() -> dict:
    x = np.arange(2 * 3 * 2 * 3, dtype="float32").reshape(2, 3, 2, 3) * 7 % 255
    gen = ImageDataGenerator(rescale=1 / 255, featurewise_center=True,
                                                       featurewise_std_normalization=True)
    gen.fit(x)
    return {"x": x.tolist(), "mean": gen.mean.ravel().tolist(), "std": gen.std.ravel().tolist(),
            "standardized": gen.standardize(x[0].copy()).tolist()}


def layers() -> dict:
    image = (np.arange(7 * 9 * 2, dtype="float32").reshape(1, 7, 9, 2) * 3) % 255  # (N, H, W, C), channels-last
    cases = {
        "rotation_0.1_reflect": keras.layers.RandomRotation((0.1, 0.1), fill_mode="reflect"),
        "rotation_-0.05_constant": keras.layers.RandomRotation((-0.05, -0.05), fill_mode="constant", fill_value=3.0),
        "zoom_0.3_reflect": keras.layers.RandomZoom((0.3, 0.3), fill_mode="reflect"),
        "zoom_-0.2_0.25_nearest": keras.layers.RandomZoom((-0.2, -0.2), (0.25, 0.25), fill_mode="nearest"),
        "translation_0.2_-0.1_constant": keras.layers.RandomTranslation((0.2, 0.2), (-0.1, -0.1),
                                                                        fill_mode="constant", fill_value=5.0),
        "resizing_4x5": keras.layers.Resizing(4, 5),
        "resizing_4x4_crop": keras.layers.Resizing(4, 4, crop_to_aspect_ratio=True),
        "center_crop_3x5": keras.layers.CenterCrop(3, 5),
    }
    out = {"input": image.tolist()}
    for name, layer in cases.items():
        out[name] = np.asarray(layer(image, training=True)).tolist()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "tree"
        build_tree(root)
        result = {"keras": keras.__version__, "tree": TREE, "image_dataset_from_directory": directory_dataset(root),
                  "flow_from_directory": directory_iterator(root), "featurewise": featurewise(), "layers": layers()}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
