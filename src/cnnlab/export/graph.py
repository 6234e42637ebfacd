"""A cnnlab model as an ONNX graph: uint8 pixels in, the model's output and probabilities out.

The graph takes what an image decoder gives, uint8 (N, C, H, W) pixels, and applies cnnlab's
preprocessing itself (`x / 255` in float32, exactly `cnnlab.data.float_images`), so a browser, a
server or a phone feeds raw pixels and needs nothing but the file. It has two outputs: `output`,
the model's own (logits, or probabilities for a Keras-style softmax model, as `outputs` in the
metadata says), and `probabilities` (softmax of the logits; the same values for a softmax model).
The batch axis is dynamic. Everything else a consumer needs (class names, input size, channels,
preprocessing, metrics) is the JSON under the `cnnlab` key of the file's metadata_props.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError, first_line
from cnnlab.export.interface import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, PROBABILITIES_NAME
from cnnlab.models.files import ModelCard
from cnnlab.training.objectives import probabilities
from cnnlab.versions import versions

__all__ = ["PixelModel", "to_onnx", "export_metadata", "EXPORTERS", "INPUT_NAME", "OUTPUT_NAME",
           "PROBABILITIES_NAME", "METADATA_KEY", "OPSET", "import_onnx"]

# Opset 18: the lowest the torch.export-based exporter writes, so both exporters give the same
# operator set; onnxruntime has run it since 1.14 (2023), onnxruntime-web included.
OPSET = 18
# "auto" tries torch's TorchScript exporter first: on this project's 2-core CPU it exported
# seed-mnist in 0.2 s against 2.1 s for the torch.export one, and MobileNetV2 in 4.8 s against
# 16.7 s (measured 2026-11-23). It cannot convert an adaptive pooling whose output size does not
# divide its input (VGG16 or AlexNet at 32x32), where "auto" falls back to torch.export (dynamo).
EXPORTERS = ("auto", "torchscript", "dynamo")
EXAMPLE_BATCH = 2  # not 1: torch.export would specialize a batch of 1 to a constant


class PixelModel(nn.Module):
    """uint8 (N, C, H, W) pixels -> (the model's output, probabilities), preprocessing included.

    >>> from cnnlab.models import build_model
    >>> out, probs = PixelModel(build_model("fast-cnn")).eval()(torch.zeros(3, 1, 28, 28, dtype=torch.uint8))
    >>> tuple(out.shape), round(float(probs.sum(1)[0].detach()), 4)
    ((3, 10), 1.0)
    """

    def __init__(self, model: nn.Module, outputs: str = "logits") -> None:
        super().__init__()
        if outputs not in ("logits", "probabilities"):
            raise CnnlabError(f"PixelModel: outputs must be 'logits' or 'probabilities', got {outputs!r}")
        self.model, self.outputs = model, outputs

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels.to(torch.float32) / 255.0           # (N, C, H, W) in [0, 1], as float_images does
        out = self.model(x)                             # (N, classes)
        return out, probabilities(out, self.outputs)  # a binary model's one output becomes (1 - p, p)


def export_metadata(card: ModelCard, exporter: str, quantization: str | None = None) -> dict[str, Any]:
    """The JSON stored under the file's `cnnlab` metadata key: the model card plus how to feed the graph.

    >>> from cnnlab.models.files import ModelCard
    >>> meta = export_metadata(ModelCard({"name": "seed-mnist"}, ["a", "b"], [28, 28, 1]), "torchscript")
    >>> meta["input"]["dtype"], meta["input"]["shape"], meta["class_names"]
    ('uint8', ['batch', 1, 28, 28], ['a', 'b'])
    """
    h, w, c = card.input_shape
    return {**asdict(card), "input": {
        "name": INPUT_NAME, "layout": "NCHW", "dtype": "uint8", "shape": ["batch", c, h, w], "range": [0, 255],
        "scaling": "inside the graph: float32(pixels) / 255; feed raw decoded pixels, resized to HxW",
        "channels": "RGB" if c == 3 else "grayscale" if c == 1 else f"{c} channels"},
        "graph_outputs": {OUTPUT_NAME: card.outputs, PROBABILITIES_NAME: "probabilities (softmax)"},
        "export": {"exporter": exporter, "opset": OPSET, "quantization": quantization,
                   "versions": _export_versions()}}


def _export_versions() -> dict[str, str]:
    from importlib import metadata

    found = {"cnnlab": versions()["cnnlab"], "torch": torch.__version__}
    for package in ("onnx", "onnxruntime"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def to_onnx(model: nn.Module, card: ModelCard, exporter: str = "auto") -> tuple[Any, str]:
    """(onnx.ModelProto with metadata, exporter used) for a model in eval mode and its card.

    >>> from cnnlab.models import build_model
    >>> proto, used = to_onnx(build_model("fast-cnn").eval(), ModelCard({"name": "fast-cnn"}, list("0123456789"),
    ...                                                                  [28, 28, 1], "logits"))
    >>> [o.name for o in proto.graph.output], used
    (['output', 'probabilities'], 'torchscript')
    """
    onnx = import_onnx()
    if exporter not in EXPORTERS:
        raise CnnlabError(f"exporter must be one of {', '.join(EXPORTERS)}; got {exporter!r}")
    h, w, c = card.input_shape
    wrapped = PixelModel(model, card.outputs).eval()
    example = torch.randint(0, 256, (EXAMPLE_BATCH, c, h, w), dtype=torch.uint8)
    proto, used = None, exporter
    if exporter in ("auto", "torchscript"):
        try:
            proto, used = _torchscript(wrapped, example, onnx), "torchscript"
        except Exception as exc:  # the exporter raises many types (SymbolicValueError, RuntimeError, ...)
            if exporter == "torchscript":
                raise CnnlabError(f"torch's TorchScript ONNX exporter cannot convert this model "
                                  f"({first_line(exc, 300)}); use exporter 'dynamo' (--exporter dynamo)") from None
    if proto is None:
        proto, used = _dynamo(wrapped, example), "dynamo"
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(export_metadata(card, used))
    proto.producer_name, proto.producer_version = "cnnlab", versions()["cnnlab"]
    proto.doc_string = (f"cnnlab {card.architecture.get('name')}: uint8 (N, {c}, {h}, {w}) pixels -> "
                        f"{len(card.class_names)} classes; see metadata '{METADATA_KEY}'")
    return proto, used


def _torchscript(wrapped: nn.Module, example: torch.Tensor, onnx: Any) -> Any:
    buffer, noise = io.BytesIO(), io.StringIO()
    # Its deprecation notice, tracer warnings and (on failure) graph dump are not the user's business.
    with warnings.catch_warnings(), contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (example,), buffer, dynamo=False, opset_version=OPSET,  # type: ignore[arg-type]
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, PROBABILITIES_NAME],
                          dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, OUTPUT_NAME, PROBABILITIES_NAME)})
    return onnx.load_from_string(buffer.getvalue())


def _dynamo(wrapped: nn.Module, example: torch.Tensor) -> Any:
    noise = io.StringIO()
    try:  # it reports its progress on stdout/stderr; library code prints nothing
        with warnings.catch_warnings(), contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped, (example,), None, dynamo=True, opset_version=OPSET, verbose=False, report=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, PROBABILITIES_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    except Exception as exc:
        raise CnnlabError(f"torch's ONNX exporters cannot convert this model ({first_line(exc, 300)}); "
                          f"it cannot be exported to ONNX with this torch ({torch.__version__})") from None
    if program is None:
        raise CnnlabError("torch.onnx.export returned no program; upgrade torch")
    return program.model_proto


def import_onnx() -> Any:
    """The onnx package, or a one-line error saying how to install the export extra."""
    try:
        import onnx
    except ImportError:
        raise CnnlabError("exporting to ONNX needs the onnx and onnxruntime packages: "
                          "pip install 'cnnlab[export]'") from None
    return onnx
