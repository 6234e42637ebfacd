"""Distributed training: real torchrun processes (gloo, 2 CPU processes) against a single-process run.

The seed MNIST CNN trains 2 epochs on the built-in digits (1437 training images, global batch 32:
45 steps per epoch, the last one 29 images split 15/14 over the ranks). With fp32 and the same
global batch the averaged gradients equal the single-process ones up to float rounding (the
convolutions sum 16 instead of 32 images, gloo sums the two halves); Adam amplifies that rounding
over steps. Measured on 2 cores: relative loss difference 5e-5 after epoch 1 and 2e-3 after epoch
2, weights after 1 step within 3e-7. The tolerances below are about 4x those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.cli import _without_nproc
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.jobs import train_run
from cnnlab.training import distributed

SETTINGS = ["--dataset", "digits", "--model", "seed-mnist", "--epochs", "2", "--batch-size", "32", "--seed", "5",
            "--precision", "fp32", "--device", "cpu", "--no-tensorboard", "--checkpoint-every", "20", "--quiet"]
LOSS_RTOL = (2e-4, 1e-2)  # per epoch: measured 5e-5 and 2e-3 (see the module docstring)
AUGMENTED = [*SETTINGS, "--augment", "crop=1,cutout=3"]  # random draws: each rank's stream must resume exactly
CRASH_AT = 30  # global steps: the crashing run stops right after its mid-epoch-1 checkpoint (step 20) and 10 more

CRASH_SCRIPT = f"""
import sys
from cnnlab.cli import main
from cnnlab.training.checkpoint import Checkpointer

original = Checkpointer.after_step

def after_step_then_crash(self, parts, position):  # every rank fails at the same step, as a lost node would
    original(self, parts, position)
    if self.global_step == {CRASH_AT}:
        raise SystemExit(3)

Checkpointer.after_step = after_step_then_crash
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _cnnlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, env=_env(),
                          timeout=300)


def _history(run_dir: Path) -> dict[str, list[float]]:
    return dict(json.loads((run_dir / "history.json").read_text())["history"])


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process reference run, in-process (the same settings as SETTINGS)."""
    run_dir = tmp_path_factory.mktemp("single") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each distributed rank; rounding still differs (16 vs 32 images per conv)
    try:
        train_run(TrainConfig(dataset="digits", model="seed-mnist", epochs=2, batch_size=32, seed=5,
                              precision="fp32", device="cpu", tensorboard=False, checkpoint_every=20,
                              run_dir=str(run_dir)), verbose=0)
    finally:
        torch.set_num_threads(threads)
    return run_dir


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`cnnlab train --nproc 2`, uninterrupted; rank 0 names the run directory under --runs-root."""
    root = tmp_path_factory.mktemp("two") / "runs"
    done = _cnnlab("train", *SETTINGS, "--nproc", "2", "--runs-root", str(root))
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list(root.iterdir())
    assert len(runs) == 1, f"one run directory expected, found {runs}"
    assert done.stdout.count("run directory:") == 1  # only rank 0 prints
    return runs[0]


