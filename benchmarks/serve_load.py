"""Load test of `cnnlab serve` on loopback: good clients alone, then beside slow clients and a decode flood.

Starts the server in a subprocess (the real CLI, with a 1,024 file-descriptor limit like a default
Linux shell), warms it up, then has `--clients` threads send `--requests` single-image requests in
total (a 28x28 PNG digit from the built-in test set): the baseline. Then the attack phase repeats
the good traffic while, at the same time,
- `--slow` slow clients each open a connection, send headers and then one body byte a second,
  reconnecting a second after the server closes them (1,100 against 1,024 descriptors: issue 18,
  cause 15);
- `--flood` threads each send requests of 16 palette PNGs of 39.6 megapixels (39 KB each), as fast
  as answered (16 of them took the unbounded server to 4.2 GB: cause 14).
Reports throughput, p50/p99 latency and errors of the good clients in both phases, the flood's
answers by status, the server's resident memory (after warm-up, peak during the attack, after it),
its log size, and writes benchmarks/results/serve-load.json.

    python benchmarks/serve_load.py                      # trains a 1-epoch digits run first (~10 s)
    python benchmarks/serve_load.py --model runs/RUN --clients 8 --requests 2000 --slow 1100 --flood 16
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import resource
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

import report

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


def flood_png() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (6300, 6290)).save(buf, "PNG", optimize=True)  # 39.6 megapixels in ~39 KB
    return buf.getvalue()


def start_server(model: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def fd_limit() -> None:  # the common default soft limit, as in the measurement
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    process = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(model), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=log.open("wb"), preexec_fn=fd_limit)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            if process.poll() is not None:
                raise RuntimeError(log.read_text()) from None
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start within 60 s")


def slow_clients(url: str, count: int, stop: threading.Event, stats: collections.Counter[str]) -> None:
    """`count` connections that send headers, then one body byte a second; reconnect when closed."""
    host, port = url.removeprefix("http://").split(":")
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: 1000000\r\n\r\n")

    async def one() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                stats["connections"] += 1
                writer.write(head)
                while not stop.is_set() and not reader.at_eof():
                    writer.write(b"x")
                    await writer.drain()
                    try:
                        await asyncio.wait_for(reader.read(1024), 1.0)  # the server's answer or its close
                    except TimeoutError:
                        continue
                    break
                stats["closed_by_server"] += not stop.is_set()
                writer.close()
                await asyncio.sleep(1)  # then try again, as slowloris-style tools do
            except OSError:
                stats["connect_errors"] += 1
                await asyncio.sleep(0.5)

    async def all_of_them() -> None:
        await asyncio.gather(*(one() for _ in range(count)))

    asyncio.run(all_of_them())


def flood(url: str, image: bytes, stop: threading.Event, stats: collections.Counter[str]) -> None:
    files = [("files", (f"{i}.png", image, "image/png")) for i in range(16)]
    with httpx.Client(base_url=url, timeout=120) as http:
        while not stop.is_set():
            try:
                stats[str(http.post("/predict", files=files).status_code)] += 1
            except httpx.HTTPError as exc:
                stats[type(exc).__name__] += 1
                time.sleep(0.5)


def rss_sampler(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mib(pid))
        time.sleep(0.1)


def load(url: str, image: bytes, clients: int, requests: int,
         seconds: float = float("inf")) -> tuple[list[float], int, float]:
    """`requests` good requests from `clients` threads, or as many as `seconds` allow."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.perf_counter() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.perf_counter() < deadline:
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


def measure(url: str, image: bytes, clients: int, requests: int, limit_s: float = float("inf")) -> dict[str, object]:
    latencies, errors, seconds = load(url, image, clients, requests, limit_s)
    cuts = statistics.quantiles(latencies, n=100)
    requests = len(latencies)
    print(f"{requests} good requests in {seconds:.1f} s, {errors} errors", file=sys.stderr, flush=True)
    return {"requests": requests, "errors": errors, "throughput_rps": round(requests / seconds, 1),
            "seconds": round(seconds, 2), "latency_ms": {"p50": round(cuts[49] * 1000, 1),
                                                        "p99": round(cuts[98] * 1000, 1),
                                                        "max": round(max(latencies) * 1000, 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run directory or model file (default: train a 1-epoch digits run)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--slow", type=int, default=1100, help="slow clients in the attack phase")
    parser.add_argument("--flood", type=int, default=16, help="threads sending 16 x 39.6 MP PNGs per request")
    parser.add_argument("--attack-seconds", type=float, default=60, help="good traffic under attack lasts this long")
    parser.add_argument("--log", help="keep the server's log here")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    machine = report.machine(thread_policy="the server process at cnnlab serve's default; clients in this process")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.slow + 512)), hard))  # the clients' own
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else trained_run(Path(tmp))
        log = Path(tmp) / "server.log"
        process, url = start_server(model, log)
        try:
            image = digit_png()
            load(url, image, args.clients, args.warmup)
            rss_warm = rss_mib(process.pid)
            baseline = measure(url, image, args.clients, args.requests)
            rss_baseline = rss_mib(process.pid)
            print(f"baseline: {baseline}, server {rss_baseline:.0f} MiB", file=sys.stderr, flush=True)
            stop, peak = threading.Event(), [0.0]
            slow_stats: collections.Counter[str] = collections.Counter()
            flood_stats: collections.Counter[str] = collections.Counter()
            big = flood_png()
            attackers = [threading.Thread(target=slow_clients, args=(url, args.slow, stop, slow_stats)),
                         threading.Thread(target=rss_sampler, args=(process.pid, stop, peak))]
            attackers += [threading.Thread(target=flood, args=(url, big, stop, flood_stats)) for _ in range(args.flood)]
            for t in attackers:
                t.start()
            time.sleep(15)  # let the slow clients fill the connection table and the flood queue up
            print(f"attack under way: {dict(slow_stats)} {dict(flood_stats)}", file=sys.stderr, flush=True)
            attacked = measure(url, image, args.clients, args.requests, args.attack_seconds)
            stop.set()
            for t in attackers:
                t.join()
            print(f"attack over: {dict(slow_stats)} {dict(flood_stats)}", file=sys.stderr, flush=True)
            time.sleep(5)
            rss_after = rss_mib(process.pid)
            batches = httpx.get(f"{url}/health").json()["batches"]
        finally:
            process.terminate()
            process.wait(timeout=30)
        log_text = log.read_text(errors="replace")
        if args.log:
            Path(args.log).write_text(log_text)
    result = {"clients": args.clients, "baseline": baseline,
              "under_attack": {**attacked, "slow_clients": args.slow, "slow_client_stats": dict(slow_stats),
                               "flood_threads": args.flood, "flood_png_bytes": len(big),
                               "flood_answers": dict(flood_stats)},
              "server_rss_mib": {"after_warmup": round(rss_warm, 1), "after_baseline": round(rss_baseline, 1),
                                 "peak_under_attack": round(peak[0], 1), "5_s_after_attack": round(rss_after, 1)},
              "server_log": {"lines": log_text.count("\n"), "bytes": len(log_text.encode()),
                             "tracebacks": log_text.count("Traceback")},
              "model_calls": batches, "server_fd_limit": 1024,
              "machine": machine, "date": time.strftime("%Y-%m-%d"),
              "model": "seed-mnist (28x28x1), one 28x28 PNG per good request"}
    report.write_json(Path(args.output), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
