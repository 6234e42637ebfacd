"""How many CPU threads a run computes with: measured on the CPU the process gets, not assumed.

Why measure: on this project's 2-core machine (AMD EPYC VM, 2026-12-07), seed 000's Fashion-MNIST epoch
took 10.7 s at torch's default of 2 threads, and 41.5 s with one other busy program (`yes > /dev/null`)
beside it, against 13.4 s at 1 thread: torch's OpenMP threads meet at a barrier after every operator,
and the thread that shares its core with the other program arrives late every time. Step means in
the same sitting: quiet 2 threads 4.6-6.9 ms, 1 thread 6.2-7.9 ms; busy 2 threads 15.5-21 ms, 1 thread
7-11 ms. Passive waiting (GOMP_SPINCOUNT=0, which libgomp reads once at start-up) measured worse in
both cases (quiet 9-13 ms at 2 threads, busy 12 ms), so the thread count is the one lever.

So a CPU run starts at the cores it may use (the affinity mask and a cgroup CPU quota, which torch's
own default ignores), times its first steps at each candidate count, alternating, keeps the fastest,
and measures again when its steps slow by more than a set share, and every `recheck_seconds` (a load
that goes away slows nothing down, so only a periodic check finds the cores it frees). While it runs fewer
threads than cores it also reads the others' use every `look_seconds` and measures again once they have
gone quiet: a load that only passed by at the start (a process still exiting, a burst of the hypervisor's
steal) then costs a few seconds at one thread, not the rest of the run. One such run of seed 000 on the
2-core VM (2026-12-07) timed 2 threads at 107 ms a step during a burst, kept 1 thread (11.7 ms) and took
21.5 s where the others took 10.9-13.7 s.

Timing fewer threads costs a quiet machine the steps run slower meanwhile (about 0.2 s of seed 000's
epoch), so first the tuner looks at what the other processes on its cores do (`other_cpu_seconds`:
/proc/stat's busy time of those cores minus this process's own): when they used under `quiet_cores`
cores during its first second of steps, and again at each periodic check, every core is kept without
timing any other count. Where /proc/stat cannot be read, it times the counts as before.

>>> policy = thread_policy("auto", planned_steps=1000)
>>> policy.adaptive == (len(policy.candidates) > 1)
True
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.errors import CnnlabError

__all__ = ["TunerSettings", "ThreadPolicy", "ThreadTuner", "available_cores", "cgroup_cpu_quota", "thread_candidates",
           "thread_policy", "parse_threads", "other_cpu_seconds"]


TORCH_DEFAULT = torch.get_num_threads()  # torch's own count at import, before any run changed it (physical cores)


@dataclass(frozen=True)
class TunerSettings:
    """The tuner's knobs, each with its unit and reason."""

    warmup_steps: int = 3           # steps not timed after a change of count: oneDNN builds primitives per count
    probe_steps: int = 8            # steps timed per candidate per round, at least (and at least probe_seconds)
    probe_seconds: float = 0.25     # time per candidate per round, at least: a share of the other program's time
    #                                 slices (CFS gives each a few ms), so short steps see the stalls too
    rounds: int = 2                 # candidates alternate this many times, so a burst of load hits each alike
    prefer_more: float = 0.10       # fewer threads must be this share faster to win: noise never costs a core
    window: int = 24                # steps (at least) whose mean is watched for a slowdown after a decision
    window_seconds: float = 3.0     # and seconds (at least) in that window
    slowdown: float = 0.25          # measure again when that mean is this share slower than measured
    recheck_seconds: float = 60.0   # and at least this often (seconds): a load that ends is found only by looking
    look_seconds: float = 2.0       # while fewer threads than cores run, read the others' use this often (seconds;
    #                                 reading costs no steps) and time the counts again once they went quiet: a
    #                                 passing load then costs seconds, not the rest of the run; doubled each time
    #                                 the new timing keeps fewer threads anyway
    min_steps: int = 200            # runs planning fewer steps keep the starting count: probing could not pay off
    max_records: int = 50           # decisions kept for history.json; a day-long run rechecks ~1,400 times
    quiet_cores: float = 0.15       # other processes using fewer cores than this (on average): a quiet machine,
    #                                 every core kept unmeasured; /proc/stat counts in 10 ms ticks, so over
    #                                 quiet_seconds the reading is good to about 0.05 cores
    quiet_seconds: float = 1.0      # seconds of steps (after warm-up) over which the others' use is read


