"""Issue 18, run directories: damaged JSON, a full disk, a second claimant, leftovers, archives, the launcher.

Every entry point that reads or writes a run directory (train, train --resume, fine-tune, the
speed-run, evaluate, curves, rank 0 of `--nproc`) meets each failure here and must answer with
exit status 2 and exactly one stderr line `error: ...` that names the file, with nothing already
written lost. Runs are tiny (fast-cnn on the built-in digits, batch 256: 6 steps an epoch).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnlab.data.archives as archives
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.rundir import LOCK_NAME, claim_run_dir
from cnnlab.training import checkpoint as ck
from cnnlab.training.allocator import allocator_policy
from cnnlab.training.threads import available_cores

pytestmark = pytest.mark.timeout(300)

TINY = ["--dataset", "digits", "--model", "fast-cnn", "--batch-size", "256", "--epochs", "2", "--seed", "7",
        "--checkpoint-every", "2", "--quiet", "--no-tensorboard", "--device", "cpu", "--precision", "fp32"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, err: str, *names: str | Path) -> str:
    """Exit 2 and one `error:` line naming each of `names`; the line."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete 1-epoch run."""
    path = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--run-dir", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def transfer(finished: Path) -> Path:
    """A 1-epoch transfer-learning run (frozen backbone: `finished`'s model) that fine-tune can continue."""
    path = finished.parent / "experiments" / "transfer"
    assert main(["train", *TINY, "--epochs", "1", "--weights", str(finished), "--freeze", "--run-dir", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped by Ctrl-C right after its first checkpoint (epoch 1, step 2): resumable."""
    path = tmp_path_factory.mktemp("stopped") / "run"
    real = ck.write_checkpoint

    def write_then_ctrl_c(directory: Path, checkpoint: ck.Checkpoint) -> Path:
        written = real(directory, checkpoint)
        os.kill(os.getpid(), signal.SIGINT)
        return written

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ck, "write_checkpoint", write_then_ctrl_c)
        assert main(["train", *TINY, "--run-dir", str(path)]) == 130
    return path


def copy(run_dir: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / name))


# ---------------------------------------------------------------- cause 5: a run's JSON files, damaged

DAMAGE = {"not JSON": b'{"dataset": "digits",', "not UTF-8": b'{"dataset": "digits\xff"}',
          "a list": b"[1, 2]", "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("command", ["fine-tune", "train --resume", "evaluate", "curves"])
def test_a_damaged_run_json_is_one_line_naming_it(command, damage, finished, stopped, tmp_path, capsys):
    run_dir = copy(stopped if command == "train --resume" else finished, tmp_path)
    damaged = run_dir / ("history.json" if command == "curves" else "config.json")
    damaged.write_bytes(DAMAGE[damage])
    argv = {"fine-tune": ["fine-tune", str(run_dir), "--unfreeze-top", "1"],
            "train --resume": ["train", "--resume", str(run_dir)],
            "evaluate": ["evaluate", str(run_dir)], "curves": ["curves", str(run_dir), "-o", str(tmp_path / "c.png")]}
    code, out, err = run(capsys, *argv[command])
    line = refused(code, err, damaged)
    assert any(word in line for word in ("JSON", "UTF-8", "nested")), line
    assert out == "" and not (tmp_path / "c.png").exists()


# ---------------------------------------------------------------- cause 6: checkpoint.json edited by hand

def _edit(meta: dict, edit: str) -> dict:
    if edit == "step moved":  # plausible values: only the manifest's own digest can tell
        meta["position"]["step"] = 3
    elif edit == "model entry removed":
        del meta["model"]
    elif edit == "old format, global_step text":  # written before manifest_sha256 existed: the restore's net
        del meta["manifest_sha256"]
        meta["global_step"] = "two"
    elif edit == "old format, callbacks cut":
        del meta["manifest_sha256"]
        meta["callbacks"] = meta["callbacks"][:1]
        meta["steps_per_epoch"] = {"six": 6}
    return meta


@pytest.mark.parametrize("edit", ["step moved", "model entry removed", "old format, global_step text",
                                  "old format, callbacks cut"])
def test_an_edited_checkpoint_json_is_refused_in_one_line(edit, stopped, tmp_path, capsys):
    run_dir = copy(stopped, tmp_path)
    manifest = run_dir / "checkpoint.json"
    manifest.write_text(json.dumps(_edit(json.loads(manifest.read_text()), edit)))
    code, _, err = run(capsys, "train", "--resume", str(run_dir), "--quiet")
    refused(code, err, manifest)
    assert json.loads(manifest.read_text())  # left as it was, for the user to look at


def test_a_reformatted_checkpoint_json_still_resumes(stopped, tmp_path, capsys):
    """The digest covers the content, not its spacing or key order."""
    run_dir = copy(stopped, tmp_path)
    manifest = run_dir / "checkpoint.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()), indent=4, sort_keys=True))
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "metrics.json").is_file()


# ---------------------------------------------------------------- cause 7: a full disk while writing run files

@pytest.fixture
def full_disk_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail with ENOSPC every write of the files named in the list (atomic renames, history.csv, curves.png)."""
    names: list[str] = []
    real_replace, real_open = os.replace, Path.open

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name in names:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    def open_(self, mode="r", *args, **kwargs):
        if self.name in names and mode[0] in "wa":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    def plot(history, path, **kwargs):
        if Path(path).name in names:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_plot(history, path, **kwargs)

    import cnnlab.viz.curves as curves  # jobs imports plot_history from here when a run ends

    real_plot = curves.plot_history
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "open", open_)
    monkeypatch.setattr(curves, "plot_history", plot)
    yield names


@pytest.mark.parametrize("name", ["best.safetensors", "history.csv", "model.safetensors", "metrics.json",
                                  "curves.png"])
def test_a_full_disk_mid_run_is_one_line_and_the_run_resumes(name, full_disk_for, tmp_path, capsys):
    run_dir = tmp_path / "run"
    # best.safetensors and history.csv: the disk fills up at the end of epoch 2, after epoch 1's files
    full_disk_for.append(name) if name not in ("best.safetensors", "history.csv") else None
    real_write, best = ck.write_checkpoint, {}

    def fill_after_epoch_one(directory, checkpoint):
        if checkpoint.meta["position"] == {**checkpoint.meta["position"], "epoch": 1, "step": 0}:
            full_disk_for.append(name)
            best["epoch 1"] = (directory / "best.safetensors").read_bytes()
        return real_write(directory, checkpoint)

    ck_patch = pytest.MonkeyPatch()
    ck_patch.setattr(ck, "write_checkpoint", fill_after_epoch_one)
    try:
        code, _, err = run(capsys, "train", *TINY, "--run-dir", str(run_dir))
    finally:
        ck_patch.undo()
    line = refused(code, err, run_dir / name, "No space left on device (ENOSPC); free disk space")
    assert f"resume with: cnnlab train --resume {run_dir}" in line
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / LOCK_NAME).exists()
    if name == "best.safetensors":  # epoch 1's best model is intact (epoch 2 improved on it, but could not save)
        assert (run_dir / "best.safetensors").read_bytes() == best["epoch 1"]
        assert load_file(run_dir / "best.safetensors")
    full_disk_for.clear()  # space freed
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "metrics.json").is_file() and (run_dir / name).is_file()


