"""One tf.keras program, three engines: tf.keras, Keras 3 on torch, and cnnlab.keras, in one sitting.

The seed programs in `keras_programs/` are written once in tf.keras syntax. For each backend this
script rewrites only their imports (the swap cnnlab.keras documents) and runs the result in a fresh
process of that backend's environment, one run at a time, rotating the backend order with the seed
so drift in the machine's speed hits every backend alike:

    tf            benchmarks/.venv-tf (bash benchmarks/setup_tf.sh): the program as written
    keras3-torch  benchmarks/.venv-k3 (bash benchmarks/setup_keras3.sh), KERAS_BACKEND=torch:
                  `import keras`, `from keras import ...`, tf.keras.X -> keras.X, tf.newaxis -> None
    cnnlab        this environment: `from cnnlab import keras`, `from cnnlab.keras import ...`, same swaps

Timing: the program itself times `model.fit` with time.perf_counter() (lines identical on every
backend) and prints one JSON line: fit_seconds, test_accuracy, epochs_run. This script adds the
whole process's wall time (interpreter start, imports, data loading, fit, evaluate).

Data, read offline and identical on every backend: a private folder (default benchmarks/.keras-data,
git-ignored by its own .gitignore) is HOME and KERAS_HOME's parent for every run and holds Keras's
cache layout; CNNLAB_DATA points into it. Fashion-MNIST: the shared IDX files, copied. CIFAR-10:
the shared JPEG q75 copy decoded once by cnnlab, shuffled with a fixed seed (the JPEG tree is sorted
by class) and written as canonical `cifar-10-batches-py` pickles, plus the archive Keras 3.15 looks
for (`cifar-10-batches-py-target_archive`). Keras checks that archive against the sha256 of the
original download, which a rebuilt archive cannot match; so for the CIFAR program on tf and
keras3-torch the launcher (`--launch`) makes Keras's `validate_file` accept that one archive when it
matches the sha256 recorded when it was built. Nothing else in Keras is touched, and nothing in cnnlab.

    .venv/bin/python benchmarks/keras_side_by_side.py --smoke                        # minutes: proves every path
    .venv/bin/python benchmarks/keras_side_by_side.py --programs seed000 --seeds 0 1 2
    .venv/bin/python benchmarks/keras_side_by_side.py --programs seed003-bn --seeds 0 1 2 --append
    .venv/bin/python benchmarks/keras_side_by_side.py --programs seed003-bn --epochs 3 --seeds 0 1 2 --append
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"
PROGRAMS = {"seed000": "seed000_fashion.py", "seed003-bn": "seed003_bn_cifar10.py"}
PYTHONS = {"tf": HERE / ".venv-tf" / "bin" / "python", "keras3-torch": HERE / ".venv-k3" / "bin" / "python",
           "cnnlab": Path(sys.executable)}
BACKENDS = list(PYTHONS)
# The import swap per backend: (tf.keras line start, replacement). Other lines: only the two token swaps.
IMPORTS = {
    "tf": [],
    "keras3-torch": [("import tensorflow as tf", "import keras"), ("from tensorflow.keras", "from keras")],
    "cnnlab": [("import tensorflow as tf", "from cnnlab import keras"), ("from tensorflow.keras", "from cnnlab.keras")],
}
TOKENS = [("tf.keras.", "keras."), ("tf.newaxis", "None")]
VERSIONS = {"tf": ["tensorflow-cpu", "keras", "numpy"], "keras3-torch": ["keras", "torch", "numpy"],
            "cnnlab": ["cnnlab", "torch", "numpy"]}
FASHION_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# What keras/src/datasets/cifar10.py (Keras 3.15) asks get_file for, and the sha256 it expects.
KERAS_CIFAR_ARCHIVE = "cifar-10-batches-py-target_archive"
KERAS_CIFAR_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
ORDER_SEED = 0  # the permutation cnnlab's JPEG fallback and real_arrays.py apply to the same folder


def variant(source: str, backend: str) -> str:
    """`source` (tf.keras syntax) with its imports swapped for `backend`; every other character kept.

    >>> variant("import tensorflow as tf\\nx = tf.keras.layers.Dense(1)\\n", "cnnlab")
    'from cnnlab import keras\\nx = keras.layers.Dense(1)\\n'
    """
    if backend == "tf":
        return source
    lines = []
    for line in source.splitlines(keepends=True):
        for old, new in IMPORTS[backend]:
            if line.startswith(old):
                line = new + line[len(old):]
        for old, new in TOKENS:
            line = line.replace(old, new)
        lines.append(line)
    left = [line for line in lines if not line.lstrip().startswith("#") and ("tf." in line or "tensorflow" in line)]
    if left:
        raise SystemExit(f"the {backend} variant still uses TensorFlow; extend IMPORTS or TOKENS for: {left}")
    return "".join(lines)


def keras_datasets(home: Path) -> Path:
    """Keras's dataset cache under the private HOME; also cnnlab's data folder."""
    return home / ".keras" / "datasets"


def prepare_data(home: Path, shared: Path, programs: list[str]) -> None:
    """Put the data the `programs` read into `home`, once: nothing is written outside it."""
    datasets = keras_datasets(home)
    datasets.mkdir(parents=True, exist_ok=True)
    (home / ".gitignore").write_text("*\n")  # the folder keeps itself out of git
    if "seed000" in programs:
        (datasets / "fashion-mnist").mkdir(exist_ok=True)
        for name in FASHION_FILES:
            if not (datasets / "fashion-mnist" / name).is_file():
                shutil.copyfile(shared / "fashion-mnist" / name, datasets / "fashion-mnist" / name)
    if "seed003-bn" in programs and not (datasets / f"{KERAS_CIFAR_ARCHIVE}.sha256").is_file():
        write_cifar_batches(shared / "cifar10-jpg" / "cifar10-jpg.tar.gz", datasets, scratch=home / "decode")
        folder = datasets / KERAS_CIFAR_ARCHIVE
        with tarfile.open(folder, "w") as tar:  # uncompressed: Keras extracts it on every load_data()
            tar.add(datasets / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        (datasets / f"{KERAS_CIFAR_ARCHIVE}.sha256").write_text(sha256(folder) + "\n")


def write_cifar_batches(jpeg_archive: Path, datasets: Path, scratch: Path) -> None:
    """CIFAR-10's canonical `cifar-10-batches-py/` from the JPEG copy's pixels, as cnnlab decodes them.

    Batches are dicts with bytes keys, as the original (Python 2) files: b"batch_label", b"labels"
    (list of int) and b"data" (uint8 (10000, 3072), each row the R, G, B planes of 32x32); no
    b"filenames" (no loader reads them). Pickle protocol 4: bytes and ndarrays need no global beyond
    numpy's array rebuilders, the only ones Keras's and cnnlab's restricted unpicklers allow.
    """
    import pickle

    import numpy as np

    import cnnlab

    out = datasets / "cifar-10-batches-py"
    out.mkdir(exist_ok=True)
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        data = cnnlab.load_dataset(jpeg_archive, split=split, data_dir=scratch, in_memory=True, cache=False)
        if data.class_names != CIFAR_CLASSES or len(data) != 10_000 * len(names):
            raise SystemExit(f"{jpeg_archive} {split}: expected CIFAR-10's classes and {10_000 * len(names)} images, "
                             f"got {data.class_names} and {len(data)}")
        order = np.random.default_rng(ORDER_SEED).permutation(len(data))  # the tree is sorted by class
        rows = data.images.numpy()[order].reshape(len(data), 3072)  # (N, 3, 32, 32) -> (N, 3072): planar RGB
        labels = data.labels.numpy()[order]
        for k, name in enumerate(names):
            part = slice(10_000 * k, 10_000 * (k + 1))
            batch = {b"batch_label": f"{split} batch {k + 1} of {len(names)} (CIFAR-10 JPEG q75)".encode(),
                     b"labels": [int(v) for v in labels[part]], b"data": np.ascontiguousarray(rows[part])}
            (out / name).write_bytes(pickle.dumps(batch, protocol=4))
    meta = {b"num_cases_per_batch": 10_000, b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}
    (out / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))
    shutil.rmtree(scratch, ignore_errors=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def launch(program: Path) -> None:
    """Run `program` as `python program` would; first, where the runner asks (CIFAR on tf and
    keras3-torch), let Keras accept the rebuilt CIFAR archive whose sha256 setup recorded."""
    archive = os.environ.get("BENCH_CIFAR_ARCHIVE")
    if archive:
        from keras.src.utils import file_utils

        keras_validate = file_utils.validate_file
        recorded = Path(archive + ".sha256").read_text().strip()

        def validate_file(fpath, file_hash, algorithm="auto", chunk_size=65535):
            if os.path.samefile(fpath, archive) and file_hash == KERAS_CIFAR_SHA256:
                return keras_validate(fpath, recorded, "sha256", chunk_size)
            return keras_validate(fpath, file_hash, algorithm, chunk_size)

        file_utils.validate_file = validate_file
    sys.argv = [str(program)]
    runpy.run_path(str(program), run_name="__main__")


def run_one(program: str, backend: str, seed: int, smoke: bool, home: Path, epochs: int | None = None) -> dict:
    """One fresh process of `program` on `backend`; its JSON line plus the whole process's wall time."""
    runs = home / "runs"
    runs.mkdir(exist_ok=True)
    source = (HERE / "keras_programs" / PROGRAMS[program]).read_text()
    path = runs / f"{program}-{backend}.py"
    path.write_text(variant(source, backend))
    env = {**os.environ, "HOME": str(home), "KERAS_HOME": str(home / ".keras"),
           "CNNLAB_DATA": str(keras_datasets(home)), "BENCH_SEED": str(seed)}
    for name in ("BENCH_SMALL", "BENCH_EPOCHS", "KERAS_BACKEND", "BENCH_CIFAR_ARCHIVE"):
        env.pop(name, None)
    if smoke:
        env["BENCH_SMALL"] = "1"
    if epochs is not None:
        env["BENCH_EPOCHS"] = str(epochs)
    if backend == "keras3-torch":
        env["KERAS_BACKEND"] = "torch"
    if program == "seed003-bn" and backend != "cnnlab":
        env["BENCH_CIFAR_ARCHIVE"] = str(keras_datasets(home) / KERAS_CIFAR_ARCHIVE)
    tag = ("-smoke" if smoke else "") + (f"-epochs{epochs}" if epochs is not None else "")
    log = runs / f"{program}-{backend}-seed{seed}{tag}.log"
    command = [str(PYTHONS[backend]), str(Path(__file__).resolve()), "--launch", str(path)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    results = [line for line in done.stdout.splitlines() if line.startswith('{"fit_seconds"')]
    if done.returncode != 0 or not results:
        sys.exit(f"{program} on {backend} (seed {seed}) failed (exit {done.returncode}); log: {log}\n"
                 f"{done.stderr[-3000:]}")
    return {"program": program, "backend": backend, "seed": seed, "smoke": smoke, "epochs_cap": epochs,
            **json.loads(results[-1]), "wall_seconds": wall}


def versions(backends: list[str]) -> dict:
    """Package versions in each backend's environment, read from metadata (nothing heavy imported)."""
    found = {}
    for backend in backends:
        code = ("import importlib.metadata as m, json, platform, sys\n"
                f"names = {VERSIONS[backend]!r}\n"
                "print(json.dumps({'python': platform.python_version(), **{n: m.version(n) for n in names}}))")
        done = subprocess.run([str(PYTHONS[backend]), "-c", code], capture_output=True, text=True, check=True)
        found[backend] = json.loads(done.stdout)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", nargs="+", choices=list(PROGRAMS), default=list(PROGRAMS))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=BACKENDS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="keras.utils.set_random_seed")
    parser.add_argument("--out", type=Path, help="JSON of the runs (default: results/keras-side-by-side.json; "
                        "with --smoke: HOME/runs/smoke.json, so a smoke run never replaces real figures)")
    parser.add_argument("--smoke", action="store_true", help="600 train / 200 test images, 1 epoch: proves the paths")
    parser.add_argument("--home", type=Path, default=HERE / ".keras-data",
                        help="private folder: HOME, Keras's cache and CNNLAB_DATA of every run, logs in runs/")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared datasets folder (read only)")
    parser.add_argument("--append", action="store_true", help="keep the runs already in --out and add these "
                        "(a long measurement over several sittings)")
    parser.add_argument("--shared-machine", action="store_true",
                        help="other work shares the CPU during these runs: their accuracy counts, their times are "
                        "recorded but kept out of every speed figure")
    parser.add_argument("--epochs", type=int, help="cap seed003-bn's 100 epochs at this many (a per-epoch speed "
                        "sitting: every engine runs the same epochs; reported as its own rows)")
    parser.add_argument("--launch", type=Path, help=argparse.SUPPRESS)  # internal: run one program
    args = parser.parse_args()
    if args.launch:  # in the backend's own environment, which may have no torch: nothing of ours imported
        launch(args.launch)
        return
    import report  # the machine record reads torch's matmul peak
    if args.epochs is not None and (args.epochs < 1 or args.programs != ["seed003-bn"]):
        sys.exit(f"--epochs {args.epochs}: expected a positive count with --programs seed003-bn only (seed000 runs "
                 f"its one epoch as written)")
    for backend in args.backends:
        if not PYTHONS[backend].exists():
            sys.exit(f"no {backend} environment at {PYTHONS[backend]}; run benchmarks/setup_tf.sh (tf) or "
                     f"benchmarks/setup_keras3.sh (keras3-torch)")
    home = args.home.resolve()
    out = args.out or (home / "runs" / "smoke.json" if args.smoke else HERE / "results" / "keras-side-by-side.json")
    prepare_data(home, args.shared, args.programs)
    kept = report.earlier_runs(out) if args.append else []
    machine = report.machine(thread_policy="each engine in its own process at its own default")
    record = {"machine": {**machine, "versions": versions(args.backends)}, "runs": kept}
    for round_, seed in enumerate(args.seeds):
        shift = round_ % len(args.backends)
        for program in args.programs:
            for backend in args.backends[shift:] + args.backends[:shift]:
                run = {**run_one(program, backend, seed, args.smoke, home, args.epochs),
                       "timed": not args.shared_machine, "date": time.strftime("%Y-%m-%d")}
                print(f"{program} {backend} seed {seed}: fit {run['fit_seconds']:.2f} s, wall {run['wall_seconds']:.2f}"
                      f" s, {run['epochs_run']} epochs, test accuracy {run['test_accuracy']:.4f}", flush=True)
                record["runs"].append(run)
                report.write_json(out, record)  # after every run: a stopped sitting keeps what it finished


if __name__ == "__main__":
    main()
