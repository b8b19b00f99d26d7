"""VPD (adversarial parameter decomposition; Bushnaq, Braun, Clive-Griffin et al. 2026): SPD with a
persistent adversary over the masks' sources, a smooth-L0 sparsity penalty with a frequency term,
and output-only reconstruction (/work/shared/reference/vpd-notes.md; docs/method.md, "VPD").

    spec.py       VpdDecompose and its blocks (the method's settings), checks, loss terms
    squash.py     the lower (custom backward) and upper squashings of the CI preactivations
    sparsity.py   smooth L0, firing frequencies, activity and the frequency penalty
    model.py      parameters, CI MLPs, faithfulness, masked / merged / adversarial passes, row draws
    adversary.py  the persistent sources (PPGD)
    train.py      VpdProblem, VpdTrainer, VpdDecomposition, VpdEngine
    analysis.py   VpdAnalysis (the causal-importance analyses), restart scores, diagnostics
    plots.py      VPD's plots

Coefficient schedules are the spec layer's (runtime/spec/knots.py); the mask rule is the engine's
(engine/masks.py), shared with the evaluation adversary every method is measured with.
"""
from . import spec, train, analysis  # noqa: F401  (each registers itself)
from .spec import LayerwiseCausalImportance, PersistentAdversary, VpdDecompose, VpdLosses  # noqa: F401
from .train import VpdDecomposition, VpdTrainer  # noqa: F401
