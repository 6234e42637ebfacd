"""Image-folder datasets: one subfolder per class, as Keras's `image_dataset_from_directory` reads them.

    flowers/daisy/001.jpg, flowers/tulip/002.png, ...              (training data only)
    cifar10-jpg/train/cat/0001.jpg, cifar10-jpg/test/cat/0001.jpg  (a split dataset)

Class names are the subfolder names sorted alphabetically, as in Keras, so label indices match a
Keras model trained on the same folder. A folder whose decoded images fit MEMORY_BUDGET_BYTES is
decoded once into one uint8 tensor (`ArrayDataset`), which is cached in the data folder (see
cache.py) so the next load of the unchanged folder skips decoding; a bigger one streams from disk
(`FolderDataset`). Files that cannot be decoded are skipped and named in the dataset's `skipped`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from cnnlab.data.arrays import ArrayDataset
from cnnlab.data.cache import decoded_cache_path, folder_cache_key, read_decoded, resolve_data_dir, write_decoded
from cnnlab.data.images import (
    GRAYSCALE_MODES,
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    link_loop,
    list_images,
    max_image_pixels,
    probe_image,
    read_image,
)
from cnnlab.data.streaming import FolderDataset
from cnnlab.errors import CnnlabError

__all__ = ["load_image_folder", "load_image_files", "SPLIT_FOLDERS", "MEMORY_BUDGET_BYTES"]

# A folder holding `train/` and at least one of the others is a split dataset, not four classes.
SPLIT_FOLDERS = ("train", "test", "val", "validation")

# Folders whose decoded uint8 images (N * C * H * W bytes) fit in 2 GiB are decoded into memory once:
# every later epoch is then plain tensor slicing with no JPEG decoding (CIFAR-10 at 32x32 is 184 MB,
# ~14,000 RGB images at 224x224 are 2 GiB). 2 GiB leaves room for the model, optimizer state and
# float batches on an 8 GB laptop; above it, decoding per batch in DataLoader workers is the safer trade.
MEMORY_BUDGET_BYTES = 2 * 1024**3

Sample = tuple[int, Path]  # (label, file)


def load_image_folder(path: str | Path, split: str = "train", image_size: tuple[int, int] | None = None,
                      in_memory: bool | None = None, cache: bool = True,
                      data_dir: str | Path | None = None) -> ArrayDataset | FolderDataset:
    """Read a folder of class subfolders (or its `train/` / `test/` subfolder), skipping undecodable files.

    Channels are 1 when every decodable image is grayscale, else 3. Images are resized to `image_size`
    (H, W) if given, else to the size most of them have (ties: the largest). `in_memory`: True
    decodes everything now (`ArrayDataset`), False streams (`FolderDataset`), None decides by
    MEMORY_BUDGET_BYTES. Streaming reads only file headers now, so a file whose pixel data is
    damaged is found (and dropped) when a batch decodes it. With `cache`, decoded images are
    saved in `<data_dir>/decoded/` (data_dir: as `resolve_data_dir`) and later loads of the
    unchanged folder read them instead of decoding again.

    >>> import tempfile; from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for name, color in [("tulip", "red"), ("daisy", "white"), ("daisy", "yellow")]:
    ...     (root / name).mkdir(exist_ok=True); Image.new("RGB", (48, 32), color).save(root / name / f"{color}.png")
    >>> _ = (root / "tulip" / "empty.png").write_bytes(b"")
    >>> data = load_image_folder(root, image_size=(64, 64), cache=False)
    >>> data.class_names, data.images.shape, data.labels.tolist(), [Path(p).name for p in data.skipped]
    (['daisy', 'tulip'], torch.Size([3, 3, 64, 64]), [0, 0, 1], ['empty.png'])
    >>> load_image_folder(root, in_memory=False)  # doctest: +ELLIPSIS
    FolderDataset(name='...', files=3, classes=2, image=3x32x48, skipped=1)
    """
    if in_memory is not None and not isinstance(in_memory, bool):
        raise CnnlabError(f"in_memory must be True, False or None (decide by size), got {in_memory!r}")
    root = Path(path).expanduser().resolve()
    folder, class_names = _split_folder(root, split)
    listed = [(label, file) for label, name in enumerate(class_names) for file in _class_images(folder, name)]
    cache_path = None
    if cache and in_memory is not False:
        key = folder_cache_key(folder, [file for _, file in listed], split, image_size, _budget_key())
        cache_path = decoded_cache_path(resolve_data_dir(data_dir), key)
        cached = read_decoded(cache_path, root.name)
        # A cache written by a forced in_memory=True load may exceed the budget that None applies.
        if cached is not None and (in_memory or cached.images.numel() <= MEMORY_BUDGET_BYTES):
            return cached
    samples, modes, sizes, skipped = _probe_all(listed)
    channels = _decide_channels(samples, modes, sizes, skipped)
    _check_every_class_left(folder, class_names, samples, skipped)
    size = (int(image_size[0]), int(image_size[1])) if image_size is not None else _common_size(sizes)
    if in_memory is None:
        in_memory = len(samples) * channels * size[0] * size[1] <= MEMORY_BUDGET_BYTES
    if not in_memory:
        labels = torch.tensor([label for label, _ in samples], dtype=torch.int64)
        return FolderDataset([file for _, file in samples], labels, class_names, channels, size, root.name, skipped)
    data = _decode_all(folder, root.name, class_names, samples, channels, size, skipped)
    if cache_path is not None:
        try:
            write_decoded(cache_path, data)
        except OSError:  # a full disk or read-only cache folder costs speed next time, not this load
            pass
    return data


def load_image_files(root: str | Path, files: list[Path], labels: list[int], class_names: list[str], channels: int,
                     size: tuple[int, int], *, interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
                     in_memory: bool | None = None, cache: bool = True, data_dir: str | Path | None = None,
                     options: Sequence[object] = ()) -> ArrayDataset | FolderDataset:
    """Files under `root` that a caller listed (with labels), decoded as `load_image_folder` decodes a folder.

    For front ends that list files their own way (Keras's `image_dataset_from_directory`, its
    `flow_from_directory`): every image becomes (channels, *size) uint8 (`read_image` with
    `interpolation` and `crop_to_aspect_ratio`); files whose header is unreadable are skipped and
    named in `skipped`, and a class may end up with no images. In memory (and cached, keyed also by
    `options`) where it fits MEMORY_BUDGET_BYTES, else streamed, as `in_memory` says (None: decide).

    >>> import tempfile; from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for i, color in enumerate(["red", "blue"]): Image.new("RGB", (6, 4), color).save(root / f"{i}.png")
    >>> data = load_image_files(root, sorted(root.glob("*.png")), [1, 0], ["a", "b"], 4, (2, 3), cache=False)
    >>> data.images.shape, data.labels.tolist(), data.images[0, :, 0, 0].tolist()
    (torch.Size([2, 4, 2, 3]), [1, 0], [255, 0, 0, 255])
    """
    folder = Path(root).expanduser().resolve()
    listed = [(int(label), Path(file)) for label, file in zip(labels, files, strict=True)]
    cache_path = None
    key_options = [channels, interpolation, crop_to_aspect_ratio, list(class_names), *options, *_budget_key()]
    if cache and in_memory is not False:
        key = folder_cache_key(folder, [file for _, file in listed], "files", size, key_options)
        cache_path = decoded_cache_path(resolve_data_dir(data_dir), key)
        cached = read_decoded(cache_path, folder.name)
        if cached is not None and (in_memory or cached.images.numel() <= MEMORY_BUDGET_BYTES):
            return cached
    samples, _, _, skipped = _probe_all(listed)
    if in_memory is None:
        in_memory = len(samples) * channels * size[0] * size[1] <= MEMORY_BUDGET_BYTES
    if not in_memory:
        kept_labels = torch.tensor([label for label, _ in samples], dtype=torch.int64)
        return FolderDataset([file for _, file in samples], kept_labels, class_names, channels, size, folder.name,
                             skipped, interpolation=interpolation, crop_to_aspect_ratio=crop_to_aspect_ratio)
    data = _decode_all(folder, folder.name, class_names, samples, channels, size, skipped,
                       (interpolation, crop_to_aspect_ratio), check_classes=False)
    if cache_path is not None:
        try:
            write_decoded(cache_path, data)
        except OSError:  # as in load_image_folder: a cache that cannot be written costs speed, not the load
            pass
    return data


def _budget_key() -> list[str]:
    """The decode budget as part of a cache key: which files were skipped as too large depends on it, so a
    load after `--max-image-pixels` must not reuse a cache that left those files out. Empty at the default,
    which keeps the keys of existing caches."""
    limit = max_image_pixels()
    return [] if limit == MAX_IMAGE_PIXELS else [f"max_image_pixels={limit}"]


def _probe_all(listed: list[Sample]) -> tuple[list[Sample], list[str], list[tuple[int, int]], list[str]]:
    """Each readable file's (label, file), mode and (H, W), and the files whose header is unreadable."""
    samples, modes, sizes, skipped = [], [], [], []
    for label, file in listed:
        try:
            mode, image_hw = probe_image(file)
        except CnnlabError:  # zero bytes, not an image, a header cut short
            skipped.append(str(file))
            continue
        samples.append((label, file))
        modes.append(mode)
        sizes.append(image_hw)
    return samples, modes, sizes, skipped


