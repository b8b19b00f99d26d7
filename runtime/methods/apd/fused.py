"""Fused top-k APD losses: every loss term of a step as one autograd primitive with a hand-written VJP.

In top-k mode the mask is a constant, so the masked forward pass, the minimality and act-recon
terms, the faithfulness (param-match) term and the Schatten simplicity term are one function of the
component factors. Written out by hand (plain NumPy), the forward and backward passes can use what
autograd cannot see:

* **Mask sparsity.** Batch top-k switches on K ~ topk x B of the B x C (sample, component) pairs
  (1.28 per sample for the residual MLPs, 0.2-2 for TMS). The masked bottleneck
  ((a @ A) * s) @ B is evaluated on the active pairs only, grouped by component: one GEMM of the
  component's active rows per factor, instead of dense (B, d_in) @ (d_in, C m) products (notes
  §10.3.1 taken one step further). For the residual MLP this removes every B x D x C m product
  from the differentiated pass (3.3e9 FLOPs each for the 1-layer model).
* **Gradient accumulation in place.** The faithfulness gradient G @ B^T / A^T @ G is the one
  dense contribution to each factor's gradient; the sparse per-component contributions and the
  Schatten term are added into it in place (autograd would allocate and add a full-size array
  per contribution, and sum the singleton replicate axis of every matmul gradient).

* **Rows with an all-zero input dropped** (`compact_rows`, `zero_rows_inert`): in TMS and in
  residual MLPs without input biases such rows have exactly zero attributions and contribute
  nothing to any term, so with batch top-k the whole step runs on the other rows (23% of them for
  TMS 5-2, 63% for the residual MLPs at p = 0.01); `compact_batch_topk` falls back to the full
  batch when the choice would involve ties at zero.
* **Shared GEMMs** (`ResidualPre`): the residual MLP's gradient attributions (from the target)
  and the faithfulness gradient read the same big factors; their products are fused into one
  GEMM per factor.

The kernels themselves are the kinds' (registered in kinds.APD_KINDS): residual networks (residual
MLP, gated) use `ResidualLoss` (targets/resid_mlp/apd_kernels.py); TMS uses `TmsLoss` (dense,
vectorised over replicates: a few large array operations instead of ~100 small autograd primitives)
or `TmsSparseLoss` (pair-sparse, for many components: TMS 40-10) (targets/tms/apd_kernels.py). This
module holds what they share: the faithfulness and Schatten terms, the autograd primitive, the
dispatch and the row compaction.
`fused_terms(loss, *factors)` is the autograd primitive: it returns the per-replicate loss terms
(T, I) in the order `loss.terms`; its VJP returns the gradients of every factor. The training loop
(`decompose.LossProblem.step_grads`) calls `forward` / `backward` directly.

Exactness: the same arithmetic as the plain path (`LossProblem.loss`), up to float rounding
(summation order differs); tests/test_fused.py checks both against each other, against
`autograd.test_util.check_grads` and against finite differences in float64.
"""
from __future__ import annotations

import numpy as np
from autograd.extend import defvjp_argnums, primitive

from ...engine.kernels import add_scaled, col_sq_norms, row_sq_norms
from ...engine.models import layers_of, n_decomposed_weights
from ...engine.registry import model_of
from ...engine.rows import nonzero_rows
from .components import SCHATTEN_EPS
from .kinds import hooks
from .spec import ApdMethod

UNFUSED = ("sparsity", "output_recon")  # terms the kernels leave to autograd (attributions inside the loss; unmasked pass)
TERM_ORDER = tuple(t for t in ApdMethod().terms() if t not in UNFUSED)
LAZY_MIN_SIZE = 1 << 16  # factors smaller than this keep plain-array gradients (kernels.CHUNK)


# ------------------------------------------------------------------------------------------
# The primitive


@primitive
def fused_terms(loss, *factors):
    """Per-replicate loss terms (len(loss.terms), I) of `loss` (a ResidualLoss / TmsLoss) at the
    given factors (in `loss.factor_names` order)."""
    return loss.forward(factors)


