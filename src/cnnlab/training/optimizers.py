"""Optimizers by Keras's names and with Keras's defaults, built on torch.optim.

Keras and torch name the same algorithms with different defaults (adam's eps: 1e-7 against 1e-8;
AdamW's weight decay: 0.004 against 0.01; SGD's rate: 0.01 against none), so the tutorials'
`optimizer='adam'` means Keras's numbers here. Conventions that differ only in where a constant
sits are left as torch writes them: SGD momentum (v = m v + g; w -= lr v is Keras's update for a
constant rate), and eps added to sqrt(v_hat) in Adam (Keras adds it to sqrt(v); at 1e-7 the
difference is below float32's resolution on typical gradients).

    >>> spec = OptimizerSpec("adam")
    >>> opt = spec.build([torch.nn.Parameter(torch.zeros(2))], torch.device("cpu"))
    >>> type(opt).__name__, opt.defaults["eps"], spec.lr
    ('Adam', 1e-07, 0.001)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cnnlab.errors import CnnlabError, did_you_mean

__all__ = ["OptimizerSpec", "OPTIMIZERS"]

# name: (Keras's default learning rate, the other Keras defaults as torch arguments)
OPTIMIZERS: dict[str, tuple[float, dict[str, Any]]] = {
    "adam": (1e-3, {"betas": (0.9, 0.999), "eps": 1e-7}),
    "adamw": (1e-3, {"betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.004}),
    "nadam": (1e-3, {"betas": (0.9, 0.999), "eps": 1e-7}),
    "sgd": (1e-2, {"momentum": 0.0, "nesterov": False}),
    "rmsprop": (1e-3, {"alpha": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False}),
    "adagrad": (1e-3, {"eps": 1e-7, "initial_accumulator_value": 0.1}),
}
_TORCH = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "nadam": torch.optim.NAdam, "sgd": torch.optim.SGD,
          "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}
_FUSED = ("adam", "adamw", "sgd")  # torch has one-kernel versions of these (~1 ms less per step on 2 cores)


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer to build once the trainable parameters are known.

    `options` are torch's argument names (betas, eps, momentum, nesterov, alpha, weight_decay, ...);
    `clipnorm` clips each parameter's gradient norm, `global_clipnorm` all of them together (Keras's options).
    """

    name: str = "adam"
    learning_rate: float | None = None  # None: Keras's default for this optimizer
    options: dict[str, Any] = field(default_factory=dict)
    clipnorm: float | None = None
    global_clipnorm: float | None = None

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise CnnlabError(f"unknown optimizer {self.name!r}.{did_you_mean(self.name, OPTIMIZERS)} "
                              f"Use one of: {', '.join(OPTIMIZERS)}.")
        lr = self.learning_rate
        if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0):
            raise CnnlabError(f"learning_rate must be a number > 0, e.g. 0.001; got {lr!r}")
        for what in ("clipnorm", "global_clipnorm"):
            value = getattr(self, what)
            if value is not None and not value > 0:
                raise CnnlabError(f"{what} must be > 0; got {value!r}")

    @property
    def lr(self) -> float:
        """The learning rate used: the one given, else Keras's default for this optimizer."""
        return float(self.learning_rate) if self.learning_rate is not None else OPTIMIZERS[self.name][0]

    def build(self, params: Sequence[torch.nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
        """The torch optimizer over `params` (fused kernels where torch has them for this device)."""
        arguments = {**OPTIMIZERS[self.name][1], **self.options, "lr": self.lr}
        if self.name in _FUSED and device.type in ("cpu", "cuda"):
            arguments["fused"] = True
        if self.name == "nadam":
            arguments["momentum_decay"] = 4e-3  # Keras's 0.96 ** (0.004 t) momentum schedule
        try:
            return _TORCH[self.name](params, **arguments)  # type: ignore[no-any-return]
        except (TypeError, ValueError) as exc:
            raise CnnlabError(f"optimizer {self.name}: {exc}") from None

    def clip(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Clip gradients as Keras's clipnorm / global_clipnorm do (after backward, before the step)."""
        if self.global_clipnorm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.global_clipnorm)
        if self.clipnorm is not None:
            for p in params:
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_([p], self.clipnorm)
