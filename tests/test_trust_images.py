"""Issue 18, images and bounded numbers: one decode gate for every entry point that reads images.

The gate is `cnnlab.data.images.open_image`: only the decoders of IMAGE_FORMATS run, and an image
over the decode budget (40 megapixels, `--max-image-pixels` raises it) is refused from its header.
Each test drives every entry point that reads images: the commands predict, feature-maps, gradcam,
augment-preview (one image: one `error:` line naming the file), train, evaluate and check-data (a
folder: the file is skipped, counted and named), and the Python/Keras readers load_img,
image_dataset_from_directory, flow_from_directory and a streamed FolderDataset. Numbers a user types
(image sizes, seeds, preview counts) are bounded with one line that says the bound and why.
Every file is generated here in tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image

from cnnlab import build_model, save_model
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset
from cnnlab.data.images import IMAGE_FORMATS, MAX_IMAGE_PIXELS, max_image_pixels, read_image, set_max_image_pixels
from cnnlab.data.streaming import DecodedFiles, FolderDataset
from cnnlab.errors import CnnlabError
from cnnlab.keras.preprocessing.image import ImageDataGenerator
from cnnlab.keras.utils import image_dataset_from_directory, load_img
from cnnlab.models.files import read_card, resolve_model_path
from cnnlab.viz.grids import PREVIEW_SIDE, augment_preview

pytestmark = pytest.mark.timeout(120)  # a test takes seconds; a decode that runs away must fail, not hang CI

SIDE = 9000  # a 1-bit PNG of 9000 x 9000: 81 megapixels, over the 40 MP budget, under Pillow's own 89 MP


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, out: str, err: str, *needles: str) -> str:
    """The one `error:` line (exit 2, nothing on stdout, no traceback), holding every needle."""
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and out == "", err
    assert all(needle in lines[0] for needle in needles), (needles, lines[0])
    return lines[0]


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = SIDE, height: int = SIDE) -> bytes:
    """A valid 1-bit PNG of zeros: a few kB on disk, width x height pixels once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte 0, then the row's bits
    idat = b"".join(compressor.compress(row * 500) for _ in range(height // 500))
    idat += compressor.compress(row * (height % 500)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gray(path: Path, side: int = 28, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)).save(path)
    return path


def two_classes(root: Path) -> Path:
    for c, name in enumerate("ab"):
        for i in range(4):
            gray(root / name / f"{i}.png", seed=10 * c + i)
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained seed-mnist file (28x28x1): the commands need a model, not a good one."""
    folder = tmp_path_factory.mktemp("model")
    return save_model(build_model("seed-mnist"), folder / "m.safetensors", [str(i) for i in range(10)], (28, 28, 1))


@pytest.fixture
def budget() -> Iterator[None]:
    """Tests that set the process's decode budget leave it as they found it."""
    before = max_image_pixels()
    yield
    set_max_image_pixels(before)


def image_commands(model: Path, image: Path, out: Path) -> list[list[str]]:
    out.mkdir(parents=True, exist_ok=True)  # -o into a missing folder is refused (issue 18, cause 8)
    return [["predict", str(model), str(image)],
            ["feature-maps", str(model), str(image), "-o", str(out / "maps")],
            ["gradcam", str(model), str(image), "-o", str(out / "cam.png")],
            ["augment-preview", str(image), "-o", str(out / "preview.png")]]


# ---------------------------------------------------------------- the decode budget (causes 1 and 14's CLI side)

def test_a_sub_limit_bomb_is_refused_from_its_header_by_every_image_command(
        tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "bomb.png"
    image.write_bytes(bomb_png())
    assert image.stat().st_size < 50_000
    out = tmp_path / "out"
    for argv in image_commands(model, image, out):
        refused(*run(capsys, *argv), str(image), "too large", f"{SIDE}x{SIDE} = 81,000,000 pixels",
                "40,000,000 pixels", "--max-image-pixels")
    assert list(out.iterdir()) == []  # nothing written


def test_the_budget_flag_moves_the_limit_for_every_image_command_and_only_for_that_command(
        tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), "orange").save(image)  # 3,072 pixels
    for argv in image_commands(model, image, tmp_path / "small"):
        refused(*run(capsys, *argv, "--max-image-pixels", "3071"), str(image), "3,072 pixels",
                "the limit is 3,071 pixels")
        assert max_image_pixels() == MAX_IMAGE_PIXELS  # the next in-process command has the default again
    for argv in image_commands(model, image, tmp_path / "exact"):
        code, _, err = run(capsys, *argv, "--max-image-pixels", "3072")
        assert code == 0, err
    refused(*run(capsys, "predict", str(model), str(image), "--max-image-pixels", "200000000"),
            "--max-image-pixels", "1..178,956,970", "Pillow refuses larger images")


def test_an_image_over_the_budget_in_a_folder_is_skipped_counted_and_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = two_classes(tmp_path / "photos")
    big = gray(root / "a" / "big.png", side=64)  # 4,096 pixels: over a budget of 1,000
    limit = ["--max-image-pixels", "1000"]
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", str(root), "--epochs", "1", "--batch-size", "4", "--run-dir", str(run_dir),
                         "--quiet", *limit)
    assert code == 0, err
    assert "skipped 1 undecodable image(s)" in out
    assert (run_dir / "skipped_files.txt").read_text().splitlines() == [str(big)]
    code, out, _ = run(capsys, "check-data", str(root), "--json", *limit)
    report = json.loads(out)
    assert code == 0 and [b["path"] for b in report["undecodable"]] == ["a/big.png"]
    assert report["undecodable"][0]["reason"].startswith("too large: 64x64 = 4,096 pixels")
    for flags, count in ((limit, 8), ([], 9)):  # without the flag the default budget takes it
        code, out, err = run(capsys, "evaluate", str(run_dir), "--dataset", str(root), "--split", "train", "--json",
                             *flags)
        assert code == 0 and json.loads(out)["n"] == count, err


def test_the_python_and_keras_readers_keep_the_same_budget(tmp_path: Path, budget: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = two_classes(tmp_path / "photos")
    big = gray(root / "a" / "big.png", side=64)
    set_max_image_pixels(1000)
    with pytest.raises(CnnlabError, match=r"big\.png.*too large: 64x64 = 4,096 pixels.*1,000 pixels"):
        load_img(big)
    with pytest.raises(CnnlabError, match=r"big\.png.*too large"):
        read_image(big, channels=1)
    data = image_dataset_from_directory(root, image_size=(28, 28), color_mode="grayscale", shuffle=False)
    assert len(data.file_paths) == 8 and str(big.resolve()) not in data.file_paths
    flow = ImageDataGenerator().flow_from_directory(root, target_size=(28, 28), color_mode="grayscale", shuffle=False)
    assert flow.samples == 8 and "a/big.png" not in flow.filenames
    streamed = FolderDataset([big, root / "a" / "0.png"], torch.tensor([0, 0]), ["a"], 1, (28, 28))
    batches = list(streamed.batches(2, workers=1))  # decoded in a DataLoader worker process
    assert [len(labels) for _, labels in batches] == [1] and streamed.skipped_during_training == [str(big)]
    # Workers started by spawn or forkserver do not inherit a budget set after import: it travels with the files
    files = DecodedFiles([big], torch.tensor([0]), 1, (28, 28))
    set_max_image_pixels(None)
    assert max_image_pixels() == MAX_IMAGE_PIXELS and files[0][0] is None
    capsys.readouterr()


def test_a_bomb_is_refused_within_64_mib_of_memory(tmp_path: Path, model: Path) -> None:
    """A fresh process warms up on a small image, then gets 64 MiB more address space and the bombs.

    A 13000 x 13000 1-bit PNG (169 megapixels, 20 kB) needs 169 MB to decode even as 1 byte a pixel
    (21.5 GB in augment-preview before the budget), so anything that decodes it fails with MemoryError
    here instead of the budget's 'too large' line; 1 x 100,000,000 is predict's 3.9 GB case.
    """
    small = gray(tmp_path / "small.png")
    square, wide = tmp_path / "square.png", tmp_path / "wide.png"
    square.write_bytes(bomb_png(13000, 13000))
    wide.write_bytes(bomb_png(100_000_000, 1))
    script = textwrap.dedent(f"""
        import resource
        from cnnlab.cli import main
        assert main(["predict", {str(model)!r}, {str(small)!r}]) == 0
        assert main(["augment-preview", {str(small)!r}, "-n", "2", "-o", {str(tmp_path / "p.png")!r}]) == 0
        with open("/proc/self/status") as status:
            used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (used + 64 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
        for image in ({str(square)!r}, {str(wide)!r}):
            print("exit", main(["predict", {str(model)!r}, image]), flush=True)
            print("exit", main(["augment-preview", image, "-o", {str(tmp_path / "q.png")!r}]), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=110)
    assert [line for line in done.stdout.splitlines() if line.startswith("exit")] == ["exit 2"] * 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 4 and all("too large" in line and "MemoryError" not in line for line in lines), lines


# ---------------------------------------------------------------- allowed formats only (cause 19)

def hostile_formats(folder: Path) -> dict[str, Path]:
    """A TIFF and a PostScript file, both named .png: Pillow has decoders for both, cnnlab allows neither."""
    folder.mkdir(parents=True, exist_ok=True)
    tiff, eps = folder / "tiff.png", folder / "postscript.png"
    Image.new("L", (28, 28), 100).save(tiff, format="TIFF")  # Pillow decodes it by itself: it would just work
    Image.new("L", (28, 28), 100).save(eps, format="EPS")  # Pillow hands it to Ghostscript to decode
    return {"tiff": tiff, "eps": eps}


@pytest.fixture
def ghostscript(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every call Pillow makes to Ghostscript (and fails it): there must be none."""
    calls: list[object] = []

    def record(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError("Ghostscript called")
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", record)
    return calls


def test_a_format_outside_the_allow_list_is_refused_by_every_image_command(
        tmp_path: Path, model: Path, ghostscript: list[object], capsys: pytest.CaptureFixture[str]) -> None:
    for kind, image in hostile_formats(tmp_path / "files").items():
        for argv in image_commands(model, image, tmp_path / kind):
            refused(*run(capsys, *argv), str(image), "file, which cnnlab does not decode", "convert it to PNG or JPEG")
    assert ghostscript == []


def test_a_format_outside_the_allow_list_is_skipped_in_folders_and_by_keras(
        tmp_path: Path, ghostscript: list[object], capsys: pytest.CaptureFixture[str]) -> None:
    root = two_classes(tmp_path / "photos")
    bad = hostile_formats(root / "b")
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", str(root), "--epochs", "1", "--batch-size", "4", "--run-dir", str(run_dir),
                         "--quiet")
    assert code == 0 and "skipped 2 undecodable image(s)" in out, err
    assert (run_dir / "skipped_files.txt").read_text().splitlines() == sorted(str(p) for p in bad.values())
    code, out, _ = run(capsys, "check-data", str(root), "--json")
    reasons = {b["path"]: b["reason"] for b in json.loads(out)["undecodable"]}
    assert reasons == {
        "b/postscript.png": "a PostScript file, which cnnlab does not decode (convert it to PNG or JPEG)",
        "b/tiff.png": "a TIFF file, which cnnlab does not decode (convert it to PNG or JPEG)"}
    code, out, err = run(capsys, "evaluate", str(run_dir), "--dataset", str(root), "--split", "train", "--json")
    assert code == 0 and json.loads(out)["n"] == 8, err
    for path in bad.values():
        with pytest.raises(CnnlabError, match="(PostScript|TIFF) file, which cnnlab does not decode"):
            load_img(path)
    data = image_dataset_from_directory(root, image_size=(28, 28), color_mode="grayscale", shuffle=False)
    flow = ImageDataGenerator().flow_from_directory(root, target_size=(28, 28), color_mode="grayscale", shuffle=False)
    assert len(data.file_paths) == 8 and flow.samples == 8
    assert ghostscript == []
    capsys.readouterr()


def test_the_server_uses_the_same_allow_list() -> None:
    from cnnlab.serve.uploads import FORMATS

    assert FORMATS is IMAGE_FORMATS


# ---------------------------------------------------------------- channels decided by decodable files (cause 20)

def damaged_colour_jpeg(path: Path) -> Path:
    """An RGB JPEG cut short: its header reads (mode RGB), its pixel data does not decode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(path, "JPEG")
    path.write_bytes(path.read_bytes()[:700])
    return path


@pytest.mark.parametrize("in_memory", [True, False])
def test_one_damaged_colour_file_does_not_make_a_grayscale_folder_colour(tmp_path: Path, in_memory: bool) -> None:
    root = two_classes(tmp_path / "photos")
    bad = damaged_colour_jpeg(root / "a" / "damaged.jpg")
    assert Image.open(bad).mode == "RGB"
    data = load_dataset(root, in_memory=in_memory, cache=False)
    assert data.input_shape == (28, 28, 1) and data.skipped == [str(bad)]
    Image.new("RGB", (28, 28), "red").save(root / "b" / "colour.png")  # one good colour image decides: colour
    assert load_dataset(root, in_memory=in_memory, cache=False).input_shape == (28, 28, 3)


def test_a_model_trained_on_such_a_folder_is_grayscale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = two_classes(tmp_path / "photos")
    bad = damaged_colour_jpeg(root / "b" / "damaged.jpg")
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", str(root), "--epochs", "1", "--batch-size", "4", "--run-dir", str(run_dir),
                         "--quiet")
    assert code == 0 and "skipped 1 undecodable image(s)" in out, err
    assert tuple(read_card(resolve_model_path(run_dir)).input_shape) == (28, 28, 1)
    assert (run_dir / "skipped_files.txt").read_text().splitlines() == [str(bad)]


# ---------------------------------------------------------------- bounded numbers (cause 18)

@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return gray(tmp_path / "photo.png")


@pytest.mark.parametrize(("argv", "needles"), [
    (["train", "digits", "--image-size", "100000", "100000"], ["image_size", "at most 4096 pixels a side"]),
    (["train", "digits", "--image-size", "4097", "16"], ["image_size", "at most 4096 pixels a side"]),
    (["summary", "seed-mnist", "--input-shape", "100000", "100000", "1"], ["--input-shape", "4096"]),
    (["summary", "resnet-small", "--input-shape", "4096", "4096", "64"], ["--input-shape", "67,108,864 values"]),
    (["train", "digits", "--seed", str(2**70)], ["--seed", "0..4294967295", "NumPy's seed range"]),
    (["train", "digits", "--seed=-1"], ["--seed", "0..4294967295"]),
    (["augment-preview", "PHOTO", "--seed", str(2**32)], ["--seed", "0..4294967295"]),
    (["fine-tune", "RUN", "--unfreeze-top", "1", "--seed", str(2**64)], ["--seed", "0..4294967295"]),
    (["augment-preview", "PHOTO", "-n", "100000"], ["n (-n)", "1..50"]),
])
def test_an_unbounded_number_gets_one_line_with_its_bound(argv: list[str], needles: list[str], tmp_path: Path,
                                                          photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(photo) if a == "PHOTO" else str(tmp_path) if a == "RUN" else a for a in argv]
    runs = tmp_path / "runs"
    started = time.monotonic()
    refused(*run(capsys, *argv, *(["--runs-root", str(runs)] if argv[0] == "train" else [])), *needles)
    assert time.monotonic() - started < 30 and not runs.exists()


def test_a_config_file_gets_the_same_bounds() -> None:
    with pytest.raises(CnnlabError, match=r"seed must be a whole number in 0\.\.4294967295"):
        TrainConfig(seed=2**70).validate()
    with pytest.raises(CnnlabError, match="image_size .* at most 4096 pixels a side"):
        TrainConfig(image_size=[100000, 100000]).validate()
    TrainConfig(seed=2**32 - 1, image_size=[4096, 4096]).validate()  # the bounds themselves are allowed


def test_augment_preview_augments_a_large_image_at_display_size(tmp_path: Path) -> None:
    seen: list[tuple[int, ...]] = []

    def augmenter(batch: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(batch.shape))
        return batch
    image = torch.full((3, 2000, 1000), 200, dtype=torch.uint8)
    augment_preview(image, augmenter, 3, tmp_path / "p.png")
    assert seen == [(3, 3, PREVIEW_SIDE, PREVIEW_SIDE // 2)]
    with pytest.raises(CnnlabError, match=r"n \(-n\) must be a whole number in 1\.\.50"):
        augment_preview(image, augmenter, 51, tmp_path / "q.png")


def test_a_runs_budget_is_recorded_and_resumed_with_it(tmp_path: Path) -> None:
    from cnnlab.jobs import train_run
    from cnnlab.resume import config_digest, resume_config

    root = two_classes(tmp_path / "photos")
    wide = gray(root / "a" / "wide.png", side=64)  # 4,096 pixels: over a budget of 1,000, under the default
    result = train_run(TrainConfig(dataset=str(root), epochs=1, batch_size=4, seed=0, max_image_pixels=1000,
                                   run_dir=str(tmp_path / "run")), verbose=0)
    assert result.skipped == [str(wide)] and max_image_pixels() == MAX_IMAGE_PIXELS  # applied, then restored
    recorded = json.loads((result.run_dir / "config.json").read_text())
    assert recorded["max_image_pixels"] == 1000
    stopped = tmp_path / "stopped"  # the same run as if stopped before its end: resume reads the budget back
    stopped.mkdir()
    (stopped / "config.json").write_text(json.dumps(recorded))
    assert resume_config(stopped, {}).max_image_pixels == 1000
    # a run checkpointed before the setting existed (no "head", no "max_image_pixels") keeps its digest
    old = {k: v for k, v in TrainConfig(epochs=1).to_dict().items()
           if k not in ("epochs", "run_dir", "runs_root", "evaluate_test", "threads", "head",
                            "max_image_pixels", "feature_cache", "feature_views", "head_init")}
    assert config_digest(TrainConfig(epochs=1)) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()
    assert config_digest(TrainConfig(epochs=1, max_image_pixels=1000)) != config_digest(TrainConfig(epochs=1))
    with pytest.raises(CnnlabError, match="--max-image-pixels must be a whole number of pixels"):
        train_run(TrainConfig(dataset=str(root), max_image_pixels=10**12, run_dir=str(tmp_path / "no")), verbose=0)
    assert not (tmp_path / "no").exists()
