"""fp32 vs int8 ONNX for the seed CNNs: size, CPU latency (onnxruntime vs torch) and full test accuracy.

Trains seed-mnist on Fashion-MNIST (1 epoch) and seed-cifar10 on CIFAR-10 (JPEG q75, 2 epochs) with
`cnnlab train`'s defaults, or takes existing runs (--runs), exports each with `cnnlab export`
(fp32, then int8 calibrated on 512 training images), and writes benchmarks/results/export-int8.json.

    python benchmarks/export_int8.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from cnnlab.config import TrainConfig
from cnnlab.export import OnnxClassifier, export_onnx, inference_session, latency_ms
from cnnlab.export.data import dataset_pixels
from cnnlab.jobs import train_run
from cnnlab.models import load_model
from cnnlab.training import predict_proba

import report

ROOT = Path(__file__).resolve().parent
BATCHES = (1, 64)
THREADS = (1, 2)


def torch_latency_ms(model: torch.nn.Module, pixels: torch.Tensor, batch: int, threads: int) -> float:
    """Median ms per image of cnnlab's own torch prediction path (uint8 in, probabilities out)."""
    torch.set_num_threads(threads)
    x = pixels[:batch] if len(pixels) >= batch else pixels.repeat(batch // len(pixels) + 1, 1, 1, 1)[:batch]
    predict_proba(model, x)
    times = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < 0.5:
        t = time.perf_counter()
        predict_proba(model, x)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times)) / batch


def measure(run: Path, data_dir: str | None) -> dict:
    fp32 = export_onnx(run, run / "model.onnx", data_dir=data_dir, force=True)
    int8 = export_onnx(run, run / "model-int8.onnx", quantize="int8", data_dir=data_dir, force=True)
    model, card = load_model(run)
    images, labels, name = dataset_pixels(run, card, "test", data_dir or json.loads(
        (run / "config.json").read_text()).get("data_dir"))
    torch_acc = float((predict_proba(model, images).argmax(1) == labels).float().mean())
    latency: dict[str, float] = {}
    for threads in THREADS:
        for batch in BATCHES:
            latency[f"torch_b{batch}_t{threads}"] = torch_latency_ms(model, images, batch, threads)
            for kind, path in (("fp32", fp32.path), ("int8", int8.path)):
                session = inference_session(path, threads=threads)
                latency[f"onnx_{kind}_b{batch}_t{threads}"] = latency_ms(session, images[:batch].numpy(), batch)
    ort_acc = float((OnnxClassifier(fp32.path).predict_proba(images).argmax(1) == labels.numpy()).mean())
    return {"run": str(run), "dataset": name, "test_images": len(labels), "model": card.architecture["name"],
            "size_bytes": {"safetensors": (run / "model.safetensors").stat().st_size, "fp32": fp32.size_bytes,
                           "int8": int8.size_bytes},
            "accuracy": {"torch": torch_acc, "onnx_fp32": ort_acc, **{f"onnx_{k}": v for k, v in int8.accuracy.items()
                                                                      if k == "int8"}},
            "fp32_max_abs_diff": fp32.max_abs_diff, "int8_top1_agreement": int8.top1_agreement,
            "latency_ms_per_image": latency, "exporter": fp32.exporter}


def train(dataset: str, model: str, epochs: int, data_dir: str, root: Path) -> Path:
    config = TrainConfig(dataset=dataset, model=model, epochs=epochs, data_dir=data_dir, download=False, seed=0,
                         run_dir=str(root / f"{Path(dataset).name}-{model}"))
    return train_run(config, verbose=0).run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=str(ROOT.parent.parent / "shared" / "datasets"))
    parser.add_argument("--runs", nargs="*", help="existing run directories instead of training")
    parser.add_argument("--output", default=str(ROOT / "results" / "export-int8.json"))
    args = parser.parse_args()
    machine = report.machine(thread_policy="latency: 1 thread and torch's default, as each row says; training: "
                                            "cnnlab train's own")
    runs = [Path(r) for r in args.runs or []]
    if not runs:
        root = Path(tempfile.mkdtemp(prefix="cnnlab-export-bench-"))
        runs = [train("fashion-mnist", "seed-mnist", 1, args.data_dir, root),
                train(str(Path(args.data_dir) / "cifar10-jpg" / "cifar10-jpg.tar.gz"), "seed-cifar10", 2,
                      args.data_dir, root)]
    rows = [measure(run, args.data_dir) for run in runs]
    report.write_json(Path(args.output), {"date": str(date.today()), "machine": machine, "rows": rows})
    for r in rows:
        lat = r["latency_ms_per_image"]
        print(f"{r['model']} on {r['dataset']}: size {r['size_bytes']['fp32'] / 1e6:.2f} -> "
              f"{r['size_bytes']['int8'] / 1e6:.2f} MB; accuracy fp32 {r['accuracy']['onnx_fp32']:.4f} "
              f"int8 {r['accuracy']['onnx_int8']:.4f}; ms/image b1 t1 torch {lat['torch_b1_t1']:.3f} "
              f"fp32 {lat['onnx_fp32_b1_t1']:.3f} int8 {lat['onnx_int8_b1_t1']:.3f}")


if __name__ == "__main__":
    main()
