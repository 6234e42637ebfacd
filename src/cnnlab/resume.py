"""`cnnlab train --resume RUN_DIR`: a stopped run's own settings, checked, and its checkpoint.

The run continues with the settings in RUN_DIR/config.json. Flags given with --resume must
equal the recorded values, except --epochs, which may grow (one-phase runs with the constant
schedule: onecycle's and the speed-run's learning-rate curves depend on the total). `train_run(config, resume=True)`
then picks up the checkpoint and finishes the run as an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.config import DEFAULT_HEAD, TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.recipes import RECIPES
from cnnlab.rundir import read_json

if TYPE_CHECKING:  # resume_config imports no torch: the CLI checks --resume before torch loads (cli_checks.py)
    from cnnlab.training.checkpoint import Checkpoint

__all__ = ["resume_config", "open_checkpoint", "config_digest"]

MAY_CHANGE = ("epochs", "threads")  # threads: a resumed run may be on another machine, or beside other work
# left out of the digest: they say where, how long and what is reported, not what is computed
NOT_COMPUTED = ("epochs", "run_dir", "runs_root", "evaluate_test", "threads")
# Settings added after runs were first checkpointed (2026-12-07), with their defaults: they count in the
# digest only when set otherwise, so a run stopped before they existed still resumes.
ADDED_LATER = {"head": DEFAULT_HEAD, "max_image_pixels": None, "feature_cache": "auto", "feature_views": 1,
               "head_init": "auto"}


def config_digest(config: TrainConfig) -> str:
    """sha256 of the settings that decide the computation; a checkpoint records it.

    >>> config_digest(TrainConfig(epochs=1)) == config_digest(TrainConfig(epochs=5, run_dir="x"))
    True
    """
    settings = {k: v for k, v in config.to_dict().items()
                if k not in NOT_COMPUTED and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def resume_config(run_dir: str | Path, given: dict[str, Any]) -> TrainConfig:
    """The config of the stopped run in `run_dir`, with `given` settings (CLI flags) checked against it."""
    path = Path(run_dir)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CnnlabError(f"--resume {run_dir}: not a run directory (no config.json); give a directory "
                          f"that `cnnlab train` wrote")
    recorded = read_json(config_path, fix="the run cannot be resumed; restore the file or start the run again")
    if (path / "metrics.json").is_file():
        raise CnnlabError(f"--resume {run_dir}: that run already finished (metrics.json is written); nothing to "
                          f"resume. To train on from its weights, start a new run with --init-from {run_dir}")
    settings = {f.name: recorded[f.name] for f in fields(TrainConfig) if f.name in recorded}
    changed = [f"{k}={v!r} (the run has {settings.get(k)!r})" for k, v in given.items()
               if k not in MAY_CHANGE and v != settings.get(k)]
    if changed:
        raise CnnlabError(f"--resume {run_dir} continues with the run's own settings and only --epochs and "
                          f"--threads may change; got {', '.join(changed)}; drop those flags")
    epochs = given.get("epochs", settings.get("epochs", 1))
    if epochs != settings.get("epochs"):
        two_phases = settings.get("unfreeze_top") is not None and not settings.get("init_from")
        speedrun = RECIPES.get(settings.get("recipe", "seed")).trainer == "speedrun"  # its rates follow the total
        if epochs < settings.get("epochs", 1) or settings.get("schedule") == "onecycle" or two_phases or speedrun:
            raise CnnlabError(f"--resume {run_dir} --epochs {epochs}: the run was planned for {settings.get('epochs')}"
                              f" epochs; --epochs may only grow, and only for one-phase runs with the constant "
                              f"schedule; drop --epochs")
    threads = {"threads": given["threads"]} if "threads" in given else {}
    return TrainConfig(**{**settings, "epochs": epochs, "run_dir": str(path), **threads})


def open_checkpoint(run_dir: Path, config: TrainConfig, phases: int) -> Checkpoint:
    """The run's checkpoint, checked against its config (same settings digest, a phase the run has)."""
    from cnnlab.training.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(run_dir)
    run = checkpoint.run
    if run.get("config_sha256") != config_digest(config) or not 0 <= int(run.get("phase", -1)) < phases:
        raise CnnlabError(f"{run_dir / 'checkpoint.json'} was written for other settings than {run_dir}/config.json "
                          f"(was one of them edited?); the run cannot be resumed, start it again")
    done = len(checkpoint.meta["history"].get("loss", []))
    if phases == 1 and done > config.epochs:
        raise CnnlabError(f"--resume {run_dir}: {done} epochs are done already, more than --epochs {config.epochs}")
    return checkpoint
