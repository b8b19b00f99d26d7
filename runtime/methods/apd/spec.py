"""APD (Braun et al. 2025): its settings (ApdDecompose's own fields), loss terms and checks.

Symbols (paper / method notes): C = components, m = inner rank, k = top-k, W = A @ B per component
(row-vector convention h = a @ W), N = number of decomposed weights per replicate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...spec import Decompose, Form, Issue, METHODS, MethodSpec, declare_metric, declare_plot, setting
from ...spec.checks import in_choices, positive
from ...spec.registry import count_of, declare_terms, non_negative


@dataclass(frozen=True)
class TopK:
    """batch: k = floor(value * B) over the flattened (B x C) attributions (value may exceed 1);
    sample: integer k per sample; exact: k = number of nonzero input features in the batch."""

    FORMS: ClassVar[dict[str, Form]] = {
        "batch": Form(fixed={"mode": "batch"}, positional=("value",), required=1),  # floor(value x B) per batch
        "sample": Form(fixed={"mode": "sample"}, positional=("value",), required=1),  # k per sample
        "exact": Form(fixed={"mode": "exact"}),  # k = active input features in the batch
    }

    mode: str = setting("batch", "batch, sample or exact", choices=("batch", "sample", "exact"),
                        valid="exact needs replicates = 1")
    # bounded so that value x batch stays finite (int() of it cannot overflow)
    value: float = setting(1.0, "batch: k / B (may exceed 1); sample: k per sample", paper="k", max=1e18,
                           why="top-k cannot exceed the number of components",
                           valid="batch: value x batch >= 1 and value <= components; sample: an integer in [1, components]")

    def k(self, batch: int, x: np.ndarray | None = None) -> int:
        """How many (sample, component) entries are kept: over the whole batch (batch, exact) or
        per sample (sample). `x` (the inputs) is needed for exact top-k only."""
        if self.mode == "batch":
            return int(self.value * batch)
        if self.mode == "sample":
            return int(self.value)
        if self.mode == "exact":
            return int(np.count_nonzero(x))
        raise ValueError(f"unknown top-k mode {self.mode!r}")


@dataclass(frozen=True)
class Attribution:
    """How components are attributed (notes §5)."""

    FORMS: ClassVar[dict[str, Form]] = {
        "gradient": Form(fixed={"kind": "gradient"}, keywords={"source": "source"}),
        "activation": Form(fixed={"kind": "activation"}),
        "ablation": Form(fixed={"kind": "ablation"}),
    }

    kind: str = setting("gradient", "attribution method (paper eq. 8)", choices=("gradient", "activation", "ablation"),
                        valid="ablation cannot drive the Lp sparsity loss")
    source: str = setting("target", "gradient only: gradients of the target model (notes §5.1) or of the APD model "
                          "(an older variant, §5.2)", choices=("target", "apd"), valid="apd needs kind gradient")


@dataclass(frozen=True)
class Revive:
    """Not part of APD (off by default; revive.py): every `every` steps up to step `until`, each
    component chosen in fewer than half of the last `window` steps takes over one of the two input
    groups of a most-chosen live component."""

    FORMS: ClassVar[dict[str, Form]] = {
        "split": Form(fixed={"kind": "split"}, keywords={k: k for k in ("every", "until", "window", "clear", "adopt")})}

    kind: str = setting("split", "split: a dead component takes one of two input groups of a most-chosen live one",
                        choices=("split",))
    every: int = setting(1000, "steps between revivals", valid="> 0")
    until: int = setting(10_000, "last step at which components are revived", valid="> 0")
    window: int = setting(200, "a component chosen in fewer than half of this many steps before a revival is dead",
                          valid="(0, every]")
    clear: bool = setting(False, "at the last revival, zero the dead components no donor could be split for (measured "
                          "worse on TMS 40-10)")
    adopt: bool = setting(False, "a dead component left over by the splits takes, from every component, the part that "
                          "reads an input top-k leaves unserved even when it is large (measured better on TMS 40-10)")


_COEF = "coefficient; none = term off"


@dataclass(frozen=True)
class ApdLosses:
    """Coefficients (None = term off) and exponents of APD's loss terms (notes §4). A field with
    `term` is a loss term (its text: the metric of its final value)."""

    faithfulness: float | None = setting(1.0, _COEF, paper="L_faithfulness, eq. 14 (mean over the N weights)",
                                         valid=">= 0", term="final faithfulness (param-match) loss")
    minimality: float | None = setting(1.0, _COEF, paper="L_minimality, eq. 17 (top-k output MSE); beta",
                                       valid=">= 0; needs top-k", term="final top-k reconstruction loss")
    act_recon: float | None = setting(None, _COEF, paper="hidden-activation reconstruction (App. A.2.2)", valid=">= 0",
                                      term="final activation-reconstruction loss")
    simplicity: float | None = setting(None, _COEF + "; schatten(coef, p = P) also sets simplicity_p",
                                       forms={"schatten": Form(positional=("simplicity",), keywords={"p": "simplicity_p"},
                                                               required=1)},
                                       paper="L_simplicity, eq. 22; alpha", valid=">= 0",
                                       term="final Schatten simplicity loss")
    simplicity_p: float = setting(1.0, "Schatten exponent", paper="p (eq. 22)", valid="> 0")
    sparsity: float | None = setting(None, _COEF + "; lp(coef, p = P) also sets sparsity_p",
                                     forms={"lp": Form(positional=("sparsity",), keywords={"p": "sparsity_p"}, required=1)},
                                     paper="L_p penalty on attributions, eq. 26", valid=">= 0; required without top-k",
                                     term="final Lp sparsity loss")
    sparsity_p: float = setting(1.0, "attribution exponent", paper="p1 (eq. 26)", valid="> 0")
    output_recon: float | None = setting(None, _COEF, paper="unmasked output MSE", valid=">= 0",
                                         term="final unmasked output-reconstruction loss")


@dataclass(frozen=True)
class ApdDecompose(Decompose):
    """APD's decomposition: C components of inner rank m, selected per batch by top-k over attributions."""

    method: str = setting("apd", "the decomposition method")
    loss: ApdLosses = setting(ApdLosses(), "loss coefficients and exponents (notes §4)")
    rank: int | None = setting(None, "inner rank of each component matrix; none = per target", paper="m",
                               valid="[1, min(d_in, d_out) + 1]")
    topk: TopK | None = setting(TopK(), "top-k selection of active components (paper eq. 16, 25)")
    attribution: Attribution = setting(Attribution(), "how components are attributed (notes §5)")
    unit_norm: bool = setting(False, "normalise the U (A) factors to unit norm every step")
    revive: Revive | None = setting(None, "dead-component revival, not part of APD (revive.py); none = off, as in the "
                                    "paper")


