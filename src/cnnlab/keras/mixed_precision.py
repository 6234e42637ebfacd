"""`keras.mixed_precision.set_global_policy(...)`: the precision `fit` trains in.

Unset, cnnlab chooses as everywhere (`--precision auto`: bf16 autocast where the hardware computes
bf16 natively, else fp32); "float32" pins fp32 (Keras's own default), "mixed_bfloat16" asks for
bf16 autocast. Weights, optimizer state and losses stay fp32 in every case.
"""

from __future__ import annotations

from cnnlab.errors import CnnlabError

__all__ = ["set_global_policy", "global_policy", "precision"]

POLICIES = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}
_policy: str | None = None  # None: cnnlab's automatic choice


def set_global_policy(policy: str | None) -> None:
    """'float32', 'mixed_bfloat16', 'mixed_float16', or None for cnnlab's automatic choice."""
    global _policy
    name = getattr(policy, "name", policy)
    if name is not None and name not in POLICIES:
        raise CnnlabError(f"set_global_policy: unknown policy {name!r}; use one of {', '.join(POLICIES)} or None")
    _policy = name


def global_policy() -> str:
    return _policy or "auto"


def precision() -> str:
    """The engine's precision setting for the current policy."""
    return POLICIES[_policy] if _policy else "auto"
