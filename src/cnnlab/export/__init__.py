"""Export to ONNX (`cnnlab export`): a checked, self-describing .onnx file, fp32 or int8.

    report = export_onnx("runs/fashion-mnist-seed-mnist-...", quantize="int8")
    clf = OnnxClassifier(report.path)              # onnxruntime, CPU; needs nothing but the file
    probs = clf.predict_proba(uint8_nchw_images)   # (N, classes) float32; clf.card.class_names

The graph takes uint8 (N, C, H, W) pixels and scales them itself (x / 255), so consumers feed
decoded pixels (see `cnnlab.export.graph`). onnx and onnxruntime are the optional extra
`pip install 'cnnlab[export]'`; they are imported only when used.

The names below are imported on first use (PEP 562): `cnnlab.export.runtime` runs a file with
onnxruntime and NumPy alone, so `cnnlab predict` on an ONNX model never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab.lazy import lazy_attribute

if TYPE_CHECKING:
    from cnnlab.export.graph import EXPORTERS, PixelModel, export_metadata, to_onnx
    from cnnlab.export.interface import METADATA_KEY
    from cnnlab.export.pipeline import (
        CALIBRATION_IMAGES, INT8_MIN_AGREEMENT, PARITY_IMAGES, PARITY_TOLERANCE, ExportReport, check_parity,
        default_output, export_model, export_onnx,
    )
    from cnnlab.export.runtime import OnnxClassifier, inference_session, latency_ms

__all__ = ["export_onnx", "export_model", "ExportReport", "OnnxClassifier", "check_parity", "default_output",
           "inference_session", "latency_ms", "PixelModel", "export_metadata", "to_onnx", "EXPORTERS",
           "METADATA_KEY", "PARITY_TOLERANCE", "PARITY_IMAGES", "CALIBRATION_IMAGES", "INT8_MIN_AGREEMENT"]

_HOMES = {  # public name -> the module that defines it
    **dict.fromkeys(["EXPORTERS", "PixelModel", "export_metadata", "to_onnx"], "graph"),
    "METADATA_KEY": "interface",
    **dict.fromkeys(["CALIBRATION_IMAGES", "INT8_MIN_AGREEMENT", "PARITY_IMAGES", "PARITY_TOLERANCE", "ExportReport",
                     "check_parity", "default_output", "export_model", "export_onnx"], "pipeline"),
    **dict.fromkeys(["OnnxClassifier", "inference_session", "latency_ms"], "runtime"),
}


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule such as `cnnlab.export.runtime`) when it is first used.

    >>> import cnnlab.export
    >>> cnnlab.export.OnnxClassifier is cnnlab.export.runtime.OnnxClassifier
    True
    """
    return lazy_attribute(__name__, _HOMES, name, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
