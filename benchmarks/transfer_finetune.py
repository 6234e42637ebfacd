"""Head + fine-tuning on natural-size photos: issue 23's command against `--recipe transfer-finetune`, side by side.

Issue 23 measured, on 4,317 natural-size photos of 5 flower classes (20% test), `cnnlab train FOLDER --model
efficientnet_lite0 --pretrained --freeze --epochs 5 --unfreeze-top 3 --fine-tune-epochs 5 --augment standard`:
543 s, 92.02% test, and asked for head + fine-tuning in under half that time. That set is not here, so this
script times the same commands on a stand-in of the same kind: the Imagenette subset of
../shared/datasets/imagenette-224 (3,500 photos, 10 classes) scaled up to natural photo sizes (500x375,
375x500, 500x333, 480x360 JPEGs at quality 90, drawn per photo with a fixed seed), its class folders renamed
so that none names an ImageNet class (the new head then starts at random, as it does for flowers). Its
classes are ImageNet's, so its accuracy says little about classes ImageNet does not name: the rows compare
time, and accuracy only between the rows.

Sides, each a whole `cnnlab train` process with `--test-fraction 0.2 --seed S`, in rotated order per round:
  * issue command: the command above, on this checkout;
  * recipe: `--recipe transfer-finetune` (head on features computed once, early stopping; the top 3 blocks
    fine-tuned 5 epochs at 1e-4 on live augmentation), on this checkout, with an empty feature store (the
    first run on the folder);
  * baseline (with `--baseline-tree DIR`): the issue command on another checkout, e.g. the commit before
    issue 23's work (`git worktree add /tmp/before f9cb6cf`), which is "today's path" of the issue.
Every side reads decoded images from the data folder's cache (one warm-up load per checkout first).

    .venv/bin/python benchmarks/transfer_finetune.py --baseline-tree /tmp/before \\
        --json benchmarks/results/transfer-finetune.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from report import machine, write_json

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "datasets" / "imagenette-224" / "imagenette-224.tar.gz"
ISSUE = ["--model", "efficientnet_lite0", "--pretrained", "--freeze", "--epochs", "5", "--unfreeze-top", "3",
         "--fine-tune-epochs", "5", "--augment", "standard"]
SIZES = [(500, 375), (375, 500), (500, 333), (480, 360)]  # (width, height) of common camera photos, scaled


def natural_folder(archive: Path, out: Path) -> Path:
    """The stand-in: every photo of the archive at a natural size, in class folders kind_a .. kind_j."""
    from PIL import Image

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        photos = sorted(Path(tmp).glob("imagenette-224/*/*/*.JPEG"))
        classes = sorted({p.parent.name for p in photos})
        for photo in photos:
            target = out / f"kind_{chr(97 + classes.index(photo.parent.name))}" / f"{photo.parent.parent.name}_" \
                f"{photo.stem}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(photo).convert("RGB").resize(rng.choice(SIZES), Image.BICUBIC).save(target, quality=90)
    return out


def train(tree: Path, folder: Path, data_dir: Path, runs: Path, name: str, flags: list[str], seed: int) -> dict:
    """One whole `cnnlab train` process of checkout `tree`: its wall time and what its run directory recorded."""
    run_dir = runs / name.replace(" ", "-")
    command = [sys.executable, "-m", "cnnlab", "train", str(folder), *flags, "--test-fraction", "0.2", "--seed",
               str(seed), "--data-dir", str(data_dir), "--run-dir", str(run_dir), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=tree, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    phases = history["history"].get("phase", [0.0] * len(history["epoch_seconds"]))
    row = {"name": name, "tree": str(tree), "whole_seconds": round(seconds, 2),
           "train_seconds": round(metrics["train_seconds"], 2), "test_accuracy": metrics.get("test_accuracy"),
           "val_accuracy": metrics.get("val_accuracy"),
           "epoch_seconds": [round(s, 2) for s in history["epoch_seconds"]], "phases": phases,
           "features": history.get("features"), "command": "cnnlab " + " ".join(command[3:]), "seed": seed}
    per_epoch = list(zip(history["epoch_seconds"], phases, strict=True))
    phase_seconds = {int(p): round(sum(s for s, q in per_epoch if q == p), 1) for p in sorted(set(phases))}
    print(f"{name:24s} whole {seconds:6.1f} s  train {metrics['train_seconds']:6.1f} s (per phase {phase_seconds})"
          f"  test {metrics.get('test_accuracy', float('nan')):.4f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a natural-size class-folder tree (default: made from ARCHIVE)")
    parser.add_argument("--baseline-tree", type=Path, help="another cnnlab checkout to run the issue command on")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    record = machine("cnnlab's default (auto: measured in the first steps)")
    work = Path(tempfile.mkdtemp(prefix="cnnlab-finetune-bench-"))
    folder = args.folder or natural_folder(ARCHIVE, work / "natural")
    data_dir, runs = work / "data", work / "runs"
    sides = [("issue command", ROOT, ISSUE), ("recipe", ROOT, ["--recipe", "transfer-finetune"])]
    if args.baseline_tree:
        sides.insert(0, ("baseline", args.baseline_tree.resolve(), ISSUE))
    rows: list[dict] = []
    try:
        for index, tree in enumerate(sorted({tree for _, tree, _ in sides})):  # decode once per checkout, untimed
            train(tree, folder, data_dir, runs, f"warm-up {index}", ["--model", "efficientnet_lite0",
                  "--pretrained", "--freeze", "--epochs", "1", "--no-test"], args.seed)
        for round_ in range(args.rounds):
            for name, tree, flags in sides[round_ % len(sides):] + sides[:round_ % len(sides)]:
                shutil.rmtree(data_dir / "features", ignore_errors=True)  # the recipe's first run on the folder
                rows.append({**train(tree, folder, data_dir, runs, f"{name} {round_ + 1}", flags, args.seed),
                             "side": name, "round": round_ + 1})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "transfer learning, head + fine-tuning on natural-size photos", "machine": record,
              "torch": torch.__version__, "folder": str(args.folder or f"made from {ARCHIVE.name}"), "runs": rows}
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
