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

A large spec is timed on a slice: the calibration allocates at most CALIBRATION_BYTES (the memory
estimate of its target training and decomposition, runtime/pipeline/resources.py). The field that
drives that estimate most, other than the target's own sizes, is halved until the slice fits
(replicates, restarts, batches, components, rank); the decomposition's time is scaled back by its
method's FLOPs per step (`MethodEngine.step_cost`), target training's by replicates x batch (its work
is linear in both). A 3.4 GiB residual MLP (C = 2700) is timed on C = 337 in ~2 s and ~600 MB
instead of 17 s and 4.4 GB (benchmarks/memory.py).

Not timed: computing the metrics, drawing the plots and the report, and starting the process. They
take an allowance per target kind (`finish_seconds`, measured with `apdspec run` on the paper specs
on an otherwise idle 2-core AMD EPYC VM), a few seconds to half a minute: small against any full
run. Evaluation beyond the default 20 batches (`report.eval_batches`) adds the time of
`RunAnalysis.EVAL_STEPS` decomposition steps per batch (the method's analysis says how many). On a busy machine everything takes longer; the timed steps show it directly, and the
allowance is scaled by how much longer the calibration's steps took in wall time than in CPU time
(`contention`: 1 on an idle core, ~3 when three processes share it).
"""
from __future__ import annotations

import dataclasses
import statistics
import time

from ..spec import Experiment, FileTarget, check, kind_spec
from .resources import size_text

MAX_STEPS = 20  # timed steps at most, per phase
CALIBRATION_BYTES = 512 * 2 ** 20  # the most the timed steps may allocate (estimated, with the process)
DEFAULT_EVAL_BATCHES = 20  # what `finish_seconds` was measured with (report.eval_batches' default)


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
    sliced: tuple = ()  # (path, value) of the fields the timed slice changed; () when the spec itself was timed

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
        sliced = ("; timed on a slice with " + ", ".join(f"{p} = {v:,}" for p, v in self.sliced)
                  + " and scaled up") if self.sliced else ""
        return f"~{duration(self.total_s)}: " + ", ".join(parts) + sliced


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


class TooLargeToTime(ValueError):
    """Not even a slice of the spec fits the calibration's memory (its target alone is too large)."""


TIMED_PHASES = ("target training", "decomposition")


def calibration_slice(exp: Experiment) -> tuple[Experiment, tuple]:
    """(`exp`, ()) if its target training and decomposition fit CALIBRATION_BYTES, else a checked
    copy that does, and the (path, value) of each field it changed: the field (not of the target)
    whose halving lowers the estimate most, halved until the slice fits. Raises TooLargeToTime."""
    from .resources import estimate_memory, int_fields
    from .sweep import replace_path
    from ..spec import SpecValidationError, architecture

    arch = architecture(exp)
    need = lambda e: estimate_memory(e, arch).peak_of(TIMED_PHASES)  # noqa: E731
    current, changed = exp, {}
    while (now := need(current)) > CALIBRATION_BYTES:
        best = None
        for path, v in int_fields(current):
            if path.startswith("target."):  # the target's sizes: its training time could not be scaled back
                continue
            try:
                smaller = check(replace_path(current, path, v // 2))
            except (SpecValidationError, ValueError):
                continue
            gain = now - need(smaller)
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, path, smaller)
        if best is None:
            raise TooLargeToTime(f"even a slice of this spec needs ~{size_text(now)} for its steps, more than the "
                                 f"{size_text(CALIBRATION_BYTES)} the calibration may use")
        _, path, current = best
        changed[path] = _value(current, path)
    return current, tuple(changed.items())


def _value(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def estimate(exp: Experiment, budget_s: float = 1.5) -> Estimate:
    """Wall time of `apdspec run` on `exp` (one run; a sweep point), from timing real steps for
    about `budget_s` seconds (a third on target training when the spec trains its target), on a
    slice of `exp` when its steps would allocate more than CALIBRATION_BYTES."""
    from .bench import step_runner
    from ..engine.registry import engine_of

    t0 = time.perf_counter()
    exp = check(exp)
    steps = exp.decompose.steps
    if isinstance(exp.target, FileTarget):  # time a fresh target of its architecture (see above)
        from ..spec.serial import target_from_dict
        from ..spec.target_file import read_target_meta

        exp = check(dataclasses.replace(exp, target=target_from_dict(read_target_meta(exp.target.path)["target"]),
                                        train=None))
    timed_exp, sliced = calibration_slice(exp)
    target_step = _target_step(timed_exp)
    target_ms, target_s = None, 0.0
    if target_step is not None:
        sec, _, _ = _time_steps(target_step, budget_s / 3)
        work = lambda e: e.replicates * e.train.batch  # noqa: E731  (target training is linear in both)
        target_ms = sec * 1e3 * work(exp) / work(timed_exp)
        target_s = target_ms / 1e3 * exp.train.steps
    runner, arch, _, _ = step_runner(timed_exp, min_steps=MAX_STEPS + 3)
    sec, timed, contention = _time_steps(runner.step, max(budget_s - (time.perf_counter() - t0), budget_s / 3))
    del runner  # the slice's arrays: before the next spec's calibration
    contention = min(max(contention, 1.0), 8.0)  # < 1 with several BLAS threads: no slow-down
    if sliced:
        engine = engine_of(exp.decompose.method)
        sec *= engine.step_cost(exp, arch)["flops"] / engine.step_cost(timed_exp, arch)["flops"]
    from ..analysis.core import ANALYSES

    per_batch = ANALYSES[exp.decompose.method].EVAL_STEPS * sec
    extra_eval = max(exp.report.eval_batches - DEFAULT_EVAL_BATCHES, 0) * per_batch
    finish_s = finish_seconds(arch) * contention + extra_eval
    parts = {"target": target_s, "decompose": sec * steps, "finish": finish_s}
    return Estimate(sum(parts.values()), parts, sec * 1e3, target_ms, steps,
                    exp.train.steps if target_step is not None else 0, timed, time.perf_counter() - t0, contention,
                    sliced)
