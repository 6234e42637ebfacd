"""Hostile and broken input thrown at every CLI command and public loader (issue 9, part C).

Every hostile file is generated here in tmp_path (no binary fixtures). The contract for each:
- a single file given to a command: exit 2, exactly one stderr line `error: ...` that names the
  file, no traceback, no output file left behind; with --debug the CnnlabError propagates;
- the same file inside a training folder: skipped, counted on stdout and named in the run's
  skipped_files.txt; check-data names it and why; evaluate leaves it out;
- a train that fails on its data leaves no run directory: every input is checked before
  `train_run` creates one (jobs.py), so there is nothing half-written to mark.
Valid-but-odd images (16-bit, CMYK, animated GIF, palette + transparency, 1x1) decode to
hand-computed pixels instead.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cnnlab import CnnlabError, Conv2D, Dense, Flatten, Sequential, build_model, save_model
from cnnlab.cli import main
from cnnlab.data import load_dataset, read_image

SECONDS = 60  # a test here takes about a second, or 10 on a loaded 2-core machine; a hang takes forever


# A FIFO or a link loop that blocks a command must fail the test, not hang CI (pytest-timeout).
pytestmark = pytest.mark.timeout(SECONDS)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def names(path: Path | str) -> list[str]:
    """How an error line may spell `path`: as is, or as repr() shows a non-UTF-8 name ('\\udcff')."""
    text = str(path)
    return [text, repr(text)[1:-1]]


def assert_refused(code: int, out: str, err: str, path: Path | str) -> str:
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    assert any(n in lines[0] for n in names(path)), lines[0]
    return lines[0]


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------- hostile files

def noise_png(size: tuple[int, int] = (64, 64), mode: str = "L") -> bytes:
    shape = size[::-1] if mode == "L" else (*size[::-1], 3)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def noise_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 20000) -> bytes:
    """A valid 1-bit side x side PNG of zeros: ~50 kB on disk, 400 Mpixels (1.2 GB as RGB) decoded."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte 0, then side bits
    idat = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def _write(content: bytes) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.write_bytes(content)
        return path
    return make


def _dangling(path: Path) -> Path:
    path.symlink_to(path.with_name("missing-target.png"))
    return path


def _loop(path: Path) -> Path:
    path.symlink_to(path)  # a link to itself: ELOOP on open
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)  # open() would wait for a writer forever
    return path


def _non_utf8(path: Path) -> Path:
    raw = os.fsencode(path.parent) + b"/caf\xe9-latin1.png"  # a Latin-1 name: not valid UTF-8
    with open(raw, "wb") as handle:
        handle.write(b"not an image at all")
    return Path(os.fsdecode(raw))


# name -> (make it at a path, what the error line says about it)
HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "zero_bytes.png": (_write(b""), "cannot identify image file"),
    "text.jpg": (_write(b"<html>this is a web page saved as .jpg</html>"), "cannot identify image file"),
    "truncated.png": (_write(noise_png()[:1500]), "truncated"),
    "truncated.jpg": (_write(noise_jpeg()[:700]), "truncated"),
    "bomb.png": (_write(bomb_png()), "too large"),
    "dangling.png": (_dangling, "symbolic link"),
    "loop.png": (_loop, "link loop"),
    "pipe.png": (_fifo, "not a regular file"),
    "latin1.png": (_non_utf8, "cannot identify image file"),
}


