"""The SPD paper's reference results (Bushnaq, Braun & Sharkey 2025, Table 1 and figures), keyed by
`report.paper` ("spd_*")."""
from __future__ import annotations

from ...spec.paper import PAPER, PaperResult, PaperValue

PAPER.update({
    "spd_tms_5_2": PaperResult(
        "spd_tms_5_2", "SPD on TMS, 5 features, 2 hidden dimensions", "SPD paper §3.1, Fig. 1, Table 1; App. training details",
        (PaperValue("mmcs", 1.0, std=0.0, tolerance=0.01, text="MMCS 1.000 +- 0.000 (Table 1)"),
         PaperValue("ml2r", 0.993, std=0.002, tolerance=0.03, text="ML2R 0.993 +- 0.002 (Table 1)")),
        ("Five subcomponents of W learn one column of W each; the other 15 have negligible norm (Fig. 1).",
         "No shrinkage: ML2R ~ 1 (APD: 0.893).",
         "Each of W's five subcomponents is causally important exactly on inputs with its feature active."),
        ("The paper decomposes W and W^T as two matrices (linear1, linear2) although the target ties them; "
         "MMCS / ML2R are on W.",)),
    "spd_tms_40_10": PaperResult(
        "spd_tms_40_10", "SPD on TMS, 40 features, 10 hidden dimensions", "SPD paper §3.1, Table 1; App. training details",
        (PaperValue("mmcs", 1.0, std=0.0, tolerance=0.01, text="MMCS 1.000 +- 0.000 (Table 1)"),
         PaperValue("ml2r", 1.010, std=0.007, tolerance=0.03, text="ML2R 1.010 +- 0.007 (Table 1)")),
        ("Forty subcomponents of W match its columns; the other 160 have negligible norm.",
         "No shrinkage: ML2R ~ 1 (APD: 0.935)."),
        ("C = 200 per matrix (the authors' config); 40k steps at batch 4096.",)),
    "spd_tms_5_2_id": PaperResult(
        "spd_tms_5_2_id", "SPD on TMS 5-2 with a hidden identity (x^ = ReLU(W^T I W x + b))",
        "SPD paper §TMS with hidden identity, Figs. 2-4, Table 1; App. training details",
        (PaperValue("mmcs", 1.0, std=0.0, tolerance=0.01, text="MMCS 1.000 +- 0.000 (Table 1)"),
         PaperValue("ml2r", 0.992, std=0.010, tolerance=0.03, text="ML2R 0.992 +- 0.010 (Table 1)")),
        ("W: five subcomponents, one column of W each (Fig. 2).",
         "The identity I: two subcomponents that sum to it, the others of negligible norm (Fig. 3); m_2 + m_1 = 7 "
         "subcomponents of non-negligible norm in all (Fig. 4).",
         "APD fails to learn the ground-truth mechanisms on this model."),
        ("The settings are TMS 5-2's (the appendix gives them together).",)),
    "spd_tms_40_10_id": PaperResult(
        "spd_tms_40_10_id", "SPD on TMS 40-10 with a hidden identity", "SPD paper Table 1; App. training details",
        (PaperValue("mmcs", 1.0, std=0.0, tolerance=0.01, text="MMCS 1.000 +- 0.000 (Table 1)"),
         PaperValue("ml2r", 1.031, std=0.001, tolerance=0.03, text="ML2R 1.031 +- 0.001 (Table 1)")),
        ("SPD decomposes the 10 x 10 identity into 10 subcomponents that sum to it.",),
        ("The settings are TMS 40-10's (the appendix gives them together).",)),
    "spd_resid_mlp_1l": PaperResult(
        "spd_resid_mlp_1l", "SPD on compressed computation, 1-layer residual MLP",
        "SPD paper §3.3, Figs. 6-8; App. training details",
        (PaperValue("dedicated_features", 100, tolerance=5,
                    text="each of the 100 W_in subcomponents has causal importance for one input feature (Fig. 8, "
                         "middle); tolerance 5 is ours"),),
        ("W_in: one subcomponent per feature, using the neurons the target uses for it (Figs. 6-7).",
         "W_out: ~50 subcomponents, causally important together on every one-hot input (a single rank-50 "
         "component; Fig. 8, middle).",
         "A beta_3 that is too low gives features several W_in subcomponents; too high shrinks the causal importances "
         "on the diagonal below 1 (Fig. 8, left and right)."),
        ("C = 100, lr 2e-3 constant, beta_3 = 1e-5, p = 2, 30k steps, batch 2048 (App.).",)),
})
