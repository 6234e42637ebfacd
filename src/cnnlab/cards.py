"""Model cards: what a model file says about its model, parsed from JSON with every field checked.

A card arrives from a file a stranger may have edited (a model file's header, its .json copy, an
ONNX export's metadata), so it is read with bounds before anything trusts it: at most
MAX_CARD_BYTES of JSON, nested at most MAX_CARD_DEPTH levels, and an input shape of at most
MAX_INPUT_SIDE pixels a side. Whether the card agrees with the network it describes (channels,
class count, outputs) is checked where the network is built, in `cnnlab.models.files`.

Standard library only, outside `cnnlab.models` (whose package imports torch): an ONNX file's card
is read here by `cnnlab predict`'s torch-free path. `cnnlab.models.cards` is the same module's old name.

>>> card = parse_card('{"architecture": {"name": "seed-mnist"}, "class_names": ["a", "b"], '
...                   '"input_shape": [28, 28, 1]}', "m.json", "re-save it")
>>> card.input_shape, card.weights_sha256
([28, 28, 1], '')
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from cnnlab.errors import CnnlabError, one_line
from cnnlab.versions import versions

__all__ = ["ModelCard", "parse_card", "card_problem", "tta_problem", "FORMAT", "PREPROCESSING",
           "MAX_CARD_BYTES", "MAX_CARD_DEPTH", "MAX_INPUT_SIDE"]

FORMAT = "cnnlab-model/1"
# What cnnlab does to pixels before the network, always (cnnlab.data.float_images): the card records it
# so that other programs can feed the model; it is not a setting, and a card saying otherwise is refused.
PREPROCESSING: dict[str, Any] = {"scale": 1 / 255, "channels_first": True}
# The largest card cnnlab writes is a Keras EfficientNetB0 graph's, 112 kB (measured); 8 MiB leaves room
# for graphs 70 times larger and refuses a hostile multi-gigabyte .json before it is read.
MAX_CARD_BYTES = 8 * 1024**2
# cnnlab's cards nest 8 levels deep (a Keras graph's inbound nodes, measured); Python's JSON parser and the
# layer rebuilders recurse once per level, and thousands of levels end in a RecursionError traceback.
MAX_CARD_DEPTH = 32
# Pixels per side of input_shape: every image is resized to it before predicting, so a card saying
# [1000000, 1000000, 1] made `predict` allocate 13 GB. 8192 is 36 times ImageNet's 224 a side; what a
# network can afford at its input size is checked against the network itself (files.ACTIVATION_LIMIT_BYTES).
MAX_INPUT_SIDE = 8192
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class ModelCard:
    """What a model file says about its model."""

    architecture: dict[str, Any]       # {"name": registry name} or {"name": "sequential", "config": {...}}
    class_names: list[str]
    input_shape: list[int]             # [H, W, C]
    outputs: str = "logits"            # or "probabilities" (the model ends in a softmax)
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(PREPROCESSING))
    metrics: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=versions)
    format: str = FORMAT
    # {"level": 1 or 2, "flip": bool}: the test-time augmentation the model's own test accuracy was measured
    # with (speed-run models), which `cnnlab evaluate` applies too; {} for none
    test_time_augmentation: dict[str, Any] = field(default_factory=dict)
    # what Keras's model.compile was given ({"loss": ..., "optimizer": ..., "metrics": [...]}), so that
    # keras.models.load_model returns a model ready to fit again; {} for models trained otherwise
    training_config: dict[str, Any] = field(default_factory=dict)
    # sha256 of the weights (files.weights_sha256), checked on load: a flipped byte fails in one line.
    # "" in files written before cnnlab recorded it; those load unchecked.
    weights_sha256: str = ""
    # how the model's own test metrics were computed ({"precision": "bf16", "device": "cpu", ...}), so that
    # `cnnlab evaluate` scores the same way (training/scoring.py); {} in files from before: fp32
    scoring: dict[str, Any] = field(default_factory=dict)


_OPTIONAL = ("outputs", "preprocessing", "metrics", "versions", "format", "test_time_augmentation",
             "training_config", "weights_sha256", "scoring")


def parse_card(text: str, where: str, fix: str) -> ModelCard:
    """A model card from its JSON text (a model file's header, or an ONNX export's metadata), with its
    size, nesting and fields checked; anything damaged, missing or out of bounds fails in one line naming
    `where` and saying `fix`.

    >>> parse_card('{"architecture": {"name": "seed-mnist"}, "class_names": ["a"], "input_shape": [28, 28, 1]}',
    ...            "m.json", "re-save it").class_names
    ['a']
    >>> parse_card("[" * 100000, "m.json", "re-save it")
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: m.json: the model description is nested more than 32 levels deep; re-save it
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CARD_BYTES:
        raise CnnlabError(f"{where}: the model description is {size:,} bytes, more than the {MAX_CARD_BYTES:,} "
                          f"a model file may hold; {fix}")
    deep = f"{where}: the model description is nested more than {MAX_CARD_DEPTH} levels deep; {fix}"
    try:
        data = json.loads(text)
    except RecursionError:
        raise CnnlabError(deep) from None
    except ValueError as exc:  # bad JSON, or an integer of more than 4,300 digits
        raise CnnlabError(f"{where}: the model description is not valid JSON ({one_line(exc, 120)}); {fix}") from None
    if _depth(data) > MAX_CARD_DEPTH:
        raise CnnlabError(deep)
    if not isinstance(data, dict):
        raise CnnlabError(f"{where}: the model description must be a JSON object, got {type(data).__name__}; {fix}")
    try:
        card = ModelCard(**{k: data[k] for k in ("architecture", "class_names", "input_shape")},
                         **{k: data[k] for k in _OPTIONAL if k in data})
    except KeyError as exc:
        raise CnnlabError(f"{where}: the model description is damaged or incomplete ({exc!r}); {fix}") from None
    problem = card_problem(card)
    if problem:
        raise CnnlabError(f"{where}: the model description is damaged ({problem}); {fix}")
    return card


