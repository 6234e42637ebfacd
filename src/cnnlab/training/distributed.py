"""Data-parallel training on several processes: torchrun's environment, sharding, reductions, launching.

`torchrun --nproc_per_node N -m cnnlab train ...` (or `cnnlab train --nproc N ...`, which runs
torchrun for you) starts N copies of the run. Each copy reads RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR from the environment torchrun sets, joins a process group (gloo on the CPU, NCCL on
CUDA GPUs, one GPU per process: cuda:LOCAL_RANK), and `fit` then:
- takes `batch_size` as the GLOBAL batch (Keras/tf.distribute semantics): each process trains on
  batch_size / world_size images per step, and the global batch must divide evenly;
- shards the epoch's order (a function of seed and epoch, the same on every rank) by stride, so
  step k of every rank covers exactly the images of step k of a single-process run, and resuming
  mid-epoch stays exact;
- wraps the model in DistributedDataParallel (gradients averaged across ranks; SyncBatchNorm on
  request) and all-reduces the epoch's loss/accuracy sums, so every rank logs the same numbers;
- gives each rank its own random stream for augmentation and dropout (`seed_ranks`), which
  checkpoints keep per rank;
- lets rank 0 alone write files and print (`is_main`).

Without torchrun's variables nothing here does anything: `world_size()` is 1 and `fit` runs as before.

Failures end the whole job, each in one line: every worker dies with its launcher, however the
launcher ends (`die_with_launcher`: a SIGKILLed launcher once left its workers training to the
end); a rank that loses contact with a dead peer stops with one line from rank 0 instead of a
gloo/NCCL traceback per rank; Ctrl-C of the launcher reaches the workers through torchrun and
ends as `interrupted`; the launcher reports a failed rank's exit status or signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cnnlab.errors import CnnlabError, first_line
from cnnlab.training.devices import Runtime, process_count, resolve_device

__all__ = ["session", "world_size", "rank", "is_main", "shard", "loss_share", "all_reduce_sums", "sync_buffers",
           "barrier", "from_main", "gather_objects", "seed_ranks", "wrap", "unwrap_sync_batchnorm", "place",
           "check_batch", "launch", "launch_command", "die_with_launcher", "LAUNCHER_PID_ENV"]

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 600  # a rank that waits this long for the others fails instead of hanging (torch: 30 min)
LAUNCHER_PID_ENV = "CNNLAB_LAUNCHER_PID"  # set by `launch` for its workers: the process they must not outlive
PR_SET_PDEATHSIG = 1  # linux/prctl.h: the signal a process gets when the thread that started it ends
WATCHDOG_INTERVAL_S = 1.0  # elsewhere: how often a worker checks that its launcher still lives


def world_size() -> int:
    """Processes in the run: 1 unless a process group is initialized.

    >>> world_size()
    1
    """
    return process_count()


def rank() -> int:
    """This process's rank (0 when not distributed).

    >>> rank()
    0
    """
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0, the one process that writes files and prints (and in every single-process run).

    >>> is_main()
    True
    """
    return rank() == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise CnnlabError(f"environment variable {name}={value!r} is not an integer; torchrun sets it, "
                          f"start the run with torchrun or cnnlab train --nproc N") from None


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[int]:
    """Join the process group torchrun's variables describe (if any) for the block; yield the world size.

    gloo on the CPU, NCCL on CUDA with this process on cuda:LOCAL_RANK; the group is destroyed on exit.

    >>> with session("cpu") as n:  # no torchrun variables: a single process
    ...     n
    1
    """
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1 or dist.is_initialized():
        yield world_size()
        return
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        local = _env_int("LOCAL_RANK", 0)
        if local >= torch.cuda.device_count():
            raise CnnlabError(f"LOCAL_RANK {local}: this machine has {torch.cuda.device_count()} GPU(s); start at "
                              f"most that many processes per node (--nproc_per_node / --nproc)")
        torch.cuda.set_device(local)
    elif resolved.type != "cpu":
        raise CnnlabError(f"--device {device}: distributed training runs on CPUs (gloo) or CUDA GPUs (NCCL), "
                          f"not {resolved.type}; use --device cpu or cuda")
    from datetime import timedelta

    die_with_launcher()
    dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo",
                            timeout=timedelta(seconds=DEFAULT_TIMEOUT_S))
    try:
        yield world_size()
        # every rank leaves together: rank 0 scores the test split and writes the run after the others finish
        # training, and a rank tearing its process group down meanwhile once aborted the run (SIGABRT,
        # "terminate called without an active exception", a fresh CI clone, 2026-12-07)
        dist.barrier()
    except RuntimeError as exc:
        if not _lost_peer(exc):
            raise
        if rank() != 0:  # one line for the job, not one per surviving rank
            raise SystemExit(1) from None
        raise CnnlabError(f"rank 0 lost contact with another process of this run ({first_line(exc, 240)}): that "
                          f"process stopped first, see its error above; --resume the run directory once it is "
                          f"fixed") from None
    finally:
        dist.destroy_process_group()


