"""`cnnlab export`: every registered model exports and matches torch; int8 keeps real accuracy; errors are loud.

Reference values: the torch model itself (outputs within 1e-4, same top-1 class), the model card the
file was written from, and real Fashion-MNIST test accuracy (int8 within 1 point of fp32).
"""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.export import (
    INT8_MIN_AGREEMENT, OnnxClassifier, check_parity, export_model, inference_session, to_onnx,
)
from cnnlab.models import ModelCard, build_model, save_model
from cnnlab.models.transfer import transfer_model
from cnnlab.models.zoo import MODELS, NOT_EXPORTABLE, model_names, output_kind
from cnnlab.training import fit, predict_proba

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
# Small inputs keep the contract fast; VGG16 and AlexNet at 224 px, where their adaptive pooling is an
# identity, so the fast TorchScript exporter converts them (at 32 px only the torch.export one can).
TEST_SHAPES = {"alexnet": (224, 224, 3), "vgg16": (224, 224, 3), "resnet50": (32, 32, 3),
               "mobilenet_v2": (32, 32, 3), "efficientnet_lite0": (64, 64, 3)}
CLASSES = ["ant", "bee", "cat"]


def _pixels(n, shape, seed=0):
    h, w, c = shape
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _card(model, shape, name="custom"):
    return ModelCard({"name": name}, list(CLASSES), list(shape), output_kind(model), metrics={"accuracy": 0.5})


@pytest.mark.parametrize("name", [n for n in model_names() if n not in NOT_EXPORTABLE])
def test_every_registered_model_exports_and_matches_torch(name, tmp_path):
    torch.manual_seed(0)
    shape = TEST_SHAPES.get(name, MODELS.get(name).default_input_shape)
    model = build_model(name, shape, len(CLASSES)).eval()
    card = _card(model, shape, name)
    report = export_model(model, card, tmp_path / "m.onnx", parity=_pixels(2, shape))
    assert report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0 and report.n_parity_images == 2
    clf = OnnxClassifier(report.path)
    assert clf.card == card  # class names, input shape, outputs, preprocessing, metrics, versions
    assert clf.metadata["input"]["dtype"] == "uint8" and clf.metadata["input"]["shape"][1:] == [shape[2], *shape[:2]]


def test_not_exportable_entries_name_registered_models_and_say_why():
    assert all(name in MODELS and len(reason) > 10 for name, reason in NOT_EXPORTABLE.items())


def test_transfer_models_export(tmp_path):
    # A torchvision backbone behind cnnlab's preprocessing (grayscale -> RGB, mean/std) and a new head;
    # the backbones' own layers are covered by the registry contract above.
    torch.manual_seed(0)
    shape = (32, 32, 1)
    model = transfer_model("resnet18", len(CLASSES), shape, pretrained=False).eval()
    report = export_model(model, _card(model, shape, "transfer"), tmp_path / "t.onnx", parity=_pixels(2, shape))
    assert report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0


