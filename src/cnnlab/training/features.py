"""Frozen features computed once: a frozen backbone's output per image, then only the head trains.

When everything before the trainable head is frozen and deterministic (no trainable parameter,
BatchNorm in inference mode, nothing random), every epoch would recompute the same backbone output
for the same image. `plan_features` finds that frozen prefix of the model, computes its output for
every training (and validation) image once, batched, in the run's precision and memory layout, and
`fit` then trains the head on those stored features: a head epoch costs milliseconds instead of a
backbone forward pass over every photo (Teachable Machine's embeddings, Deep Learning with
Python's "fast feature extraction", done for the user).

What counts as the prefix is measured, not declared: the model's layers in order (a TransferModel's
preprocessing, backbone blocks and head; a Sequential's layers), from the first up to the first
layer with a trainable parameter or whose output in training mode differs from its output in
inference mode on the run's own first images (Dropout, random augmentation layers, BatchNorm
that updates its statistics). The data's own input function (`normalize`: a Keras
ImageDataGenerator's random augmentation) is checked the same way.

Augmentation given to `fit` (`augment=`, the CLI's --augment) would make each epoch see other
pixels: with `views=1` (the default) the features are those of the plain images and the
augmentation is not applied while the head trains on them (fine-tuning, which trains the backbone,
augments as usual); `views=K` computes K augmented views of every image once and each step takes
a random one of them per image; mode "off" trains end to end with live augmentation.

Features are gathered in memory (bounded: 1,280 fp16 values are 2.5 kB a photo, 256 MB at 100,000
photos; a run whose features would pass FEATURE_MEMORY_BYTES runs the backbone every step instead).
With a `folder` (the CLI's: the data folder's `features/`) they are also kept on disk per image, in a
store per frozen part keyed by its structure, weights and buffers, the precision, device type and
layout; an image is found by the sha256 of its pixels (a streamed folder's file by its path, size
and modification time), so the next run on the same photos, with another split or a few new ones,
computes only what it has not seen (see `Store`). A stored file whose checksum does not match is
deleted and recomputed, never trusted. Features are stored as fp16 when the run computes in bf16 or
fp16 (a bf16 value in fp16's range is held exactly, bar fp16's subnormals), as fp32 otherwise.
Augmented views (views > 1) depend on the run's random draws and stay in memory.

Measured on the 2-core AMD EPYC of 2026-12-07 (no GPU): EfficientNet-Lite0 at 224 px, 3,000 Imagenette
photos, 10 head epochs: see docs/results.md ("transfer learning, features once").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.data import ArrayDataset, model_inputs
from cnnlab.data import ImageDataset as Dataset
from cnnlab.data.cache import file_stamp
from cnnlab.data.streaming import FolderDataset
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_write
from cnnlab.models.files import weights_sha256
from cnnlab.models.folding import fold_batchnorm
from cnnlab.training.devices import Runtime

__all__ = ["FeatureSettings", "FeaturePlan", "FeatureViews", "FrozenSplit", "frozen_split", "plan_features",
           "FrozenPrefix", "prefix_every_step",
           "FEATURE_MODES", "Store", "Shortfall", "first_images"]

FEATURE_MODES = ("auto", "off")
FEATURE_FORMAT = "cnnlab-features-v1"  # bumped when the file layout or what is hashed changes
# images per forward pass while computing features: cache-sized batches win (EfficientNet-Lite0 at 224 px,
# bf16, 2 cores, 2026-12-07: 141 images/s at 32, 123 at 64, 109 at 128)
FEATURE_BATCH = 32
FEATURE_MEMORY_BYTES = 2 * 1024**3  # features kept in memory up to this; beyond it they need a folder on disk
PROBE_IMAGES = 4             # the run's first images, run twice in training mode to find random layers
# Layers random by design, whatever the probe shows (a dropout after a ReLU can meet only zeros; a seeded
# random layer may repeat itself call to call): matched in the class names of modules in training mode.
RANDOM_NAMES = ("Dropout", "Noise", "Random", "StochasticDepth")


@dataclass(frozen=True)
class FeatureSettings:
    """How `fit` treats a frozen prefix: compute its features once ("auto") or run it every step ("off").

    `views`: with `fit(augment=...)`, 1 computes features of the plain images (augmentation then
    waits for fine-tuning), K > 1 computes K augmented views per image once. `folder`: where features
    persist between runs (None: memory only). `say`: where one-line notes go (the CLI prints them).
    """

    mode: str = "auto"
    views: int = 1
    folder: Path | None = None
    say: Callable[[str], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in FEATURE_MODES:
            raise CnnlabError(f"feature cache {self.mode!r} is not one of {', '.join(FEATURE_MODES)} "
                              f"(auto: compute a frozen backbone's features once; off: every step)")
        if isinstance(self.views, bool) or not isinstance(self.views, int) or not 1 <= self.views <= 64:
            raise CnnlabError(f"feature views must be an integer from 1 to 64 (augmented views per image computed "
                              f"once); got {self.views!r}")


@dataclass
class FrozenSplit:
    """The model cut in two: `prefix` (frozen, deterministic: computed once) and `head` (what trains)."""

    prefix: nn.Sequential
    head: nn.Sequential           # starts by reshaping stored (B, D, 1, 1) features to the prefix's output
    layers: int                   # how many of the model's layers the prefix holds
    sample_shape: tuple[int, ...]  # the prefix's output for one image


class Restore(nn.Module):
    """Stored features (B, D, 1, 1) -> the prefix's output shape (B, *shape), the head's first step."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), *self.shape)


