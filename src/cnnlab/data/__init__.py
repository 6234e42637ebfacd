"""Datasets: built-ins (digits, MNIST, Fashion-MNIST, CIFAR-10), image folders (or archives), arrays; splits, checks.

Every loader returns an `ArrayDataset` of uint8 (N, C, H, W) images and int64 labels, or, for an
image folder too big for memory, a `FolderDataset` that decodes files batch by batch. Both give
`batches(batch_size, order, augment, workers)`; batches become float32 in [0, 1] through
`float_images`, the one place normalization happens.

>>> from cnnlab.data import load_dataset, float_images
>>> data = load_dataset("digits")
>>> data.images.shape, data.num_classes, float_images(data.images).max().item()
(torch.Size([1437, 1, 28, 28]), 10, 1.0)

The names below are imported on first use (PEP 562), as in `cnnlab/__init__.py`: importing
`cnnlab.data.images` (decoding to NumPy) then imports no torch, which is what lets `cnnlab predict`
run an ONNX model without torch's 3 s import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab.lazy import lazy_attribute

if TYPE_CHECKING:
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

_HOMES = {  # public name -> the module that defines it
    **dict.fromkeys(["ARCHIVE_SUFFIXES", "archive_stem", "extract_archive", "is_archive"], "archives"),
    **dict.fromkeys(["ArrayDataset", "float_images", "model_inputs"], "arrays"),
    **dict.fromkeys(["Augmenter", "AugmentSpec", "parse_augment"], "augment"),
    **dict.fromkeys(["DataReport", "check_dataset"], "checks"),
    "MEMORY_BUDGET_BYTES": "folders",
    **dict.fromkeys(["IMAGE_EXTENSIONS", "list_images", "read_image"], "images"),
    **dict.fromkeys(["dataset_names", "default_data_dir", "load_dataset", "resolve_data_dir"], "loading"),
    **dict.fromkeys(["class_weights", "stratified_split"], "splits"),
    "FolderDataset": "streaming",
}


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule such as `cnnlab.data.folders`) when it is first used.

    >>> import cnnlab.data
    >>> cnnlab.data.list_images is cnnlab.data.images.list_images
    True
    """
    if name == "ImageDataset":
        value: Any = __getattr__("ArrayDataset") | __getattr__("FolderDataset")
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    return lazy_attribute(__name__, _HOMES, name, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
