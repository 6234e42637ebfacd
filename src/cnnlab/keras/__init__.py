"""The tf.keras API on cnnlab's engine: tutorial programs run with only their import changed.

    from tensorflow.keras import layers, models   ->   from cnnlab.keras import layers, models
    from tensorflow import keras / import keras   ->   from cnnlab import keras
    import tensorflow as tf; tf.keras.X           ->   from cnnlab import keras; keras.X

Models are cnnlab models (`nn.Module`s): they train on cnnlab's engine (training/loop.py) and
`model.save(...)` writes a cnnlab model file that every `cnnlab` command reads.
"""

from cnnlab.keras import (
    applications, backend, callbacks, datasets, layers, losses, metrics, mixed_precision, models, optimizers,
    preprocessing, utils,
)
from cnnlab.keras.layers import Input, InputLayer
from cnnlab.keras.models import Model, Sequential

__all__ = ["applications", "backend", "callbacks", "datasets", "layers", "losses", "metrics", "mixed_precision",
           "models", "optimizers", "preprocessing", "utils", "Input", "InputLayer", "Model", "Sequential"]
