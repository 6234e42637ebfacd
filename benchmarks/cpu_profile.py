"""Where the CPU time goes: FLOPs per image, achieved FLOP/s against the measured matmul peak.

For each recipe's model: the FLOPs of one training step (forward + backward, counted by
torch.utils.flop_counter) per image, the measured time per step at the recipe's batch size
and precision, the achieved GFLOP/s, and that as a share of this machine's measured matmul
peak in the same precision. Then the operator profile of the seed recipe's step.

    .venv/bin/python benchmarks/cpu_profile.py --json benchmarks/results/cpu-profile.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.models.zoo import build_model, output_kind
from cnnlab.training.devices import Runtime
from cnnlab.training.loop import loss_fn

MATMUL_SIZE = 2048      # square matmul for the peak: large enough that packing and threading overheads vanish
PEAK_SECONDS = 2.0      # time spent measuring each peak
STEPS = 300             # timed training steps per case, after WARMUP
WARMUP = 30
CASES = [  # (label, model, input (C, H, W), batch size)
    ("seed recipe: seed-mnist", "seed-mnist", (1, 28, 28), 32),
    ("fast recipe: fast-cnn", "fast-cnn", (1, 28, 28), 64),
    ("seed recipe: seed-cifar10", "seed-cifar10", (3, 32, 32), 32),
]


def matmul_peak(dtype: torch.dtype) -> float:
    """GFLOP/s of a large square matmul in `dtype` on all of torch's threads."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype), torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < PEAK_SECONDS:
        torch.mm(a, b)
        count += 1
    return 2 * MATMUL_SIZE**3 * count / (time.perf_counter() - start) / 1e9


def make_step(model_name: str, shape: tuple[int, int, int], batch: int, precision: str):
    runtime = Runtime(torch.device("cpu"), precision, compile=False)
    model = runtime.prepare(build_model(model_name, (shape[1], shape[2], shape[0])))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, fused=True)
    # A fresh random batch every step (drawing it costs ~1% of a step): a few batches cycled are learned
    # by heart, and the steps then run up to 2x faster than in real training (measured), which flatters.
    kind = output_kind(model)

    def step() -> None:
        images, labels = runtime.images(torch.rand(batch, *shape)), torch.randint(0, 10, (batch,))
        with runtime.autocast():
            out = model(images)
        loss = loss_fn(out.float(), labels, kind)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def flops_per_image(model_name: str, shape: tuple[int, int, int], batch: int) -> float:
    step = make_step(model_name, shape, batch, "fp32")
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / batch


def seconds_per_step(step) -> float:
    for _ in range(WARMUP):
        step()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    return (time.perf_counter() - start) / STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"threads {torch.get_num_threads()}; matmul peak {peaks['fp32']:.0f} GFLOP/s fp32, "
          f"{peaks['bf16']:.0f} GFLOP/s bf16 ({MATMUL_SIZE}x{MATMUL_SIZE})")
    rows = []
    for label, name, shape, batch in CASES:
        flops = flops_per_image(name, shape, batch)
        for precision in ("fp32", "bf16"):
            seconds = seconds_per_step(make_step(name, shape, batch, precision))
            achieved = flops * batch / seconds / 1e9
            rows.append({"case": label, "precision": precision, "batch": batch, "mflop_per_image": flops / 1e6,
                         "ms_per_step": seconds * 1e3, "images_per_s": batch / seconds,
                         "gflops": achieved, "share_of_peak": achieved / peaks[precision]})
            print(f"{label:28s} {precision} batch {batch:3d}: {flops / 1e6:6.1f} MFLOP/image, "
                  f"{seconds * 1e3:6.2f} ms/step, {batch / seconds:7.0f} images/s, {achieved:5.1f} GFLOP/s = "
                  f"{100 * achieved / peaks[precision]:4.1f}% of the {precision} matmul peak", flush=True)
    step = make_step("seed-mnist", (1, 28, 28), 32, "fp32")
    for _ in range(WARMUP):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(100):
            step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    print("seed recipe, seed-mnist, fp32, 100 steps: where the time goes\n" + table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"peaks_gflops": peaks, "rows": rows, "profile": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