def _fused_vjp(argnums, ans, args, kwargs):
    loss = args[0]
    factors = args[1:]

    def vjp(g):
        grads = loss.backward(factors, np.asarray(g))
        return tuple(grads[a - 1] for a in argnums)

    return vjp


defvjp_argnums(fused_terms, _fused_vjp)


# ------------------------------------------------------------------------------------------
# Shared pieces: faithfulness and Schatten


def _schatten_setup(p: float):
    half = p / 2.0
    return half, SCHATTEN_EPS ** half


class _Common:
    """Faithfulness and Schatten terms over the decomposed parameters, per replicate."""

    def _init_common(self, arch, target, C: int, m: int, losses, dtype, mask, B_total):
        self.arch, self.C, self.m = arch, C, m
        self.I = mask.shape[0]
        # Normalising batch size: the rows given may be a compaction of a larger batch whose
        # other rows are all-zero inputs (which contribute nothing, see `zero_rows_inert`).
        self.B = int(mask.shape[1] if B_total is None else B_total)
        self.n_active = mask.sum(axis=1).astype(np.dtype(dtype))  # (I, C) samples per component
        self.L = losses
        self.N = n_decomposed_weights(arch)
        self.dtype = np.dtype(dtype)
        self.terms = tuple(t for t in TERM_ORDER if getattr(losses, t) is not None)
        uses: dict[str, int] = {}
        for layer in layers_of(arch):
            uses[layer.param] = uses.get(layer.param, 0) + 1
        self.uses = uses
        self.params = tuple(uses)
        self.factor_names = tuple(f"{n}.{ab}" for n in self.params for ab in ("A", "B"))
        self.W_target = {n: np.asarray(target[n], dtype=self.dtype) for n in self.params}

    pre = None  # a ResidualPre whose products belong to these factors (see _pre_for)
    _save: dict = {}

    def _saved_for(self, factors) -> dict:
        """The forward pass's saved intermediates for exactly these factor arrays (re-running the
        forward pass if the last one was at other factors, or its intermediates were consumed)."""
        saved = self._save.get("factors")
        if saved is None or len(saved) != len(factors) or any(a is not b for a, b in zip(saved, factors)):
            self.forward(factors)
        return self._save

    def _pre_for(self, factors):
        """The precomputed products if they were computed from exactly these factor arrays."""
        pre = self.pre
        if pre is not None and pre.matches(self.factor_names, factors):
            return pre
        return None

    def _faith_forward(self, F, save):
        """F: name -> factor. Returns (I,) and stores the residuals A @ B - W*."""
        total = 0.0
        pre = save.get("pre")
        for n in self.params:
            if pre is not None:
                diff = pre.diff[n].copy()
            else:
                diff = np.matmul(F[f"{n}.A"], F[f"{n}.B"])
                diff -= self.W_target[n]
            save[f"diff:{n}"] = diff
            total = total + self.uses[n] * np.sum(diff * diff, axis=(-2, -1))
        return total / self.N

    def _grads_with_faithfulness(self, F, save, g, defer=()) -> dict:
        """Fresh gradient arrays of every factor, holding the faithfulness term's (zeros without it).
        For the A factors named in `defer`, the GEMM G B^T is left to the caller: save["faith_G"]
        holds the scaled residual G (absent without the term) and grads has no entry."""
        grads: dict = {}
        if "faithfulness" in self.terms:
            self._faith_backward(F, save, g["faithfulness"], grads, defer)
        else:
            for n in self.factor_names:
                if n not in defer:
                    grads[n] = np.zeros_like(F[n])
        return grads

    def _faith_backward(self, F, save, g_pm, grads, defer=()):
        """g_pm (I,): upstream gradient of the faithfulness term. Initialises grads[*]."""
        pre = save.get("pre")
        for n in self.params:
            G = save.pop(f"diff:{n}")
            scale = (2.0 * self.uses[n] / self.N) * g_pm[:, None, None].astype(G.dtype)
            G *= scale
            A, B = F[f"{n}.A"], F[f"{n}.B"]
            for ab in ("A", "B"):
                if f"{n}.{ab}" in defer:
                    save.setdefault("faith_G", {})[f"{n}.{ab}"] = G
            # A^T G and G B^T; the residual MLP precompute already has one of them, unscaled
            # (shared GEMMs with the attribution's W_E A_in and B_out W_U)
            if pre is not None and n in pre.AtD:
                if f"{n}.A" not in defer:
                    grads[f"{n}.A"] = np.matmul(G, np.swapaxes(B, -1, -2))
                grads[f"{n}.B"] = np.ascontiguousarray(pre.AtD[n] * scale)
            elif pre is not None and n in pre.DBt:
                grads[f"{n}.A"] = np.ascontiguousarray(pre.DBt[n] * scale)
                if f"{n}.B" not in defer:
                    grads[f"{n}.B"] = np.matmul(np.swapaxes(A, -1, -2), G)
            else:
                if f"{n}.A" not in defer:
                    grads[f"{n}.A"] = np.matmul(G, np.swapaxes(B, -1, -2))
                if f"{n}.B" not in defer:
                    grads[f"{n}.B"] = np.matmul(np.swapaxes(A, -1, -2), G)

    sq_hints: dict = {}  # {factor name: (array, squared norms)} known for these factors (LossProblem)

    def _sq(self, F, name, compute):
        """Squared column (A) / row (B) norms of factor `name`: the hint if it is for this very array."""
        hint = self.sq_hints.get(name)
        if hint is not None and hint[0] is F[name]:
            return hint[1]
        return compute(F[name])

    def _schatten_forward(self, F, n_active, B, save):
        """Closed form of apd.schatten_loss for a 0/1 mask: n_active (I, C) = #samples per component."""
        half, eps_term = _schatten_setup(self.L.simplicity_p)
        I = n_active.shape[0]
        C, m = self.C, self.m
        per_c = 0.0
        n_uses = 0
        for n in self.params:
            a2 = self._sq(F, f"{n}.A", col_sq_norms)  # (I, Cm)
            b2 = self._sq(F, f"{n}.B", row_sq_norms)  # (I, Cm)
            S = a2 * b2
            save[f"a2:{n}"], save[f"b2:{n}"], save[f"S:{n}"] = a2, b2, S
            per_c = per_c + self.uses[n] * np.sum(((S + SCHATTEN_EPS) ** half).reshape(I, C, m), axis=2)
            n_uses += self.uses[n]
        off = (B - n_active) * (n_uses * m * eps_term)
        return np.sum(n_active * per_c + off, axis=1) / (self.N * B)

    def _schatten_backward(self, F, n_active, B, save, g_s, grads, defer=()):
        """Adds the Schatten gradient 2 w b2 A (per column) / 2 w a2 B (per row); for factor
        names in `defer` the scale vectors are left in save["schatten_u"] for the caller to apply
        in a pass it makes over that gradient anyway."""
        half, _ = _schatten_setup(self.L.simplicity_p)
        deferred = save.setdefault("schatten_u", {})
        m = self.m
        coef = (g_s[:, None] * n_active / (self.N * B)).astype(self.dtype)  # (I, C)
        coef = np.repeat(coef, m, axis=1)  # (I, Cm)
        for n in self.params:
            a2, b2, S = save.pop(f"a2:{n}"), save.pop(f"b2:{n}"), save.pop(f"S:{n}")
            w = coef * (self.uses[n] * half) * (S + SCHATTEN_EPS) ** (half - 1.0)  # dL/dS
            A, Bf = F[f"{n}.A"], F[f"{n}.B"]
            if f"{n}.A" in defer:
                save.setdefault("schatten_a2", {})[n] = a2  # ||A column||^2, for the unit-norm projection
            for ab, X, u, axis in (("A", A, 2.0 * w * b2, 1), ("B", Bf, 2.0 * w * a2, 2)):
                if f"{n}.{ab}" in defer:
                    deferred[f"{n}.{ab}"] = u
                else:
                    add_scaled(grads[f"{n}.{ab}"], X, u, axis=axis)