def _lost_peer(exc: BaseException) -> bool:
    """A collective that failed because another rank went away (gloo/NCCL transport errors)."""
    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        marker in text for marker in ("gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe"))


def die_with_launcher() -> None:
    """End this worker (SIGTERM) when the process that started it ends, even by SIGKILL.

    On Linux the kernel sends the signal (prctl PR_SET_PDEATHSIG); elsewhere a daemon thread checks
    every WATCHDOG_INTERVAL_S that the parent is still the same. A launcher that died before this
    ran is caught by comparing the parent with $CNNLAB_LAUNCHER_PID, which `launch` sets.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    else:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(WATCHDOG_INTERVAL_S)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="cnnlab-launcher-watchdog", daemon=True).start()
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if launcher.isdigit() and int(launcher) != parent:  # gone already: our parent is a reaper now
        os.kill(os.getpid(), signal.SIGTERM)


def place(runtime: Runtime) -> Runtime:
    """`runtime` on this process's own GPU (cuda:LOCAL_RANK) in a distributed CUDA run; else unchanged.

    >>> place(Runtime(torch.device("cpu"), "fp32", False)).device
    device(type='cpu')
    """
    if world_size() == 1 or runtime.device.type != "cuda":
        return runtime
    return replace(runtime, device=torch.device("cuda", torch.cuda.current_device()))


def check_batch(batch_size: int, size: int | None = None) -> int:
    """The per-process batch for the global `batch_size` (which must divide evenly by the world size).

    >>> check_batch(32)
    32
    """
    size = world_size() if size is None else size
    if batch_size % size:
        lower, upper = batch_size - batch_size % size, batch_size + size - batch_size % size
        raise CnnlabError(f"--batch-size {batch_size} is the global batch and must divide evenly over {size} "
                          f"processes; use {lower or upper} or {upper}")
    return batch_size // size


def shard(order: torch.Tensor, step_size: int) -> torch.Tensor:
    """This rank's strided share of `order`, whose first element starts a global batch of `step_size`.

    With local batches of step_size / world_size, rank r's k-th batch holds exactly the images of
    the single-process k-th batch at positions r, r + W, r + 2W, ...

    >>> shard(torch.arange(6), 2).tolist()  # one process: everything
    [0, 1, 2, 3, 4, 5]
    """
    size = world_size()
    if size == 1:
        return order
    last = len(order) % step_size
    if 0 < last < size:
        raise CnnlabError(f"the epoch's last batch would hold {last} image(s) for {size} processes, so some "
                          f"would have none; change --batch-size or --validation-split by a few images")
    return order[rank()::size]


def loss_share(local: int, step: int, batch_size: int, total: int) -> float:
    """The factor that makes DDP's average of per-rank mean losses the global batch's mean loss.

    DDP averages gradients over ranks; when the last batch splits unevenly, each rank's mean must
    count in proportion to its images: W * n_local / n_global (1.0 for even splits).

    >>> loss_share(16, 1, 32, 100)
    1.0
    """
    size = world_size()
    global_n = min(batch_size, total - (step - 1) * batch_size)
    return size * local / global_n if size > 1 else 1.0


def all_reduce_sums(*values: torch.Tensor | float) -> list[float]:
    """Sum each value over all ranks (every rank gets the totals); plain floats back.

    >>> all_reduce_sums(torch.tensor(2.0), 3)
    [2.0, 3.0]
    """
    if world_size() == 1:
        return [float(v) for v in values]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    sums = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    return sums.tolist()


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), so all validate the same model."""
    if world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


def from_main(compute: Callable[[], T]) -> T:
    """`compute()` on rank 0, its result (or its CnnlabError) given to every rank: run names, drawn seeds.

    >>> from_main(lambda: 42)
    42
    """
    if world_size() == 1:
        return compute()
    box: list[object] = [None]
    if is_main():
        try:
            box[0] = ("ok", compute())
        except CnnlabError as exc:
            box[0] = ("error", str(exc))
    dist.broadcast_object_list(box, 0)
    outcome: tuple[str, Any] = box[0]  # type: ignore[assignment]
    if outcome[0] == "error":
        raise CnnlabError(str(outcome[1]))
    return cast(T, outcome[1])


