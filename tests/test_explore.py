"""`cnnlab explore` (issue 20): the numbers the page shows are the model's own.

The step-by-step convolution must give the value torch computed, at corners (where 'same' padding
zeros enter) and inside, for Sequential, functional, strided and transfer models; the output-size
formula must give every real layer's shape; the parameter arithmetic must give the summary's count;
receptive fields are checked against hand-worked values. The API serves activations as PNG grids of
a known layout, computed in one forward pass, and refuses bad uploads exactly as `cnnlab serve` does.
"""

from __future__ import annotations

import io
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab import keras
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explore.app import create_explore_app, load_explorer
from cnnlab.explore.architecture import architecture
from cnnlab.explore.explorer import Explorer
from cnnlab.interpret import feature_maps, first_layer_filters
from cnnlab.keras import layers
from cnnlab.models.files import ModelCard
from cnnlab.models.layers import MaxPooling2D
from cnnlab.models.transfer import transfer_model
from cnnlab.models.zoo import build_model
from cnnlab.serve import create_app

sys.path.insert(0, str(Path(__file__).parent / "keras_programs"))
import seed_models as shared_models  # noqa: E402  (the tutorials' models, written once)


def _strided() -> torch.nn.Module:
    """Stride 2 with 'same' on an odd size (Keras puts the extra zero after), and a (5, 3) kernel."""
    return shared_models.seed_models(layers, keras.models)["strides_same"]()


MODELS = {  # name: (build, (H, W, C))
    "seed-mnist": (lambda: build_model("seed-mnist"), (28, 28, 1)),
    "residual": (lambda: shared_models.residual_model(keras, layers), (32, 32, 3)),
    "strided-same": (_strided, (27, 27, 3)),
    "resnet18": (lambda: transfer_model("resnet18", 5, (64, 64, 3), pretrained=False), (64, 64, 3)),
    "lite0": (lambda: transfer_model("efficientnet_lite0", 5, (48, 48, 3), pretrained=False), (48, 48, 3)),
    "keras-mobilenetv2": (lambda: keras.applications.MobileNetV2(input_shape=(48, 48, 3), weights=None, classes=10),
                          (48, 48, 3)),
    "speedrun": (lambda: build_model("speedrun", (32, 32, 3), widths=(16, 32, 32)), (32, 32, 3)),
}


@pytest.fixture(scope="module", params=list(MODELS))
def explored(request) -> tuple[str, Explorer, str]:
    """(model name, explorer with random weights and BatchNorm statistics, key of one random input)."""
    build, (h, w, c) = MODELS[request.param]
    torch.manual_seed(0)
    model = build()
    for module in model.modules():  # non-trivial BatchNorm statistics, so a folded or skipped BN would show
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    card = ModelCard({"name": request.param}, [str(i) for i in range(10)], [h, w, c])
    explorer = Explorer(model, card, request.param)
    key = explorer.add_input(torch.randint(0, 256, (c, h, w), dtype=torch.uint8, generator=torch.Generator()
                                           .manual_seed(1)), "noise.png")
    return request.param, explorer, key


