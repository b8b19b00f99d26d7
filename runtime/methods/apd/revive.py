"""Reviving dead components by splitting busy ones (`decompose.revive = split(...)`; not part of APD).

APD has no dead-component handling (notes §7.4): the paper over-provisions C and lets extras die.
On TMS 40-10 that costs the ground-truth match: 11-14 of 50 components die in the first 10% of
training (the `used_components` log), and some of the 40 features end up sharing one of the rest.
A component that holds two features is chosen about twice as often as one that holds one, so
the most-chosen live component is the natural one to split. No ground truth enters the choice.

Every `every` steps up to step `until`, per replicate:
  - dead: components that the top-k mask chose (on a sample with a nonzero input) in fewer than
    half of the last `window` steps: out of the `used_components` log most of the time (a dead
    component still wins a stray sample now and then, so "never chosen" is too strict);
  - donors: the live components chosen most often in that window, one per dead component;
  - split: take the samples (of the window's last steps) on which the donor c was chosen. When c
    serves two inputs they fall into two groups; but c may read both through one direction of
    its rank-m space (on TMS 40-10 it does), so the groups are found in input space: two-line
    clustering of the model inputs x, each feature weighted by how strongly c's first layer
    reads it. Then in every layer, with g1, g2 the main directions of the two groups' layer
    inputs a and P = g1~ g1^T the oblique projector with g1 P = g1, g2 P = 0,
        A_d = P A_c,   A_c <- A_c - P A_c,   B_d = B_c
    so d reads group 1's inputs as c did and c no longer does, and W_d + W_c is the old W_c in
    every layer. (Halving c into two noisy copies instead was measured and fails: each half has
    a quarter of c's attribution, top-k passes both over, and they die again within ~1000 steps.)
    A donor whose two directions are nearly parallel (|cos| > MAX_COS: it serves one input) is
    passed over.
What the dead component still held is dropped; the faithfulness loss makes up for it. d takes
over c's Adam moments.

With `adopt` (off by default), the dead components no donor was split for take over inputs that
no live component holds. After the splits, 11-12 dead components leave 38-39 live ones for TMS
40-10's 40 features; the feature no live component holds is then served by nothing (top-k chooses
no component on its samples, whatever their size), its row sits spread over dead components and
small compensations in live ones, and MMCS stays under 0.99 (measured). An orphan is a direction
u of the unserved samples' model inputs (their mode, with the most input mass within
|cos| > ADOPT_COS) on which at least half of the larger half of the samples along u go unserved
(a served input goes unserved only when small). For each orphan and spare dead component d, in
every layer, with g the unit main direction of those samples' layer inputs,
    W_d = g g^T sum_c W_c,   W_c <- (1 - g g^T) W_c   for every other c,
so d holds everything the decomposition reads from g (rank 1; d's Adam moments start at zero),
and the sum over components loses only what d held outside g. On TMS (layer input = model input,
g = e_f) d becomes row f of the summed weight. In deeper models g is a hidden direction that other
inputs may share, so they lose that part too (measured mainly on TMS: the 2-layer residual MLP
run made one adoption).

With `clear` (off by default), at the last revival step (`until`) the dead components that no
donor could be split for are set to zero, Adam moments too (a zero component gets a zero gradient
and stays zero). The idea: a dead component is never chosen, so no Schatten or minimality term
touches it, and it can hold weight that faithfulness counts and top-k never uses. Measured on TMS
40-10 it hurts: a feature that no live component holds (one per replicate with 11 dead) then has
its row spread over all live components by the faithfulness gradient (0.11-0.24 each, cosine
0.51-0.57 to the target row), MMCS 0.978-0.989 on 10 of 10 replicates, against 0.987-0.996
without clear. Clearing at every revival step is worse still.

The flat storage layout of apd.py is kept: component c is columns c*m..c*m+m of every A and the
same rows of every B.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .attributions import live_choices
from .spec import Revive

MAX_COS = 0.9  # |cos(u1, u2)| above this: one direction, nothing to split (and P would blow up)
PROBE_STEPS = 4  # the window's last steps whose samples feed the split
MIN_SAMPLES = 8  # per group
ADOPT_COS = 0.9  # a sample lies along an orphan direction u when |cos(x, u)| exceeds this
MODE_SAMPLES = 4096  # unserved samples searched for an orphan's direction (an n x n table)


class Reviver:
    """Counts top-k choices in the window before each revival step, keeps the last steps' samples
    and splits donors into dead components at that step. `events` records every split (what
    summary.json and the report show)."""

    def __init__(self, cfg: Revive, replicates: int, C: int, m: int):
        self.cfg, self.C, self.m = cfg, C, m
        self.counts = np.zeros((replicates, C), dtype=np.int64)  # samples chosen in the window
        self.present = np.zeros((replicates, C), dtype=np.int64)  # steps with at least one of them
        self.steps = 0
        self.probes: list[tuple[np.ndarray, np.ndarray]] = []  # (mask, x) of the last steps
        self.events: list[dict] = []

    def is_revival_step(self, step: int) -> bool:
        return 0 < step <= self.cfg.until and step % self.cfg.every == 0

    def watching(self, step: int) -> bool:
        """Whether this step's mask counts: it lies in the `window` steps up to a revival step."""
        nxt = -(-step // self.cfg.every) * self.cfg.every  # the next multiple of every, >= step
        return self.is_revival_step(nxt) and nxt - step < self.cfg.window

    def observe(self, mask: np.ndarray, x: np.ndarray) -> None:
        """Add one step's choices: mask (I, B, C), inputs x (I, B, n_in)."""
        chosen = live_choices(mask, x)
        n = np.count_nonzero(chosen, axis=1)
        self.counts += n
        self.present += n > 0
        self.steps += 1
        self.probes = (self.probes + [(chosen, x)])[-PROBE_STEPS:]

    def revive(self, step: int, comps: dict, moments: tuple[dict, ...],
               layer_inputs: Callable[[np.ndarray], dict]) -> list[dict]:
        """Split donors into the dead components of every replicate (in place on `comps` and the
        optimiser `moments`); reset the window. `layer_inputs(x)` gives the target's input to
        every decomposed parameter, (I, B, d_in) each. Returns this step's events."""
        chosen = np.concatenate([mk for mk, _ in self.probes], axis=1)  # (I, N, C)
        xs = np.concatenate([np.asarray(x, dtype=np.float64) for _, x in self.probes], axis=1)  # (I, N, n_in)
        inputs = {k: np.asarray(v, dtype=np.float64) for k, v in layer_inputs(xs).items()}
        I, _, n_in = xs.shape
        first = next(iter(inputs))
        unit = np.asarray(layer_inputs(np.broadcast_to(np.eye(n_in), (I, n_in, n_in)))[first], dtype=np.float64)
        cleared = self.cfg.clear and step + self.cfg.every > self.cfg.until  # the last revival
        new = []
        for i, counts in enumerate(self.counts):
            is_dead = 2 * self.present[i] < self.steps
            dead = [int(d) for d in np.flatnonzero(is_dead)]
            done = []
            for c in donor_order(np.where(is_dead, 0, counts)):
                if len(done) == len(dead):
                    break
                rows = np.flatnonzero(chosen[i, :, c])
                P = projectors(comps, {k: v[i, rows] for k, v in inputs.items()}, xs[i, rows], unit[i], i, c, self.m)
                if P is None:
                    continue
                d = dead[len(done)]
                split(comps, moments, i, d, c, self.m, P)
                done.append((d, c))
            spare = dead[len(done):]
            adopted = []
            if self.cfg.adopt and spare:
                for d, rows in zip(spare, orphans(chosen[i], xs[i], len(spare))):
                    adopt(comps, moments, i, d, self.m, {k: main_direction(v[i, rows]) for k, v in inputs.items()})
                    adopted.append(d)
            still = spare[len(adopted):]
            if cleared:
                for d in still:
                    clear(comps, moments, i, d, self.m)
            if dead:
                new.append({"step": step, "replicate": i, "dead": [d for d, _ in done],
                            "donors": [c for _, c in done], "donor_counts": [int(counts[c]) for _, c in done],
                            "adopted": adopted, "still_dead": still, "cleared": bool(cleared)})
        self.counts[:] = 0
        self.present[:] = 0
        self.steps = 0
        self.probes = []
        self.events.extend(new)
        return new


def donor_order(counts: np.ndarray) -> list[int]:
    """Live components (count > 0) from the most chosen down (ties: the lower index first)."""
    live = np.flatnonzero(counts > 0)
    return [int(c) for c in live[np.argsort(-counts[live], kind="stable")]]


def two_lines(R: np.ndarray, iters: int = 20) -> np.ndarray | None:
    """Group labels (0/1) of the rows of R (n, m) by the line through the origin they lie closest
    to (k-lines clustering, k = 2, sign-blind); -1 for rows under a tenth of the median norm (a
    sample on which the donor reads next to nothing: an accident of top-k, not one of its
    inputs). None if a group ends up with fewer than MIN_SAMPLES rows."""
    norms = np.linalg.norm(R, axis=1)
    keep = norms > 0.1 * np.median(norms) if len(norms) else norms > 0
    if keep.sum() < 2 * MIN_SAMPLES:
        return None
    Rh = R[keep] / norms[keep, None]
    U = np.linalg.svd(Rh, full_matrices=False)[2][:2].copy()  # start: the two main directions
    if len(U) < 2:
        return None
    labels = None
    for _ in range(iters):
        new = np.argmax(np.abs(Rh @ U.T), axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for j in (0, 1):
            members = Rh[labels == j]
            if len(members) < MIN_SAMPLES:
                return None
            U[j] = np.linalg.svd(members, full_matrices=False)[2][0]
    out = np.full(len(R), -1)
    out[keep] = labels
    return out if min(np.sum(out == 0), np.sum(out == 1)) >= MIN_SAMPLES else None


def main_direction(R: np.ndarray) -> np.ndarray:
    return np.linalg.svd(R, full_matrices=False)[2][0]


def oblique_projector(u1: np.ndarray, u2: np.ndarray) -> np.ndarray | None:
    """(n, n) P with u1 P = u1 and u2 P = 0 (row vectors), and v P = 0 for v orthogonal to both;
    None if |cos(u1, u2)| > MAX_COS."""
    if abs(u1 @ u2) / (np.linalg.norm(u1) * np.linalg.norm(u2)) > MAX_COS:
        return None
    U = np.stack([u1, u2], axis=1)  # (n, 2)
    dual = U @ np.linalg.inv(U.T @ U)  # columns: u1~, u2~ with u_i . u_j~ = delta_ij
    return np.outer(dual[:, 0], u1)


def projectors(comps: dict, inputs: dict, x: np.ndarray, unit: np.ndarray, i: int, c: int, m: int) -> dict | None:
    """Per decomposed parameter, the input-space projector P that hands d one group of the inputs
    of donor c (module docstring). inputs: parameter -> its layer inputs on the samples (n, d_in);
    x: the model inputs of the samples (n, n_in); unit: the first parameter's layer inputs for the
    unit model inputs (n_in, d_in). None if the samples do not fall into two distinct groups."""
    names = [n[:-2] for n in comps if n.endswith(".A")]
    cols = slice(c * m, (c + 1) * m)
    reads = np.linalg.norm(unit @ comps[f"{names[0]}.A"][i, :, cols].astype(np.float64), axis=1)
    labels = two_lines(x * reads)
    if labels is None:
        return None
    out = {}
    for n in names:
        P = oblique_projector(main_direction(inputs[n][labels == 0]), main_direction(inputs[n][labels == 1]))
        if P is None:
            return None
        out[n] = P
    return out


def split(comps: dict, moments: tuple[dict, ...], i: int, d: int, c: int, m: int, P: dict) -> None:
    """Make dead component d the P-part of donor c in replicate i, and c the rest."""
    cols_d, cols_c = slice(d * m, (d + 1) * m), slice(c * m, (c + 1) * m)
    for n, Pn in P.items():
        A, B = comps[f"{n}.A"], comps[f"{n}.B"]
        a = A[i, :, cols_c].astype(np.float64)
        A[i, :, cols_d] = Pn @ a
        A[i, :, cols_c] = a - Pn @ a
        B[i, cols_d, :] = B[i, cols_c, :]
        for mom in moments:
            mom[f"{n}.A"][i, :, cols_d] = mom[f"{n}.A"][i, :, cols_c]
            mom[f"{n}.B"][i, cols_d, :] = mom[f"{n}.B"][i, cols_c, :]


def orphans(chosen: np.ndarray, x: np.ndarray, most: int) -> list[np.ndarray]:
    """Up to `most` groups of samples (row indices), each along one model-input direction that
    top-k leaves unserved (no component chosen) on at least half of the larger half of the samples
    along it: an input no live component holds (a served input goes unserved only when small).
    chosen (N, C) live choices, x (N, n_in). A direction is the mode of the unserved samples: the
    one with the most input mass within |cos| > ADOPT_COS of it (the main singular direction would
    blend two orphans of similar mass)."""
    norms = np.linalg.norm(x, axis=1)
    nonzero = norms > 0
    xh = x / np.where(nonzero, norms, 1.0)[:, None]
    unserved = nonzero & ~chosen.any(axis=1)
    # mode candidates: the largest unserved samples (an orphan's are large), capped for memory
    cand = np.flatnonzero(unserved)
    cand = cand[np.argsort(-norms[cand], kind="stable")[:MODE_SAMPLES]]
    near = np.abs(xh[cand] @ xh[cand].T) > ADOPT_COS  # (n, n)
    groups = []
    while len(groups) < most and unserved[cand].sum() >= MIN_SAMPLES:
        live = unserved[cand]
        score = np.where(live, near[:, live] @ norms[cand[live]], -1.0)
        u = main_direction(x[cand[near[np.argmax(score)] & live]])
        along = nonzero & (np.abs(xh @ u) > ADOPT_COS)
        members = np.flatnonzero(along & unserved)
        if len(members) < MIN_SAMPLES:
            break
        big = along & (norms >= np.median(norms[along]))
        if 2 * np.count_nonzero(big[members]) >= np.count_nonzero(big):
            groups.append(members)
        unserved &= ~along
    return groups


def adopt(comps: dict, moments: tuple[dict, ...], i: int, d: int, m: int, g: dict) -> None:
    """Make dead component d of replicate i the part of every component that reads the unit layer
    input g[param] (per parameter): W_d = g g^T sum_c W_c, W_c <- (1 - g g^T) W_c. The sum over
    components keeps that part; d's Adam moments start at zero."""
    reads = {}
    for n, gn in g.items():
        A = comps[f"{n}.A"]
        a = A[i].astype(np.float64)  # (d_in, Cm)
        ga = gn @ a  # how every rank slot reads g
        reads[n] = ga @ comps[f"{n}.B"][i].astype(np.float64)  # g^T sum_c W_c, d's old part included
        A[i] = a - np.outer(gn, ga)
    clear(comps, moments, i, d, m)
    for n, v in reads.items():
        s = np.sqrt(np.linalg.norm(v))
        if s > 0:
            comps[f"{n}.A"][i, :, d * m] = g[n] * s
            comps[f"{n}.B"][i, d * m, :] = v / s


def clear(comps: dict, moments: tuple[dict, ...], i: int, d: int, m: int) -> None:
    """Set component d of replicate i, and its Adam moments, to zero."""
    cols = slice(d * m, (d + 1) * m)
    for store in (comps,) + tuple(moments):
        for name, p in store.items():
            if name.endswith(".A"):
                p[i, :, cols] = 0.0
            else:
                p[i, cols, :] = 0.0
