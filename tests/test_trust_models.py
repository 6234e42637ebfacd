"""Issue 18, model files and the command shell: every entry point gets one mechanism per cause.

- cause 2: a model card is checked against the network it describes (on the meta device) before any
  weight is read: input shape, channels, class count, outputs, and the memory one image needs;
- cause 3: a card's size and nesting depth are bounded before and while it is parsed;
- checksums: a flipped weight byte fails in one line; files without a checksum still load;
- cause 8: every command that writes checks its output path first (`cnnlab.outputs.output_path`) and
  turns a failing write into one line (`writing_to`);
- cause 12 and closed pipes: Ctrl-C during start-up and `| head` exit quietly (130, 141);
- surprises: predict --csv and duplicate files, .onnx given to predict/evaluate, conv-arithmetic's own
  sizes, model.json saying it is a copy, model files readable by other users.
Every file is generated here in tmp_path; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cnnlab import CnnlabError, build_model, load_model, save_model
from cnnlab.cli import main
from cnnlab.models.cards import MAX_CARD_BYTES

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]
CLASSES = [str(i) for i in range(10)]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; it must fail with exactly one `error:` line, no traceback and nothing on stdout."""
    code, out, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    return lines[0]


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained seed-mnist model file (28x28x1, 10 classes, softmax)."""
    return save_model(build_model("seed-mnist"), tmp_path_factory.mktemp("good") / "m.safetensors", CLASSES,
                      (28, 28, 1))


@pytest.fixture()
def digit(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    Image.new("L", (28, 28), 7).save(path)
    return path


def card_of(path: Path) -> dict:
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    return json.loads(header["__metadata__"]["cnnlab"])


def write_model(target: Path, good: Path, card: dict | str, model: torch.nn.Module | None = None) -> Path:
    """A model file at `target`: seed-mnist's weights (or `model`'s) under the description `card`."""
    state = {k: v.contiguous() for k, v in (model or build_model("seed-mnist")).state_dict().items()}
    save_file(state, str(target), metadata={"cnnlab": card if isinstance(card, str) else json.dumps(card)})
    return target


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


# name -> (how the good card is changed, what the error line says)
TAMPERED_CARDS: dict[str, tuple[Callable[[dict], dict | str], str]] = {
    "huge_input_shape": (lambda c: dict(c, input_shape=[1000000, 1000000, 1]),
                         "is larger than any model cnnlab reads (at most 8192 pixels a side)"),
    "other_height": (lambda c: dict(c, input_shape=[30, 28, 1]),
                     "the architecture takes 28x28 images but the description says input_shape [30, 28, 1]"),
    "registry_other_size": (lambda c: dict(c, architecture={"name": "seed-mnist"}, input_shape=[40, 40, 1]),
                            "the weights do not match the described architecture (dense.weight is [64, 1600]"),
    "outputs_flipped": (lambda c: dict(c, outputs="logits"),
                        "the architecture outputs probabilities but the description says outputs 'logits'"),
    "preprocessing_edited": (lambda c: dict(c, preprocessing={"scale": 1.0, "channels_first": True}),
                             "preprocessing must be {'scale': 0.00392156862745098, 'channels_first': True}"),
    "duplicate_class_names": (lambda c: dict(c, class_names=["0"] * 10), "class_names must be unique, got '0' twice"),
    "future_format": (lambda c: dict(c, format="cnnlab-model/2"), "format must be 'cnnlab-model/1'"),
    "text_metric": (lambda c: dict(c, metrics={"accuracy": "high"}), "metrics must be numbers, got accuracy='high'"),
    "recursion_deep": (lambda c: json.dumps(c)[:-1] + f', "training_config": {_nested(100000)}}}',
                       "nested more than 32 levels deep"),
    "parsable_but_deep": (lambda c: json.dumps(c)[:-1] + f', "training_config": {_nested(500)}}}',
                          "nested more than 32 levels deep"),
    "oversized": (lambda c: dict(c, training_config={"x": "a" * MAX_CARD_BYTES}),
                  f"more than the {MAX_CARD_BYTES:,} a model file may hold"),
}


@pytest.mark.parametrize("kind", list(TAMPERED_CARDS))
def test_a_tampered_card_is_refused_in_one_line_by_every_entry_point(
        kind: str, tmp_path: Path, good: Path, digit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    change, reason = TAMPERED_CARDS[kind]
    target = write_model(tmp_path / "model.safetensors", good, change(card_of(good)))
    before = snapshot(tmp_path)
    with pytest.raises(CnnlabError, match="^" + str(target).replace(".", r"\.")) as caught:
        load_model(target)
    assert reason in str(caught.value)
    for argv in (["summary", str(target)], ["predict", str(target), str(digit)],
                 ["evaluate", str(target), "--dataset", "digits"],
                 ["filters", str(target), "-o", str(tmp_path / "f.png")],
                 ["feature-maps", str(target), str(digit), "-o", str(tmp_path / "maps")],
                 ["gradcam", str(target), str(digit), "-o", str(tmp_path / "cam.png")],
                 ["export", str(target), "-o", str(tmp_path / "m.onnx")]):
        line = refused(capsys, *argv)
        assert str(target) in line and reason in line, (argv, line)
    assert snapshot(tmp_path) == before


def test_the_server_and_the_keras_api_refuse_a_tampered_card_too(tmp_path: Path, good: Path) -> None:
    from cnnlab.keras.models import load_model as keras_load_model
    from cnnlab.serve.predictor import load_predictor

    target = write_model(tmp_path / "m.safetensors", good, dict(card_of(good), input_shape=[28, 30, 1]))
    for load in (load_predictor, keras_load_model):
        with pytest.raises(CnnlabError, match="takes 28x28 images but the description says input_shape"):
            load(target)


def test_a_card_that_would_need_gigabytes_costs_no_memory_to_refuse(tmp_path: Path) -> None:
    # resnet-small takes any image size; at 8192x8192 its first block's output is 32 x 8192 x 8192 floats
    # = 8 GiB for one image. The weights fit in 2 MB: only the meta-device forward can tell.
    model = build_model("resnet-small", (32, 32, 3), 10)
    card = dict(card_of(save_model(model, tmp_path / "ok.safetensors", CLASSES, (32, 32, 3))),
                architecture={"name": "resnet-small"}, input_shape=[8192, 8192, 3])
    target = write_model(tmp_path / "big.safetensors", tmp_path, card, model)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    with pytest.raises(CnnlabError, match=r"at input_shape \[8192, 8192, 3\] one image needs a 8\.0 GiB layer "
                                          r"output, more than the 1 GiB cnnlab allows"):
        load_model(target)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024 < 100
    assert time.perf_counter() - started < 10
    card["input_shape"] = [64, 48, 3]  # any size the network takes within the limit is fine for it
    loaded, _ = load_model(write_model(tmp_path / "other.safetensors", tmp_path, card, model))
    assert loaded(torch.zeros(1, 3, 64, 48)).shape == (1, 10)


def test_the_json_copy_is_bounded_and_decoded_in_one_line(tmp_path: Path, good: Path) -> None:
    target = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("seed-mnist").state_dict().items()}, str(target))
    copy = target.with_suffix(".json")  # no description in the file: the copy is read instead
    copy.write_bytes(b'{"class_names": ["caf\xe9"]}')
    with pytest.raises(CnnlabError, match=r"m\.safetensors: its description .*m\.json cannot be read "
                                          r"\('utf-8' codec can't decode"):
        load_model(target)
    with copy.open("wb") as handle:  # sparse: 9 MB said, nothing stored
        handle.truncate(MAX_CARD_BYTES + 1)
    with pytest.raises(CnnlabError, match=r"its description m\.json is 8,388,609 bytes, more than the 8,388,608"):
        load_model(target)


# ---------------------------------------------------------------- checksums, the copy, permissions

def test_a_flipped_weight_byte_fails_in_one_line_everywhere(tmp_path: Path, good: Path, digit: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "m.safetensors"
    raw = bytearray(good.read_bytes())
    raw[-3] ^= 0x01  # the last tensor's data: a float changes by a few ulps, every shape stays valid
    target.write_bytes(bytes(raw))
    message = "the weights' sha256 differs from the one their description records"
    with pytest.raises(CnnlabError, match=message):
        load_model(target)
    for argv in (["predict", str(target), str(digit)], ["summary", str(target)],
                 ["gradcam", str(target), str(digit), "-o", str(tmp_path / "g.png")]):
        line = refused(capsys, *argv)
        assert str(target) in line and message in line
    assert card_of(good)["weights_sha256"] == card_of(target)["weights_sha256"]  # the header was not touched


def test_a_file_written_before_checksums_still_loads(tmp_path: Path, good: Path) -> None:
    card = card_of(good)
    del card["weights_sha256"]
    model = build_model("seed-mnist")
    target = write_model(tmp_path / "old.safetensors", good, card, model)
    loaded, read = load_model(target)
    assert read.weights_sha256 == ""
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_the_json_copy_says_it_is_a_copy_and_editing_it_changes_nothing(tmp_path: Path) -> None:
    path = save_model(build_model("seed-mnist"), tmp_path / "m.safetensors", CLASSES, (28, 28, 1))
    copy = json.loads(path.with_suffix(".json").read_text())
    assert "editing this copy changes nothing" in copy["about_this_file"] and "m.safetensors" in copy["about_this_file"]
    assert {k: v for k, v in copy.items() if k != "about_this_file"} == card_of(path)
    path.with_suffix(".json").write_text(json.dumps(dict(copy, class_names=list("abcdefghij"))))
    assert load_model(path)[1].class_names == CLASSES


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_model_files_get_the_permissions_of_any_new_file(umask: int, mode: int, tmp_path: Path) -> None:
    previous = os.umask(umask)
    try:
        path = save_model(build_model("seed-mnist"), tmp_path / "m.safetensors", CLASSES, (28, 28, 1))
    finally:
        os.umask(previous)
    assert [p.stat().st_mode & 0o777 for p in (path, path.with_suffix(".json"))] == [mode, mode]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_every_file_a_run_writes_gets_the_permissions_of_any_new_file(umask: int, mode: int, tmp_path: Path) -> None:
    from cnnlab.config import TrainConfig
    from cnnlab.jobs import train_run

    previous = os.umask(umask)
    try:
        run = train_run(TrainConfig(epochs=1, run_dir=str(tmp_path / "run"), seed=0), verbose=0).run_dir
    finally:
        os.umask(previous)
    files = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert {"config.json", "model.safetensors", "best.safetensors", "metrics.json"} <= set(files)
    assert files == dict.fromkeys(files, mode)


# ---------------------------------------------------------------- output paths (cause 8)

# command -> argv with OUT where the output goes; `folder`: the argument names a folder to create
WRITERS: dict[str, tuple[list[str], bool]] = {
    "augment-preview": (["augment-preview", "IMAGE", "-n", "2", "-o", "OUT"], False),
    "filters": (["filters", "RUN", "-o", "OUT"], False),
    "gradcam": (["gradcam", "RUN", "IMAGE", "-o", "OUT"], False),
    "feature-maps": (["feature-maps", "RUN", "IMAGE", "--layers", "conv2d", "-o", "OUT"], True),
    "curves": (["curves", "RUN", "-o", "OUT"], False),
    "evaluate": (["evaluate", "RUN", "--report", "OUT"], True),
    "export": (["export", "RUN", "--parity-images", "8", "-o", "OUT"], False),
    "predict": (["predict", "RUN", "IMAGE", "--csv", "OUT"], False),
}
ARGUMENT = {"evaluate": "--report", "predict": "--csv"}


def _argv(command: str, run_dir: Path, image: Path, out: Path) -> list[str]:
    names = {"RUN": str(run_dir), "IMAGE": str(image), "OUT": str(out)}
    return [names.get(a, a) for a in WRITERS[command][0]]


def _output_name(command: str) -> str:
    return {"export": "m.onnx", "predict": "p.csv"}.get(command, "out" if WRITERS[command][1] else "out.png")


@pytest.mark.parametrize("command", list(WRITERS))
def test_an_output_in_a_missing_folder_is_refused_before_any_work(
        command: str, served_run: Path, tmp_path: Path, digit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(tmp_path)
    out = tmp_path / "no" / "such" / _output_name(command)
    line = refused(capsys, *_argv(command, served_run, digit, out))
    argument = ARGUMENT.get(command, "-o")
    assert line == (f"error: {argument} {out}: folder {out.parent} does not exist; create it "
                    f"(mkdir -p {out.parent}) or give another {argument}")
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / _output_name(command)
    line = refused(capsys, *_argv(command, served_run, digit, out))
    assert line == f"error: {argument} {out}: {out.parent} is a file, not a folder; give another {argument}"
    assert snapshot(tmp_path) == before | {"file"}  # no folder made, nothing half-written


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Every file this process writes fails past `limit` bytes with EFBIG, as a full disk fails with ENOSPC:
    a real failing write at the operating-system level, for root too (chmod does not stop root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the default action kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.parametrize("command", list(WRITERS))
def test_a_write_that_fails_midway_is_one_line(command: str, served_run: Path, tmp_path: Path, digit: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib.pyplot  # noqa: F401  (imported, and its font cache written, before the limit)
    import onnxruntime  # noqa: F401

    out = tmp_path / _output_name(command)
    argv = _argv(command, served_run, digit, out)
    if command == "predict":  # a CSV of one row is smaller than any limit: write a thousand rows
        argv[2:3] = images = [str(digit.with_name(f"{i}.png")) for i in range(1000)]
        for name in images:
            Image.new("L", (28, 28), 7).save(name)
    with file_size_limit(64):
        line = refused(capsys, *argv)
    argument = ARGUMENT.get(command, "-o")
    assert line.startswith(f"error: {argument} {out}: writing failed (") and "File too large" in line, line
    assert line.endswith(f"free disk space, fix permissions or give another {argument}")


def test_an_unwritable_folder_is_refused_by_name(served_run: Path, tmp_path: Path, digit: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: permissions do not stop root (the failing-write test covers root)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    for command in WRITERS:
        line = refused(capsys, *_argv(command, served_run, digit, locked / _output_name(command)))
        assert f"the folder {locked} is not writable by this user" in line


def test_a_file_output_that_is_a_folder_and_a_folder_output_that_is_a_file(
        served_run: Path, tmp_path: Path, digit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, "gradcam", str(served_run), str(digit), "-o", str(tmp_path))
    assert line == (f"error: -o {tmp_path} is a folder; -o takes a file name: give one inside it, "
                    f"e.g. {tmp_path / 'output.png'}")
    line = refused(capsys, "evaluate", str(served_run), "--report", str(digit))
    assert line == f"error: --report {digit} is a file; --report takes a folder to write into: give a new folder name"


# ---------------------------------------------------------------- Ctrl-C during start-up, closed pipes

def _cnnlab(*argv: str, **options: object) -> subprocess.Popen[bytes]:
    code = "import sys; from cnnlab.cli import main; sys.exit(main())"  # what the installed `cnnlab` script runs
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=ROOT, **options)  # type: ignore[call-overload]


def test_starting_the_command_imports_no_torch_before_main_handles_ctrl_c() -> None:
    code = "import sys, cnnlab, cnnlab.cli; print(sorted({'torch', 'numpy', 'PIL'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_ctrl_c_while_torch_imports_is_a_quiet_exit_130() -> None:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, cwd=ROOT)
    importing = time.perf_counter() - started
    if importing < 0.6:
        pytest.skip(f"torch imports in {importing:.2f} s here: too fast to interrupt it on purpose")
    for delay in (0.25, importing / 2):  # Python's own start takes about 0.05 s, then cnnlab's 0.1 s
        # (summary imports torch; `models` no longer does, and is done within 0.2 s)
        process = _cnnlab("summary", "seed-mnist", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert (process.returncode, err.decode(), out.decode()) == (130, "interrupted\n", ""), delay


@pytest.mark.parametrize("command", ["models", "predict"])
def test_a_reader_that_leaves_early_gets_no_traceback(command: str, good: Path, digit: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # `| head -0`: the first write finds the pipe closed
    argv = ["models"] if command == "models" else ["predict", str(good), str(digit)]
    process = _cnnlab(*argv, stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err.decode()) == (141, "")


def test_a_reader_that_leaves_after_the_output_was_buffered_gets_no_traceback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    read, write = os.pipe()
    stream = open(write, "w", buffering=1 << 16)  # stdout on a pipe: block-buffered, written when flushed
    os.close(read)  # `| head -1` left after its line, while the rest still sits in the buffer
    monkeypatch.setattr(sys, "stdout", stream)
    assert main(["models"]) == 141
    stream.write("x" * 100_000)  # stdout now leads to /dev/null: Python's own flush at exit stays quiet
    stream.flush()
    stream.close()


# ---------------------------------------------------------------- predict: CSV, duplicates; .onnx

def test_predict_writes_a_csv_of_the_top_k_and_lists_each_file_once(
        tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, shade in (("a.png", 0), ("b.png", 255)):
        Image.new("L", (28, 28), shade).save(folder / name)
    table = tmp_path / "p.csv"
    code, out, err = run(capsys, "predict", str(good), str(folder / "b.png"), str(folder), str(folder / "b.png"),
                         f"{folder}/../images/a.png", "--top-k", "2", "--csv", str(table), "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [p["path"] for p in listed] == [str(folder / "b.png"), str(folder / "a.png")]
    rows = list(csv.reader(table.open()))
    assert rows[0] == ["path", "class_1", "probability_1", "class_2", "probability_2"]
    assert [r[0] for r in rows[1:]] == [p["path"] for p in listed]
    for row, p in zip(rows[1:], listed, strict=True):
        assert row[1::2] == [t["class"] for t in p["top"]]
        assert [float(v) for v in row[2::2]] == pytest.approx([t["probability"] for t in p["top"]], abs=1e-6)
    code, out, err = run(capsys, "predict", str(good), str(folder / "a.png"), "--top-k", "2", "--csv", "-")
    assert code == 0 and out == table.read_text().splitlines()[0] + "\n" + table.read_text().splitlines()[2] + "\n"
    line = refused(capsys, "predict", str(good), str(folder), "--csv", "-", "--json")
    assert "--csv - and --json both write to stdout" in line


def test_predict_and_evaluate_say_what_an_onnx_file_is_for(tmp_path: Path, digit: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read: the name says what it is")
    line = refused(capsys, "evaluate", str(onnx))
    assert line == (f"error: {onnx} is an ONNX export: `cnnlab serve {onnx}` serves it, and onnxruntime runs "
                    f"it; this command reads cnnlab model files: give the run directory or the .safetensors "
                    f"file it was exported from")
    line = refused(capsys, "predict", str(onnx), str(digit))  # predict runs ONNX files (cnnlab.inference)
    assert line.startswith(f"error: {onnx} is not a valid ONNX model (") and "`cnnlab export RUN`" in line
    line = refused(capsys, "predict", str(onnx), str(digit), "--runtime", "torch")
    assert line.startswith(f"error: --runtime torch cannot run {onnx}, an ONNX file")


# ---------------------------------------------------------------- conv-arithmetic, check-data

@pytest.mark.parametrize("argv, expected", [
    (["--size", "10", "--kernel", "3"], (8, "floor((10 - 3) / 1) + 1 = 8")),        # seed 001's example
    (["--size", "28", "--kernel", "3", "--stride", "2", "--padding", "same"],
     (14, "ceil(28 / 2) = 14, after 1 zero(s) of padding: 0 before, 1 after")),   # (14 - 1) * 2 + 3 - 28 = 1
    (["--size", "224", "--kernel", "7", "--stride", "2", "--padding", "same"],
     (112, "ceil(224 / 2) = 112, after 5 zero(s) of padding: 2 before, 3 after")),  # the ResNet stem
    (["--size", "13", "--kernel", "2", "--stride", "2", "--layer", "pool"], (6, "floor((13 - 2) / 2) + 1 = 6")),
    (["--size", "100000", "--kernel", "5", "--stride", "3"], (33332, "floor((100000 - 5) / 3) + 1 = 33332")),
])
def test_conv_arithmetic_takes_the_users_own_sizes(argv: list[str], expected: tuple[int, str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "conv-arithmetic", *argv, "--json")
    case = json.loads(out)
    assert code == 0 and (case["formula"], case["worked"]) == expected and case["measured"] == expected[0]
    code, out, err = run(capsys, "conv-arithmetic", *argv)
    assert code == 0 and f"-> {expected[0]}x{expected[0]} output" in out and expected[1] in out


def test_conv_arithmetic_refuses_half_a_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--size and --kernel go together" in refused(capsys, "conv-arithmetic", "--kernel", "3")
    assert "a kernel of 5 does not fit size 3" in refused(capsys, "conv-arithmetic", "--size", "3", "--kernel", "5")


def test_check_datas_first_line_never_says_ok_beside_problems(tmp_path: Path) -> None:
    from cnnlab.data import check_dataset

    for name in ("a", "b"):
        (tmp_path / "clean" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i + (name == "b")).save(tmp_path / "clean" / name / f"{i}.png")
    first = lambda root: check_dataset(root, threads=1).to_text().splitlines()[0]  # noqa: E731
    assert first(tmp_path / "clean") == f"Dataset check of {tmp_path / 'clean'}: OK, no problems found"
    (tmp_path / "clean" / "a" / "empty.png").write_bytes(b"")
    assert first(tmp_path / "clean") == (f"Dataset check of {tmp_path / 'clean'}: training would run, but 1 "
                                         f"problem(s) need a look (listed below)")
    (tmp_path / "clean" / "c").mkdir()
    assert first(tmp_path / "clean").startswith(f"Dataset check of {tmp_path / 'clean'}: 1 error(s): training "
                                                f"would fail; 1 other problem(s)")
