"""Which runtime runs a saved model's forward passes (predict, evaluate, report, serve), and its ONNX twin.

`--runtime auto`, the commands' default, runs a cnnlab model file through onnxruntime when
onnxruntime is installed and the model exports; otherwise through torch. The ONNX graph is the
model's *twin*: exported once, on first use, into the user's cache folder (`twin_folder()`, never
beside the model), checked against torch there exactly as `cnnlab export` checks an export
(`check_parity`: every top-1 class the same, outputs within PARITY_TOLERANCE), and found again by
the sha256 of the model file. Finding and running it imports no torch, so `cnnlab predict` with a
cached twin starts in a tenth of a second instead of torch's 3 s. A twin that cannot be made (an
export or parity failure) is not kept: that call runs on torch and says why in one line (`notes`);
the reason is remembered (`<key>.failed`), so later calls go straight to torch, quietly (their
`reason` says why), instead of exporting again every time.

    inference = load_inference("runs/fashion-mnist-seed-mnist-...", "auto")
    inference.runtime, inference.predict_proba(uint8_nchw_pixels)   # "onnxruntime", (N, classes) float32
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.cards import ModelCard
from cnnlab.catalog import resolve_model_path
from cnnlab.errors import CnnlabError, first_line
from cnnlab.fileio import atomic_write, user_cache_folder
from cnnlab.versions import __version__

if TYPE_CHECKING:
    from cnnlab.export.runtime import OnnxClassifier

__all__ = ["InferenceSettings", "Inference", "RUNTIMES", "CACHE_DIR_ENV", "TWIN_METADATA_KEY", "check_runtime",
           "cache_dir", "twin_folder", "model_sha256", "load_inference", "fast_inference"]

RUNTIMES = ("auto", "torch", "onnxruntime")
CACHE_DIR_ENV = "CNNLAB_CACHE_DIR"   # overrides the user cache folder (platformdirs), e.g. for tests or a shared disk
TWIN_METADATA_KEY = "cnnlab_twin"   # in a twin's metadata_props: the model file it was made from, checked on load
HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class InferenceSettings:
    """How `cnnlab predict`, `evaluate` (and its report) and `serve` run a model: their --runtime.

    >>> InferenceSettings().runtime
    'auto'
    >>> InferenceSettings("tensorrt")
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: --runtime must be auto, torch or onnxruntime; got 'tensorrt'
    """

    # auto: onnxruntime when installed and the model exports, else torch. onnxruntime ran the seed models
    # about 6x faster than torch eager on the CPU (issue 19), and its import costs 0.1 s against torch's 3 s.
    runtime: str = "auto"

    def __post_init__(self) -> None:
        check_runtime(self.runtime)


def check_runtime(runtime: object) -> str:
    """`runtime` when it is one of RUNTIMES, else a one-line error naming --runtime."""
    if runtime not in RUNTIMES:
        raise CnnlabError(f"--runtime must be auto, torch or onnxruntime; got {runtime!r}")
    return str(runtime)


@dataclass
class Inference:
    """A model ready to predict, and which runtime predicts: `predict_proba(uint8 (N, C, H, W)) -> (N, classes)`."""

    runtime: str                       # "onnxruntime" or "torch": what runs the forward passes
    reason: str                        # why, in a few words ("cached ONNX twin", "--runtime torch", ...)
    card: ModelCard
    path: Path                         # the model file given (.safetensors or .onnx)
    onnx: OnnxClassifier | None = None  # the twin (or the .onnx file given) when runtime is onnxruntime
    model: Any = None                  # the torch nn.Module, when it was loaded
    notes: list[str] = field(default_factory=list)  # one line each, worth telling the user (a twin not used)
    scorer: Any = field(default=None, repr=False)   # the torch model prepared for scoring, made at the first call

    def predict_proba(self, pixels: Any) -> Any:
        """Class probabilities, float32 NumPy (N, classes), for uint8 (N, C, H, W) pixels (NumPy or torch).

        On torch, as the run scored its test split (the precision the model card records, where this CPU
        computes it natively; BatchNorm folded: training/scoring.py), so predictions agree with the run's
        numbers. `cnnlab predict --runtime torch` on 500 Imagenette photos with EfficientNet-Lite0: 28.6 s
        in fp32 unfolded, 8.8 s so (bf16, 2-core CPU, 2026-12-07; the ONNX twin: 6.0 s).
        """
        if self.onnx is not None:
            return self.onnx.predict_proba(pixels)
        import torch

        with torch.inference_mode():
            return self._scorer().probabilities(torch.as_tensor(pixels)).numpy()

    def _scorer(self) -> Any:
        """The torch model prepared once for scoring (a server predicts many times)."""
        if self.scorer is None:
            import torch

            from cnnlab.training.devices import Runtime
            from cnnlab.training.scoring import Scorer, recorded_precision

            precision, _ = recorded_precision(self.card.scoring, torch.device("cpu"))
            self.scorer = Scorer(self.model, Runtime(torch.device("cpu"), precision, False))
        return self.scorer

    def describe(self) -> dict[str, Any]:
        """What ran, for JSON records: {"runtime", "reason", "twin" (its path, or None), "notes"}."""
        twin = None if self.onnx is None or self.onnx.path == self.path else str(self.onnx.path)
        return {"runtime": self.runtime, "reason": self.reason, "twin": twin, "notes": list(self.notes)}


def cache_dir() -> Path:
    """$CNNLAB_CACHE_DIR if set, else the user cache folder (e.g. ~/.cache/cnnlab).

    >>> import os; os.environ[CACHE_DIR_ENV] = "/tmp/cnnlab-cache"; str(cache_dir())
    '/tmp/cnnlab-cache'
    >>> del os.environ[CACHE_DIR_ENV]
    """
    return user_cache_folder(CACHE_DIR_ENV)


def twin_folder() -> Path:
    """Where twins are kept: the `onnx` folder of `cache_dir()`."""
    return cache_dir() / "onnx"


def model_sha256(path: Path) -> str:
    """sha256 of a model file's bytes, and of the NAME.json beside it when there is one.

    The key of the model's twin. The whole file counts, not only the weights: the twin carries the
    card (class names, input size), so a changed card needs a new twin; and a file altered after it
    was written gets a new key, so `load_model` (which refuses it) runs instead of an old twin.
    Older model files read their card from NAME.json, hence its bytes too.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "m.safetensors"; _ = p.write_bytes(b"abc")
    >>> model_sha256(p)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    for part in (path, path.with_suffix(".json")):
        if part == path or part.is_file():
            with open(part, "rb") as handle:
                while chunk := handle.read(HASH_CHUNK_BYTES):
                    digest.update(chunk)
    return digest.hexdigest()


