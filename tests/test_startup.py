"""Start-up: the commands and user errors that import no torch, what the summary and training paths import,
and the clock behind a run's seconds_to_first_step.

Importing torch takes 2-3.5 s on a 2-core machine: `cnnlab models`, `cnnlab datasets`, every `--help`
and every argument error below must come back without it (cli_checks.py checks before main imports it).
Each probe runs in a fresh process, where `"torch" in sys.modules` means something.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnlab.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]

# Runs each argv through cli.main in one fresh process; prints [argv, exit status, stderr, torch imported?] each.
PROBE = """
import contextlib, io, json, sys
from cnnlab.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's --help
            code = exc.code
    results.append([argv, code, err.getvalue(), "torch" in sys.modules])
print(json.dumps(results))
"""


def _probe(argvs: list[list[str]]) -> list[list]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_listing_commands_and_every_help_import_no_torch() -> None:
    argvs = [["--help"], ["models"], ["models", "--json"], ["datasets"]] + [[c, "--help"] for c in COMMANDS]
    for argv, code, err, torch_imported in _probe(argvs):
        assert (code, err, torch_imported) == (0, "", False), argv


def test_argument_errors_of_every_kind_come_before_torch(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("epochs = [")
    (tmp_path / "unknown.toml").write_text("epoch = 3\n")
    (tmp_path / "model.safetensors").write_bytes(b"")  # passes the argument check; never loaded here
    none = str(tmp_path / "none")
    cases = [  # argv, then a fragment of the one error line
        (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["train", "--dataset", none], f"dataset folder '{none}' does not exist"),
        (["train", "--model", "lenet"], "unknown model 'lenet'. Did you mean 'lenet5'"),
        (["train", "--validation-split", "1.5"], "validation_split must be in [0, 1)"),
        (["train", "--schedule", "cosine"], "schedule must be one of constant, onecycle"),
        (["train", "--epochs", "0"], "expected a positive integer, got 0"),
        (["train", "--config", none + ".toml"], "config file not found"),
        (["train", "--config", str(tmp_path / "bad.toml")], "is not valid TOML"),
        (["train", "--config", str(tmp_path / "unknown.toml")], "unknown setting 'epoch'. Did you mean 'epochs'"),
        (["train", "--init-from", none], f"model not found: {none} does not exist"),
        (["train", "--resume", str(tmp_path)], "not a run directory (no config.json)"),
        (["fine-tune", none, "--unfreeze-top", "1"], f"{none} is not a run directory"),
        (["summary", "lenet"], "unknown model 'lenet'"),
        (["summary", "seed-mnist", "--input-shape", "100000", "100000", "1"], "--input-shape (100000, 100000, 1) is"),
        (["predict", none, "x.png"], "model not found"),
        (["predict", none + ".onnx", "x.png"], f"model not found: {none}.onnx does not exist"),
        (["evaluate", none], "model not found"),
        (["evaluate", str(tmp_path / "model.safetensors"), "--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["export", none], "model not found"),
        (["serve", none], "model not found"),
        (["filters", none], "model not found"),
        (["gradcam", none, "x.png", "-o", f"{none}/g.png"], f"folder {none} does not exist"),
        (["feature-maps", none, "x.png"], "model not found"),
        (["curves", str(tmp_path)], "is not a run directory with a history.json"),
        (["conv-arithmetic", "--size", "3"], "--size alone"),
        (["augment-preview", "x.png", "-o", f"{none}/p.png"], f"folder {none} does not exist"),
    ]
    for (argv, code, err, torch_imported), (_, fragment) in zip(_probe([a for a, _ in cases]), cases, strict=True):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and fragment in lines[0], (argv, err)
        assert not torch_imported, f"{argv} imported torch before refusing it"


def test_the_summary_of_a_small_model_and_the_training_job_skip_torchvision_and_matplotlib() -> None:
    code = ("import sys; from cnnlab.cli import main; main(['summary', 'seed-mnist']); import cnnlab.jobs; "
            "print(sorted({'torchvision', 'torch._dynamo', 'matplotlib'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "[]", done.stderr


def test_the_process_clock_counts_from_the_interpreters_start() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc: the clock counts from the call")
    code = "import time; time.sleep(0.5); from cnnlab.startup import process_started; print(time.perf_counter() - " \
           "process_started())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert 0.5 <= float(done.stdout) < 30


def test_a_run_records_its_seconds_to_first_step(tmp_path: Path) -> None:
    started = time.perf_counter()
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    elapsed = time.perf_counter() - started
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 < metrics["seconds_to_first_step"] < metrics["train_seconds"] < elapsed
