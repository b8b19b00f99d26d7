"""Masked rank-m bottleneck products of one replicate: dense or grouped by component, whichever is cheaper.

A masked APD layer with factors first (d_in, C m) and second (C m, d_out) and a 0/1 top-k mask s
(R, C) maps its input rows X (R, d_in) to

    u = (X first) * s_m        (R, C m), s_m: s repeated over each component's m columns
    out = u second             (R, d_out)

Batch top-k switches on only K ~ topk x R of the R x C (sample, component) pairs, so u is kept in
pair form: `up` (K, m), the bottleneck of each active pair (b, c), pairs sorted by component
(`Pairs`). Each product of the pass and of its backward is evaluated

* **grouped**: per component with active samples, one GEMM over its active rows only
  (2 K m d FLOPs in all, but one NumPy call per component, each reading the component's
  (m, d) block of the factor), or
* **dense**: the pairs scattered into an (R, C m) array with zeros elsewhere, then one GEMM over
  all rows and columns (2 R C m d FLOPs, one call).

`Grouped` picks per product with a cost model (`dense_is_cheaper`, fitted to timings of both
forms): for the residual MLP (R ~ 160 rows, K ~ 330 pairs, ~120 active components of m = 25-50)
the dense form does 50-150x the work and is 3-7x slower even for its d_mlp-wide factors; with
rank-1 components (m = 1) one GEMM beats a hundred small calls. Both forms give the same values
up to float rounding (summation order).
"""
from __future__ import annotations

import numpy as np

# cost model (seconds), fitted to per-product timings on the benchmark machine (benchmarks/RESULTS.md):
# throughput of a dense masked GEMM and the rate it streams its factor; per-call cost of a small
# grouped GEMM, the rate it streams its component's (m, d) block, and gathering/scattering rows
DENSE_FLOPS_PER_S = 1.2e11
DENSE_BYTES_PER_S = 2e10
CALL_S = 1.5e-6
BLOCK_BYTES_PER_S = 1.3e10
GATHER_BYTES_PER_S = 5e9


