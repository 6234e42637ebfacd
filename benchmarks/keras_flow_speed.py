"""flow_from_directory + fit throughput: the same Keras program on cnnlab.keras and on Keras itself.

    .venv/bin/python benchmarks/keras_flow_speed.py --side cnnlab
    benchmarks/.venv-tf/bin/python benchmarks/keras_flow_speed.py --side keras   # needs pillow and scipy there

The program is seed 003's: an ImageDataGenerator (rescale 1/255, rotation 20, shifts 0.2, horizontal
flip, zoom 0.2, shear 0.15, fill 'nearest') over a folder of class subfolders, a small CNN, batch 32.
The folder is the first `--per-class` train photos of `--classes` Imagenette classes (224x224 JPEGs,
../shared/datasets/imagenette-224), extracted once into a temporary folder. Epoch 1 decodes (into
cnnlab's cache); the images/s of the later epochs are what a training run sees. Keras augments image
by image in Python (scipy.ndimage per image); cnnlab augments whole batches with one grid_sample call.
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "imagenette-224" / "imagenette-224.tar.gz"


def extract(folder: Path, classes: int, per_class: int) -> Path:
    """The first `per_class` train photos of the first `classes` classes (sorted), as train/<class>/*.JPEG."""
    with tarfile.open(ARCHIVE) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile() and "/train/" in m.name),
                         key=lambda m: m.name)
        names = sorted({m.name.split("/")[2] for m in members})[:classes]
        picked = [m for name in names for m in [m for m in members if m.name.split("/")[2] == name][:per_class]]
        archive.extractall(folder, members=picked, filter="data")
    return folder / "imagenette-224" / "train"


def run(side: str, root: Path, size: int, epochs: int, batch: int) -> dict:
    if side == "cnnlab":
        from cnnlab import keras
        from cnnlab.keras.preprocessing.image import ImageDataGenerator
    else:
        import keras  # type: ignore[no-redef]
        from keras.src.legacy.preprocessing.image import ImageDataGenerator  # type: ignore[no-redef]
    layers = keras.layers
    generator = ImageDataGenerator(rescale=1 / 255, rotation_range=20, width_shift_range=0.2, height_shift_range=0.2,
                                   horizontal_flip=True, zoom_range=0.2, shear_range=0.15, fill_mode="nearest")
    flow = generator.flow_from_directory(str(root), target_size=(size, size), batch_size=batch, class_mode="sparse",
                                         seed=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([layers.Input(shape=(size, size, 3)), layers.Conv2D(16, 3, strides=2, activation="relu"),
                              layers.MaxPooling2D(), layers.Conv2D(32, 3, activation="relu"),
                              layers.GlobalAveragePooling2D(), layers.Dense(flow.num_classes, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(flow, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - start)
    later = seconds[1:] or seconds
    return {"side": side, "images": flow.samples, "size": size, "batch": batch, "epoch_seconds": seconds,
            "images_per_second": flow.samples * len(later) / sum(later)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", choices=("cnnlab", "keras"), required=True)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--size", type=int, default=160, help="target_size (pixels a side)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        os.environ["CNNLAB_DATA"] = str(Path(folder) / "cnnlab-data")  # the decoded cache goes with the folder
        root = extract(Path(folder), args.classes, args.per_class)
        print(json.dumps(run(args.side, root, args.size, args.epochs, args.batch)))


if __name__ == "__main__":
    main()