def model_layers(model: nn.Module) -> list[nn.Module] | None:
    """The model as a chain of layers applied in order, or None when it is not one (a graph with branches)."""
    from cnnlab.models.graph import Functional
    from cnnlab.models.sequential import Sequential
    from cnnlab.models.transfer import TransferModel

    if isinstance(model, TransferModel):
        return [model.preprocess, *model.features, *model.head]
    if isinstance(model, Sequential):
        return list(model)
    if isinstance(model, Functional) and len(model.input_slots) == 1:  # a graph that is one chain of calls
        previous, layers = model.input_slots[0], []
        for layer, ins, as_list, outs in model.plan:
            if as_list or ins != [previous] or len(outs) != 1:
                return None
            previous = outs[0]
            layers.append(layer)
        return layers if model.output_slots == [previous] else None
    return None


def _frozen(layer: nn.Module) -> bool:
    return not any(p.requires_grad for p in layer.parameters())


def _random_by_design(layer: nn.Module) -> bool:
    return any(m.training and any(n in type(m).__name__ for n in RANDOM_NAMES) for m in layer.modules())


def _same(a: Any, b: Any) -> bool:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    return bool(torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6))


@contextlib.contextmanager
def _modes_kept(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def frozen_split(model: nn.Module, images: torch.Tensor) -> FrozenSplit | str:
    """Split `model` after its longest frozen, deterministic first layers, probed on `images` (the
    model's input, (N, C, H, W) float); a string says why there is no such split.

    >>> from cnnlab.models.layers import Dense, Flatten
    >>> from cnnlab.models.sequential import Sequential
    >>> model = Sequential([Flatten(), Dense(8), Dense(2)], input_shape=(4, 4, 1))
    >>> _ = model[1].requires_grad_(False); split = frozen_split(model, torch.rand(2, 1, 4, 4))
    >>> split.layers, split.sample_shape
    (2, (8,))
    """
    layers = model_layers(model)
    if layers is None:
        return "the model is a graph with branches, not a chain of layers"
    frozen = next((i for i, layer in enumerate(layers) if not _frozen(layer)), len(layers))
    if frozen == len(layers):
        return "every layer is frozen"
    if not any(True for layer in layers[:frozen] for _ in layer.parameters()):
        return "nothing is frozen before the first trainable layer"
    x, cut, random_layer = images, 0, None
    with _modes_kept(model), torch.random.fork_rng(devices=[]):  # the probe takes no draws from the run's RNG
        model.train()  # the modes the layers train in (a TransferModel keeps its frozen blocks in inference mode)
        for layer in layers[:frozen]:
            once, twice = layer(x), layer(x)
            with _modes_kept(layer):
                layer.eval()
                settled = layer(x)
            if _random_by_design(layer) or not (_same(once, settled) and _same(twice, settled)):
                random_layer = layer
                break
            x, cut = settled, cut + 1
    if not any(True for layer in layers[:cut] for _ in layer.parameters()):
        name = type(random_layer).__name__ if random_layer is not None else "?"
        return f"a layer that is random while training ({name}) comes before the frozen layers"
    shape = tuple(int(s) for s in x.shape[1:])
    return FrozenSplit(nn.Sequential(*layers[:cut]), nn.Sequential(Restore(shape), *layers[cut:]), cut, shape)


class FeatureViews:
    """K augmented views per image, stored (K, N, D, 1, 1); each batch takes a random view of each image.

    It has the surface `fit` uses of a dataset (labels, class names, input shape, `batches`).

    >>> views = FeatureViews(torch.arange(6.).reshape(2, 3, 1, 1, 1), torch.tensor([0, 1, 0]), ["a", "b"])
    >>> len(views), views.input_shape, next(views.batches(3))[0].shape
    (3, (1, 1, 1), torch.Size([3, 1, 1, 1]))
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                 name: str = "features") -> None:
        self.features, self.labels, self.class_names, self.name = features, labels, list(class_names), name
        self.normalize = None
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return int(self.features.shape[1])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, _, c, h, w = self.features.shape
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def batches(self, batch_size: int, order: torch.Tensor | None = None, augment: Any = None,
                workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = torch.arange(len(self)) if order is None else torch.as_tensor(order)
        for start in range(0, len(rows), batch_size):
            index = rows[start:start + batch_size]
            view = torch.randint(len(self.features), (len(index),))  # seeded per run and rank, as dropout is
            yield self.features[view, index], self.labels[index]


@dataclass
class FeaturePlan:
    """What `fit` trains when features are computed once: the head on feature datasets."""

    head: nn.Module
    train: ArrayDataset | FeatureViews
    validation: ArrayDataset | None
    record: dict[str, Any]


def plan_features(model: nn.Module, train: Dataset, validation: Dataset | None, augment: Any, runtime: Runtime,
                  settings: FeatureSettings, workers: int = 0) -> FeaturePlan | None:
    """The head and the feature datasets to train it on, or None to train the whole model as it is.

    None where the settings say "off", the model has no frozen, deterministic prefix, the features
    would take over FEATURE_MEMORY_BYTES, or the process is one of several (torchrun).
    """
    from cnnlab.training.distributed import world_size

    say = settings.say or (lambda line: None)
    if settings.mode == "off" or world_size() > 1 or len(train) == 0:
        return None
    probe = first_images(train, runtime)
    if probe is None:
        return None
    split = frozen_split(model, probe)
    if isinstance(split, str):
        if split.startswith("a layer that is random"):
            say(f"features: computed at every step: {split} (augment the data outside the model to compute "
                f"them once)")
        return None
    normalize = getattr(train, "normalize", None)
    if normalize is not None and not _deterministic_inputs(train, runtime):
        say("features: computed at every step: the data's input function is random (a generator's augmentation)")
        return None
    views = settings.views if augment is not None else 1
    store = Store(settings.folder, split, runtime, normalize)
    if not store.fits(len(train) * views + len(validation or ())):
        say(f"features: computed at every step: {len(train):,} images x {store.bytes_per_image:,} bytes would take "
            f"over {FEATURE_MEMORY_BYTES / 1024**3:.0f} GiB of memory (a smaller head input, e.g. --head gap, fits)")
        return None
    if augment is not None and views == 1:
        say("features: of the plain images (the augmentation is not applied while only the head trains; "
            "--feature-views K computes K augmented views once, --feature-cache off augments live)")
    started = time.perf_counter()
    try:
        train_features: ArrayDataset | FeatureViews
        if views > 1:
            train_features, source = store.views(train, augment, views, workers, say), "computed"
        else:
            train_features, source = store.features(train, workers, say)
        val_features = store.features(validation, workers, say)[0] if validation is not None else None
    except Shortfall as exc:
        say(f"features: computed at every step: {exc}")
        return None
    record = {"used": True, "layers": split.layers, "values_per_image": math.prod(split.sample_shape),
              "images": len(train), "views": views, "dtype": str(store.dtype).replace("torch.", ""),
              "source": source, "seconds": round(time.perf_counter() - started, 3)}
    return FeaturePlan(split.head, train_features, val_features, record)


class FrozenPrefix(nn.Module):
    """A frozen, deterministic prefix run at every step: BatchNorm folded, always in inference mode, no autograd.

    What `fit` runs when the prefix's features cannot be stored (live augmentation while fine-tuning the top
    blocks, `--feature-cache off`, more features than memory holds): the same function, made cheaper.
    EfficientNet-Lite0 below its top 3 blocks, batch 32 at 224 px, bf16 channels_last, 2-core AMD EPYC
    (2026-12-07): 250 ms a batch as trained, 140 ms folded.
    """

    def __init__(self, prefix: nn.Module) -> None:
        super().__init__()
        self.prefix = prefix.eval()
        self.training = False

    def train(self, mode: bool = True) -> FrozenPrefix:
        return self  # a fixed function: its BatchNorm statistics and dropout never change, whatever trains around it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.prefix(x)


def prefix_every_step(model: nn.Module, data: Dataset, runtime: Runtime) -> tuple[nn.Module, dict[str, Any]] | None:
    """(the model with its frozen, deterministic prefix folded and run without autograd, a record), or None when
    it has no such prefix. The parameters that train are the model's own; the model itself is not changed."""
    from cnnlab.training.distributed import world_size

    if world_size() > 1 or not len(data) or all(p.requires_grad for p in model.parameters()):
        return None  # (nothing frozen: the usual case, decided without probing)
    probe = first_images(data, runtime)
    split = frozen_split(model, probe) if probe is not None else None
    if split is None or isinstance(split, str):
        return None
    before = _batchnorms(split.prefix)
    prefix = fold_batchnorm(split.prefix, probe) if before else split.prefix  # no copy where nothing folds
    return nn.Sequential(FrozenPrefix(prefix), split.head), \
        {"used": False, "every_step": {"layers": split.layers, "batchnorm_folded": before - _batchnorms(prefix)}}


