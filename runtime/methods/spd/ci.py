"""SPD's causal-importance functions (SPD paper §2.3 and App. "Architecture of Causal Importance
Function MLPs", "Avoiding dead gradients with leaky hard sigmoids").

For subcomponent c of decomposed matrix l, with inner activation h = a . V_c (a scalar per sample):

    gamma_c(h) = sum_k W_out[c, k] act(W_in[c, k] h + b_in[c, k]) + b_out[c]      (d_gate = K units)
    g = sigma_H,lower(gamma_c(h))   the causal importance that sets the masks
    sigma_H,upper(gamma_c(h))       what the importance-minimality loss penalises

    sigma_H,lower(x) = leak x (x < 0), x (0 <= x <= 1), 1 (x > 1)
    sigma_H,upper(x) = 0 (x < 0), x (0 <= x <= 1), 1 + leak (x - 1) (x > 1)

Derivatives at the kinks: 1 at x = 0 and x = 1 for both (the value is continuous; the inner branch
is taken there), which is what `where(x < 0, ..., where(x > 1, ..., x))` differentiates to.

Two implementations of gamma, with the same values and gradients (tests/test_spd_ci.py):

* `ci_mlp_plain`: the definition in autograd.numpy, one (I, B, C, K) tensor per op. The reference.
* `ci_mlp` (`CIKernel`): an autograd primitive with a hand-written VJP. The (I, B, C, K) hidden
  layer is the whole cost of SPD on TMS 40-10 (C = 200, B = 4096, K = 16: 13 M units per matrix
  and replicate), and it is elementwise work, so the kernel processes one component at a time in a
  (K, B) block that stays in cache, with preallocated buffers and in-place ufuncs. Everything the
  backward pass needs reduces to contractions over the batch of two stored (C, K, B) arrays,

      G = act(z), P = act'(z),   z = W_in h + b_in,
      dW_out[c, k] = sum_b dg[b, c] G[c, k, b]
      db_in[c, k]  = W_out[c, k] sum_b dg[b, c] P[c, k, b]
      dW_in[c, k]  = W_out[c, k] sum_b dg[b, c] h[b, c] P[c, k, b]
      dh[b, c]     = dg[b, c] q[b, c],   q[b, c] = sum_k P[c, k, b] W_out[c, k] W_in[c, k] (= gamma_c'(h))

  all batched GEMVs (BLAS), so the backward pass does no elementwise work on (C, K, B) at all.
  The activation's value and derivative come from the fast blocks of runtime/engine/gelu.py (the
  exact GELU through Abramowitz & Stegun in float32, scipy's erf in float64; `gelu_tanh` the tanh
  approximation, an option).
"""
from __future__ import annotations

import math

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp, defvjp_argnums, primitive

from ...engine import draws
from ...engine.gelu import ACTIVATIONS, activation_fn, block_fn, gelu_block_exact, gelu_block_fast, gelu_tanh, \
    gelu_tanh_block  # noqa: F401  (the activations, public here too)

IMPORTANCE_EPS = 1e-12  # inside the p-th power of the importance loss (finite gradient at 0 for p < 1)

# ------------------------------------------------------------------------------------------
# Leaky hard sigmoids (primitives: one pass each way, and the kink convention stated above)


@primitive
def sigma_lower(x, leak: float):
    """sigma_H,lower: the causal importance g that sets the masks (may go slightly below 0)."""
    return np.minimum(np.where(x < 0, leak * x, x), 1.0).astype(x.dtype, copy=False)


@primitive
def sigma_upper(x, leak: float):
    """sigma_H,upper: what the importance-minimality loss penalises (never below 0)."""
    return np.where(x < 0, 0.0, np.where(x > 1, 1.0 + leak * (x - 1.0), x)).astype(x.dtype, copy=False)


def sigma_lower_grad(x, leak: float) -> np.ndarray:
    return np.where(x < 0, leak, np.where(x > 1, 0.0, 1.0)).astype(x.dtype, copy=False)


def sigma_upper_grad(x, leak: float) -> np.ndarray:
    return np.where(x < 0, 0.0, np.where(x > 1, leak, 1.0)).astype(x.dtype, copy=False)


defvjp(sigma_lower, lambda ans, x, leak: lambda g: g * sigma_lower_grad(x, leak))
defvjp(sigma_upper, lambda ans, x, leak: lambda g: g * sigma_upper_grad(x, leak))

