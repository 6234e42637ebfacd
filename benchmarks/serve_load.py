"""Load test of `cnnlab serve` on loopback: N concurrent clients, a fixed number of /predict requests.

Starts the server in a subprocess (the real CLI), warms it up, then has `--clients` threads send
`--requests` single-image requests in total (a 28x28 PNG digit from the built-in test set). Reports
throughput, p50/p99 latency, errors and the server's resident memory after warm-up and at the end,
and writes benchmarks/results/serve-load.json.

    python benchmarks/serve_load.py                      # trains a 1-epoch digits run first (~10 s)
    python benchmarks/serve_load.py --model runs/RUN --clients 8 --requests 2000
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results" / "serve-load.json"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def digit_png() -> bytes:
    from cnnlab.data import load_dataset

    buf = io.BytesIO()
    Image.fromarray(load_dataset("digits", split="test").images[0, 0].numpy()).save(buf, "PNG")
    return buf.getvalue()


def trained_run(folder: Path) -> Path:
    from cnnlab.config import TrainConfig
    from cnnlab.jobs import train_run

    return train_run(TrainConfig(dataset="digits", model="seed-mnist", epochs=1, seed=0,
                                 run_dir=str(folder / "run")), verbose=0).run_dir


def start_server(model: Path) -> tuple[subprocess.Popen[str], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(model), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read() if process.stderr else "server exited") from None
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start within 60 s")


def load(url: str, image: bytes, clients: int, requests: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                start = time.perf_counter()
                try:
                    ok = http.post("/predict", files={"files": ("d.png", image, "image/png")}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    errors[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run directory or model file (default: train a 1-epoch digits run)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else trained_run(Path(tmp))
        process, url = start_server(model)
        try:
            image = digit_png()
            load(url, image, args.clients, args.warmup)
            rss_before = rss_mib(process.pid)
            latencies, errors, seconds = load(url, image, args.clients, args.requests)
            rss_after = rss_mib(process.pid)
            batches = httpx.get(f"{url}/health").json()["batches"]
        finally:
            process.terminate()
            process.wait(timeout=10)
    cuts = statistics.quantiles(latencies, n=100)
    result = {"clients": args.clients, "requests": args.requests, "errors": errors,
              "throughput_rps": round(args.requests / seconds, 1), "seconds": round(seconds, 2),
              "latency_ms": {"p50": round(cuts[49] * 1000, 1), "p99": round(cuts[98] * 1000, 1),
                             "max": round(max(latencies) * 1000, 1)},
              "server_rss_mib": {"after_warmup": round(rss_before, 1), "after_load": round(rss_after, 1)},
              "model_calls_incl_warmup": batches,
              "images_per_model_call": round((args.requests + args.warmup) / batches, 2),
              "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
              "model": "seed-mnist (28x28x1), one 28x28 PNG per request"}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
