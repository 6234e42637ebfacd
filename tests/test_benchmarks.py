"""The benchmark scripts keep working: their arithmetic, and a smoke run of the GPU script on the CPU."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_reports_medians_and_ratios_against_tf():
    compare = _load("compare")
    runs = [{"program": "mnist-cnn", "side": "tf.keras", "fit_seconds": s, "test_accuracy": 0.86} for s in (10, 12, 30)]
    runs += [{"program": "mnist-cnn", "side": "cnnlab fast", "fit_seconds": s, "test_accuracy": a}
             for s, a in ((3, 0.87), (4, 0.85), (100, 0.86))]
    rows = {r["side"]: r for r in compare.summarize(runs)}
    assert rows["tf.keras"]["median_seconds"] == 12 and rows["cnnlab fast"]["median_seconds"] == 4
    assert rows["cnnlab fast"]["time_ratio_vs_tf"] == pytest.approx(4 / 12)
    assert rows["cnnlab fast"]["speedup_vs_tf"] == pytest.approx(3.0)
    assert rows["cnnlab fast"]["accuracy_mean"] == pytest.approx(0.86)
    assert (rows["cnnlab fast"]["accuracy_min"], rows["cnnlab fast"]["accuracy_max"]) == (0.85, 0.87)


def test_speedrun_gpu_script_runs_on_the_cpu_in_smoke_mode():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "speedrun_gpu.py"), "--throughput", "--smoke"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "images/s" in done.stdout