# ------------------------------------------------------------------------------------------
# Dispatch: the kind's kernels (kinds.APD_KINDS)


def applies(arch, losses, topk) -> bool:
    """The fused kernels cover top-k runs (constant 0/1 mask) whose loss has none of the UNFUSED
    terms, of kinds that registered kernels."""
    return (hooks(arch).fused is not None and topk is not None
            and all(getattr(losses, t) is None for t in UNFUSED))


def path_name(arch) -> str:
    return hooks(arch).path


def build(arch, target, C, m, losses, x, tgt, mask, dtype, B_total=None, variant=None, pre=None):
    """The fused loss of one batch (x, target trace tgt, boolean mask (I, R, C)). `B_total`: the
    batch size to normalise by when x holds only the nonzero rows of a larger batch. `variant`:
    a kernel variant the kind offers (TMS: "dense" / "sparse")."""
    return hooks(arch).fused(arch, target, C, m, losses, x, tgt, mask, dtype, B_total, variant, pre)


# ------------------------------------------------------------------------------------------
# Compaction to the rows with a nonzero input


def zero_rows_inert(arch) -> bool:
    """True if an all-zero input row has zero attributions and contributes exactly zero to every
    fused loss term whatever the mask (the kind's model says: models.Model.zero_input_inert)."""
    return model_of(arch).zero_input_inert(arch)