def seed_ranks(seed: int) -> None:
    """Give every rank its own random stream (augmentation, dropout) in a distributed run; no-op otherwise.

    All ranks start from the same --seed, and DDP starts them from rank 0's weights. Left equal, the
    streams would give rank r's k-th image the same flip, crop and dropout mask as every other
    rank's k-th image: N processes would draw only a single process's worth of randomness.

    >>> before = torch.get_rng_state(); seed_ranks(5); torch.equal(torch.get_rng_state(), before)
    True
    """
    if world_size() > 1:
        torch.manual_seed((seed * 1_000_003 + 7_919 * (rank() + 1)) % 2**63)


def gather_objects(value: T) -> list[T]:
    """`value` from every rank, in rank order (every rank gets the list); [value] in a single process.

    >>> gather_objects({"a": 1})
    [{'a': 1}]
    """
    if world_size() == 1:
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return cast(list[T], out)


def wrap(model: nn.Module, runtime: Runtime, sync_bn: bool = False) -> nn.Module:
    """`model` in DistributedDataParallel when distributed (else as it is); BatchNorm -> SyncBatchNorm on request.

    The model's parameters are shared with the wrapper, so `model` itself (no "module." prefix in
    its state_dict) is what gets checkpointed and saved.

    >>> m = nn.Linear(2, 2); wrap(m, Runtime(torch.device("cpu"), "fp32", False)) is m
    True
    """
    if world_size() == 1:
        if sync_bn:
            raise CnnlabError("--sync-bn synchronizes BatchNorm across processes; it needs --nproc N > 1 (or torchrun)")
        return model
    if sync_bn:
        if runtime.device.type != "cuda":
            raise CnnlabError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU kernel); drop --sync-bn")
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BatchNorm children in place
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Turn SyncBatchNorm layers back into BatchNorm2d (same weights and statistics), so the saved model loads anywhere.

    >>> unwrap_sync_batchnorm(nn.Sequential(nn.SyncBatchNorm(3)))[0].__class__.__name__
    'BatchNorm2d'
    """
    for name, child in model.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, device=child.weight.device if child.affine else None)
            plain.load_state_dict(child.state_dict())
            plain.train(child.training)
            setattr(model, name, plain)
        else:
            unwrap_sync_batchnorm(child)
    return model


def launch_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """torchrun's arguments for `cnnlab train --nproc N ARGV`: one node, standalone rendezvous on a free port.

    >>> launch_command(2, ["train", "--epochs", "1"])
    ['--standalone', '--nproc_per_node', '2', '-m', 'cnnlab', 'train', '--epochs', '1']
    """
    return ["--standalone", "--nproc_per_node", str(nproc), "-m", "cnnlab", *argv]


def _torchrun(arguments: list[str]) -> int:
    """`python -m torch.distributed.run ARGUMENTS`, in this process (one interpreter less to start); its exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    # torchrun's own log lines (closing signals, a failure table) repeat what the one error line says
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed.elastic")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # (torch sets each module's logger's level itself)
    try:
        torchrun(arguments)
    except ChildFailedError as exc:
        return int(exc.get_first_failure()[1].exitcode) or 1
    except SignalException as exc:  # Ctrl-C (or SIGTERM): torchrun passed it on to the workers and stopped them
        raise KeyboardInterrupt(str(exc)) from None
    return 0


def launch(nproc: int, argv: Sequence[str], device: str = "auto") -> None:
    """Run `cnnlab ARGV` on `nproc` processes through torchrun; a failed rank fails the whole run in one line.

    Each process gets cores / nproc OpenMP threads (2 cores, 2 processes: 1 each) unless
    OMP_NUM_THREADS is set; oversubscribed threads slow every rank down.
    """
    resolved = resolve_device(device)
    if resolved.type == "cuda" and nproc > torch.cuda.device_count():
        raise CnnlabError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPU(s) and each process "
                          f"needs its own; use --nproc {torch.cuda.device_count()} or fewer (or --device cpu)")
    if resolved.type not in ("cpu", "cuda"):
        raise CnnlabError(f"--nproc runs on CPUs (gloo) or CUDA GPUs (NCCL), not {resolved.type}; use --device cpu")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # the workers inherit it
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    code = _torchrun(launch_command(nproc, argv))
    if code != 0:
        how = f"was killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else \
            f"exited with status {code}"
        raise CnnlabError(f"distributed training with --nproc {nproc} failed: a process {how} (its error, if it "
                          f"could print one, is above; torchrun stopped the others); fix it and run again, or "
                          f"--resume the run directory if a checkpoint was written")
