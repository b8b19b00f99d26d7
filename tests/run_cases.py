"""Hand-built runs with known answers, shared by the metrics / analysis / plot tests: targets and
decompositions constructed directly (no training), wrapped in a RunResult."""
import dataclasses

import numpy as np

from runtime.methods.apd import components as apd
from runtime.methods.apd.train import ApdDecomposition as Decomposition
from runtime.targets.gated.model import build_gated
from runtime.store.rundir import RunResult
from runtime.spec import Data, Decompose, Experiment, Optimizer, Report, Schedule, Training, check
from runtime import GatedTarget, ApdLosses as Losses, ResidMlpTarget, TmsTarget, TopK


def wrap(exp, target, comps, extras=None, history=None):
    exp = check(exp)
    dec = Decomposition(exp.target, exp.decompose.components, exp.decompose.rank, comps,
                        history or [{"step": 0, "lr": 0.0, "total": 1.0, "faithfulness": 1.0}])
    return RunResult(exp, exp.target, target, extras or {}, dec, [], {}, [], {}, {})


def tms_run(I=3, F=5, H=2, scale=1.0, zero_component=None, seed=0):
    """TMS target with random W; component c = row c of W only (the paper's Z^(c)) times `scale`."""
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 1, (I, F, H))
    A = np.zeros((I, F, F, 1))  # (I, C, d_in, m)
    A[:, np.arange(F), np.arange(F), 0] = 1.0
    B = scale * W[:, :, None, :]  # (I, C, 1, H): B_c = W[c]
    if zero_component is not None:
        B[:, zero_component] = 0.0
    exp = Experiment(name="tms_case", replicates=I, dtype="float64", target=TmsTarget(features=F, hidden=H),
                     decompose=Decompose(components=F, rank=1, topk=TopK("batch", 0.5), batch=64),
                     report=Report(eval_batches=2))
    return wrap(exp, {"W": W, "b": np.zeros((I, F))}, apd.from_components("W", A, B))


def resid_run(F=4, I=1, probability=0.3, eval_batches=3, **report):
    """Identity-embedded residual MLP with one neuron per feature (W_in = W_out = I, so y = x +
    ReLU(x) exactly) and the perfect decomposition: component c = neuron c's weights, rank 1."""
    arch = ResidMlpTarget(features=F, d_embed=F, d_mlp=F, layers=1, embedding="identity")
    eye = np.broadcast_to(np.eye(F), (I, F, F)).copy()
    target = {"W_E": eye.copy(), "W_U": eye.copy(), "layers.0.W_in": eye.copy(), "layers.0.W_out": eye.copy()}
    E = np.broadcast_to(np.eye(F)[None, :, :, None], (I, F, F, 1))  # A_c = e_c (column)
    Et = np.swapaxes(E, -1, -2)  # B_c = e_c^T
    comps = {**apd.from_components("layers.0.W_in", E, Et), **apd.from_components("layers.0.W_out", E, Et)}
    exp = Experiment(name="resid_case", replicates=I, dtype="float64", target=arch, data=Data(probability=probability),
                     decompose=Decompose(components=F, rank=1, batch=64, topk=TopK("batch", 1.0),
                                         loss=Losses(act_recon=1.0)),
                     report=Report(eval_batches=eval_batches, **report))
    return wrap(exp, target, comps)


def gated_run(functions=2, neurons=3, layers=2, I=1, seed=0, swap=False):
    """Gated target and the perfect decomposition: component i holds exactly function i's neurons
    (rank m = d_mlp: A = W_in,i, B = I for W_in; A = I, B = W_out,i for W_out). `swap` gives both
    functions' neurons to component 0 (a decomposition that separates nothing)."""
    arch = GatedTarget(functions=functions, neurons=neurons, layers=layers)
    rng = np.random.default_rng(seed)
    target, extras = build_gated(arch, I, rng, rng, np.float64)
    D, d = functions + 2, functions * neurons // layers
    comps = {}
    for l in range(layers):
        W_in, W_out = target[f"layers.{l}.W_in"], target[f"layers.{l}.W_out"]
        fn = np.argmax(np.abs(W_in[:, 1:1 + functions]), axis=1)  # (I, d) function of each neuron
        A_in = np.zeros((I, functions, D, d))
        B_out = np.zeros((I, functions, d, D))
        for i in range(I):
            for c in range(functions):
                own = (fn[i] == c) if not swap else np.full(d, c == 0)
                A_in[i, c][:, own] = W_in[i][:, own]
                B_out[i, c][own] = W_out[i][own]
        eye = np.broadcast_to(np.eye(d), (I, functions, d, d)).copy()
        comps.update(apd.from_components(f"layers.{l}.W_in", A_in, eye))
        comps.update(apd.from_components(f"layers.{l}.W_out", eye, B_out))
    exp = Experiment(name="gated_case", replicates=I, dtype="float64", target=arch, data=Data(probability=0.3),
                     decompose=Decompose(components=functions, rank=d, batch=64, topk=TopK("batch", 0.3)),
                     report=Report(eval_batches=2))
    return wrap(exp, target, comps, extras)