def fast_inference(source: str | Path, runtime: str = "torch") -> Inference | None:
    """The onnxruntime route when it needs no torch: a .onnx file, or the verified cached twin of a model file.

    None when torch is needed (no twin yet, `runtime` "torch", onnxruntime not installed under
    "auto"); `load_inference` then loads the model. Imports no torch.
    """
    return _cached(Path(source), check_runtime(runtime))[0]


def load_inference(source: str | Path, runtime: str = "torch", *, loaded: tuple[Any, ModelCard] | None = None,
                   probe: Any = None) -> Inference:
    """A run directory, model file or .onnx file, ready to predict with `runtime` (auto, torch or onnxruntime).

    Under auto and onnxruntime a model file runs through its twin, made now when there is none
    (checked on `probe`, uint8 (N, C, H, W) images, else on the run's test images, else on random
    ones). Under auto, a model whose twin cannot be made, or a machine without onnxruntime, runs
    on torch (`reason` says why; `notes` has a line for the user when a twin failed just now);
    under onnxruntime either is a one-line error. `loaded` (model, card) is the model already
    loaded (evaluation needs it anyway); without it the torch model is loaded only when needed.

    >>> import tempfile, numpy as np; from cnnlab.models import build_model, save_model
    >>> import os; d = Path(tempfile.mkdtemp()); os.environ[CACHE_DIR_ENV] = str(d / "cache")
    >>> m = save_model(build_model("seed-mnist"), d / "m.safetensors", list("0123456789"), (28, 28, 1))
    >>> first, again = load_inference(m, "auto"), load_inference(m, "auto")
    >>> first.reason, again.reason, again.predict_proba(np.zeros((2, 1, 28, 28), np.uint8)).shape
    ('ONNX twin made now', 'cached ONNX twin', (2, 10))
    >>> load_inference(m, "torch").runtime
    'torch'
    >>> del os.environ[CACHE_DIR_ENV]
    """
    path = Path(source)
    fast, found = _cached(path, check_runtime(runtime))
    if fast is not None and (loaded is None or path.suffix.lower() == ".onnx"):
        return fast
    from cnnlab.models.files import load_model

    model, card = loaded if loaded is not None else load_model(path)  # a missing or altered file fails here
    file = resolve_model_path(path)
    if runtime == "torch":
        return Inference("torch", "--runtime torch", card, file, model=model)
    if found.twin is not None:
        return Inference("onnxruntime", "cached ONNX twin", card, file, found.twin, model, found.notes)
    problem, notes = found.failed or found.unavailable, list(found.notes)
    if problem is None:
        try:
            twin = _make_twin(found, model, card, path, probe)
            return Inference("onnxruntime", "ONNX twin made now", card, file, twin, model, notes)
        except CnnlabError as exc:  # an export or parity failure: remembered by _make_twin
            problem = f"its ONNX twin could not be made ({first_line(exc, 300)})"
            notes.append(f"{file} runs on torch: {problem}")
        except OSError as exc:  # a read-only or full cache folder: torch runs, quietly (the command's own
            # output may be what cannot be written, and gets its one error line); `reason` keeps why
            problem = (f"its ONNX twin cannot be written to {twin_folder()} ({first_line(exc, 120)}); "
                       f"set ${CACHE_DIR_ENV} to a writable folder")
    if runtime == "onnxruntime":
        raise CnnlabError(f"--runtime onnxruntime cannot run {file}: {problem}; use --runtime auto or torch")
    return Inference("torch", problem, card, file, model=model, notes=notes)


