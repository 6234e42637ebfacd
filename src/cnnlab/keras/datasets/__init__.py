"""`keras.datasets` on cnnlab's loaders: `mnist`, `fashion_mnist`, `cifar10`, `cifar100`.

Each module's `load_data()` returns `(x_train, y_train), (x_test, y_test)` as NumPy arrays with
Keras's shapes and dtypes. Files come from the data folder ($CNNLAB_DATA, else the user cache,
e.g. ~/.cache/cnnlab/datasets), downloaded once when online; offline, a missing file fails with one
line naming the files and the folder to put them in.

>>> from cnnlab.keras.datasets import mnist
>>> (x_train, y_train), (x_test, y_test) = mnist.load_data()  # doctest: +SKIP
>>> x_train.shape, x_train.dtype, y_train.shape  # doctest: +SKIP
((60000, 28, 28), dtype('uint8'), (60000,))
"""

from cnnlab.keras.datasets import cifar10, cifar100, fashion_mnist, mnist

__all__ = ["mnist", "fashion_mnist", "cifar10", "cifar100"]
