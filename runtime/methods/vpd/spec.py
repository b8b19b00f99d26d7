"""VPD (adversarial parameter decomposition; Bushnaq, Braun, Clive-Griffin et al. 2026): its settings
(VpdDecompose's own fields), loss terms and checks. The method: /work/shared/reference/vpd-notes.md
(§ numbers below are that file's).

SPD with three changes: a persistent adversary over the masks' sources, a smooth-L0 sparsity penalty
with a frequency term, and reconstruction at the model's output only. Defaults are the authors' TMS
5-2 toy configuration (§7) wherever one default must be chosen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...spec import (Decompose, FaithfulnessWarmup, Form, Issue, METHODS, MethodSpec, Optimizer, Schedule,
                     setting)
from ...spec.checks import fraction, in_choices, positive
from ...spec.knots import Knots, linear
from ...spec.registry import declare_terms

ROUTINGS = ("uniform_k_subset", "all")


@dataclass(frozen=True)
class LayerwiseCausalImportance:
    """VPD's causal importances (§2): one MLP per site on the site's input activation, d_in -> widths
    -> C preactivations z, squashed twice (lower: clamp to [0, 1] with the leaky backward, for the
    masks; upper: leaky above 1, for the sparsity penalty)."""

    FORMS: ClassVar[dict[str, Form]] = {
        "layerwise": Form(positional=("widths",), keywords={k: k for k in ("widths", "activation", "lower_leak",
                                                                           "upper_leak")})}

    widths: tuple[int, ...] = setting((50,), "hidden widths of each site's MLP, e.g. [50] or [200, 200]",
                                      paper="CI hidden (§2, §7)", valid="each > 0")
    activation: str = setting("gelu", "gelu: z Phi(z) with the exact erf (the authors'); gelu_tanh: its tanh "
                              "approximation", choices=("gelu", "gelu_tanh"), paper="GELU (§2)")
    lower_leak: float = setting(0.01, "slope alpha of the lower squashing's backward below 0 (a closed gate can be "
                                "pushed open)", paper="alpha (§2)", valid="[0, 1)")
    upper_leak: float = setting(0.01, "slope alpha of the upper squashing above 1 (sparsity penalty)",
                                paper="alpha (§2)", valid="[0, 1)")


@dataclass(frozen=True)
class PersistentAdversary:
    """The training adversary (§3, §4): persistent sources, one row per batch index and site
    (B, C + 1), initialised U[0, 1], moved by Adam *ascent* on the reconstruction and clamped to
    [0, 1]; `ascents` steps per training step with the components detached, then one more from the
    main backward pass. A row is adversarial with probability `fraction`."""

    FORMS: ClassVar[dict[str, Form]] = {
        "ppgd": Form(keywords={k: k for k in ("fraction", "ascents", "lr", "warmup", "beta1", "beta2", "eps")})}

    fraction: float | Knots = setting(0.5, "probability that a batch row is adversarial (a number or a schedule)",
                                      paper="adv_fraction (§3)", valid="[0, 1]")
    ascents: int = setting(2, "warmup ascents of the sources per step, components and CI detached",
                           paper="n_warmup (§4)", valid=">= 0")
    lr: float = setting(0.01, "the sources' Adam learning rate (after its warmup)", paper="§4", valid="> 0")
    warmup: float = setting(0.025, "fraction of the steps over which the sources' lr rises linearly from 0",
                            paper="§4", valid="[0, 1]")
    beta1: float = setting(0.01, "the sources' Adam beta1", paper="§4", valid="[0, 1)")
    beta2: float = setting(0.99, "the sources' Adam beta2", paper="§4", valid="[0, 1)")
    eps: float = setting(1e-8, "the sources' Adam epsilon (added after the square root)", paper="§4", valid="> 0")


_COEF = "coefficient, a number or a schedule (linear(a, b), cosine(a, b), knots(...)); none = term off"


@dataclass(frozen=True)
class VpdLosses:
    """VPD's loss terms (§3): coefficients (None = off; a number or a schedule over training) and the
    smooth L0's settings. A field with `term` is a loss term (its text: the metric of its final value)."""

    faithfulness: float | Knots | None = setting(
        1.0, _COEF, paper="mean_s ||W_s - V_s U_s||^2 / ||W_s||^2 (§3)", valid=">= 0",
        term="VPD: final faithfulness loss (relative: mean over sites of ||W - V U||^2 / ||W||^2)")
    reconstruction: float | Knots | None = setting(
        1.0, _COEF, paper="merged stochastic / adversarial reconstruction (§3)", valid=">= 0",
        term="VPD: final merged stochastic / adversarial output reconstruction loss")
    importance_minimality: float | Knots | None = setting(
        8e-4, _COEF, paper="imp; activity = sum_s sum_c f[s, c] (§3, §7)", valid=">= 0",
        term="VPD: final activity, sum over sites and subcomponents of the smooth-L0 firing frequency")
    frequency: float | Knots | None = setting(
        4e-4, _COEF, paper="freq; sum_s sum_c f log2(1 + a' f) (§3, §7)", valid=">= 0",
        term="VPD: final frequency penalty")
    frequency_reference: float = setting(32768.0, "the frequency penalty's reference datapoint count",
                                         paper="a' (§3)", valid="> 0")
    smooth_l0_g: float | Knots = setting(linear(1.0, 0.01), "g of the smooth L0 phi_g(c) = c^2 / (c^2 + g^2): a "
                                         "number or a schedule", paper="g, 1 -> 0.01 linearly (§3)", valid="> 0")
    normalize_at_one: bool = setting(False, "multiply phi_g by (1 + g^2) so that c = 1 costs 1 for every g",
                                     paper="normalize_at_one (§3)")


