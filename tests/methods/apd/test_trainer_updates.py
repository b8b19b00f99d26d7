"""Every Trainer step applies Adam to every parameter, whichever path keeps the squared norms.

A regression test: the norm cache (FastAdam summing squared norms in its write pass) is kept only
for factors of at least one Adam block, and the step once skipped the update entirely when no
factor qualified (every TMS model): losses were logged, nothing trained, and resume tests, which
compare a run with itself, could not see it."""
import os

import numpy as np
import pytest

import apdspec
from runtime.methods.apd import train as D
from runtime.pipeline.bench import step_runner

from paths import ROOT  # noqa: E402  (the repository)
SPECS = {
    "tms": ("quickstart.apd", ["decompose.steps=50"]),
    "resid": ("resid_mlp_1l.apd", ["decompose.steps=50", "decompose.batch=64", "replicates=1"]),
}


def _trainer(name: str, toggle: bool) -> D.Trainer:
    path, overrides = SPECS[name]
    exp = apdspec.load(os.path.join(ROOT, "specs", path), overrides=overrides).experiment
    tr = step_runner(exp)[0]
    if toggle:  # the other norm path: cache for every factor where there was none, or none at all
        tr.norm_axes = {} if tr.norm_axes else {n: (1 if n.endswith(".A") else 2) for n in tr.comps}
    return tr


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_step_moves_every_parameter_on_both_norm_paths(name):
    runs = []
    for toggle in (False, True):
        tr = _trainer(name, toggle)
        start = {k: v.copy() for k, v in tr.comps.items()}
        for _ in range(3):
            tr.step()
        assert tr.opt.t == 3
        for k, v in tr.comps.items():
            assert np.max(np.abs(v - start[k])) > 1e-5, f"{k} did not move ({name}, toggle={toggle})"
        runs.append(tr.comps)
    for k in runs[0]:
        np.testing.assert_allclose(runs[0][k], runs[1][k], rtol=1e-5, atol=1e-6)
