"""Self-describing model files: safetensors weights plus a JSON description. Never a pickle.

`save_model` writes `NAME.safetensors` (the weights, with the description also embedded in the
safetensors header) and `NAME.json` (a copy of the description, for people and scripts: editing it
changes nothing, and it says so). The description (`cnnlab.models.cards.ModelCard`) holds
everything predicting needs: the architecture and its arguments, class names, input shape,
preprocessing, whether outputs are logits or probabilities, metrics, versions and the sha256 of the
weights. Loading reads only tensors and JSON, so a model file from a stranger cannot run code, and
it trusts nothing the file says until checked: the card's fields and bounds first, then the card
against the network it describes, rebuilt on PyTorch's meta device (shapes without memory), then
the weights against their sha256. A tampered file costs milliseconds and one line, never gigabytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from cnnlab.catalog import resolve_model_path  # torch-free, so the CLI checks a model argument before torch loads
from cnnlab.errors import CnnlabError, first_line, one_line
from cnnlab.fileio import atomic_write
from cnnlab.models import (  # noqa: F401  (their layer types load)
    conv_layers, merge_layers, normalization, preprocessing_layers,
)
from cnnlab.models.cards import MAX_CARD_BYTES, ModelCard, card_problem, parse_card, tta_problem
from cnnlab.models.graph import Functional
from cnnlab.models.sequential import Sequential
from cnnlab.models.transfer import TransferModel
from cnnlab.models.zoo import MODELS, build_model, output_kind
from cnnlab.versions import versions

__all__ = ["build_from_file", "parse_card", "ModelCard", "save_model", "load_model", "read_card", "resolve_model_path",
           "weights_sha256", "ACTIVATION_LIMIT_BYTES"]

METADATA_KEY = "cnnlab"
# The largest layer output one image may need at the card's input_shape. ImageNet models at 224x224 need
# 13 MB (VGG16's first block) and VGG16 at 1024x1024 256 MiB; 1 GiB refuses a card that would make a
# single prediction exhaust a machine, and is checked on the meta device before any weight is read.
ACTIVATION_LIMIT_BYTES = 1024**3
COPY_NOTE_KEY = "about_this_file"  # only in NAME.json: tells its readers that it is a copy


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


def weights_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors in name order: each one's name, dtype, shape and raw bytes (any dtype).

    >>> weights_sha256({"w": torch.zeros(2)}) == weights_sha256({"w": torch.zeros(2)}) != weights_sha256(
    ...     {"w": torch.tensor([0.0, 1e-30])})
    True
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)  # the stored bytes, bf16 included
    return digest.hexdigest()


def save_model(model: nn.Module, path: str | Path, class_names: list[str], input_shape: list[int] | tuple[int, ...],
               metrics: dict[str, float] | None = None, test_time_augmentation: dict[str, Any] | None = None,
               training_config: dict[str, Any] | None = None, keep_suffix: bool = False,
               scoring: dict[str, Any] | None = None) -> Path:
    """Write `path` (.safetensors) and its .json description; return the model file's path.

    `keep_suffix` keeps the file name as given (Keras's `model.save("m.keras")`): the file is a
    safetensors file all the same, and the description goes beside it as `m.json`. Both files get
    the permissions any new file gets (0644 under the usual umask 022), so a server running as
    another user can read them.

    >>> import tempfile; from cnnlab.models.zoo import build_model
    >>> p = save_model(build_model("seed-mnist"), Path(tempfile.mkdtemp()) / "m.safetensors",
    ...                [str(i) for i in range(10)], (28, 28, 1))
    >>> load_model(p)[1].class_names[:3]
    ['0', '1', '2']
    """
    path = Path(path) if keep_suffix and Path(path).suffix != ".json" else Path(path).with_suffix(".safetensors")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    card = ModelCard(_architecture(model), list(class_names), list(input_shape), output_kind(model),
                     metrics=dict(metrics or {}), test_time_augmentation=dict(test_time_augmentation or {}),
                     training_config=dict(training_config or {}), weights_sha256=weights_sha256(tensors),
                     scoring=dict(scoring or {}))
    problem = (tta_problem(card.test_time_augmentation) or card_problem(card) or _mismatch(model, card)
               or _architecture_problem(path, card, {k: list(v.shape) for k, v in tensors.items()}))
    if problem:  # refused now, rather than written and then refused by load_model as "altered"
        raise CnnlabError(f"save_model: {problem}")
    text = json.dumps(asdict(card), indent=2)
    note = (f"A copy of the description stored inside {path.name}, for people and scripts. cnnlab reads the one "
            f"inside {path.name}, so editing this copy changes nothing.")
    copy = json.dumps({COPY_NOTE_KEY: note, **asdict(card)}, indent=2)

    def weights(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: text})

    def description(tmp: Path) -> None:
        tmp.write_text(copy + "\n")

    atomic_write(path, weights)
    atomic_write(path.with_suffix(".json"), description)
    return path


def read_card(path: Path) -> ModelCard:
    """The description of a .safetensors model file (header metadata, else the .json beside it), checked."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CnnlabError(f"{path} is not a safetensors model file ({exc}); cnnlab never loads pickles: "
                          f"re-save the model with cnnlab") from None
    text, where, copy = meta.get(METADATA_KEY), str(path), path.with_suffix(".json")
    if text is None and copy.is_file():
        text, where = _read_copy(path, copy), f"{path} (its description in {copy.name})"
    if text is None:
        raise CnnlabError(f"{path} has no cnnlab description (no '{METADATA_KEY}' metadata and no "
                          f"{copy.name} beside it); it was not written by cnnlab")
    return parse_card(text, where, "re-save the model with cnnlab")