def test_the_step_by_step_sum_is_the_feature_map_value_torch_computed(explored):
    name, explorer, key = explored
    convs = [layer for layer in explorer.layers if layer.steppable]
    assert convs, name
    checked = 0
    for layer in convs:
        h, w, c = layer.output_shape
        for channel, row, col in ((0, 0, 0), (c - 1, h - 1, w - 1), (c // 2, h // 2, w // 3), (c // 3, 0, w - 1)):
            step = explorer.conv_step(key, layer.name, channel, row, col)
            products = np.array(step["products"])
            assert products.shape == (len(step["in_channels"]), *layer.settings["kernel"])
            assert step["sum"] == pytest.approx(products.sum())
            assert step["sum_plus_bias"] == pytest.approx(step["sum"] + step["bias"])
            assert step["value"] == pytest.approx(step["torch_value"], rel=1e-4, abs=1e-5), (name, layer.name, step)
            checked += 1
    assert checked == 4 * len(convs)


def test_the_first_convolution_of_seed_mnist_by_hand_and_its_padding_zeros():
    """seed-mnist's first output value is relu(sum(window * kernel) + bias) over the image's top-left 3x3."""
    torch.manual_seed(0)
    model = build_model("seed-mnist")
    explorer = Explorer(model, ModelCard({"name": "seed-mnist"}, list("0123456789"), [28, 28, 1]), "m")
    pixels = torch.arange(28 * 28).reshape(1, 28, 28).remainder(256).to(torch.uint8)
    step = explorer.conv_step(explorer.add_input(pixels, "ramp"), "conv2d", 5, 0, 0)
    window = (pixels[0, :3, :3].float() / 255).double()  # the model's input: float32 pixels / 255
    kernel = model[0].weight[5, 0].double().detach()
    by_hand = float((window * kernel).sum() + model[0].bias[5].double())
    assert step["window"] == [window.tolist()] and step["padding_mask"] == [[False] * 3] * 3
    assert step["sum_plus_bias"] == pytest.approx(by_hand, abs=1e-9) and step["value"] == pytest.approx(max(by_hand, 0))
    # 'same' on the functional model: the corner window hangs one zero over the top and the left
    residual = Explorer(shared_models.residual_model(keras, layers),
                        ModelCard({"name": "r"}, list("0123456789"), [32, 32, 3]), "r")
    key = residual.add_input(torch.full((3, 32, 32), 200, dtype=torch.uint8), "grey")
    corner = residual.conv_step(key, "conv2d", 0, 0, 0)
    assert corner["origin"] == [-1, -1] and corner["padding_mask"] == [[True] * 3, [True, False, False],
                                                                       [True, False, False]]
    assert corner["window"][0][0] == [0.0, 0.0, 0.0] and corner["window"][0][1][1] == pytest.approx(200 / 255)
    # stride 2 'same' on 27: (14 - 1) * 2 + 3 - 27 = 2 zeros, one each side; the last of the 14 windows starts
    # at 13 * 2 - 1 = 25 and hangs one zero over the bottom and the right. (Odd totals, where Keras puts the
    # extra zero after, are lite0's stride-2 layers on 48x48 in the tests above: (24 - 1) * 2 + 3 - 48 = 1.)
    strided = Explorer(_strided(), ModelCard({"name": "s"}, list("012"), [27, 27, 3]), "s")
    last = strided.conv_step(strided.add_input(torch.ones(3, 27, 27, dtype=torch.uint8), "x"), "conv2d", 0, 13, 13)
    assert last["pads"] == {"top": 1, "bottom": 1, "left": 1, "right": 1} and last["origin"] == [25, 25]
    assert last["padding_mask"] == [[False, False, True], [False, False, True], [True, True, True]]


def test_the_output_size_formula_gives_every_real_layers_shape(explored):
    name, explorer, _ = explored
    with_formula = [layer for layer in explorer.layers if layer.formula is not None]
    assert len(with_formula) >= 2, name
    for layer in with_formula:
        assert tuple(layer.formula["output"]) == layer.output_shape[:2], (name, layer.name, layer.formula)
        for axis, text in (("height", layer.formula["height"]), ("width", layer.formula["width"])):
            left, right = text.rsplit(" = ", 1)
            assert int(right) == layer.formula["output"][axis == "width"], text
            numbers = left.replace("floor", "math.floor").replace("ceil", "math.ceil")
            assert eval(numbers, {"math": __import__("math")}) == int(right), text  # the shown arithmetic adds up


def test_hand_worked_formulas_parameters_and_receptive_fields_of_seed_mnist():
    rows = {r.name: r for r in architecture(build_model("seed-mnist"), (28, 28, 1))}
    assert rows["conv2d"].formula["height"] == "floor((28 + 2*0 - 3) / 1) + 1 = 26"
    assert rows["max_pooling2d"].formula["height"] == "floor((26 + 2*0 - 2) / 2) + 1 = 13"
    assert rows["conv2d"].params_worked == "(3*3*1 + 1) * 32 = 320"
    assert rows["conv2d_1"].params_worked == "(3*3*32 + 1) * 64 = 18496"
    assert rows["dense"].params_worked == "(1600 + 1) * 64 = 102464"
    # r = r_in + (k - 1) * j_in: 1 + 2 = 3; pool 3 + 1 = 4 (j 2); conv 4 + 2*2 = 8; pool 8 + 1*2 = 10 (j 4)
    assert [rows[n].receptive_field for n in ("conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1")] == [
        (3, 3), (4, 4), (8, 8), (10, 10)]
    assert rows["dense"].receptive_field == (28, 28) and rows["conv2d"].trainable is True
    stem = {r.name: r for r in architecture(transfer_model("resnet18", 5, (64, 64, 3), pretrained=False), (64, 64, 3))}
    assert stem["features.0.0"].receptive_field == (7, 7) and stem["features.0.3"].receptive_field == (11, 11)
    assert stem["features.0.0"].formula["height"] == "floor((64 + 2*3 - 7) / 2) + 1 = 32"


def test_the_parameter_arithmetic_gives_the_summarys_count(explored):
    name, explorer, _ = explored
    worked = [layer for layer in explorer.layers if layer.params_worked]
    assert worked and all(layer.params == 0 for layer in explorer.layers if not layer.params_worked)
    for layer in worked:
        expression, total = layer.params_worked.split(" (")[0].rsplit(" = ", 1)
        assert re.fullmatch(r"[\d\s*+()]+", expression), layer.params_worked
        assert eval(expression) == int(total) == layer.params, (name, layer.name, layer.params_worked)


def test_functional_graph_rows_name_the_layers_that_feed_them():
    rows = {r.name: r for r in architecture(shared_models.residual_model(keras, layers), (32, 32, 3))}
    assert rows["conv2d"].inputs == ["input"] and rows["add"].inputs == ["batch_normalization", "conv2d"]
    assert rows["add"].receptive_field == (5, 5)  # the larger of its two branches (3 and 5)


# ---------------------------------------------------------------- the API on a trained run

@pytest.fixture(scope="module")
def app_client(served_run):
    app = create_explore_app(served_run, max_files=3, max_bytes=1_000_000, max_pixels=1_000_000)
    with TestClient(app) as client:
        app.state.ranker.join(120)  # the search for mistakes runs beside the server
        yield client


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_the_runs_own_test_images_are_offered_by_class(app_client):
    inputs = app_client.get("/api/inputs").json()["inputs"]
    classes = [item["true_class"] for item in inputs]
    assert sorted(set(classes)) == list(range(10)) and all(classes.count(c) == 4 for c in range(10))
    rows = app_client.get("/api/architecture").json()["layers"]
    assert [(r["name"], r["output_shape"], r["params"], r["trainable"]) for r in rows[:2]] == [
        ("conv2d", [26, 26, 32], 320, True), ("max_pooling2d", [13, 13, 32], 0, None)]
    assert _png(app_client.get(inputs[0]["image"])).shape == (28, 28)


def test_activations_are_png_grids_of_one_forward_pass(app_client, served_run):
    explorer = app_client.app.state.explorer
    key = explorer.add_input(torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8,
                                           generator=torch.Generator().manual_seed(5)), "noise.png")
    calls = []
    handle = explorer.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        meta = app_client.get(f"/api/inputs/{key}/activations").json()
        grids = {layer["name"]: _png(app_client.get(f"/api/inputs/{key}/maps.png", params={"layer": layer["name"]}))
                 for layer in meta["layers"]}
        one = _png(app_client.get(f"/api/inputs/{key}/maps.png", params={"layer": "conv2d", "channel": 7}))
    finally:
        handle.remove()
    assert len(calls) == 1  # every layer's maps from the one pass, cached
    assert [layer["name"] for layer in meta["layers"]] == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1"]
    # 32 maps of 26x26 in 6 columns and 6 rows, 1 pixel apart: 6*26 + 5 = 161; 64 maps of 5x5 in 8x8: 8*5 + 7 = 47
    assert grids["conv2d"].shape == (161, 161) and grids["max_pooling2d"].shape == (6 * 13 + 5, 6 * 13 + 5)
    assert grids["conv2d_1"].shape == (8 * 11 + 7, 8 * 11 + 7) and grids["max_pooling2d_1"].shape == (47, 47)
    assert sum(meta["probabilities"]) == pytest.approx(1, abs=1e-5) and len(meta["probabilities"]) == 10
    reference = feature_maps(explorer.model, explorer.inputs[key].pixels, ["conv2d"])["conv2d"]  # (32, 26, 26)
    channel = reference[7]
    stretched = ((channel - channel.min()) / (channel.max() - channel.min()) * 255).round().numpy()
    assert one.shape == (26, 26) and np.abs(one.astype(int) - stretched).max() <= 1
    tile = grids["conv2d"][27:53, 27 * 1:27 + 26]  # row 1, column 1: channel 7
    assert np.array_equal(tile, one)
    assert meta["layers"][0]["max"] == pytest.approx(float(reference.max()), rel=1e-5)


def test_grad_cam_changes_with_the_class_and_filters_are_images(app_client):
    key = app_client.get("/api/inputs").json()["inputs"][0]["key"]
    cams = [_png(app_client.get(f"/api/inputs/{key}/gradcam.png", params={"class_index": c, "layer": "conv2d_1"}))
            for c in (0, 1)]
    assert cams[0].shape == (224, 224, 3) and not np.array_equal(cams[0], cams[1])
    again = _png(app_client.get(f"/api/inputs/{key}/gradcam.png", params={"class_index": 0, "layer": "conv2d"}))
    assert not np.array_equal(again, cams[0])
    filters = _png(app_client.get("/api/filters.png"))
    assert filters.shape == (6 * 3 + 5, 6 * 3 + 5)  # 32 kernels of 3x3 in a 6x6 grid
    weights = first_layer_filters(app_client.app.state.explorer.model)[0, 0]
    stretched = ((weights - weights.min()) / (weights.max() - weights.min()) * 255).round().numpy()
    assert np.abs(filters[:3, :3].astype(int) - stretched).max() <= 1


def test_bad_requests_get_one_line_answers(app_client):
    key = app_client.get("/api/inputs").json()["inputs"][0]["key"]
    for url, params, status, words in (
            ("/api/inputs/nope/activations", {}, 404, "no input 'nope'"),
            (f"/api/inputs/{key}/maps.png", {"layer": "dense"}, 404, "not feature maps"),
            (f"/api/inputs/{key}/maps.png", {"layer": "conv2d", "channel": 32}, 422, "channels 0..31"),
            (f"/api/inputs/{key}/conv-step", {"layer": "max_pooling2d"}, 404, "use one of: conv2d, conv2d_1"),
            (f"/api/inputs/{key}/conv-step", {"layer": "conv2d", "row": 26}, 422, "row=26 is out of range"),
            (f"/api/inputs/{key}/gradcam.png", {"layer": "conv2d", "class_index": 10}, 422, "0..9"),
            (f"/api/inputs/{key}/conv-step", {"layer": "conv2d", "row": -1}, 422, "row")):
        response = app_client.get(url, params=params)
        assert response.status_code == status, (url, params, response.text)
        detail = response.json()["detail"]
        assert words in detail and "\n" not in detail, detail


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (2_000, 2_000)).save(buffer, "PNG")  # 4 megapixels: over this app's 1-megapixel limit
    return buffer.getvalue()


