"""cnnlab: build, train, understand and ship convolutional image classifiers on PyTorch.

    import cnnlab
    train = cnnlab.load_dataset("digits")
    model = cnnlab.build_model("seed-mnist", train.input_shape, train.num_classes)
    cnnlab.model_summary(model, print_fn=print)
    history = cnnlab.fit(model, train, epochs=10, validation_split=0.1)
    print(cnnlab.evaluate(model, cnnlab.load_dataset("digits", split="test")))
"""

from cnnlab.data import ArrayDataset, Augmenter, dataset_names, load_dataset, parse_augment
from cnnlab.errors import CnnlabError
from cnnlab.models import (
    Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
    GlobalAveragePooling2D, MaxPooling2D, Residual, ResidualBlock, Sequential, build_model,
    load_model, model_names, model_summary, save_model,
)
from cnnlab.predict import predict_files
from cnnlab.training import (
    CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, evaluate, fit, predict_proba,
)
from cnnlab.versions import __version__

__all__ = [
    "ArrayDataset", "Augmenter", "dataset_names", "load_dataset", "parse_augment", "CnnlabError",
    "Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
    "GlobalAveragePooling2D", "MaxPooling2D", "Residual", "ResidualBlock", "Sequential", "build_model",
    "load_model", "model_names", "model_summary", "save_model", "predict_files",
    "CSVLogger", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "evaluate", "fit", "predict_proba",
    "__version__",
]
