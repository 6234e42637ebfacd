"""What the studio does with a finished run: evaluate it on its test images, predict, export it.

Evaluation uses cnnlab's own pieces: the run's test part (its split.json indices, into the image list
the studio wrote as the run started), the model as `cnnlab predict` runs it (`load_inference`), and
`evaluate_predictions` for accuracy, per-class scores and the confusion matrix. An image is found by
its name wherever it is now, so a test image relabelled (moved to its right class) counts under its new
class at the next evaluation; a deleted one is left out. Export is `cnnlab export` (ONNX with its
parity check against torch), plus a zip a user can run anywhere: the ONNX file, the class names and
a 20-line predict.py that needs only onnxruntime and Pillow.

>>> "onnxruntime" in PREDICT_PY and "Pillow" in PREDICT_PY
True
"""

from __future__ import annotations

import json
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.images import read_pixels
from cnnlab.errors import CnnlabError, first_line
from cnnlab.evaluation import evaluate_predictions
from cnnlab.fileio import atomic_write
from cnnlab.inference import Inference, load_inference
from cnnlab.studio.projects import StudioError

__all__ = ["RunModels", "evaluate_run", "export_bundle", "export_int8", "PREDICT_PY", "ZIP_NAME", "INT8_NAME",
           "top_classes"]

ZIP_NAME = "studio-export.zip"
INT8_NAME = "model-int8.onnx"  # `cnnlab export --quantize int8`'s own name in a run directory
INT8_REPORT = "model-int8.json"  # its checks, kept so that a second export answers without quantizing again
MODELS_KEPT = 2         # runs whose models stay loaded: the Evaluate and Test pages of one or two runs
MISTAKES_SHOWN = 12     # most confident mistakes listed under the confusion matrix
PREDICT_PY = '''"""Classify photos with model.onnx: python predict.py photo.jpg [more.jpg ...]

Needs only onnxruntime and Pillow (pip install onnxruntime pillow). Made by cnnlab studio.
"""
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

here = Path(__file__).parent
classes = (here / "classes.txt").read_text(encoding="utf-8").splitlines()
session = ort.InferenceSession(str(here / "model.onnx"), providers=["CPUExecutionProvider"])
_, channels, height, width = session.get_inputs()[0].shape  # the graph takes uint8 pixels (N, C, H, W)
for path in sys.argv[1:]:
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB" if channels == 3 else "L")
    pixels = np.asarray(image.resize((width, height), Image.BILINEAR), np.uint8).reshape(height, width, channels)
    probs = session.run(["probabilities"], {"pixels": pixels.transpose(2, 0, 1)[None]})[0][0]
    best = np.argsort(-probs)[:3]
    print(path + ": " + ", ".join(f"{classes[i]} {probs[i]:.3f}" for i in best))
'''


class RunModels:
    """The models of a few runs, loaded once each (`cnnlab predict`'s torch path), the least used dropped first."""

    def __init__(self) -> None:
        self.loaded: OrderedDict[Path, Inference] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, run: Path) -> Inference:
        """The model of run directory `run` (a 409 when the run has not finished)."""
        if not (run / "model.safetensors").is_file():
            raise StudioError(409, f"run {run.name!r} has no model yet (it has not finished); wait for it or "
                                   f"pick a finished run")
        with self.lock:
            if run not in self.loaded:
                try:
                    self.loaded[run] = load_inference(run, "torch")
                except CnnlabError as exc:
                    raise StudioError(422, f"run {run.name!r} cannot be loaded: {first_line(exc, 300)}") from None
                while len(self.loaded) > MODELS_KEPT:
                    self.loaded.popitem(last=False)
            self.loaded.move_to_end(run)
            return self.loaded[run]

    def forget(self, run: Path) -> None:
        with self.lock:
            self.loaded.pop(run, None)


def top_classes(inference: Inference, pixels: torch.Tensor, k: int = 5) -> list[list[dict[str, Any]]]:
    """The `k` most likely classes of each uint8 (N, C, H, W) image, most likely first."""
    probs = inference.predict_proba(pixels)  # (N, classes)
    names = inference.card.class_names
    order = np.argsort(-probs, axis=1, kind="stable")[:, :min(k, len(names))]
    return [[{"class": names[i], "probability": float(row[i])} for i in idx] for row, idx in zip(probs, order,
                                                                                               strict=True)]


