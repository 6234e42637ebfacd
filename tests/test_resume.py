"""Checkpoints and exact resume: real processes killed with SIGKILL and SIGINT, NaN, full disk, tampering.

The runs are tiny (fast-cnn on digits, batch 256: 6 steps per epoch) so the file stays within a
few seconds of CPU per process; what they check does not depend on the size.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.jobs import train_run
from cnnlab.models.zoo import build_model
from cnnlab.training import EarlyStopping, ReduceLROnPlateau, TrainState
from cnnlab.training import checkpoint as ck

TINY = ["--dataset", "digits", "--model", "fast-cnn", "--batch-size", "256", "--epochs", "2", "--seed", "7",
        "--deterministic", "--checkpoint-every", "2", "--quiet"]


def _start(run_dir: Path, *extra: str, stderr: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "train", *TINY, "--run-dir", str(run_dir), *extra],
                            stdout=subprocess.DEVNULL, stderr=stderr)


def _wait_for_checkpoint(run_dir: Path, process: subprocess.Popen[bytes], mid_epoch: bool) -> dict:
    """Poll until the run has committed a checkpoint (mid-epoch if asked); return its position."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before the checkpoint it was to be stopped at"
        try:
            position = json.loads((run_dir / "checkpoint.json").read_text())["position"]
        except (OSError, ValueError):
            time.sleep(0.02)
            continue
        if position["step"] > 0 or not mid_epoch:
            return position
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def _in_process(*args: str) -> int:
    try:
        return main(list(args))
    finally:
        torch.use_deterministic_algorithms(False)  # in-process --deterministic: do not leak into other tests


