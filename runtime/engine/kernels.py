"""Memory-lean NumPy kernels and process settings for the training loop (no autograd).

* `FastAdam` is `optim.Adam(folded=True)` with the same arithmetic, element by element and in the
  same order (so results are bitwise identical), evaluated in place over cache-sized chunks: the
  plain version allocates ~6 full-size temporaries per parameter per step, which for the residual
  MLP's 13.65 M float32 parameters cost more page faults and memory traffic than the forward pass
  (66-137 ms -> 25 ms per step). It takes gradients as `GradParts` (a sum of arrays plus the
  factor scaled per column or row), summing them chunk by chunk instead of in full-size passes.
* `col_sq_norms`, `row_sq_norms`, `add_scaled`: column/row norms and scaled accumulations without
  full-size temporaries (Schatten term, unit-norm projection).
* `tune_malloc`: keep freed NumPy buffers in the heap (glibc mallopt) instead of page-faulting
  fresh memory every step.
* `blas_info`, `set_blas_threads`, `default_blas_threads`: OpenBLAS's thread count through its C
  API (ctypes; no threadpoolctl), and the runtime's default of 1 thread.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from .optim import Adam, adam_update, folded_constants

CHUNK = 1 << 16  # elements per chunk: the chunk's parameter, moments, gradient and 2 temporaries (256 KiB each
# in float32) stay in a 2 MiB L2 cache (measured best of 2^15..2^17 on the benchmark machine)


class FastAdam(Adam):
    """`optim.Adam(folded=True)` evaluated in place over cache-sized chunks (same constructor, same
    state, bitwise-equal updates). Gradients may be arrays or `GradParts`."""

    def __init__(self, params, cfg, row_align: dict | None = None):
        super().__init__(params, cfg, folded=True)
        self._buf: dict = {}
        # rows per block of a parameter's row-block pass are a multiple of row_align[name] (the
        # rank m for a second factor (C m, d): a block then holds whole components)
        self.row_align = dict(row_align or {})

    def block_rows(self, name: str, shape) -> int:
        """Rows per block of parameter `name`'s row-block pass (`blocked_sq_norms` must use them)."""
        return norm_block_rows(shape, self.row_align.get(name, 1))

    def _buffers(self, dtype, n):
        key = np.dtype(dtype)
        bufs = self._buf.get(key)
        if bufs is None or bufs[0].size < n:
            bufs = tuple(np.empty(n, dtype=key) for _ in range(3))
            self._buf[key] = bufs
        return bufs

    def _step_plain(self, p, g, m, v, lr, bc1, bc2) -> None:
        """optim.Adam's arithmetic on whole arrays (for non-contiguous parameters)."""
        adam_update(self.cfg, p, g, m, v, lr, bc1, bc2, folded=True)

    def step(self, params, grads, lr: float, sq_norms: dict | None = None) -> dict:
        """One update; a gradient may be an array or a `GradParts` (summed chunk by chunk here).
        `sq_norms` {name: axis}: also return, for those parameters, the squared norms of the
        updated values per column (axis 1) or row (axis 2), summed in the pass that writes them
        (the same blocks and order as `blocked_sq_norms`, hence the same bits)."""
        c = self.cfg
        self.t += 1
        bc1 = 1.0 - c.beta1 ** self.t
        bc2 = 1.0 - c.beta2 ** self.t
        sq_norms = sq_norms or {}
        out = {}
        with np.errstate(over="ignore", invalid="ignore"):  # the trainer checks the moments (decompose.py)
            for k, p in params.items():
                out[k] = self._step_one(p, grads[k], self.m[k], self.v[k], lr, bc1, bc2, sq_norms.get(k),
                                        self.block_rows(k, p.shape) if p.ndim == 3 else None)
        return {k: v for k, v in out.items() if v is not None}

    def _step_one(self, p, g, m, v, lr, bc1, bc2, axis=None, rows=None):
        contiguous = p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous
        if axis is not None and contiguous and p.ndim == 3 and not isinstance(g, GradParts):
            g = GradParts([np.ascontiguousarray(g, dtype=p.dtype)])  # row blocks, for the norms
        if isinstance(g, GradParts):
            if contiguous and g.chunkable(p, rows):
                return self._step_parts(p, g, m, v, lr, bc1, bc2, axis, rows)
            g = g.materialise()
        if not contiguous:
            self._step_plain(p, g, m, v, lr, bc1, bc2)
            return None if axis is None else blocked_sq_norms(p, axis, rows)
        pf, mf, vf = p.reshape(-1), m.reshape(-1), v.reshape(-1)
        gf = np.ascontiguousarray(g, dtype=p.dtype).reshape(-1)
        n = pf.size
        bufs = self._buffers(p.dtype, min(n, CHUNK))
        for s in range(0, n, CHUNK):
            e = min(s + CHUNK, n)
            self._chunk(pf[s:e], gf[s:e], mf[s:e], vf[s:e], bufs, e - s, lr, bc1, bc2)
        return None if axis is None else blocked_sq_norms(p, axis, rows)

    def _step_parts(self, p, g: "GradParts", m, v, lr, bc1, bc2, axis=None, rows=None):
        """Row blocks of an (I, d0, d1) parameter: the gradient's parts are summed (and the scaled
        factor added) in cache, in the order `GradParts.materialise` uses (bitwise the same)."""
        I, d0, d1 = p.shape
        rows = rows or norm_block_rows(p.shape)
        n = min(rows, d0) * d1
        bufs = self._buffers(p.dtype, n)
        gsum = self._gbuf(p.dtype, n)
        acc = None if axis is None else np.zeros((I, d1 if axis == 1 else d0), dtype=p.dtype)
        for i in range(I):
            for r0 in range(0, d0, rows):
                r1 = min(r0 + rows, d0)
                L = (r1 - r0) * d1
                pc = p[i, r0:r1]
                gc = g.block(i, r0, r1, gsum[:L].reshape(r1 - r0, d1), pc, bufs[1][:L].reshape(r1 - r0, d1))
                self._chunk(pc.reshape(-1), gc.reshape(-1), m[i, r0:r1].reshape(-1), v[i, r0:r1].reshape(-1), bufs,
                            L, lr, bc1, bc2)
                if acc is not None:
                    _block_sq_norms(pc, axis, acc[i], r0, r1)
        return acc

    def _gbuf(self, dtype, n):
        key = ("g", np.dtype(dtype))
        buf = self._buf.get(key)
        if buf is None or buf.size < n:
            buf = self._buf[key] = np.empty(n, dtype=dtype)
        return buf[:n]

    def _chunk(self, pc, gc, mc, vc, bufs, L, lr, bc1, bc2) -> None:
        """`optim.adam_update(folded=True)` on one chunk (1-D views), in place, in its operation
        order. Uses bufs[0] and bufs[1]."""
        c = self.cfg
        a, b = bufs[0][:L], bufs[1][:L]
        if c.weight_decay and c.name == "adamw":
            pc *= 1.0 - lr * c.weight_decay
        elif c.weight_decay:
            np.multiply(c.weight_decay, pc, out=a)
            np.add(gc, a, out=a)
            gc = a
        step, eps = folded_constants(c, lr, bc1, bc2)
        mc *= c.beta1
        np.multiply(1.0 - c.beta1, gc, out=b)
        mc += b
        vc *= c.beta2
        np.multiply(gc, gc, out=b)
        np.multiply(1.0 - c.beta2, b, out=b)
        vc += b
        np.sqrt(vc, out=b)
        b += eps
        np.divide(mc, b, out=b)
        np.multiply(step, b, out=b)
        pc -= b


