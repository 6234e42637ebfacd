"""`fashion_mnist.load_data()`: Zalando's Fashion-MNIST as Keras returns it, read by cnnlab's IDX loader.

Files: `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`,
`t10k-labels-idx1-ubyte.gz` (or uncompressed) in `<data folder>/fashion-mnist/` or the data folder.
"""

from __future__ import annotations

from cnnlab.keras.datasets._load import Split, load_builtin

__all__ = ["load_data"]


def load_data() -> tuple[Split, Split]:
    """Fashion-MNIST: x uint8 (60000, 28, 28) / (10000, 28, 28), y uint8 (N,) in 0..9.

    Classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt,
    7 Sneaker, 8 Bag, 9 Ankle boot.

    >>> (x_train, y_train), (x_test, y_test) = load_data()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_test.shape, round(float(x_train.mean()), 2)  # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'), (10000,), 72.94)
    """
    return load_builtin("fashion-mnist", column_labels=False)
