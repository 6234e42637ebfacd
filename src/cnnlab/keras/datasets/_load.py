"""What the four `load_data` functions share: cnnlab's loaders, then Keras's array layout.

cnnlab's loaders give uint8 (N, C, H, W) tensors and int64 labels; Keras gives NumPy uint8
(N, H, W) for one channel, (N, H, W, C) otherwise, and uint8 labels, (N,) for MNIST and
Fashion-MNIST, (N, 1) for CIFAR.
"""

from __future__ import annotations

import numpy as np

from cnnlab.data import ArrayDataset, FolderDataset, load_dataset
from cnnlab.errors import CnnlabError

__all__ = ["Split", "keras_arrays", "load_builtin"]

Split = tuple[np.ndarray, np.ndarray]  # (x, y)


def keras_arrays(data: ArrayDataset | FolderDataset, column_labels: bool) -> Split:
    """(x, y) in Keras's layout and dtypes from a cnnlab dataset held in memory.

    >>> data = ArrayDataset.from_arrays(np.zeros((2, 32, 32, 3), np.uint8), [0, 1])
    >>> x, y = keras_arrays(data, column_labels=True)
    >>> x.shape, x.dtype, y.shape, y.dtype
    ((2, 32, 32, 3), dtype('uint8'), (2, 1), dtype('uint8'))
    """
    if not isinstance(data, ArrayDataset):
        raise CnnlabError(f"{data.name}: expected the images in memory, got a {type(data).__name__} streamed from "
                          f"disk; load it with in_memory=True")
    images = data.images.numpy()  # (N, C, H, W), shares memory with the tensor
    if images.dtype != np.uint8:
        raise CnnlabError(f"{data.name}: expected uint8 images (0..255), got {images.dtype}")
    x = images[:, 0] if images.shape[1] == 1 else np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    labels = data.labels.numpy()
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 255):
        raise CnnlabError(f"{data.name}: labels span {int(labels.min())}..{int(labels.max())}; Keras's datasets "
                          f"hold uint8 labels (0..255)")
    y = labels.astype(np.uint8)
    return x, (y[:, None] if column_labels else y)


def load_builtin(name: str, column_labels: bool) -> tuple[Split, Split]:
    """((x_train, y_train), (x_test, y_test)) of cnnlab's built-in dataset `name`, in Keras's layout.

    The data folder is $CNNLAB_DATA, else the user cache; missing files are downloaded when online,
    and offline the error names the files and the folder to put them in.

    >>> (x_train, y_train), (x_test, y_test) = load_builtin("digits", column_labels=False)
    >>> x_train.shape, y_train.dtype, x_test.shape
    ((1437, 28, 28), dtype('uint8'), (360, 28, 28))
    """
    train = keras_arrays(load_dataset(name, split="train"), column_labels)
    test = keras_arrays(load_dataset(name, split="test"), column_labels)
    return train, test