def _depth(data: Any) -> int:
    """How deeply lists and objects nest in parsed JSON (a scalar is 0), without recursing.

    >>> _depth({"a": [1, {"b": []}]}), _depth(3)
    (4, 0)
    """
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def card_problem(card: ModelCard) -> str:
    """What is wrong with a card's fields on their own ("" when nothing): it may have been edited.

    >>> card_problem(ModelCard({"name": "seed-mnist"}, ["a", "a"], [28, 28, 1]))
    "class_names must be unique, got 'a' twice"
    """
    if not isinstance(card.architecture, dict) or not isinstance(card.architecture.get("name"), str):
        return f"architecture must be an object with a 'name', got {card.architecture!r:.80}"
    if not (isinstance(card.class_names, list) and card.class_names
            and all(isinstance(c, str) for c in card.class_names)):
        return f"class_names must be a non-empty list of strings, got {card.class_names!r:.80}"
    if len(set(card.class_names)) != len(card.class_names):  # a prediction would name two classes alike
        twice = next(c for i, c in enumerate(card.class_names) if c in card.class_names[:i])
        return f"class_names must be unique, got {twice!r:.80} twice"
    shape = card.input_shape
    if not (isinstance(shape, list) and len(shape) == 3 and all(_positive_int(v) for v in shape)):
        return f"input_shape must be [height, width, channels], three positive integers, got {shape!r:.80}"
    if max(shape[:2]) > MAX_INPUT_SIDE:
        return (f"input_shape {shape!r:.80} is larger than any model cnnlab reads "
                f"(at most {MAX_INPUT_SIDE} pixels a side)")
    if card.outputs not in ("logits", "probabilities"):
        return f"outputs must be 'logits' or 'probabilities', got {card.outputs!r:.80}"
    if not all(isinstance(v, dict) for v in (card.preprocessing, card.metrics, card.training_config, card.versions)):
        return "preprocessing, metrics, versions and training_config must be objects"
    return _record_problem(card) or tta_problem(card.test_time_augmentation) or scoring_problem(card.scoring)


def scoring_problem(scoring: object) -> str:
    """What is wrong with a card's scoring record ("" when nothing).

    >>> scoring_problem({"precision": "bf16"}), scoring_problem({"precision": "int3"})[:30]
    ('', 'scoring must be {} or an objec')
    """
    if not isinstance(scoring, dict) or scoring.get("precision", "fp32") not in ("fp32", "bf16", "fp16"):
        return f"scoring must be {{}} or an object with \"precision\": fp32, bf16 or fp16, got {scoring!r:.80}"
    return ""


def _record_problem(card: ModelCard) -> str:
    """What is wrong with the fields that record facts rather than describe the network ("" when nothing)."""
    if card.format != FORMAT:
        return f"format must be {FORMAT!r} (this cnnlab's), got {card.format!r:.80}; a newer cnnlab may read it"
    prep = card.preprocessing
    if set(prep) != set(PREPROCESSING) or prep["channels_first"] is not True or not (
            _number(prep["scale"]) and math.isclose(prep["scale"], PREPROCESSING["scale"])):
        return (f"preprocessing must be {PREPROCESSING}, what cnnlab always applies (the field records it; "
                f"editing it changes nothing), got {prep!r:.80}")
    bad = next((k for k, v in card.metrics.items() if not _number(v)), None)
    if bad is not None:
        return f"metrics must be numbers, got {bad}={card.metrics[bad]!r:.40}"
    if not all(isinstance(v, str) for v in card.versions.values()):
        return "versions must be strings"
    digest = card.weights_sha256
    if digest != "" and not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
        return f"weights_sha256 must be 64 lowercase hex digits, got {card.weights_sha256!r:.80}"
    return ""


def tta_problem(tta: object) -> str:
    """What is wrong with a card's test_time_augmentation ("" when nothing).

    >>> tta_problem({"level": 1, "flip": True}), tta_problem({"level": 7})[:40]
    ('', 'test_time_augmentation must be {} or {"l')
    """
    if tta == {}:
        return ""
    if not (isinstance(tta, dict) and set(tta) == {"level", "flip"} and tta["level"] in (1, 2)
            and not isinstance(tta["level"], bool) and isinstance(tta["flip"], bool)):
        return f"test_time_augmentation must be {{}} or {{\"level\": 1 or 2, \"flip\": true/false}}, got {tta!r:.80}"
    return ""
