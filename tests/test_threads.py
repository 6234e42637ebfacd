"""The CPU thread policy (training/threads.py): its decisions on simulated step times, the core budget
it reads (affinity mask, cgroup quota), and a real run beside a busy child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.training import threads as threads_module
from cnnlab.training.threads import (
    ThreadPolicy, ThreadTuner, TunerSettings, cgroup_cpu_quota, parse_threads, thread_candidates, thread_policy,
)


class FakeCpu:
    """A clock whose steps take `ms_per_step(threads, step)` milliseconds at the thread count the tuner set."""

    def __init__(self, ms_per_step: Callable[[int, int], float]) -> None:
        self.ms_per_step, self.now, self.threads, self.step, self.set_calls = ms_per_step, 0.0, 0, 0, []
        self.since_switch = 0  # steps since the count last changed

    def set_threads(self, count: int) -> None:
        self.since_switch = 0 if count != self.threads else self.since_switch
        self.threads = count
        self.set_calls.append(count)

    def clock(self) -> float:
        return self.now

    def run(self, tuner: ThreadTuner, steps: int) -> list[int]:
        """Run `steps` steps; the thread count each step ran at."""
        counts = []
        for _ in range(steps):
            counts.append(self.threads)
            self.now += self.ms_per_step(self.threads, self.step) / 1e3
            self.step += 1
            self.since_switch += 1
            tuner.step_done()
        return counts


def tuner_on(cpu: FakeCpu, candidates: tuple[int, ...] = (2, 1), others: Callable[[], float | None] = lambda: None,
             **settings: float) -> tuple[ThreadTuner, list[str]]:
    """A tuner on the fake CPU; `others` is what the other processes used (CPU seconds; None: unknown, so the
    tuner times the counts from the start)."""
    said: list[str] = []
    tuner = ThreadTuner(ThreadPolicy(list(candidates), "test"), TunerSettings(**settings),  # type: ignore[arg-type]
                        clock=cpu.clock, set_threads=cpu.set_threads, say=said.append, others=others)
    return tuner, said


def test_quiet_cpu_keeps_every_core() -> None:
    cpu = FakeCpu(lambda t, s: {2: 5.0, 1: 7.5}[t])  # two threads 1.5x faster, as measured quiet on 2 cores
    tuner, said = tuner_on(cpu)
    counts = cpu.run(tuner, 500)
    assert tuner.current == 2 and counts[-1] == 2
    assert tuner.decisions[0]["ms_per_step"] == {1: 7.5, 2: 5.0}
    # the measurement alone: 2 rounds of warm-up + 0.25 s of timed steps (34 at 7.5 ms)
    assert sum(c == 1 for c in counts) <= 2 * (3 + 34)
    assert said and said[0].startswith("threads: 2 (measured at step")


def test_busy_core_goes_down_to_one_thread() -> None:
    cpu = FakeCpu(lambda t, s: {2: 15.0, 1: 7.5}[t])  # one other busy program: 2 threads wait for each other
    tuner, said = tuner_on(cpu)
    counts = cpu.run(tuner, 500)
    assert tuner.current == 1 and counts[-1] == 1 and cpu.threads == 1
    assert tuner.decisions[0]["threads"] == 1 and "1: 7.5 ms, 2: 15 ms" in said[0]


def test_a_small_gain_does_not_give_up_a_core() -> None:
    cpu = FakeCpu(lambda t, s: {2: 10.0, 1: 9.5}[t])  # 5% faster at 1 thread: within noise, keep the cores
    tuner, _ = tuner_on(cpu)
    cpu.run(tuner, 200)
    assert tuner.current == 2


def test_warm_up_steps_after_a_switch_are_not_timed() -> None:
    # the first steps at a new count are slow (oneDNN builds its primitives); they must not decide
    cpu = FakeCpu(lambda t, s: 0.0)
    cpu.ms_per_step = lambda t, s: (50.0 if t == 2 and cpu.since_switch < 4 else 5.0) if t == 2 else 7.5
    tuner, _ = tuner_on(cpu, warmup_steps=3, probe_steps=4)
    cpu.run(tuner, 200)
    assert tuner.current == 2


def test_load_that_arrives_later_is_found_by_the_slowdown() -> None:
    cpu = FakeCpu(lambda t, s: {2: 5.0, 1: 7.5}[t] if s < 300 else {2: 15.0, 1: 7.5}[t])
    tuner, said = tuner_on(cpu, recheck_seconds=1e9)  # only the slowdown can trigger
    counts = cpu.run(tuner, 600)
    assert counts[299] == 2 and counts[-1] == 1
    assert tuner.decisions[-1]["threads"] == 1 and tuner.decisions[-1]["reason"].startswith("steps slowed")
    assert len(said) == 2


def test_load_that_ends_is_found_by_the_periodic_check() -> None:
    cpu = FakeCpu(lambda t, s: {2: 15.0, 1: 7.5}[t] if s < 300 else {2: 5.0, 1: 7.5}[t])
    tuner, _ = tuner_on(cpu, recheck_seconds=3.0)
    counts = cpu.run(tuner, 1500)
    assert counts[299] == 1 and counts[-1] == 2
    assert tuner.decisions[-1]["reason"] == "periodic check"


def test_time_between_epochs_is_not_a_step() -> None:
    cpu = FakeCpu(lambda t, s: {2: 5.0, 1: 7.5}[t])
    tuner, _ = tuner_on(cpu, recheck_seconds=1e9)
    cpu.run(tuner, 100)
    checks = tuner.checks
    for _ in range(3):  # validation takes 10 s after each epoch: no slowdown of the steps
        cpu.now += 10.0
        tuner.epoch_start()
        cpu.run(tuner, 50)
    assert tuner.checks == checks and tuner.current == 2


def test_four_candidates_on_many_cores() -> None:
    cpu = FakeCpu(lambda t, s: {16: 9.0, 8: 4.0, 4: 6.0, 2: 10.0}[t])  # half the cores wins (a noisy neighbour)
    tuner, _ = tuner_on(cpu, candidates=tuple(thread_candidates(16)))
    cpu.run(tuner, 400)
    assert tuner.current == 8


def test_a_quiet_machine_keeps_every_core_without_timing_fewer() -> None:
    cpu = FakeCpu(lambda t, s: {2: 5.0, 1: 7.5}[t])
    tuner, said = tuner_on(cpu, others=lambda: 0.02 * cpu.now, recheck_seconds=3.0)  # a browser tab, idling
    counts = cpu.run(tuner, 4000)  # 20 s of steps
    assert set(counts) == {2} and cpu.set_calls == [2]  # never a step at one thread
    assert tuner.decisions[0]["reason"].startswith("quiet machine: other processes used 0.02 cores")
    assert tuner.decisions[0]["ms_per_step"] == {2: 5.0} and said[0].startswith("threads: 2 (measured at step")
    assert tuner.checks == 0 and tuner.quiet_checks >= 5  # each periodic check read the others, timed nothing


def test_other_processes_busy_at_the_start_are_timed() -> None:
    cpu = FakeCpu(lambda t, s: {2: 15.0, 1: 7.5}[t])
    tuner, _ = tuner_on(cpu, others=lambda: 1.0 * cpu.now)  # `yes > /dev/null` on one of the two cores
    counts = cpu.run(tuner, 600)
    assert tuner.current == 1 and counts[-1] == 1
    assert tuner.decisions[0]["reason"] == "start of the run; other processes used 1.00 cores"
    assert tuner.decisions[0]["ms_per_step"] == {1: 7.5, 2: 15.0}
    # the watched first second at 2 threads is 2 threads' first sample: one more 0.25 s probe, not two
    before = counts[:tuner.decisions[0]["step"]]  # type: ignore[misc]
    assert before.count(2) <= 3 + 67 + 1 + 17 + 3  # warm-up, 1 s of 15 ms steps, the step in flight, a probe, a switch


def test_after_a_quiet_start_load_is_found_by_the_slowdown_and_by_the_periodic_check() -> None:
    def busy_from(start: float) -> Callable[[], float]:
        return lambda: max(0.0, cpu.now - start)  # one core busy from `start` seconds on

    cpu = FakeCpu(lambda t, s: {2: 5.0, 1: 7.5}[t] if s < 400 else {2: 15.0, 1: 7.5}[t])
    tuner, _ = tuner_on(cpu, others=busy_from(2.0), recheck_seconds=1e9)
    counts = cpu.run(tuner, 900)
    assert counts[399] == 2 and counts[-1] == 1 and tuner.decisions[-1]["reason"].startswith("steps slowed")
    # a load that slows nothing much (2 threads still best) is read at the periodic check, and timed
    cpu = FakeCpu(lambda t, s: {2: 5.0, 1: 7.5}[t] if s < 400 else {2: 5.5, 1: 7.5}[t])
    tuner, _ = tuner_on(cpu, others=busy_from(2.0), recheck_seconds=3.0)
    cpu.run(tuner, 1500)
    assert tuner.checks >= 1 and tuner.current == 2 and 1 in cpu.set_calls


def test_a_load_that_passes_at_the_start_costs_seconds_not_the_run() -> None:
    def busy_until(end: float) -> Callable[[], float]:
        return lambda: min(cpu.now, end)  # one core busy for the first `end` seconds, then quiet

    cpu = FakeCpu(lambda t, s: {2: 5.0, 1: 7.5}[t] if cpu.now >= 1.5 else {2: 40.0, 1: 7.5}[t])
    tuner, said = tuner_on(cpu, others=busy_until(1.5), recheck_seconds=1e9)  # no periodic check: only the look
    counts = cpu.run(tuner, 3000)
    assert tuner.decisions[0]["threads"] == 1 and tuner.decisions[0]["reason"].startswith("start of the run")
    assert tuner.decisions[1]["threads"] == 2 and tuner.decisions[1]["reason"].startswith("other processes went quiet")
    back = next(i for i in range(len(counts)) if i > tuner.decisions[0]["step"] and counts[i] == 2)  # type: ignore
    assert back - tuner.decisions[0]["step"] < 3.5 / 7.5e-3  # within the look interval and a measurement
    assert counts[-1] == 2 and len(said) == 2


def test_a_busy_machine_is_looked_at_without_timing_again() -> None:
    cpu = FakeCpu(lambda t, s: {2: 15.0, 1: 7.5}[t])
    tuner, _ = tuner_on(cpu, others=lambda: 1.0 * cpu.now, recheck_seconds=1e9)  # busy all along
    counts = cpu.run(tuner, 3000)  # 22 s of steps
    assert tuner.checks == 1 and set(counts[200:]) == {1}


def test_looks_that_keep_finding_one_thread_faster_back_off() -> None:
    cpu = FakeCpu(lambda t, s: {2: 15.0, 1: 7.5}[t])  # slow at 2 threads though the others look quiet
    tuner, _ = tuner_on(cpu, others=lambda: 0.5 * min(cpu.now, 1.0), recheck_seconds=1e9)
    counts = cpu.run(tuner, 8000)  # 60 s of steps: looks at about 2, 4, 8, 16 and 32 s after each timing
    assert 3 <= tuner.checks <= 7 and tuner.current == 1
    assert counts.count(2) < 0.05 * len(counts)


@pytest.mark.skipif(threads_module.other_cpu_seconds() is None or not hasattr(os, "sched_setaffinity"),
                    reason="needs /proc/stat and CPU affinity")
def test_the_others_reading_sees_a_busy_process() -> None:
    import time

    core = sorted(os.sched_getaffinity(0))[-1]
    before, start = threads_module.other_cpu_seconds(), time.monotonic()
    busy = subprocess.Popen([sys.executable, "-c", f"import os, time\nos.sched_setaffinity(0, {{{core}}})\n"
                             f"end = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"])
    busy.wait()
    after, elapsed = threads_module.other_cpu_seconds(), time.monotonic() - start
    assert before is not None and after is not None
    assert (after - before) / elapsed > 0.6  # the busy child took most of one core meanwhile


def test_fixed_policy_never_switches() -> None:
    cpu = FakeCpu(lambda t, s: 5.0)
    tuner, said = tuner_on(cpu, candidates=(1,))
    cpu.run(tuner, 300)
    assert cpu.set_calls == [1] and tuner.decisions == [] and said == []


def test_policy_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads_module, "available_cores", lambda: (4, "4 cores in the affinity mask"))
    monkeypatch.setattr(threads_module, "TORCH_DEFAULT", 4)
    assert thread_policy("auto", 1000).candidates == [4, 3, 2, 1]
    assert thread_policy(3, 1000).candidates == [3] and "--threads 3" in thread_policy(3).describe()
    assert thread_policy("auto", 10).candidates == [4] and "too short" in thread_policy("auto", 10).reason
    assert thread_policy("auto", 1000, deterministic=True).candidates == [4]
    assert not thread_policy("auto", 1000, processes=2).adaptive
    assert not thread_policy("auto", 1000, device="cuda").adaptive
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert thread_policy("auto", 1000).reason == "OMP_NUM_THREADS=1"


def test_parse_threads_errors() -> None:
    for bad in ("0", "-2", "two", "1.5", True):
        with pytest.raises(CnnlabError, match="not a thread count; give a positive integer, or auto"):
            parse_threads(bad)


def test_cgroup_quotas(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    (v2 / "user.slice" / "job").mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "user.slice" / "cpu.max").write_text("300000 100000\n")
    (v2 / "user.slice" / "job" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "self2").write_text("0::/user.slice/job\n")
    assert cgroup_cpu_quota(v2, tmp_path / "self2") == 3.0  # the tightest quota on the way up
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "docker" / "abc").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "self1").write_text("4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")
    assert cgroup_cpu_quota(v1, tmp_path / "self1") == 0.5
    (tmp_path / "none").write_text("0::/\n")
    assert cgroup_cpu_quota(tmp_path / "missing", tmp_path / "none") is None


def test_cgroup_quota_caps_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads_module, "cgroup_cpu_quota", lambda: 1.5)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert threads_module.available_cores() == (2, "cgroup CPU quota 1.5 of 64 cores")


BUSY_RUN = textwrap.dedent("""
    import json, os, sys, torch
    os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})
    from cnnlab.data import load_dataset
    from cnnlab.models.zoo import build_model
    from cnnlab.training import fit
    from cnnlab.training.devices import resolve_runtime
    from cnnlab.training import threads
    threads.TORCH_DEFAULT = 2  # the two CPUs of the affinity mask set above
    data = load_dataset("digits")
    torch.manual_seed(0)
    # 4 epochs of 360 steps: on a CPU fast enough for 1.4 ms steps at one thread, the start of the run's
    # measurement (a second watched, then 0.25 s probes) ended at steps 407-697 of the 720 that 2 epochs gave
    h = fit(build_model("seed-mnist"), data, epochs=4, batch_size=4, verbose=0,
            runtime=resolve_runtime("cpu", "fp32", "off", steps=1440))
    print(json.dumps(h.threads))
