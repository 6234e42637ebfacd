"""Contracts every registered model keeps: forward shape, gradients, exact save/load round trip."""

import pytest
import torch

from cnnlab import CnnlabError, build_model, load_model, model_names, save_model
from cnnlab.models.layers import Activation, Conv2D, Dense, Flatten, MaxPooling2D
from cnnlab.models.sequential import Sequential
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


def _one_by_one(model, x):
    for layer in model:
        x = layer(x)
    return x


def _grads(model, out):
    model.zero_grad(set_to_none=True)
    out.float().square().sum().backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", [n for n in model_names() if isinstance(build_model(n), Sequential)])
def test_pooling_before_the_relu_gives_the_same_outputs_and_gradients(name, dtype):
    """Sequential.forward applies a ReLU after the max-pool that follows it; values and gradients stay bitwise
    those of running the layers one by one, in training (dropout drawn alike) and in bf16 autocast."""
    torch.manual_seed(0)
    model = build_model(name, _shape(name), NUM_CLASSES).train()
    h, w, c = model.image_shape
    x = torch.randn(4, c, h, w)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        torch.manual_seed(1)
        fused = model(x)
        fused_grads = _grads(model, fused)
        torch.manual_seed(1)
        plain = _one_by_one(model, x)
        plain_grads = _grads(model, plain)
    torch.testing.assert_close(fused, plain, rtol=0, atol=0)
    assert len(fused_grads) == len(plain_grads) == sum(1 for _ in model.parameters())
    for a, b in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _pool_inputs(out):
    """The autograd nodes that feed each max-pool (through its padding) on the way back from `out`."""
    found, seen, stack = [], set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nexts = [n for n, _ in node.next_functions if n is not None]
        if "MaxPool" in type(node).__name__:
            while "ConstantPad" in type(nexts[0]).__name__:  # 'same' pooling pads with -inf first
                nexts = [n for n, _ in nexts[0].next_functions if n is not None]
            found += [type(n).__name__ for n in nexts]
        stack += nexts
    return sorted(found)


@pytest.mark.parametrize("relu", ["Conv2D(activation='relu')", "Activation('relu')"])
def test_the_relu_runs_after_the_pool_and_hooks_still_see_each_layer(relu):
    """Seed 004's pattern, a ReLU then MaxPooling2D ('same' here), with ties and windows whose largest value is 0."""
    torch.manual_seed(0)
    convolve = [Conv2D(4, 3, activation="relu", padding="same", input_shape=(8, 8, 1))] if "Conv2D" in relu else \
        [Conv2D(4, 3, padding="same", input_shape=(8, 8, 1)), Activation("relu")]
    model = Sequential([*convolve, MaxPooling2D((3, 3), strides=2, padding="same"), Flatten(), Dense(3)])
    with torch.no_grad():
        model[0].weight.copy_(torch.randint(-1, 2, model[0].weight.shape).float())
    x = torch.randint(-2, 3, (2, 1, 8, 8)).float()  # many ties, many windows at or below 0
    x[:, :, :4, :4] = 0  # windows whose largest value is exactly 0: no gradient passes a ReLU there
    x.requires_grad_()
    out = model(x)
    assert _pool_inputs(out) == ["ConvolutionBackward0"]  # the pool takes the convolution, the ReLU comes after
    (gx,) = torch.autograd.grad(out.sum(), x)
    plain = _one_by_one(model, x)
    assert _pool_inputs(plain) == ["ReluBackward0"]
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    torch.testing.assert_close(gx, torch.autograd.grad(plain.sum(), x)[0], rtol=0, atol=0)

    seen = []
    handle = model[len(convolve) - 1].register_forward_hook(lambda m, i, o: seen.append(o))
    hooked = model(x)
    handle.remove()
    assert (seen[0] >= 0).all() and (seen[0] == 0).any()  # the hook saw the layer's ReLU output, as Keras gives
    assert _pool_inputs(hooked) == ["ReluBackward0"]
    torch.testing.assert_close(hooked, out, rtol=0, atol=0)