def _read_copy(path: Path, copy: Path) -> str:
    """The text of NAME.json, read only when the model file has no description of its own: bounded, UTF-8."""
    try:
        size = copy.stat().st_size
        if size > MAX_CARD_BYTES:
            raise CnnlabError(f"{path}: its description {copy.name} is {size:,} bytes, more than the "
                              f"{MAX_CARD_BYTES:,} a model description may hold; re-save the model with cnnlab")
        return copy.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{path}: its description {copy} cannot be read ({one_line(exc, 120)}); "
                          f"re-save the model with cnnlab") from None


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


def _scores_as_named(outputs: int, names: int) -> bool:
    return outputs == names or (outputs, names) == (1, 2)  # one sigmoid output scores two classes


def _mismatch(model: nn.Module, card: ModelCard) -> str:
    """What in the arguments of save_model contradicts the model ("" when nothing): class names, input shape."""
    outputs = _output_count(model)
    if outputs is not None and not _scores_as_named(outputs, len(card.class_names)):
        return (f"the model scores {outputs} classes but {len(card.class_names)} class names were given; "
                f"give one name per output")
    built = getattr(model, "image_shape", None)
    if isinstance(built, tuple) and len(built) == 3 and list(built) != list(card.input_shape):
        return f"the model takes input shape {list(built)} (H, W, C) but input_shape {card.input_shape} was given"
    return ""


def _build(path: Path, card: ModelCard) -> nn.Module:
    """The network the card describes, with fresh weights (on the meta device inside `torch.device("meta")`)."""
    arch = card.architecture
    if arch.get("name") == "transfer" and "transfer" in arch:
        return TransferModel.from_config(arch["transfer"])
    if "config" in arch and arch.get("name") == "functional":
        return Functional.from_config(arch["config"])
    if "config" in arch:
        return Sequential.from_config(arch["config"])
    if arch.get("name") in MODELS:
        return build_model(arch["name"], tuple(card.input_shape), len(card.class_names),
                           **dict(arch.get("options") or {}))
    raise CnnlabError(f"{path}: unknown architecture {arch.get('name')!r}; this cnnlab "
                      f"({versions()['cnnlab']}) cannot build it. Upgrade cnnlab or re-export the model")


def _architecture_problem(path: Path, card: ModelCard, stored: Mapping[str, list[int]]) -> str:
    """What in the card contradicts the network it describes, or the weights `stored` (name -> shape), or
    exceeds ACTIVATION_LIMIT_BYTES ("" when nothing). The network is rebuilt on the meta device, where
    tensors have shapes but no memory; a card and shapes found sound once are not checked again in this
    process (rebuilding EfficientNet-Lite0 took 0.4 s, and a run saves its best model at every better epoch)."""
    description = {**asdict(card), "metrics": {}, "training_config": {}, "weights_sha256": "", "scoring": {}}
    key = hashlib.sha256(json.dumps([description, sorted(stored.items())], sort_keys=True).encode()).hexdigest()
    if key in _SOUND_CARDS:
        return ""
    problem = _check_architecture(path, card, stored)
    if not problem:
        if len(_SOUND_CARDS) >= 256:
            _SOUND_CARDS.clear()
        _SOUND_CARDS.add(key)
    return problem


_SOUND_CARDS: set[str] = set()  # sha256 of (card without weights-specific fields, tensor shapes) checked sound


def _check_architecture(path: Path, card: ModelCard, stored: Mapping[str, list[int]]) -> str:
    try:
        with torch.device("meta"):
            skeleton = _build(path, card)
    except CnnlabError as exc:  # an unknown architecture or layer type, an input too small for the model
        raise (exc if str(path) in str(exc) else CnnlabError(f"{path}: {exc}")) from None
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        return f"the described architecture cannot be built ({one_line(exc, 200)})"
    return _contradiction(skeleton, card) or _weights_problem(skeleton, stored) or _forward_problem(skeleton, card)


def _contradiction(model: nn.Module, card: ModelCard) -> str:
    """What in the card contradicts the rebuilt model's own input shape, class count or outputs."""
    built = getattr(model, "image_shape", None)
    if isinstance(built, tuple) and len(built) == 3 and built[2] != card.input_shape[2]:
        return (f"the architecture takes {built[2]}-channel images but the description says input_shape "
                f"{card.input_shape}")
    if isinstance(built, tuple) and len(built) == 3 and list(built[:2]) != card.input_shape[:2]:
        return (f"the architecture takes {built[0]}x{built[1]} images but the description says input_shape "
                f"{card.input_shape}")
    outputs = _output_count(model)
    if outputs is not None and not _scores_as_named(outputs, len(card.class_names)):
        return (f"the model scores {outputs} classes but its description names {len(card.class_names)} "
                f"({', '.join(card.class_names[:5])}...)")
    if output_kind(model) != card.outputs:
        return f"the architecture outputs {output_kind(model)} but the description says outputs {card.outputs!r}"
    return ""