def test_a_full_disk_at_the_start_leaves_no_run_directory(full_disk_for, tmp_path, capsys):
    full_disk_for.append("config.json")
    code, _, err = run(capsys, "train", *TINY, "--run-dir", str(tmp_path / "run"))
    line = refused(code, err, tmp_path / "run" / "config.json", "(ENOSPC)")
    assert "resume" not in line and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- cause 10: one process per run directory

def _speedrun(run_dir: Path) -> list[str]:
    return ["train", "--dataset", "digits", "--recipe", "speedrun", "--widths", "8", "16", "16", "--batch-size", "64",
            "--epochs", "2", "--device", "cpu", "--precision", "fp32", "--quiet", "--run-dir", str(run_dir)]


@pytest.mark.parametrize("entry", ["train", "train --resume", "fine-tune", "speedrun"])
def test_a_claimed_run_directory_is_refused_naming_its_owner(entry, stopped, transfer, tmp_path, capsys):
    held = copy(stopped, tmp_path) if entry == "train --resume" else tmp_path / "held"
    argv = {"train": ["train", *TINY, "--run-dir", str(held)], "train --resume": ["train", "--resume", str(held)],
            "fine-tune": ["fine-tune", str(transfer), "--unfreeze-top", "1", "--run-dir", str(held)],
            "speedrun": _speedrun(held)}[entry]
    with claim_run_dir(held, new=entry != "train --resume"):  # another process's claim, as far as the CLI sees
        before = sorted(p.name for p in held.iterdir())
        code, out, err = run(capsys, *argv)
        assert sorted(p.name for p in held.iterdir()) == before  # untouched
    refused(code, err, held, f"in use by process {os.getpid()}", held / LOCK_NAME)
    assert out == ""