def _cached(path: Path, runtime: str) -> tuple[Inference | None, _Lookup]:
    """(the torch-free Inference when there is one, what the cache holds for the model file)."""
    if path.suffix.lower() == ".onnx":
        return _onnx_file(path, runtime), _Lookup(path)
    if runtime == "torch":
        return None, _Lookup(None)
    found = _Lookup.of(path, runtime)
    if found.twin is None or found.file is None:
        return None, found
    return Inference("onnxruntime", "cached ONNX twin", found.twin.card, found.file, found.twin,
                     notes=found.notes), found


def _onnx_file(path: Path, runtime: str) -> Inference:
    """An ONNX file given by name: onnxruntime runs it (torch cannot)."""
    if runtime == "torch":
        raise CnnlabError(f"--runtime torch cannot run {path}, an ONNX file: use --runtime auto or onnxruntime, or "
                          f"give the run directory or .safetensors file it was exported from")
    if not path.is_file():
        raise CnnlabError(f"model not found: {path} does not exist; give a run directory, a .safetensors model "
                          f"file or a .onnx file written by `cnnlab export`")
    if _missing_onnxruntime():
        raise CnnlabError(f"running {path} needs onnxruntime, which is not installed: pip install 'cnnlab[export]'")
    from cnnlab.export.runtime import OnnxClassifier

    classifier = OnnxClassifier(path)
    return Inference("onnxruntime", "an ONNX file", classifier.card, path, classifier)


def _missing_onnxruntime() -> bool:
    from cnnlab.export.runtime import import_onnxruntime

    try:
        import_onnxruntime()
    except CnnlabError:
        return True
    return False