def _batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def first_images(data: Dataset, runtime: Runtime) -> torch.Tensor | None:
    """The model's input for the data's first few images (what the layers are probed on)."""
    count = min(PROBE_IMAGES, len(data))
    for images, _ in data.subset(range(count)).batches(count):
        return model_inputs(data, runtime.images(images)).float()
    return None


def _deterministic_inputs(data: Dataset, runtime: Runtime) -> bool:
    with torch.random.fork_rng(devices=[]):
        return _same(first_images(data, runtime), first_images(data, runtime))


class Store:
    """Features of one frozen prefix: computed in batches, and with a folder kept on disk per image.

    On disk a store is `<folder>/<prefix key>/<chunk>.npy` (N, D, 1, 1) with `<chunk>.json` naming each
    row's image (the sha256 of its pixels; for a streamed folder its path, size and modification time)
    and the file's sha256. Rows are looked up per image, so a run with another split, a subset or a few
    new photos computes only the images it has not seen. A chunk that fails its checksum is deleted.
    """

    def __init__(self, folder: Path | None, split: FrozenSplit, runtime: Runtime, normalize: Any) -> None:
        self.split, self.runtime = split, runtime
        self.dtype = torch.float32 if runtime.precision == "fp32" else torch.float16
        self.width = math.prod(split.sample_shape)
        key = _module_key(split.prefix, runtime, normalize) if folder is not None else ""
        self.dir = folder / key[:40] if folder is not None else None
        self.rows: dict[str, tuple[np.ndarray, int]] | None = None  # image key -> (chunk, row), read when needed
        self.folded: nn.Module | None = None

    @property
    def bytes_per_image(self) -> int:
        return self.width * (2 if self.dtype == torch.float16 else 4)

    def fits(self, images: int) -> bool:
        """Whether the features of this many images stay within FEATURE_MEMORY_BYTES."""
        return self.bytes_per_image * images <= FEATURE_MEMORY_BYTES

    def views(self, data: Dataset, augment: Any, views: int, workers: int, say: Callable[[str], None]) -> FeatureViews:
        """`views` augmented views of every image of `data`: they depend on the run's random draws, so they are
        computed for this run only (not stored)."""
        self._announce(say, len(data), views)
        out = np.empty((views, len(data), self.width, 1, 1), dtype=_numpy(self.dtype))
        for view in range(views):
            self._compute(data, augment, workers, out[view])
        return FeatureViews(torch.from_numpy(out), data.labels, list(data.class_names), f"{data.name} features")

    def features(self, data: Dataset, workers: int, say: Callable[[str], None]) -> tuple[ArrayDataset, str]:
        """(a dataset of the features of `data`, "computed" | "disk" | "disk+computed")."""
        out = np.empty((len(data), self.width, 1, 1), dtype=_numpy(self.dtype))
        keys = _row_keys(data) if self.dir is not None else None
        rows = self._stored() if keys is not None else {}
        missing = []
        for i in range(len(data)):
            found = rows.get(keys[i]) if keys is not None else None
            if found is None:
                missing.append(i)
            else:
                out[i] = found[0][found[1]]  # (memory-mapped chunk, row)
        if missing:
            self._announce(say, len(missing), 1, len(data) - len(missing))
            fresh = np.empty((len(missing), self.width, 1, 1), dtype=out.dtype)
            self._compute(data.subset(missing), None, workers, fresh)
            out[missing] = fresh
            if keys is not None:
                self._keep(fresh, [keys[i] for i in missing])
        elif keys is not None:
            say(f"features: all {len(data):,} images' features read from {self.dir}")
        source = "computed" if len(missing) == len(data) else "disk" if not missing else "disk+computed"
        return ArrayDataset(torch.from_numpy(out), data.labels, list(data.class_names), name=f"{data.name} features"), \
            source

    def _announce(self, say: Callable[[str], None], images: int, views: int, stored: int = 0) -> None:
        also = f" ({stored:,} more read from {self.dir})" if stored else ""
        say(f"features: computing the frozen part's output ({self.width:,} values per image) for {images:,} "
            f"images{f' x {views} augmented views' if views > 1 else ''}, once{also}")

    @torch.no_grad()
    def _compute(self, data: Dataset, augment: Any, workers: int, out: np.ndarray) -> None:
        """Fill out (N, D, 1, 1) with the prefix's output for every image of `data`, in order."""
        prefix, runtime, row = self._folded(data), self.runtime, 0
        for images, _ in data.batches(FEATURE_BATCH, None, augment, workers):
            with runtime.autocast():
                values = prefix(model_inputs(data, runtime.images(images)))
            out[row:row + len(values)] = values.reshape(len(values), -1, 1, 1).to(self.dtype).cpu().numpy()
            row += len(values)
        if row != len(out):  # a streamed file stopped decoding: rows would no longer match their labels
            raise Shortfall(f"{len(out) - row} image(s) stopped decoding while their features were computed")

    def _folded(self, data: Dataset) -> nn.Module:
        """The prefix in inference mode with its BatchNorm folded into the convolutions (checked on real images)."""
        if self.folded is None:
            probe = first_images(data, self.runtime)
            self.folded = fold_batchnorm(self.split.prefix, probe)
        return self.folded

    def _stored(self) -> dict[str, tuple[np.ndarray, int]]:
        """Every stored image key of this prefix -> (its chunk, memory-mapped, and row); damaged chunks deleted."""
        if self.rows is None:
            self.rows = {}
            for meta in sorted(self.dir.glob("*.json")) if self.dir is not None and self.dir.is_dir() else ():
                chunk = _read_chunk(meta, self.width, self.dtype)
                if chunk is None:
                    for path in (meta, meta.with_suffix(".npy")):
                        path.unlink(missing_ok=True)
                    continue
                array, keys = chunk
                self.rows.update({key: (array, row) for row, key in enumerate(keys)})
        return self.rows

    def _keep(self, values: np.ndarray, keys: list[str]) -> None:
        """Write one chunk of rows (best effort: a full or read-only disk only costs the next run a recompute)."""
        assert self.dir is not None
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]
        path = self.dir / f"{name}.npy"
        try:
            atomic_write(path, lambda tmp: _save_npy(tmp, values))
            record = {"format": FEATURE_FORMAT, "shape": list(values.shape), "dtype": str(self.dtype),
                      "sha256": _file_sha256(path), "rows": keys}
            atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(record)))
        except OSError:
            path.unlink(missing_ok=True)
        self.rows = None  # read again, with the new chunk, when next needed


