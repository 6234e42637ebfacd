"""Keras's optimizers (`optimizer='adam'` or `keras.optimizers.Adam(learning_rate=1e-5)`) with Keras's defaults.

Each resolves to the engine's `OptimizerSpec` (training/optimizers.py), which builds the torch optimizer.

    >>> resolve_optimizer(Adam(learning_rate=1e-5)).lr, resolve_optimizer("sgd").lr
    (1e-05, 0.01)
"""

from __future__ import annotations

from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.training.optimizers import OPTIMIZERS, OptimizerSpec

__all__ = ["Optimizer", "Adam", "AdamW", "Nadam", "SGD", "RMSprop", "Adagrad", "resolve_optimizer"]


class Optimizer:
    """A Keras optimizer object: its name, learning rate and settings (what `compile` needs)."""

    name = "adam"
    defaults: dict[str, Any] = {}  # Keras argument name -> (torch argument name) handled in `_options`

    def __init__(self, learning_rate: float | None = None, clipnorm: float | None = None,
                 global_clipnorm: float | None = None, **options: Any) -> None:
        if "lr" in options:  # Keras 2's spelling
            learning_rate = options.pop("lr")
        if not (learning_rate is None or isinstance(learning_rate, (int, float))):
            raise CnnlabError(f"{type(self).__name__}: learning_rate must be a number (schedules are not supported "
                              f"yet; use keras.callbacks.LearningRateScheduler); got {type(learning_rate).__name__}")
        self.learning_rate = learning_rate if learning_rate is not None else OPTIMIZERS[self.name][0]
        self.clipnorm, self.global_clipnorm, self.options = clipnorm, global_clipnorm, options

    def spec(self) -> OptimizerSpec:
        return OptimizerSpec(self.name, float(self.learning_rate), _options(self.name, self.options),
                             self.clipnorm, self.global_clipnorm)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, **self.options}


class Adam(Optimizer):
    name = "adam"


class AdamW(Optimizer):
    name = "adamw"


class Nadam(Optimizer):
    name = "nadam"


class SGD(Optimizer):
    name = "sgd"


class RMSprop(Optimizer):
    name = "rmsprop"


class Adagrad(Optimizer):
    name = "adagrad"


def _options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Keras argument names -> torch's, for this optimizer."""
    out: dict[str, Any] = {}
    betas = list(OPTIMIZERS[name][1].get("betas", (0.9, 0.999)))
    for key, value in options.items():
        if key == "beta_1":
            betas[0] = value
        elif key == "beta_2":
            betas[1] = value
        elif key == "epsilon":
            out["eps"] = value
        elif key == "rho":
            out["alpha"] = value
        elif key in ("momentum", "nesterov", "weight_decay", "amsgrad", "centered", "initial_accumulator_value"):
            out[key] = value
        elif key in ("name", "use_ema", "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
                     "gradient_accumulation_steps", "decay", "clipvalue"):
            if key in ("clipvalue", "use_ema", "gradient_accumulation_steps") and value not in (None, False):
                raise CnnlabError(f"optimizer {name}: {key}={value!r} is not supported yet")
        else:
            raise CnnlabError(f"optimizer {name}: unknown argument {key!r}")
    if "betas" in OPTIMIZERS[name][1]:
        out["betas"] = tuple(betas)
    return out


def resolve_optimizer(optimizer: Any) -> OptimizerSpec:
    """The engine spec for an optimizer name ('adam', ...) or object (Adam(learning_rate=...))."""
    if isinstance(optimizer, Optimizer):
        return optimizer.spec()
    if isinstance(optimizer, str):
        return OptimizerSpec(optimizer.lower())
    raise CnnlabError(f"compile: optimizer must be a name such as 'adam' or a keras.optimizers object; "
                      f"got {type(optimizer).__name__}")