def _decide_channels(samples: list[Sample], modes: list[str], sizes: list[tuple[int, int]],
                     skipped: list[str]) -> int:
    """1 when every image is grayscale, else 3, decided only by images that decode.

    A colour header is not enough: one damaged colour file among grayscale ones would make the
    whole folder (and the model trained on it) 3-channel and then be skipped. So colour files are
    fully decoded in order until one succeeds; those that fail are moved to `skipped` here (with
    their mode and size, which then decide nothing either). A colour folder costs one extra decode.
    """
    index = 0
    while index < len(samples):
        if modes[index] not in GRAYSCALE_MODES:
            try:
                read_image(samples[index][1], channels=3, size=(1, 1))  # every pixel decoded, little kept
                return 3
            except CnnlabError:  # a readable header over damaged pixel data
                skipped.append(str(samples[index][1]))
                del samples[index], modes[index], sizes[index]
                continue
        index += 1
    return 1


def _decode_all(folder: Path, name: str, class_names: list[str], samples: list[Sample], channels: int,
                size: tuple[int, int], skipped: list[str], resize: tuple[str, bool] = ("bilinear", False),
                check_classes: bool = True) -> ArrayDataset:
    """Every sample decoded into one (N, C, H, W) uint8 tensor; files whose pixels fail are skipped too.

    `resize` is read_image's (interpolation, crop_to_aspect_ratio); `check_classes` fails when a class lost
    every image (a front end whose classes may be empty, as Keras's, turns it off)."""
    images = torch.empty((len(samples), channels, size[0], size[1]), dtype=torch.uint8)  # (N, C, H, W)
    kept: list[Sample] = []
    for label, file in samples:
        try:
            images[len(kept)] = read_image(file, channels, size, *resize)
        except CnnlabError:  # truncated or corrupt pixel data behind a readable header
            skipped.append(str(file))
            continue
        kept.append((label, file))
    if check_classes:
        _check_every_class_left(folder, class_names, kept, skipped)
    if len(kept) < len(samples):
        images = images[:len(kept)].clone()  # drop the unused rows' memory
    labels = torch.tensor([label for label, _ in kept], dtype=torch.int64)
    return ArrayDataset(images, labels, class_names, name=name, skipped=skipped)


def _check_every_class_left(folder: Path, class_names: list[str], samples: list[Sample], skipped: list[str]) -> None:
    """Fail, naming the class folder and its bad files, when skipping left a class with no images."""
    counts = Counter(label for label, _ in samples)
    for label, name in enumerate(class_names):
        if counts[label] == 0:
            class_folder = folder / name
            bad = [Path(p).name for p in skipped if Path(p).is_relative_to(class_folder)]
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise CnnlabError(f"class folder {str(class_folder)!r} has no decodable images ({len(bad)} file(s) "
                              f"could not be decoded: {shown}); replace those files or remove the folder "
                              f"(`cnnlab check-data {folder}` says why each failed)")


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
    for name in names:
        target = link_loop(folder / name)
        if target is not None:
            raise CnnlabError(f"class folder {str(folder / name)!r} is a symbolic link to {str(target)!r}, which "
                              f"contains it (a loop: its images would be read again under another label); "
                              f"remove the link or point it at a folder of that class's images")
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