def ci_mlp_plain(h, w_in, b_in, w_out, b_out, activation: str = "gelu"):
    """gamma of every subcomponent: h (I, B, C) -> (I, B, C). w_in, b_in, w_out (I, C, K), b_out (I, C).
    The definition, written with autograd.numpy on an (I, B, C, K) tensor."""
    act = activation_fn(activation)
    z = h[..., None] * w_in[:, None] + b_in[:, None]
    return anp.sum(act(z) * w_out[:, None], axis=-1) + b_out[:, None]


# ------------------------------------------------------------------------------------------
# The kernel and its primitive

BLOCK = 1 << 16  # elements per block (256 KiB in float32): measured fastest (numpy call overhead vs cache)


def _block_dims(B: int, K: int) -> tuple[int, int]:
    """(W samples, nc components) of a block of nc x K x W units of about BLOCK elements: several
    whole components when the batch is small."""
    W = max(1, min(B, BLOCK // K))
    return W, (max(1, BLOCK // (K * B)) if W == B else 1)


def _affine_blocks(h: np.ndarray, w_in: np.ndarray, b_in: np.ndarray, z_buf: np.ndarray, W: int, nc: int):
    """Yield (replicate i, component slice, sample slice, z) over the blocks of the hidden layer, z =
    W_in h + b_in of the block (nc, K, W) in z_buf: one GEMM per block, [W_in, b_in] @ [h; 1]."""
    I, B, C = h.shape
    K = w_in.shape[-1]
    affine = np.stack([w_in, b_in], axis=-1).astype(h.dtype, copy=False)  # (I, C, K, 2)
    for i in range(I):
        h1 = np.ones((C, 2, B), dtype=h.dtype)
        h1[:, 0, :] = h[i].T
        for c0 in range(0, C, nc):
            cs = slice(c0, min(C, c0 + nc))
            for s in range(0, B, W):
                ss = slice(s, min(B, s + W))
                shape = (cs.stop - c0, K, ss.stop - s)
                z = z_buf[:shape[0] * K * shape[2]].reshape(shape)
                np.matmul(affine[i, cs], h1[cs, :, ss], out=z)
                yield i, cs, ss, z


class CIKernel:
    """gamma of one decomposed matrix (all replicates), forward and backward by hand.

    `forward` stores G and P (I, C, K, B) for `backward` in buffers reused across steps (grown
    when a batch needs more). A backward pass whose forward was not the last one (finite-difference
    checks evaluate the function again before differentiating) runs that forward again first."""

    def __init__(self, activation: str = "gelu"):
        self.activation = activation
        self.G: np.ndarray | None = None
        self.P: np.ndarray | None = None
        self.q: np.ndarray | None = None
        self._scratch: dict = {}
        self._last = None  # (result, shapes) of the forward the stored arrays belong to

    def _buffers(self, I: int, C: int, K: int, B: int, dtype) -> tuple[np.ndarray, np.ndarray]:
        need = I * C * K * B
        if self.G is None or self.G.dtype != dtype or self.G.size < need:
            self.G = np.empty(need, dtype=dtype)
            self.P = np.empty(need, dtype=dtype)
        return self.G[:need].reshape(I, C, K, B), self.P[:need].reshape(I, C, K, B)

    def _blocks(self, n: int, dtype) -> list[np.ndarray]:
        key = np.dtype(dtype)
        bufs = self._scratch.get(key)
        if bufs is None or bufs[0].size < n:
            bufs = [np.empty(n, dtype=key) for _ in range(3)]
            self._scratch[key] = bufs
        return bufs

    def forward(self, h, w_in, b_in, w_out, b_out) -> np.ndarray:
        h, w_in, b_in, w_out, b_out = (np.asarray(v) for v in (h, w_in, b_in, w_out, b_out))
        I, B, C = h.shape
        K = w_in.shape[-1]
        dtype = h.dtype
        G, P = self._buffers(I, C, K, B, dtype)
        block = block_fn(self.activation, dtype)
        W, nc = _block_dims(B, K)
        z_buf, a_buf, t_buf = self._blocks(nc * K * W, dtype)
        out = np.empty((I, C, B), dtype=dtype)
        q = np.empty((I, C, B), dtype=dtype)
        wq = w_out * w_in  # (I, C, K): gamma'(h) = sum_k P W_out W_in
        for i, cs, ss, z in _affine_blocks(h, w_in, b_in, z_buf, W, nc):
            n = z.size
            g, p = G[i, cs, :, ss], P[i, cs, :, ss]
            block(z, g, p, a_buf[:n].reshape(z.shape), t_buf[:n].reshape(z.shape))
            # reduce over the K units while the block is in cache: (nc, 1, K) @ (nc, K, W)
            out[i, cs, None, ss] = np.matmul(w_out[i, cs, None, :], g)
            q[i, cs, None, ss] = np.matmul(wq[i, cs, None, :], p)
        out += b_out[:, :, None]
        self.q = q
        ans = np.ascontiguousarray(out.transpose(0, 2, 1))
        self._last = (ans, (I, B, C, K))
        return ans

    def backward(self, dg, ans, h, w_in, b_in, w_out, b_out) -> tuple:
        if self._last is None or self._last[0] is not ans:
            self.forward(h, w_in, b_in, w_out, b_out)  # the stored arrays belong to another call
        h, w_in, w_out = np.asarray(h), np.asarray(w_in), np.asarray(w_out)
        I, B, C, K = self._last[1]
        G, P = self._buffers(I, C, K, B, h.dtype)
        dT = np.ascontiguousarray(np.swapaxes(np.asarray(dg, dtype=h.dtype), 1, 2))  # (I, C, B)
        dh = np.swapaxes(dT * self.q, 1, 2)
        two = np.stack([dT, dT * np.swapaxes(h, 1, 2)], axis=-1)  # (I, C, B, 2)
        d_w_out = np.empty((I, C, K), dtype=h.dtype)
        sums = np.empty((I, C, K, 2), dtype=h.dtype)
        for i in range(I):
            np.matmul(G[i], dT[i][:, :, None], out=d_w_out[i][:, :, None])
            np.matmul(P[i], two[i], out=sums[i])
        d_b_in = w_out * sums[..., 0]
        d_w_in = w_out * sums[..., 1]
        d_b_out = dT.sum(axis=2)
        return dh, d_w_in, d_b_in, d_w_out, d_b_out


def gamma_values(h: np.ndarray, w_in: np.ndarray, b_in: np.ndarray, w_out: np.ndarray, b_out: np.ndarray,
                 activation: str = "gelu") -> np.ndarray:
    """gamma of every subcomponent on plain arrays (analysis: no gradient, nothing stored, any
    batch size): the kernel's blocks, each reduced over its K units at once. (I, B, C)."""
    h = np.asarray(h)
    I, B, C = h.shape
    K = w_in.shape[-1]
    dtype = h.dtype
    block = block_fn(activation, dtype)
    W, nc = _block_dims(B, K)
    z, g, p, a, t = (np.empty(nc * K * W, dtype=dtype) for _ in range(5))
    out = np.empty((I, C, B), dtype=dtype)
    for i, cs, ss, zb in _affine_blocks(h, w_in, b_in, z, W, nc):
        n = zb.size
        gb = g[:n].reshape(zb.shape)
        block(zb, gb, p[:n].reshape(zb.shape), a[:n].reshape(zb.shape), t[:n].reshape(zb.shape))
        out[i, cs, ss] = np.matmul(w_out[i, cs, None, :], gb)[:, 0, :]
    out += b_out[:, :, None]
    return np.ascontiguousarray(out.transpose(0, 2, 1))


@primitive
def ci_mlp(kernel: CIKernel, h, w_in, b_in, w_out, b_out):
    """gamma of every subcomponent, (I, B, C), through `kernel` (same arguments as `ci_mlp_plain`)."""
    return kernel.forward(h, w_in, b_in, w_out, b_out)


def _ci_vjp(argnums, ans, args, kwargs):
    kernel, rest = args[0], args[1:]

    def vjp(g):
        grads = kernel.backward(g, ans, *rest)
        return tuple(grads[a - 1] for a in argnums)

    return vjp


defvjp_argnums(ci_mlp, _ci_vjp)


# ------------------------------------------------------------------------------------------
# Parameters


def init_ci(C: int, K: int, replicates: int, rng: np.random.Generator, dtype=np.float32) -> dict:
    """Causal-importance MLP parameters of one matrix, (I, C, K) / (I, C). The paper gives no init;
    as the authors' code at the time (a fact, not its code): W_in ~ N(0, 2) (Kaiming for a ReLU-like
    unit with fan-in 1), W_out ~ N(0, 1/K) (fan-in K), zero biases. So gamma(0) = 0: every
    subcomponent starts at causal importance 0 on a zero input."""
    return {"w_in": draws.normal(rng, 0.0, math.sqrt(2.0), (replicates, C, K), dtype),
            "b_in": np.zeros((replicates, C, K), dtype=dtype),
            "w_out": draws.normal(rng, 0.0, 1.0 / math.sqrt(K), (replicates, C, K), dtype),
            "b_out": np.zeros((replicates, C), dtype=dtype)}
