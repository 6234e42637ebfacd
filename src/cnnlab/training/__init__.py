"""Training: the loop, callbacks and evaluation."""

from cnnlab.training.callbacks import (
    Callback, CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, TrainingHints, TrainState,
)
from cnnlab.training.devices import Runtime, resolve_runtime
from cnnlab.training.loop import History, evaluate, fit, predict_proba
from cnnlab.training.speedrun import SpeedrunConfig, evaluate_tta, train_speedrun

__all__ = ["Callback", "CSVLogger", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "TrainState",
           "TrainingHints", "History", "evaluate", "fit", "predict_proba", "Runtime", "resolve_runtime",
           "SpeedrunConfig", "evaluate_tta", "train_speedrun"]
