"""Training settings: one typed field per setting, with its unit and why its default.

Precedence: these defaults, then a config file (`--config run.toml` or .json), then CLI flags.
Unknown keys in a config file fail with the closest valid names.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.recipes import RECIPES, SCHEDULES, recipe_settings

__all__ = ["TrainConfig", "load_config_file", "SEED_LIMIT", "MAX_IMAGE_SIDE", "MAX_INPUT_VALUES", "check_seed",
           "check_image_shape", "parse_head", "DEFAULT_HEAD", "HEAD_INITS"]

# Seeds run 0..2**32 - 1: NumPy's global seed (which the Keras API seeds) takes nothing larger, torch
# nothing above 2**64 - 1, and a seed of 2**70 was a traceback from deep inside torch.
SEED_LIMIT = 2**32
# Model inputs: at most 4096 pixels a side and 4096 x 4096 x 4 values (one RGBA 4K image, 256 MiB as
# float32). That is 18x ImageNet's 224 a side; a batch of 32 such inputs is 8 GiB before the first
# convolution, so a larger size cannot train or even be summarized on a workstation, and 100000 x 100000
# was a 320 GB allocation traceback.
MAX_IMAGE_SIDE = 4096
MAX_INPUT_VALUES = 4096 * 4096 * 4


def check_seed(seed: object, where: str = "seed") -> int:
    """`seed` as an int if it is a whole number in 0..SEED_LIMIT - 1, else one CnnlabError line naming `where`.

    >>> check_seed(42)
    42
    >>> check_seed(2**70)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: seed must be a whole number in 0..4294967295 (NumPy's seed range), got 1180...
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise CnnlabError(f"{where} must be a whole number in 0..{SEED_LIMIT - 1} (NumPy's seed range), "
                          f"got {seed!r}; e.g. {where} 42")
    return seed


def check_image_shape(shape: Sequence[object], where: str = "image_size") -> tuple[int, ...]:
    """(H, W) or (H, W, C) as ints if each is a positive whole number, H and W at most MAX_IMAGE_SIDE and
    H * W * C at most MAX_INPUT_VALUES; else one CnnlabError line naming `where`.

    >>> check_image_shape([224, 224, 3])
    (224, 224, 3)
    >>> check_image_shape((100000, 100000), "--image-size")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: --image-size (100000, 100000) is too large: at most 4096 pixels a side and 67,1...
    """
    values = tuple(shape)
    example = " ".join(["224", "224", "3"][:len(values)] or ["224", "224"])
    ints = tuple(v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0)
    if len(values) not in (2, 3) or len(ints) != len(values):
        raise CnnlabError(f"{where} must be positive whole numbers HEIGHT WIDTH{' CHANNELS' * (len(values) == 3)}, "
                          f"got {shape!r}; e.g. {where} {example}")
    height, width, *channels = ints
    if max(height, width) > MAX_IMAGE_SIDE or height * width * (channels or [1])[0] > MAX_INPUT_VALUES:
        raise CnnlabError(f"{where} {ints} is too large: at most {MAX_IMAGE_SIDE} pixels a side and "
                          f"{MAX_INPUT_VALUES:,} values (H x W x C); a model input that size cannot train or be "
                          f"summarized in memory; e.g. {where} {example}")
    return ints

# The new head between the backbone's feature maps and the class Dense, in order: Keras's transfer-learning
# tutorials pool (GlobalAveragePooling2D) and put Dropout(0.2) before the new Dense. Seed 003's VGG16 head is
# "flatten,dense=256,dropout=0.5" (Flatten, Dense(256, relu), Dropout(0.5)).
DEFAULT_HEAD = "gap,dropout=0.2"
# Where the new head's class Dense starts: "auto" starts it from the pretrained ImageNet classifier's rows when
# every class folder names an ImageNet class (and the head is pooling and dropout only); "random" always starts it
# at random. On Imagenette's ten ImageNet classes (5-fold cross-validation on its train split, 2-core CPU,
# 2026-12-07) the EfficientNet-Lite0 head reached 98.7% after 10 epochs from those rows against 98.0% from random.
HEAD_INITS = ("auto", "random")
MAX_HEAD_UNITS = 65536      # one hidden Dense; wider is a typo (a 7x7x512 Flatten into 65536 units is 1.6 G weights)


@dataclass
class TrainConfig:
    """Everything one training run depends on; saved as config.json in the run directory."""

    dataset: str = "digits"            # built-in name (digits, mnist, fashion-mnist, cifar10) or image folder
    model: str = "seed-mnist"          # registry name (`cnnlab models`)
    epochs: int = 1                    # passes over the training data; Keras's default
    batch_size: int = 32               # images per step; Keras's default, what the seeds use
    learning_rate: float = 1e-3        # adam step size; Keras's default
    validation_split: float = 0.1      # fraction held out from the END of the training data (Keras); seeds use 0.1
    early_stopping_patience: int | None = None  # epochs without val improvement before stopping; None: off
    restore_best_weights: bool = True  # with early stopping, keep the best epoch's weights (seed 003)
    reduce_lr_patience: int | None = None       # epochs without improvement before lowering the LR; None: off
    reduce_lr_factor: float = 0.5      # LR multiplier on a plateau (seed 003 uses 0.5)
    min_lr: float = 1e-6               # floor for ReduceLROnPlateau (seed 003)
    monitor: str = "val_loss"          # metric watched by early stopping, LR reduction and checkpoints
    seed: int | None = None            # RNG seed for init and shuffling; None: drawn at random and recorded
    data_dir: str | None = None        # where dataset files live; None: $CNNLAB_DATA or the user cache dir
    download: bool = True              # fetch missing built-in datasets with torchvision's downloader
    image_size: list[int] | None = None  # [H, W] to resize images to; None: native size
    augment: str = ""                  # training data only: "rotate=20,flip=h,..." or a preset (light, standard)
    class_weights: str | None = None   # "auto": weight the loss by inverse class frequency (imbalanced data)
    pretrained: bool = False           # start the backbone from torchvision's ImageNet weights (transfer learning)
    weights: str | None = None         # local weights: a torchvision state_dict or a cnnlab model file to build on
    freeze: bool = False               # train only the new head on a frozen backbone (transfer phase 1)
    head: str = DEFAULT_HEAD           # transfer head before the class Dense: "gap,dense=256,dropout=0.5" (parse_head)
    head_init: str = "auto"            # the class Dense starts: auto (ImageNet's rows for ImageNet classes), random
    max_image_pixels: int | None = None  # decode budget per image, in pixels; None: 40 MP (cnnlab.data.images)
    unfreeze_top: int | None = None    # then fine-tune the top N backbone blocks (transfer phase 2)
    fine_tune_epochs: int = 5          # epochs of phase 2
    fine_tune_lr: float = 1e-5         # phase 2 learning rate: 10-100x below phase 1 so pretrained features survive
    init_from: str | None = None       # a run directory or model file whose weights this run starts from
    test_fraction: float = 0.1         # held-out test share when an image folder has no test/ subfolder
    workers: int = 2                   # DataLoader processes for image folders too large for memory (2 cores here)
    recipe: str = "seed"               # named settings bundle (seed, fast, speedrun); see cnnlab.recipes
    schedule: str = "constant"         # learning rate per step: constant (Keras) or onecycle (warm up, anneal)
    label_smoothing: float = 0.0       # share of each target spread over all classes (Keras's option); 0: off
    widths: list[int] | None = None    # speedrun model: channels of its 3 blocks; None: airbench94's 64 256 256
    device: str = "auto"               # auto (first GPU, else CPU), cpu, cuda, cuda:N, mps
    precision: str = "auto"            # auto (bf16 where the hardware computes it natively), fp32, bf16, fp16
    compile: str = "auto"              # torch.compile: auto (long CUDA runs), on, off
    threads: str | int = "auto"        # CPU threads: auto (measured in the first steps, training/threads.py) or N
    feature_cache: str = "auto"        # frozen backbone: auto computes its features once per image and trains the
    #                                    head on them (training/features.py); off runs the backbone at every step
    feature_views: int = 1             # with --augment in a frozen phase: 1 = features of the plain images;
    #                                    K = K augmented views per image computed once (K x the one-off cost)
    run_dir: str | None = None         # where this run's files go; None: runs/<dataset>-<model>-<time>
    runs_root: str = "runs"            # parent of automatically named run directories
    checkpoint_every: int | None = None  # optimizer steps between mid-epoch checkpoints; None: at epoch ends only
    deterministic: bool = False        # deterministic kernels: two runs with one --seed give bit-identical weights
    tensorboard: bool | None = None    # TensorBoard event files in the run directory; None: when it is installed
    sync_bn: bool = False              # distributed runs: BatchNorm statistics over all processes' batches (GPUs)
    evaluate_test: bool = True         # score the test split at the end; False while tuning on validation data,
    #                                    so the test split is read once, later (`cnnlab evaluate RUN`)

    def validate(self) -> None:
        """Check every field a user can get wrong, before anything is loaded or written."""
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise CnnlabError(f"{name} must be a positive integer; got {value!r}")
        if not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            raise CnnlabError(f"learning_rate must be a positive number; got {self.learning_rate!r}")
        if not 0.0 <= self.validation_split < 1.0:
            raise CnnlabError(f"validation_split must be in [0, 1), e.g. 0.1; got {self.validation_split!r}")
        for name in ("early_stopping_patience", "reduce_lr_patience"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise CnnlabError(f"{name} must be a non-negative integer or unset; got {value!r}")
        if not 0.0 < self.reduce_lr_factor < 1.0:
            raise CnnlabError(f"reduce_lr_factor must be between 0 and 1; got {self.reduce_lr_factor!r}")
        parse_head(self.head)
        if self.unfreeze_top is not None and (not isinstance(self.unfreeze_top, int) or self.unfreeze_top < 0):
            raise CnnlabError(f"unfreeze_top must be a non-negative integer; got {self.unfreeze_top!r}")
        if not isinstance(self.fine_tune_epochs, int) or self.fine_tune_epochs <= 0:
            raise CnnlabError(f"fine_tune_epochs must be a positive integer; got {self.fine_tune_epochs!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise CnnlabError(f"test_fraction must be in (0, 1), e.g. 0.1; got {self.test_fraction!r}")
        if self.class_weights not in (None, "auto"):
            raise CnnlabError(f"class_weights must be 'auto' or unset; got {self.class_weights!r}")
        if self.image_size is not None:
            if not isinstance(self.image_size, (list, tuple)) or len(self.image_size) != 2:
                raise CnnlabError(f"image_size must be two positive integers HEIGHT WIDTH; got {self.image_size!r}")
            check_image_shape(self.image_size, "image_size")
        if self.seed is not None:
            check_seed(self.seed, "seed")
        RECIPES.get(self.recipe)
        if not (self.threads == "auto" or (isinstance(self.threads, int) and not isinstance(self.threads, bool)
                                           and self.threads > 0)):
            raise CnnlabError(f"threads must be a positive integer or 'auto' (measured in the first steps); "
                              f"got {self.threads!r}")
        if self.feature_cache not in ("auto", "off"):
            raise CnnlabError(f"feature_cache must be auto (compute a frozen backbone's features once) or off; "
                              f"got {self.feature_cache!r}")
        if self.head_init not in HEAD_INITS:
            raise CnnlabError(f"head_init must be auto (start from the ImageNet classifier where the class names are "
                              f"ImageNet's) or random; got {self.head_init!r}")
        views = self.feature_views
        if isinstance(views, bool) or not isinstance(views, int) or not 1 <= views <= 64:
            raise CnnlabError(f"feature_views must be a whole number from 1 to 64; got {views!r}")
        every = self.checkpoint_every
        if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every <= 0):
            raise CnnlabError(f"checkpoint_every must be a positive number of steps or unset; got {every!r}")
        for name in ("restore_best_weights", "download", "pretrained", "freeze", "deterministic", "sync_bn",
                     "evaluate_test"):  # a config file's "no" or 0 would otherwise read as a truth value
            if not isinstance(getattr(self, name), bool):
                raise CnnlabError(f"{name} must be true or false; got {getattr(self, name)!r}")
        if self.schedule not in SCHEDULES:
            raise CnnlabError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if not isinstance(self.label_smoothing, (int, float)) or not 0.0 <= self.label_smoothing < 1.0:
            raise CnnlabError(f"label_smoothing must be in [0, 1), e.g. 0.1; got {self.label_smoothing!r}")
        if self.schedule == "onecycle" and self.reduce_lr_patience is not None:
            raise CnnlabError("the onecycle schedule sets the learning rate at every step; "
                              "drop --reduce-lr or use --schedule constant")
        if (self.early_stopping_patience is not None or self.reduce_lr_patience is not None) \
                and self.monitor.startswith("val_") and self.validation_split == 0:
            raise CnnlabError(f"monitoring {self.monitor!r} needs validation data: set validation_split > 0 "
                              f"(e.g. --validation-split 0.1) or --monitor loss")

    @classmethod
    def from_recipe(cls, recipe: str = "seed", **settings: Any) -> TrainConfig:
        """A config with recipe `recipe`'s settings, then `settings` on top (they win).

        >>> TrainConfig.from_recipe("fast", epochs=3).batch_size, TrainConfig.from_recipe("fast", epochs=3).epochs
        (64, 3)
        """
        return cls(**{**recipe_settings(recipe), **settings})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_head(spec: str) -> list[tuple[str, float]]:
    """The layers of a head spec such as "flatten,dense=256,dropout=0.5", checked; one CnnlabError line if wrong.

    Items, comma-separated, in order: "gap" (global average pooling, the default) or "flatten" first,
    then any of "dense=UNITS" (a ReLU Dense layer) and "dropout=RATE" (0 <= RATE < 1). The Dense
    layer to the classes always comes last and is not written.

    >>> parse_head("flatten,dense=256,dropout=0.5")
    [('flatten', 0), ('dense', 256), ('dropout', 0.5)]
    >>> parse_head("dropout=0.2")
    [('gap', 0), ('dropout', 0.2)]
    """
    fix = f"e.g. --head \"gap,dense=256,dropout=0.5\" (default {DEFAULT_HEAD!r})"
    if not isinstance(spec, str) or not spec.strip():
        raise CnnlabError(f"--head must be a list like \"gap,dense=256,dropout=0.5\", got {spec!r}; {fix}")
    layers: list[tuple[str, float]] = []
    for position, item in enumerate(part.strip() for part in spec.split(",")):
        name, _, value = item.partition("=")
        if name in ("gap", "flatten") and not value:
            if position:
                raise CnnlabError(f"--head {spec!r}: {name!r} must come first (it turns the feature maps into a "
                                  f"vector); {fix}")
            layers.append((name, 0))
            continue
        try:
            number = int(value) if name == "dense" else float(value)
        except ValueError:
            number = None
        if name == "dense" and number is not None and 1 <= number <= MAX_HEAD_UNITS:
            layers.append(("dense", int(number)))
        elif name == "dropout" and number is not None and 0 <= number < 1:
            layers.append(("dropout", number))
        else:
            raise CnnlabError(f"--head {spec!r}: cannot read {item!r}; items are gap or flatten (first), "
                              f"dense=UNITS (1..{MAX_HEAD_UNITS}) and dropout=RATE (0 <= RATE < 1); {fix}")
    return layers if layers[0][0] in ("gap", "flatten") else [("gap", 0), *layers]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a .toml or .json config file into {field: value}, rejecting unknown keys."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"config file not found: {path}")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            raise CnnlabError(f"config file {path} must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise CnnlabError(f"config file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise CnnlabError(f"config file {path} must hold a table of settings, got {type(data).__name__}")
    valid = [f.name for f in fields(TrainConfig)]
    for key in data:
        normalized = key.replace("-", "_")
        if normalized not in valid:
            raise CnnlabError(f"config file {path}: unknown setting {key!r}.{did_you_mean(normalized, valid)}")
    return {k.replace("-", "_"): v for k, v in data.items()}
