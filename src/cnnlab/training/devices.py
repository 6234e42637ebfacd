"""Where a run computes and in what precision: `--device`, `--precision`, `--compile`.

Automatic defaults pick what pays off on the hardware at hand:
- device "auto": the first CUDA GPU, else Apple's MPS, else the CPU.
- precision "auto": bf16 autocast on a CUDA GPU that supports it and on CPUs with native bf16
  arithmetic (AVX512-BF16 or AMX: oneDNN runs convolutions there ~2x faster), else fp32.
  Weights, optimizer state and the loss stay fp32 in every mode; fp16 adds a gradient scaler.
- compile "auto": torch.compile on CUDA for runs long enough to repay its ~30-60 s of compile
  time; never on CPU, where it measured slower than eager for the seed CNNs (2 cores).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.training.allocator import allocator_policy, keep_freed_memory
from cnnlab.training.threads import ThreadPolicy, parse_threads, thread_policy

__all__ = ["DEVICE_CHOICES", "PRECISION_CHOICES", "COMPILE_CHOICES", "Runtime", "resolve_runtime",
           "resolve_device", "resolve_precision", "cpu_has_native_bf16", "use_deterministic", "runtime_line",
           "process_count"]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # also "cuda:N"
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
COMPILE_CHOICES = ("auto", "on", "off")
COMPILE_MIN_STEPS = 2000  # optimizer steps a CUDA run needs before torch.compile's start-up cost pays off
SYNC_EVERY_STEPS = 50  # on a GPU, read the loss back (and check it is finite) every this many steps, not every step
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """The torch.device for `name` (auto, cpu, cuda, cuda:N, mps), or one line on what is missing.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise CnnlabError("--device mps: Apple's Metal backend is not available on this machine; "
                              "use --device cpu (or auto)")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise CnnlabError(f"--device {name}: no CUDA GPU is visible to PyTorch (torch {torch.__version__}, "
                              f"CUDA build {torch.version.cuda}); use --device cpu, or check the driver (nvidia-smi)")
        try:
            device = torch.device(name)
        except RuntimeError:
            raise CnnlabError(f"--device {name!r} is not a device name; use cuda or cuda:N") from None
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CnnlabError(f"--device {name}: this machine has {count} GPU(s), numbered 0..{count - 1}")
        return device
    raise CnnlabError(f"--device {name!r} is not one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (x86 AVX512-BF16 or AMX-BF16, read from /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """fp32, bf16 or fp16 for `name` on `device`; "auto" as the module docstring says.

    >>> resolve_precision("fp32", torch.device("cpu"))
    'fp32'
    """
    name = (name or "auto").lower()
    if name not in PRECISION_CHOICES:
        raise CnnlabError(f"--precision {name!r} is not one of {', '.join(PRECISION_CHOICES)}")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device.type == "cpu":
            return "bf16" if cpu_has_native_bf16() else "fp32"
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        raise CnnlabError("--precision fp16 needs a GPU (CPUs compute fp16 slowly); use bf16 or fp32 on the CPU")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CnnlabError("--precision bf16: this GPU has no bf16 support; use fp16 or fp32")
    return name


@dataclass(frozen=True)
class Runtime:
    """The resolved device, precision and compile choice of one run."""

    device: torch.device
    precision: str          # fp32 | bf16 | fp16
    compile: bool
    sync_every: int = 1     # steps between reading the loss back to the host (a GPU runs ahead in between)
    threads: int | None = None  # CPU threads; None: measured in the first steps (training/threads.py)
    planned_steps: int = 0  # optimizer steps the run plans: decides compile=auto and whether measuring threads pays

    @property
    def channels_last(self) -> bool:
        """NHWC activations: oneDNN and cuDNN convolutions run faster on them (1.3-1.6x measured on 2 CPU cores)."""
        return self.device.type in ("cpu", "cuda")

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The autocast context of this precision (a no-op for fp32)."""
        dtype = DTYPES[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling so small gradients do not flush to zero; bf16 and fp32 do not."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move `model` to the device in the memory format this runtime computes in.

        On the CPU, the process's malloc also starts keeping freed memory for the next step (training/allocator.py).
        """
        if self.device.type == "cpu":
            keep_freed_memory()
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def images(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch moved to the device (asynchronously from pinned memory) in the runtime's layout."""
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def thread_policy(self, steps: int | None = None) -> ThreadPolicy:
        """The CPU thread policy of a run of `steps` optimizer steps (default: the planned steps)."""
        return thread_policy(self.threads, self.planned_steps if steps is None else steps, self.device.type,
                             torch.are_deterministic_algorithms_enabled(), process_count())

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        return f"{name}, {self.precision}{', compiled' if self.compile else ''}"

    def record(self) -> dict[str, object]:
        """What was chosen, for a run's config.json: device, its name, precision, memory layout, CPU threads, compile.

        >>> Runtime(torch.device("cpu"), "fp32", False).record()["channels_last"]
        True
        """
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        policy = self.thread_policy()
        return {"device": str(self.device), "device_name": name, "precision": self.precision,
                "channels_last": self.channels_last, "threads": policy.candidates[0],
                "thread_policy": policy.describe(), "compile": self.compile,
                **({"allocator": allocator_policy()} if self.device.type == "cpu" else {})}


def process_count() -> int:
    """Processes in the run: 1 unless a process group is initialized (distributed.world_size; here, since
    the thread policy needs it and distributed.py imports this module).

    >>> process_count()
    1
    """
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def runtime_line(record: dict[str, object], processes: int = 1) -> str:
    """One line on a run's `Runtime.record()`, for the CLI to print as training starts.

    >>> runtime_line(Runtime(torch.device("cpu"), "fp32", False).record() | {"thread_policy": "2 threads: test"})
    'runtime: cpu (2 threads: test), fp32, channels_last, not compiled, 1 process'
    """
    device = record["device_name"] if record["device_name"] == record["device"] else \
        f"{record['device_name']} ({record['device']})"
    count = record["threads"]
    policy = record.get("thread_policy") or f"{count} thread{'s' if count != 1 else ''}"
    threads = f" ({policy})" if str(record["device"]).startswith("cpu") else ""
    layout = "channels_last" if record["channels_last"] else "contiguous (NCHW)"
    compiled = "torch.compile" if record["compile"] else "not compiled"
    return f"runtime: {device}{threads}, {record['precision']}, {layout}, {compiled}, " \
           f"{processes} process{'es' if processes > 1 else ''}"


def resolve_runtime(device: str = "auto", precision: str = "auto", compile: str = "auto",
                    steps: int = 0, threads: int | str | None = "auto") -> Runtime:
    """Resolve the flags together; `steps` (optimizer steps planned) decides compile=auto and thread measuring.

    `threads` is a CPU thread count, or "auto" to measure candidates in the run's first steps.
    """
    resolved = resolve_device(device)
    compile = (compile or "auto").lower()
    if compile not in COMPILE_CHOICES:
        raise CnnlabError(f"--compile {compile!r} is not one of {', '.join(COMPILE_CHOICES)}")
    use_compile = compile == "on" or (compile == "auto" and resolved.type == "cuda" and steps >= COMPILE_MIN_STEPS)
    sync_every = 1 if resolved.type == "cpu" else SYNC_EVERY_STEPS
    return Runtime(resolved, resolve_precision(precision, resolved), use_compile, sync_every,
                   parse_threads(threads), steps)


def use_deterministic() -> None:
    """Make torch pick deterministic kernels (for the rest of the process): --deterministic.

    CPU kernels are then repeatable run to run at a fixed thread count; CUDA also needs cuBLAS's
    fixed workspace (set here when unset) and no cuDNN autotuning.

    >>> use_deterministic(); torch.are_deterministic_algorithms_enabled()
    True
    >>> torch.use_deterministic_algorithms(False)  # this example leaves the process as it found it
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
