"""Datasets: built-ins (digits, MNIST, Fashion-MNIST, CIFAR-10), image folders (or archives), arrays; splits, checks.

Every loader returns an `ArrayDataset` of uint8 (N, C, H, W) images and int64 labels, or, for an
image folder too big for memory, a `FolderDataset` that decodes files batch by batch. Both give
`batches(batch_size, order, augment, workers)`; batches become float32 in [0, 1] through
`float_images`, the one place normalization happens.

>>> from cnnlab.data import load_dataset, float_images
>>> data = load_dataset("digits")
>>> data.images.shape, data.num_classes, float_images(data.images).max().item()
(torch.Size([1437, 1, 28, 28]), 10, 1.0)
"""

from cnnlab.data.archives import ARCHIVE_SUFFIXES, archive_stem, extract_archive, is_archive
from cnnlab.data.arrays import ArrayDataset, float_images, model_inputs
from cnnlab.data.augment import Augmenter, AugmentSpec, parse_augment
from cnnlab.data.checks import DataReport, check_dataset
from cnnlab.data.folders import MEMORY_BUDGET_BYTES
from cnnlab.data.images import IMAGE_EXTENSIONS, list_images, read_image
from cnnlab.data.loading import dataset_names, default_data_dir, load_dataset, resolve_data_dir
from cnnlab.data.splits import class_weights, stratified_split
from cnnlab.data.streaming import FolderDataset

ImageDataset = ArrayDataset | FolderDataset  # both give batches(), labels, input_shape, class_names, subset()

__all__ = [
    "ArrayDataset",
    "FolderDataset",
    "ImageDataset",
    "float_images",
    "model_inputs",
    "dataset_names",
    "default_data_dir",
    "resolve_data_dir",
    "load_dataset",
    "MEMORY_BUDGET_BYTES",
    "ARCHIVE_SUFFIXES",
    "is_archive",
    "archive_stem",
    "extract_archive",
    "read_image",
    "IMAGE_EXTENSIONS",
    "list_images",
    "stratified_split",
    "class_weights",
    "check_dataset",
    "DataReport",
    "Augmenter",
    "AugmentSpec",
    "parse_augment",
]