def test_bad_uploads_get_the_same_answers_as_cnnlab_serve(app_client, served_run):
    good = io.BytesIO()
    Image.new("L", (40, 30), 255).save(good, "PNG")
    png = good.getvalue()
    cases = {
        "truncated": {"files": [("files", ("cut.png", png[:60], "image/png"))]},
        "not an image": {"files": [("files", ("notes.txt", b"hello there", "text/plain"))]},
        "empty file": {"files": [("files", ("empty.png", b"", "image/png"))]},
        "too many pixels": {"files": [("files", ("big.png", _bomb(), "image/png"))]},
        "too many files": {"files": [("files", (f"{i}.png", png, "image/png")) for i in range(4)]},
        "not multipart": {"content": png, "headers": {"content-type": "image/png"}},
        "too many bytes": {"files": [("files", ("huge.png", png + b"\0" * 1_100_000, "image/png"))]},
    }
    serve = TestClient(create_app(served_run, max_files=3, max_bytes=1_000_000, max_pixels=1_000_000))
    for case, request in cases.items():
        ours, theirs = app_client.post("/api/inputs", **request), serve.post("/predict", **request)
        assert ours.status_code == theirs.status_code and ours.status_code in (400, 413, 415), case
        assert ours.json() == theirs.json(), case
    accepted = app_client.post("/api/inputs", files=[("files", ("white.png", png, "image/png"))])
    assert accepted.status_code == 200 and accepted.json()["inputs"][0]["label"] == "white.png"
    assert _png(app_client.get(accepted.json()["inputs"][0]["image"])).min() == 255  # resized to 28x28, white