def _weights_problem(model: nn.Module, stored: Mapping[str, list[int]]) -> str:
    """How the file's tensors (name -> shape) differ from the rebuilt model's ("" when they match)."""
    wanted = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
    if missing or unexpected:
        detail = "; ".join(f"{what}: {', '.join(names[:3])}{'...' if len(names) > 3 else ''}"
                           for what, names in (("missing", missing), ("unexpected", unexpected)) if names)
    else:
        name = next((k for k in wanted if wanted[k] != list(stored[k])), None)
        if name is None:
            return ""
        detail = f"{name} is {list(stored[name])} in the file, {wanted[name]} in the architecture"
    return f"the weights do not match the described architecture ({detail})"


def _forward_problem(model: nn.Module, card: ModelCard) -> str:
    """Run the meta-device model on one image of the card's input_shape: it must take it, fit
    ACTIVATION_LIMIT_BYTES at every layer, and score one column per class name."""
    h, w, c = card.input_shape
    largest = [c * h * w * 4]  # the float input itself

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        parts = output if isinstance(output, (list, tuple)) else [output]
        largest.extend(t.numel() * t.element_size() for t in parts if isinstance(t, torch.Tensor))

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, c, h, w, device="meta"))
    except NotImplementedError:  # an operation without a meta kernel: the real weights' checks still apply
        return ""
    except (RuntimeError, ValueError, TypeError, IndexError, CnnlabError) as exc:
        return f"the architecture cannot take input_shape {card.input_shape} images ({first_line(exc, 200)})"
    finally:
        for hook in hooks:
            hook.remove()
    if max(largest) > ACTIVATION_LIMIT_BYTES:
        return (f"at input_shape {card.input_shape} one image needs a {max(largest) / 1024**3:.1f} GiB layer output, "
                f"more than the {ACTIVATION_LIMIT_BYTES / 1024**3:g} GiB cnnlab allows")
    if isinstance(out, torch.Tensor) and out.dim() == 2 and not _scores_as_named(out.shape[1], len(card.class_names)):
        return (f"the model scores {out.shape[1]} classes but its description names {len(card.class_names)} "
                f"({', '.join(card.class_names[:5])}...)")
    return ""


def build_from_file(source: str | Path) -> tuple[nn.Module, ModelCard]:
    """The architecture a model file (or run) describes, with fresh weights, and its card.

    The file is checked as `load_model` checks it; its weights are not used: a network written in
    Python and saved (trained or not) trains from scratch under `cnnlab train --model FILE`.

    >>> import tempfile; from cnnlab.models.zoo import build_model
    >>> p = save_model(build_model("seed-mnist"), Path(tempfile.mkdtemp()) / "m.safetensors",
    ...                [str(i) for i in range(10)], (28, 28, 1))
    >>> type(build_from_file(p)[0]).__name__
    'Sequential'
    """
    path = resolve_model_path(source)
    _, card = load_model(path)
    model = _build(path, card)
    if card.architecture.get("name") not in ("sequential", "transfer", "functional"):
        model.cnnlab_name = card.architecture["name"]  # type: ignore[assignment]
    return model.train(), card


def load_model(source: str | Path) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model from its description and load its weights; returns (model in eval mode, card).

    The card is checked against the network (on the meta device) before any weight is read, and the
    weights against the card's sha256 (files written before cnnlab recorded one load unchecked).
    """
    path = resolve_model_path(source)
    card = read_card(path)
    altered = "the file was altered or written by another program: re-save the model with cnnlab"
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        problem = _architecture_problem(path, card, stored)
        if problem:
            raise CnnlabError(f"{path}: {problem}; {altered}")
        model = _build(path, card)
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if card.weights_sha256 and weights_sha256(tensors) != card.weights_sha256:
            raise CnnlabError(f"{path}: the weights' sha256 differs from the one their description records "
                              f"({card.weights_sha256[:12]}...): the file was damaged or altered after it was "
                              f"written; copy it again or re-save the model with cnnlab")
        model.load_state_dict(tensors, strict=True)
    except CnnlabError as exc:  # e.g. an unknown layer type in the stored architecture
        raise (exc if str(path) in str(exc) else CnnlabError(f"{path}: {exc}")) from None
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, SafetensorError, OSError) as exc:
        raise CnnlabError(f"{path}: the weights do not match the described architecture ({one_line(exc)}); "
                          f"{altered}") from None
    if card.architecture.get("name") not in ("sequential", "transfer", "functional"):
        model.cnnlab_name = card.architecture["name"]  # type: ignore[assignment]
    return model.eval(), card
