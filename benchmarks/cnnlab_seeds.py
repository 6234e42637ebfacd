"""The seed programs with cnnlab, timed the same way as tf_keras_seeds.py (the cnnlab side).

Recipes: "seed" is the tutorial's (same model, 1 epoch, batch 32, adam 1e-3, the same split);
"fast" is cnnlab's fast CPU recipe (see cnnlab.recipes). Prints one JSON line.

    .venv/bin/python benchmarks/cnnlab_seeds.py mnist-cnn --recipe seed --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import cnnlab
from cnnlab.data import ArrayDataset, load_dataset
from cnnlab.models.zoo import build_model
from cnnlab.recipes import RECIPES
from cnnlab.training import evaluate, fit
from cnnlab.training.devices import resolve_runtime

CIFAR_SHAPE = (3, 32, 32)  # seed 004's input, channels first
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # CIFAR-10's split sizes, for the synthetic stand-in


def synthetic_cifar(seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Random uint8 images and labels of CIFAR-10's shape and size (speed only: nothing to learn)."""
    g = torch.Generator().manual_seed(seed)
    def make(n: int) -> ArrayDataset:
        images = torch.randint(0, 256, (n, *CIFAR_SHAPE), generator=g, dtype=torch.uint8)
        return ArrayDataset(images, torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)])
    return make(CIFAR_TRAIN), make(CIFAR_TEST)


def run(program: str, recipe: str, data_dir: str, seed: int, precision: str) -> dict:
    torch.manual_seed(seed)
    if program == "mnist-cnn":
        train = load_dataset("fashion-mnist", data_dir=data_dir, download=False)
        test = load_dataset("fashion-mnist", split="test", data_dir=data_dir, download=False)
        model_name, data = "seed-mnist", "fashion-mnist"
    else:
        train, test = synthetic_cifar(seed)
        model_name, data = "seed-cifar10", "synthetic CIFAR-shaped"
    settings = RECIPES.get(recipe)
    model = build_model(settings.model or model_name, train.input_shape, train.num_classes)
    runtime = resolve_runtime(precision=precision)
    validation = dict(validation_data=test) if program == "cifar-cnn" else dict(validation_split=0.1)
    start = time.perf_counter()
    fit(model, train, epochs=settings.epochs, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        schedule=settings.schedule, label_smoothing=settings.label_smoothing, seed=seed, verbose=0,
        runtime=runtime, **validation)
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, test)["accuracy"] if program == "mnist-cnn" else None
    return {"fit_seconds": seconds, "test_accuracy": accuracy, "data": data, "model": settings.model or model_name,
            "precision": runtime.precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("program", choices=["mnist-cnn", "cifar-cnn"])
    parser.add_argument("--recipe", choices=sorted(RECIPES.names()), default="seed")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args.program, args.recipe, str(args.data_dir / "fashion-mnist"), args.seed, args.precision)
    print(json.dumps({"framework": "cnnlab", "version": cnnlab.__version__, "torch": torch.__version__,
                      "program": args.program, "recipe": args.recipe, "seed": args.seed, **result}))


if __name__ == "__main__":
    main()