def compact_rows(x: np.ndarray):
    """x (I, B, n) -> (x_c (I, R, n), R): per replicate its rows with a nonzero entry first (in
    order), padded with all-zero rows to the largest count R (>= 1)."""
    I, B, n = x.shape
    nz = nonzero_rows(x)
    flat = np.flatnonzero(nz)  # replicate-major, rows ascending
    if flat.size == 0:
        return np.zeros_like(x[:, :1]), 1
    ii = flat // B
    counts = np.bincount(ii, minlength=I)
    R = int(counts.max())
    if R == B:
        return x, B
    rows = x.reshape(I * B, n)
    # every slot gathers a source row: the replicate's nonzero rows, then an all-zero row
    zero_row = int(np.flatnonzero(~nz.reshape(-1))[0])
    src = np.full(I * R, zero_row, dtype=np.intp)
    src[ii * R + (np.arange(flat.size) - (np.cumsum(counts) - counts)[ii])] = flat
    return np.take(rows, src, axis=0).reshape(I, R, n), R


def compact_batch_topk(attr: np.ndarray, k: int) -> np.ndarray | None:
    """Batch top-k on the attributions of compacted rows, or None when the choice would involve
    ties at zero (fewer than k positive entries in some replicate): then the rows left out could be
    chosen too, and the caller uses the full batch. With k positive winners the mask equals the
    full batch's (the rows left out have exactly zero attributions)."""
    I, R, C = attr.shape
    if k > R * C:
        return None
    mask = np.zeros((I, R * C), dtype=bool)
    if k <= 0:
        return mask.reshape(I, R, C)
    flat = attr.reshape(I, R * C)
    # the k-th largest value per replicate (np.partition on values is ~2x faster than argpartition)
    kth = np.partition(flat, R * C - k, axis=1)[:, R * C - k]
    if not np.all(kth > 0):
        return None
    np.greater_equal(flat, kth[:, None], out=mask)
    if np.any(np.count_nonzero(mask, axis=1) != k):  # ties at the threshold: pick exactly k
        mask[:] = False
        idx = np.argpartition(-flat, k - 1, axis=1)[:, :k]
        np.put_along_axis(mask, idx, True, axis=1)
    return mask.reshape(I, R, C)