@dataclass
class _Lookup:
    """What the cache holds for a model file: its verified twin, or why there is none."""

    file: Path | None                  # the model file the source names (None: not found; load_model says why)
    sha256: str = ""
    twin: OnnxClassifier | None = None
    failed: str | None = None          # the remembered reason its twin could not be made
    unavailable: str | None = None     # onnxruntime is not installed
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, source: Path, runtime: str) -> _Lookup:
        try:
            found = cls(resolve_model_path(source))
        except CnnlabError:  # no such model: load_model, which runs next, says so in its own words
            found = cls(None)
        if _missing_onnxruntime():
            if runtime == "onnxruntime":
                raise CnnlabError("--runtime onnxruntime needs onnxruntime, which is not installed: "
                                  "pip install 'cnnlab[export]', or use --runtime torch")
            found.unavailable = "onnxruntime is not installed (pip install 'cnnlab[export]')"
        if found.file is None or found.unavailable:
            return found
        found.sha256 = model_sha256(found.file)
        twin, failure = _twin_path(found.sha256), _twin_path(found.sha256).with_suffix(".failed")
        if failure.is_file():
            found.failed = _remembered(failure)
        elif twin.is_file():
            found.twin = _verified(twin, found)
        return found


def _twin_path(sha256: str) -> Path:
    return twin_folder() / f"{sha256}-cnnlab-{__version__}.onnx"


def _remembered(failure: Path) -> str:
    try:
        reason = json.loads(failure.read_text(encoding="utf-8")).get("reason", "")
    except (OSError, ValueError, AttributeError):
        reason = "unreadable record"
    return f"its ONNX twin failed when it was made ({reason}); delete {failure} to try again"


def _verified(twin: Path, found: _Lookup) -> OnnxClassifier | None:
    """The cached twin, when it loads and records the model file it was made from; else None, and a note.

    A twin that fails is left for `_make_twin` to replace (atomically) with one made from the model file.
    """
    from cnnlab.export.runtime import OnnxClassifier

    try:
        classifier = OnnxClassifier(twin)
        meta = classifier.session.get_modelmeta().custom_metadata_map.get(TWIN_METADATA_KEY)
        recorded = json.loads(meta) if meta else {}
        problem = None if isinstance(recorded, dict) and recorded.get("source_sha256") == found.sha256 else (
            f"it records model sha256 {str(recorded.get('source_sha256'))[:12] if isinstance(recorded, dict) else '?'}"
            f"..., not this file's {found.sha256[:12]}...")
    except (CnnlabError, ValueError) as exc:
        problem = first_line(exc, 200)
    if problem is None:
        return classifier
    found.notes.append(f"the cached ONNX twin {twin} does not belong to {found.file} ({problem}); made anew")
    return None


def _make_twin(found: _Lookup, model: Any, card: ModelCard, source: Path, probe: Any) -> OnnxClassifier:
    """Export, check and cache the twin of `found.file`; a failed export or check is remembered, and raised."""
    from cnnlab.export.data import random_pixels, real_images, sample_images
    from cnnlab.export.graph import import_onnx
    from cnnlab.export.pipeline import PARITY_IMAGES, export_model
    from cnnlab.export.runtime import OnnxClassifier

    import torch

    import_onnx()  # not installed: a CnnlabError, not remembered (installing it mends it)
    parity: torch.Tensor | None = None
    if probe is not None:  # as many as `cnnlab export` checks, drawn as it draws them
        parity, parity_source = sample_images(torch.as_tensor(probe), PARITY_IMAGES), "images evaluated"
    else:  # the run's own test images, as `cnnlab export` checks an export; random ones outside a run
        data = real_images(source, card, None, 0, None, None, PARITY_IMAGES, 0)
        parity, parity_source = data.parity, data.parity_source
    if parity is None or len(parity) == 0:
        parity, parity_source = random_pixels(card.input_shape, PARITY_IMAGES), "random uint8 images"
    target = _twin_path(found.sha256)
    record = {"source_sha256": found.sha256, "source": str(found.file), "cnnlab": __version__,
              "checked_on": f"{len(parity)} {parity_source}"}
    try:
        export_model(model, card, target, parity=parity, parity_source=parity_source, force=True,
                     metadata={TWIN_METADATA_KEY: json.dumps(record)})
    except CnnlabError as exc:
        _remember(target.with_suffix(".failed"), {**record, "reason": first_line(exc, 300)})
        raise
    return OnnxClassifier(target)


def _remember(failure: Path, record: dict[str, Any]) -> None:
    try:
        atomic_write(failure, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8"))
    except OSError:  # cannot write: the next call tries (and fails) again, nothing worse
        pass