@pytest.fixture(scope="module")
def gray_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained seed-mnist model file: predicting needs only the file, not a good model."""
    folder = tmp_path_factory.mktemp("model")
    return save_model(build_model("seed-mnist"), folder / "m.safetensors", [str(i) for i in range(10)], (28, 28, 1))


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_hostile_image_gets_one_line_from_every_command(kind: str, tmp_path: Path, gray_model: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    make, reason = HOSTILE[kind]
    image = make(tmp_path / kind)
    before = snapshot(tmp_path)
    commands = [["predict", str(gray_model), str(image)],
                ["feature-maps", str(gray_model), str(image), "-o", str(tmp_path / "maps")],
                ["gradcam", str(gray_model), str(image), "-o", str(tmp_path / "cam.png")],
                ["augment-preview", str(image), "-o", str(tmp_path / "preview.png")]]
    for argv in commands:
        line = assert_refused(*run(capsys, *argv), image)
        assert reason in line.lower(), line
    assert snapshot(tmp_path) == before  # no output folder or half-written PNG
    with pytest.raises(CnnlabError):  # --debug: the exception (and its traceback) propagates
        main(["--debug", *commands[0]])


def test_the_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    assert path.stat().st_size < 200_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(CnnlabError, match=r"bomb\.png.*too large.*400000000 pixels.*downscale"):
        read_image(path, channels=3)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 100, f"decoding the bomb raised peak memory by {grown_mib:.0f} MiB"


def _two_classes(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_hostile_files_in_a_training_folder_are_skipped_counted_and_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _two_classes(tmp_path / "photos")
    bad = sorted(make(root / ("a" if i % 2 else "b") / kind) for i, (kind, (make, _)) in enumerate(HOSTILE.items()))
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", str(root), "--model", "seed-mnist", "--epochs", "1", "--batch-size", "4",
                         "--run-dir", str(run_dir), "--quiet")
    assert code == 0, err
    assert f"skipped {len(HOSTILE)} undecodable image(s); listed in {run_dir / 'skipped_files.txt'}" in out
    listed = (run_dir / "skipped_files.txt").read_text().splitlines()
    assert listed == [str(b).encode("utf-8", "backslashreplace").decode() for b in bad]
    assert json.loads((run_dir / "metrics.json").read_text())["skipped_files"] == len(HOSTILE)
    code, out, err = run(capsys, "check-data", str(root), "--json")
    report = json.loads(out)
    assert code == 0 and [b["path"] for b in report["undecodable"]] == [b.relative_to(root).as_posix() for b in bad]
    reasons = {b["path"].split("/")[1]: b["reason"] for b in report["undecodable"]}
    assert reasons["pipe.png"].startswith("not a regular file") and reasons["bomb.png"].startswith("too large")
    assert reasons["loop.png"].startswith("unreadable") and "symbolic links" in reasons["loop.png"]
    code, out, err = run(capsys, "check-data", str(root))
    assert code == 0 and err == "" and all(any(n in out for n in names(b.relative_to(root))) for b in bad)
    code, out, err = run(capsys, "evaluate", str(run_dir / "model.safetensors"), "--dataset", str(root),
                         "--split", "train", "--json")
    assert code == 0 and json.loads(out)["n"] == 8, err


def test_a_class_of_only_hostile_files_fails_before_any_run_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _two_classes(tmp_path / "photos")
    (root / "c").mkdir()
    for kind in ("zero_bytes.png", "bomb.png", "pipe.png", "latin1.png"):
        HOSTILE[kind][0](root / "c" / kind)
    runs = tmp_path / "runs"
    line = assert_refused(*run(capsys, "train", str(root), "--runs-root", str(runs), "--quiet"), root / "c")
    assert "4 file(s) could not be decoded" in line and "check-data" in line
    assert not runs.exists()
    code, out, _ = run(capsys, "check-data", str(root))
    assert code == 1 and "class folder 'c' has no decodable images (4 undecodable)" in out


def test_unreadable_file(tmp_path: Path, gray_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading (links and pipes are tested above)")
    path = tmp_path / "secret.png"
    path.write_bytes(noise_png((28, 28)))
    path.chmod(0)
    line = assert_refused(*run(capsys, "predict", str(gray_model), str(path)), path)
    assert "permission denied" in line and "chmod" in line


# ---------------------------------------------------------------- symlink loops in dataset folders

def test_a_class_folder_linking_to_its_parent_is_refused_by_name(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = _two_classes(tmp_path / "photos")
    (root / "c").symlink_to(root)  # c/ would hold a/ and b/ again, under a third label
    line = assert_refused(*run(capsys, "train", str(root), "--run-dir", str(tmp_path / "run"), "--quiet"), root / "c")
    assert "symbolic link" in line and "loop" in line and not (tmp_path / "run").exists()
    code, out, _ = run(capsys, "check-data", str(root))
    assert code == 1 and "class folder 'c' is a symbolic link" in out


def test_a_link_loop_inside_a_class_folder_ends_and_is_reported(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = _two_classes(tmp_path / "photos")
    (root / "a" / "again").symlink_to(root / "a")  # a/again/again/again/... if links were followed
    (root / "b" / "up").symlink_to(root)
    data = load_dataset(root, cache=False)
    assert len(data) == 8 and data.labels.tolist() == [0] * 4 + [1] * 4
    code, out, _ = run(capsys, "check-data", str(root), "--json")
    report = json.loads(out)
    assert code == 0 and report["stray"] == ["a/again/", "b/up/"]
    assert report["duplicates"]["within_class"] == [] and report["duplicates"]["across_classes"] == []


# ---------------------------------------------------------------- non-UTF-8 names that are images

def test_a_valid_image_with_a_non_utf8_name_trains_and_predicts(tmp_path: Path, gray_model: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = _two_classes(tmp_path / "photos")
    raw = os.fsencode(root / "a") + b"/\xff\xfe.png"
    with open(raw, "wb") as handle:
        handle.write(noise_png((28, 28)))
    code, out, err = run(capsys, "train", str(root), "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--quiet")
    assert code == 0 and not (tmp_path / "run" / "skipped_files.txt").exists(), err
    code, out, err = run(capsys, "predict", str(gray_model), os.fsdecode(raw))
    assert code == 0 and out.startswith(str(root / "a") + "/\\udcff\\udcfe.png: "), (out, err)


# ---------------------------------------------------------------- valid but odd images

def save_palette_png(path: Path) -> None:
    image = Image.new("P", (2, 2))
    image.putdata([0, 1, 1, 0])
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.save(path, transparency=0)  # index 0 fully transparent: a tRNS chunk of bytes


def test_odd_but_valid_images_decode_to_hand_computed_pixels(tmp_path: Path) -> None:
    deep = tmp_path / "deep.png"  # 16-bit grayscale: 65535 -> 255, 257 * v -> v
    Image.fromarray(np.array([[0, 65535], [257 * 128, 1000]], dtype=np.uint16)).save(deep)
    assert Image.open(deep).mode.startswith("I")
    assert read_image(deep, 3).tolist() == [[[0, 255], [128, 4]]] * 3  # 1000 / 257 = 3.9 -> 4

    cmyk = tmp_path / "cmyk.jpg"  # Pillow: R = 255 - min(255, C + K), ...; quality 100 keeps flat colour
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(cmyk, quality=100)
    assert Image.open(cmyk).mode == "CMYK"
    rgb = read_image(cmyk, 3).to(torch.int32)
    assert (rgb[0] >= 252).all() and (rgb[1:] <= 3).all()  # red
    gray = read_image(cmyk, 1).to(torch.int32)  # ITU-R 601-2 luma of red: 255 * 299 / 1000 = 76.2
    assert ((gray - 76).abs() <= 2).all()

    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(gif).n_frames == 2
    assert read_image(gif, 3)[:, 0, 0].tolist() == [255, 0, 0]  # the first frame
    assert read_image(gif, 3).unique(dim=1).shape[1] == 1  # every pixel that colour

    palette = tmp_path / "palette.png"
    save_palette_png(palette)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns when P + byte transparency goes straight to RGB
        pixels = read_image(palette, 3)
    # alpha is dropped, so each pixel shows its palette colour whether transparent or not
    assert pixels.permute(1, 2, 0).tolist() == [[[10, 20, 30], [200, 100, 50]], [[200, 100, 50], [10, 20, 30]]]

    one = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (7, 80, 250)).save(one)
    assert read_image(one, 3).tolist() == [[[7]], [[80]], [[250]]]
    big = read_image(one, 3, size=(28, 28))  # upscaling a constant gives the constant
    assert big.shape == (3, 28, 28) and big[:, 13, 17].tolist() == [7, 80, 250] and big.unique().numel() == 3


def test_odd_images_pass_through_every_image_command(tmp_path: Path, gray_model: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    colour = Sequential([Conv2D(2, 3, activation="relu", input_shape=(8, 8, 3)), Flatten(), Dense(2)])
    rgb_model = save_model(colour, tmp_path / "rgb.safetensors", ["x", "y"], (8, 8, 3))
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.new("CMYK", (9, 5), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "anim.gif", save_all=True,
                                         append_images=[Image.new("RGB", (8, 8), "blue")])
    save_palette_png(tmp_path / "palette.png")
    Image.new("L", (1, 1), 9).save(tmp_path / "one.png")
    images = sorted(str(p) for p in tmp_path.iterdir() if p.suffix in (".png", ".jpg", ".gif"))
    for model in (gray_model, rgb_model):
        code, out, err = run(capsys, "predict", str(model), *images, "--json")
        assert code == 0 and len(json.loads(out)) == 5 and err == "", err
    for i, image in enumerate(images):
        code, _, err = run(capsys, "gradcam", str(rgb_model), image, "-o", str(tmp_path / f"cam{i}.png"))
        assert code == 0, err
    code, _, err = run(capsys, "augment-preview", images[0], "-n", "2", "-o", str(tmp_path / "p.png"))
    assert code == 0, err


# ---------------------------------------------------------------- tampered model files

class _Payload:
    """Unpickling this creates `marker`: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.marker, "w")


