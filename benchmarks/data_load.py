"""First and cached load time of CIFAR-10 (JPEG q75) from its archive: extract + decode once, then the cache.

Each load runs in a fresh process (no warm Python state), against a new empty data directory:
1. first load: the archive is extracted into <data_dir>/extracted/ and all 60,000 JPEGs decoded,
   then saved as uint8 safetensors in <data_dir>/decoded/;
2. cached load: the same call again, which hashes the folder listing and reads the decoded file;
3. the extracted folder given directly (also cached by then).
Prints a table and writes JSON.

    .venv/bin/python benchmarks/data_load.py --json benchmarks/results/data-load.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import report

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE.parent.parent / "shared" / "datasets" / "cifar10-jpg" / "cifar10-jpg.tar.gz"

LOAD = """
import json, sys, time
from cnnlab.data import load_dataset
start = time.perf_counter()
sizes = [len(load_dataset(sys.argv[1], split=split, data_dir=sys.argv[2])) for split in ("train", "test")]
print(json.dumps({"seconds": time.perf_counter() - start, "images": sum(sizes)}))
"""


def timed_load(source: Path, data_dir: Path) -> dict:
    """Load train and test of `source` in a fresh process; its seconds and image count."""
    done = subprocess.run([sys.executable, "-c", LOAD, str(source), str(data_dir)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        sys.exit(f"loading {source} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(f"{args.archive} not found; pass --archive path/to/cifar10-jpg.tar.gz")
    machine = report.machine(thread_policy="each load in a fresh process at torch's default")
    with tempfile.TemporaryDirectory(prefix="cnnlab-data-load-") as tmp:
        data_dir = Path(tmp)
        first = timed_load(args.archive, data_dir)
        cached = timed_load(args.archive, data_dir)
        folders = [p for p in (data_dir / "extracted").rglob("train") if p.is_dir()]
        folder = timed_load(folders[0].parent, data_dir) if folders else None
        decoded_mb = sum(p.stat().st_size for p in (data_dir / "decoded").glob("*")) / 2**20
    rows = {"first load (extract + decode + write cache)": first, "cached load (archive path)": cached}
    if folder is not None:
        rows["cached load (extracted folder path)"] = folder
    for what, r in rows.items():
        print(f"{what:45s} {r['seconds']:7.2f} s  {r['images']} images")
    print(f"decoded cache: {decoded_mb:.0f} MiB; speed-up {first['seconds'] / cached['seconds']:.0f}x")
    if args.json:
        report.write_json(args.json, {"machine": machine, "archive": str(args.archive), "loads": rows,
                                      "decoded_cache_mib": decoded_mb})


if __name__ == "__main__":
    main()
