"""benchmarks/keras_side_by_side.py: the programs stay one tf.keras text, and the cnnlab path runs end to end.

The tf.keras and Keras 3 environments do not exist in CI, so only the import swap (pure text) and the
cnnlab backend's smoke run are tested here.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SHARED = ROOT.parent / "shared" / "datasets"
# What each backend's import lines must read (cnnlab.keras's documented swap; Keras 3's own module).
SWAPS = {
    "keras3-torch": {"import tensorflow as tf": "import keras", "from tensorflow.keras": "from keras"},
    "cnnlab": {"import tensorflow as tf": "from cnnlab import keras", "from tensorflow.keras": "from cnnlab.keras"},
}


def _runner():
    if str(BENCHMARKS) not in sys.path:  # the runner imports its sibling report.py, as when run from there
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("keras_side_by_side", BENCHMARKS / "keras_side_by_side.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _expected_line(line: str, backend: str) -> str:
    for old, new in SWAPS[backend].items():
        if line.startswith(old):
            return new + line[len(old):]
    return line.replace("tf.keras.", "keras.").replace("tf.newaxis", "None")


@pytest.mark.parametrize("program", ["seed000_fashion.py", "seed003_bn_cifar10.py"])
def test_variants_differ_from_the_tf_keras_source_only_by_the_import_swap(program):
    runner = _runner()
    source = (BENCHMARKS / "keras_programs" / program).read_text()
    assert runner.variant(source, "tf") == source
    for backend in SWAPS:
        text = runner.variant(source, backend)
        compile(text, f"{program} ({backend})", "exec")
        lines, expected = text.splitlines(), [_expected_line(line, backend) for line in source.splitlines()]
        assert lines == expected
        changed = [(s, v) for s, v in zip(source.splitlines(), lines, strict=True) if s != v]
        imports = [v for s, v in changed if s.startswith(("import tensorflow", "from tensorflow"))]
        assert len(imports) == (2 if program.startswith("seed000") else 3)  # every import line swapped
        assert all("tf." not in v for _, v in changed)
        code = [line for line in lines if not line.lstrip().startswith("#")]
        assert not any("tf." in line or "tensorflow" in line for line in code)


def test_variant_refuses_a_tensorflow_use_the_swap_does_not_cover():
    with pytest.raises(SystemExit, match="tf.random"):
        _runner().variant("import tensorflow as tf\nx = tf.random.normal((2,))\n", "cnnlab")


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason=f"no Fashion-MNIST in {SHARED}")
def test_smoke_run_of_seed000_on_cnnlab_records_time_and_accuracy(tmp_path):
    out = tmp_path / "side-by-side.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "keras_side_by_side.py"), "--smoke", "--backends", "cnnlab",
         "--programs", "seed000", "--seeds", "3", "--home", str(tmp_path / "home"), "--shared", str(SHARED),
         "--out", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert {k: run[k] for k in ("program", "backend", "seed", "smoke", "epochs_run")} == {
        "program": "seed000", "backend": "cnnlab", "seed": 3, "smoke": True, "epochs_run": 1}
    assert 0 < run["fit_seconds"] < run["wall_seconds"]
    assert 0.2 < run["test_accuracy"] <= 1.0  # 10 classes: chance is 0.1; 540 images, 1 epoch reach about 0.4-0.5
    assert report["machine"]["cores"] >= 1 and report["machine"]["versions"]["cnnlab"]["torch"]
    home = tmp_path / "home"
    assert (home / ".gitignore").read_text() == "*\n"  # the private HOME keeps itself out of git
    assert (home / ".keras" / "datasets" / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert (home / "runs" / "seed000-cnnlab.py").read_text().startswith("# Seed 000")
