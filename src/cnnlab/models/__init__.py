"""Models: Keras-style layers, the registry, summaries and model files."""

from cnnlab.models.files import ModelCard, load_model, save_model
from cnnlab.models.layers import (
    Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
    GlobalAveragePooling2D, Layer, MaxPooling2D,
)
from cnnlab.models.sequential import Residual, ResidualBlock, Sequential
from cnnlab.models import preprocessing_layers  # noqa: F401  # registers Rescaling, RandomFlip, ... for model files
from cnnlab.models.speedrun import SpeedrunNet, init_whitening  # registers "speedrun"
from cnnlab.models.summary import Summary, count_parameters, model_summary
from cnnlab.models.zoo import MODELS, ModelSpec, build_model, model_names

__all__ = [
    "Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
    "GlobalAveragePooling2D", "Layer", "MaxPooling2D", "Residual", "ResidualBlock", "Sequential",
    "ModelCard", "load_model", "save_model", "Summary", "count_parameters", "model_summary",
    "MODELS", "ModelSpec", "build_model", "model_names", "SpeedrunNet", "init_whitening",
]
