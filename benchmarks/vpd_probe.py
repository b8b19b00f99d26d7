"""VPD on TMS 5-2 (or 5-5, --hidden 5), measured (not a test): train the target(s), decompose with VPD at the authors'
toy settings scaled for a CPU, report the ground-truth CI metric, the evaluation adversary's
reconstruction and the time per step.

    PYTHONPATH=. python benchmarks/vpd_probe.py                                 # 5k steps, batch 2048
    PYTHONPATH=. python benchmarks/vpd_probe.py --steps 10000 --replicates 3 --json out.json
    PYTHONPATH=. python benchmarks/vpd_probe.py --hidden 5 --steps 3000 --replicates 3   # notes §6 recovery check

Replicates are independent targets and decompositions trained as one vectorised run (seeded
streams "target_init", "target_data", "apd_data"; VPD's own "vpd_sources", "vpd_masks").
Differences from the authors' table (notes §7): batch and steps (CPU), the target's schedule
(this repo's default linear decay, AdamW wd 0.01; the table gives only 5k steps, bs 2048, lr 1e-2).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from runtime.engine import seeding  # noqa: E402
from runtime.engine.data import sample_inputs  # noqa: E402
from runtime.engine.models import init_target  # noqa: E402
from runtime.engine.train_target import train_target  # noqa: E402
from runtime.methods.vpd import VpdRun, VpdSettings, VpdTrainer  # noqa: E402
from runtime.methods.vpd.metrics import identity_ci_error, identity_probe  # noqa: E402
from runtime.spec import Data, Experiment, Optimizer, TmsTarget, Training  # noqa: E402


def train_tms(replicates: int, steps: int, seed: int, features: int = 5, hidden: int = 2
              ) -> tuple[TmsTarget, dict, Experiment]:
    arch = TmsTarget(features, hidden)
    exp = Experiment(seed=seed, replicates=replicates, target=arch, data=Data(probability=0.05),
                     train=Training(steps=steps, batch=2048, optimizer=Optimizer("adamw", 1e-2, 0.01),
                                    labels="identity", log_every=max(steps, 1)))
    params = init_target(arch, replicates, seeding.stream(seed, "target_init"))
    params, _ = train_target(exp, arch, params, seeding.stream(seed, "target_data"))
    return arch, params, exp


def probe_ci(trainer: VpdTrainer) -> dict:
    """Lower CI per site on the probe 0.75 I (notes §6): {site: (I, 5, C)}."""
    model = trainer.model
    x = identity_probe(model.arch.features, replicates=trainer.run.replicates, dtype=trainer.dtype)
    return {k: np.asarray(v) for k, v in model.ci(trainer.comps, model.clean(x).pre)[0].items()}


def ci_errors(trainer: VpdTrainer, tols=(0.1, 0.2)) -> dict:
    """identity_ci_error per site, replicate and tolerance."""
    return {f"{site}@{tol}": [identity_ci_error(v[i], tol) for i in range(v.shape[0])]
            for site, v in probe_ci(trainer).items() for tol in tols}


def used_columns(ci: np.ndarray, tol: float = 0.1) -> list:
    """The probe CI restricted to the subcomponents with an entry > tol (rows: features)."""
    return np.round(ci[:, (ci > tol).any(axis=0)], 2).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--replicates", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-steps", type=int, default=5000)
    ap.add_argument("--C", type=int, default=20)
    ap.add_argument("--features", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=2, help="5 with --features 5: the authors' recovery check")
    ap.add_argument("--log-every", type=int, default=1000)
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    arch, target, exp = train_tms(args.replicates, args.target_steps, args.seed, args.features, args.hidden)
    target_s = time.perf_counter() - t0
    run = VpdRun(settings=dataclasses.replace(VpdSettings(), C=args.C), steps=args.steps, batch=args.batch,
                 replicates=args.replicates, seed=args.seed)
    rng_data = seeding.stream(args.seed, "apd_data")
    sample = lambda B: sample_inputs(arch, exp.data, args.replicates, B, rng_data)
    trainer = VpdTrainer(run, arch, target, sample, seeding.stream(args.seed, "apd_init"))
    history = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for step in range(run.steps + 1):
        _, record = trainer.step()
        if step % args.log_every == 0 or step == run.steps:
            entry = {"step": step, **{k: np.round(np.asarray(v, dtype=float), 6).tolist() for k, v in record.items()
                                      if k in ("faithfulness", "recon", "recon_adversarial", "ppgd_recon",
                                               "activity", "freq")},
                     "ci_l0": np.round(trainer.problem.mask_stats()["ci_l0"], 3).tolist(), "ci_error": ci_errors(trainer)}
            history.append(entry)
            print(json.dumps(entry), flush=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    pgd = trainer.model.pgd_recon(trainer.comps, sample_inputs(arch, exp.data, args.replicates, 4096,
                                                               seeding.stream(args.seed, "eval")),
                                  seeding.stream(args.seed, "vpd_eval_pgd"))
    errors = ci_errors(trainer)
    summary = {"args": vars(args), "target_training_s": round(target_s, 1),
               "ms_per_step_wall": round(1e3 * wall / (run.steps + 1), 2),
               "ms_per_step_cpu": round(1e3 * cpu / (run.steps + 1), 2),
               "identity_ci_error": errors,
               "exact_at_0.1": [all(errors[f"{s}@0.1"][i] == 0 for s in trainer.model.names)
                                for i in range(args.replicates)],
               "eval_pgd_recon": pgd.loss.tolist(), "eval_random_recon": pgd.initial_loss.tolist(),
               "target_feature_norms": np.round(np.linalg.norm(target["W"], axis=-1), 3).tolist(),
               "target_bias": np.round(target["b"], 3).tolist(),
               "probe_ci_used_columns": {k: [used_columns(v[i]) for i in range(v.shape[0])]
                                         for k, v in probe_ci(trainer).items()},
               "history": history}
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
