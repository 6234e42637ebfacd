"""Contracts of cnnlab.interpret, cnnlab.conv_arithmetic and cnnlab.viz.maps.

Grad-CAM is checked against a known answer: a tiny CNN learns "horizontal stripes" vs "vertical
stripes" vs "nothing" on noise, with the 8x8 patch anywhere (a third class, and patches of equal
mean, so each class needs its own local evidence, not the image's mean brightness or the absence
of the other class); Grad-CAM must then light the quadrant where the patch is,
for the plain model and for a frozen TransferModel built on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.conv_arithmetic import (
    SEED_FILTER, SEED_IMAGE, conv_arithmetic_report, manual_convolution, output_size, torch_convolution,
)
from cnnlab.errors import CnnlabError
from cnnlab.interpret import feature_maps, first_layer_filters, grad_cam, last_conv_layer
from cnnlab.models.layers import Conv2D, Dense, GlobalAveragePooling2D
from cnnlab.models.sequential import Sequential
from cnnlab.models.summary import layer_modules
from cnnlab.models.transfer import TransferModel, transfer_model
from cnnlab.models.zoo import build_model
from cnnlab.viz.maps import plot_feature_maps, plot_filters, plot_grad_cam

SIZE, SQUARE = 32, 8  # 32x32 images; the class evidence is one 8x8 patch
HORIZONTAL, VERTICAL, NONE = 1, 0, 2  # class 1: horizontal stripes; class 0: vertical stripes; class 2: none
NOISE = 0.2  # background is uniform noise in [0, 0.2]; stripes alternate 1 and 0


def paint(image: torch.Tensor, label: int, top: int, left: int) -> None:
    """Put the class's 8x8 stripe patch on a (1, H, W) image; both patches have the same mean, so
    only a local detector, not the image's mean brightness, can tell them apart."""
    stripes = (torch.arange(SQUARE) % 2 == 0).float()
    patch = stripes[:, None].expand(SQUARE, SQUARE) if label == HORIZONTAL else stripes[None, :].expand(SQUARE, SQUARE)
    image[:, top:top + SQUARE, left:left + SQUARE] = patch


