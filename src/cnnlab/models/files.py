"""Self-describing model files: safetensors weights plus a JSON description. Never a pickle.

`save_model` writes `NAME.safetensors` (the weights, with the description also embedded in the
safetensors header) and `NAME.json` (the same description, for people and scripts). The
description holds everything predicting needs: the architecture and its arguments, class names,
input shape, preprocessing, whether outputs are logits or probabilities, metrics and versions.
Loading reads only tensors and JSON, so a model file from a stranger cannot run code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from cnnlab.errors import CnnlabError, one_line
from cnnlab.fileio import atomic_write
from cnnlab.models import (  # noqa: F401  (their layer types load)
    conv_layers, merge_layers, normalization, preprocessing_layers,
)
from cnnlab.models.graph import Functional
from cnnlab.models.sequential import Sequential
from cnnlab.models.transfer import TransferModel
from cnnlab.models.zoo import MODELS, build_model, output_kind
from cnnlab.versions import versions

__all__ = ["parse_card", "ModelCard", "save_model", "load_model", "read_card", "resolve_model_path"]

FORMAT = "cnnlab-model/1"
METADATA_KEY = "cnnlab"


@dataclass
class ModelCard:
    """What a model file says about its model."""

    architecture: dict[str, Any]       # {"name": registry name} or {"name": "sequential", "config": {...}}
    class_names: list[str]
    input_shape: list[int]             # [H, W, C]
    outputs: str = "logits"            # or "probabilities" (the model ends in a softmax)
    preprocessing: dict[str, Any] = field(default_factory=lambda: {"scale": 1 / 255, "channels_first": True})
    metrics: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=versions)
    format: str = FORMAT
    # {"level": 1 or 2, "flip": bool}: the test-time augmentation the model's own test accuracy was measured
    # with (speed-run models), which `cnnlab evaluate` applies too; {} for none
    test_time_augmentation: dict[str, Any] = field(default_factory=dict)
    # what Keras's model.compile was given ({"loss": ..., "optimizer": ..., "metrics": [...]}), so that
    # keras.models.load_model returns a model ready to fit again; {} for models trained otherwise
    training_config: dict[str, Any] = field(default_factory=dict)


def _architecture(model: nn.Module) -> dict[str, Any]:
    if isinstance(model, TransferModel):
        return {"name": "transfer", "transfer": model.get_config()}
    if isinstance(model, Sequential):
        return {"name": getattr(model, "cnnlab_name", "sequential"), "config": model.get_config()}
    if isinstance(model, Functional):
        return {"name": "functional", "config": model.get_config()}
    name = getattr(model, "cnnlab_name", None)
    if name is None:
        raise CnnlabError(f"cannot save a {type(model).__name__}: only cnnlab Sequential models and models from "
                          f"build_model() can be described in a model file")
    options = getattr(model, "build_options", None)  # e.g. a SpeedrunNet's widths
    return {"name": name, "options": dict(options)} if options else {"name": name}


def save_model(model: nn.Module, path: str | Path, class_names: list[str], input_shape: list[int] | tuple[int, ...],
               metrics: dict[str, float] | None = None, test_time_augmentation: dict[str, Any] | None = None,
               training_config: dict[str, Any] | None = None, keep_suffix: bool = False) -> Path:
    """Write `path` (.safetensors) and its .json description; return the model file's path.

    `keep_suffix` keeps the file name as given (Keras's `model.save("m.keras")`): the file is a
    safetensors file all the same, and the description goes beside it as `m.json`.

    >>> import tempfile; from cnnlab.models.zoo import build_model
    >>> p = save_model(build_model("seed-mnist"), Path(tempfile.mkdtemp()) / "m.safetensors",
    ...                [str(i) for i in range(10)], (28, 28, 1))
    >>> load_model(p)[1].class_names[:3]
    ['0', '1', '2']
    """
    path = Path(path) if keep_suffix and Path(path).suffix != ".json" else Path(path).with_suffix(".safetensors")
    card = ModelCard(_architecture(model), list(class_names), list(input_shape), output_kind(model),
                     metrics=dict(metrics or {}), test_time_augmentation=dict(test_time_augmentation or {}),
                     training_config=dict(training_config or {}))
    problem = _tta_problem(card.test_time_augmentation) or _card_problem(card) or _mismatch(model, card)
    if problem:  # refused now, rather than written and then refused by load_model as "altered"
        raise CnnlabError(f"save_model: {problem}")
    text = json.dumps(asdict(card), indent=2)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: text}))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text + "\n"))
    return path


def resolve_model_path(source: str | Path) -> Path:
    """A run directory, a .safetensors file or its .json -> the .safetensors path."""
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    elif path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise CnnlabError(f"model not found: {path} does not exist; give a run directory (runs/NAME), "
                          f"a .safetensors model file, or its .json")
    return path


def read_card(path: Path) -> ModelCard:
    """The description of a .safetensors model file (header metadata, else the .json beside it)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CnnlabError(f"{path} is not a safetensors model file ({exc}); cnnlab never loads pickles: "
                          f"re-save the model with cnnlab") from None
    text = meta.get(METADATA_KEY)
    if text is None and path.with_suffix(".json").is_file():
        text = path.with_suffix(".json").read_text()
    if text is None:
        raise CnnlabError(f"{path} has no cnnlab description (no '{METADATA_KEY}' metadata and no "
                          f"{path.with_suffix('.json').name} beside it); it was not written by cnnlab")
    return parse_card(text, str(path), "re-save the model with cnnlab")


def parse_card(text: str, where: str, fix: str) -> ModelCard:
    """A model card from its JSON text (a model file's header, or an ONNX export's metadata), with its
    types checked; anything damaged or missing fails in one line naming `where` and saying `fix`.

    >>> parse_card('{"architecture": {"name": "seed-mnist"}, "class_names": ["a"], "input_shape": [28, 28, 1]}',
    ...            "m.json", "re-save it").class_names
    ['a']
    """
    try:
        data = json.loads(text)
        card = ModelCard(**{k: data[k] for k in ("architecture", "class_names", "input_shape")},
                         **{k: data[k] for k in ("outputs", "preprocessing", "metrics", "versions", "format",
                                                 "test_time_augmentation", "training_config") if k in data})
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CnnlabError(f"{where}: the model description is damaged or incomplete ({exc!r}); {fix}") from None
    problem = _card_problem(card)
    if problem:
        raise CnnlabError(f"{where}: the model description is damaged ({problem}); {fix}")
    return card


def _card_problem(card: ModelCard) -> str:
    """What is wrong with the types of a card read from a file ("" when nothing): it may have been edited."""
    def positive_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if not isinstance(card.architecture, dict) or not isinstance(card.architecture.get("name"), str):
        return f"architecture must be an object with a 'name', got {card.architecture!r:.80}"
    if not (isinstance(card.class_names, list) and card.class_names
            and all(isinstance(c, str) for c in card.class_names)):
        return f"class_names must be a non-empty list of strings, got {card.class_names!r:.80}"
    if not (isinstance(card.input_shape, list) and len(card.input_shape) == 3
            and all(positive_int(v) for v in card.input_shape)):
        return f"input_shape must be [height, width, channels], three positive integers, got {card.input_shape!r:.80}"
    if card.outputs not in ("logits", "probabilities"):
        return f"outputs must be 'logits' or 'probabilities', got {card.outputs!r:.80}"
    if not all(isinstance(v, dict) for v in (card.preprocessing, card.metrics, card.training_config)):
        return "preprocessing, metrics and training_config must be objects"
    return _tta_problem(card.test_time_augmentation)


def _tta_problem(tta: object) -> str:
    """What is wrong with a card's test_time_augmentation ("" when nothing)."""
    if tta == {}:
        return ""
    if not (isinstance(tta, dict) and set(tta) == {"level", "flip"} and tta["level"] in (1, 2)
            and not isinstance(tta["level"], bool) and isinstance(tta["flip"], bool)):
        return f"test_time_augmentation must be {{}} or {{\"level\": 1 or 2, \"flip\": true/false}}, got {tta!r:.80}"
    return ""


def _output_count(model: nn.Module) -> int | None:
    """Classes the rebuilt model scores, where its description fixes that (Sequential, transfer), else None."""
    if isinstance(model, Sequential):
        last = model.layer_output_shapes()[-1]
        return int(last[0]) if len(last) == 1 else None
    if isinstance(model, TransferModel):
        return int(model.get_config()["num_classes"])
    if isinstance(model, Functional):
        shape = model.output_tensors[0].sample_shape
        return int(shape[0]) if len(shape) == 1 else None
    return None  # registry models are built with len(class_names) outputs; the weights' shapes check them


def _mismatch(model: nn.Module, card: ModelCard) -> str:
    """What in the card contradicts the model ("" when nothing): class names per output, input shape."""
    outputs = _output_count(model)
    if outputs is not None and outputs != len(card.class_names) and (outputs, len(card.class_names)) != (1, 2):
        return (f"the model scores {outputs} classes but {len(card.class_names)} class names were given; "
                f"give one name per output")
    built = getattr(model, "image_shape", None)
    if isinstance(built, tuple) and len(built) == 3 and list(built) != list(card.input_shape):
        return f"the model takes input shape {list(built)} (H, W, C) but input_shape {card.input_shape} was given"
    return ""


def load_model(source: str | Path) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model from its description and load its weights; returns (model in eval mode, card)."""
    path = resolve_model_path(source)
    card = read_card(path)
    arch = card.architecture
    try:
        if arch.get("name") == "transfer" and "transfer" in arch:
            model: nn.Module = TransferModel.from_config(arch["transfer"])
        elif "config" in arch and arch.get("name") == "functional":
            model = Functional.from_config(arch["config"])
        elif "config" in arch:
            model = Sequential.from_config(arch["config"])
        elif arch.get("name") in MODELS:
            model = build_model(arch["name"], tuple(card.input_shape), len(card.class_names),
                                **dict(arch.get("options") or {}))
        else:
            raise CnnlabError(f"{path}: unknown architecture {arch.get('name')!r}; this cnnlab "
                              f"({versions()['cnnlab']}) cannot build it. Upgrade cnnlab or re-export the model")
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        model.load_state_dict(tensors, strict=True)
    except CnnlabError as exc:  # e.g. an unknown layer type in the stored architecture
        raise (exc if str(path) in str(exc) else CnnlabError(f"{path}: {exc}")) from None
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, SafetensorError) as exc:
        raise CnnlabError(f"{path}: the weights do not match the described architecture ({one_line(exc)}); "
                          f"the file was altered or written by another program") from None
    built_shape = getattr(model, "image_shape", None)
    if isinstance(built_shape, tuple) and len(built_shape) == 3 and built_shape[2] != card.input_shape[2]:
        raise CnnlabError(f"{path}: the architecture takes {built_shape[2]}-channel images but the description "
                          f"says input_shape {card.input_shape}; the file was altered: re-save the model with cnnlab")
    outputs = _output_count(model)
    if outputs is not None and outputs != len(card.class_names) and (outputs, len(card.class_names)) != (1, 2):
        raise CnnlabError(f"{path}: the model scores {outputs} classes but its description names "
                          f"{len(card.class_names)} ({', '.join(card.class_names[:5])}...); the file was altered: "
                          f"re-save the model with cnnlab")
    if arch.get("name") not in ("sequential", "transfer", "functional"):
        model.cnnlab_name = arch["name"]  # type: ignore[assignment]
    return model.eval(), card