class _AdaptiveNet(nn.Module):
    """Adaptive pooling 4x4 -> 3x3: the TorchScript exporter cannot convert it, torch.export can."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.head = nn.Conv2d(1, 4, 3, stride=2), nn.AdaptiveAvgPool2d(3), nn.Linear(36, 3)

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_dynamo_fallback_and_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model, shape = _AdaptiveNet().eval(), (9, 9, 1)
    with pytest.raises(CnnlabError, match="TorchScript ONNX exporter cannot convert.*--exporter dynamo"):
        export_model(model, _card(model, shape), tmp_path / "ts.onnx", exporter="torchscript")
    assert not (tmp_path / "ts.onnx").exists()
    report = export_model(model, _card(model, shape), tmp_path / "a.onnx", parity=_pixels(8, shape))
    assert report.exporter == "dynamo" and report.max_abs_diff < 1e-4
    clf = OnnxClassifier(report.path)
    for n in (1, 7):  # batch sizes other than the exported example's 2
        pixels = _pixels(n, shape, seed=n)
        expected = torch.softmax(model(pixels.float() / 255), 1).detach().numpy()
        np.testing.assert_allclose(clf.predict_proba(pixels), expected, atol=1e-6)


def test_torchscript_export_has_a_dynamic_batch_and_numpy_input(tmp_path):
    model, shape = build_model("seed-mnist", num_classes=3).eval(), (28, 28, 1)  # softmax: probabilities pass through
    report = export_model(model, _card(model, shape), tmp_path / "m.onnx", parity=_pixels(4, shape))
    clf = OnnxClassifier(report.path)
    for n in (1, 7):
        pixels = _pixels(n, shape, seed=n)
        got = clf.predict_proba(pixels.numpy())
        assert got.shape == (n, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, predict_proba(model, pixels).numpy(), atol=1e-6)
    with pytest.raises(CnnlabError, match=r"expected uint8 pixels.*got dtype float32"):
        clf.predict_proba(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(CnnlabError, match=r"expected shape \(N, 1, 28, 28\).*got \(1, 3, 28, 28\)"):
        clf.predict_proba(np.zeros((1, 3, 28, 28), np.uint8))


class _Branchy(nn.Module):
    """Python control flow on the data: tracing records one branch, so the graph computes something else."""

    def __init__(self):
        super().__init__()
        self.net = build_model("fast-cnn", (28, 28, 1), 3)

    def forward(self, x):
        out = self.net(x)
        return out if float(x.mean()) > 0.3 else -out


def test_parity_failure_is_loud_and_leaves_no_file(tmp_path):
    torch.manual_seed(0)
    model, shape = _Branchy().eval(), (28, 28, 1)
    dark = torch.randint(0, 60, (16, 1, 28, 28), dtype=torch.uint8)  # mean ~0.12: the branch not traced
    with pytest.raises(CnnlabError, match="parity failed.*nothing was written"):
        export_model(model, _card(model, shape), tmp_path / "b.onnx", parity=dark)
    assert list(tmp_path.iterdir()) == []
    good = export_model(model.net, _card(model.net, shape), tmp_path / "n.onnx", parity=dark)
    with pytest.raises(CnnlabError, match="parity failed"):  # another model's weights against this file
        check_parity(build_model("fast-cnn", (28, 28, 1), 3), OnnxClassifier(good.path), dark)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    assert main(["train", "--dataset", "digits", "--model", "fast-cnn", "--epochs", "2", "--batch-size", "64",
                 "--seed", "0", "--precision", "fp32", "--run-dir", str(run), "--quiet"]) == 0  # fp32: as ONNX
    return run


def test_cli_exports_a_run_checked_on_its_test_images(digits_run, capsys):
    assert main(["export", str(digits_run)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {digits_run / 'model.onnx'}" in out and "parity on 256 digits test images" in out
    clf = OnnxClassifier(digits_run / "model.onnx")
    from cnnlab.data import load_dataset
    test = load_dataset("digits", split="test")
    accuracy = float((clf.predict_proba(test.images).argmax(1) == test.labels.numpy()).mean())
    assert accuracy == pytest.approx(json.loads((digits_run / "metrics.json").read_text())["test_accuracy"], abs=1e-9)
    assert main(["export", str(digits_run)]) == 2  # exists: refused
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(digits_run), "--force", "--json", "--parity-images", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_parity_images"] == 5 and report["max_abs_diff"] < 1e-4


def test_cli_int8_calibrates_on_the_runs_training_images(digits_run, capsys):
    assert main(["export", str(digits_run), "--quantize", "int8", "--calibration", "200", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["path"].endswith("model-int8.onnx") and r["n_calibration_images"] == 200 and r["n_test_images"] == 360
    assert r["top1_agreement"] >= INT8_MIN_AGREEMENT and r["size_bytes"] < 0.4 * r["fp32_size_bytes"]
    assert abs(r["accuracy"]["int8"] - r["accuracy"]["fp32"]) < 0.03  # 360 images: one flip is 0.28 points
    assert OnnxClassifier(r["path"]).metadata["export"]["quantization"] == "int8"
    weights = [onnx.numpy_helper.to_array(i) for i in onnx.load(r["path"]).graph.initializer
               if i.name.endswith("weight_quantized")]
    # 7-bit weights: AVX2 CPUs without VNNI sum pairs of uint8 x int8 products in int16, 2 * 255 * 64 < 32767
    assert weights and all(w.dtype == np.int8 and np.abs(w.astype(int)).max() <= 64 for w in weights)


@pytest.mark.parametrize("argv, message", [
    (["export", "no/such/run"], "model not found: no/such/run"),
    (["export", "RUN", "-o", "x.txt"], "must end in .onnx"),
    (["export", "RUN", "--quantize", "int4"], "invalid choice: 'int4'"),
    (["export", "RUN", "--calibration", "0"], "expected a positive integer"),
    (["export", "MODEL", "--quantize", "int8", "-o", "q.onnx"], "int8 export needs real training images"),
])
def test_cli_errors_are_one_line(argv, message, digits_run, tmp_path, capsys):
    loose = save_model(build_model("fast-cnn"), tmp_path / "m.safetensors", list("0123456789"), (28, 28, 1))
    argv = [str(digits_run) if a == "RUN" else str(loose) if a == "MODEL" else
            str(tmp_path / a) if a.endswith((".txt", ".onnx")) else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not list(tmp_path.glob("*.onnx"))


def test_onnx_classifier_refuses_files_it_cannot_describe(tmp_path):
    with pytest.raises(CnnlabError, match="ONNX file not found"):
        OnnxClassifier(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    with pytest.raises(CnnlabError, match="not a valid ONNX model"):
        OnnxClassifier(tmp_path / "bad.onnx")
    # a valid graph without cnnlab's metadata
    model = build_model("fast-cnn").eval()
    proto, _ = to_onnx(model, _card(model, (28, 28, 1)))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    with pytest.raises(CnnlabError, match="no 'cnnlab' metadata"):
        OnnxClassifier(tmp_path / "plain.onnx")


@pytest.mark.parametrize(("n", "differ", "passes", "noted"), [
    (12, 1, True, True), (12, 2, False, False), (100, 3, True, False), (100, 4, False, False),
    (1000, 30, True, False), (1000, 31, False, False), (20, 0, True, False)])
def test_int8_agreement_needs_97_percent_and_lets_one_image_differ_on_small_test_sets(n, differ, passes, noted):
    from cnnlab.export.pipeline import int8_agreement
    fp32 = np.eye(3)[np.arange(n) % 3]
    int8 = fp32.copy()
    int8[:differ] = np.roll(int8[:differ], 1, axis=1)  # the first `differ` images get another top-1 class
    if not passes:
        with pytest.raises(CnnlabError, match=rf"agrees with fp32 on only {100 * (1 - differ / n):.1f}% of {n} images"):
            int8_agreement(fp32, int8)
        return
    agreement, note = int8_agreement(fp32, int8)
    assert agreement == pytest.approx(1 - differ / n)
    assert (note is not None) == noted and (not noted or f"{differ} of {n} test images" in note)


@pytest.mark.skipif(not (SHARED / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="real Fashion-MNIST not in ../shared/datasets")
def test_int8_seed_cnn_keeps_fashion_mnist_accuracy_within_one_point(tmp_path):
    from cnnlab.data import load_dataset
    train = load_dataset("fashion-mnist", split="train", data_dir=str(SHARED), download=False)
    test = load_dataset("fashion-mnist", split="test", data_dir=str(SHARED), download=False).subset(range(2000))
    torch.manual_seed(0)
    model = build_model("seed-mnist")
    fit(model, train.subset(range(3000)), epochs=2, batch_size=64, seed=0, verbose=0)
    card = ModelCard({"name": "seed-mnist"}, train.class_names, [28, 28, 1], "probabilities")
    report = export_model(model, card, tmp_path / "q.onnx", quantize="int8", parity=test.images[:256],
                          calibration=train.images[3000:3512], test=(test.images, test.labels))
    assert report.accuracy["fp32"] > 0.70  # a trained model (chance: 0.10), so the int8 comparison means something
    assert report.accuracy["fp32"] - report.accuracy["int8"] < 0.01
    assert report.top1_agreement >= INT8_MIN_AGREEMENT and report.n_test_images == 2000
    assert report.fp32_max_abs_diff is not None and report.fp32_max_abs_diff < 1e-4
    assert report.size_bytes < 0.35 * (report.fp32_size_bytes or 0)
    assert report.latency_ms["int8_batch1"] > 0
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(report.path)).graph.node)
    assert inference_session(report.path).get_inputs()[0].type == "tensor(uint8)"