@dataclass(frozen=True)
class VpdDecompose(Decompose):
    """VPD's decomposition: C rank-one subcomponents per site plus the delta channel, layerwise causal
    importances, masks mixed with stochastic or adversarial sources."""

    method: str = setting("vpd", "the decomposition method")
    components: int = setting(20, "rank-one subcomponents per decomposed matrix (site)", paper="C (§7)", valid="> 0")
    optimizer: Optimizer = setting(Optimizer(name="adamw", lr=1e-3), "decomposition optimiser (components and CI)",
                                   paper="AdamW (0.9, 0.999), wd 0 (§4)")
    schedule: Schedule = setting(Schedule(kind="half_cosine", final=0.1), "learning-rate schedule",
                                 paper="cosine to 0.1x (§4)")
    batch: int = setting(4096, "batch size (the persistent sources have this many rows)", paper="B (§7)",
                         valid="> 0")
    steps: int = setting(20_000, "optimiser steps", paper="§7", valid="> 0")
    loss: VpdLosses = setting(VpdLosses(), "loss coefficients and settings (§3)")
    causal_importance: LayerwiseCausalImportance = setting(LayerwiseCausalImportance(), "the causal-importance MLP "
                                                           "of every site (§2)")
    adversary: PersistentAdversary | None = setting(
        PersistentAdversary(), "the persistent training adversary (§3, §4); none = every row stochastic")
    delta_channel: bool = setting(True, "the (C+1)-th maskable channel x @ (W - V U) of every site", paper="§1")
    routing: str = setting("uniform_k_subset", "stochastic rows: uniform_k_subset = k ~ U{1..sites}, a random k-subset "
                           "of sites masked, the rest frozen; all = every site masked", choices=ROUTINGS, paper="§1")
    faithfulness_warmup: FaithfulnessWarmup | None = setting(
        FaithfulnessWarmup(steps=200, lr=1e-2, weight_decay=0.0), "AdamW steps on faithfulness alone (V, U) before "
        "training; none = off", paper="§3 (toys: 200 steps at lr 1e-2, weight decay 0)")
    grad_clip: float | None = setting(1.0, "global gradient-norm clip of V, U per replicate; none = off",
                                      paper="§4", valid="> 0")
    ci_grad_clip: float | None = setting(1.0, "the same for the causal-importance MLPs; none = off", paper="§4",
                                         valid="> 0")


def coefficient_issues(path: str, value: float | Knots | None, issues: list[Issue], low: float = 0.0,
                       high: float | None = None, strict: bool = False) -> None:
    """Every value a coefficient takes (a number, or each knot of a schedule) within its range."""
    if value is None:
        return
    values = [v for _, v in value.knots] if isinstance(value, Knots) else [value]
    for v in values:
        if (v <= low if strict else v < low) or (high is not None and v > high):
            rng = f"{'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            issues.append(Issue(path, f"must be {rng}, got {v:g}"))
            return


