"""Datasets as in-memory tensors: built-ins (digits, MNIST, Fashion-MNIST, CIFAR-10), image folders, arrays.

Every loader returns an `ArrayDataset` of uint8 (N, C, H, W) images and int64 labels; batches
become float32 in [0, 1] through `float_images`, the one place normalization happens.

>>> from cnnlab.data import load_dataset, float_images
>>> data = load_dataset("digits")
>>> data.images.shape, data.num_classes, float_images(data.images).max().item()
(torch.Size([1437, 1, 28, 28]), 10, 1.0)
"""

from cnnlab.data.arrays import ArrayDataset, float_images
from cnnlab.data.images import IMAGE_EXTENSIONS, list_images, read_image
from cnnlab.data.loading import dataset_names, default_data_dir, load_dataset, resolve_data_dir

__all__ = [
    "ArrayDataset",
    "float_images",
    "dataset_names",
    "default_data_dir",
    "resolve_data_dir",
    "load_dataset",
    "read_image",
    "IMAGE_EXTENSIONS",
    "list_images",
]
