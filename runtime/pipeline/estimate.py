"""How long a run will take, from a quick calibration on this machine: `estimate(exp)`.

    from runtime.pipeline.estimate import estimate
    e = estimate(exp)                  # ~1-2 s
    e.total_s, e.parts                 # {"target": s, "decompose": s, "finish": s}

What is timed: a few real optimiser steps of the decomposition on the spec's own shapes
(`bench.step_runner`: every replicate and restart, the spec's batch, components, rank, losses,
attributions, dtype) and, when the spec trains its target, a few real target-training steps; each
is extrapolated to the spec's step count from the median step time after one warm-up step. The
calibration stops when its time budget is spent (at least 2 timed steps each), so a slow step
(hundreds of ms) costs a few steps and a fast one up to `MAX_STEPS`. Because it times the actual
step function, the estimate follows faster kernels or another decomposition method without
change. The target is untrained (as in `bench`), also for a target file (timed as a fresh target
of the file's architecture): on a trained target the first steps of a random decomposition can
cost several times a typical step (on a TMS 5-2 target trained in PyTorch, 12 replicates x 4
restarts: 47 ms for the first ~200 steps, then 12 ms, because batch top-k falls back to the whole
batch while the APD model's output is still far off), which a calibration of a few steps would
extrapolate to the whole run. A trained target changes which components are active, and so the
work per step, only a little once the decomposition is under way.

Not timed: computing the metrics, drawing the plots and the report, and starting the process. They
take an allowance per target kind (`finish_seconds`, measured with `apdspec run` on the paper specs
on an otherwise idle 2-core AMD EPYC VM), a few seconds to half a minute: small against any full
run. On a busy machine everything takes longer; the timed steps show it directly, and the
allowance is scaled by how much longer the calibration's steps took in wall time than in CPU time
(`contention`: 1 on an idle core, ~3 when three processes share it).
"""
from __future__ import annotations

import dataclasses
import statistics
import time

from ..spec import Experiment, FileTarget, check, kind_spec

MAX_STEPS = 20  # timed steps at most, per phase


def finish_seconds(arch) -> float:
    """Metrics + plots + report + process start (s): the kind's measured figure (KindSpec.finish_seconds)."""
    return kind_spec(arch.kind).finish_seconds(arch)


@dataclasses.dataclass(frozen=True)
class Estimate:
    total_s: float
    parts: dict  # "target" (training it; 0 if loaded or hand-coded), "decompose", "finish"
    step_ms: float  # median ms per decomposition step (all replicates and restarts)
    target_step_ms: float | None  # median ms per target-training step, if the spec trains one
    steps: int  # decomposition steps extrapolated to
    target_steps: int
    timed_steps: int  # decomposition steps timed
    calibration_s: float  # wall time spent calibrating
    contention: float = 1.0  # wall / CPU time of the timed steps (>= 1): how busy the machine is

    def describe(self) -> str:
        """One line, e.g. '~4.6 min: target ~35 s (2,000 steps x 17 ms), decomposition ~4 min
        (20,000 steps x 12 ms), metrics and report ~7 s'."""
        parts = []
        if self.target_step_ms is not None:
            parts.append(f"target ~{duration(self.parts['target'])} ({self.target_steps:,} steps x "
                         f"{_ms(self.target_step_ms)})")
        parts.append(f"decomposition ~{duration(self.parts['decompose'])} ({self.steps:,} steps x "
                     f"{_ms(self.step_ms)})")
        parts.append(f"metrics and report ~{duration(self.parts['finish'])}")
        return f"~{duration(self.total_s)}: " + ", ".join(parts)


def duration(s: float) -> str:
    if s < 90:
        return f"{s:.2g} s" if s < 10 else f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.2g} min" if s < 600 else f"{s / 60:.0f} min"
    return f"{s / 3600:.2g} h"


def _ms(ms: float) -> str:
    return f"{ms:.2g} ms" if ms < 10 else f"{ms:.0f} ms"


def _time_steps(step, budget_s: float) -> tuple[float, int, float]:
    """(median wall seconds per call, calls timed, wall / CPU time of those calls) of `step()`,
    after one untimed warm-up call."""
    t0 = time.perf_counter()
    step()
    deadline = time.perf_counter() + max(budget_s - (time.perf_counter() - t0), 0.0)
    times: list[float] = []
    c0, w0 = time.process_time(), time.perf_counter()
    while len(times) < MAX_STEPS and (len(times) < 2 or time.perf_counter() < deadline):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    cpu = time.process_time() - c0
    return statistics.median(times), len(times), (time.perf_counter() - w0) / cpu if cpu > 0 else 1.0


def _target_step(exp: Experiment):
    """A callable running one target-training step of `exp` (None if the target is not trained)."""
    from ..engine import seeding
    from ..engine.models import init_target
    from ..engine.train_target import train_target

    t = exp.target
    if exp.train is None or isinstance(t, FileTarget) or not kind_spec(t.kind).trained:
        return None
    one = dataclasses.replace(exp, train=dataclasses.replace(exp.train, steps=1, log_every=10 ** 9))
    params = init_target(t, exp.replicates, seeding.stream(0, "estimate"), exp.dtype)
    rng = seeding.stream(0, "estimate_data")
    return lambda: train_target(one, t, params, rng)


def estimate(exp: Experiment, budget_s: float = 1.5) -> Estimate:
    """Wall time of `apdspec run` on `exp` (one run; a sweep point), from timing real steps for
    about `budget_s` seconds (a third on target training when the spec trains its target)."""
    from .bench import step_runner

    t0 = time.perf_counter()
    exp = check(exp)
    steps = exp.decompose.steps
    if isinstance(exp.target, FileTarget):  # time a fresh target of its architecture (see above)
        from ..spec.serial import target_from_dict
        from ..spec.target_file import read_target_meta

        exp = check(dataclasses.replace(exp, target=target_from_dict(read_target_meta(exp.target.path)["target"]),
                                        train=None))
    target_step = _target_step(exp)
    target_ms, target_s = None, 0.0
    if target_step is not None:
        sec, _, _ = _time_steps(target_step, budget_s / 3)
        target_ms, target_s = sec * 1e3, sec * exp.train.steps
    runner, arch, _, _ = step_runner(exp, min_steps=MAX_STEPS + 3)
    sec, timed, contention = _time_steps(runner.step, max(budget_s - (time.perf_counter() - t0), budget_s / 3))
    contention = min(max(contention, 1.0), 8.0)  # < 1 with several BLAS threads: no slow-down
    decompose_s = sec * steps
    finish_s = finish_seconds(arch) * contention
    parts = {"target": target_s, "decompose": decompose_s, "finish": finish_s}
    return Estimate(sum(parts.values()), parts, sec * 1e3, target_ms, steps,
                    exp.train.steps if target_step is not None else 0, timed, time.perf_counter() - t0, contention)