def norm_block_rows(shape, align: int = 1) -> int:
    """Rows per block of an (I, d0, d1) array in FastAdam's row-block pass and `blocked_sq_norms`:
    ~CHUNK elements, a multiple of `align`."""
    return max(align, (CHUNK // max(shape[-1], 1)) // align * align)


# row-wise dot products: np.vecdot (NumPy >= 2; twice einsum's speed on (50, 1000) blocks), else einsum
_row_dots = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("rd,rd->r", a, b))


def _block_sq_norms(block: np.ndarray, axis: int, acc: np.ndarray, r0: int, r1: int) -> None:
    """Accumulate rows r0:r1 (block, (r1 - r0, d1)) into acc: per column (axis 1, acc (d1,)) or
    per row (axis 2, acc (d0,))."""
    if axis == 1:
        acc += np.einsum("rn,rn->n", block, block)
    else:
        acc[r0:r1] = _row_dots(block, block)


def blocked_sq_norms(p: np.ndarray, axis: int, rows: int | None = None) -> np.ndarray:
    """(I, n) squared norms of an (I, d0, d1) array's columns (axis 1) or rows (axis 2), summed in
    row blocks of `rows` (FastAdam.block_rows: then the result is bitwise what
    `FastAdam.step(sq_norms=...)` returns for the same values)."""
    I, d0, d1 = p.shape
    rows = rows or norm_block_rows(p.shape)
    acc = np.zeros((I, d1 if axis == 1 else d0), dtype=p.dtype)
    for i in range(I):
        for r0 in range(0, d0, rows):
            r1 = min(r0 + rows, d0)
            _block_sq_norms(p[i, r0:r1], axis, acc[i], r0, r1)
    return acc


def normalise_columns_blocked(A: np.ndarray, col_sq: np.ndarray) -> np.ndarray:
    """A /= sqrt(col_sq) per column, in place, in row blocks; returns the new squared column norms
    (summed in the same pass, as `blocked_sq_norms` would)."""
    I, d0, d1 = A.shape
    rows = norm_block_rows(A.shape)
    norms = np.sqrt(col_sq)
    acc = np.zeros((I, d1), dtype=A.dtype)
    for i in range(I):
        for r0 in range(0, d0, rows):
            r1 = min(r0 + rows, d0)
            blk = A[i, r0:r1]
            blk /= norms[i]
            _block_sq_norms(blk, 1, acc[i], r0, r1)
    return acc


class GradParts:
    """A gradient kept as a sum that is never formed in full during training:
        g = parts[0] + parts[1] + ... + X * w
    with the parts (I, d0, d1) arrays or block parts (`RowsProduct`, computed a row block at a
    time), and w (I, d1) scaling X's columns (axis 1) or w (I, d0) its rows (axis 2); X is the
    factor itself (the Schatten gradient and the unit-norm projection are of that form).
    `FastAdam` sums it a row block at a time in cache, and the unit-norm projection
    (`decompose.project_gradients`) only changes w, using `col_dots` = <sum of parts, X> per column
    and `x_sq` = ||X column||^2 when the producer has them (else computed here). Row blocks are
    multiples of `row_align` rows (block parts may need whole components); `materialise()` forms
    the array block by block with the same operations as FastAdam (the same bits)."""

    def __init__(self, parts, X=None, w=None, axis: int = 1, col_dots=None, x_sq=None, row_align: int = 1):
        self.parts = tuple(parts)
        self.X, self.w, self.axis = X, w, axis
        self.col_dots, self.x_sq = col_dots, x_sq
        self.row_align = row_align
        self.shape, self.dtype = tuple(self.parts[0].shape), np.dtype(self.parts[0].dtype)

    def chunkable(self, p, rows: int | None = None) -> bool:
        return (p.ndim == 3 and tuple(p.shape) == self.shape and p.dtype == self.dtype
                and all(not isinstance(q, np.ndarray) or q.flags.c_contiguous for q in self.parts)
                and (self.X is None or self.X is p) and (rows is None or rows % self.row_align == 0))

    def block(self, i: int, r0: int, r1: int, out, X, tmp):
        """Rows r0:r1 of replicate i's gradient into `out` (X: the factor's rows; tmp: scratch of
        out's shape). Returns out, or a view of the only part."""
        parts = self.parts
        w = None if self.w is None else (self.w[i] if self.axis == 1 else self.w[i, r0:r1, None])
        first = parts[0]
        if isinstance(first, np.ndarray):
            if len(parts) == 1 and w is None:
                return first[i, r0:r1]
            if len(parts) == 1:  # X * w + part: two passes (a sum of two terms: the same bits as part + X * w)
                np.multiply(X, w, out=out)
                out += first[i, r0:r1]
                return out
            np.copyto(out, first[i, r0:r1])
        else:
            first.block_into(i, r0, r1, out, False, tmp)
        for q in parts[1:]:
            if isinstance(q, np.ndarray):
                out += q[i, r0:r1]
            else:
                q.block_into(i, r0, r1, out, True, tmp)
        if w is not None:
            np.multiply(X, w, out=tmp)
            out += tmp
        return out

    def materialise(self, rows: int | None = None) -> np.ndarray:
        I, d0, d1 = self.shape
        rows = rows or norm_block_rows(self.shape, self.row_align)
        out = np.empty(self.shape, dtype=self.dtype)
        tmp = np.empty((min(rows, d0), d1), dtype=self.dtype)
        X = self.X if self.X is not None else np.zeros(self.shape, dtype=self.dtype)
        for i in range(I):
            for r0 in range(0, d0, rows):
                r1 = min(r0 + rows, d0)
                blk = self.block(i, r0, r1, out[i, r0:r1], X[i, r0:r1], tmp[: r1 - r0])
                if blk is not out[i, r0:r1] and not np.shares_memory(blk, out[i, r0:r1]):
                    out[i, r0:r1] = blk
        return out

    def __array__(self, dtype=None, copy=None):
        out = self.materialise()
        return out if dtype is None else out.astype(dtype)

    def replicate_sums(self) -> np.ndarray:
        """(I,) float64 sums of the gradient (NaN or inf if any entry is), without forming it."""
        total = 0.0
        for q in self.parts:
            total = total + (np.sum(q.reshape(q.shape[0], -1), axis=1, dtype=np.float64) if isinstance(q, np.ndarray)
                             else q.replicate_sums())
        if self.w is not None:
            xs = np.sum(self.X, axis=1 if self.axis == 1 else 2, dtype=np.float64)  # (I, n) sums along the scaled axis
            total = total + np.sum(xs * self.w, axis=1)
        return total

    def project_columns(self, X: np.ndarray) -> None:
        """In place: g <- g - <g, X> X per column of the factor X (the unit sphere's tangent
        space when X's columns have unit norm)."""
        if self.w is not None and (self.axis != 1 or self.X is not X):
            raise ValueError("GradParts.project_columns: the scaled term is not X's columns")
        self.X = X
        dots = self.col_dots
        if dots is None:
            dense = GradParts(self.parts, row_align=self.row_align).materialise() if any(
                not isinstance(q, np.ndarray) for q in self.parts) else None
            dots = (np.einsum("idn,idn->in", dense, X) if dense is not None
                    else sum(np.einsum("idn,idn->in", q, X) for q in self.parts))
        w = self.w
        if w is not None:
            x_sq = self.x_sq if self.x_sq is not None else col_sq_norms(X)
            dots = dots + w * x_sq
            self.w = w - dots
        else:
            self.w = -dots
        self.axis = 1
        self.col_dots = None


class RowsProduct:
    """A block part of a `GradParts`: L^T R per replicate (L (I, k, d0), R (I, k, d1)), i.e. a
    factor gradient that is a sum of k outer products (the faithfulness gradient A^T G of a second
    factor, or a dense masked-pass part u^T g_out), computed a row block at a time: in cache,
    never as a full-size array. L and R must not change before the optimiser has used it (pass a
    copy of a parameter: the optimiser may update it first)."""

    def __init__(self, L: np.ndarray, R: np.ndarray):
        self.L, self.R = L, R
        self.shape = (L.shape[0], L.shape[2], R.shape[2])
        self.dtype = np.result_type(L, R)

    def block_into(self, i: int, r0: int, r1: int, out, add: bool, tmp) -> None:
        if add:
            np.matmul(self.L[i][:, r0:r1].T, self.R[i], out=tmp)
            out += tmp
        else:
            np.matmul(self.L[i][:, r0:r1].T, self.R[i], out=out)

    def replicate_sums(self) -> np.ndarray:
        """sum of L^T R = sum_k (sum over d0 of L[k]) (sum over d1 of R[k])."""
        return np.sum(np.sum(self.L, axis=2, dtype=np.float64) * np.sum(self.R, axis=2, dtype=np.float64), axis=1)


# ------------------------------------------------------------------------------------------
# Reductions and scaled adds without full-size temporaries


def col_sq_norms(A: np.ndarray) -> np.ndarray:
    """(I, d, n) -> (I, n): sum over d of A^2 (no (I, d, n) temporary)."""
    return np.einsum("idn,idn->in", A, A)


def row_sq_norms(B: np.ndarray) -> np.ndarray:
    """(I, n, d) -> (I, n): sum over d of B^2."""
    return np.einsum("ind,ind->in", B, B)


ROWS = 1 << 15  # elements per block of add_scaled


def add_scaled(G: np.ndarray, A: np.ndarray, u: np.ndarray, axis: int) -> None:
    """G += A * u in place, u broadcast along `axis` (1: u is (I, n) per column of (I, d, n);
    2: u is (I, n) per row of (I, n, d)), in row blocks so the product stays in cache."""
    I, d0, d1 = A.shape
    uu = u[:, None, :] if axis == 1 else u[:, :, None]
    if A.size <= ROWS:  # small: one vectorised pass (the blocked loop is for cache-sized blocks)
        G += A * uu
        return
    step = max(1, ROWS // max(d1, 1))
    tmp = np.empty((min(step, d0), d1), dtype=np.result_type(A, u))
    for i in range(I):
        for s in range(0, d0, step):
            e = min(s + step, d0)
            t = tmp[: e - s]
            np.multiply(A[i, s:e], uu[i] if axis == 1 else uu[i, s:e], out=t)
            G[i, s:e] += t


# ------------------------------------------------------------------------------------------
# Allocator tuning (glibc)

_MALLOC_TUNED = False
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc(mmap_threshold: int = 256 << 20, trim_threshold: int = 512 << 20, top_pad: int = 64 << 20) -> bool:
    """Keep freed NumPy buffers in the process heap instead of returning them to the OS.

    glibc serves allocations above M_MMAP_THRESHOLD (128 KiB until its dynamic adjustment kicks
    in) with fresh mmap'd pages, which are returned to the kernel on free: a training step that
    allocates its ~1-30 MB temporaries anew every step then pays a page fault per 4 KiB touched
    (measured: gated network 27 -> 10 ms/step, TMS 5-2 4.6 -> 3.5 ms, residual MLP 218 -> 190 ms).
    Raising the mmap and trim thresholds makes freed buffers reusable. Process-wide, idempotent,
    a no-op where glibc's mallopt is unavailable; set APDSPEC_MALLOC_TUNING=0 to disable.
    Returns True if the thresholds were set."""
    global _MALLOC_TUNED
    import os

    if _MALLOC_TUNED:
        return True
    if os.environ.get("APDSPEC_MALLOC_TUNING", "1") == "0":
        return False
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = all(mallopt(ctypes.c_int(p), ctypes.c_int(v)) == 1
             for p, v in ((M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim_threshold), (M_TOP_PAD, top_pad)))
    _MALLOC_TUNED = ok
    return ok


# ------------------------------------------------------------------------------------------
# BLAS introspection (no threadpoolctl: OpenBLAS's C API through ctypes)


def _openblas():
    """The loaded OpenBLAS library and its symbol prefix/suffix, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and line.split()[-1].startswith("/")})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre, suf in (("scipy_", "64_"), ("", "64_"), ("", ""), ("scipy_", "")):
            if hasattr(lib, f"{pre}openblas_get_num_threads{suf}"):
                return lib, pre, suf
    return None


def blas_info() -> dict:
    """{"blas": config string, "blas_threads": int or None}."""
    ob = _openblas()
    if ob is None:
        env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        return {"blas": "unknown (not OpenBLAS)", "blas_threads": int(env) if env and env.isdigit() else None}
    lib, pre, suf = ob
    get_cfg = getattr(lib, f"{pre}openblas_get_config{suf}", None)
    cfg = "OpenBLAS"
    if get_cfg is not None:
        get_cfg.restype = ctypes.c_char_p
        cfg = get_cfg().decode()
    return {"blas": cfg, "blas_threads": int(getattr(lib, f"{pre}openblas_get_num_threads{suf}")())}


def set_blas_threads(n: int) -> bool:
    """Set OpenBLAS's thread count at run time; False if OpenBLAS is not found."""
    ob = _openblas()
    if ob is None:
        return False
    lib, pre, suf = ob
    fn = getattr(lib, f"{pre}openblas_set_num_threads{suf}", None)
    if fn is None:
        return False
    fn(ctypes.c_int(int(n)))
    return True


# ------------------------------------------------------------------------------------------
# BLAS threads

_THREADS_DEFAULTED = False
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_blas_threads(n: int = 1) -> bool:
    """Use `n` BLAS threads (default 1) unless the user chose a count through the environment.

    Measured on the 2-core machines this targets (benchmarks/RESULTS.md): one thread is as fast or
    faster for every paper shape, by far for small GEMMs (gated network: 9 ms/step with 1 thread,
    139 ms with 2), and 2 threads lose badly whenever another job uses the second core. The CLI
    pins 1 thread itself (`--threads`); this gives Python-API users (runtime.run, decompose) the
    same default. Only the first call in a process acts; returns True if it set the count."""
    global _THREADS_DEFAULTED
    import os

    if _THREADS_DEFAULTED:
        return False
    _THREADS_DEFAULTED = True
    if any(v in os.environ for v in THREAD_VARS):
        return False
    return set_blas_threads(n)
