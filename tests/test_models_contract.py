"""Contracts every registered model keeps: forward shape, gradients, exact save/load round trip."""

import pytest
import torch

from cnnlab import CnnlabError, build_model, load_model, model_names, save_model
from cnnlab.models.zoo import MODELS, output_kind

# The smallest convenient input each architecture accepts; defaults are 224x224 for torchvision's.
TEST_SHAPES = {"alexnet": (64, 64, 3), "vgg16": (32, 32, 3), "resnet50": (32, 32, 3), "mobilenet_v2": (32, 32, 3),
               "efficientnet_lite0": (32, 32, 3)}
NUM_CLASSES = 7


def _shape(name):
    return TEST_SHAPES.get(name, MODELS.get(name).default_input_shape)


@pytest.mark.parametrize("name", model_names())
def test_forward_backward_and_round_trip(name, tmp_path):
    torch.manual_seed(0)
    h, w, c = _shape(name)
    model = build_model(name, (h, w, c), NUM_CLASSES)
    assert tuple(model.image_shape) == (h, w, c)  # the one model surface: summaries and tools need no shape
    x = torch.rand(2, c, h, w)
    model.train()
    out = model(x)
    assert out.shape == (2, NUM_CLASSES)
    out.sum().backward() if output_kind(model) == "logits" else torch.log(out[:, 0]).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:3]}"

    names = [f"class {i}" for i in range(NUM_CLASSES)]
    path = save_model(model, tmp_path / "m.safetensors", names, (h, w, c), {"accuracy": 0.5})
    loaded, card = load_model(path)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert card.class_names == names and card.input_shape == [h, w, c]
    assert card.outputs == output_kind(model) and card.metrics == {"accuracy": 0.5}


@pytest.mark.parametrize("name", [n for n in model_names() if MODELS.get(n).default_input_shape[2] == 1])
def test_softmax_models_output_a_distribution_and_others_logits(name):
    model = build_model(name).eval()
    h, w, c = model.image_shape
    out = model(torch.rand(3, c, h, w))
    if output_kind(model) == "probabilities":
        torch.testing.assert_close(out.sum(1), torch.ones(3))
    else:
        assert (out < 0).any() and not torch.allclose(out.sum(1), torch.ones(3))


def test_torchvision_models_take_grayscale_input():
    model = build_model("mobilenet_v2", (32, 32, 1), 10)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 10)


def test_too_small_input_for_a_famous_model_is_a_clear_error():
    with pytest.raises(CnnlabError, match="alexnet.*cannot take 28x28x1.*--image-size"):
        build_model("alexnet", (28, 28, 1))


def test_unknown_model_suggests_close_names():
    with pytest.raises(CnnlabError, match="unknown model 'mobilenetv2'.*mobilenet_v2"):
        build_model("mobilenetv2")
    with pytest.raises(CnnlabError, match="num_classes"):
        build_model("seed-mnist", num_classes=1)
