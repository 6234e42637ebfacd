"""Transfer learning with a frozen backbone: features computed once against the backbone run every epoch.

Whole `cnnlab train` processes on an image folder, side by side in one sitting, as a user runs them
(issue 23's targets): EfficientNet-Lite0 with its offline ImageNet weights, frozen, a new head.

  * today's path (`--feature-cache off`): 1 and 10 head epochs;
  * features once: 1 and 10 head epochs with an empty feature store (the first run on a folder),
    then 10 epochs again (the second run: its features, test images included, read from the store),
    and 10 epochs with `--head-init random` (the new head starting at random, as before it could start
    from the ImageNet classifier's rows for classes ImageNet names).

Every run reads the folder's decoded images from the data folder's cache (one warm-up load first),
so the rows differ in the backbone's work only. Then the test scoring speed: images per second of
`score` (the run's precision, BatchNorm folded, no feature store) against a training epoch of
today's path (images per second of its first epoch), on the same test images.

    .venv/bin/python benchmarks/transfer_features.py /tmp/imagenette-test-as-val \\
        --json benchmarks/results/transfer-features.json

The folder needs train/ and test/ (the Imagenette subset of ../shared/datasets/imagenette-224:
train/ as it is, its val/ as test/).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from report import machine, write_json

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--model", "efficientnet_lite0", "--pretrained", "--freeze"]


def train(folder: Path, data_dir: Path, runs: Path, epochs: int, cache: str, name: str, seed: int,
          extra: tuple[str, ...] = ()) -> dict:
    """One whole `cnnlab train` process: its wall time and what its run directory recorded."""
    run_dir = runs / name
    command = [sys.executable, "-m", "cnnlab", "train", str(folder), *MODEL, "--epochs", str(epochs),
               "--feature-cache", cache, "--data-dir", str(data_dir), "--run-dir", str(run_dir), "--seed",
               str(seed), "--quiet", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    row = {"name": name, "epochs": epochs, "feature_cache": cache, "whole_seconds": round(seconds, 2),
           "train_seconds": round(metrics["train_seconds"], 2), "test_accuracy": metrics.get("test_accuracy"),
           "test_loss": metrics.get("test_loss"), "val_accuracy": metrics.get("val_accuracy"),
           "epoch_seconds": [round(s, 3) for s in history["epoch_seconds"]], "features": history.get("features"),
           "scoring": metrics.get("scoring"), "train_size": config["train_size"], "test_size": config["test_size"],
           "head_start": config.get("head_start", "random"),
           "command": "cnnlab " + " ".join(command[3:]), "printed": done.stdout.strip().splitlines()}
    print(f"{name:28s} whole {seconds:6.1f} s  train {metrics['train_seconds']:6.1f} s  "
          f"test {metrics.get('test_accuracy', float('nan')):.4f}", flush=True)
    return row


def scoring_speed(run_dir: Path, folder: Path, data_dir: Path) -> dict:
    """Test images per second of `score` without the feature store (every image through the whole network)."""
    from cnnlab.data import load_dataset
    from cnnlab.models.files import load_model
    from cnnlab.training.devices import resolve_runtime
    from cnnlab.training.scoring import score

    model, card = load_model(run_dir)
    h, w, _ = card.input_shape
    test = load_dataset(str(folder), split="test", data_dir=str(data_dir), image_size=(h, w))
    runtime = resolve_runtime("cpu", card.scoring.get("precision", "auto"), "off")
    start = time.perf_counter()
    scores, _ = score(model, test, runtime)
    seconds = time.perf_counter() - start
    return {"images": len(test), "seconds": round(seconds, 2), "images_per_second": round(len(test) / seconds, 1),
            "accuracy": scores.accuracy, "precision": runtime.precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="an image folder with train/ and test/")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    record = machine("cnnlab's default (auto: measured in the first steps)")
    work = Path(tempfile.mkdtemp(prefix="cnnlab-transfer-bench-"))
    data_dir, runs = work / "data", work / "runs"
    rows = []
    try:
        rows.append(train(args.folder, data_dir, runs, 1, "off", "warm-up (decode once)", args.seed))
        for epochs in (1, 10):
            rows.append(train(args.folder, data_dir, runs, epochs, "off", f"backbone every epoch, {epochs} ep",
                              args.seed))
        for epochs in (1, 10):
            shutil.rmtree(data_dir / "features", ignore_errors=True)  # the first run on this folder
            rows.append(train(args.folder, data_dir, runs, epochs, "auto", f"features once, {epochs} ep, first",
                              args.seed))
        rows.append(train(args.folder, data_dir, runs, 10, "auto", "features once, 10 ep, second", args.seed))
        # the head started at random, as before --head-init (Imagenette's classes are ImageNet's: auto starts
        # it from the ImageNet classifier's rows); last, so the rows above time the default
        rows.append(train(args.folder, data_dir, runs, 10, "auto", "features once, 10 ep, random head", args.seed,
                          ("--head-init", "random")))
        slow_epoch = rows[1]["train_size"] / rows[1]["epoch_seconds"][0]
        speed = {**scoring_speed(runs / rows[-2]["name"], args.folder, data_dir),
                 "training_epoch_images_per_second": round(slow_epoch, 1)}
        print(f"scoring {speed['images_per_second']} images/s, a training epoch "
              f"{speed['training_epoch_images_per_second']} images/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "transfer learning, features once", "folder": str(args.folder), "machine": record,
              "torch": torch.__version__, "runs": rows, "scoring": speed}
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