def _header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def _tamper(kind: str, good: Path, target: Path, marker: Path) -> None:
    """Write a model file at `target` that is broken in the way `kind` names."""
    model = build_model("seed-mnist")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    card = json.loads(good.with_suffix(".json").read_text())
    if kind == "header_lies_about_sizes":
        header, data = _header(good)
        name = next(k for k in header if k != "__metadata__")
        header[name]["data_offsets"] = [0, 10**9]  # a tensor said to be 1 GB long in a 0.5 MB file
        text = json.dumps(header).encode()
        target.write_bytes(struct.pack("<Q", len(text)) + text + data)
    elif kind == "header_length_lies":
        target.write_bytes(struct.pack("<Q", 2**62) + good.read_bytes()[8:])
    elif kind == "pickle_renamed":
        target.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        meta = {"missing_fields": {k: v for k, v in card.items() if k != "class_names"},
                "unknown_architecture": dict(card, architecture={"name": "resnet9000"}),
                "class_count_mismatch": dict(card, class_names=card["class_names"][:3]),
                "channels_mismatch": dict(card, input_shape=[28, 28, 3]),
                "wrong_types": dict(card, input_shape="28x28x1"),
                "bad_tta": dict(card, test_time_augmentation={"level": 7, "flip": "yes"})}[kind]
        save_file(state, str(target), metadata={"cnnlab": json.dumps(meta)})


