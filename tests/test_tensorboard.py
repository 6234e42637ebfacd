"""TensorBoard events of a resumed run: the redone epochs replace the interrupted attempt's, whatever the file order."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from cnnlab.training.callbacks import TrainState  # noqa: E402
from cnnlab.training.tensorboard import TensorBoard  # noqa: E402


def _attempt(log_dir: Path, from_epoch: int, losses: dict[int, float]) -> None:
    tb, state = TensorBoard(log_dir), TrainState(model=torch.nn.Linear(1, 1), lr=0.1)
    state.epoch = from_epoch
    tb.on_train_begin(state)
    for epoch, loss in losses.items():
        tb.on_epoch_end(epoch, {"loss": loss}, state)
    tb.on_train_end(state)


def test_resume_in_the_same_second_replaces_the_interrupted_epochs(tmp_path):
    _attempt(tmp_path, 0, {0: 3.0, 1: 2.0})  # interrupted after epoch 1's events were written
    (old,) = tmp_path.glob("events.out.tfevents.*")
    stamp, host, _pid, uid = old.name.split(".")[3:7]
    # the case CI hit: same second, a larger pid than the resuming process, so the old file sorts last
    old.rename(tmp_path / f"events.out.tfevents.{stamp}.{host}.99999999.{uid}")
    _attempt(tmp_path, 1, {1: 1.5})  # resumed from the checkpoint at the end of epoch 0
    files = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert files[-1].name.split(".")[5] != "99999999"  # the resumed attempt's file sorts last
    scalars = EventAccumulator(str(tmp_path)).Reload().Scalars("loss")
    assert [(e.step, e.value) for e in scalars] == [(0, 3.0), (1, 1.5)]
