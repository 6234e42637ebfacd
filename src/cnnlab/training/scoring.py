"""Scoring a trained model at training speed, the same way at the end of a run and in `cnnlab evaluate`.

`score` runs in the precision and memory layout the run trained with (bf16 autocast and
channels_last on a CPU with native bf16), with each BatchNorm folded into its convolution
(models/folding.py), and, where the model starts with frozen layers, reads their output from the
feature store the training filled (training/features.py): scoring a frozen-backbone model on
images it has seen costs its head alone. A run records how it scored (`scoring_record`) in its
model card, and `cnnlab evaluate` scores the same way by default, so the test number at the end of
a run and `cnnlab evaluate RUN` are the same number; `--precision fp32` is one flag away.

Measured (2-core AMD EPYC with AVX512-BF16, 2026-12-07): EfficientNet-Lite0 at 224 px, 64 images:
fp32 unfolded 1.35-1.66 s, fp32 folded 0.93-1.14 s, bf16 unfolded 0.72-0.81 s, bf16 folded 0.46-0.57 s.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnlab.data import ImageDataset as Dataset
from cnnlab.data import float_images
from cnnlab.models.zoo import output_kind
from cnnlab.models.folding import fold_batchnorm
from cnnlab.training.devices import Runtime, resolve_precision
from cnnlab.training.features import FeatureSettings, FrozenSplit, Shortfall, Store, first_images, frozen_split
from cnnlab.training.loop import Scores, evaluate
from cnnlab.training.objectives import Objective, probabilities

__all__ = ["score", "score_probabilities", "Scorer", "scoring_record", "SCORE_BATCH", "recorded_precision"]

SCORE_BATCH = 64  # images per forward pass when scoring: cache-sized (Lite0 at 224 px ran 141 img/s at 32, 109 at 128)


def scoring_record(runtime: Runtime) -> dict[str, Any]:
    """How a run scores its test split, for its model card (`ModelCard.scoring`) and metrics.json.

    >>> scoring_record(Runtime(torch.device("cpu"), "bf16", False))["precision"]
    'bf16'
    """
    return {"precision": runtime.precision, "device": runtime.device.type, "channels_last": runtime.channels_last,
            "batchnorm_folded": True}


def recorded_precision(scoring: dict[str, Any], device: torch.device, asked: str = "auto") -> tuple[str, str]:
    """(precision, why): `asked` unless "auto"; then the one the card's `scoring` records where this device
    computes it, else fp32.

    >>> recorded_precision({}, torch.device("cpu"))
    ('fp32', 'the model file records no scoring precision')
    """
    if asked != "auto":
        return resolve_precision(asked, device), f"--precision {asked}"
    wanted = scoring.get("precision")
    if wanted not in ("bf16", "fp16"):
        return "fp32", ("the run scored its test split in fp32" if wanted == "fp32"
                        else "the model file records no scoring precision")
    if resolve_precision("auto", device) != wanted:
        return "fp32", (f"the run scored its test split in {wanted}, which this {device.type} does not compute "
                        f"natively: results may differ from the run's in the 3rd-4th digit")
    return str(wanted), f"the run scored its test split in {wanted} (--precision fp32 for fp32)"


def score(model: nn.Module, data: Dataset, runtime: Runtime, features: FeatureSettings | None = None,
          objective: Objective | None = None, workers: int = 0) -> tuple[Scores, bool]:
    """(loss and accuracy of `model` on `data`, whether stored frozen features were used).

    In `runtime`'s precision and layout with BatchNorm folded; through the feature store of `features`
    (its folder; mode "off" skips it) when the model's first layers are frozen.

    >>> from cnnlab.data import load_dataset; from cnnlab.models.zoo import build_model
    >>> scores, used = score(build_model("seed-mnist"), load_dataset("digits").subset(range(64)),
    ...                      Runtime(torch.device("cpu"), "fp32", False))
    >>> 0 <= scores.accuracy <= 1, used
    (True, False)
    """
    runtime = Runtime(runtime.device, runtime.precision, compile=False, threads=runtime.threads)
    model = runtime.prepare(model)
    objective = (objective or Objective()).resolve(model)  # the whole model's output kind, not the head's
    probe = first_images(data, runtime)
    split = frozen_split(model, probe) if probe is not None and features is not None and features.mode == "auto" \
        else None
    if isinstance(split, FrozenSplit) and features is not None:
        store = Store(features.folder, split, runtime, getattr(data, "normalize", None))
        if store.fits(len(data)):
            try:
                stored, _ = store.features(data, workers, features.say or (lambda line: None))
                return evaluate(split.head, stored, SCORE_BATCH, runtime=runtime, objective=objective), True
            except Shortfall:  # a streamed file stopped decoding: score the images one forward each instead
                pass
    folded = fold_batchnorm(model, probe)
    return evaluate(folded, data, SCORE_BATCH, runtime=runtime, objective=objective), False


class Scorer:
    """A model ready to score as `score` does: in `runtime`'s precision and layout, BatchNorm folded (checked
    on the first images it is given), SCORE_BATCH images a pass; prepared once, for many calls (a server).

    >>> from cnnlab.models.zoo import build_model
    >>> Scorer(build_model("seed-mnist"), Runtime(torch.device("cpu"), "fp32", False)).probabilities(
    ...     torch.zeros(3, 1, 28, 28, dtype=torch.uint8)).shape
    torch.Size([3, 10])
    """

    def __init__(self, model: nn.Module, runtime: Runtime) -> None:
        self.runtime = Runtime(runtime.device, runtime.precision, compile=False, threads=runtime.threads)
        self.model = self.runtime.prepare(model)
        self.kind = output_kind(model)
        self.folded: nn.Module | None = None

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, classes) on the CPU for uint8 or float (N, C, H, W) images."""
        runtime = self.runtime
        if self.folded is None:
            self.folded = fold_batchnorm(self.model, float_images(runtime.images(images[:4])) if len(images) else None)
        outs = []
        for start in range(0, len(images), SCORE_BATCH):
            with runtime.autocast():
                out = self.folded(float_images(runtime.images(images[start:start + SCORE_BATCH])))
            p = probabilities(out.float(), self.kind)
            if self.kind == "probabilities" and runtime.precision != "fp32":  # a softmax layer's bf16 output:
                p = p / p.sum(1, keepdim=True)  # rows that sum to 1 again (bf16 keeps 3 digits of each)
            outs.append(p.cpu())
        return torch.cat(outs) if outs else torch.empty(0)


def score_probabilities(model: nn.Module, images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Class probabilities (N, classes) on the CPU for uint8 (N, C, H, W) images, computed as `score` computes
    (see `Scorer`): a report's numbers are then the run's own."""
    return Scorer(model, runtime).probabilities(images)
