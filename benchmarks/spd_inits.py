"""One trained target, N SPD inits of it: per init MMCS / ML2R / ci_error / held-out SPD loss.

    PYTHONPATH=. python benchmarks/spd_inits.py specs/spd_tms_5_2.apd 8 out.json [--fw 200] [-s decompose.steps=10000]

The exploratory measurement behind decompose.faithfulness_warmup and specs/spd_tms_5_2_robust.apd
(docs/results.md, "SPD"); its outputs are in benchmarks/spd_inits/ (inits_s0: the paper's settings,
40k steps, written by an earlier version of this script without the args record). `--fw N` runs N
AdamW steps (lr 1e-2, weight decay 0.1) on the faithfulness loss through autograd before training:
the same update the faithfulness_warmup option makes with its hand-written gradient."""
import argparse, dataclasses, json, sys, time
import numpy as np
import apdspec
from runtime.engine import seeding
from runtime.engine.data import sample_inputs
from runtime.methods.spd.train import decompose_spd
from runtime.methods.spd import model as spd_mod
from runtime.engine.kernels import FastAdam
from runtime.pipeline import runner, restarts
from runtime.store.rundir import RunResult
from runtime.analysis.metrics import evaluate
from runtime.spec import Report, check, Optimizer
ap = argparse.ArgumentParser()
ap.add_argument("spec"); ap.add_argument("N", type=int); ap.add_argument("out")
ap.add_argument("--fw", type=int, default=0, help="faithfulness warmup steps (AdamW lr 1e-2 wd 0.1)")
ap.add_argument("--target-seed", type=int, default=None)
ap.add_argument("-s", action="append", default=[])
a = ap.parse_args()
exp1 = apdspec.load(a.spec, overrides=a.s).experiment
exp1 = check(dataclasses.replace(exp1, replicates=1, report=Report(metrics=(), plots=())))
if a.target_seed is not None:
    exp1 = check(dataclasses.replace(exp1, train=dataclasses.replace(exp1.train, seed=a.target_seed)))
arch, target, extras, _ = runner.build_target(exp1)
N = a.N
expN = dataclasses.replace(exp1, replicates=N, report=dataclasses.replace(exp1.report, metrics=("mmcs", "ml2r", "ci_error", "ci_l0", "alive_subcomponents", "total", "importance_minimality", "stochastic_recon"), plots=(), expect=()))
tN = {k: np.repeat(v, N, axis=0) for k, v in target.items()}
dc = expN.decompose
rng = seeding.stream(dc.seed, "apd_data")
comps = None
if a.fw:
    comps = spd_mod.init_spd(arch, dc.components, dc.causal_importance.hidden, N, dc.init_scale, seeding.stream(dc.seed, "apd_init"), np.float32)
    from autograd import grad
    keys = [k for k in comps if k.endswith(".V") or k.endswith(".U")]
    sub = {k: comps[k] for k in keys}
    opt = FastAdam(sub, Optimizer("adamw", 1e-2, weight_decay=0.1))
    f = lambda p: np.sum(spd_mod.faithfulness_loss(arch, p, tN))
    for _ in range(a.fw):
        g = grad(f)(sub)
        opt.step(sub, {k: np.asarray(v, dtype=np.float32) for k, v in g.items()}, 1e-2)
    print("after warmup faithfulness", spd_mod.faithfulness_loss(arch, sub, tN))
t0 = time.time()
dec = decompose_spd(expN, arch, tN, lambda b: sample_inputs(arch, expN.data, N, b, rng, np.float32), seeding.stream(dc.seed, "apd_init"),
                    comps=comps, log=lambda e: print(e["step"], round(e["total"], 6), round(e.get("ci_l0", 0), 3), flush=True))
res = RunResult(expN, arch, tN, {}, dec, [], {}, [], {}, {})
m = evaluate(res)
m["heldout"] = [float(v) for v in restarts.scores(res)]
m["wall_s"] = time.time() - t0
m["args"] = vars(a)
json.dump(m, open(a.out, "w"), indent=1)
good = [i for i in range(N) if m["mmcs"][i] >= 0.99 and m["ml2r"][i] >= 0.97]
print("GOOD", len(good), "of", N, good, "best heldout", int(np.argmin(m["heldout"])))
for i in range(N):
    print(i, {k: round(v[i], 5) for k, v in m.items() if isinstance(v, list)})
