"""The benchmark scripts keep working: their arithmetic, and a smoke run of the GPU script on the CPU."""

import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    if str(BENCHMARKS) not in sys.path:  # the scripts import their siblings (real_arrays), as when run from there
        sys.path.insert(0, str(BENCHMARKS))
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


def test_compare_report_is_written_after_each_run_and_extended_by_append(tmp_path):
    compare = _load("compare")
    path = tmp_path / "seed003.json"
    first = [{"program": "cifar-bn", "side": "cnnlab seed", "fit_seconds": 600.0, "test_accuracy": 0.8, "epochs": 30}]
    compare.write_report(path, first)  # a sitting stopped before the reference side ran: no ratio yet
    (row,) = compare.json.loads(path.read_text())["table"]
    assert row["speedup_vs_tf"] is None and row["accuracy_mean"] == 0.8
    compare.print_table([row])  # prints "-" for the missing ratio instead of failing
    kept = compare.json.loads(path.read_text())["runs"]
    compare.write_report(path, kept + [{**first[0], "side": "tf.keras", "fit_seconds": 1200.0}])
    report = compare.json.loads(path.read_text())
    assert len(report["runs"]) == 2 and not list(tmp_path.glob("*.tmp"))
    assert {r["side"]: r["speedup_vs_tf"] for r in report["table"]} == {"tf.keras": 1.0, "cnnlab seed": 2.0}
    assert report["machine"]["cores"] >= 1


def test_results_table_summarizes_each_row_over_its_seeds():
    table = _load("results_table")
    runs = [{"row": "lenet5-fashion", "seed": s, "test_accuracy": a, "train_seconds": t, "epochs_run": 10}
            for s, a, t in ((0, 0.90, 50.0), (1, 0.88, 70.0), (2, 0.89, 60.0))]
    (row,) = table.summarize(runs)
    assert row["seeds"] == 3 and row["accuracy_mean"] == pytest.approx(0.89)
    assert (row["accuracy_min"], row["accuracy_max"], row["train_seconds_median"]) == (0.88, 0.90, 60.0)
    assert row["command"].startswith("cnnlab train --dataset fashion-mnist") and row["command"].endswith("--seed S")


def test_results_table_resumes_an_interrupted_run_and_refuses_a_dead_one(tmp_path, monkeypatch):
    table = _load("results_table")
    commands = []

    def fake_run(command, **kwargs):  # stands for the training process: it finishes the run directory
        commands.append(command)
        run_dir = Path(command[command.index("--resume") + 1] if "--resume" in command else command[-1])
        (run_dir / "metrics.json").write_text('{"test_accuracy": 0.9, "train_seconds": 12.0}')
        (run_dir / "history.json").write_text('{"history": {"loss": [1.0, 0.5]}}')
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(table.subprocess, "run", fake_run)
    interrupted = tmp_path / "lenet5-fashion-s1"
    interrupted.mkdir()
    (interrupted / "checkpoint.json").write_text("{}")
    result = table.run_row("lenet5-fashion", 1, tmp_path)
    assert commands[-1][-3:] == ["train", "--resume", str(interrupted)]
    assert (result["test_accuracy"], result["epochs_run"]) == (0.9, 2)
    assert table.run_row("lenet5-fashion", 1, tmp_path)["train_seconds"] == 12.0 and len(commands) == 1  # reused
    (tmp_path / "lenet5-fashion-s2").mkdir()
    with pytest.raises(SystemExit, match="neither metrics.json nor a checkpoint"):
        table.run_row("lenet5-fashion", 2, tmp_path)
    table.write_report(tmp_path / "t.json", [result])
    assert table.json.loads((tmp_path / "t.json").read_text())["table"][0]["seeds"] == 1


def test_results_table_tuning_runs_never_score_the_test_split(tmp_path, monkeypatch):
    table = _load("results_table")
    commands = []

    def fake_run(command, **kwargs):  # a --no-test run: metrics without test_*
        commands.append(command)
        run_dir = Path(command[-1])
        run_dir.mkdir()
        (run_dir / "metrics.json").write_text('{"val_accuracy": 0.93, "train_seconds": 5.0}')
        (run_dir / "history.json").write_text('{"history": {"loss": [1.0]}}')
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(table.subprocess, "run", fake_run)
    result = table.run_row("lenet5-fashion", 0, tmp_path, tune=True)
    assert "--no-test" in commands[0] and commands[0][-1] == str(tmp_path / "lenet5-fashion-tune-s0")
    assert (result["val_accuracy"], result["test_accuracy"]) == (0.93, None)
    assert result["command"].endswith("--no-test --seed 0")
    (row,) = table.summarize([result], "val_accuracy")
    assert (row["accuracy_of"], row["accuracy_mean"]) == ("val_accuracy", 0.93)
    monkeypatch.setattr(table.sys, "argv", ["results_table.py", "--rows", "speedrun-fashion-all", "--tune",
                                            "--runs", str(tmp_path)])
    with pytest.raises(SystemExit):  # that row trains on all the training data: nothing to tune on
        table.main()
    assert len(commands) == 1 and table.holds_out_validation(table.ROWS["speedrun-fashion"][2])


def test_real_arrays_give_keras_layouts():
    import numpy as np

    arrays = _load("real_arrays")
    grey, rgb = np.zeros((2, 1, 28, 28), np.uint8), np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    assert arrays._keras_layout(grey).shape == (2, 28, 28)
    assert arrays._keras_layout(rgb).shape == (2, 4, 5, 3) and arrays._keras_layout(rgb)[1, 2, 3, 0] == rgb[1, 0, 2, 3]


def test_speedrun_gpu_script_runs_on_the_cpu_in_smoke_mode():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "speedrun_gpu.py"), "--throughput", "--smoke"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "images/s" in done.stdout


def test_data_load_script_times_first_and_cached_loads(tmp_path):
    source = tmp_path / "tiny" / "tiny"
    for split, n in (("train", 6), ("test", 2)):
        for name in ("cat", "dog"):
            (source / split / name).mkdir(parents=True)
            for i in range(n):
                colour = (40 * i, 200 if name == "cat" else 0, 90)
                Image.new("RGB", (8, 8), colour).save(source / split / name / f"{i}.jpg")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, "tiny")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "data_load.py"), "--archive", str(archive), "--json",
                           str(tmp_path / "load.json")], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    loads = json.loads((tmp_path / "load.json").read_text())["loads"]
    assert [r["images"] for r in loads.values()] == [16, 16, 16]  # first, cached, and from the extracted folder
    assert all(r["seconds"] > 0 for r in loads.values())


def test_transfer_finetune_stand_in_has_natural_sizes_and_no_imagenet_class_names(tmp_path):
    finetune = _load("transfer_finetune")
    source = tmp_path / "imagenette-224"
    for split, cls, count in (("train", "tench", 3), ("train", "church", 2), ("val", "tench", 1)):
        (source / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (224, 224), (i * 40, 90, 20)).save(source / split / cls / f"{i}.JPEG")
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="imagenette-224")
    out = finetune.natural_folder(archive, tmp_path / "natural")
    photos = sorted(out.glob("*/*.jpg"))
    assert sorted({p.parent.name for p in photos}) == ["kind_a", "kind_b"]  # church, tench: no ImageNet names
    assert len(photos) == 6 and len(list(out.glob("kind_b/*.jpg"))) == 4  # tench's train and val photos
    assert all(Image.open(p).size in finetune.SIZES for p in photos)
