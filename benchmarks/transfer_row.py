"""The transfer-learning row: pretrained EfficientNet-Lite0 vs the same network from scratch, same wall time.

Two small real tasks, each arm given the same wall-clock training budget:
  * CIFAR-10 (JPEG q75): 100 training images per class (1,000), tested on 100 per class of the
    official test split (1,000), upsampled from 32 to 96 px.
  * scikit-image's `lfw_subset()`: 100 faces vs 100 non-faces, 25x25 grey, upsampled to 64 px;
    a stratified half (50 + 50) trains, the other half (100) is held out for testing.
Arms, with cnnlab's Python API (the CLI equivalent is in each arm's "cli" field):
  * pretrained: ImageNet weights (the `cnnlab[pretrained]` extra), backbone frozen, new head
    (GAP, dropout 0.2, Dense) at adam 1e-3 for HEAD_SHARE of the budget, then the top
    UNFREEZE_TOP blocks unfrozen and fine-tuned at 1e-5 (seed 003's recipe) for the rest.
  * scratch: `build_model("efficientnet_lite0")`, random init, BatchNorm training, adam 1e-3, the whole budget.
An arm stops at the end of the epoch after which another epoch would overrun its budget (at
least one epoch), so arms end within one epoch of the budget; the wall time actually used is reported.

Why 96 px and not 224 for CIFAR: on this shared 2-core CPU one training step of Lite0 costs
~0.1 s per image at 96 px and ~0.5 s at 224 px, so 224 px would give the scratch arm less than
one epoch of 1,000 images in the budget. 96 px still leaves the backbone a 3x3 final map.

    .venv/bin/python benchmarks/transfer_row.py --data-dir /tmp/cnnlab-data --seeds 3 \\
        --json benchmarks/results/transfer-row.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import cnnlab
from cnnlab.data import ArrayDataset
from cnnlab.data.arrays import resize_images
from cnnlab.models.transfer import transfer_model
from cnnlab.training import Callback, fit
from cnnlab.training.callbacks import TrainState

import report

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpg" / "cifar10-jpg.tar.gz"
CIFAR_TRAIN_PER_CLASS, CIFAR_TEST_PER_CLASS = 100, 100
CIFAR_SIZE = 96                 # px; see the module docstring
LFW_SIZE = 64                   # px; 25x25 faces upsampled so the stride-32 backbone keeps a 2x2 map
BUDGET_S = {"cifar10": 120.0, "lfw": 30.0}   # training wall time per arm
HEAD_SHARE = 2 / 3              # of the pretrained arm's budget for the frozen-backbone head phase
UNFREEZE_TOP = 3                # fine-tune the head conv and the last two stages (of 9 blocks)
LEARNING_RATE, FINE_TUNE_LR = 1e-3, 1e-5   # Keras's adam default; seed 003's fine-tuning rate
BATCH_SIZE = 32
MAX_EPOCHS = 1000               # never reached: the budget stops every arm


class TimeBudget(Callback):
    """Stops training when another epoch (as long as the last one) would overrun `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start, self.last = seconds, 0.0, 0.0

    def on_train_begin(self, state: TrainState) -> None:
        self.start = self.last = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: TrainState) -> None:
        now = time.perf_counter()
        epoch_s, self.last = now - self.last, now
        if now - self.start + epoch_s > self.seconds:
            state.stop_training = True


def _per_class(labels: torch.Tensor, count: int, rng: np.random.Generator) -> list[int]:
    picked = [rng.permutation((labels == c).nonzero().flatten().numpy())[:count] for c in labels.unique().tolist()]
    return np.concatenate(picked).tolist()


def cifar10(data_dir: str | None, size: int) -> tuple[ArrayDataset, ArrayDataset]:
    """100 train and 100 test images per class (fixed draw, seed 0), resized to size x size."""
    rng = np.random.default_rng(0)
    out = []
    for split, count in (("train", CIFAR_TRAIN_PER_CLASS), ("test", CIFAR_TEST_PER_CLASS)):
        data = cnnlab.load_dataset(ARCHIVE, split=split, data_dir=data_dir)
        assert isinstance(data, ArrayDataset)
        part = data.subset(_per_class(data.labels, count, rng))
        out.append(ArrayDataset(resize_images(part.images, (size, size)), part.labels, part.class_names, "cifar10"))
    return out[0], out[1]


def lfw(seed: int, size: int) -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-image's 100 faces + 100 non-faces, split per class in halves (the split follows `seed`)."""
    from skimage.data import lfw_subset

    images = (lfw_subset() * 255).round().astype(np.uint8)          # (200, 25, 25), faces first
    labels = np.repeat([0, 1], 100)
    data = ArrayDataset.from_arrays(images, labels, ["face", "non-face"])
    rng = np.random.default_rng(seed)
    train_idx = _per_class(data.labels, 50, rng)
    test_idx = sorted(set(range(200)) - set(train_idx))
    resized = ArrayDataset(resize_images(data.images, (size, size)), data.labels, data.class_names, "lfw")
    return resized.subset(train_idx), resized.subset(test_idx)


def pretrained_arm(train: ArrayDataset, budget: float, seed: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    model = transfer_model("efficientnet_lite0", train.num_classes, train.input_shape, pretrained=True)
    epochs = []
    for top, lr, seconds in ((0, LEARNING_RATE, budget * HEAD_SHARE), (UNFREEZE_TOP, FINE_TUNE_LR,
                                                                        budget * (1 - HEAD_SHARE))):
        model.freeze(unfreeze_top=top)
        history = fit(model, train, epochs=MAX_EPOCHS, batch_size=BATCH_SIZE, learning_rate=lr, seed=seed,
                      verbose=0, callbacks=[TimeBudget(seconds)])
        epochs.append(len(history.history["loss"]))
    return model, {"head_epochs": epochs[0], "fine_tune_epochs": epochs[1]}


def scratch_arm(train: ArrayDataset, budget: float, seed: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    model = cnnlab.build_model("efficientnet_lite0", train.input_shape, train.num_classes)
    history = fit(model, train, epochs=MAX_EPOCHS, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE, seed=seed,
                  verbose=0, callbacks=[TimeBudget(budget)])
    return model, {"epochs": len(history.history["loss"])}


def run_arm(task: str, arm: str, train: ArrayDataset, test: ArrayDataset, seed: int) -> dict:
    start = time.perf_counter()
    build = pretrained_arm if arm == "pretrained" else scratch_arm
    model, details = build(train, BUDGET_S[task], seed)
    train_s = time.perf_counter() - start
    metrics = cnnlab.evaluate(model, test)
    return {"task": task, "arm": arm, "seed": seed, "train_images": len(train), "test_images": len(test),
            "image_size": train.input_shape[0], "budget_s": BUDGET_S[task], "train_s": round(train_s, 1),
            **details, "test_accuracy": round(metrics["accuracy"], 4)}


def summarize(rows: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for row in rows:
        entry = out.setdefault(row["task"], {}).setdefault(row["arm"], {"accuracies": [], "train_s": []})
        entry["accuracies"].append(row["test_accuracy"])
        entry["train_s"].append(row["train_s"])
    for arms in out.values():
        for entry in arms.values():
            entry["mean_accuracy"] = round(float(np.mean(entry["accuracies"])), 4)
            entry["mean_train_s"] = round(float(np.mean(entry["train_s"])), 1)
    return out


CLI = {
    "pretrained": "cnnlab train DIR --model efficientnet_lite0 --pretrained --freeze --epochs E1 "
                  "--unfreeze-top 3 --fine-tune-epochs E2 --image-size S S",
    "scratch": "cnnlab train DIR --model efficientnet_lite0 --epochs E --image-size S S",
}


def write(path: Path, rows: list[dict]) -> dict:
    """The rows, their summary and the settings, as one JSON document (rewritten after every arm)."""
    result = {"what": "EfficientNet-Lite0 pretrained (frozen head, then fine-tune) vs from scratch, same budget",
              "data": {"cifar10": "CIFAR-10 (JPEG q75), 100/class train, 100/class test, 32 -> 96 px",
                       "lfw": "skimage lfw_subset faces vs non-faces, 50+50 train / 50+50 test, 25 -> 64 px grey"},
              "settings": {"budget_s": BUDGET_S, "head_share": HEAD_SHARE, "unfreeze_top": UNFREEZE_TOP,
                           "learning_rate": LEARNING_RATE, "fine_tune_lr": FINE_TUNE_LR, "batch_size": BATCH_SIZE},
              "cli": CLI, "machine": report.machine(), "torch": torch.__version__, "rows": rows,
              "summary": summarize(rows)}
    report.write_json(path, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="where the CIFAR-10 archive is extracted once (default $CNNLAB_DATA)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=["lfw", "cifar10"], choices=sorted(BUDGET_S))
    parser.add_argument("--json", type=Path, help="write the rows and the summary here")
    args = parser.parse_args()
    report.machine(thread_policy=f"torch's default, {torch.get_num_threads()} threads, in this process")
    rows: list[dict] = []
    cifar = cifar10(args.data_dir, CIFAR_SIZE) if "cifar10" in args.tasks else None
    for task in args.tasks:
        for seed in range(args.seeds):
            train, test = cifar if task == "cifar10" and cifar is not None else lfw(seed, LFW_SIZE)
            for arm in ("pretrained", "scratch"):
                rows.append(run_arm(task, arm, train, test, seed))
                print(json.dumps(rows[-1]), flush=True)
                if args.json:
                    write(args.json, rows)
    print(json.dumps(summarize(rows)))


if __name__ == "__main__":
    main()
