"""`SpeedrunNet`: the CIFAR-10 speed-run network (airbench94 lineage), for any small image dataset.

Keller Jordan's airbench trains this network to 94% on CIFAR-10 in seconds (airbench94_muon.py:
94.01% mean in 2.59 s on an A100, its README); it descends from tysam-code's hlb-CIFAR10. What
makes it fast to train:
- a frozen first layer that whitens 2x2 patches (filters from the training data, `init_whitening`),
  so the first trained layer sees decorrelated, unit-variance inputs;
- three blocks conv3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv3x3 -> BatchNorm -> GELU whose
  convs start as identities (dirac), so the untrained net passes its input through;
- BatchNorm scales frozen at 1 (only the shift is trained) and fast-moving BatchNorm statistics;
- global max pool, a bias-free linear head and logits scaled down by a fixed 1/9.

The net takes float images in [0, 1] like every cnnlab model; it normalizes them itself with the
training set's per-channel mean and std, which `init_whitening` stores as buffers, so a saved model
predicts with nothing else. Any height and width >= 9 work (three 2x poolings after the 2x2
whitening conv leave at least one pixel); the global max pool makes the head size-independent.

>>> net = SpeedrunNet((28, 28, 1), 10, widths=(16, 32, 32))
>>> net(torch.rand(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.zoo import _add

__all__ = ["SpeedrunNet", "IdentityConv", "ConvBlock", "init_whitening", "whitening_filters",
           "DEFAULT_WIDTHS", "MIN_IMAGE_SIZE"]

DEFAULT_WIDTHS = (64, 256, 256)  # airbench94's block widths (channels)
WHITEN_KERNEL = 2          # pixels: airbench whitens 2x2 patches (a 3x3 whitening conv measured no better there)
WHITEN_EPS = 5e-4          # added to eigenvalues before 1/sqrt: airbench94's; caps the gain of near-constant directions
# PyTorch's momentum is the weight of the newest batch: 0.4 is airbench94's 0.6 in Keras' convention. Runs of
# a few hundred steps need statistics that forget the (identity-init) start within ~10 steps.
BN_MOMENTUM = 0.4
BN_EPS = 1e-12             # airbench94's: BatchNorm's variance floor stays out of the way of small activations
LOGIT_SCALE = 1 / 9        # airbench94's fixed output scale: small logits at init, a well-conditioned loss
MIN_STD = 1 / 255          # floor for a channel's std (one grey level): a constant channel must not divide by zero
MIN_IMAGE_SIZE = 9         # 2x2 whitening (-1 pixel), three 2x max-pools, >= 1 pixel left: 9 -> 8 -> 4 -> 2 -> 1
WHITEN_CHUNK = 256         # images per chunk when accumulating patch statistics (bounds memory: 31x31 patches each)


class IdentityConv(nn.Conv2d):
    """A 3x3 'same' convolution without bias whose first min(in, out) filters start as identities.

    The remaining filters keep PyTorch's default (Kaiming-uniform) initialization.

    >>> conv = IdentityConv(4, 8)
    >>> x = torch.rand(1, 4, 5, 5)
    >>> torch.equal(conv(x)[:, :4], x)
    True
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            nn.init.dirac_(self.weight[:min(self.in_channels, self.out_channels)])


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    norm.weight.requires_grad_(False)  # scale fixed at 1: the next conv's weights carry the scale
    return norm