class VpdMethod(MethodSpec):
    name = "vpd"
    cls = VpdDecompose
    importance = "causal"
    bars = (("mmcs", ">=", 0.99), ("ml2r", ">=", 0.97), ("identity_ci_error", "==", 0))  # SPD's, and notes §6
    title = "adversarial Parameter Decomposition, VPD (Bushnaq, Braun, Clive-Griffin et al. 2026)"
    doc = "vpd: adversarial parameter decomposition (Bushnaq, Braun, Clive-Griffin et al. 2026)"
    foreign_key_note = " (a VPD spec has no top-k, rank or attribution: causal importances select)"

    def restart_criterion(self, dec: VpdDecompose) -> str:
        return "lowest held-out VPD loss (stochastic rows)"

    def matrix_note(self, layer) -> str:
        return f" ({layer.param} transposed in the target; a site of its own)" if layer.transposed else ""

    def summary_rows(self, exp) -> list[tuple[str, str]]:
        d = exp.decompose
        ci, L, adv = d.causal_importance, d.loss, d.adversary

        def coef(v):
            return v.text() if isinstance(v, Knots) else f"{v:g}"

        terms = [f"{name} {coef(getattr(L, name))}" for name in self.terms() if getattr(L, name) is not None]
        g = coef(L.smooth_l0_g)
        rows = [
            ("method", "vpd: " + self.title),
            ("components", f"C = {d.components} rank-one subcomponents per site"
                           + (" + the delta channel W - V U" if d.delta_channel else "")),
            ("causal imp.", f"one MLP per site on its input: d_in -> {' -> '.join(map(str, ci.widths))} "
                            f"{ci.activation} -> C; leaky squashings (lower backward {ci.lower_leak:g}, upper "
                            f"{ci.upper_leak:g})"),
            ("losses", ", ".join(terms) + f"; smooth L0 g = {g}{' (normalised at 1)' if L.normalize_at_one else ''}, "
                       f"a' = {L.frequency_reference:g}"),
            ("adversary", "none: every row stochastic" if adv is None else
             f"persistent sources (PPGD): rows adversarial with p = {coef(adv.fraction)}, {adv.ascents} ascents + 1 "
             f"per step, Adam lr {adv.lr:g} ({adv.warmup:.3g} warmup), betas {adv.beta1:g}/{adv.beta2:g}; "
             f"stochastic rows {d.routing}"),
        ]
        fw = d.faithfulness_warmup
        if fw is not None:
            rows.append(("warmup", f"{fw.steps:,} AdamW steps on faithfulness alone first (lr {fw.lr:g}, weight decay "
                                   f"{fw.weight_decay:g})"))
        clips = [f"{n} {v:g}" for n, v in (("components", d.grad_clip), ("CI", d.ci_grad_clip)) if v is not None]
        if clips:
            rows.append(("clipping", "gradient norm per replicate: " + ", ".join(clips)))
        return rows

    def components_text(self, dec: VpdDecompose) -> str:
        return f"VPD, C = {dec.components} subcomponents per site" + (" + delta" if dec.delta_channel else "")

    def issues(self, exp, arch, kind) -> list[Issue]:
        dc = exp.decompose
        issues: list[Issue] = []
        ci, L, adv = dc.causal_importance, dc.loss, dc.adversary
        if not ci.widths:
            issues.append(Issue("decompose.causal_importance.widths", "the causal-importance MLP needs a hidden layer",
                                "write e.g. causal_importance = layerwise([50])"))
        for w in ci.widths:
            positive("decompose.causal_importance.widths", w, issues)
        in_choices("decompose.causal_importance.activation", ci.activation, ("gelu", "gelu_tanh"), issues)
        for name in ("lower_leak", "upper_leak"):
            v = getattr(ci, name)
            if not 0 <= v < 1:
                issues.append(Issue(f"decompose.causal_importance.{name}", f"a leak slope must be in [0, 1), got {v}",
                                    "the authors use 0.01"))
        for name in self.terms():
            coefficient_issues(f"decompose.loss.{name}", getattr(L, name), issues)
        positive("decompose.loss.frequency_reference", L.frequency_reference, issues)
        coefficient_issues("decompose.loss.smooth_l0_g", L.smooth_l0_g, issues, strict=True)
        if L.reconstruction is None:
            issues.append(Issue("decompose.loss.reconstruction", "VPD needs its reconstruction loss: without it nothing "
                                "trains the causal importances to keep what the output needs",
                                "set reconstruction = 1"))
        if adv is not None:
            coefficient_issues("decompose.adversary.fraction", adv.fraction, issues, high=1.0)
            positive("decompose.adversary.ascents", adv.ascents, issues, strict=False)
            positive("decompose.adversary.lr", adv.lr, issues)
            fraction("decompose.adversary.warmup", adv.warmup, issues, "warmup = 2.5%")
            for name in ("beta1", "beta2"):
                v = getattr(adv, name)
                if not 0 <= v < 1:
                    issues.append(Issue(f"decompose.adversary.{name}", f"must be in [0, 1), got {v}"))
            positive("decompose.adversary.eps", adv.eps, issues)
        in_choices("decompose.routing", dc.routing, ROUTINGS, issues)
        fw = dc.faithfulness_warmup
        if fw is not None:
            positive("decompose.faithfulness_warmup.steps", fw.steps, issues)
            positive("decompose.faithfulness_warmup.lr", fw.lr, issues)
            positive("decompose.faithfulness_warmup.weight_decay", fw.weight_decay, issues, strict=False)
        positive("decompose.grad_clip", dc.grad_clip, issues)
        positive("decompose.ci_grad_clip", dc.ci_grad_clip, issues)
        return issues


METHODS["vpd"] = VpdMethod()

declare_terms(METHODS["vpd"])
