"""Seed 004: the tutorial's CIFAR-10 CNN (2 conv + 2 max-pool, Dense 64, logits) on real CIFAR-10 pixels.

Trained as the seed trains it: adam, batch 32, 10 epochs, validation_data = the test set; then the
seed's accuracy plot (train vs validation per epoch) is written as a PNG. The data are the 60,000
real CIFAR-10 images re-encoded as JPEG quality 75, "CIFAR-10 (JPEG q75)": lossy, so expect a
little less than the tutorial's ~70% test accuracy on the original pixels.

    CNNLAB_DATA=/tmp/cnnlab-data python examples/seed004_cifar10_cnn.py [--seeds 3] [--small] [--out DIR]

The same with the CLI (it also writes the curves into the run directory):
    cnnlab train --dataset ../shared/datasets/cifar10-jpg/cifar10-jpg.tar.gz --model seed-cifar10 --epochs 10

The archive is extracted once into the data directory (`--data-dir`, else $CNNLAB_DATA, else the
user cache); the first run spends 20-35 s on that. `--small` trains 5 epochs on 500 images and tests
on 200 so CI can run this file in seconds. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import cnnlab
from cnnlab.viz import plot_history

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpg" / "cifar10-jpg.tar.gz"
DATA_NAME = "CIFAR-10 (JPEG q75)"
FULL_EPOCHS, SMALL_EPOCHS = 10, 5           # seed 004 trains 10 epochs; 2 on 500 images flaked near chance
SMALL_TRAIN, SMALL_TEST = 500, 200          # images in --small mode
FULL_MIN_ACCURACY = 0.60                    # the tutorial reports ~70% after 10 epochs; JPEG costs a little
SMALL_MIN_ACCURACY = 0.15                   # chance is 0.10; --small seeds 0-9 measured 0.245-0.335


def load_cifar10(archive: Path, data_dir: str | None, small: bool) -> tuple[cnnlab.ArrayDataset, cnnlab.ArrayDataset]:
    """Train and test sets, each shuffled once: the folder lists images class by class."""
    train = cnnlab.load_dataset(archive, split="train", data_dir=data_dir)
    test = cnnlab.load_dataset(archive, split="test", data_dir=data_dir)
    rng = np.random.default_rng(0)
    train_order, test_order = rng.permutation(len(train)), rng.permutation(len(test))
    if small:
        train_order, test_order = train_order[:SMALL_TRAIN], test_order[:SMALL_TEST]
    return train.subset(train_order.tolist()), test.subset(test_order.tolist())


def run(train: cnnlab.ArrayDataset, test: cnnlab.ArrayDataset, epochs: int, seed: int,
        out: Path) -> dict[str, float | int | str]:
    torch.manual_seed(seed)
    model = cnnlab.build_model("seed-cifar10", train.input_shape, train.num_classes)
    start = time.perf_counter()
    history = cnnlab.fit(model, train, epochs=epochs, validation_data=test, seed=seed, verbose=0)
    seconds = time.perf_counter() - start
    metrics = cnnlab.evaluate(model, test)
    plot = plot_history(history.history, out / f"seed004_accuracy_seed{seed}.png",
                        title=f"seed 004 CNN on {DATA_NAME}, seed {seed}")
    return {"data": DATA_NAME, "model": "seed-cifar10", "seed": seed, "train_images": len(train),
            "test_images": len(test), "epochs": epochs, "train_seconds": round(seconds, 2),
            "val_accuracy": round(history.history["val_accuracy"][-1], 4),
            "test_accuracy": round(metrics["accuracy"], 4), "plot": str(plot)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help="cifar10-jpg.tar.gz (default ../shared/datasets)")
    parser.add_argument("--data-dir", help="where the archive is extracted once (default $CNNLAB_DATA)")
    parser.add_argument("--out", type=Path, help="folder for the accuracy plots (default a new temporary folder)")
    parser.add_argument("--epochs", type=int, help=f"default {FULL_EPOCHS} ({SMALL_EPOCHS} with --small)")
    parser.add_argument("--seeds", type=int, default=1, help="runs with seeds 0..N-1")
    parser.add_argument("--small", action="store_true", help=f"{SMALL_TRAIN} train / {SMALL_TEST} test images (for CI)")
    args = parser.parse_args()
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        parser.error(f"--seeds and --epochs must be at least 1; got --seeds {args.seeds} --epochs {args.epochs}")
    if not args.archive.is_file():
        raise SystemExit(f"{args.archive} not found; pass --archive path/to/cifar10-jpg.tar.gz")
    out = args.out or Path(tempfile.mkdtemp(prefix="seed004-"))
    out.mkdir(parents=True, exist_ok=True)
    epochs = args.epochs or (SMALL_EPOCHS if args.small else FULL_EPOCHS)
    train, test = load_cifar10(args.archive, args.data_dir, args.small)
    accuracies = []
    for seed in range(args.seeds):
        result = run(train, test, epochs, seed, out)
        accuracies.append(float(result["test_accuracy"]))
        print(json.dumps(result), flush=True)
    threshold = SMALL_MIN_ACCURACY if args.small else FULL_MIN_ACCURACY
    if args.epochs is None and min(accuracies) <= threshold:  # a chosen epoch count has no agreed level
        raise SystemExit(f"seed 004 on {DATA_NAME}: test accuracy {min(accuracies):.4f} is not above "
                         f"{threshold}; all runs: {accuracies}")


if __name__ == "__main__":
    main()
