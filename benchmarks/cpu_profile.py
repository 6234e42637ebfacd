"""Where the CPU time goes: FLOPs per image, achieved FLOP/s against the measured matmul peak.

For each recipe's model: the FLOPs of one training step of cnnlab's `fit` (forward, backward,
adam; counted by torch.utils.flop_counter) per image, the time per step of `fit` itself on random
uint8 data at the recipe's batch size and precision, the achieved GFLOP/s, and that as a share
of this machine's measured matmul peak in the same precision (the machine record's, machine.py: the
best 2048x2048 torch.mm; reports before 2026-12-07 used the mean over 2 s). Then the operator
profile of the seed recipe's `fit`.

    .venv/bin/python benchmarks/cpu_profile.py --json benchmarks/results/cpu-profile.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.data import ArrayDataset
from cnnlab.models.zoo import build_model
from cnnlab.training import fit
from cnnlab.training.devices import Runtime

import report

STEPS = 300             # timed training steps per case (one epoch of fit), after a WARMUP run
WARMUP = 30
CASES = [  # (label, model, input (C, H, W), batch size)
    ("seed recipe: seed-mnist", "seed-mnist", (1, 28, 28), 32),
    ("fast recipe: fast-cnn", "fast-cnn", (1, 28, 28), 64),
    ("seed recipe: seed-cifar10", "seed-cifar10", (3, 32, 32), 32),
]


def random_data(shape: tuple[int, int, int], images: int) -> ArrayDataset:
    """Random uint8 images and labels: nothing to learn by heart, so no step gets cheaper as training goes."""
    return ArrayDataset(torch.randint(0, 256, (images, *shape), dtype=torch.uint8),
                        torch.randint(0, 10, (images,)), [str(i) for i in range(10)])


def train(model_name: str, shape: tuple[int, int, int], batch: int, precision: str, steps: int) -> float:
    """Seconds per step of cnnlab's own `fit` (the code users run) for `steps` steps of the recipe's batch."""
    model = build_model(model_name, (shape[1], shape[2], shape[0]))
    data = random_data(shape, batch * steps)
    start = time.perf_counter()
    fit(model, data, epochs=1, batch_size=batch, seed=0, verbose=0,
        runtime=Runtime(torch.device("cpu"), precision, compile=False))
    return (time.perf_counter() - start) / steps


def flops_per_image(model_name: str, shape: tuple[int, int, int], batch: int) -> float:
    """FLOPs of one training step (forward, backward, optimizer) of `fit`, per image."""
    with FlopCounterMode(display=False) as counter:
        train(model_name, shape, batch, "fp32", steps=1)
    return counter.get_total_flops() / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    machine = report.machine(thread_policy=f"torch's default, {torch.get_num_threads()} threads, in this process")
    peaks = {p: machine["matmul_peak"][p]["gflops"] for p in ("fp32", "bf16")}
    print(f"threads {torch.get_num_threads()}; matmul peak {peaks['fp32']:.0f} GFLOP/s fp32, "
          f"{peaks['bf16']:.0f} GFLOP/s bf16 ({machine['matmul_peak']['fp32']['size']} square)")
    rows = []
    for label, name, shape, batch in CASES:
        flops = flops_per_image(name, shape, batch)
        for precision in ("fp32", "bf16"):
            train(name, shape, batch, precision, WARMUP)  # oneDNN picks and caches its kernels
            seconds = train(name, shape, batch, precision, STEPS)
            achieved = flops * batch / seconds / 1e9
            rows.append({"case": label, "precision": precision, "batch": batch, "mflop_per_image": flops / 1e6,
                         "ms_per_step": seconds * 1e3, "images_per_s": batch / seconds,
                         "gflops": achieved, "share_of_peak": achieved / peaks[precision]})
            print(f"{label:28s} {precision} batch {batch:3d}: {flops / 1e6:6.1f} MFLOP/image, "
                  f"{seconds * 1e3:6.2f} ms/step, {batch / seconds:7.0f} images/s, {achieved:5.1f} GFLOP/s = "
                  f"{100 * achieved / peaks[precision]:4.1f}% of the {precision} matmul peak", flush=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train("seed-mnist", (1, 28, 28), 32, "fp32", 100)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    print("seed recipe, seed-mnist, fp32, 100 steps: where the time goes\n" + table)
    if args.json:
        report.write_json(args.json, {"machine": machine, "peaks_gflops": peaks, "rows": rows, "profile": table})


if __name__ == "__main__":
    main()