class Pairs:
    """The active pairs of one replicate's (B, C) boolean mask, sorted by component.

    `b` (K,) sample of each pair, `c` its component; `groups` [(c, start, end)] the slice of pairs
    of component c (only components with active samples); `levels` a scatter plan: pairs split
    by their occurrence rank within their sample, so that each level's samples are distinct and
    `out[b_j] += v[idx_j]` is a plain (unbuffered-safe) fancy-index add."""

    def __init__(self, mask: np.ndarray):
        B, C = mask.shape
        cs, bs = np.nonzero(mask.T)  # component-major
        self.B, self.C, self.K = B, C, bs.size
        self.b, self.c = bs, cs
        counts = np.bincount(cs, minlength=C)
        ends = np.cumsum(counts)
        starts = ends - counts
        self.counts = counts
        self.groups = [(int(c), int(starts[c]), int(ends[c])) for c in np.flatnonzero(counts)]
        self.group_starts = starts[counts > 0]
        order = np.argsort(bs, kind="stable")
        sb = bs[order]
        if self.K:
            first = np.flatnonzero(np.r_[True, sb[1:] != sb[:-1]])
            rank = np.arange(self.K) - np.repeat(first, np.diff(np.r_[first, self.K]))
            self.levels = [(sb[rank == j], order[rank == j]) for j in range(int(rank.max()) + 1)]
        else:
            self.levels = []

    def bottleneck(self, X: np.ndarray, first: np.ndarray, second: np.ndarray, m: int, dtype,
                   inner: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The masked rank-m pass of every pair k = (b, c): inner_k = X_k first_c and
        out_k = inner_k second_c, where first_c / second_c are component c's column / row block of
        the flat factors. X holds the pairs' input rows (K, d_in); a given `inner` skips its GEMM.
        Returns (inner (K, m), out (K, d_out)), per pair (see `scatter`)."""
        out = np.empty((self.K, second.shape[-1]), dtype=dtype)
        given = inner is not None
        if not given:
            inner = np.empty((self.K, m), dtype=dtype)
        for c, s, e in self.groups:
            sl = slice(c * m, (c + 1) * m)
            if not given:
                np.matmul(X[s:e], first[:, sl], out=inner[s:e])
            np.matmul(inner[s:e], second[sl], out=out[s:e])
        return inner, out

    def scatter(self, vals: np.ndarray, width: int, dtype) -> np.ndarray:
        """(K, width) per-pair rows -> (B, width) sums over each sample's pairs."""
        out = np.zeros((self.B, width), dtype=dtype)
        for j, (b, idx) in enumerate(self.levels):
            if j == 0:
                out[b] = vals[idx]
            else:
                out[b] += vals[idx]
        return out


class Grouped:
    """The products of masked layers sharing one (R, C) mask, dense or grouped by component.

    Conventions: `up` and `gp` are per-pair (K, m) arrays (bottleneck values and their
    gradients, pairs in `pairs` order); X (R, d_in) are the layer's input rows; g_out (R, d_out)
    the gradient at its output."""

    def __init__(self, mask: np.ndarray, m: int, dtype):
        self.pairs = Pairs(mask)
        self.R, self.C = mask.shape
        self.m = m
        self.Cm = self.C * m
        self.dtype = np.dtype(dtype)
        self.inactive = self.pairs.counts == 0

    # -- the cost model -------------------------------------------------------------------------

    def dense_is_cheaper(self, d: int) -> bool:
        """Is a dense product with a d-wide factor cheaper than the grouped one?"""
        n, w = len(self.pairs.groups), self.dtype.itemsize
        dense = (2.0 * self.R * self.Cm * d / DENSE_FLOPS_PER_S
                 + (self.Cm * d + self.R * self.Cm) * w / DENSE_BYTES_PER_S)  # the factor, the (R, C m) array
        grouped = n * CALL_S + n * self.m * d * w / BLOCK_BYTES_PER_S + self.pairs.K * d * w / GATHER_BYTES_PER_S
        return dense <= grouped

    # -- pair form <-> dense ------------------------------------------------------------------

    def at_pairs(self, a: np.ndarray) -> np.ndarray:
        """(R, C m) -> (K, m): the entries of the active pairs, component-major."""
        P = self.pairs
        return a.reshape(self.R, self.C, self.m)[P.b, P.c]

    def dense(self, vals: np.ndarray) -> np.ndarray:
        """(K, m) per-pair values -> (R, C m), zero at inactive pairs."""
        P = self.pairs
        out = np.zeros((self.R, self.C, self.m), dtype=self.dtype)
        out[P.b, P.c] = vals
        return out.reshape(self.R, self.Cm)

    def _slices(self):
        m = self.m
        for c, s, e in self.pairs.groups:
            yield slice(c * m, (c + 1) * m), s, e

    # -- forward ------------------------------------------------------------------------------

    def first(self, X: np.ndarray, first: np.ndarray, inner: np.ndarray | None = None) -> np.ndarray:
        """up (K, m): X first at the active pairs; `inner` = X first (R, C m) if already known."""
        if inner is not None:
            return self.at_pairs(inner)
        if self.dense_is_cheaper(first.shape[0]):
            return self.at_pairs(np.matmul(X, first))
        Xp = X[self.pairs.b]
        up = np.empty((self.pairs.K, self.m), dtype=self.dtype)
        for sl, s, e in self._slices():
            np.matmul(Xp[s:e], first[:, sl], out=up[s:e])
        return up

    def second(self, up: np.ndarray, second: np.ndarray) -> np.ndarray:
        """u second (R, d_out)."""
        d = second.shape[-1]
        if self.dense_is_cheaper(d):
            return np.matmul(self.dense(up), second)
        vals = np.empty((self.pairs.K, d), dtype=self.dtype)
        for sl, s, e in self._slices():
            np.matmul(up[s:e], second[sl], out=vals[s:e])
        return self.pairs.scatter(vals, d, self.dtype)

    # -- backward -----------------------------------------------------------------------------

    def grad_u(self, g_out: np.ndarray, second: np.ndarray) -> np.ndarray:
        """gp (K, m): d/du of <g_out, u second> at the active pairs (g_out second^T there)."""
        d = second.shape[-1]
        if self.dense_is_cheaper(d):
            return self.at_pairs(np.matmul(g_out, np.swapaxes(second, -1, -2)))
        Gp = g_out[self.pairs.b]
        gp = np.empty((self.pairs.K, self.m), dtype=self.dtype)
        for sl, s, e in self._slices():
            np.matmul(Gp[s:e], second[sl].T, out=gp[s:e])
        return gp

    def grad_second(self, up: np.ndarray, g_out: np.ndarray, out: np.ndarray | None = None,
                    add: bool = False) -> np.ndarray:
        """u^T g_out (C m, d_out): the second factor's gradient (rows of inactive components zero);
        with `add`, added into `out` instead (per component: only active rows are touched)."""
        d = g_out.shape[-1]
        if out is None:
            out = np.zeros((self.Cm, d), dtype=self.dtype) if add else np.empty((self.Cm, d), dtype=self.dtype)
        if self.dense_is_cheaper(d):
            if add:
                out += np.matmul(self.dense(up).T, g_out)
                return out
            return np.matmul(self.dense(up).T, g_out, out=out)
        Gp = g_out[self.pairs.b]
        for sl, s, e in self._slices():
            if e - s == 1:  # one active sample: an outer product (OpenBLAS's GEMM is ~3x slower at K = 1)
                if add:
                    out[sl] += up[s:e].T * Gp[s]
                else:
                    np.multiply(up[s:e].T, Gp[s], out=out[sl])
            elif add:
                out[sl] += np.matmul(up[s:e].T, Gp[s:e])
            else:
                np.matmul(up[s:e].T, Gp[s:e], out=out[sl])
        if not add:
            out.reshape(self.C, self.m, d)[self.inactive] = 0.0
        return out

    def grad_first(self, X: np.ndarray, gp: np.ndarray, out: np.ndarray | None = None,
                   add: bool = False) -> np.ndarray:
        """X^T g_u (d_in, C m): the first factor's gradient (columns of inactive components zero);
        with `add`, added into `out` instead."""
        d = X.shape[-1]
        if out is None:
            out = np.zeros((d, self.Cm), dtype=self.dtype) if add else np.empty((d, self.Cm), dtype=self.dtype)
        if self.dense_is_cheaper(d):
            if add:
                out += np.matmul(X.T, self.dense(gp))
                return out
            return np.matmul(X.T, self.dense(gp), out=out)
        Xp = X[self.pairs.b]
        for sl, s, e in self._slices():
            if e - s == 1:  # an outer product
                if add:
                    out[:, sl] += Xp[s:e].T * gp[s]
                else:
                    np.multiply(Xp[s:e].T, gp[s], out=out[:, sl])
            elif add:
                out[:, sl] += np.matmul(Xp[s:e].T, gp[s:e])
            else:
                np.matmul(Xp[s:e].T, gp[s:e], out=out[:, sl])
        if not add:
            out.reshape(d, self.C, self.m)[:, self.inactive] = 0.0
        return out

    def grad_input(self, gp: np.ndarray, first: np.ndarray) -> np.ndarray:
        """g_u first^T (R, d_in): the gradient at the layer's input rows."""
        d = first.shape[0]
        if self.dense_is_cheaper(d):
            return np.matmul(self.dense(gp), first.T)
        vals = np.empty((self.pairs.K, d), dtype=self.dtype)
        for sl, s, e in self._slices():
            np.matmul(gp[s:e], first[:, sl].T, out=vals[s:e])
        return self.pairs.scatter(vals, d, self.dtype)

    def col_dots(self, up: np.ndarray, gp: np.ndarray) -> np.ndarray:
        """(C m,) <X^T g_u, first> per column of `first` without forming X^T g_u: the sum over the
        component's active pairs of u * g_u (u = X first there)."""
        out = np.zeros((self.C, self.m), dtype=self.dtype)
        if self.pairs.K:
            prod = up * gp
            out[[c for c, _, _ in self.pairs.groups]] = np.add.reduceat(prod, self.pairs.group_starts, axis=0)
        return out.reshape(self.Cm)


class GroupedRows:
    """A block part of a `kernels.GradParts`: a second factor's masked-pass gradient u^T g_out
    (`Grouped.grad_second`) for every replicate, computed a row block at a time inside FastAdam's
    pass (never as a full-size array). Blocks must hold whole components (rows a multiple of m);
    per replicate the product is per component or dense, as `Grouped.grad_second` would choose."""

    def __init__(self, per_replicate: list, shape, dtype):
        """per_replicate: [(Grouped, up (K, m), g_out (R, d))] for replicates 0..I-1."""
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.reps = []
        for G, up, g_out in per_replicate:
            d = g_out.shape[-1]
            if G.dense_is_cheaper(d):
                self.reps.append((G, None, G.dense(up), g_out))
            else:
                comps = np.array([c for c, _, _ in G.pairs.groups], dtype=np.intp)
                self.reps.append((G, comps, up, g_out[G.pairs.b]))

    def block_into(self, i: int, r0: int, r1: int, out, add: bool, tmp) -> None:
        G, comps, up, Gp = self.reps[i]
        m = G.m
        if comps is None:  # dense: rows r0:r1 of u^T g_out
            if add:
                np.matmul(up[:, r0:r1].T, Gp, out=tmp)
                out += tmp
            else:
                np.matmul(up[:, r0:r1].T, Gp, out=out)
            return
        if r0 % m or (r1 % m and r1 != self.shape[1]):
            raise ValueError(f"GroupedRows: rows {r0}:{r1} split a component (m = {m})")
        if not add:
            out[...] = 0.0
        lo, hi = np.searchsorted(comps, [r0 // m, -(-r1 // m)])
        for j in range(lo, hi):
            c, s, e = G.pairs.groups[j]
            rows = slice(c * m - r0, (c + 1) * m - r0)
            if e - s == 1:  # an outer product (OpenBLAS's GEMM is ~3x slower at K = 1)
                out[rows] += up[s:e].T * Gp[s]
            else:
                out[rows] += np.matmul(up[s:e].T, Gp[s:e])

    def replicate_sums(self) -> np.ndarray:
        """sum of u^T g_out = sum over pairs of (sum of u's row) (sum of g_out's row)."""
        out = np.zeros(len(self.reps))
        for i, (_, _, up, Gp) in enumerate(self.reps):  # dense: u (R, C m), g_out (R, d); else per pair
            out[i] = np.sum(np.sum(up, axis=1, dtype=np.float64) * np.sum(Gp, axis=1, dtype=np.float64))
        return out