def test_a_stale_claim_and_a_killed_writers_temp_files_are_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text("999999\n")  # its owner died (SIGKILL) before writing anything
    (run_dir / ".config.json.a1b2.tmp").write_text("{")
    assert main(["train", *TINY, "--epochs", "1", "--run-dir", str(run_dir)]) == 0
    names = {p.name for p in run_dir.iterdir()}
    assert "metrics.json" in names and LOCK_NAME not in names and ".config.json.a1b2.tmp" not in names


def test_two_trainings_started_together_on_one_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "cnnlab", "train", *TINY, "--run-dir", str(run_dir)]
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=240), p.stderr.read()) for p in both)  # type: ignore[union-attr]
    assert [code for code, _ in results] == [0, 2], results
    refused(2, results[1][1], run_dir)
    assert "in use by process" in results[1][1] or "already exists and is not empty" in results[1][1]
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 7 and (run_dir / "metrics.json").is_file()


def test_automatic_names_taken_meanwhile_get_the_next_suffix(tmp_path):
    with claim_run_dir(tmp_path / "digits-x", new=True, numbered=True) as first, \
            claim_run_dir(tmp_path / "digits-x", new=True, numbered=True) as second:
        assert (first.path.name, second.path.name) == ("digits-x", "digits-x-2")


# ---------------------------------------------------------------- cause 13: leftovers of killed writes

def test_resume_removes_a_killed_checkpoint_writes_leftovers(stopped, tmp_path, capsys):
    run_dir = copy(stopped, tmp_path)
    leftovers = [".checkpoint.json.k1.tmp", ".checkpoint-E0-S4-dead.safetensors.k2.tmp",
                 "checkpoint-E0-S4-dead.safetensors", ".best.safetensors.k3.tmp"]
    for name in leftovers:
        (run_dir / name).write_bytes(b"half")
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert not {p.name for p in run_dir.iterdir()} & set(leftovers)


# ---------------------------------------------------------------- cause 9: archive sizes

def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return path


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def _left_in(data_dir: Path) -> list[str]:
    extracted = data_dir / "extracted"
    return sorted(p.name for p in extracted.iterdir()) if extracted.is_dir() else []


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(archives, "RATIO_FLOOR_BYTES", 1024**2)  # the ratio applies from 1 MiB (1 GiB in use)
    return tmp_path / "data"


@pytest.mark.parametrize("command", ["train", "check-data"])
def test_a_zip_bomb_is_refused_before_writing(command, data_dir, tmp_path, capsys):
    bomb = _zip(tmp_path / "pets.zip", {"pets/cat/1.png": _tiny_png(), "pets/dog/zeros.png": bytes(8 * 1024**2)})
    assert bomb.stat().st_size < 30_000  # 8 MiB of zeros deflate about 1000:1
    argv = ["train", str(bomb), "--epochs", "1", "--run-dir", str(tmp_path / "run")] if command == "train" \
        else ["check-data", str(bomb)]
    code, out, err = run(capsys, *argv)
    line = refused(code, err, bomb, "$CNNLAB_MAX_EXTRACT_RATIO")
    assert "decompression bomb" in line and _left_in(data_dir) == [] and not (tmp_path / "run").exists()


