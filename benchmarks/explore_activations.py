"""Server time for all activations of one image in `cnnlab explore` (issue 20's bar: under 100 ms for the seed CNNs).

Measures, per fresh input (nothing cached): the one forward pass with hooks, and that pass plus every
layer's PNG grid (what the page asks for). The median of REPEATS runs after WARMUP runs.

    PYTHONPATH=src python benchmarks/explore_activations.py [seed-mnist|seed-cifar10]
"""

import statistics
import sys
import time

import torch

from cnnlab.explore.explorer import Explorer
from cnnlab.models.files import ModelCard
from cnnlab.models.zoo import build_model

WARMUP, REPEATS = 5, 50
SHAPES = {"seed-mnist": [28, 28, 1], "seed-cifar10": [32, 32, 3]}


def main(name: str = "seed-mnist") -> None:
    h, w, c = SHAPES[name]
    torch.manual_seed(0)
    explorer = Explorer(build_model(name, (h, w, c)), ModelCard({"name": name}, [str(i) for i in range(10)],
                                                                   [h, w, c]), name)
    forward, total = [], []
    for i in range(WARMUP + REPEATS):
        key = explorer.add_input(torch.randint(0, 256, (c, h, w), dtype=torch.uint8), f"{i}.png")
        started = time.perf_counter()
        meta = explorer.activations(key)
        for layer in meta["layers"]:
            explorer.activation_png(key, layer["name"])
        if i >= WARMUP:
            total.append((time.perf_counter() - started) * 1000)
            forward.append(explorer.traces[key].milliseconds)
    print(f"{name}: {len(meta['layers'])} layers, torch {torch.__version__}, {torch.get_num_threads()} threads: "
          f"forward pass {statistics.median(forward):.2f} ms, all activations as PNG grids "
          f"{statistics.median(total):.2f} ms (median of {REPEATS})")


if __name__ == "__main__":
    main(*sys.argv[1:])
