"""What a trained CNN looks at: feature maps, first-layer filters and Grad-CAM heatmaps.

Computation only (torch); the pictures are drawn by `cnnlab.viz.maps`. Layer names are the ones
the model summary prints (`layer_modules`), e.g. 'conv2d_1' for a seed model, 'layer1.0.conv1'
for a torchvision ResNet and 'features.1.0' for a TransferModel's backbone; any other dotted
module name (such as a whole block, 'layer4') works too.

    maps = feature_maps(model, image, ["conv2d", "conv2d_1"])    # {name: (C', H', W')}
    cam = grad_cam(model, image)                                  # cam.heatmap: (H, W) in [0, 1]

Grad-CAM (Selvaraju et al., 2017): weight each channel k of a convolutional activation A_k by the
spatial mean of d(score)/d(A_k), sum, keep the positive part, upsample to the image, normalize.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError, did_you_mean, first_line
from cnnlab.models.layers import Conv2D
from cnnlab.models.summary import layer_modules
from cnnlab.models.zoo import output_kind

__all__ = ["GradCam", "feature_maps", "first_layer_filters", "last_conv_layer", "grad_cam"]

NAMES_SHOWN = 12  # valid layer names listed in an error; a ResNet-50 has 170, model_summary prints them all


@dataclass
class GradCam:
    """A Grad-CAM result: `heatmap` (H, W) in [0, 1] at the image's size, for class `class_index`."""

    heatmap: torch.Tensor
    class_index: int
    probability: float
    layer: str


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, (Conv2D, nn.Conv2d))