def square_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 32, 32) noise images, each with a horizontal, a vertical or no stripe patch anywhere."""
    images = NOISE * torch.rand(n, 1, SIZE, SIZE, generator=generator)
    labels = torch.randint(0, 3, (n,), generator=generator)
    corners = torch.randint(0, SIZE - SQUARE + 1, (n, 2), generator=generator)
    for image, label, (top, left) in zip(images, labels.tolist(), corners.tolist(), strict=True):
        if label != NONE:
            paint(image, label, top, left)
    return images, labels


def square_at(label: int, top: int, left: int) -> torch.Tensor:
    image = NOISE * torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    paint(image, label, top, left)
    return image


def fit(model: torch.nn.Module, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=0.01)
    model.train()
    for _ in range(steps):
        images, labels = square_images(64, generator)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)  # so the tests can see that grad_cam adds no .grad
    model.eval()


@pytest.fixture(scope="module")
def square_model() -> Sequential:
    torch.manual_seed(0)
    model = Sequential([Conv2D(8, 3, padding="same", activation="relu", input_shape=(SIZE, SIZE, 1)),
                        Conv2D(8, 3, padding="same", activation="relu"),
                        GlobalAveragePooling2D(), Dense(3)])
    fit(model, steps=300, seed=1)
    return model


@pytest.fixture(scope="module")
def square_transfer(square_model: Sequential) -> TransferModel:
    torch.manual_seed(0)
    model = transfer_model(square_model, num_classes=3, input_shape=(SIZE, SIZE, 1))
    model.freeze()
    fit(model, steps=150, seed=2)
    return model


def accuracy(model: torch.nn.Module) -> float:
    images, labels = square_images(256, torch.Generator().manual_seed(99))
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


QUADRANTS = {"top-left": (slice(0, 16), slice(0, 16)), "bottom-right": (slice(16, 32), slice(16, 32))}
CASES = [(HORIZONTAL, 0, 0, "top-left"), (VERTICAL, 24, 24, "bottom-right"),   # as specified
         (HORIZONTAL, 24, 24, "bottom-right"), (VERTICAL, 0, 0, "top-left")]   # swapped: heat follows the evidence


def assert_heat_in(heatmap: torch.Tensor, quadrant: str) -> None:
    rows, cols = QUADRANTS[quadrant]
    share = float(heatmap[rows, cols].sum() / heatmap.sum())
    peak_row, peak_col = divmod(int(heatmap.argmax()), SIZE)
    assert rows.start <= peak_row < rows.stop and cols.start <= peak_col < cols.stop, (peak_row, peak_col)
    assert share > 0.5, f"only {share:.0%} of the heat in the {quadrant} quadrant"


def no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


# ---------------------------------------------------------------- feature maps, filters, last conv

def test_feature_maps_shapes_on_seed_mnist() -> None:
    model = build_model("seed-mnist")
    maps = feature_maps(model, torch.rand(1, 28, 28), ["conv2d", "max_pooling2d_1"])
    assert {k: tuple(v.shape) for k, v in maps.items()} == {"conv2d": (32, 26, 26), "max_pooling2d_1": (64, 5, 5)}


def test_feature_maps_none_selects_only_image_layers() -> None:
    model = build_model("seed-mnist")
    model.train()
    maps = feature_maps(model, torch.rand(1, 28, 28))
    assert list(maps) == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1"]  # no flatten/dense
    assert model.training and no_hooks(model)


def test_feature_maps_values_are_the_layer_outputs() -> None:
    model = build_model("seed-mnist").eval()
    image = torch.rand(1, 28, 28)
    with torch.no_grad():
        expected = model.conv2d(image[None])[0]
    assert torch.allclose(feature_maps(model, image, ["conv2d"])["conv2d"], expected)


def test_feature_maps_unknown_name_suggests_close_name() -> None:
    with pytest.raises(CnnlabError, match=r"Did you mean 'conv2d_1'.*max_pooling2d"):
        feature_maps(build_model("seed-mnist"), torch.rand(1, 28, 28), ["conv2d_11"])
    with pytest.raises(CnnlabError, match="not a \\(C, H, W\\) feature map"):
        feature_maps(build_model("seed-mnist"), torch.rand(1, 28, 28), ["flatten"])


def test_feature_maps_on_torchvision_and_transfer_models() -> None:
    resnet = build_model("resnet50", (64, 64, 3))
    maps = feature_maps(resnet, torch.rand(3, 64, 64), ["layer1.0.conv1"])
    assert tuple(maps["layer1.0.conv1"].shape) == (64, 16, 16)
    transfer = transfer_model("resnet18", 3, (64, 64, 3), pretrained=False)
    names = [name for name, _ in layer_modules(transfer)]
    assert "features.1.conv1" in names
    maps = feature_maps(transfer, torch.rand(3, 64, 64), ["features.0.0", "features.1.conv1"])
    assert tuple(maps["features.0.0"].shape) == (64, 32, 32) and tuple(maps["features.1.conv1"].shape) == (64, 16, 16)
    assert set(feature_maps(transfer, torch.rand(3, 64, 64))) <= set(names)


def test_first_layer_filters_and_last_conv() -> None:
    model = build_model("seed-mnist")
    assert torch.equal(first_layer_filters(model), model.conv2d.weight)
    assert last_conv_layer(model)[0] == "conv2d_1"
    transfer = transfer_model("resnet18", 3, (64, 64, 3), pretrained=False)
    name, module = last_conv_layer(transfer)
    assert name == "features.8.conv2" and isinstance(module, torch.nn.Conv2d)
    assert torch.equal(first_layer_filters(transfer), transfer.features[0][0].weight)
    with pytest.raises(CnnlabError, match="no convolution"):
        first_layer_filters(torch.nn.Linear(3, 2))


# ---------------------------------------------------------------- Grad-CAM with a known answer

def test_square_model_learned_the_task(square_model: Sequential, square_transfer: TransferModel) -> None:
    assert accuracy(square_model) > 0.95 and accuracy(square_transfer) > 0.95


@pytest.mark.parametrize(("label", "top", "left", "quadrant"), CASES)
def test_grad_cam_lights_the_square(square_model: Sequential, label: int, top: int, left: int,
                                    quadrant: str) -> None:
    square_model.train()
    cam = grad_cam(square_model, square_at(label, top, left))
    assert cam.class_index == label and cam.probability > 0.5 and cam.layer == "conv2d_1"
    assert tuple(cam.heatmap.shape) == (SIZE, SIZE) and float(cam.heatmap.max()) == pytest.approx(1.0)
    assert float(cam.heatmap.min()) >= 0.0
    assert_heat_in(cam.heatmap, quadrant)
    assert square_model.training and no_hooks(square_model)
    assert all(p.grad is None for p in square_model.parameters())


@pytest.mark.parametrize(("label", "top", "left", "quadrant"), CASES)
def test_grad_cam_on_frozen_transfer_model(square_transfer: TransferModel, label: int, top: int, left: int,
                                           quadrant: str) -> None:
    assert not any(p.requires_grad for p in square_transfer.features.parameters())
    cam = grad_cam(square_transfer, square_at(label, top, left))
    assert cam.class_index == label and cam.layer.startswith("features.")
    assert_heat_in(cam.heatmap, quadrant)
    assert not square_transfer.training and no_hooks(square_transfer)
    assert all(p.grad is None for p in square_transfer.parameters())


def test_grad_cam_errors(square_model: Sequential) -> None:
    image = square_at(HORIZONTAL, 0, 0)
    with pytest.raises(CnnlabError, match=r"class_index must be an int in 0\.\.2"):
        grad_cam(square_model, image, class_index=3)
    with pytest.raises(CnnlabError, match="Did you mean 'conv2d_1'"):
        grad_cam(square_model, image, layer="conv2d_2")
    with pytest.raises(CnnlabError, match=r"\(C, H, W\)"):
        grad_cam(square_model, image[None])
    assert no_hooks(square_model)


def test_grad_cam_softmax_model_uses_log_probability() -> None:
    model = build_model("seed-mnist")  # ends in softmax
    image = torch.rand(1, 28, 28)
    cam = grad_cam(model, image, class_index=4)
    with torch.no_grad():
        assert cam.probability == pytest.approx(float(model.eval()(image[None])[0, 4]), rel=1e-5)
    assert cam.heatmap.shape == (28, 28)


# ---------------------------------------------------------------- convolution arithmetic (seed 003)

def test_seed_convolution_at_origin_is_one() -> None:
    assert manual_convolution(SEED_IMAGE, SEED_FILTER)[0, 0] == 1  # hand: -(1+0+1) + (0+2+1)
    report = conv_arithmetic_report()
    assert report["at_0_0"] == 1 and report["matches_torch"] and np.array(report["feature_map"]).shape == (3, 3)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("shape", [(7, 7), (8, 5)])
def test_manual_equals_torch(stride: int, padding: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(stride * 10 + len(padding))
    image, kernel = rng.normal(size=shape), rng.normal(size=(3, 3))
    manual = manual_convolution(image, kernel, stride, padding)
    assert manual.shape == (output_size(shape[0], 3, stride, padding), output_size(shape[1], 3, stride, padding))
    np.testing.assert_allclose(manual, torch_convolution(image, kernel, stride, padding), atol=1e-12)


def test_output_size_table_matches_real_layers() -> None:
    sizes = conv_arithmetic_report()["sizes"]
    assert all(row["formula"] == row["measured"] for row in sizes)
    expected = {(28, 3, 1, "valid"): 26, (28, 3, 1, "same"): 28, (28, 3, 2, "same"): 14, (10, 3, 1, "valid"): 8,
                (100, 2, 2, "valid"): 50}
    table = {(r["size"], r["window"], r["stride"], r["padding"]): r["measured"] for r in sizes}
    assert all(table[key] == value for key, value in expected.items())
    with pytest.raises(CnnlabError, match="padding"):
        output_size(28, 3, 1, "full")


# ---------------------------------------------------------------- pictures

def not_blank(path: Path) -> bool:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    return pixels.std() > 5 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10


def test_pictures_are_written_and_not_blank(tmp_path: Path, square_model: Sequential) -> None:
    model = build_model("seed-mnist")
    maps = feature_maps(model, torch.rand(1, 28, 28), ["conv2d"])["conv2d"]
    assert not_blank(plot_feature_maps(maps, tmp_path / "maps.png", title="conv2d"))
    assert not_blank(plot_filters(first_layer_filters(model), tmp_path / "gray_filters.png"))
    assert not_blank(plot_filters(torch.randn(8, 3, 3, 3), tmp_path / "rgb_filters.png"))
    image = square_at(HORIZONTAL, 0, 0)
    cam = grad_cam(square_model, image)
    assert not_blank(plot_grad_cam(image, cam.heatmap, tmp_path / "cam.png", title="horizontal stripes"))
    uint8 = (torch.rand(3, 32, 32) * 255).to(torch.uint8)
    assert not_blank(plot_grad_cam(uint8, cam.heatmap, tmp_path / "cam_rgb.png"))
    with pytest.raises(CnnlabError, match="heatmap must be"):
        plot_grad_cam(image, cam.heatmap[:10], tmp_path / "bad.png")
