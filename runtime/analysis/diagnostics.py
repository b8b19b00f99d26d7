"""Plain-language diagnostics of known APD failure modes, from a run's metrics and loss history.

Each diagnostic is (severity, text) with severity "problem" or "note". Thresholds are rules of
thumb chosen against the paper's results (Table 1, Figs. 6-8, App. C.2), not paper definitions.
Everything degrades gracefully: a missing metric just skips its check. A problem with a metric on
which the spec states an expectation that passes is only a note: the spec's bar is the verdict on
that metric (e.g. one replicate of five off the paper's solution, which `for at least 4
replicates` allows, pulls the mean MMCS below the rule of thumb). The expectations themselves are
reported beside the diagnostics, not among them. A run with a problem left fails (`apdspec run`
exits 1).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..spec import KINDS

ML2R_LOW, ML2R_HIGH = 0.9, 1.1
MMCS_LOW = 0.99
FAITHFULNESS_REL = 1e-2  # final param-match MSE relative to the mean squared target weight
RECON_REL = 0.1  # top-k MSE relative to the mean square of the target output
SCRUB_RATIO_LOW = 10.0
TOP1_SPREAD = 3.0  # per-sample top-1 loss this many times the batch top-k loss


def _mean(metrics: dict, name: str) -> float | None:
    v = metrics.get(name)
    if v is None or len(v) == 0:
        return None
    a = np.asarray(v, dtype=float)
    a = a[~np.isnan(a)]  # inf stays (e.g. a scrub ratio with zero scrubbed loss)
    return float(np.mean(a)) if a.size else math.nan


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _still_falling(history: list[dict], key: str, factor: float = 0.5) -> bool:
    """True if `key` fell by more than `factor` over the last fifth of training."""
    vals = [(e["step"], e[key]) for e in history if key in e and isinstance(e[key], (int, float))]
    if len(vals) < 5:
        return False
    steps = np.array([s for s, _ in vals], dtype=float)
    v = np.array([x for _, x in vals], dtype=float)
    ref = v[np.searchsorted(steps, steps[-1] - 0.2 * (steps[-1] - steps[0]))]
    return bool(np.isfinite(ref) and np.isfinite(v[-1]) and ref > 0 and v[-1] < factor * ref)


def _settled(history: list[dict], key: str = "used_components") -> tuple[list[float], list[int], int] | None:
    """When a logged count stopped falling, per replicate: (final level, first step from which it
    stays at or below that level, last step). The final level is the largest value of the last
    tenth of the log, so one batch that happens to miss a rarely used component does not count."""
    entries = [e for e in history if key in e]
    if len(entries) < 5:
        return None
    steps = [int(e["step"]) for e in entries]
    per = np.array([e.get(f"{key}/replicates") or [e[key]] for e in entries], dtype=float)  # (T, I)
    tail = per[-max(1, len(entries) // 10):].max(axis=0)
    settled = []
    for r in range(per.shape[1]):
        above = np.nonzero(per[:, r] > tail[r])[0]
        settled.append(steps[above[-1] + 1] if above.size else steps[0])
    return [float(t) for t in tail], settled, steps[-1]


class MethodDiagnostics:
    """A method's own checks (registered in METHOD_DIAGNOSTICS by its analysis module): `prepare`
    computes what they need from the run's analysis (named `label` in the report if it fails),
    `check` adds them and replaces the generic TMS-geometry checks (MMCS / ML2R)."""

    label = ""

    def prepare(self, an: Any, metrics: dict) -> Any:
        return None

    def check(self, add, metrics: dict, history: list[dict], mmcs: float | None, ml2r: float | None,
              prepared: Any) -> None:
        raise NotImplementedError


METHOD_DIAGNOSTICS: dict[str, MethodDiagnostics] = {}


def diagnose(exp: Any, arch: Any, metrics: dict, history: list[dict], *, status: str = "ok", error: str | None = None,
             expectations: list[dict] = (), weight_scale: float | None = None, output_power: float | None = None,
             errors: dict | None = None, prepared: Any = None) -> list[tuple[str, str]]:
    """Diagnostics for one run. `weight_scale` (mean squared target weight) scales the faithfulness
    check, `output_power` (mean square of the target output) the reconstruction checks; `prepared`
    is what the method's diagnostics prepared (MethodDiagnostics.prepare)."""
    kind = getattr(arch, "kind", "")
    spec = KINDS.get(kind)
    out: list[tuple[str, str]] = []
    met = {e.get("metric") for e in expectations if e.get("passed")}

    def add(sev: str, text: str, metric: str | None = None) -> None:
        """`metric`: the metric the check judges (a problem with it is a note if its expectation passed)."""
        if sev == "problem" and metric in met:
            sev, text = "note", f"{text} (The spec's expectation on `{metric}` is met.)"
        out.append((sev, text))

    C = exp.decompose.components
    if status == "error":
        add("problem", f"The run failed before finishing: {error or 'unknown error'}.")
    last = history[-1] if history else {}
    bad = [k for k, v in last.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        add("problem", f"Training diverged: the final {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not finite. "
            "Lower the learning rate or add warmup.")

    dead_vals = metrics.get("dead_components")
    if dead_vals:
        dead = np.asarray(dead_vals, dtype=float)
        live = C - float(np.nanmax(dead))
        n_feat = spec.features(arch) if spec is not None else None
        where = f"{_fmt(dead[0])} of {C} components are" if dead.size == 1 else \
            f"dead components per replicate (of {C}): {', '.join(_fmt(d) for d in dead)};"
        msg = f"{where} dead (never selected by top-k on {exp.report.eval_batches} evaluation batches)."
        if live <= 0:
            add("problem", "Every component is dead in some replicate: top-k never selected any of them.")
        elif n_feat and live < n_feat:
            add("problem", msg + f" Fewer live components ({_fmt(live)}) than {spec.feature_noun} "
                f"({n_feat}): some must share a component. Try more components or a smaller simplicity coefficient.")
        elif np.nanmax(dead) > 0:
            add("note", msg + " The paper over-provisions components and expects the surplus to die.")
        when = _settled(history) if np.nanmax(dead) > 0 else None
        if when is not None:
            level, at, end = when
            add("note", "Components used per training batch (the `used_components` curve in the losses plot) "
                f"settled at {', '.join(_fmt(v) for v in level)} by step {', '.join(str(a) for a in at)} of {end}"
                + (" (per replicate)." if len(level) > 1 else ".")
                + (" That is within the first quarter of training: which components die is decided early, by "
                   "the initialisation and the first updates." if max(at) <= end / 4 else ""))

    # TMS geometry
    mmcs, ml2r = _mean(metrics, "mmcs"), _mean(metrics, "ml2r")
    own = METHOD_DIAGNOSTICS.get(exp.decompose.method)
    if own is not None:
        own.check(add, metrics, history, mmcs, ml2r, prepared)
        mmcs = ml2r = None  # said by the method above
    if mmcs is not None and mmcs < MMCS_LOW:
        add("problem", f"Component directions do not match every target row: MMCS = {_fmt(mmcs)} (< {MMCS_LOW}; paper "
            "0.996-0.998). Some features are split across components or missing.", metric="mmcs")
    if ml2r is not None and ml2r < ML2R_LOW:
        add("problem" if ml2r < 0.8 else "note",
            f"Shrinkage: ML2R = {_fmt(ml2r)} (< {ML2R_LOW}; paper 0.893 for TMS 5-2, 0.935 for 40-10): the best-matching "
            "component rows are shorter than the target rows. The paper attributes this to the trade-off between top-k "
            "reconstruction and the simplicity penalty; a smaller simplicity coefficient or longer training may help.", metric="ml2r")
    elif ml2r is not None and ml2r > ML2R_HIGH:
        add("problem", f"ML2R = {_fmt(ml2r)} (> {ML2R_HIGH}): matched component rows are longer than the target rows, "
            "so other components must cancel them (not a clean decomposition).", metric="ml2r")

    # faithfulness
    faith = _mean(metrics, "faithfulness")
    if faith is None and last.get("faithfulness") is not None:
        faith = float(last["faithfulness"])
    if faith is not None and weight_scale and weight_scale > 0 and faith / weight_scale > FAITHFULNESS_REL:
        add("problem", f"Faithfulness not converged: the summed components differ from the target weights by "
            f"{100 * faith / weight_scale:.3g}% of the mean squared weight (final faithfulness {_fmt(faith)}). Train "
            "longer or raise the faithfulness coefficient.", metric="faithfulness")
    if _still_falling(history, "faithfulness"):
        add("note", "The faithfulness loss was still falling fast at the end of training (halved over the last fifth): "
            "more steps would likely help.")
    if _still_falling(history, "total"):
        add("note", "The total loss was still falling fast at the end of training: the run may not have converged.")

    # reconstruction
    topk = _mean(metrics, "topk_mse")
    if topk is not None and output_power and output_power > 0 and topk / output_power > RECON_REL:
        add("problem", f"The top-k model reconstructs the target output poorly: its MSE is {100 * topk / output_power:.3g}% "
            "of the output's mean square. Minimality is not satisfied with this top-k.", metric="topk_mse")

    # residual MLP
    F = getattr(arch, "features", None)
    duo, poly = _mean(metrics, "duo_components"), _mean(metrics, "poly_components")
    if duo is not None and poly is not None and duo + poly > 0:
        add("problem", f"{_fmt(duo)} components carry two features and {_fmt(poly)} carry three or more "
            "(max neuron contribution > 0.04): those features' computations are not separated. The paper sees more of "
            "this with a smaller batch top-k (App. C.2) and in the 2-layer model.", metric="duo_components")
    ded = _mean(metrics, "dedicated_features")
    if ded is not None and F and ded < F:
        add("problem" if ded < 0.9 * F else "note",
            f"{_fmt(F - ded)} of {F} features have no component dedicated to them alone (paper: ~all of them).", metric="dedicated_features")
    ratio = _mean(metrics, "scrub_ratio")
    if ratio is not None and math.isnan(ratio):
        add("note", "Scrubbed and anti-scrubbed losses are both zero: the scrubbing test says nothing here.")
    elif ratio is not None and ratio < SCRUB_RATIO_LOW:
        canon = _mean(metrics, "canonical_scrub_ratio")
        if canon is not None and ratio >= canon:
            add("note", f"Ablating the active features' components costs {_fmt(ratio)}x the loss of ablating unrelated "
                f"ones (anti-scrubbed / scrubbed), at least the {_fmt(canon)}x of the target's canonical "
                "one-feature-per-component decomposition: the rest of the gap to >> 1 is the target's interference "
                "between features, which ablating unrelated components also removes.")
        else:
            yardstick = "" if canon is None else f"; the target's canonical decomposition: {_fmt(canon)}x"
            add("problem", f"Components are not specialised: ablating the active features' components costs only "
                f"{_fmt(ratio)}x the loss of ablating unrelated ones (anti-scrubbed / scrubbed; paper Fig. 8: >> 1"
                f"{yardstick}).", metric="scrub_ratio")
    t1, tk = _mean(metrics, "per_feature_loss_top1"), _mean(metrics, "per_feature_loss_topk")
    if t1 is not None and tk is not None and tk > 0 and t1 > TOP1_SPREAD * tk:
        add("note", f"With one component per sample the per-feature loss is {t1 / tk:.2g}x that of batch top-k: some "
            "features' computations are spread over several components (paper App. C.2, Figs. 16, 18; a batch "
            "top-k closer to the mean number of active features reduces this).")

    # gated
    sep = _mean(metrics, "separated_functions")
    n_fun = getattr(arch, "functions", None)
    if sep is not None and n_fun and sep < n_fun:
        add("problem", f"Only {_fmt(sep)} of {n_fun} functions are carried by a component of their own (paper: all "
            "4; it notes the gated model is hard to decompose and its figure is cherry-picked).", metric="separated_functions")
    fm = _mean(metrics, "function_mse")
    if fm is not None and output_power and output_power > 0 and fm / output_power > RECON_REL:
        add("note", f"The top-1 APD output misses the target functions (MSE {_fmt(fm)} on one-hot control bits).")

    for name, msg in (errors or {}).items():
        add("problem", f"{name} could not be computed: {msg}")
    return out


def weight_scale(arch: Any, target: dict) -> float:
    """Mean squared entry of the decomposed target weights (the faithfulness loss's natural scale)."""
    from ..engine.models import decomposed_params

    vals = [np.mean(np.asarray(target[n], dtype=float) ** 2) for n in decomposed_params(arch) if n in target]
    return float(np.mean(vals)) if vals else 0.0
