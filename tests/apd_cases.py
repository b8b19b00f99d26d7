"""Small random models of every kind, shared by the APD tests."""
import numpy as np

from runtime import GatedTarget, ResidMlpTarget, TmsTarget

ARCHS = {
    "tms": TmsTarget(features=5, hidden=3),
    "tms_hidden2": TmsTarget(features=4, hidden=3, hidden_layers=2),
    "resid_1l": ResidMlpTarget(features=4, d_embed=6, d_mlp=3, layers=1),
    "resid_2l_bias": ResidMlpTarget(features=4, d_embed=6, d_mlp=3, layers=2, in_bias=True, out_bias=True),
    "resid_gelu_outact": ResidMlpTarget(features=3, d_embed=5, d_mlp=4, layers=2, activation="gelu", output_activation=True),
    "gated": GatedTarget(functions=2, neurons=3, layers=2),
}


def inputs(arch, I, B, rng, dtype=np.float64):
    """Dense random inputs (no exact ReLU kinks) with some exact zeros."""
    from runtime.engine.models import n_inputs

    x = rng.uniform(-1, 1, (I, B, n_inputs(arch)))
    x[rng.uniform(size=x.shape) < 0.3] = 0.0
    return x.astype(dtype)


def wide_sparse_resid_case(loss):
    """Realistic shapes in miniature: a 2-layer residual MLP, sparse inputs, many components, few
    active pairs. (exp, arch, target, comps, x) in float64, one replicate, batch top-k 1.28."""
    from runtime.methods.apd import components as apd
    from runtime.engine.models import random_params
    from runtime.spec import Decompose, Experiment
    from runtime import TopK

    arch = ResidMlpTarget(features=12, d_embed=40, d_mlp=6, layers=2)
    rng = np.random.default_rng(0)
    target = random_params(arch, 1, rng)
    C, m, B = 15, 4, 32
    comps = apd.init_components(arch, C, m, 1, 2.0, rng, np.float64)
    x = rng.uniform(-1, 1, (1, B, 12)) * (rng.uniform(size=(1, B, 12)) < 0.1)
    exp = Experiment(replicates=1, dtype="float64", target=arch, train=None,
                     decompose=Decompose(components=C, rank=m, topk=TopK("batch", 1.28), batch=B, loss=loss))
    return exp, arch, target, comps, x
