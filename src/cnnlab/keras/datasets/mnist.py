"""`mnist.load_data()`: the MNIST digits as Keras returns them, read by cnnlab's IDX / npz loader.

Files: the four IDX files (`train-images-idx3-ubyte.gz`, ...) or Keras's own `mnist.npz`, in
`<data folder>/mnist/`, torchvision's `<data folder>/MNIST/raw/` or the data folder itself.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.data import default_data_dir, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.keras.datasets._load import Split, keras_arrays, load_builtin

__all__ = ["load_data"]

NPZ_NAME = "mnist.npz"  # Keras's file name; cnnlab's MNIST loader looks for exactly this name


def load_data(path: str = NPZ_NAME) -> tuple[Split, Split]:
    """MNIST: x uint8 (60000, 28, 28) / (10000, 28, 28), y uint8 (N,) in 0..9.

    `path` is Keras's: where `mnist.npz` lives, relative to the data folder (an absolute path
    works too). The default looks for the IDX files or `mnist.npz` in the usual places.

    >>> (x_train, y_train), (x_test, y_test) = load_data()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_train.shape, y_train.dtype  # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'), (60000,), dtype('uint8'))
    """
    if str(path) == NPZ_NAME:
        return load_builtin("mnist", column_labels=False)
    file = default_data_dir() / Path(path).expanduser()  # an absolute path replaces the data folder
    if file.name != NPZ_NAME:
        raise CnnlabError(f"mnist.load_data: path must name a file called {NPZ_NAME!r} (Keras's MNIST file), got "
                          f"{str(path)!r}; rename the file, or leave path out to use the data folder")
    train, test = (keras_arrays(load_dataset("mnist", split=split, data_dir=file.parent), column_labels=False)
                   for split in ("train", "test"))
    return train, test