def test_an_api_key_guards_everything_but_the_page_and_health(served_run):
    explorer = app_explorer = load_explorer(served_run)
    assert app_explorer.inputs
    client = TestClient(create_explore_app(explorer, api_key="s3cret"))
    assert client.get("/").status_code == 200 and client.get("/health").json()["api_key_required"] is True
    for url in ("/api/model", "/api/architecture", "/api/inputs", "/api/filters.png"):
        assert client.get(url).status_code == 401, url
        assert client.get(url, headers={"X-API-Key": "s3cret"}).status_code == 200, url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_uvicorn(monkeypatch):
    import uvicorn

    def refuse(*args, **kwargs):
        raise AssertionError("uvicorn started serving")

    monkeypatch.setattr(uvicorn.Server, "run", refuse)


def test_a_model_that_cannot_load_is_one_error_line_and_exit_2(served_run, tmp_path, capsys, no_uvicorn):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_bytes((served_run / "model.json").read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file at all")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\0")
    for source, words in ((broken, "model.safetensors"), (tmp_path / "missing", "missing"),
                          (onnx, "this command reads cnnlab model files")):
        code = main(["explore", str(source), "--port", str(_free_port())])
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), (source, err)
        assert words in lines[0] and "Traceback" not in err, lines[0]
    with pytest.raises(CnnlabError, match="explore needs the torch model"):  # the API says it too
        load_explorer(onnx)
    code = main(["explore", str(served_run), "--host", "0.0.0.0", "--port", str(_free_port())])
    assert code == 2 and "--api-key" in capsys.readouterr().err


