"""Adam / AdamW with PyTorch semantics, and the learning-rate schedules of notes §6.

Parameters are a dict name -> array; the optimiser updates them in place (outside autograd).
"""
from __future__ import annotations

import math

import numpy as np

from ..spec import Optimizer, Schedule


def lr_at(step: int, steps: int, base_lr: float, schedule: Schedule) -> float:
    """LR for `step` (0-based) of a run with `steps` updates (notes §6).

    Warmup: lr * step / warmup_steps for step < warmup_steps (step 0 has LR 0); afterwards
    lr * f(step - warmup_steps, steps - warmup_steps)."""
    warmup_steps = int(steps * schedule.warmup)
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    s, S = step - warmup_steps, steps - warmup_steps
    kind = schedule.kind
    if kind == "constant":
        f = 1.0
    elif kind == "linear":
        f = 1.0 - s / S
    elif kind == "cosine":
        f = 1.0 if S == 1 else math.cos(math.pi / 2 * s / (S - 1))
    elif kind == "half_cosine":
        f = 1.0 if S == 1 else 0.5 * (1.0 + math.cos(math.pi * s / (S - 1)))
    elif kind == "exponential":
        f = 0.5 ** (s / schedule.halflife)
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    if schedule.final and kind != "exponential":  # 0: exactly the arithmetic without `final`
        f = schedule.final + (1.0 - schedule.final) * f
    return base_lr * f


class Adam:
    """torch.optim semantics: bias-corrected moments; `adamw` applies decoupled weight decay
    p <- p * (1 - lr * wd) before the step, `adam` adds wd * p to the gradient (L2).

    `folded=True` evaluates the same update with the bias correction of the second moment folded
    into the step size and eps (`adam_update`): one elementwise pass fewer, different rounding
    (what `kernels.FastAdam`, the decomposition's optimiser, computes, chunk by chunk)."""

    def __init__(self, params: dict[str, np.ndarray], cfg: Optimizer, folded: bool = False):
        self.cfg = cfg
        self.folded = folded
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        c = self.cfg
        self.t += 1
        bc1 = 1.0 - c.beta1 ** self.t
        bc2 = 1.0 - c.beta2 ** self.t
        for k, p in params.items():
            adam_update(c, p, grads[k], self.m[k], self.v[k], lr, bc1, bc2, self.folded)


def folded_constants(c: Optimizer, lr: float, bc1: float, bc2: float) -> tuple[float, float]:
    """(step, eps') with lr / bc1 * m / (sqrt(v / bc2) + eps) == step * m / (sqrt(v) + eps'):
    step = lr / bc1 * sqrt(bc2), eps' = eps * sqrt(bc2)."""
    r = math.sqrt(bc2)
    return lr / bc1 * r, c.eps * r


def adam_update(c: Optimizer, p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray,
                lr: float, bc1: float, bc2: float, folded: bool = False) -> None:
    """One in-place Adam/AdamW update of parameter p with gradient g and moments m, v, given the
    bias corrections bc1 = 1 - beta1^t and bc2 = 1 - beta2^t (`folded`: see `Adam`)."""
    if c.weight_decay and c.name == "adamw":
        p *= 1.0 - lr * c.weight_decay
    elif c.weight_decay:
        g = g + c.weight_decay * p
    m *= c.beta1
    m += (1.0 - c.beta1) * g
    v *= c.beta2
    v += (1.0 - c.beta2) * (g * g)
    if folded:
        step, eps = folded_constants(c, lr, bc1, bc2)
        p -= step * (m / (np.sqrt(v) + eps))
        return
    denom = np.sqrt(v / bc2) + c.eps
    p -= (lr / bc1) * m / denom