def _resume(run_dir: Path, *extra: str) -> int:
    return _in_process("train", "--resume", str(run_dir), *extra)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path, capsys):
    victim = _start(tmp_path / "run", "--tensorboard")
    killed_at = _wait_for_checkpoint(tmp_path / "run", victim, mid_epoch=True)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert killed_at["epoch"] in (0, 1) and 0 < killed_at["step"] < 6

    assert _resume(tmp_path / "run", "--quiet") == 0
    assert _in_process("train", *TINY, "--no-tensorboard", "--run-dir", str(tmp_path / "reference")) == 0
    ours = load_file(tmp_path / "run" / "model.safetensors")
    theirs = load_file(tmp_path / "reference" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), "resumed weights differ from the uninterrupted run"
    history = json.loads((tmp_path / "run" / "history.json").read_text())["history"]
    expected = json.loads((tmp_path / "reference" / "history.json").read_text())["history"]
    assert history == expected and len(history["loss"]) == 2  # epochs 1..2 once each, same sums to the last bit
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "0", "1"]
    assert not list((tmp_path / "run").glob("checkpoint*"))  # a finished run keeps no checkpoint

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run")).Reload()
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [0, 1]  # each epoch once, the killed attempt's purged
    assert [e.value for e in events.Scalars("loss")] == pytest.approx(history["loss"])
    table = events.Tensors("predictions/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| image | true | predicted | probability |")
    assert table.count("\n") == 1 + 8  # header, rule and 8 rows
    assert "samples" in events.Tags()["images"]  # the 8 sample images the table numbers

    capsys.readouterr()
    assert _resume(tmp_path / "reference") == 2
    assert "already finished" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, monkeypatch, capsys):
    """A real SIGINT, delivered to this process right after its first checkpoint (step 2 of epoch 1)."""
    real = ck.write_checkpoint

    def write_then_ctrl_c(directory, checkpoint):
        path = real(directory, checkpoint)
        if checkpoint.meta["global_step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return path

    monkeypatch.setattr(ck, "write_checkpoint", write_then_ctrl_c)
    run = tmp_path / "run"
    args = [a for a in TINY if a != "--deterministic"]  # in-process: leave torch's global setting alone
    assert main(["train", *args, "--run-dir", str(run), "--no-tensorboard"]) == 130
    assert f"resume with: cnnlab train --resume {run}" in capsys.readouterr().err
    saved = ck.read_checkpoint(run)  # complete and intact (sha256 checked), at a step boundary
    assert (saved.meta["position"]["epoch"], saved.meta["position"]["step"]) == (0, 2)
    assert not (run / "model.safetensors").exists()


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--model", "fast-cnn", "--batch-size", "256", "--epochs", "1",
            "--lr", "1e30", "--checkpoint-every", "1", "--seed", "1", "--run-dir", str(run), "--quiet",
            "--no-tensorboard"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "the loss became nan at epoch 1, step 2;" in err  # step 1's update blew the weights up to ~1e30
    assert f"the last good checkpoint (epoch 1, step 1) is kept in {run}" in err
    saved = ck.read_checkpoint(run)
    assert saved.meta["position"] == {**saved.meta["position"], "epoch": 0, "step": 1}
    assert all(torch.isfinite(t).all() for k, t in saved.tensors.items() if k.startswith("model."))


def test_unwritable_run_directory_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["train", "--epochs", "1", "--run-dir", str(blocker / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"run directory {blocker / 'run'} cannot be written" in err and "Not a directory" in err


def test_full_disk_at_a_checkpoint_keeps_the_previous_one_then_tampering_is_caught(tmp_path, monkeypatch, capsys):
    writes = []
    real = ck.atomic_write

    def disk_fills_up(path, write, **kwargs):
        if path.suffix == ".safetensors" and path.name.startswith("checkpoint-"):
            writes.append(path)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write, **kwargs)

    monkeypatch.setattr(ck, "atomic_write", disk_fills_up)
    run = tmp_path / "run"
    config = TrainConfig(model="fast-cnn", batch_size=256, epochs=1, seed=3, checkpoint_every=2, run_dir=str(run),
                         tensorboard=False)
    with pytest.raises(CnnlabError, match=rf"could not write checkpoint {run}/checkpoint-E0-S4-\w+.safetensors: No "
                                          r"space left on device \(ENOSPC\); the previous checkpoint is kept"):
        train_run(config, verbose=0)
    assert str(writes[1].name) not in [p.name for p in run.iterdir()]  # no half-written file left behind
    saved = ck.read_checkpoint(run)
    assert (saved.meta["position"]["epoch"], saved.meta["position"]["step"]) == (0, 2)

    assert _resume(run, "--lr", "0.5") == 2  # settings other than --epochs are checked against config.json
    assert "learning_rate=0.5 (the run has 0.001)" in capsys.readouterr().err
    tensors = run / saved.meta["tensors"]["file"]
    blob = bytearray(tensors.read_bytes())
    blob[-1] ^= 1
    tensors.write_bytes(bytes(blob))
    assert _resume(run) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256 differs" in err


SPEEDRUN = ["--dataset", "digits", "--recipe", "speedrun", "--widths", "8", "16", "16", "--batch-size", "64",
            "--epochs", "40", "--seed", "3", "--device", "cpu", "--precision", "fp32", "--quiet"]


def test_speedrun_stopped_between_epochs_resumes_to_the_uninterrupted_weights(tmp_path):
    """A long CPU speed-run checkpoints at every epoch end; Ctrl-C there stops at once and says how to resume;
    --resume gives the uninterrupted run's weights, bit for bit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same kernels in every process
    victim = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", *SPEEDRUN, "--run-dir", str(tmp_path / "run")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while not (tmp_path / "run" / "checkpoint.json").is_file():
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.01)
    victim.send_signal(signal.SIGINT)
    _, err = victim.communicate(timeout=60)
    assert victim.returncode == 130, err.decode()[-2000:]
    assert f"resume with: cnnlab train --resume {tmp_path / 'run'}" in err.decode()
    assert not (tmp_path / "run" / "metrics.json").exists()  # stopped part-way (40 epochs take several seconds)
    done = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["position"]["epoch"]
    assert 1 <= done < 40
    for extra in (["--resume", str(tmp_path / "run")], [*SPEEDRUN, "--run-dir", str(tmp_path / "reference")]):
        finished = subprocess.run([sys.executable, "-m", "cnnlab", "train", *extra], capture_output=True, text=True,
                                  env=env, timeout=600)
        assert finished.returncode == 0, finished.stderr[-2000:]
    ours, theirs = (load_file(d / "model.safetensors") for d in (tmp_path / "run", tmp_path / "reference"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    history, expected = (json.loads((d / "history.json").read_text())["history"]
                         for d in (tmp_path / "run", tmp_path / "reference"))
    assert history == expected and len(history["loss"]) == 40  # every epoch once, same numbers to the last bit
    assert not list((tmp_path / "run").glob("checkpoint*"))


def test_ctrl_c_is_a_flag_even_when_it_lands_in_a_finalizer():
    """A KeyboardInterrupt raised inside __del__ is only printed, so a run could miss Ctrl-C; a flag is not lost.
    The second Ctrl-C stops at once, and the previous handler is back afterwards."""
    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)

    asked: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    with ck.catch_sigint(lambda: asked.append("stop")):
        Finalized()  # dropped at once: the signal arrives inside its finalizer
        assert asked == ["stop"]
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_speedrun_stops_after_the_step_where_ctrl_c_came(tmp_path):
    """In-process: the flag is checked after every step; before the first checkpoint nothing is claimed saved,
    after it the run stops with TrainingInterrupted and the last epoch-end checkpoint stays."""
    from cnnlab.data import load_dataset
    from cnnlab.models.speedrun import SpeedrunNet
    from cnnlab.training.devices import resolve_runtime
    from cnnlab.training.speedrun import SpeedrunCheckpoints, SpeedrunConfig, train_speedrun

    data = load_dataset("digits", split="train")
    config = SpeedrunConfig(batch_size=64, epochs=3, widths=(8, 8, 8))
    keep = SpeedrunCheckpoints(tmp_path, interrupted=True)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train_speedrun(SpeedrunNet(data.input_shape, 10, (8, 8, 8)), data, config, resolve_runtime("cpu", "fp32"),
                       checkpoints=keep)
    assert type(stopped.value) is KeyboardInterrupt and not list(tmp_path.iterdir())

    class StopInEpoch2(SpeedrunCheckpoints):  # asks to stop once the first checkpoint exists
        def check(self, saved: bool) -> None:
            self.interrupted = (tmp_path / ck.CHECKPOINT_JSON).is_file()
            super().check(saved)

    with pytest.raises(ck.TrainingInterrupted) as stopped:
        train_speedrun(SpeedrunNet(data.input_shape, 10, (8, 8, 8)), data, config, resolve_runtime("cpu", "fp32"),
                       checkpoints=StopInEpoch2(tmp_path))
    assert stopped.value.resume_command == f"cnnlab train --resume {tmp_path}"
    assert json.loads((tmp_path / ck.CHECKPOINT_JSON).read_text())["position"]["epoch"] == 1


def test_resume_refusals_are_one_line(tmp_path, capsys):
    assert _resume(tmp_path) == 2
    assert "not a run directory (no config.json)" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"recipe": "speedrun", "epochs": 3}))
    assert _resume(tmp_path, "--epochs", "5") == 2  # its learning rates follow the planned total
    assert "--epochs may only grow, and only for one-phase runs with the constant schedule" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"epochs": 3}))
    assert _resume(tmp_path) == 2
    assert "stopped before its first checkpoint" in capsys.readouterr().err


def test_checkpoint_round_trip_restores_every_state(tmp_path):
    """Optimizer moments, scheduler, callback counters (with EarlyStopping's best weights), RNG, history."""
    def parts(model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-2, total_steps=10)
        callbacks = [EarlyStopping("loss", patience=3, restore_best_weights=True), ReduceLROnPlateau("loss")]
        return ck.LoopParts(model, optimizer, scheduler, None, callbacks, TrainState(model, 1e-3), {}, [], 5, 7)

    torch.manual_seed(0)
    a = parts(build_model("fast-cnn"))
    a.model(torch.rand(4, 1, 28, 28)).sum().backward()
    a.optimizer.step()
    a.scheduler.step()
    for epoch, loss in enumerate([1.0, 0.5, 0.7]):
        for cb in a.callbacks:
            cb.on_epoch_end(epoch, {"loss": loss}, a.state)
    a.history["loss"] = [1.0, 0.5, 0.7]
    position = ck.Position(1, 3, 12, torch.tensor(4.25), torch.tensor(9.0), 0.5)
    ck.write_checkpoint(tmp_path, ck.gather_checkpoint(a, position, global_step=9))
    draw = torch.rand(3)  # what the RNG gives after the checkpoint

    b = parts(build_model("fast-cnn"))
    at = ck.restore_checkpoint(ck.read_checkpoint(tmp_path), b)
    assert (at.epoch, at.step, at.seen, float(at.loss_sum), float(at.correct)) == (1, 3, 12, 4.25, 9.0)
    weights_a, weights_b = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert str(a.optimizer.state_dict()) == str(b.optimizer.state_dict())
    assert a.scheduler.state_dict() == b.scheduler.state_dict()
    assert [cb.state_dict().keys() for cb in a.callbacks] == [cb.state_dict().keys() for cb in b.callbacks]
    es_a, es_b = a.callbacks[0], b.callbacks[0]
    assert (es_b.wait, es_b.best_epoch, es_b.tracker.best) == (es_a.wait, es_a.best_epoch, 0.5) == (1, 1, 0.5)
    assert all(torch.equal(es_a.best_state[k], es_b.best_state[k]) for k in es_a.best_state)
    assert b.history == {"loss": [1.0, 0.5, 0.7]} and torch.equal(torch.rand(3), draw)


def test_epoch_order_depends_on_seed_and_epoch_only():
    first = ck.epoch_order(100, 5, 3)
    assert torch.equal(first, ck.epoch_order(100, 5, 3)) and sorted(first.tolist()) == list(range(100))
    assert not torch.equal(first, ck.epoch_order(100, 5, 4)) and not torch.equal(first, ck.epoch_order(100, 6, 3))


def test_epochs_shorter_than_their_checkpoint_write_are_checkpointed_less_often_and_resume_exactly(tmp_path):
    """A head on stored features: epochs of 0.01 s with a write of 0.05 s wait for 10x the write time to
    checkpoint again; the resume is still exact. Epochs of a whole model are each checkpointed."""
    from cnnlab.data import load_dataset
    from cnnlab.training import fit
    from cnnlab.training.features import FeatureSettings

    data = load_dataset("digits").subset(range(64))
    writes: list[int] = []

    def slow_write(directory, checkpoint):
        time.sleep(0.05)
        writes.append(checkpoint.meta["global_step"])
        return ck.write_checkpoint(directory, checkpoint)

    def train(epochs, directory, resume=None, frozen=True):
        torch.manual_seed(0)
        model = build_model("seed-mnist")
        model[0].requires_grad_(not frozen)  # a frozen first convolution: its output is computed once
        keeper = ck.Checkpointer(directory, write=slow_write, resume=resume)
        history = fit(model, data, epochs=epochs, batch_size=32, seed=3, verbose=0, checkpoint=keeper,
                      features=FeatureSettings())
        assert history.features["used"] is frozen
        return model

    train(3, tmp_path / "every", frozen=False)
    assert writes == [2, 4, 6]  # every epoch end of a whole model
    writes.clear()
    whole = train(8, tmp_path / "whole")
    assert 1 <= len(writes) < 8 and writes[0] == 2  # the first epoch end (2 steps) writes; the next ones wait
    # a run stopped after its 8 epochs' last write resumes from that write and ends where `whole` ended
    resumed = train(8, tmp_path / "whole", ck.read_checkpoint(tmp_path / "whole"))
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(),
                                                  strict=True))
