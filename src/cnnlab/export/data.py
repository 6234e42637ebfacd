"""The real images an export is checked on: the run's own test images, and training images for int8.

A run directory knows its dataset (config.json) and, for an image folder, which images were
test images (split.json); `cnnlab.evaluate_jobs.evaluation_data` finds them exactly as `cnnlab evaluate`
does. When they cannot be read (a model file outside a run, a dataset that is not on this
machine), the caller's images are used, else the export falls back and says so in its notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models.files import ModelCard
from cnnlab.rundir import read_json

__all__ = ["RealImages", "real_images", "dataset_pixels", "random_pixels", "sample_images"]

SAMPLE_SEED = 0  # which images are drawn: the same on every export of a run


@dataclass
class RealImages:
    parity: torch.Tensor | None                          # uint8 (N, C, H, W), or None: the caller draws random ones
    calibration: torch.Tensor | None
    test: tuple[torch.Tensor, torch.Tensor] | None       # (uint8 images, labels)
    parity_source: str
    notes: list[str] = field(default_factory=list)


def real_images(source: str | Path, card: ModelCard, parity: Any, calibration: Any, test: tuple[Any, Any] | None,
                data_dir: str | None, n_parity: int, n_calibration: int) -> RealImages:
    """Parity, calibration and test images: given tensors/arrays win; counts (int, None: the default) are
    drawn from the run's dataset. `calibration=0` asks for none (fp32 export), and then no test split either.
    """
    found = RealImages(None, None, None, "given images")
    want_parity = n_parity if parity is None else parity if isinstance(parity, int) else 0
    want_calibration = n_calibration if calibration is None else calibration if isinstance(calibration, int) else 0
    if not isinstance(parity, int) and parity is not None:
        found.parity = _uint8(parity, "parity_images")
    if not isinstance(calibration, int) and calibration is not None:
        found.calibration = _uint8(calibration, "calibration")
    if test is not None:
        found.test = (_uint8(test[0], "test_data images"), torch.as_tensor(np.asarray(test[1])).long())
    for name, value in (("parity_images", want_parity), ("calibration", want_calibration)):
        if value < 0:
            raise CnnlabError(f"{name} must be a count >= 0 or uint8 (N, C, H, W) images; got {value}")
    need_test = found.test is None and (want_parity > 0 or (want_calibration > 0 or found.calibration is not None))
    if need_test or want_calibration > 0:
        _from_run(source, card, found, want_parity, want_calibration, need_test, data_dir)
    if found.parity is None and found.test is not None and want_parity > 0:
        found.parity = sample_images(found.test[0], want_parity)
    return found


def _from_run(source: str | Path, card: ModelCard, found: RealImages, n_parity: int, n_calibration: int,
              need_test: bool, data_dir: str | None) -> None:
    config_path = Path(source) / "config.json"
    if not config_path.is_file():
        found.notes.append(f"{source} is not a run directory, so its dataset is unknown: "
                           "export a run directory to check on its real images")
        return
    config = read_json(config_path, fix="export the model file instead, or restore the run's config.json")
    data_dir = data_dir or config.get("data_dir")
    try:
        if need_test:
            images, labels, name = dataset_pixels(source, card, "test", data_dir)
            found.test = (images, labels)
            found.parity_source = f"{name} test images"
        if n_calibration > 0:
            images, _, name = dataset_pixels(source, card, "train", data_dir)
            found.calibration = sample_images(images, n_calibration)
    except CnnlabError as exc:
        found.notes.append(f"the run's dataset could not be read ({exc}); pass --data-dir to use its real images")


def dataset_pixels(source: str | Path, card: ModelCard, split: str,
                   data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(uint8 images, labels, dataset name) of a run's test split, or of the images it trained on."""
    from cnnlab.evaluate_jobs import evaluation_data

    _, _, data, name = evaluation_data(source, None, split, data_dir, download=False)
    recorded = Path(source) / "split.json"
    if split == "train" and recorded.is_file():  # an image folder split by the run: its own training part only
        split_record = read_json(recorded, fix="restore the run's split.json")
        if not isinstance(split_record.get("train"), list):
            raise CnnlabError(f"{recorded} lists no training images (\"train\": [...]); restore the run's split.json")
        data = data.subset(split_record["train"])
    images, labels = [], []
    for batch, batch_labels in data.batches(256):
        images.append(batch)
        labels.append(batch_labels)
    if not images:
        raise CnnlabError(f"the {split} split of {name} holds no readable images")
    return _uint8(torch.cat(images), f"{name} {split} images"), torch.cat(labels).long(), name


def random_pixels(input_shape: list[int] | tuple[int, ...], n: int) -> torch.Tensor:
    """`n` seeded uniform random uint8 (N, C, H, W) images for an (H, W, C) input shape.

    >>> tuple(random_pixels([28, 28, 1], 3).shape)
    (3, 1, 28, 28)
    """
    h, w, c = input_shape
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(SAMPLE_SEED))


def sample_images(images: torch.Tensor, n: int) -> torch.Tensor:
    """`n` images drawn without replacement, seeded, in their original order (all of them when fewer).

    >>> sample_images(torch.arange(10), 3).tolist()
    [1, 4, 7]
    """
    if n >= len(images):
        return images
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SAMPLE_SEED))[:n]
    return images[order.sort().values]


def _uint8(images: Any, where: str) -> torch.Tensor:
    tensor = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if tensor.is_floating_point():  # [0, 1] floats, as float datasets hold them
        tensor = (tensor.clamp(0, 1) * 255).round().to(torch.uint8)
    if tensor.dtype != torch.uint8 or tensor.ndim != 4:
        raise CnnlabError(f"{where}: expected uint8 (N, C, H, W) images, got {tensor.dtype} {tuple(tensor.shape)}")
    return tensor.cpu()
