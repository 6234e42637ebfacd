"""Inference through a model's cached ONNX twin (cnnlab.inference): made once, verified, torch where it must be.

The twin is the model exported to ONNX into the cache folder ($CNNLAB_CACHE_DIR, a private folder
here: tests/conftest.py), checked against torch when it is made, and found again by the model
file's sha256. These tests pin: it is made once and reused; a twin of another model is detected; a
twin that fails its check is not kept, falls back to torch and is not retried; torch and onnxruntime
give the same top-1 classes on real Fashion-MNIST images; without onnxruntime, auto runs torch and
--runtime onnxruntime is one line; and predicting with a cached twin imports no torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.export import export_onnx
from cnnlab.inference import TWIN_METADATA_KEY, fast_inference, load_inference, model_sha256, twin_folder
from cnnlab.models import build_model, save_model
from cnnlab.predict import predict_images
from cnnlab.serve import load_predictor
from cnnlab.training import fit

FASHION = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fashion-mnist"
DIGITS = [str(i) for i in range(10)]


def _model(folder: Path, seed: int = 0, name: str = "model.safetensors") -> Path:
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    return save_model(build_model("seed-mnist"), folder / name, DIGITS, (28, 28, 1))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))  # each test starts with no twins


def _twins() -> list[Path]:
    return sorted(twin_folder().glob("*.onnx")) if twin_folder().is_dir() else []


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(path)
    return path


def _refuse_exports(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr("cnnlab.export.pipeline.to_onnx", must_not_export)


def test_the_twin_is_made_once_in_the_cache_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(tmp_path / "model")
    beside = sorted(p.name for p in model.parent.iterdir())
    first = load_inference(model, "auto")
    assert (first.runtime, first.reason, first.notes) == ("onnxruntime", "ONNX twin made now", [])
    twins = _twins()
    assert len(twins) == 1 and twins[0].name.startswith(model_sha256(model))
    assert twin_folder().is_relative_to(Path(os.environ["CNNLAB_CACHE_DIR"]))
    assert sorted(p.name for p in model.parent.iterdir()) == beside  # nothing written beside the model
    _refuse_exports(monkeypatch)
    again = load_inference(model, "auto")
    assert (again.runtime, again.reason, again.onnx.path) == ("onnxruntime", "cached ONNX twin", twins[0])
    pixels = np.random.default_rng(1).integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
    expected = load_inference(model, "torch").predict_proba(pixels)
    np.testing.assert_allclose(again.predict_proba(pixels), expected, atol=1e-5)
    assert _twins() == twins


def test_a_cached_twin_of_another_model_is_detected_and_made_anew(tmp_path: Path) -> None:
    model, other = _model(tmp_path / "a", seed=0), _model(tmp_path / "b", seed=1)
    mine = load_inference(model, "auto").onnx.path
    theirs = load_inference(other, "auto").onnx.path
    mine.write_bytes(theirs.read_bytes())  # the cache file replaced by another model's export
    assert fast_inference(model, "auto") is None  # refused on load: it records the other file's sha256
    remade = load_inference(model, "auto")  # (as `cnnlab predict` goes on when the torch-free route is refused)
    assert remade.reason == "ONNX twin made now" and len(remade.notes) == 1
    assert "does not belong to" in remade.notes[0] and model_sha256(other)[:12] in remade.notes[0]
    recorded = json.loads(remade.onnx.session.get_modelmeta().custom_metadata_map[TWIN_METADATA_KEY])
    assert recorded["source_sha256"] == model_sha256(model)
    pixels = np.random.default_rng(2).integers(0, 256, (16, 1, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(remade.predict_proba(pixels), load_inference(model, "torch").predict_proba(pixels),
                               atol=1e-5)


def test_a_twin_that_fails_its_parity_check_is_not_kept_and_not_retried(
        tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import cnnlab.export.pipeline as pipeline

    model = _model(tmp_path / "model")
    real_to_onnx = pipeline.to_onnx
    torch.manual_seed(5)
    impostor = build_model("seed-mnist").eval()  # the graph of another network: the check must catch it
    monkeypatch.setattr(pipeline, "to_onnx", lambda m, card, exporter="auto": real_to_onnx(impostor, card, exporter))
    assert main(["predict", str(model), str(image)]) == 0
    out, err = capsys.readouterr()
    notes = err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith(f"note: {model} runs on torch") and "parity failed" in notes[0]
    assert out.startswith(f"{image}: ") and _twins() == []
    failed = sorted(twin_folder().glob("*.failed"))
    assert len(failed) == 1 and "parity failed" in json.loads(failed[0].read_text())["reason"]
    _refuse_exports(monkeypatch)  # remembered: later calls go straight to torch, quietly
    assert main(["predict", str(model), str(image), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out)[0]["runtime"] == "torch"
    ran = load_inference(model, "auto")
    assert ran.runtime == "torch" and f"delete {failed[0]} to try again" in ran.reason
    assert main(["predict", str(model), str(image), "--runtime", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --runtime onnxruntime cannot run {model}")


@pytest.fixture(scope="module")
def fashion_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """seed-mnist trained one epoch on 1,000 real Fashion-MNIST training images (59% on the first 500 test images)."""
    if not (FASHION / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not at {FASHION}")
    train = load_dataset("fashion-mnist", "train", FASHION, download=False).subset(range(1000))
    torch.manual_seed(0)
    model = build_model("seed-mnist")
    fit(model, train, epochs=1, batch_size=50, verbose=0, seed=0)
    return save_model(model, tmp_path_factory.mktemp("fashion") / "model.safetensors", train.class_names, (28, 28, 1))


def test_torch_and_onnxruntime_give_the_same_top1_on_500_fashion_mnist_images(
        fashion_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    test = load_dataset("fashion-mnist", "test", FASHION, download=False)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(500):
        Image.fromarray(test.images[i, 0].numpy()).save(folder / f"{i:03d}.png")
    on_torch = predict_images(fashion_model, [folder], top_k=10, runtime="torch")
    on_onnx = predict_images(fashion_model, [folder], top_k=10, runtime="onnxruntime")
    assert (on_torch.runtime, on_onnx.runtime) == ("torch", "onnxruntime")
    top1 = [[p.top[0][0] for p in found.predictions] for found in (on_torch, on_onnx)]
    assert top1[0] == top1[1]
    truth = [test.class_names[int(label)] for label in test.labels[:500]]
    accuracy = float(np.mean([name == true for name, true in zip(top1[0], truth, strict=True)]))
    assert accuracy > 0.5  # a trained model: the agreement is on real decisions, not on noise
    for a, b in zip(on_torch.predictions, on_onnx.predictions, strict=True):
        assert dict(a.top) == pytest.approx(dict(b.top), abs=1e-5)
    data_dir = tmp_path / "slice"  # the same 500 images as Fashion-MNIST's test split, through `cnnlab evaluate`
    _write_idx(data_dir / "fashion-mnist" / "t10k-images-idx3-ubyte", test.images[:500, 0].numpy())
    _write_idx(data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte", test.labels[:500].numpy().astype(np.uint8))
    results = {}
    for runtime in ("torch", "onnxruntime"):
        assert main(["evaluate", str(fashion_model), "--dataset", "fashion-mnist", "--data-dir", str(data_dir),
                     "--no-download", "--runtime", runtime, "--json"]) == 0
        results[runtime] = json.loads(capsys.readouterr().out)
    assert [r["inference"]["runtime"] for r in results.values()] == ["torch", "onnxruntime"]
    assert results["onnxruntime"]["n"] == 500 and results["onnxruntime"]["accuracy"] == pytest.approx(accuracy)
    assert results["onnxruntime"]["accuracy"] == results["torch"]["accuracy"]
    assert results["onnxruntime"]["loss"] == pytest.approx(results["torch"]["loss"], abs=1e-5)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of uint8 `array`, the format MNIST and Fashion-MNIST ship in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def test_the_report_and_serve_run_the_twin_and_tta_stays_on_torch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model(tmp_path / "model")
    assert main(["evaluate", str(model), "--dataset", "digits", "--runtime", "torch", "--json"]) == 0
    on_torch = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(model), "--dataset", "digits", "--report", str(tmp_path / "report"), "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert reported["inference"]["runtime"] == "onnxruntime" and reported["accuracy"] == on_torch["accuracy"]
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["inference"]["runtime"] == "onnxruntime" and metrics["inference"]["twin"] == str(_twins()[0])
    assert main(["evaluate", str(model), "--dataset", "digits", "--tta", "1", "--json"]) == 0
    with_tta = json.loads(capsys.readouterr().out)["inference"]
    assert with_tta["runtime"] == "torch" and with_tta["reason"].startswith("test-time augmentation")
    served = load_predictor(model.parent, "auto")
    assert served.runtime == "onnxruntime" and served.path == model and served.name == "model"
    assert load_predictor(model.parent).runtime == "torch"  # Python callers opt in; the command defaults to auto


def test_the_commands_take_runtime_and_refuse_a_wrong_one_in_one_line(
        tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model(tmp_path / "model")
    started: dict[str, object] = {}
    monkeypatch.setattr("cnnlab.serve.run_server", lambda *a, **k: started.update(k))
    assert main(["serve", str(model)]) == 0 and started["runtime"] == "auto"
    assert main(["predict", str(model), str(image), "--runtime", "tensorrt"]) == 2
    assert "--runtime: invalid choice: 'tensorrt'" in capsys.readouterr().err
    onnx = export_onnx(model, tmp_path / "m.onnx").path
    assert main(["predict", str(onnx), str(image), "--runtime", "torch"]) == 2
    assert capsys.readouterr().err == (f"error: --runtime torch cannot run {onnx}, an ONNX file: use --runtime auto or "
                                       f"onnxruntime, or give the run directory or .safetensors file it was exported "
                                       f"from\n")
    with pytest.raises(CnnlabError, match="--runtime must be auto, torch or onnxruntime; got 'gpu'"):
        load_inference(model, "gpu")


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)


def test_without_onnxruntime_auto_runs_torch_and_onnxruntime_is_one_line(tmp_path: Path, image: Path) -> None:
    model = _model(tmp_path / "model")
    done = _run(f"""
        import json, sys
        sys.modules["onnxruntime"] = None  # as if it were not installed: `import onnxruntime` raises ImportError
        from cnnlab.cli import main
        print("exit", main(["predict", {str(model)!r}, {str(image)!r}, "--json"]), flush=True)
        print("exit", main(["predict", {str(model)!r}, {str(image)!r}, "--runtime", "onnxruntime"]), flush=True)
        print("exit", main(["evaluate", {str(model)!r}, "--dataset", "digits", "--json"]), flush=True)
    """, tmp_path)
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("exit")] == ["exit 0", "exit 2", "exit 0"], done.stderr
    predicted = json.loads("\n".join(lines[:lines.index("exit 0")]))
    assert predicted[0]["runtime"] == "torch"
    evaluated = json.loads(lines[-2])["inference"]
    assert evaluated["runtime"] == "torch" and evaluated["reason"].startswith("onnxruntime is not installed")
    assert done.stderr == ("error: --runtime onnxruntime needs onnxruntime, which is not installed: "
                           "pip install 'cnnlab[export]', or use --runtime torch\n")
    assert _twins() == []


def test_predicting_with_a_cached_twin_or_an_onnx_file_imports_no_torch(tmp_path: Path, image: Path) -> None:
    model = _model(tmp_path / "model")
    expected = predict_images(model, [image], top_k=3, runtime="torch").predictions[0].top
    load_inference(model, "auto")  # the first use makes the twin (and may import torch)
    onnx = export_onnx(model, tmp_path / "m.onnx").path
    done = _run(f"""
        import sys
        from cnnlab.cli import main
        for source in ({str(model.parent)!r}, {str(onnx)!r}):
            print("exit", main(["predict", source, {str(image)!r}, "--json"]), flush=True)
        print("torch imported:", "torch" in sys.modules)
    """, tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = done.stdout.split("exit 0\n")
    assert out[-1] == "torch imported: False\n"
    for listing in out[:2]:
        got = json.loads(listing)[0]
        assert got["runtime"] == "onnxruntime"
        assert [t["class"] for t in got["top"]] == [c for c, _ in expected]
        assert [t["probability"] for t in got["top"]] == pytest.approx([p for _, p in expected], abs=1e-5)
