"""`export_onnx`: a run or model file -> a checked .onnx file (fp32, or int8), and the report of the checks.

The export checks itself before the file appears: onnxruntime must reproduce the torch model's
outputs on real images (the run's own test images when its dataset is available) within
PARITY_TOLERANCE, with every top-1 class the same. int8 files must agree with fp32 on the top-1
class of at least INT8_MIN_AGREEMENT of the test images (one image may differ on test sets under 34
images); their test accuracy beside fp32's,
their size and their CPU latency are reported. A failed check raises CnnlabError and leaves no file.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.export.data import random_pixels, real_images
from cnnlab.export.graph import EXPORTERS, PixelModel, to_onnx
from cnnlab.export.quantize import quantize_int8
from cnnlab.export.runtime import OnnxClassifier, as_pixels, inference_session, latency_ms
from cnnlab.fileio import atomic_write
from cnnlab.models.files import ModelCard, load_model, resolve_model_path

__all__ = ["ExportReport", "export_onnx", "export_model", "check_parity", "default_output",
           "PARITY_TOLERANCE", "PARITY_IMAGES", "CALIBRATION_IMAGES", "INT8_MIN_AGREEMENT",
           "int8_agreement"]

PARITY_TOLERANCE = 1e-4    # max |torch - onnxruntime| of fp32 outputs; float32 reorderings measure ~1e-6
PARITY_IMAGES = 256        # real images for the fp32 check: seconds even for ResNet-50 at 224 px
CALIBRATION_IMAGES = 512   # training images for int8 ranges; onnxruntime's examples use a few hundred
INT8_MIN_AGREEMENT = 0.97  # int8 top-1 must equal fp32 top-1 on this share of test images
LATENCY_BATCHES = (1,)     # reported by export; benchmarks/export_int8.py measures more


@dataclass
class ExportReport:
    """What `export_onnx` wrote and what its checks measured."""

    path: Path
    size_bytes: int
    exporter: str                  # "torchscript" or "dynamo"
    quantization: str | None       # None (fp32) or "int8"
    parity_source: str             # where the check images came from
    n_parity_images: int
    max_abs_diff: float            # max |torch - this file| over the model's outputs on the parity images
    top1_agreement: float          # share of parity images (int8: of test images) with the same top-1 class
    fp32_max_abs_diff: float | None = None         # int8 only: the fp32 graph's own parity before quantizing
    fp32_size_bytes: int | None = None
    n_calibration_images: int | None = None
    n_test_images: int | None = None
    accuracy: dict[str, float] = field(default_factory=dict)    # {"fp32": ..., "int8": ...} on the test images
    latency_ms: dict[str, float] = field(default_factory=dict)  # per image, batch 1, 1 thread, onnxruntime CPU
    notes: list[str] = field(default_factory=list)


def default_output(source: str | Path, quantize: str | None = None) -> Path:
    """RUN/model.onnx (model-int8.onnx), or the model file's name with .onnx.

    >>> import tempfile; from cnnlab.models import build_model, save_model
    >>> m = save_model(build_model("fast-cnn"), Path(tempfile.mkdtemp()) / "model.safetensors", list("0123456789"),
    ...                (28, 28, 1))
    >>> default_output(m).name, default_output(m.parent, "int8").name
    ('model.onnx', 'model-int8.onnx')
    """
    path = resolve_model_path(source)
    suffix = "-int8.onnx" if quantize == "int8" else ".onnx"
    return path.with_name(path.stem + suffix)


def export_onnx(source: str | Path, output: str | Path | None = None, *, quantize: str | None = None,
                calibration: torch.Tensor | np.ndarray | int | None = None,
                parity_images: torch.Tensor | np.ndarray | int | None = None,
                test_data: tuple[Any, Any] | None = None, exporter: str = "auto", data_dir: str | None = None,
                force: bool = False) -> ExportReport:
    """Export a run directory or model file to ONNX, check it with onnxruntime, write it atomically.

    `parity_images` / `calibration`: uint8 (N, C, H, W) images, or how many to take from the run's
    dataset (test split for parity, training split for calibration); `test_data` (images, labels)
    replaces the run's test split for the int8 accuracy. `data_dir` defaults to the run's own.

    >>> import tempfile; from cnnlab.models import build_model, save_model
    >>> d = Path(tempfile.mkdtemp())
    >>> m = save_model(build_model("fast-cnn"), d / "m.safetensors", list("0123456789"), (28, 28, 1))
    >>> r = export_onnx(m, d / "m.onnx")
    >>> r.max_abs_diff < 1e-4, r.top1_agreement, r.parity_source.startswith("random")
    (True, 1.0, True)
    """
    if quantize not in (None, "int8"):
        raise CnnlabError(f"--quantize must be int8 (or nothing, for fp32); got {quantize!r}")
    if exporter not in EXPORTERS:
        raise CnnlabError(f"--exporter must be one of {', '.join(EXPORTERS)}; got {exporter!r}")
    target = Path(output) if output is not None else default_output(source, quantize)
    _check_target(target, force)
    model, card = load_model(source)
    data = real_images(source, card, parity_images, calibration if quantize else 0, test_data, data_dir,
                       PARITY_IMAGES, CALIBRATION_IMAGES)
    if data.parity is None:  # no real images: random ones, and the report says so
        count = parity_images if isinstance(parity_images, int) else PARITY_IMAGES
        data.parity = random_pixels(card.input_shape, count)
        data.parity_source = f"random uint8 images ({data.notes[-1] if data.notes else 'no real images given'})"
    return export_model(model, card, target, quantize=quantize, parity=data.parity, calibration=data.calibration,
                        test=data.test, parity_source=data.parity_source, notes=data.notes, exporter=exporter,
                        force=force)


def _check_target(target: Path, force: bool) -> None:
    if target.suffix.lower() != ".onnx":
        raise CnnlabError(f"-o {target}: an ONNX file name must end in .onnx; e.g. -o {target.with_suffix('.onnx')}")
    if target.is_dir():
        raise CnnlabError(f"-o {target} is a directory; give a file name such as {target / 'model.onnx'}")
    if target.exists() and not force:
        raise CnnlabError(f"{target} already exists; cnnlab does not overwrite exports: pass --force, or -o another")


def export_model(model: nn.Module, card: ModelCard, output: Path, *, quantize: str | None = None,
                 parity: torch.Tensor | np.ndarray | None = None, calibration: torch.Tensor | None = None,
                 test: tuple[torch.Tensor, torch.Tensor] | None = None, parity_source: str = "given images",
                 notes: list[str] | None = None, exporter: str = "auto", force: bool = False,
                 metadata: dict[str, str] | None = None) -> ExportReport:
    """Export an in-memory model described by `card` (see `export_onnx`, which gathers the images).

    Without `parity` images the check runs on PARITY_IMAGES seeded random uint8 images, and says so.
    `metadata` adds entries to the file's metadata_props beside the `cnnlab` card (an ONNX twin
    records the model file it was made from; see `cnnlab.inference`).
    """
    _check_target(output, force)
    notes = list(notes or [])
    if parity is None:
        parity, parity_source = random_pixels(card.input_shape, PARITY_IMAGES), "random uint8 images (none given)"
    model.eval()
    proto, used = to_onnx(model, card, exporter)
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    reports: list[ExportReport] = []

    def write(part: Path) -> None:  # `part` is renamed onto `output` only when every check passed
        with tempfile.TemporaryDirectory(prefix="cnnlab-export-") as tmp:
            fp32_path = part if quantize is None else Path(tmp) / "fp32.onnx"
            fp32_path.write_bytes(proto.SerializeToString())
            fp32 = OnnxClassifier(fp32_path)
            diff, agreement = check_parity(model, fp32, parity, PARITY_TOLERANCE, 1.0)
            report = ExportReport(output, fp32_path.stat().st_size, used, quantize, parity_source, len(parity),
                                  diff, agreement, notes=notes)
            if quantize == "int8":
                report = _int8(model, fp32, part, report, parity, calibration, test)
            reports.append(report)

    atomic_write(output, write)
    report = reports[0]
    report.path, report.size_bytes = output, output.stat().st_size
    return report


def int8_agreement(reference: np.ndarray, quantized: np.ndarray) -> tuple[float, str | None]:
    """The share of images whose int8 top-1 class is fp32's, and a note when one image was let differ.

    At least INT8_MIN_AGREEMENT must agree, except that one image may always differ: below 34 images 97%
    would demand every one, so a single borderline photo of a 12-photo test split would fail an export
    that is fine. Raises CnnlabError when more differ.

    >>> fp32 = np.eye(2)[[0] * 11 + [1]]           # 12 images, top-1 class 0 for eleven of them
    >>> int8_agreement(fp32, np.eye(2)[[0] * 12])[0]  # one differs: 11/12 allowed, with a note
    0.9166666666666666
    """
    differ, n = int(np.sum(reference.argmax(1) != quantized.argmax(1))), len(reference)
    agreement = 1.0 - differ / n
    if differ > max(1, int(n * (1 - INT8_MIN_AGREEMENT) + 1e-9)):
        raise CnnlabError(f"int8 parity failed: the int8 model's top-1 class agrees with fp32 on only "
                          f"{agreement:.1%} of {n} images (at least {INT8_MIN_AGREEMENT:.0%} expected); "
                          f"calibrate on more training images (--calibration N) or export fp32")
    if agreement >= INT8_MIN_AGREEMENT:
        return agreement, None
    return agreement, (f"int8 top-1 differs from fp32 on {differ} of {n} test images: one image may differ on "
                       f"test sets too small for {INT8_MIN_AGREEMENT:.0%} to let any")


def _int8(model: nn.Module, fp32: OnnxClassifier, path: Path, report: ExportReport,
          parity: torch.Tensor | np.ndarray, calibration: torch.Tensor | None,
          test: tuple[torch.Tensor, torch.Tensor] | None) -> ExportReport:
    """Quantize, check top-1 agreement with fp32 on the test images, measure accuracy, size and latency."""
    if calibration is None or len(calibration) == 0:
        raise CnnlabError("int8 export needs real training images to calibrate on: export a run directory whose "
                          "dataset can be read (--data-dir), or pass calibration=images")
    shape = fp32.card.input_shape
    quantize_int8(fp32.path, path, as_pixels(calibration, shape, "calibration"))
    int8 = OnnxClassifier(path)
    pixels, labels = as_pixels(parity, shape), None
    if test is not None and len(test[0]):
        pixels, labels = as_pixels(test[0], shape, "test images"), np.asarray(test[1])
    else:
        report.notes.append("no labelled test images: int8 agreement measured on the parity images, "
                            "accuracy not measured")
    reference, quantized = fp32.outputs(pixels), int8.outputs(pixels)
    agreement, note = int8_agreement(reference, quantized)
    if note:
        report.notes.append(note)
    accuracy = {} if labels is None else {"fp32": float(np.mean(reference.argmax(1) == labels)),
                                          "int8": float(np.mean(quantized.argmax(1) == labels))}
    parity_pixels = as_pixels(parity, shape)
    with torch.no_grad():
        torch_out = PixelModel(model, fp32.card.outputs).eval()(torch.from_numpy(parity_pixels))[0].numpy()
    latency = {f"{name}_batch{b}": latency_ms(inference_session(clf.path, threads=1), parity_pixels, b)
               for name, clf in (("fp32", fp32), ("int8", int8)) for b in LATENCY_BATCHES}
    return ExportReport(
        path, path.stat().st_size, report.exporter, "int8", report.parity_source, report.n_parity_images,
        max_abs_diff=float(np.abs(int8.outputs(parity_pixels) - torch_out).max()), top1_agreement=agreement,
        fp32_max_abs_diff=report.max_abs_diff, fp32_size_bytes=report.size_bytes,
        n_calibration_images=len(calibration), n_test_images=len(pixels), accuracy=accuracy,
        latency_ms=latency, notes=report.notes)


def check_parity(model: nn.Module, exported: OnnxClassifier, pixels: torch.Tensor | np.ndarray,
                 tolerance: float = PARITY_TOLERANCE, min_agreement: float = 1.0) -> tuple[float, float]:
    """(max |torch - onnxruntime| of the model's outputs, top-1 agreement) on uint8 `pixels`; raises when off.

    >>> import tempfile; from cnnlab.models import build_model, save_model
    >>> from cnnlab.export import export_onnx
    >>> d = Path(tempfile.mkdtemp())
    >>> m = save_model(build_model("fast-cnn"), d / "m.safetensors", list("0123456789"), (28, 28, 1))
    >>> clf = OnnxClassifier(export_onnx(m, d / "m.onnx").path)
    >>> grey = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    >>> check_parity(build_model("fast-cnn"), clf, grey)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: parity failed: ...differ from torch...
    """
    array = as_pixels(pixels, exported.card.input_shape, "parity images")
    wrapped = PixelModel(model, exported.card.outputs).eval()
    with torch.no_grad():
        expected = torch.cat([wrapped(torch.from_numpy(array[i:i + 256]))[0] for i in range(0, len(array), 256)])
    got = exported.outputs(array)
    if got.shape[1:] != (len(exported.card.class_names),):
        raise CnnlabError(f"the model has {got.shape[1]} outputs but its card names {len(exported.card.class_names)} "
                          f"classes; save the model with one class name per output")
    diff = float(np.abs(got - expected.numpy()).max()) if len(array) else 0.0
    agreement = float(np.mean(got.argmax(1) == expected.numpy().argmax(1))) if len(array) else 1.0
    if not diff < tolerance or agreement < min_agreement:
        raise CnnlabError(f"parity failed: onnxruntime's outputs differ from torch's by up to {diff:.3g} "
                          f"(tolerance {tolerance:g}) and agree on the top-1 class for {agreement:.2%} of "
                          f"{len(array)} images ({min_agreement:.0%} required); the graph does not compute what "
                          f"the model does (data-dependent Python control flow?), so nothing was written")
    return diff, agreement
