"""Same engine, same speed: seed 000's CNN trained for one Fashion-MNIST epoch through cnnlab.keras
(`model.fit(x, y)` on NHWC float arrays) and through cnnlab's own API (`cnnlab.fit` on the uint8 dataset),
alternating, in one process, so the ratio shows only what the Keras front end adds (the goal: within 5%).

    .venv/bin/python benchmarks/keras_overhead.py [--repeats 3] [--out benchmarks/results/keras-overhead.json]

Both use the runtime's automatic choices (precision, channels-last, fused Adam); batch 32, no validation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import cnnlab
import report
from cnnlab import keras
from cnnlab.keras import layers, models

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def keras_model() -> models.Sequential:
    return models.Sequential([
        layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax")])


def time_keras(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    keras.utils.set_random_seed(seed)
    model = keras_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x, y, epochs=1, verbose=0, seed=seed)
    return time.perf_counter() - start, history.history["accuracy"][-1]


def time_cnnlab(train: cnnlab.ArrayDataset, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = cnnlab.build_model("seed-mnist")
    start = time.perf_counter()
    history = cnnlab.fit(model, train, epochs=1, verbose=0, seed=seed)
    return time.perf_counter() - start, history.history["accuracy"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "keras-overhead.json")
    args = parser.parse_args()
    machine = report.machine(thread_policy="one process, both front ends at cnnlab fit's default")
    train = cnnlab.load_dataset("fashion-mnist", data_dir=SHARED, download=False)
    x = (train.images.permute(0, 2, 3, 1).numpy() / 255.0).astype("float32")  # as the tutorial hands it over
    y = train.labels.numpy()
    runs = []
    for seed in range(args.repeats):
        for front_end in (("keras", "cnnlab") if seed % 2 == 0 else ("cnnlab", "keras")):
            seconds, accuracy = time_keras(x, y, seed) if front_end == "keras" else time_cnnlab(train, seed)
            runs.append({"front_end": front_end, "seed": seed, "fit_seconds": seconds, "train_accuracy": accuracy})
            print(runs[-1], flush=True)
    medians = {f: float(np.median([r["fit_seconds"] for r in runs if r["front_end"] == f]))
               for f in ("keras", "cnnlab")}
    result = {"machine": machine, "runs": runs, "median_fit_seconds": medians,
              "keras_over_cnnlab": medians["keras"] / medians["cnnlab"]}
    report.write_json(args.out, result)
    print(f"median fit: cnnlab.keras {medians['keras']:.2f} s, cnnlab.fit {medians['cnnlab']:.2f} s, "
          f"ratio {result['keras_over_cnnlab']:.3f}")


if __name__ == "__main__":
    main()