# ---------------------------------------------------------------- sorting, ReLU, max pooling, sizes, rankings

def test_channels_sort_by_mean_activation_and_the_sorted_grid_follows(app_client):
    explorer = app_client.app.state.explorer
    key = app_client.get("/api/inputs").json()["inputs"][0]["key"]
    meta = {layer["name"]: layer for layer in app_client.get(f"/api/inputs/{key}/activations").json()["layers"]}
    maps = explorer.trace(key).outputs["conv2d"]  # (32, 26, 26)
    means = maps.double().mean(dim=(1, 2))
    order = meta["conv2d"]["order"]
    assert sorted(order) == list(range(32)) and order[0] == int(means.argmax()) and means[order[-1]] == means.min()
    pairs = zip(order[:-1], order[1:], strict=True)
    assert all(means[a] > means[b] or (means[a] == means[b] and a < b) for a, b in pairs)  # ties by channel
    grid = _png(app_client.get(f"/api/inputs/{key}/maps.png", params={"layer": "conv2d", "order": "mean"}))
    for tile, channel in ((0, order[0]), (7, order[7])):  # tile 7: row 1, column 1 of 6
        r, c = divmod(tile, 6)
        one = _png(app_client.get(f"/api/inputs/{key}/maps.png", params={"layer": "conv2d", "channel": channel}))
        assert np.array_equal(grid[r * 27:r * 27 + 26, c * 27:c * 27 + 26], one), (tile, channel)
    assert meta["conv2d"]["relu"] is True and meta["max_pooling2d"]["max_pool"] is True
    bad = app_client.get(f"/api/inputs/{key}/maps.png", params={"layer": "conv2d", "order": "size"})
    assert bad.status_code == 422 and "'index' or 'mean'" in bad.json()["detail"]


def test_relu_before_after_is_the_convolution_before_and_max_zero_after(app_client):
    explorer = app_client.app.state.explorer
    key = app_client.get("/api/inputs").json()["inputs"][5]["key"]
    for layer, channel in (("conv2d", 4), ("conv2d_1", 63)):
        pair = app_client.get(f"/api/inputs/{key}/relu", params={"layer": layer, "channel": channel}).json()
        before, after = torch.tensor(pair["before"]), torch.tensor(pair["after"])
        module = explorer.modules[layer]
        x = explorer.trace(key).conv_inputs[layer][None]
        by_torch = torch.nn.functional.conv2d(x, module.weight, module.bias)[0, channel]  # 'valid': no padding
        assert torch.allclose(before, by_torch, atol=1e-5)
        assert torch.equal(after, before.clamp_min(0)) and (before < 0).any() and (before > 0).any()
        assert pair["zeroed"] == int((before <= 0).sum())
        assert torch.equal(after, explorer.trace(key).outputs[layer][channel])
    refused = app_client.get(f"/api/inputs/{key}/relu", params={"layer": "max_pooling2d"})
    assert refused.status_code == 404 and "use one of: conv2d, conv2d_1" in refused.json()["detail"]


