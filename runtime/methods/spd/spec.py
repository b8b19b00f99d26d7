"""SPD (Stochastic Parameter Decomposition, Bushnaq, Braun & Sharkey 2025): its settings (SpdDecompose's
own fields), loss terms and checks.

C rank-one subcomponents per decomposed matrix, a causal-importance function per subcomponent,
stochastic masks (SPD paper §2, App. "SPD Pseudocode").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...spec import Decompose, FaithfulnessWarmup, Form, Issue, METHODS, MethodSpec, setting
from ...spec.checks import fraction, in_choices, positive
from ...spec.registry import declare_terms


@dataclass(frozen=True)
class CausalImportance:
    """SPD's causal-importance function Gamma (SPD paper §2.3, App. "Architecture of Causal Importance
    Function MLPs" and "Avoiding dead gradients with leaky hard sigmoids"): per subcomponent c of
    matrix l, g = sigma_H(gamma(h)) with h = the subcomponent's inner activation a . V_c and gamma a
    one-hidden-layer MLP R -> R of `hidden` (d_gate) units."""

    FORMS: ClassVar[dict[str, Form]] = {
        "mlp": Form(fixed={"kind": "mlp"}, positional=("hidden",),
                    keywords={k: k for k in ("hidden", "activation", "lower_leak", "upper_leak")})}

    kind: str = setting("mlp", "mlp: one MLP R -> R per subcomponent on its inner activation h_c = a . V_c",
                        choices=("mlp",), paper="Gamma^l_c, gamma^l_c (§2.3, App. A.1)")
    hidden: int = setting(16, "hidden units of each MLP", paper="d_gate (App. A.1)", valid="> 0")
    activation: str = setting("gelu", "gelu: z Phi(z) with the exact erf (the paper's, as torch's default); gelu_tanh: "
                              "its tanh approximation", choices=("gelu", "gelu_tanh"), paper="GELU (App. A.1)")
    lower_leak: float = setting(0.01, "slope below 0 of the hard sigmoid of the masks",
                                paper="sigma_H,lower, 0.01 (App. A.2)", valid="[0, 1)")
    upper_leak: float = setting(0.01, "slope above 1 of the hard sigmoid of the importance loss",
                                paper="sigma_H,upper, 0.01 (App. A.2)", valid="[0, 1)")


_COEF = "coefficient; none = term off"


@dataclass(frozen=True)
class SpdLosses:
    """Coefficients (None = term off) and exponents of SPD's loss terms (SPD paper §2, App. "SPD
    Pseudocode"). A field with `term` is a loss term (its text: the metric of its final value)."""

    faithfulness: float | None = setting(1.0, _COEF, paper="L_faithfulness, eq. 14 (mean over the N weights)",
                                         valid=">= 0", term="final faithfulness (param-match) loss")
    stochastic_recon: float | None = setting(1.0, _COEF, paper="beta_1, L_stochastic-recon (§2.2)",
                                             valid=">= 0; this or stochastic_recon_layerwise",
                                             term="SPD: final stochastic reconstruction loss")
    stochastic_recon_layerwise: float | None = setting(1.0, _COEF, paper="beta_2, L_stochastic-recon-layerwise (§2.2)",
                                                       valid=">= 0", term="SPD: final layerwise stochastic reconstruction loss")
    importance_minimality: float | None = setting(
        3e-3, _COEF + "; lp(coef, p = P) also sets importance_minimality_p",
        forms={"lp": Form(positional=("importance_minimality",), keywords={"p": "importance_minimality_p"}, required=1)},
        paper="beta_3, L_importance-minimality (§2.3)", valid=">= 0", term="SPD: final importance-minimality loss")
    importance_minimality_p: float = setting(1.0, "exponent of the causal importances", paper="p (§2.3)", valid="> 0")
    importance_warmup: float = setting(0.0, "fraction of the steps over which beta_3 rises linearly from 0 (not in the "
                                       "paper)", valid="[0, 1]")
    divergence: str = setting("mse", "output divergence: mse = mean over batch and outputs of the squared difference",
                              choices=("mse",), paper="D (§2.2)")


@dataclass(frozen=True)
class SpdDecompose(Decompose):
    """SPD's decomposition: C rank-one subcomponents per decomposed matrix, causal importances, stochastic masks."""

    method: str = setting("spd", "the decomposition method")
    loss: SpdLosses = setting(SpdLosses(), "loss coefficients and exponents (SPD paper §2, App. pseudocode)")
    causal_importance: CausalImportance = setting(CausalImportance(), "the causal-importance function "
                                                  "g = sigma_H(gamma(h)) of every subcomponent")
    mask_samples: int = setting(1, "stochastic mask draws per step", paper="S (§2.2)", valid="> 0")
    faithfulness_warmup: FaithfulnessWarmup | None = setting(
        None, "not in the paper (the authors' later configs): start from subcomponents that sum to the target; "
              "none = off")


