"""Property tests (hypothesis): summaries and output-size formulas against what torch actually computes.

For random valid layer stacks on random input shapes, three independent accounts must agree:
the hand rules written here (Keras's output sizes as window counts; k*k*c_in*f + f parameters,
...), the summary cnnlab prints, and a real forward pass through each layer with torch counting
the parameters. Examples are bounded (max_examples) so the file runs in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from cnnlab import (
    AveragePooling2D, BatchNormalization, CnnlabError, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D,
    MaxPooling2D, Sequential, model_summary,
)
from cnnlab.conv_arithmetic import output_size
from cnnlab.models.layers import Layer

BOUNDED = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Stack:
    layers: list[Layer]
    input_shape: tuple[int, int, int]         # (H, W, C)
    shapes: list[tuple[int, ...]]             # each layer's output for one sample, Keras order, by hand
    params: list[int]                         # each layer's parameters + BatchNorm moving statistics, by hand


def window_count(size: int, window: int, stride: int, padding: str) -> int:
    """Keras's rule as a count: 'valid' = windows that fit inside, 'same' = window starts inside the input."""
    return len(range(0, size - window + 1, stride)) if padding == "valid" else len(range(0, size, stride))


@st.composite
def stacks(draw: st.DrawFn) -> Stack:
    """0-4 of Conv2D / MaxPooling2D / AveragePooling2D / BatchNormalization / Dropout, Flatten or GAP, 1-2 Dense."""
    h0, w0, c0 = draw(st.integers(1, 24)), draw(st.integers(1, 24)), draw(st.integers(1, 4))
    h, w, c = h0, w0, c0
    layers: list[Layer] = []
    shapes: list[tuple[int, ...]] = []
    params: list[int] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["conv", "max", "avg", "bn", "dropout"]))
        if kind == "conv":
            kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
            strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            padding = draw(st.sampled_from(["valid", "same"]))
            if kernel[0] > h or kernel[1] > w:
                padding = "same"  # 'valid' needs the kernel to fit
            filters, bias = draw(st.integers(1, 6)), draw(st.booleans())
            layers.append(Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=bias,
                                 activation=draw(st.sampled_from([None, "relu", "tanh"]))))
            params.append(kernel[0] * kernel[1] * c * filters + (filters if bias else 0))
            h, w, c = (window_count(h, kernel[0], strides[0], padding), window_count(w, kernel[1], strides[1], padding),
                       filters)
        elif kind in ("max", "avg"):
            pool = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            strides = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
            padding = draw(st.sampled_from(["valid", "same"]))
            if pool[0] > h or pool[1] > w:
                padding = "same"
            layers.append((MaxPooling2D if kind == "max" else AveragePooling2D)(pool, strides, padding))
            sh, sw = strides or pool  # Keras: strides default to the pool size
            params.append(0)
            h, w = window_count(h, pool[0], sh, padding), window_count(w, pool[1], sw, padding)
        elif kind == "bn":
            layers.append(BatchNormalization())
            params.append(4 * c)  # gamma, beta trainable; moving mean and variance non-trainable, as Keras counts
        else:
            layers.append(Dropout(draw(st.floats(0.0, 0.9))))
            params.append(0)
        shapes.append((h, w, c))
    flat = draw(st.booleans())
    layers.append(Flatten() if flat else GlobalAveragePooling2D())
    features = h * w * c if flat else c
    shapes.append((features,))
    params.append(0)
    for _ in range(draw(st.integers(1, 2))):
        units = draw(st.integers(1, 12))
        layers.append(Dense(units, activation=draw(st.sampled_from([None, "relu", "softmax"]))))
        params.append(features * units + units)
        features = units
        shapes.append((features,))
    return Stack(layers, (h0, w0, c0), shapes, params)


def _keras(shape: torch.Size) -> tuple[int, ...]:
    return (shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape[1:])  # (N, C, H, W) -> (H, W, C)


@BOUNDED
@given(stacks(), st.integers(1, 3))
def test_summary_shapes_and_counts_equal_a_forward_pass_and_the_hand_rules(stack: Stack, batch: int) -> None:
    model = Sequential(stack.layers, input_shape=stack.input_shape).eval()
    summary = model_summary(model)
    h, w, c = stack.input_shape
    x = torch.rand(batch, c, h, w)
    forward_shapes, forward_params = [], []
    with torch.no_grad():
        for layer in model:  # one layer at a time, independent of the summary's hooks
            x = layer(x)
            assert x.shape[0] == batch
            forward_shapes.append(_keras(x.shape))
            stats = sum(b.numel() for name, b in layer.named_buffers() if name.startswith("running_"))
            forward_params.append(sum(p.numel() for p in layer.parameters()) + stats)
    assert [row.output_shape for row in summary.rows] == forward_shapes == stack.shapes
    assert model.layer_output_shapes() == stack.shapes  # the shapes Sequential computed when it was built
    assert [row.params for row in summary.rows] == forward_params == stack.params
    assert summary.total == sum(stack.params) == sum(forward_params)
    n_torch = sum(p.numel() for p in model.parameters())
    assert summary.trainable == n_torch and summary.non_trainable == summary.total - n_torch


@BOUNDED
@given(size=st.integers(1, 64), kernel=st.integers(1, 9), stride=st.integers(1, 5))
def test_valid_output_size_equals_torch_conv_and_pool(size: int, kernel: int, stride: int) -> None:
    x = torch.zeros(1, 1, size, size + 3)  # non-square: the rule applies per axis
    if kernel > size:
        with pytest.raises(CnnlabError, match="does not fit"):
            output_size(size, kernel, stride, "valid")
        return
    expected = output_size(size, kernel, stride, "valid")
    assert nn.Conv2d(1, 1, kernel, stride=stride)(x).shape[2] == expected
    assert nn.MaxPool2d(kernel, stride=stride)(x).shape[2] == expected
    assert expected == window_count(size, kernel, stride, "valid")


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch pads a copy: fine here
@BOUNDED
@given(size=st.integers(1, 64), kernel=st.integers(1, 9), stride=st.integers(1, 5))
def test_same_output_size_equals_torch_and_cnnlab_layers(size: int, kernel: int, stride: int) -> None:
    expected = output_size(size, kernel, stride, "same")
    assert expected == window_count(size, kernel, stride, "same")  # ceil(size / stride)
    x = torch.zeros(1, 1, size, 5)
    if stride == 1:  # torch's own 'same' exists only for stride 1
        assert nn.Conv2d(1, 1, (kernel, 1), padding="same")(x).shape[2] == expected == size
    assert Conv2D(1, (kernel, 1), strides=(stride, 1), padding="same")(x).shape[2] == expected
    assert MaxPooling2D((kernel, 1), strides=(stride, 1), padding="same")(x).shape[2] == expected