def test_a_relu_layer_of_its_own_shows_its_input_before_and_max_zero_after():
    """torchvision's conv, batch norm, ReLU (in place, and shared within a block): before is the batch norm's output."""
    torch.manual_seed(0)
    explorer = Explorer(transfer_model("resnet18", 5, (64, 64, 3), pretrained=False),
                        ModelCard({"name": "r"}, list("01234"), [64, 64, 3]), "r")
    key = explorer.add_input(torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8,
                                           generator=torch.Generator().manual_seed(2)), "noise.png")
    outputs = explorer.trace(key).outputs
    for relu, fed_by, channel in (("features.0.2", "features.0.1", 5), ("features.1.relu", "features.1.bn1", 60)):
        pair = explorer.relu_before_after(key, relu, channel)
        before, after = torch.tensor(pair["before"]), torch.tensor(pair["after"])
        assert torch.equal(before, outputs[fed_by][channel]) and (before < 0).any() and (before > 0).any()
        assert torch.equal(after, before.clamp_min(0)) and torch.equal(after, outputs[relu][channel])
    assert next(x for x in explorer.activations(key)["layers"] if x["name"] == "features.0.2")["relu"] is True


@pytest.mark.parametrize("name", ["seed-mnist", "resnet18"])
def test_max_pooling_marks_the_value_each_window_keeps_as_torch_does(name):
    build, (h, w, c) = MODELS[name]
    torch.manual_seed(0)
    explorer = Explorer(build(), ModelCard({"name": name}, list("01234"), [h, w, c]), name)
    key = explorer.add_input(torch.randint(0, 256, (c, h, w), dtype=torch.uint8,
                                           generator=torch.Generator().manual_seed(3)), "noise.png")
    pools = [n for n, m in explorer.modules.items() if isinstance(m, (torch.nn.MaxPool2d, MaxPooling2D))]
    assert pools, name
    for layer in pools:
        module = explorer.modules[layer]
        for channel in (0, 3):
            shown = explorer.pool_windows(key, layer, channel)
            x = explorer.trace(key).conv_inputs[layer][channel]  # (H, W)
            kernel, stride = shown["kernel"], shown["strides"]
            padding = getattr(module, "padding", 0) if isinstance(module, torch.nn.MaxPool2d) else 0
            values, indices = torch.nn.functional.max_pool2d(x[None, None], kernel, stride, padding,
                                                             return_indices=True)
            width = x.shape[1]
            assert [win["argmax"] for win in shown["windows"]] == [
                list(divmod(i, width)) for i in indices.flatten().tolist()], (name, layer)
            assert [win["value"] for win in shown["windows"]] == pytest.approx(values.flatten().tolist())
            assert shown["output_shape"] == list(explorer.trace(key).outputs[layer].shape[1:])


def test_the_output_size_sandbox_is_conv_arithmetic_and_torch(app_client):
    from cnnlab.conv_arithmetic import output_size
    from cnnlab.models.layers import Conv2D

    for size, kernel, stride, padding, expected in ((10, 3, 1, "valid", 8), (10, 3, 1, "same", 10),
                                                    (28, 3, 1, "valid", 26), (28, 3, 2, "same", 14),
                                                    (224, 7, 2, "same", 112), (27, 5, 2, "valid", 12)):
        answer = app_client.get("/api/output-size", params={"size": size, "kernel": kernel, "stride": stride,
                                                            "padding": padding}).json()
        real = Conv2D(1, kernel, strides=stride, padding=padding)(torch.zeros(1, 1, size, size)).shape[2]
        assert answer["formula"] == answer["measured"] == output_size(size, kernel, stride, padding) == real == expected
        if padding == "valid" or stride == 1:  # torch's own layer ('same' there takes stride 1 only)
            plain = torch.nn.Conv2d(1, 1, kernel, stride, padding=padding)(torch.zeros(1, 1, size, size)).shape[2]
            assert plain == expected, (size, kernel, stride, padding)
        assert answer["worked"].split(" = ")[1].startswith(str(expected))
    assert app_client.get("/api/output-size", params={"size": 10, "kernel": 3}).json()["worked"] == \
        "floor((10 - 3) / 1) + 1 = 8"
    refused = app_client.get("/api/output-size", params={"size": 2, "kernel": 3})
    assert refused.status_code == 422 and "does not fit" in refused.json()["detail"]


