"""`cifar100.load_data()`: CIFAR-100 as Keras returns it, from `cifar-100-python.tar.gz` or `cifar-100-python/`.

The files are looked for in the data folder, `<data folder>/cifar100/` and `<data folder>/cifar-100/`,
and downloaded there once when online (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz).
"""

from __future__ import annotations

from cnnlab.data import default_data_dir
from cnnlab.data.cifar import CIFAR100_LABEL_MODES, load_cifar100
from cnnlab.errors import CnnlabError
from cnnlab.keras.datasets._load import Split, keras_arrays

__all__ = ["load_data"]


def load_data(label_mode: str = "fine") -> tuple[Split, Split]:
    """CIFAR-100: x uint8 (50000, 32, 32, 3) / (10000, 32, 32, 3), y uint8 (N, 1), in 0..99 with
    `label_mode="fine"`, or 0..19 (the 20 superclasses) with `label_mode="coarse"`.

    >>> (x_train, y_train), (x_test, y_test) = load_data(label_mode="coarse")  # doctest: +SKIP
    >>> x_train.shape, y_train.shape, y_train.dtype, int(y_train.max())  # doctest: +SKIP
    ((50000, 32, 32, 3), (50000, 1), dtype('uint8'), 19)
    """
    if label_mode not in CIFAR100_LABEL_MODES:
        raise CnnlabError(f"cifar100.load_data: label_mode must be one of 'fine', 'coarse', got {label_mode!r}")
    data_dir = default_data_dir()
    train, test = (keras_arrays(load_cifar100(split, data_dir, download=True, label_mode=label_mode), True)
                   for split in ("train", "test"))
    return train, test