""")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs to pin the training and a busy process to")
def test_real_run_beside_a_busy_process_uses_one_thread() -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    spin = f"import os; os.sched_setaffinity(0, {{{cpus[1]}}})\nwhile True: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin])  # takes one of the two cores the run may use
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    try:
        done = subprocess.run([sys.executable, "-c", BUSY_RUN, f"{cpus[0]},{cpus[1]}"], capture_output=True,
                              text=True, timeout=600, env=env)
    finally:
        busy.kill()
        busy.wait()
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    first = record["decisions"][0]
    assert first["threads"] == 1, record  # one thread per free core: the other core is taken
    assert first["ms_per_step"]["2"] > 1.1 * first["ms_per_step"]["1"]


def test_cli_threads_flag_is_recorded_and_may_change_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cnnlab.cli import main
    run = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--model", "fast-cnn", "--batch-size", "256", "--epochs", "1",
            "--seed", "1", "--run-dir", str(run), "--quiet"]
    assert main([*args, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "runtime: cpu (1 thread: --threads 1), " in out
    config = json.loads((run / "config.json").read_text())
    assert config["threads"] == 1 and config["runtime"]["thread_policy"] == "1 thread: --threads 1"
    assert json.loads((run / "history.json").read_text())["threads"][0]["threads"] == 1
    assert main([*args[:-3], "--run-dir", str(tmp_path / "b"), "--threads", "none"]) == 2
    assert "--threads: expected a positive number of threads or auto, got 'none'" in capsys.readouterr().err
    from cnnlab.resume import resume_config
    (run / "metrics.json").unlink()  # make the finished run look stopped, to check the flag is accepted
    assert resume_config(run, {"threads": 2}).threads == 2
