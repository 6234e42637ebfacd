"""Server time for all activations of one image in `cnnlab explore` (issue 20's bars: under 100 ms for the seed
CNNs, under 3 s for VGG16 at 224x224).

Measures, per fresh input (nothing cached): the one forward pass with hooks, that pass plus the first
layer's PNG grid (when the page can show its first layer), and that pass plus every layer's PNG grid
(what the page asks for, one request per layer, first layers first). The median of the repeats after
the warm-up runs.

    PYTHONPATH=src python benchmarks/explore_activations.py [seed-mnist|seed-cifar10|vgg16]
"""

import statistics
import sys
import time

import torch

from cnnlab.explore.explorer import Explorer
from cnnlab.models.files import ModelCard
from cnnlab.models.zoo import build_model

SHAPES = {"seed-mnist": [28, 28, 1], "seed-cifar10": [32, 32, 3], "vgg16": [224, 224, 3]}
RUNS = {"seed-mnist": (5, 50), "seed-cifar10": (5, 50), "vgg16": (1, 5)}  # (warm-up, repeats)


def main(name: str = "seed-mnist") -> None:
    h, w, c = SHAPES[name]
    warmup, repeats = RUNS[name]
    torch.manual_seed(0)
    explorer = Explorer(build_model(name, (h, w, c)), ModelCard({"name": name}, [str(i) for i in range(10)],
                                                                   [h, w, c]), name)
    forward, first, total = [], [], []
    for i in range(warmup + repeats):
        key = explorer.add_input(torch.randint(0, 256, (c, h, w), dtype=torch.uint8), f"{i}.png")
        started = time.perf_counter()
        meta = explorer.activations(key)
        for index, layer in enumerate(meta["layers"]):
            explorer.activation_png(key, layer["name"])
            if index == 0 and i >= warmup:
                first.append((time.perf_counter() - started) * 1000)
        if i >= warmup:
            total.append((time.perf_counter() - started) * 1000)
            forward.append(explorer.traces[key].milliseconds)
    print(f"{name}: {len(meta['layers'])} layers, torch {torch.__version__}, {torch.get_num_threads()} threads: "
          f"forward pass {statistics.median(forward):.2f} ms, first layer shown {statistics.median(first):.2f} ms, "
          f"all activations as PNG grids {statistics.median(total):.2f} ms (median of {repeats})")


if __name__ == "__main__":
    main(*sys.argv[1:])
