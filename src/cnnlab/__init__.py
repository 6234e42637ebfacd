"""cnnlab: build, train, understand and ship convolutional image classifiers on PyTorch.

    import cnnlab
    train = cnnlab.load_dataset("digits")
    model = cnnlab.build_model("seed-mnist", train.input_shape, train.num_classes)
    cnnlab.model_summary(model, print_fn=print)
    history = cnnlab.fit(model, train, epochs=10, validation_split=0.1)
    print(cnnlab.evaluate(model, cnnlab.load_dataset("digits", split="test")))

The names below are imported on first use (PEP 562): `import cnnlab` and the `cnnlab` command's
start import no torch, so the command handles Ctrl-C and closed pipes from its first instant (a
Ctrl-C during the 3 s torch import was a KeyboardInterrupt traceback) and `cnnlab --help` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab.lazy import lazy_attribute

from cnnlab.errors import CnnlabError
from cnnlab.versions import __version__

if TYPE_CHECKING:
    from cnnlab.data import ArrayDataset, Augmenter, dataset_names, load_dataset, parse_augment
    from cnnlab.models import (
        Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
        GlobalAveragePooling2D, MaxPooling2D, Residual, ResidualBlock, Sequential, build_model,
        load_model, model_names, model_summary, save_model,
    )
    from cnnlab.predict import predict_files
    from cnnlab.training import (
        CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, evaluate, fit, predict_proba,
    )

_HOMES = {  # public name -> the module that defines it
    **dict.fromkeys(["ArrayDataset", "Augmenter", "dataset_names", "load_dataset", "parse_augment"], "cnnlab.data"),
    **dict.fromkeys(["Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
                     "GlobalAveragePooling2D", "MaxPooling2D", "Residual", "ResidualBlock", "Sequential",
                     "build_model", "load_model", "model_names", "model_summary", "save_model"], "cnnlab.models"),
    "predict_files": "cnnlab.predict",
    **dict.fromkeys(["CSVLogger", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "evaluate", "fit",
                     "predict_proba"], "cnnlab.training"),
}

__all__ = [
    "ArrayDataset", "Augmenter", "dataset_names", "load_dataset", "parse_augment", "CnnlabError",
    "Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
    "GlobalAveragePooling2D", "MaxPooling2D", "Residual", "ResidualBlock", "Sequential", "build_model",
    "load_model", "model_names", "model_summary", "save_model", "predict_files",
    "CSVLogger", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "evaluate", "fit", "predict_proba",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or a subpackage such as `cnnlab.keras`) when it is first used.

    >>> import cnnlab
    >>> cnnlab.build_model is cnnlab.models.build_model
    True
    """
    return lazy_attribute(__name__, _HOMES, name, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
