"""Seed 003's convolution worked by hand, checked against torch and against real layer shapes.

The seed slides a 3x3 vertical-edge filter over a 5x5 image and prints "Convolution at (0,0): 1".
`manual_convolution` does exactly that with explicit loops (cross-correlation, as Keras and torch
compute it: the kernel is not flipped); `torch_convolution` gets the same numbers from
`torch.nn.functional.conv2d`. 'same' padding follows TensorFlow: when the padding is odd, the
extra zero goes after (bottom/right), see `cnnlab.models.layers.same_padding`.

    >>> int(manual_convolution(SEED_IMAGE, SEED_FILTER)[0, 0])
    1
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.models.layers import Conv2D, MaxPooling2D, conv_output_size, same_padding

__all__ = ["SEED_IMAGE", "SEED_FILTER", "manual_convolution", "torch_convolution", "output_size", "size_case",
           "conv_arithmetic_report"]

SEED_IMAGE = np.array([  # seed 003's 5x5 grayscale image
    [1, 2, 0, 1, 3],
    [0, 1, 2, 3, 1],
    [1, 0, 1, 0, 2],
    [2, 1, 0, 1, 0],
    [0, 3, 2, 1, 1],
])
SEED_FILTER = np.array([  # seed 003's vertical-edge filter: right column minus left column
    [-1, 0, 1],
    [-1, 0, 1],
    [-1, 0, 1],
])

# (layer, input size, window, stride, padding): the seeds' examples plus a ResNet stem
SIZE_CASES: tuple[tuple[str, int, int, int, str], ...] = (
    ("conv", 5, 3, 1, "valid"),     # seed 003's 5x5 example -> 3
    ("conv", 28, 3, 1, "valid"),    # Conv2D(32, (3, 3)) on MNIST -> 26
    ("conv", 28, 3, 1, "same"),     # 'same' keeps 28
    ("conv", 28, 3, 2, "same"),     # stride 2 halves: 14
    ("conv", 10, 3, 1, "valid"),    # -> 8
    ("conv", 224, 7, 2, "same"),    # ResNet stem -> 112
    ("pool", 26, 2, 2, "valid"),    # MaxPooling2D((2, 2)): 26 -> 13
    ("pool", 100, 2, 2, "valid"),   # -> 50
    ("pool", 7, 2, 2, "same"),      # odd size, 'same' rounds up: 4
)


def _check(image: np.ndarray, kernel: np.ndarray, stride: int, padding: str) -> tuple[np.ndarray, np.ndarray]:
    image, kernel = np.asarray(image), np.asarray(kernel)
    if image.ndim != 2 or kernel.ndim != 2:
        raise CnnlabError(f"convolution: image and kernel must be 2-D arrays, got shapes {image.shape} and "
                          f"{kernel.shape}; pass one grayscale channel")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise CnnlabError(f"convolution: stride must be a positive int, got {stride!r}; e.g. stride=1")
    if padding not in ("valid", "same"):
        raise CnnlabError(f"convolution: padding must be 'valid' or 'same', got {padding!r}")
    if padding == "valid" and (kernel.shape[0] > image.shape[0] or kernel.shape[1] > image.shape[1]):
        raise CnnlabError(f"convolution: a {kernel.shape} kernel does not fit a {image.shape} image with "
                          f"padding 'valid'; use padding='same' or a smaller kernel")
    return image, kernel


def _pad_same(image: np.ndarray, kernel_shape: tuple[int, ...], stride: int) -> np.ndarray:
    top, bottom = same_padding(image.shape[0], kernel_shape[0], stride)
    left, right = same_padding(image.shape[1], kernel_shape[1], stride)
    return np.pad(image, ((top, bottom), (left, right)))


def manual_convolution(image: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: str = "valid") -> np.ndarray:
    """Slide `kernel` over a 2-D `image` with loops: each output is sum(patch * kernel), as seed 003 does.

    >>> manual_convolution(SEED_IMAGE, SEED_FILTER).tolist()
    [[1, 1, 3], [0, 2, 0], [0, -2, 0]]
    >>> manual_convolution(SEED_IMAGE, SEED_FILTER, stride=2, padding="same").shape
    (3, 3)
    """
    image, kernel = _check(image, kernel, stride, padding)
    kh, kw = kernel.shape
    out_h = int(conv_output_size(image.shape[0], kh, stride, padding))  # type: ignore[arg-type]
    out_w = int(conv_output_size(image.shape[1], kw, stride, padding))  # type: ignore[arg-type]
    if padding == "same":
        image = _pad_same(image, kernel.shape, stride)
    out = np.zeros((out_h, out_w), dtype=np.result_type(image, kernel))
    for i in range(out_h):
        for j in range(out_w):
            patch = image[i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[i, j] = np.sum(patch * kernel)
    return out


def torch_convolution(image: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: str = "valid") -> np.ndarray:
    """The same convolution by `torch.nn.functional.conv2d` (float64), for checking the loops.

    >>> float(torch_convolution(SEED_IMAGE, SEED_FILTER)[0, 0])
    1.0
    """
    image, kernel = _check(image, kernel, stride, padding)
    if padding == "same":
        image = _pad_same(image, kernel.shape, stride)
    x = torch.as_tensor(image, dtype=torch.float64)[None, None]   # (1, 1, H, W)
    w = torch.as_tensor(kernel, dtype=torch.float64)[None, None]  # (1, 1, kh, kw)
    return F.conv2d(x, w, stride=stride)[0, 0].numpy()


def output_size(size: int, kernel: int, stride: int = 1, padding: str = "valid") -> int:
    """Output length along one axis: 'valid' floor((size - kernel) / stride) + 1, 'same' ceil(size / stride).

    >>> output_size(28, 3), output_size(28, 3, padding="same"), output_size(28, 3, 2, "same")
    (26, 28, 14)
    """
    for what, value in (("size", size), ("kernel", kernel), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CnnlabError(f"output_size: {what} must be a positive int, got {value!r}")
    if padding not in ("valid", "same"):
        raise CnnlabError(f"output_size: padding must be 'valid' or 'same', got {padding!r}")
    if padding == "valid" and kernel > size:
        raise CnnlabError(f"output_size: a kernel of {kernel} does not fit size {size} with padding 'valid'; "
                          f"use padding='same' or a smaller kernel")
    return int(conv_output_size(size, kernel, stride, padding))  # type: ignore[arg-type]


def _measured_size(layer: str, size: int, window: int, stride: int, padding: str) -> int:
    """Run a real cnnlab layer on a zero image and read the output height. On the meta device, where
    tensors have shapes but no memory, so a user's --size 100000 costs nothing; the shape rules are torch's own."""
    with torch.device("meta"), torch.no_grad():
        if layer == "conv":
            module: torch.nn.Module = Conv2D(1, window, strides=stride, padding=padding)
        else:
            module = MaxPooling2D(window, strides=stride, padding=padding)
        return int(module(torch.zeros(1, 1, size, size)).shape[2])


def size_case(layer: str, size: int, window: int, stride: int = 1, padding: str = "valid") -> dict[str, Any]:
    """One layer's output size on a size x size input: by the formula (written out) and measured on a real
    cnnlab Conv2D or MaxPooling2D, e.g. seed 001's "10x10 input with a 3x3 kernel".

    >>> case = size_case("conv", 10, 3)
    >>> case["formula"], case["measured"], case["worked"]
    (8, 8, 'floor((10 - 3) / 1) + 1 = 8')
    >>> size_case("pool", 7, 2, 2, "same")["worked"]
    'ceil(7 / 2) = 4, after 1 zero(s) of padding: 0 before, 1 after'
    """
    if layer not in ("conv", "pool"):
        raise CnnlabError(f"size_case: layer must be 'conv' or 'pool', got {layer!r}")
    formula = output_size(size, window, stride, padding)
    before, after = 0, 0
    if padding == "valid":
        worked = f"floor(({size} - {window}) / {stride}) + 1 = {formula}"
    else:
        before, after = same_padding(size, window, stride)
        worked = (f"ceil({size} / {stride}) = {formula}, after {before + after} zero(s) of padding: "
                  f"{before} before, {after} after")
    measured = _measured_size(layer, size, window, stride, padding)
    return {"layer": layer, "size": size, "window": window, "stride": stride, "padding": padding,
            "formula": formula, "measured": measured, "matches": formula == measured, "worked": worked,
            "pads": [before, after]}


def conv_arithmetic_report() -> dict[str, Any]:
    """Seed 003's example, the loops checked against torch, and output sizes checked against real layers.

    >>> report = conv_arithmetic_report()
    >>> report["at_0_0"], report["matches_torch"], all(row["matches"] for row in report["sizes"])
    (1, True, True)
    """
    manual = manual_convolution(SEED_IMAGE, SEED_FILTER)
    sizes = [size_case(layer, size, window, stride, padding) for layer, size, window, stride, padding in SIZE_CASES]
    return {
        "image": SEED_IMAGE.tolist(),
        "filter": SEED_FILTER.tolist(),
        "at_0_0": int(manual[0, 0]),
        "feature_map": manual.tolist(),
        "matches_torch": bool(np.allclose(manual, torch_convolution(SEED_IMAGE, SEED_FILTER))),
        "sizes": sizes,
    }