def replace_report(result, **kw):
    """The same run with a different report section (analyses are recomputed), any method."""
    exp = check(dataclasses.replace(result.experiment, report=dataclasses.replace(result.experiment.report, **kw)))
    return dataclasses.replace(result, experiment=exp, analysis=None)


# ------------------------------------------------------------------------------------------
# SPD runs with known answers


def _spd_ci(C, K, gain, I, active=None):
    """Causal-importance MLPs of C subcomponents: gamma(h) = GELU(gain h) + GELU(-gain h) ~ gain |h|
    (K = 2 units), so g = 1 for |h| > ~1 / gain and exactly 0 at h = 0; `active` (C,) bool: the rest
    get gamma = 0 (never important)."""
    w_in = np.zeros((I, C, K))
    w_in[:, :, 0], w_in[:, :, 1] = gain, -gain
    w_out = np.ones((I, C, K))
    if active is not None:
        w_out[:, ~active] = 0.0
    return {"w_in": w_in, "b_in": np.zeros((I, C, K)), "w_out": w_out, "b_out": np.zeros((I, C))}


def wrap_spd(exp, target, params, extras=None, history=None):
    from runtime.methods.spd.train import SpdDecomposition

    exp = check(exp)
    dec = SpdDecomposition(exp.target, exp.decompose.components, None, params,
                           history or [{"step": 0, "lr": 0.0, "total": 1.0, "faithfulness": 1.0}])
    return RunResult(exp, exp.target, target, extras or {}, dec, [], {}, [], {}, {})


def _spd_decompose(C, batch=64):
    from runtime import CausalImportance

    return Decompose(method="spd", components=C, batch=batch, causal_importance=CausalImportance(hidden=2))


def spd_tms_run(I=2, F=5, H=2, extra=2, seed=0):
    """TMS with random W and SPD's ground truth: W's subcomponent f is row f of W (V_f = e_f, U_f =
    W[f]) with g = 1 exactly when x_f != 0; W^T's subcomponent f is column f of W^T (V_f = W[f],
    U_f = e_f) with gamma = 0 (never important); `extra` zero subcomponents per matrix."""
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 1, (I, F, H))
    C = F + extra
    VW = np.zeros((I, F, C))
    VW[:, np.arange(F), np.arange(F)] = 1.0
    UW = np.zeros((I, C, H))
    UW[:, :F] = W
    VT = np.zeros((I, H, C))
    VT[:, :, :F] = np.swapaxes(W, 1, 2)
    UT = np.zeros((I, C, F))
    UT[:, np.arange(F), np.arange(F)] = 1.0
    params = {"W.V": VW, "W.U": UW, "W.T.V": VT, "W.T.U": UT}
    for name, active in (("W", np.arange(C) < F), ("W.T", np.zeros(C, dtype=bool))):
        params.update({f"{name}.ci.{k}": v for k, v in _spd_ci(C, 2, 1e4, I, active).items()})
    exp = Experiment(name="spd_tms_case", replicates=I, dtype="float64", target=TmsTarget(features=F, hidden=H),
                     decompose=_spd_decompose(C), report=Report(eval_batches=2))
    return wrap_spd(exp, {"W": W, "b": np.zeros((I, F))}, params)


def spd_resid_run(F=4, I=1, probability=0.3, eval_batches=3):
    """The identity residual MLP of `resid_run` with SPD's ground truth: subcomponent c of W_in and
    of W_out is neuron c's weight (V_c = U_c = e_c), causally important exactly when its input is
    nonzero (W_in: x_c; W_out: ReLU(x_c))."""
    arch = ResidMlpTarget(features=F, d_embed=F, d_mlp=F, layers=1, embedding="identity")
    eye = np.broadcast_to(np.eye(F), (I, F, F)).copy()
    target = {"W_E": eye.copy(), "W_U": eye.copy(), "layers.0.W_in": eye.copy(), "layers.0.W_out": eye.copy()}
    params = {}
    for name in ("layers.0.W_in", "layers.0.W_out"):
        params[f"{name}.V"], params[f"{name}.U"] = eye.copy(), eye.copy()
        params.update({f"{name}.ci.{k}": v for k, v in _spd_ci(F, 2, 1e4, I).items()})
    exp = Experiment(name="spd_resid_case", replicates=I, dtype="float64", target=arch, data=Data(probability=probability),
                     decompose=_spd_decompose(F), report=Report(eval_batches=eval_batches))
    return wrap_spd(exp, target, params)


def tms_experiment(steps=400, seed=0, replicates=1, dtype="float32", expect=()):
    return Experiment(
        name="tms_small", seed=seed, replicates=replicates, dtype=dtype, target=TmsTarget(features=5, hidden=2),
        train=Training(steps=1500, batch=1024),
        decompose=Decompose(components=5, topk=TopK("batch", 0.211), loss=Losses(simplicity=0.7, simplicity_p=1.0),
                            optimizer=Optimizer("adam", 3e-2), schedule=Schedule("constant", warmup=0.05),
                            steps=steps, batch=2048, log_every=100),
        report=Report(metrics=("mmcs", "ml2r", "faithfulness", "minimality"), plots=(), expect=expect))
