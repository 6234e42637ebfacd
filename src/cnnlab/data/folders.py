"""Image-folder datasets: one subfolder per class, as Keras's `image_dataset_from_directory` reads them.

    flowers/daisy/001.jpg, flowers/tulip/002.png, ...              (training data only)
    cifar10-jpg/train/cat/0001.jpg, cifar10-jpg/test/cat/0001.jpg  (a split dataset)

Class names are the subfolder names sorted alphabetically, as in Keras, so label indices match a
Keras model trained on the same folder. All images are decoded once into one uint8 tensor.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from cnnlab.data.arrays import ArrayDataset
from cnnlab.data.images import GRAYSCALE_MODES, IMAGE_EXTENSIONS, list_images, probe_image, read_image
from cnnlab.errors import CnnlabError

__all__ = ["load_image_folder", "SPLIT_FOLDERS"]

# A folder holding `train/` and at least one of the others is a split dataset, not four classes.
SPLIT_FOLDERS = ("train", "test", "val", "validation")


def load_image_folder(path: str | Path, split: str = "train",
                      image_size: tuple[int, int] | None = None) -> ArrayDataset:
    """Read a folder of class subfolders (or its `train/` / `test/` subfolder) into memory.

    Channels are 1 when every image is grayscale, else 3. Images are resized to `image_size`
    (H, W) if given, else to the size most of them have (ties: the largest).

    >>> import tempfile; from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for name, color in [("tulip", "red"), ("daisy", "white"), ("daisy", "yellow")]:
    ...     (root / name).mkdir(exist_ok=True); Image.new("RGB", (48, 32), color).save(root / name / f"{color}.png")
    >>> data = load_image_folder(root, image_size=(64, 64))
    >>> data.class_names, data.images.shape, data.labels.tolist()
    (['daisy', 'tulip'], torch.Size([3, 3, 64, 64]), [0, 0, 1])
    """
    root = Path(path).expanduser().resolve()
    folder, class_names = _split_folder(root, split)
    samples = [(label, file) for label, name in enumerate(class_names) for file in _class_images(folder, name)]
    probes = [probe_image(file) for _, file in samples]
    channels = 1 if all(mode in GRAYSCALE_MODES for mode, _ in probes) else 3
    size = tuple(image_size) if image_size is not None else _common_size([s for _, s in probes])
    images = torch.empty((len(samples), channels, size[0], size[1]), dtype=torch.uint8)  # (N, C, H, W)
    for i, (_, file) in enumerate(samples):
        images[i] = read_image(file, channels, (size[0], size[1]))
    labels = torch.tensor([label for label, _ in samples], dtype=torch.int64)
    return ArrayDataset(images, labels, class_names, name=root.name)


def _split_folder(root: Path, split: str) -> tuple[Path, list[str]]:
    """The folder that holds `split`'s class subfolders, and the class names."""
    subfolders = _subfolders(root)
    split_names = [s for s in SPLIT_FOLDERS if s in subfolders]
    is_split = "train" in split_names and len(split_names) > 1
    if not is_split:
        if split != "train":
            raise CnnlabError(f"folder {str(root)!r} has no {split}/ subfolder, so it is read as training data "
                              f"only; put {split} images in {root / split}/<class>/ next to train/<class>/, "
                              f"or load split='train'")
        return root, _class_names(root)
    if split not in split_names:
        present = ", ".join(f"{s}/" for s in split_names)
        raise CnnlabError(f"folder {str(root)!r} has no {split}/ subfolder (it has {present}); "
                          f"add {root / split}/<class>/ or load one of the splits it has")
    class_names = _class_names(root / "train")
    for other in split_names[1:]:
        other_names = _class_names(root / other)
        if other_names != class_names:
            missing = sorted(set(class_names) - set(other_names))
            extra = sorted(set(other_names) - set(class_names))
            raise CnnlabError(f"folder {str(root)!r}: class folders of {other}/ differ from train/ "
                              f"(missing {missing}, extra {extra}); every split needs the same class folders")
    return root / split, class_names


def _subfolders(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise CnnlabError(f"dataset folder {str(folder)!r} does not exist; give a folder with one subfolder per class")
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_names(folder: Path) -> list[str]:
    names = _subfolders(folder)
    if not names:
        loose = len(list_images(folder))
        hint = (f" (it holds {loose} image{'s' if loose > 1 else ''} directly: move them into one subfolder "
                f"per class)" if loose else "")
        raise CnnlabError(f"folder {str(folder)!r} has no class subfolders{hint}; expected "
                          f"{folder}/<class name>/<images>, one subfolder per class")
    if len(names) == 1:
        raise CnnlabError(f"folder {str(folder)!r} has only one class subfolder ({names[0]!r}); a classifier "
                          f"needs at least 2 classes: add one subfolder per class")
    return names


def _class_images(folder: Path, class_name: str) -> list[Path]:
    files = list_images(folder / class_name)
    if not files:
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise CnnlabError(f"class folder {str(folder / class_name)!r} has no images ({kinds}); "
                          f"add images to it or remove the folder")
    return files


def _common_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The most common (H, W); among equally common sizes the largest, so little detail is lost."""
    counts = Counter(sizes)
    return max(counts, key=lambda s: (counts[s], s[0] * s[1], s))