class SpdMethod(MethodSpec):
    name = "spd"
    cls = SpdDecompose
    importance = "causal"
    bars = (("mmcs", ">=", 0.99), ("ml2r", ">=", 0.97), ("identity_ci_error", "==", 0))  # SPD paper Table 1
    title = "Stochastic Parameter Decomposition (Bushnaq, Braun & Sharkey 2025)"
    doc = "spd: Stochastic Parameter Decomposition (Bushnaq, Braun & Sharkey 2025)"
    foreign_key_note = " (an SPD spec has no top-k, rank or attribution: causal importances select)"

    def restart_criterion(self, dec: SpdDecompose) -> str:
        return "lowest held-out SPD loss"

    def matrix_note(self, layer) -> str:
        return f" ({layer.param} transposed in the target; subcomponents of its own)" if layer.transposed else ""

    def summary_rows(self, exp) -> list[tuple[str, str]]:
        """The rows that differ from APD's (components, selection, losses)."""
        d = exp.decompose
        ci, L = d.causal_importance, d.loss
        terms = [f"{name} {getattr(L, name):g}" for name in self.terms()[:-1] if getattr(L, name) is not None]
        if L.importance_minimality is not None:
            warm = f", warmup {L.importance_warmup:.3g} of the steps" if L.importance_warmup else ""
            terms.append(f"importance_minimality {L.importance_minimality:g} (p = {L.importance_minimality_p:g}{warm})")
        rows = [
            ("method", "spd: " + self.title),
            ("components", f"C = {d.components} rank-one subcomponents per decomposed matrix"),
            ("causal imp.", f"one MLP per subcomponent: 1 -> {ci.hidden} {ci.activation} -> 1; leaky hard sigmoids "
                            f"(masks: slope {ci.lower_leak:g} below 0; importance loss: slope {ci.upper_leak:g} above 1); "
                            f"S = {d.mask_samples} mask sample{'' if d.mask_samples == 1 else 's'} per step"),
            ("losses", ", ".join(terms) + f"; D = {L.divergence}"),
        ]
        fw = d.faithfulness_warmup
        if fw is not None:
            rows.append(("warmup", f"{fw.steps:,} AdamW steps on faithfulness alone first (lr {fw.lr:g}, weight decay "
                                   f"{fw.weight_decay:g}; not in the paper)"))
        return rows

    def components_text(self, dec: SpdDecompose) -> str:
        return f"SPD, C = {dec.components} subcomponents per matrix"  # rank one, C per matrix

    def issues(self, exp, arch, kind) -> list[Issue]:
        dc = exp.decompose
        issues: list[Issue] = []
        ci, L = dc.causal_importance, dc.loss
        in_choices("decompose.causal_importance.kind", ci.kind, ("mlp",), issues)
        positive("decompose.causal_importance.hidden", ci.hidden, issues)
        in_choices("decompose.causal_importance.activation", ci.activation, ("gelu", "gelu_tanh"), issues)
        for name in ("lower_leak", "upper_leak"):
            v = getattr(ci, name)
            if not 0 <= v < 1:
                issues.append(Issue(f"decompose.causal_importance.{name}", f"a leak slope must be in [0, 1), got {v}",
                                    "the paper uses 0.01"))
        positive("decompose.mask_samples", dc.mask_samples, issues)
        fw = dc.faithfulness_warmup
        if fw is not None:
            positive("decompose.faithfulness_warmup.steps", fw.steps, issues)
            positive("decompose.faithfulness_warmup.lr", fw.lr, issues)
            positive("decompose.faithfulness_warmup.weight_decay", fw.weight_decay, issues, strict=False)
        for name in self.terms():
            positive(f"decompose.loss.{name}", getattr(L, name), issues, strict=False)
        positive("decompose.loss.importance_minimality_p", L.importance_minimality_p, issues)
        fraction("decompose.loss.importance_warmup", L.importance_warmup, issues, "importance_warmup = 5%")
        in_choices("decompose.loss.divergence", L.divergence, ("mse",), issues)
        if L.stochastic_recon is None and L.stochastic_recon_layerwise is None:
            issues.append(Issue("decompose.loss.stochastic_recon", "SPD needs a stochastic reconstruction loss: without one "
                                "nothing trains the causal importances to keep what the output needs",
                                "set stochastic_recon and/or stochastic_recon_layerwise",
                                ("decompose.loss.stochastic_recon_layerwise",)))
        return issues


METHODS["spd"] = SpdMethod()

declare_terms(METHODS["spd"])