def test_the_total_bound_is_a_setting(data_dir, tmp_path, monkeypatch, capsys):
    images = {f"pets/{c}/{i}.png": _tiny_png() + os.urandom(200_000) for c in ("cat", "dog") for i in range(4)}
    archive = _zip(tmp_path / "pets.zip", images)  # 1.6 MB extracted, as large packed; PNG readers stop at IEND
    monkeypatch.setenv("CNNLAB_MAX_EXTRACT_GB", "0.001")  # 1 MiB
    code, _, err = run(capsys, "check-data", str(archive))
    refused(code, err, archive, "more than the 0.001 GiB allowed; set $CNNLAB_MAX_EXTRACT_GB higher")
    assert _left_in(data_dir) == []
    monkeypatch.setenv("CNNLAB_MAX_EXTRACT_GB", "1")
    assert load_dataset(str(archive)).class_names == ["cat", "dog"]
    monkeypatch.setenv("CNNLAB_MAX_EXTRACT_GB", "lots")
    with pytest.raises(Exception, match=r"\$CNNLAB_MAX_EXTRACT_GB='lots' is not a positive number"):
        archives.check_extract_size(archive, 1, tmp_path)


def test_a_zip_whose_header_understates_a_member_is_refused(data_dir, tmp_path, capsys):
    archive = _zip(tmp_path / "pets.zip", {"pets/cat/1.png": _tiny_png(), "pets/dog/1.png": bytes(4 * 1024**2)})
    blob = bytearray(archive.read_bytes())
    central = blob.rindex(b"PK\x01\x02")  # the last member's central-directory entry: its uncompressed size
    blob[central + 24:central + 28] = (100).to_bytes(4, "little")
    archive.write_bytes(bytes(blob))
    code, _, err = run(capsys, "check-data", str(archive))
    refused(code, err, archive)
    assert _left_in(data_dir) == []


def test_no_room_for_an_archive_is_refused_before_writing(data_dir, tmp_path, monkeypatch, capsys):
    archive = _zip(tmp_path / "pets.zip", {"pets/cat/1.png": _tiny_png(), "pets/dog/1.png": _tiny_png()})
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10**6))
    code, _, err = run(capsys, "check-data", str(archive))
    refused(code, err, archive, "MiB free; free disk space")
    assert _left_in(data_dir) == []


def test_a_full_disk_during_extraction_keeps_nothing_then_leftovers_are_cleaned(data_dir, tmp_path, monkeypatch,
                                                                                 capsys):
    source = tmp_path / "src"
    for c in ("cat", "dog"):
        (source / "pets" / c).mkdir(parents=True)
        (source / "pets" / c / "1.png").write_bytes(_tiny_png())
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "pets", "pets")
    real = tarfile.TarFile.extractall

    def disk_fills(self, path, *args, **kwargs):
        (Path(path) / "half.png").write_bytes(b"\x89PNG")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", disk_fills)
    code, _, err = run(capsys, "check-data", str(archive))
    refused(code, err, archive, "No space left on device (ENOSPC); nothing was kept")
    assert _left_in(data_dir) == []
    # a killed extraction's folder (no lock held) is removed by the next extraction of that archive
    target = f"pets-{archives._archive_key(archive.resolve())}"
    killed = data_dir / "extracted" / f".{target}.x9.partial"
    (killed / "pets").mkdir(parents=True)
    monkeypatch.setattr(tarfile.TarFile, "extractall", real)
    assert load_dataset(str(archive)).class_names == ["cat", "dog"]
    assert _left_in(data_dir) == [target]


# ---------------------------------------------------------------- surprises: what was chosen is said and kept