class ConvBlock(nn.Module):
    """conv3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv3x3 -> BatchNorm -> GELU; halves H and W."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = IdentityConv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _batch_norm(out_channels)
        self.act1 = nn.GELU()
        self.conv2 = IdentityConv(out_channels, out_channels)
        self.norm2 = _batch_norm(out_channels)
        self.act2 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


class SpeedrunNet(nn.Module):
    """airbench94's network for `input_shape` (H, W, C) and `num_classes`, with block `widths`.

    `output_kind = "logits"` tells cnnlab's loss, evaluation and model files that the head has no softmax.

    >>> net = SpeedrunNet((32, 32, 3), 10)
    >>> net.whiten.out_channels, net.widths, net.output_kind
    (24, (64, 256, 256), 'logits')
    """

    output_kind = "logits"
    mean: torch.Tensor  # (1, C, 1, 1) buffers: the training set's per-channel mean and std of [0, 1] pixels
    std: torch.Tensor

    def __init__(self, input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10,
                 widths: Sequence[int] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        height, width, channels = _check_shape(input_shape)
        self.widths = _check_widths(widths)
        self.build_options = {"widths": list(self.widths)}  # saved in model files, so load_model rebuilds it
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise CnnlabError(f"SpeedrunNet: num_classes must be an int >= 2, got {num_classes!r}")
        self.image_shape = (height, width, channels)
        self.num_classes = num_classes
        # Set by init_whitening from the training data; until then the net sees images as they are.
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))
        patch = channels * WHITEN_KERNEL * WHITEN_KERNEL
        self.whiten = nn.Conv2d(channels, 2 * patch, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        with torch.no_grad():  # until init_whitening: the whitening of uncorrelated unit-variance pixels, +/-
            basis = torch.eye(patch).reshape(patch, channels, WHITEN_KERNEL, WHITEN_KERNEL)
            self.whiten.weight.copy_(torch.cat([basis, -basis]))
        self.whiten_act = nn.GELU()
        w1, w2, w3 = self.widths
        self.blocks = nn.Sequential(ConvBlock(2 * patch, w1), ConvBlock(w1, w2), ConvBlock(w2, w3))
        self.pool = nn.AdaptiveMaxPool2d(1)  # global max over what is left of the map (1x1 to 3x3 for 16..32 px)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(w3, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std                  # (N, C, H, W), training-set standardized
        x = self.whiten_act(self.whiten(x))             # (N, 8C, H-1, W-1)
        x = self.blocks(x)                              # (N, w3, (H-1)/8, (W-1)/8)
        return self.head(self.flatten(self.pool(x))) * LOGIT_SCALE   # (N, classes)


def whitening_filters(patches: torch.Tensor, eps: float = WHITEN_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(filters (P, P), eigenvalues (P,)) of patch covariance `patches` (P, P); rows: eigenvectors / sqrt(eig + eps).

    A filter row r applied to a patch p gives r . p; over the data those outputs have covariance
    diag(eig / (eig + eps)): the identity where eig >> eps.

    >>> filters, eig = whitening_filters(torch.diag(torch.tensor([4.0, 1.0])), eps=0.0)
    >>> filters.abs().tolist(), eig.tolist()
    ([[0.5, 0.0], [0.0, 1.0]], [4.0, 1.0])
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.to(torch.float64))  # ascending eigenvalues
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)      # largest variance first
    filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]
    return filters, eigenvalues


@torch.no_grad()
def init_whitening(model: SpeedrunNet, images: torch.Tensor) -> SpeedrunNet:
    """Set `model`'s input normalization and whitening filters from a sample of training `images`.

    `images` are (N, C, H, W), uint8 0..255 or float 0..1, on any device. The per-channel mean and
    std become the model's normalization; the covariance of all 2x2 patches of the normalized
    images gives the frozen whitening filters (+ and -); the whitening bias is reset to 0.

    >>> net = SpeedrunNet((16, 16, 1), 10, widths=(8, 8, 8))
    >>> _ = init_whitening(net, torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8))
    >>> tuple(net.whiten.weight.shape), round(float(net.mean.flatten()[0]), 1) > 0.3
    ((8, 1, 2, 2), True)
    """
    if not isinstance(model, SpeedrunNet):
        raise CnnlabError(f"init_whitening: model must be a SpeedrunNet, got {type(model).__name__}; "
                          f"build it with build_model('speedrun', ...) or SpeedrunNet(...)")
    channels = model.image_shape[2]
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != channels or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise CnnlabError(f"init_whitening: images must be a non-empty (N, {channels}, H, W) tensor for this "
                          f"{channels}-channel model, got {shape}; pass training images such as train.images[:5000]")
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    x = images.to(torch.float32) / scale
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(MIN_STD)
    size = channels * WHITEN_KERNEL * WHITEN_KERNEL
    total = torch.zeros(size, dtype=torch.float64)
    outer = torch.zeros(size, size, dtype=torch.float64)
    count = 0
    for start in range(0, len(x), WHITEN_CHUNK):
        chunk = (x[start:start + WHITEN_CHUNK] - mean) / std
        # (n, C, H-1, W-1, 2, 2) -> (n*(H-1)*(W-1), C*2*2): every 2x2 patch, flattened as conv weights are (C, kh, kw)
        patches = chunk.unfold(2, WHITEN_KERNEL, 1).unfold(3, WHITEN_KERNEL, 1)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, size)
        # float64: fp32 sums over ~10^6 patches err by ~1e-3 relative on the smallest eigenvalue (measured)
        patches = patches.cpu().double() if patches.device.type == "mps" else patches.double()  # MPS has no float64
        total += patches.sum(0).cpu()
        outer += (patches.T @ patches).cpu()
        count += len(patches)
    centre = total / count
    covariance = outer / count - torch.outer(centre, centre)
    filters, _ = whitening_filters(covariance)
    weight = filters.reshape(size, channels, WHITEN_KERNEL, WHITEN_KERNEL).to(model.whiten.weight.dtype)
    device = model.whiten.weight.device
    model.whiten.weight.copy_(torch.cat([weight, -weight]).to(device))
    if model.whiten.bias is not None:
        model.whiten.bias.zero_()
    model.mean.copy_(mean.to(device))
    model.std.copy_(std.to(device))
    return model


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise CnnlabError(f"SpeedrunNet: input_shape must be (height, width, channels), e.g. (32, 32, 3); "
                          f"got {shape!r}")
    height, width, channels = shape
    if min(height, width) < MIN_IMAGE_SIZE:
        raise CnnlabError(f"SpeedrunNet: images of {height}x{width} are too small; the net needs at least "
                          f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} (three 2x poolings); resize them (image_size=(32, 32))")
    return height, width, channels


def _check_widths(widths: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(widths)
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise CnnlabError(f"SpeedrunNet: widths must be three positive channel counts, one per block, "
                          f"e.g. (64, 256, 256); got {values!r}")
    return values[0], values[1], values[2]


@_add("speedrun")  # its shape, source and description: cnnlab.catalog
def speedrun(input_shape: tuple[int, int, int], num_classes: int,
             widths: Sequence[int] = DEFAULT_WIDTHS) -> nn.Module:
    return SpeedrunNet(input_shape, num_classes, widths)
