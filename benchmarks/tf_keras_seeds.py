"""The seed programs exactly as the tutorials write them in tf.keras, timed (the reference side).

Runs in the TensorFlow benchmark environment (benchmarks/setup_tf.sh), never in cnnlab's: it
imports nothing from cnnlab. Prints one JSON line: the program, fit's wall time, test accuracy.

    benchmarks/.venv-tf/bin/python benchmarks/tf_keras_seeds.py mnist-cnn --data-dir ../shared/datasets
    benchmarks/.venv-tf/bin/python benchmarks/tf_keras_seeds.py cifar-real --arrays benchmarks/.arrays/cifar-real.npz
    benchmarks/.venv-tf/bin/python benchmarks/tf_keras_seeds.py cifar-bn --arrays benchmarks/.arrays/cifar-real.npz

The *-real programs and cifar-bn read the uint8 arrays that benchmarks/real_arrays.py writes (the same
pixels cnnlab trains on).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the JSON line
import tensorflow as tf  # noqa: E402  (the environment variable must be set first)
from tensorflow.keras import layers, models  # noqa: E402

CIFAR_SHAPE = (32, 32, 3)  # seed 004's input
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # CIFAR-10's split sizes, for the synthetic stand-in


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format, gzipped or not) as a numpy array."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(data_dir: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST from its four IDX files, in keras.datasets' (x, y) layout."""
    folder = data_dir / "fashion-mnist"
    def part(name: str) -> np.ndarray:
        return read_idx(next(folder.glob(f"{name}*")))
    return ((part("train-images-idx3-ubyte"), part("train-labels-idx1-ubyte")),
            (part("t10k-images-idx3-ubyte"), part("t10k-labels-idx1-ubyte")))


def load_arrays(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((x_train, y_train), (x_test, y_test)) from a real_arrays.py file, as keras.datasets gives them."""
    with np.load(path) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


def mnist_cnn(data_dir: Path, arrays: Path | None = None) -> dict:
    """Seed 000: the MNIST CNN, 1 epoch, validation_split 0.1 (Fashion-MNIST, or the real-MNIST arrays)."""
    if arrays is None:
        (train_images, train_labels), (test_images, test_labels) = fashion_mnist(data_dir)
    else:
        (train_images, train_labels), (test_images, test_labels) = load_arrays(arrays)
    train_images = train_images / 255.0
    test_images = test_images / 255.0
    train_images = train_images[..., tf.newaxis]
    test_images = test_images[..., tf.newaxis]
    model = models.Sequential([
        layers.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(train_images, train_labels, epochs=1, validation_split=0.1, verbose=0)
    seconds = time.perf_counter() - start
    _, test_acc = model.evaluate(test_images, test_labels, verbose=0)
    return {"fit_seconds": seconds, "test_accuracy": float(test_acc),
            "data": "fashion-mnist" if arrays is None else arrays.stem}


def cifar_cnn(data_dir: Path, seed: int, arrays: Path | None = None, epochs: int = 1) -> dict:
    """Seed 004: the CIFAR-10 CNN with logits, validated on the test set (the tutorial trains 10 epochs);
    on CIFAR-shaped random data (speed only) or on the real CIFAR-10 JPEG arrays."""
    if arrays is None:
        rng = np.random.default_rng(seed)
        train_images = rng.integers(0, 256, (CIFAR_TRAIN, *CIFAR_SHAPE), dtype=np.uint8)
        test_images = rng.integers(0, 256, (CIFAR_TEST, *CIFAR_SHAPE), dtype=np.uint8)
        train_labels = rng.integers(0, 10, (CIFAR_TRAIN, 1))
        test_labels = rng.integers(0, 10, (CIFAR_TEST, 1))
    else:
        (train_images, train_labels), (test_images, test_labels) = load_arrays(arrays)
    train_images, test_images = train_images / 255.0, test_images / 255.0
    model = models.Sequential()
    model.add(layers.Input(shape=CIFAR_SHAPE))
    model.add(layers.Conv2D(32, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(10))
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(train_images, train_labels, epochs=epochs, validation_data=(test_images, test_labels), verbose=0)
    seconds = time.perf_counter() - start
    if arrays is None:
        return {"fit_seconds": seconds, "test_accuracy": None, "data": "synthetic CIFAR-shaped"}
    _, test_acc = model.evaluate(test_images, test_labels, verbose=0)
    return {"fit_seconds": seconds, "test_accuracy": float(test_acc), "data": arrays.stem, "epochs": epochs}


def cifar_bn(arrays: Path, max_epochs: int = 100) -> dict:
    """Seed 003: the BatchNorm CIFAR-10 CNN as the tutorial writes it (batch 64, validation_split 0.1,
    up to 100 epochs, EarlyStopping(val_loss, 10, restore best), ReduceLROnPlateau(val_loss, 0.5, 5, 1e-6))."""
    (train_images, train_labels), (test_images, test_labels) = load_arrays(arrays)
    train_images, test_images = train_images.astype("float32") / 255.0, test_images.astype("float32") / 255.0
    def block(filters: int) -> list:
        return [layers.Conv2D(filters, (3, 3), activation="relu", padding="same"), layers.BatchNormalization(),
                layers.Conv2D(filters, (3, 3), activation="relu", padding="same"), layers.BatchNormalization(),
                layers.MaxPooling2D((2, 2)), layers.Dropout(0.25)]
    model = models.Sequential([layers.Input(shape=CIFAR_SHAPE), *block(32), *block(64), *block(128),
                               layers.Flatten(), layers.Dense(256, activation="relu"), layers.BatchNormalization(),
                               layers.Dropout(0.5), layers.Dense(10, activation="softmax")])
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=0.001), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    callbacks = [tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True),
                 tf.keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=5, min_lr=1e-6)]
    start = time.perf_counter()
    history = model.fit(train_images, train_labels, epochs=max_epochs, batch_size=64, validation_split=0.1,
                        callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - start
    _, test_acc = model.evaluate(test_images, test_labels, verbose=0)
    val_loss = history.history["val_loss"]
    return {"fit_seconds": seconds, "test_accuracy": float(test_acc), "data": arrays.stem,
            "parameters": int(model.count_params()), "epochs": len(val_loss),
            "best_epoch": int(np.argmin(val_loss)) + 1, "final_lr": float(model.optimizer.learning_rate.numpy())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("program", choices=["mnist-cnn", "cifar-cnn", "mnist-real", "cifar-real", "cifar-bn"])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--arrays", type=Path, help="the *-real programs: the .npz that real_arrays.py wrote")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    needs_arrays = args.program.endswith("-real") or args.program == "cifar-bn"
    if needs_arrays and (args.arrays is None or not args.arrays.is_file()):
        parser.error(f"{args.program} needs --arrays FILE.npz (made by benchmarks/real_arrays.py); got {args.arrays}")
    tf.keras.utils.set_random_seed(args.seed)
    if args.program == "mnist-cnn":
        result = mnist_cnn(args.data_dir)
    elif args.program == "mnist-real":
        result = mnist_cnn(args.data_dir, args.arrays)
    elif args.program == "cifar-cnn":
        result = cifar_cnn(args.data_dir, args.seed)
    elif args.program == "cifar-bn":  # seed 003 as written: to its early stop
        result = cifar_bn(args.arrays)
    else:  # seed 004 as written: 10 epochs
        result = cifar_cnn(args.data_dir, args.seed, args.arrays, epochs=10)
    print(json.dumps({"framework": "tf.keras", "version": tf.__version__, "program": args.program,
                      "recipe": "seed", "seed": args.seed, **result}))


if __name__ == "__main__":
    main()