def test_mistakes_are_misclassified_and_least_confident_are_sorted(app_client):
    explorer = app_client.app.state.explorer
    listing = app_client.get("/api/inputs").json()
    mistakes, unsure = listing["mistakes"], listing["least_confident"]
    assert len(mistakes) == len(unsure) == 12  # a 1-epoch run (~84%) makes more than 12 mistakes
    for item in mistakes:
        probs = explorer.trace(item["key"]).probabilities  # recomputed here, not the ranking's own numbers
        assert int(np.argmax(probs)) == item["predicted"] != item["true_class"]
        assert max(probs) == pytest.approx(item["probability"], abs=1e-5)
    assert [m["probability"] for m in mistakes] == sorted((m["probability"] for m in mistakes), reverse=True)
    tops = [max(explorer.trace(item["key"]).probabilities) for item in unsure]
    assert tops == pytest.approx([item["probability"] for item in unsure], abs=1e-5)
    assert tops == sorted(tops)
    # every class sample was among the images scanned: the ones not listed are at least as confident
    unsure_keys = {item["key"] for item in unsure}
    others = [max(explorer.trace(item["key"]).probabilities) for item in listing["inputs"]
              if item["key"].startswith("t") and item["key"] not in unsure_keys]
    assert len(others) >= 28 and min(others) >= tops[-1] - 1e-6
    listed = {item["key"] for item in listing["inputs"]}  # by class and uploads; ranked-only images stay apart
    assert explorer.ranked_only and not explorer.ranked_only & listed
    assert explorer.ranked_only <= {item["key"] for item in mistakes + unsure}


# ---------------------------------------------------------------- side by side, deeper filters, the graph

