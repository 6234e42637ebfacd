"""Layers against hand-computed values, Keras's shape rules and torch's own convolution."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import (
    Activation, AveragePooling2D, BatchNormalization, CnnlabError, Conv2D, Dense, Dropout, Flatten,
    GlobalAveragePooling2D, MaxPooling2D, Residual, ResidualBlock, Sequential,
)
from cnnlab.models import model_summary
from cnnlab.models.layers import conv_output_size, same_conv2d, same_padding, same_pads

# Seed 003's manual convolution: a 5x5 image and a vertical-edge filter.
IMAGE = np.array([[1, 2, 0, 1, 3], [0, 1, 2, 3, 1], [1, 0, 1, 0, 2], [2, 1, 0, 1, 0], [0, 3, 2, 1, 1]])
FILTER_V = np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])


def test_seed_003_manual_convolution_matches_conv2d():
    expected = np.array([[np.sum(IMAGE[i:i + 3, j:j + 3] * FILTER_V) for j in range(3)] for i in range(3)])
    assert expected[0, 0] == 1  # the seed's "Convolution at (0,0)", by hand: -1 + 2 + 0
    layer = Sequential([Conv2D(1, (3, 3), use_bias=False, input_shape=(5, 5, 1))])
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor(FILTER_V, dtype=torch.float32).view(1, 1, 3, 3))
        out = layer(torch.tensor(IMAGE, dtype=torch.float32).view(1, 1, 5, 5))
    assert out.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(out[0, 0].numpy(), expected)


@pytest.mark.parametrize("size", [5, 7, 8, 28, 32])
@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_output_shape_equals_formula_and_forward(size, kernel, stride, padding):
    if padding == "valid" and kernel > size:
        return
    expected = math.ceil(size / stride) if padding == "same" else (size - kernel) // stride + 1
    assert conv_output_size(size, kernel, stride, padding) == expected
    model = Sequential([Conv2D(4, kernel, strides=stride, padding=padding, input_shape=(size, size, 2))])
    out = model(torch.randn(1, 2, size, size))
    assert tuple(out.shape) == (1, 4, expected, expected)
    assert model.layer_output_shapes() == [(expected, expected, 4)]


def test_same_padding_puts_the_odd_pixel_after_like_tensorflow():
    assert same_padding(4, 3, 2) == (0, 1)
    assert same_padding(5, 3, 2) == (1, 1)
    assert same_padding(28, 3, 1) == (1, 1)
    model = Sequential([Conv2D(1, 3, strides=2, padding="same", use_bias=False, input_shape=(4, 4, 1))])
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    out = model(x)[0, 0]
    grid = x[0, 0]
    # TF pads 0 before and 1 after: window (0,0) covers rows 0-2, cols 0-2; window (1,1) rows 2-3, cols 2-3
    assert out[0, 0] == grid[0:3, 0:3].sum()
    assert out[1, 1] == grid[2:4, 2:4].sum()
    assert out[0, 1] == grid[0:3, 2:4].sum()


def test_conv2d_equals_torch_conv2d_and_applies_activation():
    model = Sequential([Conv2D(3, (3, 2), strides=(1, 2), activation="relu", input_shape=(9, 8, 2))])
    x = torch.randn(2, 2, 9, 8)
    ref = F.relu(F.conv2d(x, model[0].weight, model[0].bias, stride=(1, 2)))
    torch.testing.assert_close(model(x), ref)


def test_keras_initializers_glorot_uniform_kernels_zero_biases():
    torch.manual_seed(0)
    model = Sequential([Conv2D(64, 3, input_shape=(8, 8, 32)), Flatten(), Dense(100)])
    conv, dense = model[0], model[2]
    limit = math.sqrt(6 / (32 * 9 + 64 * 9))
    assert conv.weight.abs().max() <= limit and conv.weight.abs().max() > 0.95 * limit
    assert torch.all(conv.bias == 0) and torch.all(dense.bias == 0)
    dense_limit = math.sqrt(6 / (dense.weight.shape[1] + 100))
    assert dense.weight.abs().max() <= dense_limit


def test_pooling_valid_and_same():
    x = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)
    assert Sequential([MaxPooling2D((2, 2), input_shape=(3, 3, 1))])(x).flatten().tolist() == [4.0]
    same_max = Sequential([MaxPooling2D((2, 2), padding="same", input_shape=(3, 3, 1))])(x)
    assert same_max.flatten().tolist() == [4.0, 5.0, 7.0, 8.0]
    # Keras's 'same' average pooling divides by the real pixels in each window, not by 4
    same_avg = Sequential([AveragePooling2D((2, 2), padding="same", input_shape=(3, 3, 1))])(x)
    assert same_avg.flatten().tolist() == [2.0, 3.5, 6.5, 8.0]
    assert Sequential([MaxPooling2D((2, 2), input_shape=(26, 26, 8))]).layer_output_shapes() == [(13, 13, 8)]
    assert Sequential([MaxPooling2D((2, 2), input_shape=(11, 11, 8))]).layer_output_shapes() == [(5, 5, 8)]


def test_batchnorm_uses_keras_momentum_and_epsilon():
    model = Sequential([BatchNormalization(input_shape=(2, 2, 3))])
    x = torch.randn(4, 3, 2, 2) + 5
    model.train()
    out = model(x)
    bn = model[0]
    torch.testing.assert_close(bn.running_mean, 0.01 * x.mean(dim=(0, 2, 3)))  # momentum 0.99 keeps 99% of old (0)
    mean, var = x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(out, (x - mean) / torch.sqrt(var + 1e-3))


def test_dropout_global_pool_and_activation():
    model = Sequential([Dropout(0.5, input_shape=(4, 4, 2)), GlobalAveragePooling2D(), Activation("sigmoid")])
    x = torch.ones(3, 2, 4, 4)
    model.eval()
    torch.testing.assert_close(model(x), torch.sigmoid(torch.ones(3, 2)))
    model.train()
    assert (model[0](x) == 0).any()


def test_sequential_names_layers_like_keras_and_detects_softmax():
    model = Sequential([Conv2D(4, 3, input_shape=(8, 8, 1)), Conv2D(4, 3), MaxPooling2D(), Flatten(),
                        Dense(5, activation="softmax")])
    assert [n for n, _ in model.named_children()] == ["conv2d", "conv2d_1", "max_pooling2d", "flatten", "dense"]
    assert model.output_kind == "probabilities"
    assert Sequential([Flatten(input_shape=(2, 2, 1)), Dense(3)]).output_kind == "logits"


def test_config_round_trip_rebuilds_the_same_function():
    model = Sequential([Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 3)), BatchNormalization(),
                        ResidualBlock(4), ResidualBlock(8, strides=2), GlobalAveragePooling2D(), Dense(3)])
    clone = Sequential.from_config(model.get_config())
    clone.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model.eval()(x), clone.eval()(x))


def test_residual_adds_the_shortcut():
    block = Sequential([Residual([Activation("linear")], activation=None, input_shape=(2, 2, 1))])
    x = torch.randn(1, 1, 2, 2)
    torch.testing.assert_close(block(x), 2 * x)


@pytest.mark.parametrize("make, message", [
    (lambda: model_summary(Sequential([Conv2D(4, 3)])), "input shape"),
    (lambda: Sequential([Dense(4, input_shape=(8, 8, 1))]), "Flatten"),
    (lambda: Sequential([Flatten(input_shape=(8, 8, 1)), Conv2D(4, 3)]), "image input"),
    (lambda: Conv2D(4, 3, padding="full"), "'valid' or 'same'"),
    (lambda: Conv2D(0, 3), "positive int"),
    (lambda: Dense(4, activation="relux"), "Did you mean 'relu'"),
    (lambda: Sequential([Conv2D(4, 5, input_shape=(3, 3, 1))]), "does not fit"),
    (lambda: Sequential([Residual([Conv2D(8, 3, padding="same")], input_shape=(4, 4, 4))]), "shortcut"),
    (lambda: Dropout(1.5), "rate"),
])
def test_bad_layer_arguments_fail_with_a_clear_message(make, message):
    with pytest.raises(CnnlabError, match=message):
        make()


def test_layer_used_alone_builds_on_first_call():
    layer = Conv2D(5, 3, padding="same")
    out = layer(torch.randn(2, 3, 6, 6))
    assert out.shape == (2, 5, 6, 6) and layer.weight.shape == (5, 3, 3, 3)


@pytest.mark.parametrize("size,kernel,stride,groups", [(7, 3, 2, 1), (8, 3, 2, 1), (9, 5, 2, 4), (14, 5, 2, 4),
                                                       (6, 4, 1, 1), (7, 6, 1, 4), (5, 1, 2, 4), (28, 3, 1, 4)])
def test_same_conv2d_equals_padding_the_input_first_forward_and_backward(size, kernel, stride, groups):
    torch.manual_seed(size * kernel)
    x = torch.randn(2, 4, size, size + 1, requires_grad=True)
    w, b = torch.randn(4, 4 // groups, kernel, kernel, requires_grad=True), torch.randn(4, requires_grad=True)
    pads = same_pads((size, size + 1), (kernel, kernel), (stride, stride))
    ours = same_conv2d(x, w, b, (stride, stride), pads, groups)
    reference = F.conv2d(F.pad(x, pads), w, b, stride, 0, 1, groups)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(reference)
    expected = torch.autograd.grad((reference * g).sum(), (x, w, b))
    for got, want in zip(torch.autograd.grad((ours * g).sum(), (x, w, b)), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    wider = (0, 2, 1, 1)  # pads more than one pixel apart: the input is padded
    torch.testing.assert_close(same_conv2d(x, w, b, (stride, stride), wider, groups),
                               F.conv2d(F.pad(x, wider), w, b, stride, 0, 1, groups))


@pytest.mark.parametrize("stride,layout", [(1, torch.channels_last), (2, torch.channels_last),
                                           (2, torch.contiguous_format)])
def test_depthwise_gradients_under_bf16_autocast_are_fp32_gradients_of_the_inputs_as_given(stride, layout):
    torch.manual_seed(stride)
    x = torch.randn(2, 6, 9, 9).bfloat16().to(memory_format=layout).requires_grad_()  # a bf16 layer's output
    w, b = torch.randn(6, 1, 5, 5, requires_grad=True), torch.randn(6, requires_grad=True)  # fp32 parameters
    pads = same_pads((9, 9), (5, 5), (stride, stride))
    with torch.autocast("cpu", torch.bfloat16):
        y = same_conv2d(x, w, b, (stride, stride), pads, 6)
    assert y.dtype == torch.bfloat16 and y.grad_fn.name() == "_DepthwiseFp32GradBackward"
    g = torch.randn(y.shape).bfloat16()
    got = torch.autograd.grad(y, (x, w, b), g)
    x32, w32, b32 = (t.detach().float().requires_grad_() for t in (x, w, b))
    want = torch.autograd.grad(F.conv2d(F.pad(x32, pads), w32, b32, stride, 0, 1, 6), (x32, w32, b32), g.float())
    assert [a.dtype for a in got] == [torch.bfloat16, torch.float32, torch.float32]
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a.float(), e.to(a.dtype).float(), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", torch.bfloat16), torch.no_grad():  # inference: the plain convolution
        assert same_conv2d(x, w, b, (stride, stride), pads, 6).grad_fn is None


def test_torchvision_depthwise_convs_become_depthwiseconv_with_the_same_weights_names_and_outputs():
    import torchvision

    from cnnlab.models.layers import DepthwiseConv, with_depthwise_conv
    from cnnlab.models.zoo import build_model

    torch.manual_seed(0)
    plain = torchvision.models.mobilenet_v2(num_classes=10).eval()
    ours = build_model("mobilenet_v2", (64, 64, 3), 10).eval()
    ours.load_state_dict(plain.state_dict())  # strict: the same names and shapes
    depthwise = [m for m in ours.modules() if isinstance(m, DepthwiseConv)]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels for m in depthwise)
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), plain(x), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", torch.bfloat16):
        out = depthwise[0](torch.rand(2, depthwise[0].in_channels, 8, 8, requires_grad=True))
    assert out.grad_fn.name() == "_DepthwiseFp32GradBackward"
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding="same", groups=4), nn.Conv2d(4, 4, 3, dilation=2, groups=4))
    assert not any(isinstance(m, DepthwiseConv) for m in with_depthwise_conv(net).modules())  # left as they are
