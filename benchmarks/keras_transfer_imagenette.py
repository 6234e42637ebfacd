"""Transfer learning the tutorials' way on real photos: Keras's MobileNetV2 with ImageNet weights, frozen,
GlobalAveragePooling2D + Dense(10), trained with cnnlab.keras on Imagenette (10 ImageNet classes, 3,000
train photos, 500 val photos at 224x224; ../shared/datasets/imagenette-224).

    .venv/bin/python benchmarks/keras_transfer_imagenette.py [--epochs 3]

The weights are ../shared/weights/mobilenet_v2-imagenet.safetensors (torchvision's layout, loaded into
Keras's architecture with TensorFlow's padding). Prints the val accuracy after each epoch and the time;
docs/results.md records the run. The val split is reported once, at the end (no tuning on it).
"""

from __future__ import annotations

import argparse
import io
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab import keras
from cnnlab.keras import layers
from cnnlab.keras.applications import MobileNetV2, mobilenet_v2

SHARED = Path(__file__).resolve().parents[2] / "shared"
ARCHIVE = SHARED / "datasets" / "imagenette-224" / "imagenette-224.tar.gz"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-imagenet.safetensors"


def read_split(split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, names = [], []
    with tarfile.open(ARCHIVE) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] == split:
                data = archive.extractfile(member).read()  # type: ignore[union-attr]
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224))))
                names.append(parts[2])
    classes = sorted(set(names))
    return np.stack(images), np.array([classes.index(n) for n in names]), classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    x_train, y_train, classes = read_split("train")
    x_val, y_val, _ = read_split("val")
    base = MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=str(WEIGHTS))
    base.trainable = False
    inputs = keras.Input(shape=(224, 224, 3))
    x = base(inputs, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    model = keras.Model(inputs, layers.Dense(len(classes), activation="softmax")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(mobilenet_v2.preprocess_input(x_train), y_train, epochs=args.epochs, batch_size=32, verbose=2)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(mobilenet_v2.preprocess_input(x_val), y_val, verbose=0)
    print(f"val accuracy {accuracy:.4f} (loss {loss:.4f}) after {args.epochs} epochs; fit {seconds:.0f} s")


if __name__ == "__main__":
    main()
