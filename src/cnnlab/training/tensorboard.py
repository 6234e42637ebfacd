"""TensorBoard event files for a run: per-epoch scalars and a few sample predictions.

Optional: `pip install cnnlab[tensorboard]`. The events go into the run directory next to
history.csv, so `tensorboard --logdir runs/` shows every run. Scalars are logged at the run's
global epoch (0-based, counting across transfer-learning phases), the step Keras's TensorBoard
callback uses; a resumed run drops the events the interrupted attempt wrote past its checkpoint.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.data import ImageDataset as Dataset
from cnnlab.data import float_images
from cnnlab.errors import CnnlabError
from cnnlab.models.zoo import output_kind
from cnnlab.training.callbacks import Callback, TrainState

__all__ = ["TensorBoard", "tensorboard_available", "tensorboard_callbacks"]

SAMPLES = 8  # images whose predictions are logged each epoch: enough to see learning, small enough to read


def tensorboard_available() -> bool:
    """True when the `tensorboard` package (what torch.utils.tensorboard writes with) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoard(Callback):
    """Write loss, accuracy, val_* and lr per epoch, and predictions on `samples`, to `log_dir`.

    `samples` is (uint8 images (K, C, H, W), labels (K,), class names); `first_epoch` offsets the
    step in runs of several phases.

    >>> import tempfile
    >>> tb = TensorBoard(tempfile.mkdtemp()); s = TrainState(model=torch.nn.Linear(1, 1), lr=0.1)
    >>> tb.on_train_begin(s); tb.on_epoch_end(0, {"loss": 1.0}, s); tb.on_train_end(s)
    >>> sorted(p.name.split(".")[0] for p in Path(tb.log_dir).iterdir())
    ['events']
    """

    def __init__(self, log_dir: str | Path, samples: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None,
                 first_epoch: int = 0) -> None:
        self.log_dir, self.samples, self.first_epoch = Path(log_dir), samples, first_epoch
        self.writer: Any = None

    def on_train_begin(self, state: TrainState) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events at or after this epoch came from an attempt that was interrupted and is now redone
        _wait_to_sort_last(self.log_dir)
        self.writer = SummaryWriter(str(self.log_dir), purge_step=self.first_epoch + state.epoch)
        if self.samples is not None and state.epoch == 0:
            self.writer.add_images("samples", float_images(self.samples[0]).clamp(0, 1), self.first_epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: TrainState) -> None:
        step = self.first_epoch + epoch
        for key, value in logs.items():
            self.writer.add_scalar(key, value, step)
        if self.samples is not None:
            self.writer.add_text("predictions", self._predictions(state.model), step)
        self.writer.flush()  # a killed run keeps its curves up to the last epoch

    def on_train_end(self, state: TrainState) -> None:
        if self.writer is not None:
            self.writer.close()

    @torch.no_grad()
    def _predictions(self, model: torch.nn.Module) -> str:
        """A markdown table: image, true class, predicted class and its probability (eval mode; no RNG drawn)."""
        assert self.samples is not None
        images, labels, names = self.samples
        was = model.training
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        out = model.eval()(float_images(images.to(device))).float()
        model.train(was)
        probs = out if output_kind(model) == "probabilities" else F.softmax(out, dim=1)
        p, predicted = probs.max(1)
        rows = [f"| {i} | {names[int(t)]} | {names[int(c)]} | {float(q):.3f} |"
                for i, (t, c, q) in enumerate(zip(labels, predicted, p, strict=True))]
        return "\n".join(["| image | true | predicted | probability |", "|---|---|---|---|", *rows])


def _wait_to_sort_last(log_dir: Path) -> None:
    """Sleep (at most 1 s) until a new event file's name sorts after every existing one in `log_dir`.

    TensorBoard reads a directory's event files in name order, and names start with the whole second
    the writer opened, then host and pid. A resume started within the same second as the attempt it
    redoes could sort first, and the old attempt's events would then purge the new ones.
    """
    stamps = [int(parts[3]) for f in log_dir.glob("events.out.tfevents.*")
              if len(parts := f.name.split(".")) > 3 and parts[3].isdigit()]
    if stamps and time.time() < max(stamps) + 1:
        time.sleep(max(stamps) + 1 - time.time())


def tensorboard_callbacks(enabled: bool | None, log_dir: Path, data: Dataset, first_epoch: int) -> list[Callback]:
    """[TensorBoard(...)] when `enabled` (None: when installed), with `data`'s first images as samples."""
    if enabled is False or (enabled is None and not tensorboard_available()):
        return []
    if not tensorboard_available():
        raise CnnlabError("--tensorboard: the tensorboard package is not installed; "
                          "pip install 'cnnlab[tensorboard]', or drop --tensorboard")
    images, labels = next(iter(data.batches(SAMPLES)))
    if images.dtype != torch.uint8:  # float datasets: 8-bit pictures
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return [TensorBoard(log_dir, (images, labels, list(data.class_names)), first_epoch)]