def evaluate_run(inference: Inference, data: Path, files_list: Path, run: Path) -> dict[str, Any]:
    """Accuracy, per-class scores, confusion matrix (with each cell's images) and the most confident mistakes
    of a run on its test images, as they are labelled in the project now."""
    test = _test_files(files_list, run)
    where = {p.name: p for folder in data.iterdir() if folder.is_dir() and not folder.name.startswith(".")
             for p in folder.iterdir() if p.is_file()}
    names = inference.card.class_names
    found, labels, notes = [], [], []
    for entry in test:
        path = where.get(Path(entry).name)
        if path is None:
            continue  # deleted since: left out
        if path.parent.name not in names:
            notes.append(f"{path.parent.name}/{path.name} is in class {path.parent.name!r}, which the run does "
                         f"not know; train again to include it")
            continue
        found.append(path)
        labels.append(names.index(path.parent.name))
    if not found:
        raise StudioError(409, f"run {run.name!r} has no test images left in the project; train again")
    h, w, c = inference.card.input_shape
    pixels = np.stack([read_pixels(p, channels=c, size=(h, w)) for p in found])  # (N, C, H, W) uint8
    probs = torch.as_tensor(inference.predict_proba(pixels), dtype=torch.float64)
    result = evaluate_predictions(probs, torch.tensor(labels), names)
    images: list[dict[str, Any]] = [
        {"class": p.parent.name, "name": p.name, "predicted": names[int(result.predictions[i])],
         "confidence": float(probs[i].max()), "loss": float(result.losses[i])} for i, p in enumerate(found)]
    cells: dict[str, list[dict[str, Any]]] = {}
    for i, image in enumerate(images):
        cells.setdefault(f"{labels[i]},{int(result.predictions[i])}", []).append(image)
    mistakes = sorted((m for m in images if m["class"] != m["predicted"]), key=lambda m: -m["confidence"])
    report = result.report
    return {"run": run.name, "accuracy": result.accuracy, "loss": result.loss, "test_images": len(found),
            "classes": names, "confusion": result.confusion.tolist(), "cells": cells,
            "per_class": [{"class": n, "accuracy": s.recall, "precision": s.precision, "images": s.support}
                          for n, s in report.per_class.items()],
            "mistakes": mistakes[:MISTAKES_SHOWN], "notes": notes}


def _test_files(files_list: Path, run: Path) -> list[str]:
    """The run's test images ("class/name" as the run started), from split.json's indices."""
    try:
        files = json.loads(files_list.read_text(encoding="utf-8"))
        split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise StudioError(409, f"run {run.name!r} was not trained in the studio (no image list of its start, or no "
                               f"split.json); evaluate it with `cnnlab evaluate {run} --report`") from None
    total = sum(len(split.get(part, [])) for part in ("train", "validation", "test"))
    if total != len(files):
        raise StudioError(409, f"run {run.name!r} split {total} images but the project listed {len(files)} as it "
                               f"started (the images changed meanwhile); train again to evaluate")
    return [files[i] for i in split.get("test", [])]


def export_bundle(run: Path) -> dict[str, Any]:
    """`cnnlab export` of a run (model.onnx, parity-checked), then the zip; both kept in the run directory."""
    from cnnlab.export import export_onnx

    onnx = run / "model.onnx"
    report = None
    if not onnx.is_file():
        try:
            report = export_onnx(run, onnx, parity_images=64)
        except CnnlabError as exc:
            raise StudioError(422, f"run {run.name!r} could not be exported: {first_line(exc, 300)}") from None
    card = json.loads((run / "model.json").read_text(encoding="utf-8"))
    classes = "\n".join(card["class_names"]) + "\n"

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(onnx, "model.onnx")
            z.writestr("classes.txt", classes)
            z.writestr("predict.py", PREDICT_PY)
            z.writestr("README.txt", f"Model of cnnlab studio run {run.name}.\n"
                                     f"pip install onnxruntime pillow\npython predict.py photo.jpg\n")

    atomic_write(run / ZIP_NAME, write)
    parity = None if report is None else {"max_abs_diff": report.max_abs_diff, "top1_agreement": report.top1_agreement,
                                          "images": report.n_parity_images, "source": report.parity_source}
    return {"run": run.name, "onnx_bytes": onnx.stat().st_size, "zip_bytes": (run / ZIP_NAME).stat().st_size,
            "parity": parity, "files": {"model": "model.safetensors", "onnx": "model.onnx", "zip": ZIP_NAME}}


def export_int8(run: Path) -> dict[str, Any]:
    """`cnnlab export --quantize int8` of a run (model-int8.onnx) and what its checks measured.

    Calibrated on the run's training photos and compared with the fp32 graph on its test photos:
    `parity` gives the int8 graph's top-1 agreement with fp32 there, its largest output difference, and
    both accuracies. The report is kept beside the file (model-int8.json): a second call reads it.
    """
    from cnnlab.export import export_onnx

    onnx, kept = run / INT8_NAME, run / INT8_REPORT
    if not (onnx.is_file() and kept.is_file()):
        try:
            report = export_onnx(run, onnx, quantize="int8", force=True)
        except CnnlabError as exc:
            raise StudioError(422, f"run {run.name!r} could not be exported to int8: {first_line(exc, 300)}") from None
        found = {"top1_agreement": report.top1_agreement, "max_abs_diff": report.max_abs_diff,
                 "test_images": report.n_test_images, "calibration_images": report.n_calibration_images,
                 "accuracy": report.accuracy, "fp32_bytes": report.fp32_size_bytes, "notes": report.notes}
        text = json.dumps(found, indent=1)
        atomic_write(kept, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return {"run": run.name, "int8_bytes": onnx.stat().st_size, "parity": json.loads(kept.read_text("utf-8")),
            "files": {"int8": INT8_NAME}}
