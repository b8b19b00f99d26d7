"""The decomposition loop every method shares: steps, logging, progress, checkpoints, exact resume.

    for step in 0..steps (the last iteration only logs):
        lr, record = trainer.step()          # the method's step (runtime/methods/<method>/train.py)
        log every `log_every` steps; checkpoint every `checkpoint.every` steps or on a signal

A method supplies its trainer (`step()`, `state()`, `restore()`, `problem.mask_stats()`, `comps`,
`m`, `result_cls`) through its `MethodEngine` in registry.ENGINES. Per-term losses are per
replicate; the optimised total sums replicates (each replicate's gradient is exactly that of an
independent run) and logs their mean.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np

from .kernels import GradParts
from .models import Params
from .registry import engine_of
from .seeding import rng_state, set_rng_state
from ..spec import Experiment, Target


@dataclasses.dataclass
class Decomposition:
    """A trained decomposition (its method's flat parameters, leading replicate axis) and the loss
    history; each method subclasses it (the class attribute `method` names it)."""

    method = ""  # class attribute, not a field

    arch: Target
    C: int
    m: int
    comps: dict
    history: list
    wall_time: float = 0.0
    steps_per_second: float = 0.0
    revivals: list = dataclasses.field(default_factory=list)  # events of the training (APD's revivals)

    def components(self, name: str, replicate: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The two factors of decomposed matrix `name` of one replicate (the method says which)."""
        raise NotImplementedError

    def arrays(self, replicate: int) -> dict[str, np.ndarray]:
        """What decomposition.npz holds for one replicate (docs/outputs.md)."""
        return {k: v[replicate] for k, v in self.comps.items()}

    @staticmethod
    def inner_rank(dec: Any) -> int | None:
        """m of a run with decomposition settings `dec` (None: the method has none)."""
        return None

    @classmethod
    def comps_from_arrays(cls, arch: Target, exp: Experiment, per_replicate: list[dict]) -> dict:
        """The flat parameters (leading replicate axis) from each replicate's decomposition.npz."""
        return {k: np.stack([c[k] for c in per_replicate]) for k in per_replicate[0]}


class MethodEngine:
    """A method's engine part, registered in registry.ENGINES: its trainer and decomposition class,
    and the analytic cost of a step (`apdspec check`, `apdspec bench`)."""

    trainer: type = object  # Trainer(exp, arch, target, sample, rng_init, comps=None)
    decomposition: type = Decomposition

    def step_cost(self, exp: Experiment, arch: Target) -> dict:
        """Sizes and a rough FLOP count of one step, all replicates and restarts (`apdspec check`):
        "flops" (per step), "params" (trainable)."""
        raise NotImplementedError

    def memory_parts(self, exp: Experiment, arch: Target) -> list:
        """The decomposition's parts of a run's memory (engine/memory.py): its parameters (through
        evaluation and report) and, while it trains, their gradients and Adam moments and one
        step's batch (`sample_floats`), for every replicate and restart."""
        raise NotImplementedError

    def sample_floats(self, exp: Experiment, arch: Target) -> float:
        """Floats one step holds at once per sample and replicate (the batch, activations,
        attributions or causal importances, masks): what a step's memory grows by per sample."""
        raise NotImplementedError

    def step_flops(self, exp: Experiment, arch: Target) -> dict:
        """The analytic FLOPs of one step as the runtime computes it (`apdspec bench`), by term and
        "total", all replicates."""
        raise NotImplementedError

    def describe(self, exp: Experiment) -> str:
        """One line: what a step computes (batch, components, loss terms, ...)."""
        raise NotImplementedError

    def summary_extra(self, exp: Experiment, dec: Decomposition) -> dict:
        """The method's own entries of a finished run's summary.json."""
        return {}


class NonFiniteError(FloatingPointError):
    """A loss term, gradient or parameter of the decomposition became NaN or infinite.

    `what` is the loss term (or "gradient of <param>"), `replicate` the replicate (the runner maps
    the instances of a restarts run back to replicate and `restart`), `step` the iteration."""

    def __init__(self, what: str, replicate: int, step: int, value: float, restart: int | None = None,
                 hint: str | None = None):
        self.what, self.replicate, self.step, self.value, self.restart = what, replicate, step, value, restart
        where = f"replicate {replicate}" + (f" (restart {restart})" if restart is not None else "")
        super().__init__(f"{what} is {value} in {where} at step {step}")
        if hint is not None:
            self.hint = hint

    hint = ("the optimisation diverged: lower decompose.optimizer's lr (e.g. by 10x), or add warmup to "
            "decompose.schedule; a very large loss coefficient or init_scale does the same")


def first_non_finite(record: dict, step: int) -> None:
    """Raise NonFiniteError for the first term of `record` (per-replicate values) that is not finite."""
    for name, v in record.items():
        a = np.asarray(v, dtype=np.float64).ravel()
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise NonFiniteError(name, int(bad[0]), step, float(a[bad[0]]))


def replicate_sums(a) -> np.ndarray:
    """(I,) sums over everything but the leading replicate axis: NaN or inf if any entry is."""
    if isinstance(a, GradParts):
        return a.replicate_sums()
    a = np.asarray(a)
    return np.sum(a.reshape(a.shape[0], -1), axis=1, dtype=np.float64)


GRAD_CHECK_EVERY = 50  # gradients are summed (one pass over them) every this many steps, and at the end


class Interrupted(Exception):
    """A loop stopped at a step boundary on request (a signal). In the "decompose" phase a
    checkpoint was written first; in the "target" phase (target training) nothing was saved yet."""

    def __init__(self, signum: int, step: int, phase: str = "decompose"):
        self.signum, self.step, self.phase = signum, step, phase
        where = "target training" if phase == "target" else "the decomposition"
        super().__init__(f"interrupted by signal {signum} before step {step} of {where}")

    def __reduce__(self):  # crosses process boundaries (sweep workers) with its fields intact
        return (Interrupted, (self.signum, self.step, self.phase))


@dataclasses.dataclass
class Checkpointing:
    """How `decompose` checkpoints: `save(arrays, state)` every `every` steps, and when `stop()`
    returns a signal number."""

    save: Callable[[dict, dict], None]
    every: int
    stop: Callable[[], int | None] = lambda: None


def decompose(exp: Experiment, arch: Target, target: Params, sample: Callable[[int], np.ndarray],
              rng_init: np.random.Generator, log: Callable[[dict], None] | None = None,
              progress: Callable[[int, int, dict], None] | None = None,
              comps: dict | None = None, checkpoint: Checkpointing | None = None,
              resume: tuple[dict, dict] | None = None, rngs: dict | None = None,
              make_trainer: Callable | None = None) -> Decomposition:
    """Run the experiment's decomposition method on `target` (params with a leading replicate axis) with batches from `sample(B)`.

    `log(record)` is called every `decompose.log_every` steps and at the end with every loss term
    (mean over replicates, and per replicate under "<term>/replicates"). With `checkpoint`, the
    full state is saved every `checkpoint.every` steps; `resume` = (arrays, state) of such a
    checkpoint continues from it exactly. `rngs` (name -> Generator) are the random streams
    `sample` draws from: their states are saved and restored with the rest. `make_trainer` builds the
    per-step trainer (default: the method's, registry.ENGINES); the result is of its `result_cls`."""
    rngs = rngs or {}
    dc = exp.decompose
    I = exp.replicates
    trainer = (make_trainer or engine_of(dc.method).trainer)(exp, arch, target, sample, rng_init, comps)
    history: list[dict] = []
    start, elapsed = 0, 0.0
    if resume is not None:
        arrays, state = resume
        trainer.restore(arrays, state)
        history = list(state["history"])
        for name, rng in rngs.items():
            set_rng_state(rng, state["rngs"][name])
        start, elapsed = trainer.step_index, float(state.get("elapsed_s", 0.0))
    t0 = time.perf_counter() - elapsed
    for step in range(start, dc.steps + 1):
        lr, record = trainer.step()
        is_log = step % dc.log_every == 0 or step == dc.steps
        if is_log or progress is not None:
            record.update(trainer.problem.mask_stats())
            entry = {"step": step, "lr": lr}
            for k, v in record.items():
                entry[k] = float(np.mean(v))
                if I > 1 and is_log:
                    entry[f"{k}/replicates"] = [float(u) for u in np.ravel(v)]
            if is_log:
                history.append(entry)
                if log is not None:
                    log(entry)
            if progress is not None:
                progress(step, dc.steps, entry)
        if checkpoint is not None and step < dc.steps:
            signum = checkpoint.stop()
            if signum or (step + 1) % checkpoint.every == 0:
                arrays, state = trainer.state()
                state.update(history=history, elapsed_s=time.perf_counter() - t0,
                             rngs={k: rng_state(r) for k, r in rngs.items()})
                checkpoint.save(arrays, state)
            if signum:
                raise Interrupted(signum, step + 1)
    wall = time.perf_counter() - t0
    return trainer.result_cls(arch, dc.components, trainer.m, trainer.comps, history, wall, dc.steps / max(wall, 1e-9),
                              trainer.events())