TAMPERED = {
    "header_lies_about_sizes": "is not a safetensors model file",
    "header_length_lies": "is not a safetensors model file",
    "pickle_renamed": "never loads pickles",
    "missing_fields": "damaged or incomplete (KeyError('class_names'))",
    "unknown_architecture": "unknown architecture 'resnet9000'",
    "class_count_mismatch": "the model scores 10 classes but its description names 3",
    "channels_mismatch": "takes 1-channel images",
    "wrong_types": "input_shape must be [height, width, channels]",
    "bad_tta": 'test_time_augmentation must be {} or {"level": 1 or 2',
}


def test_the_pickle_payload_would_run_if_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(_Payload(marker))).close()  # the control: plain unpickling runs it
    assert marker.exists()


@pytest.mark.parametrize("kind", list(TAMPERED))
def test_a_tampered_model_file_gets_one_line_from_every_command(kind: str, tmp_path: Path, gray_model: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    target, marker = tmp_path / "model.safetensors", tmp_path / "PWNED"
    _tamper(kind, gray_model, target, marker)
    image = tmp_path / "x.png"
    Image.new("L", (28, 28), 3).save(image)
    before = snapshot(tmp_path)
    for argv in (["summary", str(target)], ["predict", str(target), str(image)],
                 ["evaluate", str(target), "--dataset", "digits"],
                 ["filters", str(target), "-o", str(tmp_path / "f.png")],
                 ["feature-maps", str(target), str(image), "-o", str(tmp_path / "maps")],
                 ["gradcam", str(target), str(image), "-o", str(tmp_path / "cam.png")]):
        line = assert_refused(*run(capsys, *argv), target)
        assert TAMPERED[kind] in line, line
    assert snapshot(tmp_path) == before and not marker.exists()
