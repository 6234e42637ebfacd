"""Training: the loop, callbacks and evaluation."""

from cnnlab.training.callbacks import (
    Callback, CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, TrainState,
)
from cnnlab.training.loop import History, evaluate, fit, predict_proba

__all__ = ["Callback", "CSVLogger", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "TrainState",
           "History", "evaluate", "fit", "predict_proba"]