class ApdMethod(MethodSpec):
    name = "apd"
    cls = ApdDecompose
    bars = (("mmcs", ">=", 0.99), ("ml2r", ">=", 0.89))  # APD paper: TMS 5-2 MMCS 0.998, ML2R 0.893
    title = "Attribution-based Parameter Decomposition (Braun et al. 2025)"
    doc = "apd: Attribution-based Parameter Decomposition (Braun et al. 2025)"

    def restart_criterion(self, dec: ApdDecompose) -> str:
        return "lowest held-out top-k MSE" if dec.topk is not None else "lowest final total loss"

    def summary_rows(self, exp) -> list[tuple[str, str]]:
        d = exp.decompose
        return [("components", f"C = {d.components}, rank m = {d.rank}"), ("top-k", _topk_line(d))]

    def training_rows(self, exp) -> list[tuple[str, str]]:
        r = exp.decompose.revive
        if r is None:
            return []
        return [("revive", f"every {r.every:,} steps up to step {r.until:,}, dead components (chosen in under "
                           f"half of the last {r.window:,} steps) split busy ones"
                           + (", dead ones left over adopt inputs no component serves" if r.adopt else "")
                           + (", those left dead at the last revival are zeroed" if r.clear else "") + " (not part of APD)")]

    def components_text(self, dec: ApdDecompose) -> str:
        return f"C = {dec.components}, m = {dec.rank}"

    def issues(self, exp, arch, kind) -> list[Issue]:
        """Rank, top-k, attributions and their loss terms; revival."""
        issues: list[Issue] = []
        dc = exp.decompose
        if dc.revive is not None:
            _revive_issues(dc, issues)
        if dc.rank is not None and kind.matrices(arch):
            positive("decompose.rank", dc.rank, issues)
            # A component's rank cannot exceed min(d_in, d_out); one spare is allowed because the
            # reference's TMS default is min(F, H) + 1.
            shapes = list(dict.fromkeys((m.d_in, m.d_out) for m in kind.matrices(arch) if not m.transposed))
            max_rank = max(min(a, b) for a, b in shapes) + 1
            if dc.rank > max_rank:
                issues.append(Issue("decompose.rank", f"rank {dc.rank} exceeds the largest rank a decomposed matrix allows "
                                    f"({', '.join(f'{a}x{b}' for a, b in shapes)}: at most min(d_in, d_out) + 1 = {max_rank})",
                                    f"use rank <= {max_rank}, or leave it out for the default"))
        at = dc.attribution
        in_choices("decompose.attribution.kind", at.kind, ("gradient", "activation", "ablation"), issues)
        in_choices("decompose.attribution.source", at.source, ("target", "apd"), issues)
        L = dc.loss
        for name in self.terms():
            positive(f"decompose.loss.{name}", getattr(L, name), issues, strict=False)
        positive("decompose.loss.simplicity_p", L.simplicity_p, issues)
        positive("decompose.loss.sparsity_p", L.sparsity_p, issues)
        tk = dc.topk
        if tk is None:
            if L.minimality is not None:
                issues.append(Issue("decompose.loss.minimality", "the minimality (top-k reconstruction) loss needs top-k",
                                    "set decompose.topk, or use the Lp formulation: loss { sparsity = ... } with topk = none",
                                    ("decompose.topk",)))
            if L.sparsity is None:
                issues.append(Issue("decompose.topk", "without top-k, the Lp sparsity loss must be on to select components",
                                    "set decompose.loss.sparsity, or a top-k"))
            if L.act_recon is not None and getattr(kind, "act_recon_needs_topk", False):
                issues.append(Issue("decompose.loss.act_recon", "activation reconstruction of a residual MLP uses the top-k pass",
                                    "set decompose.topk", ("decompose.topk",)))
        else:
            _topk_issues(exp, tk, issues)
        if at.source == "apd" and at.kind != "gradient":
            issues.append(Issue("decompose.attribution.source", f"source applies to gradient attributions; {at.kind} "
                                "attributions always come from the APD model", "remove source"))
        if at.kind == "ablation" and L.sparsity is not None:
            issues.append(Issue("decompose.attribution.kind", "ablation attributions are not differentiable; the Lp sparsity loss needs gradient or activation attributions",
                                also=("decompose.loss.sparsity",)))
        return issues


