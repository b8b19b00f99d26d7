"""What a run holds in memory, by phase: the parts each layer and slice states for its own arrays.

    Part("components, gradients, Adam moments", 3.2e9, ("decomposition",))

A run goes through PHASES in order; a part lives through the phases it names (the target's
parameters through all of them). The peak of a run is the largest phase total plus the process
itself (runtime/pipeline/resources.py adds them up and compares them with the machine).

Who states which part: the kind's model (`Model.memory_parts`: the target and its training), the
method's engine (`MethodEngine.memory_parts`: one decomposition step), the method's analysis
(`RunAnalysis.memory_parts`: the evaluation passes) and the report (its plots). The factors are
rough (what autograd keeps for its backward pass, NumPy's temporaries) and err on the high side:
benchmarks/memory.py compares the estimate with the measured peak of runs.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PHASES = ("target training", "decomposition", "evaluation", "report")
ALL = PHASES
AFTER_TRAINING = PHASES[1:]  # what the decomposition produces lives on through evaluation and report

# Floats autograd holds per float of a forward pass while it runs the backward pass (the pass's
# intermediates, their gradients and NumPy's temporaries). Measured on target training of the
# residual MLP and TMS (benchmarks/memory.py): 2.2-2.6.
TAPE = 3.0


@dataclasses.dataclass(frozen=True)
class Part:
    """`bytes` held at once for `what`, during `phases` (of PHASES)."""

    what: str
    bytes: float
    phases: tuple[str, ...]


def itemsize(exp: Any) -> int:
    return np.dtype(exp.dtype).itemsize


def decomposition_parts(exp: Any, params: float, rows: float, sample_floats: float, n_inputs: int, *,
                        params_what: str, grads_what: str, batch_what: str, restarts_what: str) -> list[Part]:
    """The parts every method's decomposition holds: its `params` trainable floats per replicate
    (through evaluation and report); while it trains, every restart's with a gradient and 2
    optimiser moments each, one step's batch (every sample's `n_inputs` inputs and `sample_floats`
    per row for `rows` rows), and the other restarts' parameters. The `*_what` name the parts."""
    w, I, R = itemsize(exp), exp.replicates, exp.decompose.restarts
    parts = [Part(params_what, w * I * params, AFTER_TRAINING),
             Part(grads_what, 3 * w * I * R * params, ("decomposition",)),
             Part(batch_what, w * I * R * (exp.decompose.batch * n_inputs + rows * sample_floats), ("decomposition",))]
    if R > 1:
        parts.append(Part(restarts_what, w * I * (R - 1) * params, ("decomposition",)))
    return parts
