"""The seed programs with cnnlab, timed the same way as tf_keras_seeds.py (the cnnlab side).

Recipes: "seed" is the tutorial's (same model, 1 epoch, batch 32, adam 1e-3, the same split);
"fast" is cnnlab's fast CPU recipe (see cnnlab.recipes). Prints one JSON line.

    .venv/bin/python benchmarks/cnnlab_seeds.py mnist-cnn --recipe seed --data-dir ../shared/datasets
    .venv/bin/python benchmarks/cnnlab_seeds.py cifar-real --recipe seed     # seed 004 on CIFAR-10 JPEG, 10 epochs
    .venv/bin/python benchmarks/cnnlab_seeds.py cifar-bn     # seed 003's BatchNorm CNN to its early stop

The *-real programs train on the uint8 arrays of benchmarks/real_arrays.py, the same pixels as the tf.keras side.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import cnnlab
import real_arrays
from cnnlab.data import ArrayDataset, load_dataset
from cnnlab.models.zoo import build_model
from cnnlab.recipes import RECIPES
from cnnlab.training import evaluate, fit
from cnnlab.training.devices import resolve_runtime

CIFAR_SHAPE = (3, 32, 32)  # seed 004's input, channels first
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # CIFAR-10's split sizes, for the synthetic stand-in
REAL_EPOCHS = {"mnist-real": 1, "cifar-real": 10}  # the seed recipe's epochs: seed 000/001 train 1, seed 004 trains 10


def synthetic_cifar(seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Random uint8 images and labels of CIFAR-10's shape and size (speed only: nothing to learn)."""
    g = torch.Generator().manual_seed(seed)
    def make(n: int) -> ArrayDataset:
        images = torch.randint(0, 256, (n, *CIFAR_SHAPE), generator=g, dtype=torch.uint8)
        return ArrayDataset(images, torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)])
    return make(CIFAR_TRAIN), make(CIFAR_TEST)


def real(program: str, data_dir: Path) -> tuple[ArrayDataset, ArrayDataset]:
    """The real-data arrays shared with the tf.keras side (built by real_arrays.py on first use)."""
    (x_train, y_train), (x_test, y_test) = real_arrays.load(real_arrays.path_of(program, data_dir))
    names = [str(i) for i in range(int(np.max(y_train)) + 1)]
    return ArrayDataset.from_arrays(x_train, y_train, names), ArrayDataset.from_arrays(x_test, y_test, names)


def run(program: str, recipe: str, data_dir: Path, seed: int, precision: str, threads: str = "auto") -> dict:
    torch.manual_seed(seed)
    if program == "mnist-cnn":
        train = load_dataset("fashion-mnist", data_dir=str(data_dir / "fashion-mnist"), download=False)
        test = load_dataset("fashion-mnist", split="test", data_dir=str(data_dir / "fashion-mnist"), download=False)
        model_name, data = "seed-mnist", "fashion-mnist"
    elif program in REAL_EPOCHS:
        train, test = real(program, data_dir)
        model_name, data = ("seed-mnist" if program == "mnist-real" else "seed-cifar10"), program
    else:
        train, test = synthetic_cifar(seed)
        model_name, data = "seed-cifar10", "synthetic CIFAR-shaped"
    settings = RECIPES.get(recipe)
    model = build_model(settings.model or model_name, train.input_shape, train.num_classes)
    runtime = resolve_runtime(precision=precision, threads=threads)
    validation = dict(validation_data=test) if program.startswith("cifar") else dict(validation_split=0.1)
    epochs = REAL_EPOCHS[program] if program in REAL_EPOCHS and recipe == "seed" else settings.epochs
    start = time.perf_counter()
    history = fit(model, train, epochs=epochs, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                  schedule=settings.schedule, label_smoothing=settings.label_smoothing, seed=seed, verbose=0,
                  runtime=runtime, **validation)
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, test)["accuracy"] if program != "cifar-cnn" else None
    return {"fit_seconds": seconds, "test_accuracy": accuracy, "data": data, "model": settings.model or model_name,
            "precision": runtime.precision, "epochs": epochs, "threads": history.threads}


def cifar_bn(data_dir: Path, seed: int, precision: str, max_epochs: int = 100) -> dict:
    """Seed 003: the BatchNorm CIFAR-10 CNN as the tutorial trains it (batch 64, validation_split 0.1,
    up to 100 epochs, EarlyStopping(val_loss, 10, restore best), ReduceLROnPlateau(val_loss, 0.5, 5, 1e-6))."""
    torch.manual_seed(seed)
    train, test = real("cifar-real", data_dir)
    model = build_model("seed-cifar10-bn", train.input_shape, train.num_classes)
    runtime = resolve_runtime(precision=precision)
    early_stopping = cnnlab.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
    callbacks = [early_stopping, cnnlab.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=5, min_lr=1e-6)]
    start = time.perf_counter()
    history = fit(model, train, epochs=max_epochs, batch_size=64, learning_rate=1e-3, validation_split=0.1,
                  callbacks=callbacks, seed=seed, verbose=0, runtime=runtime)
    seconds = time.perf_counter() - start
    return {"fit_seconds": seconds, "test_accuracy": evaluate(model, test)["accuracy"], "data": "cifar-real",
            "model": "seed-cifar10-bn", "precision": runtime.precision, "epochs": len(history.history["loss"]),
            "best_epoch": early_stopping.best_epoch + 1, "final_lr": history.history["lr"][-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("program", choices=["mnist-cnn", "cifar-cnn", *REAL_EPOCHS, "cifar-bn"])
    parser.add_argument("--recipe", choices=sorted(RECIPES.names()), default="seed")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", default="auto", help="CPU threads: auto (measured) or a fixed count")
    args = parser.parse_args()
    if args.program == "cifar-bn":  # seed 003 as written; the recipe does not apply
        result = cifar_bn(args.data_dir, args.seed, args.precision)
    else:
        result = run(args.program, args.recipe, args.data_dir, args.seed, args.precision, args.threads)
    print(json.dumps({"framework": "cnnlab", "version": cnnlab.__version__, "torch": torch.__version__,
                      "program": args.program, "recipe": args.recipe, "seed": args.seed, **result}))


if __name__ == "__main__":
    main()
