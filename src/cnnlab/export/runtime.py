"""Running an exported file with onnxruntime on the CPU: `OnnxClassifier`, and latency measurement.

`OnnxClassifier(path)` is all a consumer needs: `.card` (class names, input size, preprocessing,
metrics, rebuilt from the file's metadata) and `.predict_proba(uint8 (N, C, H, W))`. It imports
onnxruntime and NumPy only, never torch, torch's exporter or onnx: `cnnlab predict` runs an ONNX
model without torch's 3 s import (torch tensors are still accepted where torch is loaded).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.cards import parse_card
from cnnlab.errors import CnnlabError, first_line
from cnnlab.export.interface import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, PROBABILITIES_NAME

__all__ = ["OnnxClassifier", "inference_session", "import_onnxruntime", "as_pixels", "latency_ms", "check_graph"]

BATCH = 256  # images per onnxruntime call: bounds memory for large inputs, amortizes per-call overhead


def import_onnxruntime() -> Any:
    """The onnxruntime package, or a one-line error saying how to install the export extra."""
    try:
        import onnxruntime
    except ImportError:
        raise CnnlabError("running ONNX files needs onnxruntime: pip install 'cnnlab[export]'") from None
    return onnxruntime


def inference_session(model: str | Path | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for a file (or serialized model); `threads` caps its intra-op threads.

    >>> inference_session(b"not onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: <bytes> is not a valid ONNX model (...
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its optimizer warnings are about the graph, not the user's input
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    where = "<bytes>" if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile types
        raise CnnlabError(f"{where} is not a valid ONNX model ({first_line(exc)}); export it again with "
                          f"`cnnlab export RUN`") from None


def as_pixels(images: Any, input_shape: list[int] | tuple[int, ...], where: str = "images") -> np.ndarray:
    """uint8 (N, C, H, W) numpy pixels from a torch tensor or numpy array, checked against (H, W, C).

    >>> import torch
    >>> as_pixels(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), [28, 28, 1]).shape
    (2, 1, 28, 28)
    """
    torch = sys.modules.get("torch")  # a torch tensor exists only where torch was imported
    is_tensor = torch is not None and isinstance(images, torch.Tensor)
    array = images.detach().cpu().numpy() if is_tensor else np.asarray(images)
    h, w, c = input_shape
    if array.dtype != np.uint8:
        raise CnnlabError(f"{where}: expected uint8 pixels 0..255, got dtype {array.dtype}; the exported graph "
                          f"scales them itself (convert [0, 1] floats with (x * 255).round().astype('uint8'))")
    if array.ndim != 4 or tuple(array.shape[1:]) != (c, h, w):
        raise CnnlabError(f"{where}: expected shape (N, {c}, {h}, {w}) (N, C, H, W), got {tuple(array.shape)}; "
                          f"resize images to {h}x{w} with {c} channel(s) first")
    return np.ascontiguousarray(array)


class OnnxClassifier:
    """A classifier exported by `cnnlab export`, run with onnxruntime on the CPU.

    >>> import tempfile; from cnnlab.models import build_model, save_model
    >>> from cnnlab.export import export_onnx
    >>> d = Path(tempfile.mkdtemp())
    >>> m = save_model(build_model("fast-cnn"), d / "m.safetensors", list("0123456789"), (28, 28, 1))
    >>> clf = OnnxClassifier(export_onnx(m, d / "m.onnx").path)
    >>> clf.card.class_names[:3], clf.predict_proba(np.zeros((4, 1, 28, 28), np.uint8)).shape
    (['0', '1', '2'], (4, 10))
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CnnlabError(f"ONNX file not found: {self.path}; export one with `cnnlab export RUN -o FILE`")
        self.session = inference_session(self.path, threads)
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise CnnlabError(f"{self.path} has no '{METADATA_KEY}' metadata: it was not written by `cnnlab export`, "
                              f"so its class names and preprocessing are unknown; export the model with cnnlab")
        self.card = parse_card(text, f"{self.path} ('{METADATA_KEY}' metadata)", "export the model again")
        self.metadata: dict[str, Any] = json.loads(text)  # parse_card proved it is a JSON object
        check_graph(self.session, self.card.input_shape, len(self.card.class_names), str(self.path))

    def outputs(self, images: Any, batch_size: int = BATCH) -> np.ndarray:
        """The model's own output (logits, or probabilities for a softmax model): float32 (N, classes)."""
        return self._run(images, OUTPUT_NAME, batch_size)

    def predict_proba(self, images: Any, batch_size: int = BATCH) -> np.ndarray:
        """Class probabilities, float32 (N, classes), for uint8 (N, C, H, W) images (torch or numpy)."""
        return self._run(images, PROBABILITIES_NAME, batch_size)

    def _run(self, images: Any, name: str, batch_size: int) -> np.ndarray:
        pixels = as_pixels(images, self.card.input_shape)
        if len(pixels) == 0:
            return np.zeros((0, len(self.card.class_names)), np.float32)
        parts = [self.session.run([name], {INPUT_NAME: pixels[i:i + batch_size]})[0]
                 for i in range(0, len(pixels), batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)


def check_graph(session: Any, input_shape: list[int], classes: int, where: str) -> None:
    """Refuse a graph that disagrees with its model card: a one-line error naming `where` and the mismatch.

    The card (class names, input size) is metadata beside the graph; an edited or mixed-up file
    would otherwise load and fail on every prediction. Checked: the input is uint8 (N, C, H, W)
    with the card's fixed C, H, W, both outputs are (N, classes), and one black image runs.

    >>> import tempfile; from cnnlab.models import build_model, save_model
    >>> from cnnlab.export import export_onnx
    >>> d = Path(tempfile.mkdtemp())
    >>> m = save_model(build_model("fast-cnn"), d / "m.safetensors", list("0123456789"), (28, 28, 1))
    >>> s = inference_session(export_onnx(m, d / "m.onnx").path)
    >>> check_graph(s, [28, 28, 1], 10, "m.onnx")
    >>> check_graph(s, [28, 28, 1], 3, "m.onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: m.onnx: the metadata lists 3 class names, but the graph's 'output' has shape ...
    """
    h, w, c = input_shape
    fix = "export the model again with `cnnlab export RUN`"
    inputs = {i.name: i for i in session.get_inputs()}
    if set(inputs) != {INPUT_NAME}:
        raise CnnlabError(f"{where}: the graph's inputs are {sorted(inputs)}, expected one named '{INPUT_NAME}'; {fix}")
    pixels = inputs[INPUT_NAME]
    if pixels.type != "tensor(uint8)" or len(pixels.shape) != 4 or list(pixels.shape[1:]) != [c, h, w]:
        raise CnnlabError(f"{where}: the metadata says input {h}x{w}x{c} (H x W x C), but the graph takes "
                          f"{pixels.type} of shape {pixels.shape}, expected tensor(uint8) of shape [N, {c}, {h}, {w}]; "
                          f"{fix}")
    outputs = {o.name: o for o in session.get_outputs()}
    for name in (OUTPUT_NAME, PROBABILITIES_NAME):
        if name not in outputs:
            raise CnnlabError(f"{where}: the graph has no '{name}' output (it has {sorted(outputs)}); {fix}")
        shape = outputs[name].shape
        if len(shape) != 2 or shape[1] != classes:
            raise CnnlabError(f"{where}: the metadata lists {classes} class names, but the graph's '{name}' has "
                              f"shape {shape}, expected [N, {classes}]; {fix}")
    try:  # the declared shapes are what the file claims; one run shows what it does
        probs = session.run([PROBABILITIES_NAME], {INPUT_NAME: np.zeros((1, c, h, w), np.uint8)})[0]
    except Exception as exc:  # onnxruntime's own error types
        raise CnnlabError(f"{where}: the graph fails on one {h}x{w}x{c} image ({first_line(exc)}); {fix}") from None
    if np.shape(probs) != (1, classes):
        raise CnnlabError(f"{where}: the graph returns shape {np.shape(probs)} for one image, expected (1, {classes}) "
                          f"for the metadata's {classes} class names; {fix}")


def latency_ms(session: Any, pixels: np.ndarray, batch_size: int = 1, min_seconds: float = 0.3,
               min_runs: int = 5) -> float:
    """Median milliseconds per image of `session` on batches of `batch_size` taken from `pixels`.

    One untimed warm-up run, then at least `min_runs` runs and `min_seconds` of them.

    >>> import tempfile; from cnnlab.models import build_model, save_model
    >>> from cnnlab.export import export_onnx
    >>> d = Path(tempfile.mkdtemp())
    >>> m = save_model(build_model("fast-cnn"), d / "m.safetensors", list("0123456789"), (28, 28, 1))
    >>> s = inference_session(export_onnx(m, d / "m.onnx").path, threads=1)
    >>> latency_ms(s, np.zeros((4, 1, 28, 28), np.uint8), 2, min_seconds=0.01) > 0
    True
    """
    batch = np.ascontiguousarray(np.resize(pixels, (batch_size, *pixels.shape[1:])))  # repeats pixels if too few
    session.run(None, {INPUT_NAME: batch})
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        session.run(None, {INPUT_NAME: batch})
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times)) / batch_size
