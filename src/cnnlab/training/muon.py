"""`Muon`: momentum SGD with orthogonalized updates, for conv filters and other weight matrices.

Keller Jordan's optimizer (used in airbench94_muon and modded-nanogpt): the momentum of each
weight, reshaped to a matrix (out, rest), is replaced by roughly U V^T of its SVD U S V^T before the
step, computed by a few quintic Newton-Schulz iterations (matrix products only, fast on GPUs).

>>> w = torch.nn.Parameter(torch.randn(8, 4, 3, 3)); w.grad = torch.randn(8, 4, 3, 3)
>>> Muon([w], lr=0.1).step()   # one orthogonalized step on w
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from cnnlab.errors import CnnlabError

__all__ = ["Muon", "orthogonalize", "NEWTON_SCHULZ", "NEWTON_SCHULZ_STEPS"]

# Keller Jordan's quintic Newton-Schulz coefficients: they push every singular value in (0, 1] into
# about [0.7, 1.2] in a few steps, trading exactness for speed (Muon only needs "roughly orthogonal").
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 3        # airbench94_muon's count for conv filters
NEWTON_SCHULZ_EPS = 1e-7       # keeps the first normalization finite for an all-zero update


def orthogonalize(matrix: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS) -> torch.Tensor:
    """Roughly U V^T of `matrix` = U S V^T (singular values pushed toward 1) by a quintic Newton-Schulz iteration.

    Runs in bf16 on a GPU (tensor cores; the iteration tolerates it) and fp32 elsewhere.

    >>> s = torch.linalg.svdvals(orthogonalize(torch.randn(16, 64), steps=5))
    >>> bool(s.min() > 0.6 and s.max() < 1.3)
    True
    """
    a, b, c = NEWTON_SCHULZ
    x = matrix.to(torch.bfloat16 if matrix.is_cuda else torch.float32)
    x = x / (x.norm() + NEWTON_SCHULZ_EPS)  # Frobenius norm >= spectral norm: every singular value <= 1
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.mT  # iterate on the wide orientation: the Gram matrix x x^T is the smaller one
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(matrix.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum SGD whose step for each weight, seen as a matrix (out, rest), is orthogonalized.

    Every direction of the update gets the same size, so rare directions learn as fast as common
    ones. `renormalize` rescales each weight to norm sqrt(out) before its step, as airbench94_muon
    does: for weights followed by BatchNorm the scale is irrelevant to the output, and a fixed norm
    keeps the relative step size at `lr`.

    >>> _ = torch.manual_seed(0)
    >>> w = torch.nn.Parameter(torch.randn(8, 4, 3, 3)); w.grad = torch.randn(8, 4, 3, 3)
    >>> Muon([w], lr=0.1).step()
    >>> round(float(w.detach().flatten(1).norm()) ** 2)  # renormalized to sqrt(out channels), then a small step
    8
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.24, momentum: float = 0.6, nesterov: bool = True,
                 steps: int = NEWTON_SCHULZ_STEPS, renormalize: bool = True) -> None:
        if not lr > 0 or not 0 <= momentum < 1:
            raise CnnlabError(f"Muon: lr must be > 0 and momentum in [0, 1); got lr={lr!r}, momentum={momentum!r}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov, "steps": steps,
                                  "renormalize": renormalize})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(p.grad)
                direction = p.grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
                if group["renormalize"]:
                    p.mul_(math.sqrt(p.shape[0]) / p.norm().clamp_min(NEWTON_SCHULZ_EPS))
                update = orthogonalize(direction.reshape(len(p), -1), group["steps"])
                p.add_(update.view(p.shape), alpha=-group["lr"])
        return loss
