"""VPD (adversarial parameter decomposition; Bushnaq, Braun, Clive-Griffin et al. 2026): SPD with a
persistent adversary over the masks' sources, a smooth-L0 sparsity penalty with a frequency term,
and output-only reconstruction (docs: /work/shared/reference/vpd-notes.md).

    settings.py   VpdSettings (the method's knobs), VpdRun (what the trainer takes for now)
    squash.py     the lower (custom backward) and upper squashings of the CI preactivations
    sparsity.py   smooth L0, firing frequencies, activity and the frequency penalty
    schedules.py  piecewise (linear / cosine / hold) coefficient and lr schedules
    model.py      parameters, CI MLPs, faithfulness, masked / merged / adversarial passes, row draws
    adversary.py  mask rule, persistent sources (PPGD), the method-agnostic evaluation adversary
    metrics.py    identity_ci_error, dense_ci_error
    train.py      VpdProblem, VpdTrainer, VpdDecomposition
"""
from .settings import VpdRun, VpdSettings  # noqa: F401
from .train import VpdDecomposition, VpdTrainer  # noqa: F401
