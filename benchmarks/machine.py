"""Which machine a benchmark ran on, in the detail that decides its speed: every report JSON stores this record.

A timing means little without its machine: on this project's 2-core VM the same epoch took 10.7 s quiet
and 41.5 s beside one busy program (cnnlab/training/threads.py). So a record holds the CPU model and the
flags torch's kernels use, the cores this process may use (count, affinity mask, cgroup quota), the
measured fp32 and bf16 matmul peaks at the thread count the benchmark uses, the thread settings, versions,
host, UTC time and the load average; `sitting()` adds the load average after the benchmark as well.

    from machine import machine_record, sitting
    with sitting(thread_policy="torch default") as record:   # record["load_before"] now
        ...run the benchmark...                               # record["load_after"] when it ends

    .venv/bin/python benchmarks/machine.py                    # prints this machine's record
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import torch

import cnnlab
from cnnlab.training.allocator import allocator_policy
from cnnlab.training.threads import cgroup_cpu_quota

__all__ = ["machine_record", "sitting", "load_average", "matmul_peak", "cpu_model", "cpu_id", "cpu_flags", "FLAGS"]

# The CPU features torch's CPU kernels (oneDNN, its vectorized ops) choose between; a record lists those present.
FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
         "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")
# The matmul peak: square matrices of PEAK_SIZE (2048: packing and threading overheads vanish there; measured
# 188 GFLOP/s fp32, 798 bf16 on the 2-core EPYC), best of the repeats that fit in PEAK_SECONDS per precision,
# so a record costs about 1 s. A CPU that needs over PROBE_SECONDS for one warm 256 matmul (under 7 GFLOP/s:
# bf16 without native support, 0.8 GFLOP/s on a Zen 3, where one 1024 matmul takes 2.5 s) is measured at 256
# instead, so the record stays short there too.
PEAK_SIZE = 2048
PEAK_SECONDS = 0.4
PROBE_SIZE = 256
PROBE_SECONDS = 0.005


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    for line in _read(cpuinfo).splitlines():
        if line.split(":")[0].strip() in ("model name", "Model", "Hardware"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_id(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    r"""Vendor, family, model and stepping of the first processor (x86 Linux), or None.

    A VM's model name can be as plain as "AMD EPYC" on CPUs a generation apart (Zen 4 is family 25, Zen 5
    family 26, with twice the bf16 matmul peak here), so the record says which one ran.

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / "cpuinfo"
    >>> _ = f.write_text("vendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nstepping\t: 1\n")
    >>> cpu_id(f)
    'AuthenticAMD family 26 model 2 stepping 1'
    """
    fields: dict[str, str] = {}
    for line in _read(cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if not key.strip():
            break  # the first processor's block ends at a blank line
        fields.setdefault(key.strip(), value.strip())
    if "cpu family" not in fields:
        return None
    return (f"{fields.get('vendor_id', '?')} family {fields['cpu family']} model {fields.get('model', '?')} "
            f"stepping {fields.get('stepping', '?')}")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Those of FLAGS the CPU has (its first processor's "flags" or "Features" line), in FLAGS' order.

    >>> set(cpu_flags()) <= set(FLAGS)
    True
    """
    for line in _read(cpuinfo).splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in FLAGS if flag in present]
    return []


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (runnable processes; above the core count, work waits).

    >>> len(load_average() or [0, 0, 0])
    3
    """
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def matmul_peak(dtype: torch.dtype, seconds: float = PEAK_SECONDS, size: int = PEAK_SIZE) -> dict[str, float]:
    """GFLOP/s of a square torch.mm in `dtype` on torch's current threads: the best of the repeats in `seconds`.

    >>> matmul_peak(torch.float32, seconds=0.05, size=256)["gflops"] > 0
    True
    """
    probe = torch.randn(PROBE_SIZE, PROBE_SIZE).to(dtype)
    torch.mm(probe, probe)  # the warm-up: oneDNN picks its kernel on the first call
    start = time.perf_counter()
    torch.mm(probe, probe)
    if time.perf_counter() - start > PROBE_SECONDS:
        size = min(size, PROBE_SIZE)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best, repeats, began = float("inf"), 0, time.perf_counter()
    while repeats < 2 or time.perf_counter() - began < seconds:
        start = time.perf_counter()
        torch.mm(a, b)
        best, repeats = min(best, time.perf_counter() - start), repeats + 1
    return {"gflops": round(2 * size**3 / best / 1e9, 1), "size": size, "repeats": repeats}


def machine_record(thread_policy: object = None, peaks: bool = True) -> dict:
    """This machine and process as a benchmark runs on it; `thread_policy` is the caller's (how its runs
    choose their CPU threads), recorded as given. `peaks` False leaves out the ~1 s matmul measurement.

    >>> record = machine_record(peaks=False); record["cores_seen"]["affinity"] <= record["cores"]
    True
    """
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    now = datetime.datetime.now(datetime.UTC)
    record = {
        "date": now.date().isoformat(),  # the day, as earlier reports stored it (docs/results.md shows it)
        "utc": now.isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_id": cpu_id(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels torch dispatches to
        "accelerator": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cores": os.cpu_count(),
        "cores_seen": {"os_cpu_count": os.cpu_count(), "affinity": affinity, "cgroup_quota": cgroup_cpu_quota()},
        "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
                    **{name: os.environ[name] for name in THREAD_ENV if name in os.environ}},
        "thread_policy": thread_policy,
        "allocator": allocator_policy(),  # what cnnlab's CPU runs do with malloc here (training/allocator.py)
        "python": platform.python_version(), "torch": torch.__version__, "cnnlab": cnnlab.__version__,
        "load_average": load_average(),
    }
    if peaks:
        record["matmul_peak"] = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16),
                                 "threads": torch.get_num_threads()}
    return record


@contextlib.contextmanager
def sitting(thread_policy: object = None, peaks: bool = True) -> Iterator[dict]:
    """The machine record of a benchmark sitting: taken on entry (its load as `load_before`), with
    `load_after` set on exit, also when the sitting stops early (a write after each run keeps what ran)."""
    record = machine_record(thread_policy, peaks)
    record["load_before"] = record["load_average"]
    try:
        yield record
    finally:
        record["load_after"] = load_average()


if __name__ == "__main__":
    print(json.dumps(machine_record(), indent=1))
