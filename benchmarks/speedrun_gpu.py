"""The speed-run recipe on a GPU: (a) the Fashion-MNIST 94% goal, (b) training throughput.

(a) Trains `SpeedrunNet` with `train_speedrun` N times (seeds 0..N-1) on Fashion-MNIST and reports
    test accuracy with test-time augmentation, per run and mean/min/max, plus wall time per run
    (the device synchronized around each timed span). One untimed warm-up run (1 epoch) first
    pays for CUDA start-up and cuDNN autotuning, as airbench's scripts do.
(b) --throughput: images/s of the full training step (augmentation, forward, backward, Muon and
    SGD, lookahead) on synthetic data of CIFAR-10's shape (50,000 x 3x32x32 uint8) at
    airbench94's batch size 1024; compare with airbench94 as benchmarks/airbench_throughput.md says.

    python benchmarks/speedrun_gpu.py --data-dir /work/shared/datasets/fashion-mnist --json out.json
    python benchmarks/speedrun_gpu.py --throughput --json throughput.json
    python benchmarks/speedrun_gpu.py --smoke --data-dir /work/shared/datasets/fashion-mnist   # CPU, seconds
    python benchmarks/speedrun_gpu.py --throughput --smoke

Not yet run on a GPU (written in a session without one): the Fashion-MNIST epochs below rest on a
CPU measurement at smaller widths; run (a) and adjust --epochs before quoting a number.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cnnlab.data import ArrayDataset, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.models.speedrun import SpeedrunNet
from cnnlab.training.devices import Runtime, resolve_runtime
from cnnlab.training.speedrun import SpeedrunConfig, evaluate_tta, time_training_steps, train_speedrun
from cnnlab.versions import versions

import report

GOAL_ACCURACY = 0.94        # the Fashion-MNIST goal: mean test accuracy over the runs
# Fashion-MNIST: airbench94's recipe with 16 epochs instead of ~10. Measured on a CPU (bf16, seed 0):
# widths 32/64/64 reach 93.73% test accuracy (TTA 2; 93.44% without) in 10 epochs; the full widths and
# 60% more steps should clear 94% with margin (an epoch costs ~90% of a CIFAR-10 one: 89 M vs 118 M
# multiply-adds per image). To be confirmed on the GPU. Mirroring is harmless for clothing.
FASHION_CONFIG = SpeedrunConfig(epochs=16, batch_size=1024, flip=True, translate=2, tta_level=2)
CIFAR_SHAPE = (50_000, 3, 32, 32)   # the synthetic stand-in for CIFAR-10's training set
THROUGHPUT_STEPS = 200              # timed steps (~4 CIFAR-10 epochs at batch 1024): enough to average out jitter
# --smoke: the same code paths on a CPU in seconds (tiny widths, a few hundred images, one run).
SMOKE_WIDTHS = (16, 32, 32)
SMOKE_TRAIN, SMOKE_TEST = 512, 256
SMOKE_BATCH = 64
SMOKE_STEPS = 5


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, work: Any) -> tuple[Any, float]:
    _synchronize(device)
    start = time.perf_counter()
    result = work()
    _synchronize(device)
    return result, time.perf_counter() - start


def _one_run(config: SpeedrunConfig, train: ArrayDataset, test: ArrayDataset, runtime: Runtime) -> dict[str, Any]:
    torch.manual_seed(config.seed or 0)  # the weights' initialization; the config's seed drives data order
    model = SpeedrunNet(train.input_shape, train.num_classes, config.widths)
    history, train_seconds = _timed(runtime.device, lambda: train_speedrun(model, train, config, runtime))
    tta, eval_seconds = _timed(runtime.device,
                               lambda: evaluate_tta(model, test, runtime, config.tta_level, flip=config.flip))
    plain = evaluate_tta(model, test, runtime, 0)
    return {"seed": config.seed, "accuracy": tta["accuracy"], "loss": tta["loss"], "accuracy_no_tta": plain["accuracy"],
            "train_seconds": train_seconds, "eval_seconds": eval_seconds,
            "final_train_loss": history.history["loss"][-1]}


def accuracy_runs(args: argparse.Namespace) -> dict[str, Any]:
    train = load_dataset(args.dataset, data_dir=args.data_dir)
    test = load_dataset(args.dataset, split="test", data_dir=args.data_dir)
    if not isinstance(train, ArrayDataset) or not isinstance(test, ArrayDataset):
        raise CnnlabError(f"{args.dataset}: the speed-run recipe needs an in-memory dataset")
    config = dataclasses.replace(FASHION_CONFIG, **_overrides(args))
    if args.smoke:
        train, test = train.subset(range(SMOKE_TRAIN)), test.subset(range(SMOKE_TEST))
        config = dataclasses.replace(config, epochs=2, batch_size=SMOKE_BATCH, widths=SMOKE_WIDTHS)
    runtime = resolve_runtime(args.device, args.precision, args.compile,
                              steps=config.epochs * (len(train) // config.batch_size))
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    for _ in range(args.warmup_runs):  # untimed: CUDA start-up, cuDNN autotuning, compilation
        _one_run(dataclasses.replace(config, epochs=1, seed=10_000), train, test, runtime)
    runs = []
    for seed in range(args.runs):
        runs.append(_one_run(dataclasses.replace(config, seed=seed), train, test, runtime))
        print(_row(runs[-1]), flush=True)
    accuracies = [r["accuracy"] for r in runs]
    summary = {"runs": len(runs), "mean_accuracy": statistics.fmean(accuracies), "min_accuracy": min(accuracies),
               "max_accuracy": max(accuracies),
               "mean_train_seconds": statistics.fmean(r["train_seconds"] for r in runs),
               "goal": GOAL_ACCURACY, "goal_met": statistics.fmean(accuracies) >= GOAL_ACCURACY}
    print(f"mean {summary['mean_accuracy']:.4f}  min {summary['min_accuracy']:.4f}  max {summary['max_accuracy']:.4f}"
          f"  train {summary['mean_train_seconds']:.2f} s/run  goal {GOAL_ACCURACY:.2%}: "
          f"{'met' if summary['goal_met'] else 'NOT met'}")
    return {"mode": "accuracy", "dataset": args.dataset, "train_images": len(train), "test_images": len(test),
            "runtime": runtime.describe(), "config": dataclasses.asdict(config), "runs": runs, "summary": summary}


def _row(run: dict[str, Any]) -> str:
    return (f"{run['seed']:>4}  {run['accuracy']:>8.4f}  {run['accuracy_no_tta']:>8.4f}  "
            f"{run['train_seconds']:>8.2f}  {run['eval_seconds']:>7.2f}")


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    config = dataclasses.replace(SpeedrunConfig(), **_overrides(args))  # airbench94's CIFAR-10 settings
    shape, steps = CIFAR_SHAPE, args.steps
    if args.smoke:
        shape, steps = (SMOKE_TRAIN, *CIFAR_SHAPE[1:]), SMOKE_STEPS
        config = dataclasses.replace(config, batch_size=SMOKE_BATCH, widths=SMOKE_WIDTHS)
    runtime = resolve_runtime(args.device, args.precision, args.compile, steps=steps)
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    g = torch.Generator(device=runtime.device).manual_seed(0)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=runtime.device, generator=g)
    labels = torch.randint(0, 10, shape[:1], device=runtime.device, generator=g)
    torch.manual_seed(0)
    model = SpeedrunNet(shape[2:] + shape[1:2], 10, config.widths)
    rates = [time_training_steps(model, images, labels, config, runtime, steps) for _ in range(args.repeats)]
    best = max(rates)
    print(f"{runtime.describe()}: {statistics.median(rates):,.0f} images/s median of {len(rates)} "
          f"(best {best:,.0f}; {shape[0] / best:.3f} s per epoch of {shape[0]:,} images at batch {config.batch_size})")
    return {"mode": "throughput", "runtime": runtime.describe(), "images": list(shape), "steps": steps,
            "config": dataclasses.asdict(config), "images_per_second": rates,
            "median_images_per_second": statistics.median(rates)}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    chosen = {"epochs": args.epochs, "batch_size": args.batch_size, "flip": args.flip,
              "widths": tuple(args.widths) if args.widths else None}
    return {k: v for k, v in chosen.items() if v is not None}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--throughput", action="store_true", help="images/s on synthetic CIFAR-shaped data")
    p.add_argument("--smoke", action="store_true", help="tiny widths, a few hundred images, one run (CPU check)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--dataset", default="fashion-mnist", help="a built-in dataset name (default fashion-mnist)")
    p.add_argument("--runs", type=int, default=5, help="training runs, seeds 0..runs-1 (default 5)")
    p.add_argument("--warmup-runs", type=int, default=None, help="untimed 1-epoch runs (default 1; 0 with --smoke)")
    p.add_argument("--epochs", type=int, default=None, help=f"default {FASHION_CONFIG.epochs} for Fashion-MNIST")
    p.add_argument("--batch-size", type=int, default=None, help="default 1024 (airbench94)")
    p.add_argument("--widths", type=int, nargs=3, default=None, help="block widths, default 64 256 256")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random mirroring and mirrored TTA views (default on; --no-flip for digits)")
    p.add_argument("--steps", type=int, default=THROUGHPUT_STEPS, help="timed steps per throughput measurement")
    p.add_argument("--repeats", type=int, default=3, help="throughput measurements (default 3)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile", default="auto")
    p.add_argument("--json", type=Path, help="also write the results here (JSON)")
    args = p.parse_args(argv)
    if args.smoke:
        args.runs, args.repeats = 1, 1
    if args.warmup_runs is None:
        args.warmup_runs = 0 if args.smoke else 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = report.machine(thread_policy=f"torch's default, {torch.get_num_threads()} CPU threads")
    try:
        if not args.throughput:
            print(f"{'seed':>4}  {'acc TTA':>8}  {'acc':>8}  {'train s':>8}  {'eval s':>7}")
        result = throughput(args) if args.throughput else accuracy_runs(args)
    except CnnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["versions"], result["machine"] = versions(), machine
    if args.json is not None:
        report.write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
