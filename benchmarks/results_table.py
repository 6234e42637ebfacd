"""The results table's cnnlab-only rows: each row is one `cnnlab train` command, run for several seeds.

Every run is a fresh `python -m cnnlab train ... --seed S --run-dir RUNS/<row>-s<S>` process; the table
reads test accuracy and training time from each run's metrics.json. Runs already finished are reused
and an interrupted run is resumed from its checkpoint (`cnnlab train --resume`), so long rows can be
filled across sessions; one row is re-run by deleting its run directories. The JSON is rewritten
after every run.
Every row trains on the training split less its last 10% (cnnlab's default --validation-split 0.1)
and records the accuracy on that validation part too. `--tune` runs a row with `--no-test` into
RUNS/<row>-tune-s<S> and reports validation accuracy only (JSON: results/tuning.json): settings are
chosen from those runs, so the test split is read once, by the row's own runs.
The tf.keras side-by-side rows come from compare.py (see docs/results.md).

    .venv/bin/python benchmarks/results_table.py --rows lenet5-fashion --seeds 3
    .venv/bin/python benchmarks/results_table.py --rows speedrun-fashion --seeds 1 --tune
    .venv/bin/python benchmarks/results_table.py --list
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # commands run from the repository root, with ../shared beside it
CIFAR_JPEG = "../shared/datasets/cifar10-jpg/cifar10-jpg.tar.gz"
FASHION = ["--dataset", "fashion-mnist", "--data-dir", "../shared/datasets"]

# name: (data, what the row shows, cnnlab train arguments). Settings were chosen on validation data;
# the test split is evaluated once, at the end of each run.
ROWS: dict[str, tuple[str, str, list[str]]] = {
    "lenet5-fashion": ("Fashion-MNIST", "LeNet-5, seed recipe (adam 1e-3, batch 32), 10 epochs",
                       [*FASHION, "--model", "lenet5", "--epochs", "10"]),
    "resnet-small-cifar": ("CIFAR-10 JPEG q75", "small ResNet, flip + 4-px crop, one-cycle adam 4e-3, batch 128, "
                           "5 epochs", [CIFAR_JPEG, "--model", "resnet-small", "--epochs", "5", "--batch-size",
                                        "128", "--schedule", "onecycle", "--learning-rate", "4e-3", "--augment",
                                        "light"]),
    "speedrun-cifar-cpu": ("CIFAR-10 JPEG q75", "speedrun recipe at widths 32/64/64, 4 epochs, batch 512 (CPU budget)",
                           [CIFAR_JPEG, "--recipe", "speedrun", "--widths", "32", "64", "64", "--epochs", "4",
                            "--batch-size", "512"]),
    "speedrun-cifar": ("CIFAR-10 JPEG q75", "speedrun recipe as airbench94 sets it (widths 64/256/256, flip + 2-px "
                       "translate, 10 epochs, batch 1024; 45,000 train)", [CIFAR_JPEG, "--recipe", "speedrun"]),
    "speedrun-fashion-cpu": ("Fashion-MNIST", "speedrun recipe at widths 32/64/64, 10 epochs",
                             [*FASHION, "--recipe", "speedrun", "--widths", "32", "64", "64", "--epochs", "10"]),
    # Chosen on a validation run (last 6,000 training images, --validation-split 0.1, seed 0):
    # val accuracy 95.30% after 20 epochs (no TTA), 1,074 s.
    "speedrun-fashion": ("Fashion-MNIST", "speedrun recipe at full width (64/256/256), flip + 2-px crop + "
                         "8-px cutout, 20 epochs",
                         [*FASHION, "--recipe", "speedrun", "--augment", "flip=h,crop=2,cutout=8", "--epochs", "20"]),
    # The same settings trained on all 60,000 training images (no validation part), the usual last step once
    # settings are fixed; reported beside the 54,000-image row above, not instead of it.
    "speedrun-fashion-all": ("Fashion-MNIST", "as speedrun-fashion, trained on all 60,000 training images",
                             [*FASHION, "--recipe", "speedrun", "--augment", "flip=h,crop=2,cutout=8", "--epochs", "20",
                              "--validation-split", "0"]),
}


def run_row(name: str, seed: int, runs: Path, tune: bool = False) -> dict:
    """One seed of one row: its metrics, run now or read from an earlier finished run.

    `tune`: a tuning run (`--no-test`, its own run directory) that reports validation accuracy only.
    """
    arguments = [*ROWS[name][2], *(["--no-test"] if tune else []), "--seed", str(seed)]
    run_dir = runs.resolve() / f"{name}{'-tune' if tune else ''}-s{seed}"
    command = [sys.executable, "-m", "cnnlab", "train", *arguments, "--run-dir", str(run_dir)]
    wall = None
    if not (run_dir / "metrics.json").is_file():
        if (run_dir / "checkpoint.json").is_file():  # interrupted: go on from its last checkpoint
            command = [sys.executable, "-m", "cnnlab", "train", "--resume", str(run_dir)]
        elif run_dir.exists():
            sys.exit(f"{run_dir} exists but has neither metrics.json nor a checkpoint (it stopped before its "
                     f"first epoch ended); delete it and run again")
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{name} seed {seed} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    return {"row": name, "seed": seed, "run_dir": str(run_dir), "test_accuracy": metrics.get("test_accuracy"),
            "val_accuracy": metrics.get("val_accuracy"), "train_seconds": metrics["train_seconds"],
            "process_seconds": wall, "epochs_run": len(history["history"].get("loss", [])),
            "date": datetime.date.today().isoformat(), "command": "cnnlab train " + " ".join(arguments)}


def holds_out_validation(arguments: list[str]) -> bool:
    """Whether a row's runs keep a validation part (cnnlab's default does: --validation-split 0.1).

    >>> holds_out_validation(["--epochs", "2"]), holds_out_validation(["--validation-split", "0"])
    (True, False)
    """
    if "--validation-split" not in arguments:
        return True
    return float(arguments[arguments.index("--validation-split") + 1]) > 0


def summarize(results: list[dict], key: str = "test_accuracy") -> list[dict]:
    """One line per row: mean, min and max of `key` (test_accuracy, or val_accuracy for tuning runs)."""
    table = []
    for name, (data, what, arguments) in ROWS.items():
        runs = [r for r in results if r["row"] == name]
        if not runs:
            continue
        accuracies = [r[key] for r in runs]
        table.append({"row": name, "data": data, "what": what, "seeds": len(runs), "accuracy_of": key,
                      "accuracy_mean": statistics.mean(accuracies), "accuracy_min": min(accuracies),
                      "accuracy_max": max(accuracies),
                      "train_seconds_median": statistics.median(r["train_seconds"] for r in runs),
                      "epochs_run": [r["epochs_run"] for r in runs],
                      "command": "cnnlab train " + " ".join(arguments) + " --seed S"})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every row")
    parser.add_argument("--runs", type=Path, default=HERE / ".runs", help="where the run directories go")
    parser.add_argument("--tune", action="store_true",
                        help="tuning runs: --no-test, validation accuracy only (default JSON results/tuning.json)")
    parser.add_argument("--json", type=Path, help="report file (results/results-table.json, or tuning.json)")
    parser.add_argument("--list", action="store_true", help="print the rows and exit")
    args = parser.parse_args()
    if args.list:
        for name, (data, what, arguments) in ROWS.items():
            print(f"{name}: {data}: {what}\n    cnnlab train {' '.join(arguments)} --seed S")
        return
    blind = [name for name in args.rows if not holds_out_validation(ROWS[name][2])]
    if args.tune and blind:
        parser.error(f"--tune chooses settings on validation data, but {', '.join(blind)} train(s) on all of it "
                     f"(--validation-split 0); tune the row with a validation part instead")
    path = args.json or HERE / "results" / ("tuning.json" if args.tune else "results-table.json")
    key = "val_accuracy" if args.tune else "test_accuracy"
    report.machine(thread_policy="cnnlab train's own (--threads auto: measured in the first steps)")
    previous = report.earlier_runs(path)
    results = [r for r in previous if r["row"] not in args.rows]
    for name in args.rows:
        for seed in range(args.seeds):
            result = run_row(name, seed, args.runs, args.tune)
            print(f"{name} seed {seed}: {key.replace('_', ' ')} {result[key]:.4f}, "
                  f"{result['train_seconds']:.1f} s of training", file=sys.stderr, flush=True)
            results.append(result)
            write_report(path, results, key)  # after every run: a stopped sitting keeps what it finished
    for row in summarize(results, key):
        print(f"{row['row']:22s} {row['seeds']} seeds  {key} {row['accuracy_mean']:.4f} "
              f"[{row['accuracy_min']:.4f}, {row['accuracy_max']:.4f}]  {row['train_seconds_median']:.0f} s")


def write_report(path: Path, results: list[dict], key: str = "test_accuracy") -> None:
    """The machine, the table and every run as JSON at `path` (written whole, then renamed)."""
    report.write_json(path, {"machine": report.machine(), "table": summarize(results, key), "runs": results})


if __name__ == "__main__":
    main()