def parse_threads(value: object, where: str = "--threads") -> int | None:
    """`auto` (None: measured) or a positive thread count, from a flag or config value.

    >>> parse_threads("auto"), parse_threads("3"), parse_threads(2)
    (None, 3, 2)
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        count = int(str(value).strip())
    except ValueError:
        count = 0
    if isinstance(value, bool) or count <= 0 or str(count) != str(value).strip():
        raise CnnlabError(f"{where} {value!r} is not a thread count; give a positive integer, or auto "
                          f"(measure 1..{available_cores()[0]} in the first steps)")
    return count


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> \
        float | None:
    """CPUs this process's cgroup may use (quota / period; the tightest along its path), or None when unlimited.

    Containers (`docker run --cpus 2`) set this on many-core hosts; torch's default thread count ignores
    it and runs one thread per host core, each throttled.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "cpu.max").write_text("150000 100000")
    >>> _ = (d / "self").write_text("0::/")
    >>> cgroup_cpu_quota(d, d / "self")
    1.5
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, path = parts[1].split(","), parts[2].strip("/")
        if parts[0] == "0" and parts[1] == "":  # cgroup v2: cpu.max = "QUOTA PERIOD" or "max PERIOD"
            for folder in _up_to(root, path):
                quotas.append(_ratio(folder / "cpu.max", None))
        elif "cpu" in controllers:  # cgroup v1: cpu.cfs_quota_us (-1: none) over cpu.cfs_period_us
            for base in (root / parts[1], root / "cpu"):
                for folder in _up_to(base, path):
                    quotas.append(_ratio(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"))
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _up_to(root: Path, path: str) -> list[Path]:
    """`root/path` and each folder above it, up to `root`."""
    parts = [p for p in path.split("/") if p]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _ratio(quota_file: Path, period_file: Path | None) -> float | None:
    try:
        text = quota_file.read_text().split()
        quota, period = text[0], (text[1] if period_file is None else period_file.read_text().strip())
        if quota in ("max", "-1"):
            return None
        value = int(quota) / int(period)
    except (OSError, IndexError, ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def available_cores() -> tuple[int, str]:
    """How many cores this process may compute on, and where that number comes from.

    >>> count, why = available_cores(); count >= 1
    True
    """
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    if quota is not None and math.ceil(quota) < affinity:
        return max(1, math.ceil(quota)), f"cgroup CPU quota {quota:g} of {affinity} cores"
    return affinity, f"{affinity} core{'s' if affinity != 1 else ''} in the affinity mask"


def thread_candidates(cores: int) -> list[int]:
    """Thread counts worth timing on `cores` cores, the most first: every count up to 4, else halvings.

    >>> thread_candidates(2), thread_candidates(3), thread_candidates(16), thread_candidates(1)
    ([2, 1], [3, 2, 1], [16, 8, 4, 2], [1])
    """
    if cores <= 4:
        return list(range(cores, 0, -1))
    return [c for c in (cores, cores // 2, cores // 4, cores // 8) if c >= 1]


def other_cpu_seconds(stat: Path = Path("/proc/stat")) -> float | None:
    """CPU seconds that everything but this process has used on this process's cores since boot (busy time
    of those cores from /proc/stat, the hypervisor's steal included, minus this process's user and system
    time), or None where that cannot be read. Only differences of two readings mean anything.

    >>> reading = other_cpu_seconds(); reading is None or isinstance(reading, float)
    True
    """
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        lines = stat.read_text().splitlines()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    busy = 0
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or len(values) < 8:
            continue
        if cores is not None and int(name[3:]) not in cores:
            continue
        user, nice, system, _, _, irq, softirq, steal = (int(v) for v in values[:8])
        busy += user + nice + system + irq + softirq + steal
    own = os.times()
    return busy / ticks - (own.user + own.system)


@dataclass(frozen=True)
class ThreadPolicy:
    """What a run does about CPU threads: the counts it may try (the first is where it starts) and why."""

    candidates: list[int]
    reason: str

    @property
    def adaptive(self) -> bool:
        return len(self.candidates) > 1

    def describe(self) -> str:
        """For the runtime line and config.json.

        >>> ThreadPolicy([2, 1], "2 cores in the affinity mask").describe()
        '2 threads, measuring 2..1 in the first steps: 2 cores in the affinity mask'
        >>> ThreadPolicy([1], "--threads 1").describe()
        '1 thread: --threads 1'
        """
        if self.adaptive:
            return f"{self.candidates[0]} threads, measuring {self.candidates[0]}..{self.candidates[-1]} " \
                   f"in the first steps: {self.reason}"
        count = self.candidates[0]
        return f"{count} thread{'s' if count != 1 else ''}: {self.reason}"


def thread_policy(threads: int | str | None = "auto", planned_steps: int = 0, device: str = "cpu",
                  deterministic: bool = False, processes: int = 1,
                  settings: TunerSettings = TunerSettings()) -> ThreadPolicy:
    """The thread policy of a run: a fixed count where something decides it, else the counts to measure."""
    fixed = parse_threads(threads)
    if fixed is not None:
        return ThreadPolicy([fixed], f"--threads {fixed}")
    if device != "cpu":
        return ThreadPolicy([torch.get_num_threads()], f"computing on {device}")
    if os.environ.get("OMP_NUM_THREADS") or processes > 1:
        given = os.environ.get("OMP_NUM_THREADS")
        reason = f"{processes} processes share the cores" if processes > 1 else f"OMP_NUM_THREADS={given}"
        return ThreadPolicy([torch.get_num_threads()], reason)
    cores, why = available_cores()
    start = min(cores, TORCH_DEFAULT)
    if deterministic:
        return ThreadPolicy([start], f"--deterministic keeps one count, {why}")
    if planned_steps < settings.min_steps:
        return ThreadPolicy([start], f"{why}; a run of {planned_steps} steps is too short to measure")
    return ThreadPolicy(thread_candidates(start), why)


def _typical(seconds: list[float]) -> float:
    """Mean seconds per step without the slowest one (a checkpoint save, a GC pause).

    Not the median: a thread that waits for a core stalls one step in a few, and those stalls are
    the cost (tests/test_threads.py's 1.8 ms steps beside a busy process: the median favoured 2 threads
    in 1 run of 5, where 1 thread was faster).

    >>> _typical([1.0, 1.0, 4.0, 100.0])
    2.0
    """
    kept = sorted(seconds)[:-1] if len(seconds) > 2 else seconds
    return statistics.fmean(kept)


@dataclass
class ThreadTuner:
    """Times steps at each candidate count and keeps the fastest; the loop calls `step_done` after every step.

    `clock` and `set_threads` are time.perf_counter and torch.set_num_threads (tests pass fakes);
    `say` gets one line whenever the count changes. `decisions` is what history.json records.

    >>> times = iter(range(1000)); tuner = ThreadTuner(ThreadPolicy([2, 1], "test"), clock=lambda: next(times),
    ...                                                set_threads=lambda n: None)
    >>> for _ in range(60): tuner.step_done()
    >>> tuner.current, tuner.decisions[0]["threads"]  # every step took 1 s at either count: keep the cores
    (2, 2)
    """

    policy: ThreadPolicy
    settings: TunerSettings = TunerSettings()
    clock: Callable[[], float] = time.perf_counter
    set_threads: Callable[[int], None] = torch.set_num_threads
    say: Callable[[str], None] | None = None
    others: Callable[[], float | None] = other_cpu_seconds  # tests pass fakes; None: unknown, so measure
    decisions: list[dict[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current = self.policy.candidates[0]
        self.set_threads(self.current)
        self.steps, self.checks = 0, 0
        self.last: float | None = None
        self.plan: list[int] = []           # counts still to time in this measurement, in order
        self.samples: dict[int, list[float]] = {}
        self.skip, self.reason = 0, ""
        self.timed: list[float] = []
        self.recent: list[float] = []       # step seconds since the last decision or window
        self.reference = math.inf           # mean seconds per step at the chosen count, as measured
        self.measured_at = self.looked_at = self.clock()
        self.look_every = self.settings.look_seconds
        self.looked = False                 # the measurement under way began at a look (see _measure)
        # (clock, others' CPU seconds) the next quiet check compares with; a fixed count reads nothing
        self.reading = self._read() if self.policy.adaptive else None
        self.watching = False               # the start of a run's quiet check is under way
        self.quiet_checks = 0
        if self.policy.adaptive:
            self.skip = self.settings.warmup_steps  # a run's first steps are slow at any count
            if self.reading is None:
                self._measure("start of the run")
            else:
                self.watching = True

    def epoch_start(self) -> None:
        """The time since the last step (validation, checkpoints) is not a training step."""
        self.last = None

    def step_done(self) -> None:
        """One training step finished: time it, and move the measurement on."""
        now = self.clock()
        seconds, self.last = (None if self.last is None else now - self.last), now
        self.steps += 1
        if seconds is None or not self.policy.adaptive:
            return
        if self.plan:
            self._probe(seconds)
            return
        if self.watching:
            self._watch(seconds)
            return
        self.recent.append(seconds)
        if len(self.recent) >= self.settings.window and sum(self.recent) >= self.settings.window_seconds:
            mean, self.recent = _typical(self.recent), []
            if mean > self.reference * (1 + self.settings.slowdown):
                self._measure(f"steps slowed from {self.reference * 1e3:.1f} to {mean * 1e3:.1f} ms")
                return
        if now - self.measured_at > self.settings.recheck_seconds:
            self._recheck(now)
        elif self.current != self.policy.candidates[0] and now - self.looked_at >= self.look_every:
            self._look(now)

    def _read(self) -> tuple[float, float] | None:
        reading = self.others()
        return None if reading is None else (self.clock(), reading)

    def _others_cores(self) -> float | None:
        """Cores the other processes used on average since `self.reading`, which moves on to now (None: unknown)."""
        before, self.reading = self.reading, self._read()
        if before is None or self.reading is None or self.reading[0] <= before[0]:
            return None
        return max(0.0, (self.reading[1] - before[1]) / (self.reading[0] - before[0]))

    def _watch(self, seconds: float) -> None:
        """The start of a run: time steps at every core while reading what the other processes use."""
        if self.skip > 0:
            self.skip -= 1
            return
        self.timed.append(seconds)
        if len(self.timed) < self.settings.probe_steps or sum(self.timed) < self.settings.quiet_seconds:
            return
        self.watching = False
        used = self._others_cores()
        if used is None or used >= self.settings.quiet_cores:
            shown = "unknown" if used is None else f"{used:.2f}"  # the steps just watched time every core once
            self._measure(f"start of the run; other processes used {shown} cores", timed=_typical(self.timed))
            return
        self.reference, self.measured_at, self.recent = _typical(self.timed), self.clock(), []
        self.timed = []
        self._record(self.current, f"quiet machine: other processes used {used:.2f} cores, every core kept "
                                   f"without timing fewer", {self.current: self.reference})

    def _recheck(self, now: float) -> None:
        """The periodic check: nothing to time while every core is in use and the others stay quiet."""
        used = self._others_cores()
        if used is not None and used < self.settings.quiet_cores and self.current == self.policy.candidates[0]:
            self.measured_at, self.recent = now, []
            self.quiet_checks += 1
            return
        self._measure("periodic check")

    def _look(self, now: float) -> None:
        """Fewer threads than cores run: once the other processes have gone quiet, time the counts again."""
        self.looked_at = now
        used = self._others_cores()
        if used is not None and used < self.settings.quiet_cores:
            self._measure(f"other processes went quiet ({used:.2f} cores)", looked=True)

    def _measure(self, reason: str, timed: float | None = None, looked: bool = False) -> None:
        """Time every candidate count, alternating; `timed`: the current count's first sample, already taken;
        `looked`: a look (`_look`) found the others quiet, so a result of fewer threads backs the looks off."""
        cands = self.policy.candidates
        order = [self.current] + [c for c in cands if c != self.current]
        self.plan = [c for r in range(self.settings.rounds) for c in (order if r % 2 == 0 else order[::-1])]
        self.samples, self.timed, self.reason, self.looked = {c: [] for c in cands}, [], reason, looked
        if timed is not None:
            self.samples[self.plan.pop(0)].append(timed)
        self.checks += 1
        self._switch(self.plan[0])

    def _switch(self, count: int) -> None:
        if count != self.current:
            self.set_threads(count)
            self.current = count
            self.skip = self.settings.warmup_steps
        else:
            self.skip = min(self.skip, 1)  # the step in progress when the plan began is not a clean sample

    def _probe(self, seconds: float) -> None:
        if self.skip > 0:
            self.skip -= 1
            return
        self.timed.append(seconds)
        if len(self.timed) < self.settings.probe_steps or sum(self.timed) < self.settings.probe_seconds:
            return
        self.samples[self.plan.pop(0)].append(_typical(self.timed))
        self.timed = []
        if self.plan:
            self._switch(self.plan[0])
        else:
            self._decide()

    def _decide(self) -> None:
        means = {c: statistics.fmean(s) for c, s in self.samples.items() if s}
        fastest = min(means.values())
        chosen = max(c for c, m in means.items() if m <= fastest * (1 + self.settings.prefer_more))
        changed = not self.decisions or chosen != self.decisions[-1]["threads"]
        if chosen != self.current:
            self.set_threads(chosen)
            self.current = chosen
        self.reference, self.measured_at = means[chosen], self.clock()
        self.recent, self.reading, self.looked_at = [], self._read(), self.measured_at
        self.look_every = self.look_every * 2 if self.looked and chosen != self.policy.candidates[0] \
            else self.settings.look_seconds
        if changed:
            self._record(chosen, self.reason, means)

    def _record(self, chosen: int, reason: str, means: dict[int, float]) -> None:
        """A decision that changed the count (or the first): for history.json and the run's output."""
        if len(self.decisions) >= self.settings.max_records:
            return
        timings = {c: round(m * 1e3, 2) for c, m in sorted(means.items())}
        self.decisions.append({"step": self.steps, "threads": chosen, "reason": reason, "ms_per_step": timings})
        if self.say is not None:
            shown = ", ".join(f"{c}: {m:g} ms" for c, m in timings.items())
            self.say(f"threads: {chosen} (measured at step {self.steps}, {reason}; per step {shown})")

    def record(self) -> dict[str, object]:
        """The policy and its decisions, for history.json."""
        return {"policy": self.policy.describe(), "threads": self.current, "checks": self.checks,
                "quiet_checks": self.quiet_checks, "decisions": self.decisions}
