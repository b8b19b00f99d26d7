"""Shapes of the network families the kinds share (the engine's runtime/engine/residual.py runs them).

A residual network: inputs x (n_in) are embedded by a fixed W_E into a residual stream of width D;
`layers` MLPs each read the stream through W_in (D x d_mlp), apply an activation, and add W_out
(d_mlp x D) back; W_U reads the output (D x n_out). Decomposed: every W_in and W_out.
"""
from __future__ import annotations

from .registry import Layer


def residual_matrices(D: int, d_mlp: int, layers: int) -> tuple[Layer, ...]:
    out = []
    for l in range(layers):
        out.append(Layer(f"layers.{l}.W_in", f"layers.{l}.W_in", False, D, d_mlp))
        out.append(Layer(f"layers.{l}.W_out", f"layers.{l}.W_out", False, d_mlp, D))
    return tuple(out)


def residual_shapes(n_in: int, n_out: int, D: int, d_mlp: int, layers: int, b_in: bool,
                    b_out: bool) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of one replicate."""
    req: dict[str, tuple[int, ...]] = {"W_E": (n_in, D), "W_U": (D, n_out)}
    for l in range(layers):
        req[f"layers.{l}.W_in"], req[f"layers.{l}.W_out"] = (D, d_mlp), (d_mlp, D)
        if b_in:
            req[f"layers.{l}.b_in"] = (d_mlp,)
        if b_out:
            req[f"layers.{l}.b_out"] = (D,)
    return req