@pytest.fixture(scope="module")
def two_augmented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same on 2 processes with random augmentation, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("two-augmented") / "run"
    done = _cnnlab("train", *AUGMENTED, "--nproc", "2", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_two_processes_match_one_process(single: Path, two: Path) -> None:
    one_h, two_h = _history(single), _history(two)
    for epoch, rtol in enumerate(LOSS_RTOL):
        assert two_h["loss"][epoch] == pytest.approx(one_h["loss"][epoch], rel=rtol), epoch
    assert abs(two_h["accuracy"][-1] - one_h["accuracy"][-1]) <= 0.01
    one_m, two_m = (json.loads((r / "metrics.json").read_text()) for r in (single, two))
    assert abs(two_m["test_accuracy"] - one_m["test_accuracy"]) <= 0.01, (one_m, two_m)
    assert two_m["test_accuracy"] > 0.85  # the seed CNN learns digits in 2 epochs (measured 0.93)
    config = json.loads((two / "config.json").read_text())
    assert config["processes"] == 2 and config["batch_size"] == 32  # the global batch is recorded
    weights = load_file(two / "model.safetensors")
    assert not any(k.startswith("module.") for k in weights)  # the unwrapped model was saved
    assert sorted(p.name for p in two.iterdir() if p.name.startswith("checkpoint")) == []  # removed when done


def test_distributed_resume_gives_the_uninterrupted_weights(two_augmented: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    crashed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                              "2", str(script), "train", *AUGMENTED, "--run-dir", str(run_dir)],
                             capture_output=True, text=True, env=_env(), timeout=300)
    assert crashed.returncode != 0  # a failed rank fails the run
    position = json.loads((run_dir / "checkpoint.json").read_text())["position"]
    assert (position["epoch"], position["step"]) == (0, 20)  # the mid-epoch checkpoint, written once by rank 0
    rng = json.loads((run_dir / "checkpoint.json").read_text())["rng"]
    assert isinstance(rng, list) and len(rng) == 2  # each rank's own random stream
    assert not (run_dir / "metrics.json").exists()
    resumed = _cnnlab("train", "--resume", str(run_dir), "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = load_file(two_augmented / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key  # bit for bit
    assert _history(run_dir)["loss"] == pytest.approx(_history(two_augmented)["loss"], rel=1e-6)


def _draw_after_seed_ranks(rank: int, store: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.manual_seed(5)  # what the CLI does on every rank
        distributed.seed_ranks(5)
        torch.save(torch.rand(8), f"{out}.{rank}")
        states = distributed.gather_objects(rank * 10)
        assert states == [0, 10], states
    finally:
        torch.distributed.destroy_process_group()


def test_each_rank_draws_its_own_random_stream(tmp_path: Path) -> None:
    out = str(tmp_path / "draw")
    torch.multiprocessing.spawn(_draw_after_seed_ranks, args=(str(tmp_path / "store"), out), nprocs=2)
    first, second = torch.load(f"{out}.0", weights_only=True), torch.load(f"{out}.1", weights_only=True)
    assert not torch.equal(first, second)  # different flips, crops and dropout masks on the two ranks
    torch.manual_seed(5)
    single = torch.rand(8)
    assert not torch.equal(first, single) and not torch.equal(second, single)
    torch.manual_seed(5)
    distributed.seed_ranks(5)  # a single process keeps its --seed stream
    assert torch.equal(torch.rand(8), single)


def test_global_batch_must_divide_over_the_processes() -> None:
    assert distributed.check_batch(32, size=2) == 16
    with pytest.raises(CnnlabError, match=r"--batch-size 33 is the global batch .* use 32 or 34"):
        distributed.check_batch(33, size=2)


def test_nproc_is_dropped_from_the_relaunched_command() -> None:
    assert _without_nproc(["train", "--nproc", "2", "--epochs", "1", "--nproc=3"]) == ["train", "--epochs", "1"]
    assert distributed.launch_command(2, ["train", "--epochs", "1"]) == [
        "--standalone", "--nproc_per_node", "2", "-m", "cnnlab", "train", "--epochs", "1"]


def test_a_failed_rank_is_one_line_and_a_nonzero_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    monkeypatch.setattr(distributed, "_torchrun", lambda arguments: 3)
    with pytest.raises(CnnlabError, match="--nproc 2 failed: a process exited with status 3"):
        distributed.launch(2, ["train"], "cpu")
    assert os.environ["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))  # 2 cores: 1 thread per rank


def test_single_process_helpers_change_nothing() -> None:
    order = torch.arange(10)
    assert distributed.shard(order, 4) is order
    assert distributed.loss_share(2, 3, 4, 10) == 1.0
    assert distributed.all_reduce_sums(torch.tensor(1.5), 2) == [1.5, 2.0]
    with pytest.raises(CnnlabError, match="--sync-bn .* needs --nproc"):
        distributed.wrap(torch.nn.Linear(1, 1), distributed.Runtime(torch.device("cpu"), "fp32", False), True)
