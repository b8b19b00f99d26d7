"""The paper experiments' APD configurations (notes §8), built in Python.

Used by `benchmarks/run_all.py` when `specs/*.apd` (the language engineer's paper specs) are not
available, and by the tests as a source of realistic shapes. Only what a decomposition step reads
matters here (target shapes, C, m, batch, replicates, losses, attribution, dtype, steps).
"""
from __future__ import annotations

from runtime.spec import (
    Attribution, Data, Decompose, Experiment, GatedTarget, Losses, Optimizer, Report, ResidMlpTarget, Schedule,
    TmsTarget, TopK, Training,
)

# original PyTorch implementation on the same kind of 2-core machine (2 threads, float32):
# ms per training step, and the number of model instances (replicates) that step trains.
ORIGINAL_MS = {
    "tms_5_2": (26.0, 12),
    "tms_40_10": (841.0, 3),
    "resid_mlp_1l": (1021.0, 1),
    "resid_mlp_2l": (2460.0, 1),
}


def tms_5_2(replicates: int = 12, source: str = "target") -> Experiment:
    return Experiment(
        name="tms_5_2", replicates=replicates, target=TmsTarget(features=5, hidden=2, bias=True),
        train=Training(steps=5000, batch=1024), data=Data(probability=0.05),
        decompose=Decompose(components=5, rank=3, topk=TopK("batch", 0.211), attribution=Attribution("gradient", source),
                            loss=Losses(faithfulness=1.0, minimality=1.0, simplicity=0.7, simplicity_p=1.0),
                            optimizer=Optimizer("adam", 3e-2), schedule=Schedule("constant", 0.05),
                            steps=20_000, batch=2048, log_every=1000))


def tms_40_10(replicates: int = 3) -> Experiment:
    return Experiment(
        name="tms_40_10", replicates=replicates, report=Report(plots=("losses", "components")), target=TmsTarget(features=40, hidden=10, bias=True),
        train=Training(steps=2000, batch=2048), data=Data(probability=0.05),
        decompose=Decompose(components=40, rank=11, topk=TopK("batch", 2.0),
                            loss=Losses(faithfulness=1.0, minimality=10.0, simplicity=15.0, simplicity_p=0.9),
                            optimizer=Optimizer("adam", 1e-3), schedule=Schedule("cosine", 0.05),
                            steps=20_000, batch=2048, log_every=1000))


def resid_mlp_1l(steps: int = 10_000) -> Experiment:
    return Experiment(
        name="resid_mlp_1l", replicates=1,
        target=ResidMlpTarget(features=100, d_embed=1000, d_mlp=50, layers=1),
        train=Training(steps=10_000, batch=2048, optimizer=Optimizer("adamw", 3e-3, 0.01), schedule=Schedule("cosine")),
        data=Data(probability=0.01, values=(-1.0, 1.0)),
        decompose=Decompose(components=130, rank=50, topk=TopK("batch", 1.28),
                            loss=Losses(faithfulness=1.0, minimality=1.0, act_recon=1.0, simplicity=10.0, simplicity_p=0.9),
                            unit_norm=True, optimizer=Optimizer("adam", 1e-3), schedule=Schedule("cosine", 0.01),
                            steps=steps, batch=256, init_scale=2.0, log_every=500))


def resid_mlp_2l() -> Experiment:
    return Experiment(
        name="resid_mlp_2l", replicates=1,
        target=ResidMlpTarget(features=100, d_embed=1000, d_mlp=25, layers=2),
        train=Training(steps=10_000, batch=2048, optimizer=Optimizer("adamw", 3e-3, 0.01), schedule=Schedule("cosine")),
        data=Data(probability=0.01, values=(-1.0, 1.0)),
        decompose=Decompose(components=200, rank=25, topk=TopK("batch", 1.28),
                            loss=Losses(faithfulness=1.0, minimality=2.0, act_recon=1.0, simplicity=7.0, simplicity_p=0.9),
                            unit_norm=False, optimizer=Optimizer("adam", 1e-3), schedule=Schedule("cosine", 0.01),
                            steps=10_000, batch=256, init_scale=2.0, log_every=500))


def gated() -> Experiment:
    return Experiment(
        name="gated", replicates=1, target=GatedTarget(functions=4, neurons=10, layers=2), train=None,
        data=Data(probability=0.05),
        decompose=Decompose(components=4, rank=6, topk=TopK("batch", 0.2217), attribution=Attribution("gradient", "apd"),
                            loss=Losses(faithfulness=0.1, minimality=5.0, simplicity=5.0, simplicity_p=1.0),
                            optimizer=Optimizer("adam", 3e-3), schedule=Schedule("cosine", 0.004),
                            steps=200_000, batch=10_000, log_every=1000))


def paper_suite() -> dict[str, Experiment]:
    """name -> Experiment, in the order RESULTS.md lists them."""
    return {"tms_5_2": tms_5_2(), "tms_40_10": tms_40_10(), "resid_mlp_1l": resid_mlp_1l(),
            "resid_mlp_2l": resid_mlp_2l(), "gated": gated()}
