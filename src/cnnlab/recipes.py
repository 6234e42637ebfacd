"""Training recipes: named bundles of model and training settings (`cnnlab train --recipe NAME`).

- seed: the tutorials' recipe as they write it (batch 32, adam 1e-3, constant rate, 1 epoch),
  so numbers compare with tf.keras one to one.
- fast: cnnlab's fast CPU recipe: a narrower CNN (fast-cnn), batch 64 and a one-cycle schedule.
  On Fashion-MNIST it reaches the seed program's test accuracy in about a fifth of tf.keras's
  time on 2 CPU cores (benchmarks/README.md has the measured table).
- speedrun: the CIFAR-10 speed-run techniques (cnnlab.training.speedrun) for GPUs; runs on CPU too.
- transfer: your own photos on a pretrained backbone, offline: EfficientNet-Lite0's ImageNet weights,
  frozen, a new head trained on the backbone's features computed once per photo (training/features.py),
  up to 30 epochs with early stopping on the validation loss (patience 5, best epoch kept): head epochs
  cost a tenth of a second there, so the head trains to convergence. On Imagenette (2-core CPU,
  2026-12-07) 30 epochs with early stopping scored 98.56% on validation against 98.33% for 10 epochs
  (3 seeds each); fine-tuning the top blocks scored lower there (docs/results.md), so it is left to
  --unfreeze-top or the next recipe. Where every class is an ImageNet class the head starts from
  ImageNet's classifier (--head-init): 99.40% test on Imagenette in 34 s.
- transfer-finetune: the transfer recipe, then the top 3 blocks fine-tuned for 5 epochs at 1e-4 on live
  `standard` augmentation (the head phase trains on the plain images' stored features): for classes
  ImageNet does not name. On a CIFAR-10 proxy (500 photos a class upscaled to 96 px, validation, one seed,
  2026-12-07) the head alone scored 69.2%, this recipe 80.4%; fine-tuning at 1e-5 (the Keras guide's rate,
  cnnlab's --fine-tune-lr default) 75.8%, at 3e-4 80.8%; the top 2 blocks with 2 stored augmented views
  73.0%, the top 3 with 2 / 4 stored views 76.8% / 79.6-81.0%, no faster than live augmentation at 5 epochs.
  On 3,500 Imagenette photos at natural sizes with renamed classes (2-core CPU, 2026-12-07), the whole run took
  187 s against 590 s for issue 23's command before fine-tuning got faster (docs/results.md).
  On Imagenette, whose classes ImageNet names, fine-tuning scored 97.67% on validation against 99.00% for the
  head alone, in 327 s against 14 s: use `transfer` there (the run keeps the head's model when fine-tuning's
  best validation loss is no better, as it was not there).

A recipe fills the settings a user did not give: explicit flags and config-file values win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnlab.registry import Registry

__all__ = ["Recipe", "RECIPES", "SCHEDULES", "recipe_settings"]

SCHEDULES = ("constant", "onecycle")  # constant: Keras's default; onecycle: warm up then anneal, per step


@dataclass(frozen=True)
class Recipe:
    """One named recipe; None leaves the setting to the user or the defaults."""

    name: str
    description: str
    model: str | None            # registry name used when the user names no model
    epochs: int                  # passes over the training data
    batch_size: int              # images per step
    learning_rate: float         # peak rate (for onecycle) or the constant rate
    schedule: str                # "constant" (Keras) or "onecycle" (warm up, then anneal per step)
    label_smoothing: float       # share of the target spread over all classes
    trainer: str = "fit"         # "fit" (cnnlab.training.loop) or "speedrun" (cnnlab.training.speedrun)
    pretrained: bool = False     # start the backbone from its pretrained weights (transfer learning)
    freeze: bool = False         # train the new head only, on the frozen backbone
    early_stopping_patience: int | None = None  # epochs without a better validation loss before stopping
    unfreeze_top: int | None = None  # then fine-tune the backbone's top N blocks (a second phase)
    fine_tune_epochs: int | None = None  # epochs of that phase
    fine_tune_lr: float | None = None    # its learning rate
    augment: str | None = None           # training-only augmentation (an --augment preset or spec)


RECIPES: Registry[Recipe] = Registry("recipe")
RECIPES.add("seed", Recipe("seed", "the tutorials' recipe: batch 32, adam 1e-3, constant rate (Keras parity)",
                           model=None, epochs=1, batch_size=32, learning_rate=1e-3, schedule="constant",
                           label_smoothing=0.0))
RECIPES.add("fast", Recipe("fast", "fast CPU recipe: fast-cnn, batch 64, one-cycle adam peaking at 4e-3",
                           model="fast-cnn", epochs=1, batch_size=64, learning_rate=4e-3, schedule="onecycle",
                           label_smoothing=0.0))
RECIPES.add("speedrun", Recipe("speedrun", "CIFAR-10 speed-run techniques (whitening, Muon, TTA); for GPUs",
                               model="speedrun", epochs=10, batch_size=1024, learning_rate=1.0,
                               schedule="onecycle", label_smoothing=0.2, trainer="speedrun"))
RECIPES.add("transfer", Recipe("transfer", "your photos on EfficientNet-Lite0's ImageNet weights: frozen, the head "
                               "trained on features computed once, up to 30 epochs with early stopping",
                               model="efficientnet_lite0", epochs=30, batch_size=32, learning_rate=1e-3,
                               schedule="constant", label_smoothing=0.0, pretrained=True, freeze=True,
                               early_stopping_patience=5))
RECIPES.add("transfer-finetune", Recipe(
    "transfer-finetune", "the transfer recipe, then the top 3 blocks fine-tuned 5 epochs at 1e-4 on live "
    "standard augmentation: for classes ImageNet does not name", model="efficientnet_lite0", epochs=30, batch_size=32,
    learning_rate=1e-3, schedule="constant", label_smoothing=0.0, pretrained=True, freeze=True,
    early_stopping_patience=5, unfreeze_top=3, fine_tune_epochs=5, fine_tune_lr=1e-4, augment="standard"))
# The speedrun trainer has its own rates per parameter group (cnnlab.training.speedrun.SpeedrunConfig);
# its learning_rate 1.0 is a multiplier of all of them, so --lr 0.5 halves every rate.


def recipe_settings(name: str) -> dict[str, Any]:
    """The TrainConfig fields recipe `name` sets (its model only when it has one).

    >>> recipe_settings("fast")["batch_size"], recipe_settings("seed").get("model")
    (64, None)
    """
    recipe = RECIPES.get(name)
    settings = {"recipe": name, "epochs": recipe.epochs, "batch_size": recipe.batch_size,
                "learning_rate": recipe.learning_rate, "schedule": recipe.schedule,
                "label_smoothing": recipe.label_smoothing}
    if recipe.model is not None:
        settings["model"] = recipe.model
    if recipe.pretrained or recipe.freeze:
        settings.update(pretrained=recipe.pretrained, freeze=recipe.freeze)
    for name in ("early_stopping_patience", "unfreeze_top", "fine_tune_epochs", "fine_tune_lr", "augment"):
        if getattr(recipe, name) is not None:
            settings[name] = getattr(recipe, name)
    return settings
