"""Piecewise schedules of a coefficient over training (VPD notes §3-§4, the authors' knot form):
the value of a loss coefficient, the smooth-L0 g or the adversarial fraction at each step.

A schedule is a list of knots (t, value) on normalised training time t = step / (steps - 1), so the
last knot lands exactly on the last update (step = steps - 1, as the authors' schedules; the
one-past-the-end log-only step holds the final value). Each segment between two knots interpolates
by its own rule:

    linear   v0 + (v1 - v0) u
    cosine   v1 + (v0 - v1) (1 + cos(pi u)) / 2        (starts flat at v0, ends flat at v1)
    hold     v0 until the segment's end knot, v1 from it on (a step function)

with u = (t - t0) / (t1 - t0). Before the first knot the first value holds, after the last knot the
last value. A plain float is the constant schedule (`value_at` accepts both).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

INTERPOLATIONS = ("linear", "cosine", "hold")


@dataclass(frozen=True)
class Knots:
    """Knots ((t, value), ...) with t non-decreasing in [0, 1]; `interp[i]` is the rule of the
    segment from knot i to knot i + 1 (one fewer than the knots)."""

    knots: tuple[tuple[float, float], ...]
    interp: tuple[str, ...] = ()

    def __post_init__(self):
        knots = tuple((float(t), float(v)) for t, v in self.knots)
        object.__setattr__(self, "knots", knots)
        if not knots:
            raise ValueError("a schedule needs at least one knot")
        interp = tuple(self.interp) if self.interp else ("linear",) * (len(knots) - 1)
        object.__setattr__(self, "interp", interp)
        if len(interp) != len(knots) - 1:
            raise ValueError(f"{len(knots)} knots need {len(knots) - 1} interpolations, got {len(interp)}")
        for rule in interp:
            if rule not in INTERPOLATIONS:
                raise ValueError(f"unknown interpolation {rule!r}; known: {', '.join(INTERPOLATIONS)}")
        ts = [t for t, _ in knots]
        if any(not 0.0 <= t <= 1.0 for t in ts) or any(b < a for a, b in zip(ts, ts[1:])):
            raise ValueError(f"knot positions must be non-decreasing in [0, 1], got {ts}")

    def at(self, t: float) -> float:
        """The value at normalised time t (clamped to [0, 1])."""
        t = min(max(float(t), 0.0), 1.0)
        knots = self.knots
        if t < knots[0][0]:
            return knots[0][1]
        for (t0, v0), (t1, v1), rule in zip(knots, knots[1:], self.interp):
            if t >= t1:
                continue  # past this segment (a hold jumps exactly at its end knot)
            u = (t - t0) / (t1 - t0)
            if rule == "linear":
                return v0 + (v1 - v0) * u
            if rule == "cosine":
                return v1 + (v0 - v1) * 0.5 * (1.0 + math.cos(math.pi * u))
            return v0
        return knots[-1][1]

    def text(self) -> str:
        """How the language writes it: linear(a, b) / cosine(a, b) for one segment over the whole
        run, else knots([t, v], [t, v, rule], ...) (a knot's rule is that of the segment ending at it)."""
        k = self.knots
        if len(k) == 2 and k[0][0] == 0.0 and k[1][0] == 1.0 and self.interp[0] != "hold":
            return f"{self.interp[0]}({k[0][1]:g}, {k[1][1]:g})"
        parts = [f"[{k[0][0]:g}, {k[0][1]:g}]"]
        parts += [f"[{t:g}, {v:g}" + ("" if rule == "linear" else f", {rule}") + "]"
                  for (t, v), rule in zip(k[1:], self.interp)]
        return "knots(" + ", ".join(parts) + ")"


def constant(value: float) -> Knots:
    return Knots(((0.0, value),))


def linear(start: float, end: float) -> Knots:
    """start at t = 0 to end at t = 1, linearly (the g anneal, notes §3)."""
    return Knots(((0.0, start), (1.0, end)), ("linear",))


def cosine(start: float, end: float) -> Knots:
    """start at t = 0 to end at t = 1 along a half cosine (the main LR shape, notes §4)."""
    return Knots(((0.0, start), (1.0, end)), ("cosine",))


def warmup_then_constant(value: float, warmup: float) -> Knots:
    """0 at t = 0, linearly to `value` at t = warmup, then constant (the source LR, notes §4);
    warmup 0 is the constant."""
    if warmup <= 0.0:
        return constant(value)
    return Knots(((0.0, 0.0), (warmup, value), (1.0, value)), ("linear", "linear"))


def progress(step: int, steps: int) -> float:
    """Normalised time of `step` in a run of `steps` updates: step / (steps - 1), clamped to [0, 1]."""
    if steps <= 1:
        return 0.0 if step < steps else 1.0
    return min(max(step / (steps - 1), 0.0), 1.0)


def value_at(x: float | Knots, step: int, steps: int) -> float:
    """A coefficient (a float or a Knots schedule) at `step` of `steps`."""
    if isinstance(x, Knots):
        return x.at(progress(step, steps))
    return float(x)