def _batch_of_one(model: nn.Module, image: torch.Tensor, where: str) -> torch.Tensor:
    """(C, H, W) uint8 or float image -> (1, C, H, W) float on the model's device."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise CnnlabError(f"{where}: image must be one (C, H, W) tensor, got {got}; "
                          f"for a batch pick one, e.g. images[0]")
    x = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    device = next((p.device for p in model.parameters()), x.device)
    return x.unsqueeze(0).to(device)


def _resolve_layers(model: nn.Module, names: Sequence[str], where: str) -> dict[str, nn.Module]:
    """Map layer names to modules; an unknown name fails with close names and the valid ones."""
    modules = dict(model.named_modules())
    rows = [name for name, _ in layer_modules(model)]
    resolved = {}
    for name in names:
        if name == "" or name not in modules:
            shown = ", ".join(rows[:NAMES_SHOWN]) + (f", ... ({len(rows)} in all)" if len(rows) > NAMES_SHOWN else "")
            raise CnnlabError(f"{where}: no layer {name!r} in {type(model).__name__}.{did_you_mean(name, rows)} "
                              f"Use a name model_summary prints: {shown}")
        resolved[name] = modules[name]
    return resolved


def _forward(model: nn.Module, x: torch.Tensor, where: str) -> torch.Tensor:
    try:
        return model(x)
    except RuntimeError as exc:
        raise CnnlabError(f"{where}: {type(model).__name__} cannot take an image of shape {tuple(x.shape[1:])} "
                          f"(C, H, W): {first_line(exc)}; resize the image to the model's input") from None


def feature_maps(model: nn.Module, image: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The activations (C', H', W') of the named layers for one (C, H, W) image in [0, 1].

    `layers=None` gives every summary row whose output is an image (4-D), in model order. A
    module run more than once per forward (torchvision's shared ReLU) reports its last output.
    The model runs in eval mode without gradients; its mode is restored afterwards.

    >>> from cnnlab.models.zoo import build_model
    >>> maps = feature_maps(build_model("seed-mnist"), torch.rand(1, 28, 28), ["conv2d", "max_pooling2d_1"])
    >>> {name: tuple(m.shape) for name, m in maps.items()}
    {'conv2d': (32, 26, 26), 'max_pooling2d_1': (64, 5, 5)}
    """
    x = _batch_of_one(model, image, "feature_maps")
    if isinstance(layers, str):
        raise CnnlabError(f"feature_maps: layers must be a list of names, got the string {layers!r}; "
                          f"write layers=[{layers!r}]")
    chosen = dict(layer_modules(model)) if layers is None else _resolve_layers(model, layers, "feature_maps")
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in chosen.items():
        def hook(mod: nn.Module, args: Any, out: Any, _name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                outputs[_name] = out.detach()
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        with torch.no_grad():
            _forward(model.eval(), x, "feature_maps")
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if layers is None:
        return {name: outputs[name][0] for name in chosen if name in outputs and outputs[name].ndim == 4}
    for name in layers:
        if name not in outputs or outputs[name].ndim != 4:
            got = "was not run" if name not in outputs else f"gives shape {tuple(outputs[name].shape[1:])}"
            raise CnnlabError(f"feature_maps: layer {name!r} {got}, not a (C, H, W) feature map; "
                              f"pick a convolution or pooling layer, or pass layers=None for all of them")
    return {name: outputs[name][0] for name in layers}


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The weights (F, C, kh, kw) of the model's first convolution (cnnlab Conv2D or nn.Conv2d).

    >>> from cnnlab.models.zoo import build_model
    >>> tuple(first_layer_filters(build_model("seed-mnist")).shape)
    (32, 1, 3, 3)
    """
    for module in model.modules():
        if _is_conv(module):
            weight: torch.Tensor = module.weight  # type: ignore[assignment]
            return weight.detach()
    raise CnnlabError(f"first_layer_filters: {type(model).__name__} has no convolution (Conv2D or nn.Conv2d); "
                      f"filters exist only in convolutional models")


def last_conv_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """(dotted name, module) of the last convolution in module order, however deeply nested.

    >>> from cnnlab.models.zoo import build_model
    >>> last_conv_layer(build_model("seed-mnist"))[0]
    'conv2d_1'
    """
    found = [(name, module) for name, module in model.named_modules() if _is_conv(module)]
    if not found:
        raise CnnlabError(f"last_conv_layer: {type(model).__name__} has no convolution (Conv2D or nn.Conv2d); "
                          f"Grad-CAM needs a convolutional model, or pass layer= naming a 4-D layer")
    return found[-1]


def _class_score(model: nn.Module, output: torch.Tensor, class_index: int | None) -> tuple[torch.Tensor, int, float]:
    """(score to differentiate, class index, probability) from the model's (1, classes) output."""
    if output.ndim != 2:
        raise CnnlabError(f"grad_cam: the model must output (N, classes) scores, got shape {tuple(output.shape)}")
    classes = output.shape[1]
    if class_index is None:
        class_index = int(output[0].argmax())
    if isinstance(class_index, bool) or not isinstance(class_index, int) or not 0 <= class_index < classes:
        raise CnnlabError(f"grad_cam: class_index must be an int in 0..{classes - 1} (the model has {classes} "
                          f"classes), got {class_index!r}; or pass None for the predicted class")
    if output_kind(model) == "probabilities":
        # The model ends in softmax: log p is the logit minus a shared log-sum-exp. It is monotone in p
        # and, unlike p itself, does not saturate (a confident p ~ 1 has gradients ~ 0).
        probability = output[0, class_index]
        score = torch.log(probability.clamp_min(1e-12))
    else:
        probability = F.softmax(output[0], dim=0)[class_index]
        score = output[0, class_index]
    return score, class_index, float(probability.detach())


def grad_cam(model: nn.Module, image: torch.Tensor, class_index: int | None = None,
             layer: str | None = None) -> GradCam:
    """Grad-CAM heatmap of one (C, H, W) image for `class_index` (default: the predicted class).

    `layer` defaults to the last convolution (`last_conv_layer`). The score is the class logit; for
    models that end in softmax (`output_kind(model) == "probabilities"`) it is log p, the logit up to a
    constant shared by all classes. Frozen models work: the hooked activation is made to require
    grad. The model's train/eval mode is restored and no hooks are left behind.

    >>> from cnnlab.models.zoo import build_model
    >>> cam = grad_cam(build_model("seed-mnist"), torch.rand(1, 28, 28), class_index=3)
    >>> tuple(cam.heatmap.shape), cam.class_index, cam.layer, 0.0 <= float(cam.heatmap.min()) <= 1.0
    ((28, 28), 3, 'conv2d_1', True)
    """
    x = _batch_of_one(model, image, "grad_cam")
    name = last_conv_layer(model)[0] if layer is None else layer
    module = _resolve_layers(model, [name], "grad_cam")[name]
    captured: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> Any:
        if not isinstance(out, torch.Tensor):
            return None
        if not out.requires_grad:  # frozen layers below: start the graph here
            out = out.detach().requires_grad_(True)
        captured[:] = [out]
        return out

    handle = module.register_forward_hook(hook)
    was_training = model.training
    try:
        with torch.enable_grad():
            output = _forward(model.eval(), x, "grad_cam")
            if not captured or captured[0].ndim != 4:
                raise CnnlabError(f"grad_cam: layer {name!r} gives no (C, H, W) feature map; "
                                  f"pick a convolutional layer, or leave layer=None for the last convolution")
            score, class_index, probability = _class_score(model, output, class_index)
            (grads,) = torch.autograd.grad(score, captured[0])
    finally:
        handle.remove()
        model.train(was_training)
    activation = captured[0].detach()[0]                  # (K, h, w)
    weights = grads[0].mean(dim=(1, 2))                   # (K,): how much each channel raises the score
    cam = F.relu((weights[:, None, None] * activation).sum(0))  # (h, w)
    cam = F.interpolate(cam[None, None], size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    heatmap = cam / peak if peak > 0 else torch.zeros_like(cam)
    return GradCam(heatmap.cpu(), class_index, probability, name)