def test_the_runtime_and_class_weights_are_printed_and_recorded(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, _ = run(capsys, "train", *TINY, "--epochs", "1", "--class-weights", "auto", "--run-dir", str(run_dir))
    assert code == 0
    threads, cores = torch.get_num_threads(), available_cores()[1]
    policy = f"{threads} thread{'s' if threads > 1 else ''}: {cores}; a run of 6 steps is too short to measure"
    first, second = out.splitlines()[:2]
    assert first == f"runtime: cpu ({policy}), fp32, channels_last, not compiled, 1 process"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["runtime"] == {"device": "cpu", "device_name": "cpu", "precision": "fp32", "channels_last": True,
                                 "threads": threads, "thread_policy": policy, "compile": False, "processes": 1,
                                 "allocator": allocator_policy()}
    # inverse class frequency, by hand: n / (classes * count) over the training split
    labels = load_dataset("digits").labels
    counts = torch.bincount(labels, minlength=10).double()
    expected = (len(labels) / (10 * counts)).tolist()
    assert list(config["class_weight_values"]) == [str(d) for d in range(10)]
    assert list(config["class_weight_values"].values()) == pytest.approx(expected, rel=1e-6)
    assert second.startswith("class weights (auto, inverse class frequency): 0 ")
    assert f"9 {expected[9]:.3g}" in second


def test_fine_tune_writes_its_run_beside_the_run_it_continues(transfer, tmp_path, monkeypatch, capsys):
    parent = copy(transfer, tmp_path / "experiments", "transfer").parent
    monkeypatch.chdir(tmp_path)  # not where the runs are
    assert main(["fine-tune", str(parent / "transfer"), "--unfreeze-top", "1", "--epochs", "1", "--quiet"]) == 0
    (new,) = [p for p in parent.iterdir() if p.name != "transfer"]
    assert json.loads((new / "config.json").read_text())["init_from"] == str(parent / "transfer")
    assert not (tmp_path / "runs").exists()
    assert main(["fine-tune", str(parent / "transfer"), "--unfreeze-top", "1", "--epochs", "1", "--quiet",
                 "--runs-root", str(tmp_path / "elsewhere")]) == 0
    assert len(list((tmp_path / "elsewhere").iterdir())) == 1


def test_a_resumed_quiet_run_shows_no_bars(stopped, tmp_path, capsys):
    run_dir = copy(stopped, tmp_path)
    code, out, err = run(capsys, "train", "--resume", str(run_dir), "--quiet")
    assert code == 0 and err == "" and out.startswith("runtime: cpu")


# ---------------------------------------------------------------- cause 11: the --nproc launcher and its workers

DISTRIBUTED = ["train", "--dataset", "digits", "--model", "seed-mnist", "--batch-size", "32", "--device", "cpu",
               "--precision", "fp32", "--no-tensorboard", "--quiet", "--nproc", "2"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _launch(run_dir: Path, epochs: int = 50) -> subprocess.Popen[str]:
    launcher = subprocess.Popen([sys.executable, "-m", "cnnlab", *DISTRIBUTED, "--epochs", str(epochs),
                                 "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run_dir / "config.json").is_file():  # rank 0 has claimed the directory and started training
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.1)
    return launcher


def _alive(pids: list[int]) -> list[int]:
    """The processes not yet gone: a zombie leader whose other threads still exit holds its files (and locks)."""
    alive = []
    for pid in pids:
        try:
            status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if ":\t" in line)
        except OSError:
            continue
        if not status["State"].startswith("Z") or int(status["Threads"]) > 1:
            alive.append(pid)
    return alive


def _gone(pids: list[int], seconds: float) -> list[int]:
    """Wait up to `seconds` for `pids` to end; those still alive."""
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_launcher_and_the_run_can_resume(tmp_path):
    run_dir = tmp_path / "run"
    launcher = _launch(run_dir)
    workers = _children(launcher.pid)
    assert len(workers) == 2
    launcher.kill()
    launcher.wait()
    assert _gone(workers, seconds=10) == [], "workers outlived their launcher"
    with claim_run_dir(run_dir, new=False):  # nobody holds the run any more
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("failure", ["a rank killed", "ctrl-c"])
def test_a_dying_rank_or_ctrl_c_ends_the_job_without_tracebacks(failure, tmp_path):
    run_dir = tmp_path / "run"
    launcher = _launch(run_dir)
    workers = _children(launcher.pid)
    if failure == "a rank killed":  # as the out-of-memory killer would
        os.kill(max(workers), signal.SIGKILL)
    else:
        launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=120)
    assert "Traceback" not in err and "[rank" not in err, err
    if failure == "a rank killed":
        assert launcher.returncode == 2
        assert err.strip().splitlines()[-1].startswith("error: distributed training with --nproc 2 failed: a "
                                                       "process was killed by SIGKILL")
    else:
        assert launcher.returncode == 130 and err.strip().splitlines() == ["interrupted"], err
    assert _gone(workers, seconds=10) == []


def test_only_rank_zero_claims_and_a_claimed_directory_stops_every_rank(tmp_path):
    held = tmp_path / "held"
    with claim_run_dir(held, new=True):
        done = subprocess.run([sys.executable, "-m", "cnnlab", *DISTRIBUTED, "--epochs", "1", "--run-dir", str(held)],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"run directory {held} is in use by process {os.getpid()}" in done.stderr
    assert sorted(p.name for p in held.parent.iterdir()) == []  # released by us, nothing written by the job