def test_shifted_and_rotated_copies_are_the_pixels_numpy_gives():
    from cnnlab.explore.explorer import moved

    image = torch.randint(0, 256, (3, 9, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    right_down = np.zeros((3, 9, 9), np.uint8)
    right_down[:, 2:, 3:] = image.numpy()[:, :7, :6]
    assert np.array_equal(moved(image, shift_x=3, shift_y=2).numpy(), right_down)
    left_up = np.zeros((3, 9, 9), np.uint8)
    left_up[:, :5, :8] = image.numpy()[:, 4:, 1:]
    assert np.array_equal(moved(image, shift_x=-1, shift_y=-4).numpy(), left_up)
    for angle, turns in ((90, 1), (180, 2), (-90, 3), (360, 0)):  # counter-clockwise, as numpy's rot90
        assert np.array_equal(moved(image, rotate=angle).numpy(), np.rot90(image.numpy(), turns, axes=(1, 2))), angle
    assert moved(image, rotate=30).shape == image.shape and moved(image, rotate=30)[:, 0, 0].tolist() == [0, 0, 0]


def test_a_variant_is_a_new_input_with_the_same_class(app_client):
    explorer = app_client.app.state.explorer
    base = next(item for item in app_client.get("/api/inputs").json()["inputs"] if item["true_class"] == 3)
    made = app_client.post(f"/api/inputs/{base['key']}/variant", params={"shift_x": 3, "rotate": 45})
    assert made.status_code == 200, made.text
    item = made.json()
    assert item["key"] != base["key"] and item["true_class"] == 3
    assert item["label"] == f"{base['label']}, shifted 3 px right, rotated 45°"
    from cnnlab.explore.explorer import moved
    expected = moved(explorer.inputs[base["key"]].pixels, 3, 0, 45)
    assert torch.equal(explorer.inputs[item["key"]].pixels, expected)
    assert _png(app_client.get(item["image"])).shape == (28, 28)
    again = app_client.post(f"/api/inputs/{base['key']}/variant", params={"shift_x": 3, "rotate": 45}).json()
    assert again["key"] == item["key"]  # the same pixels: the same input
    for params, status, words in (({"shift_x": 28}, 422, "within -27..27"), ({"rotate": 400}, 422, "rotate"),
                                  ({"shift_y": "up"}, 422, "shift_y")):
        refused = app_client.post(f"/api/inputs/{base['key']}/variant", params=params)
        assert refused.status_code == status and words in str(refused.json()["detail"]), (params, refused.text)
    assert app_client.post("/api/inputs/nope/variant", params={"rotate": 90}).status_code == 404


def test_a_deeper_filter_is_drawn_as_heat_maps_per_input_channel(app_client):
    explorer = app_client.app.state.explorer
    meta = app_client.get("/api/kernels", params={"layer": "conv2d_1", "channel": 5}).json()
    weight = explorer.modules["conv2d_1"].weight[5].detach()  # (32, 3, 3)
    assert (meta["in_channels"], meta["shown"], meta["columns"], meta["rows"], meta["kernel"]) == (32, 32, 6, 6, [3, 3])
    assert meta["max_abs"] == pytest.approx(float(weight.abs().max()))
    picture = _png(app_client.get("/api/kernels.png", params={"layer": "conv2d_1", "channel": 5})).astype(int)
    tile, gap = 3 * meta["cell"], 4
    assert picture.shape == (6 * tile + 5 * gap, 6 * tile + 5 * gap, 3)
    for channel in (0, 7, 31):  # the centre pixel of every weight's cell: red for positive, blue for negative
        r, c = divmod(channel, 6)
        for i in range(3):
            for j in range(3):
                y = r * (tile + gap) + i * meta["cell"] + meta["cell"] // 2
                x = c * (tile + gap) + j * meta["cell"] + meta["cell"] // 2
                red, _, blue = picture[y, x]
                w = float(weight[channel, i, j])
                assert (red > blue) == (w > 0) or abs(w) < 1e-3 * meta["max_abs"], (channel, i, j, w, picture[y, x])
    strongest = np.unravel_index(int(weight.abs().argmax()), weight.shape)
    ch, i, j = (int(v) for v in strongest)
    r, c = divmod(ch, 6)
    y, x = r * (tile + gap) + i * meta["cell"] + 6, c * (tile + gap) + j * meta["cell"] + 6
    assert tuple(picture[y, x]) in ((220, 38, 38), (37, 99, 235))  # full colour at +-max_abs
    for params, status, words in (({"layer": "dense"}, 404, "use one of: conv2d, conv2d_1"),
                                  ({"layer": "conv2d_1", "channel": 64}, 422, "channels 0..63")):
        refused = app_client.get("/api/kernels", params=params)
        assert refused.status_code == status and words in refused.json()["detail"], refused.text


def test_the_sandbox_says_where_the_padding_zeros_go(app_client):
    for size, kernel, stride, padding, pads in ((10, 3, 1, "valid", [0, 0]), (10, 3, 1, "same", [1, 1]),
                                                (28, 3, 2, "same", [0, 1]), (7, 4, 1, "same", [1, 2])):
        answer = app_client.get("/api/output-size", params={"size": size, "kernel": kernel, "stride": stride,
                                                            "padding": padding}).json()
        assert answer["pads"] == pads
        padded = size + sum(pads)  # the window's positions over the padded input give the output size
        assert (padded - kernel) // stride + 1 == answer["formula"]


def test_rows_fed_through_operations_outside_modules_name_the_row_before():
    rows = architecture(transfer_model("resnet18", 5, (64, 64, 3), pretrained=False), (64, 64, 3))
    readers = [row.name for row in rows if "input" in row.inputs]
    assert readers == [rows[0].name]  # torch.flatten feeds fc: it reads the pooling row, not the image
    fc = next(row for row in rows if row.kind == "Linear")
    assert fc.inputs == [rows[rows.index(fc) - 1].name]
    assert [r.inputs for r in architecture(build_model("seed-mnist"), (28, 28, 1))[:2]] == [["input"], ["conv2d"]]


def test_traces_stay_within_their_byte_budget(monkeypatch):
    import cnnlab.explore.explorer as explorer_module

    explorer = Explorer(build_model("seed-mnist"), ModelCard({"name": "m"}, list("0123456789"), [28, 28, 1]), "m")
    keys = [explorer.add_input(torch.full((1, 28, 28), i, dtype=torch.uint8), f"{i}.png") for i in range(4)]
    explorer.trace(keys[0])
    one = explorer._trace_bytes()  # conv2d's 32x26x26 output and the rest: ~0.2 MB
    monkeypatch.setattr(explorer_module, "TRACE_BYTES", int(2.5 * one))
    for key in keys[1:]:
        explorer.trace(key)
    assert list(explorer.traces) == keys[2:] and explorer._trace_bytes() <= 2.5 * one


def test_the_search_for_mistakes_runs_beside_the_server(served_run, tmp_path):
    app = create_explore_app(served_run)
    explorer = app.state.explorer
    assert explorer.ranking == "pending" and not explorer.ranked["mistakes"]  # loading did not scan
    with TestClient(app) as client:
        first = client.get("/api/inputs").json()
        assert first["ranking"] in ("running", "done") and len(first["inputs"]) == 40
        app.state.ranker.join(120)
        done = client.get("/api/inputs").json()
    assert done["ranking"] == "done" and len(done["mistakes"]) == 12 and len(done["least_confident"]) == 12
    model_file = next(Path(served_run).glob("model.safetensors"))
    with TestClient(create_explore_app(model_file)) as client:
        assert client.get("/api/inputs").json()["ranking"] == "none"