def _topk_line(d: ApdDecompose) -> str:
    tk, B, C = d.topk, d.batch, d.components
    if tk is None:
        return "none (Lp sparsity selects components)"
    if tk.mode == "batch":
        return f"batch {tk.value:g}: k = {tk.k(B):,} active of B x C = {B * C:,} per batch"
    if tk.mode == "sample":
        return f"sample: k = {tk.value:g} per sample ({int(tk.value * B):,} per batch)"
    return "exact: k = number of active input features in the batch"


def _topk_issues(exp, tk: TopK, issues: list[Issue]) -> None:
    dc = exp.decompose
    in_choices("decompose.topk.mode", tk.mode, ("batch", "sample", "exact"), issues)
    if tk.mode == "batch":
        if tk.value <= 0:
            issues.append(Issue("decompose.topk", f"batch top-k must be > 0, got {tk.value}"))
        elif dc.batch > 0 and tk.k(dc.batch) < 1:
            issues.append(Issue("decompose.topk", f"batch top-k {tk.value} x batch {dc.batch} = "
                                f"{tk.value * dc.batch:g} selects no component",
                                f"use topk >= {1 / dc.batch:.3g} or a larger batch", ("decompose.batch",)))
        elif tk.value > dc.components:
            issues.append(Issue("decompose.topk", f"batch top-k {tk.value} exceeds the number of components {dc.components}",
                                also=("decompose.components",)))
    elif tk.mode == "sample":
        if tk.value != int(tk.value) or not 1 <= tk.value <= dc.components:
            issues.append(Issue("decompose.topk", f"per-sample top-k must be an integer in [1, {dc.components}], got {tk.value:g}",
                                also=("decompose.components",)))
    elif tk.mode == "exact" and exp.replicates != 1:
        issues.append(Issue("decompose.topk", "exact top-k needs replicates = 1", also=("replicates",)))


def _revive_issues(dc: ApdDecompose, issues: list) -> None:
    r = dc.revive
    in_choices("decompose.revive.kind", r.kind, ("split",), issues)
    for name in ("every", "window", "until"):
        positive(f"decompose.revive.{name}", getattr(r, name), issues)
    if r.window > r.every:
        issues.append(Issue("decompose.revive.window", f"window ({r.window} steps) is longer than every ({r.every})",
                            "use window <= every: a window covers the steps since the last revival at most",
                            ("decompose.revive.every",)))
    if dc.topk is None:
        issues.append(Issue("decompose.revive", "revive counts top-k choices; this decomposition has no top-k",
                            "set decompose.topk, or remove revive", ("decompose.topk",)))


METHODS["apd"] = ApdMethod()

declare_terms(METHODS["apd"])
_COMPONENTS = count_of("components", lambda exp, arch: exp.decompose.components)
declare_metric("topk_mse", "MSE of the top-k APD output against the target output (eval batches)", methods=("apd",),
               bounds=non_negative)
declare_metric("mean_active", "mean number of active components per sample with a nonzero input", methods=("apd",),
               bounds=_COMPONENTS)
declare_metric("dead_components", "components never selected by top-k (with a positive attribution) on eval batches",
               methods=("apd",), bounds=_COMPONENTS)
declare_plot("attributions", "attributions on one-hot inputs per component", methods=("apd",))