def _save_npy(path: Path, values: np.ndarray) -> None:
    with open(path, "wb") as handle:  # (np.save given a name not ending in .npy would add the suffix)
        np.save(handle, values, allow_pickle=False)


class Shortfall(CnnlabError):
    """Fewer images came out than went in (streamed files that stopped decoding)."""


def _numpy(dtype: torch.dtype) -> Any:
    return np.float16 if dtype == torch.float16 else np.float32


def _module_key(prefix: nn.Module, runtime: Runtime, normalize: Any) -> str:
    """sha256 of the prefix's structure, weights and buffers, how it computes (precision, device type, layout)
    and the data's input function, if any (its name)."""
    how = [FEATURE_FORMAT, repr(prefix), runtime.precision, runtime.device.type, runtime.channels_last,
           None if normalize is None else getattr(normalize, "__qualname__", type(normalize).__qualname__)]
    return hashlib.sha256(json.dumps([*how, weights_sha256(prefix.state_dict())]).encode()).hexdigest()


def _row_keys(data: Dataset) -> list[str]:
    """One key per image: the sha256 of its pixels, or for a streamed folder its path, size, mtime and decoding."""
    if isinstance(data, FolderDataset):
        how = json.dumps([data.channels, list(data.size), data.interpolation, data.crop_to_aspect_ratio])
        keys = []
        for path in data.paths:
            size, mtime = file_stamp(path)
            keys.append(hashlib.sha256(f"{how}\n{path}\t{size}\t{mtime}".encode("utf-8", "surrogateescape"))
                        .hexdigest()[:40])
        return keys
    images = data.images.contiguous()  # type: ignore[union-attr]
    raw = images.view(torch.uint8) if images.dtype != torch.uint8 else images
    shape = f"{list(images.shape[1:])} {images.dtype}".encode()
    return [hashlib.sha256(shape + memoryview(row.numpy()).cast("B")).hexdigest()[:40] for row in raw]


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _read_chunk(meta: Path, width: int, dtype: torch.dtype) -> tuple[np.ndarray, list[str]] | None:
    """A stored chunk (memory-mapped) and its image keys, or None when it is damaged or of another kind."""
    path = meta.with_suffix(".npy")
    try:
        record = json.loads(meta.read_text())
        if record.get("format") != FEATURE_FORMAT or record.get("dtype") != str(dtype) \
                or record.get("sha256") != _file_sha256(path):
            return None
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        keys = [str(k) for k in record["rows"]]
        if array.shape != (len(keys), width, 1, 1) or array.dtype != _numpy(dtype):
            return None
        return array, keys
    except Exception:  # noqa: BLE001 - anything wrong with a cache file means "not cached": computed again
        return None
