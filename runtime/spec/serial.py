"""Plain-data round trip of an experiment (spec.json, run summaries): dataclasses <-> JSON-able dicts."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from .experiment import (TARGET_KINDS, Attribution, CausalImportance, Data, FaithfulnessWarmup, Decompose, Expectation, Experiment, Losses, Optimizer,
                         Report, Revive, Schedule, Sweep, SweepAxis, Target, TopK, Training)


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> JSON-able dict (tuples become lists; target carries its kind)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def target_from_dict(d: dict) -> Target:
    d = dict(d)
    cls = TARGET_KINDS[d.pop("kind")]
    return _build(cls, d)


def _build(cls: type, d: dict) -> Any:
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k, v in d.items():
        if k not in hints:
            continue
        kwargs[k] = _coerce(cls, k, v)
    return cls(**kwargs)


# (class, field) -> the dataclass of a nested optional object: how from_dict builds it, and what
# runtime.pipeline.sweep brings back (with defaults) when a sweep sets a field of an object that is None.
NESTED = {
    (Experiment, "train"): Training, (Experiment, "data"): Data, (Experiment, "decompose"): Decompose,
    (Experiment, "report"): Report, (Experiment, "sweep"): Sweep, (Training, "optimizer"): Optimizer,
    (Training, "schedule"): Schedule, (Decompose, "topk"): TopK, (Decompose, "attribution"): Attribution,
    (Decompose, "loss"): Losses, (Decompose, "revive"): Revive, (Decompose, "optimizer"): Optimizer, (Decompose, "schedule"): Schedule,
    (Decompose, "causal_importance"): CausalImportance, (Decompose, "faithfulness_warmup"): FaithfulnessWarmup,
}


def _coerce(cls: type, name: str, v: Any) -> Any:
    if v is None:
        return None
    if cls is Experiment and name == "target":
        return target_from_dict(v)
    sub = NESTED.get((cls, name))
    if sub is not None:
        return _build(sub, v)
    if cls is Report and name == "expect":
        return tuple(_build(Expectation, e) for e in v)
    if cls is Sweep and name == "axes":
        return tuple(SweepAxis(a["path"], tuple(a["values"]), a.get("group")) for a in v)
    if cls is Data and name == "synced":
        return tuple(tuple(g) for g in v)
    if isinstance(v, list):
        return tuple(v)
    return v


def from_dict(d: dict) -> Experiment:
    return _build(Experiment, d)


def to_json(exp: Experiment) -> str:
    return json.dumps(to_dict(exp), indent=2)
