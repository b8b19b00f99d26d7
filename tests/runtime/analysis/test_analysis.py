"""Analyses on constructed arrays and hand-built runs with known answers."""
import numpy as np
import pytest

from run_cases import gated_run, replace_report, resid_run, tms_run
from runtime.targets.gated import analysis as ag
from runtime.targets.resid_mlp import analysis as ar
from runtime.analysis import scrub
from runtime.methods.apd import components as apd
from runtime.analysis.core import analysis_for, masked_mean
from runtime.targets.resid_mlp.analysis import reduced_residual
from runtime.analysis.diagnostics import diagnose
from runtime.methods.apd.attributions import gradient_attributions
from runtime.engine.models import random_params, target_forward
from runtime.spec import check, Experiment, Decompose
from runtime import GatedTarget, ResidMlpTarget, TmsTarget


# ------------------------------------------------------------------------------------------
# Residual MLP: contributions and categories


def test_component_contributions_match_dense_weights():
    rng = np.random.default_rng(0)
    F, D, d, C, m, L = 3, 7, 4, 5, 2, 2
    W_E, W_U = rng.normal(size=(F, D)), rng.normal(size=(D, F))
    factors, dense = [], []
    for _ in range(L):
        A_in, B_in = rng.normal(size=(C, D, m)), rng.normal(size=(C, m, d))
        A_out, B_out = rng.normal(size=(C, d, m)), rng.normal(size=(C, m, D))
        factors.append((A_in, B_in, A_out, B_out))
        dense.append((A_in @ B_in, A_out @ B_out))
    got = ar.component_contributions(W_E, W_U, factors)
    assert got.shape == (C, F, L * d)
    for c in range(C):
        want = ar.contributions(W_E, W_U, [(W_in[c], W_out[c]) for W_in, W_out in dense])
        np.testing.assert_allclose(got[c], want, rtol=1e-10, atol=1e-12)


def test_contributions_by_hand():
    W_E = np.eye(2)
    W_in = np.array([[2.0, 0.0], [0.0, 3.0]])
    W_out = np.array([[0.5, 1.0], [0.0, -1.0]])
    got = ar.contributions(W_E, W_E.T, [(W_in, W_out)])
    # contrib[f, n] = W_in[f, n] * W_out[n, f]
    np.testing.assert_allclose(got, [[1.0, 0.0], [0.0, -3.0]])


def test_categories_on_a_hand_built_tensor():
    C, F, N = 5, 4, 3
    contrib = np.zeros((C, F, N))
    contrib[0, 0, 1] = 0.5  # mono: f0
    contrib[1, 1, 0] = contrib[1, 2, 2] = 0.3  # duo: f1, f2
    contrib[2, 1:, 0] = 0.2  # poly: f1, f2, f3
    contrib[3, :, :] = 0.03  # dead (below the cutoff)
    contrib[4, 0, 0] = 0.05  # mono: f0 again
    cat = ar.categories(contrib)
    assert (cat["dead"], cat["mono"], cat["duo"], cat["poly"]) == (1, 2, 1, 1)
    assert cat["dedicated_features"] == 1  # only f0 has a component of its own
    assert cat["features_represented"] == 4
    assert list(cat["features_per_component"]) == [1, 2, 3, 0, 1]
    assert list(ar.dominant_components(contrib)) == [0, 1, 1, 2]


def test_scrub_masks_force_the_mapped_components():
    rng = np.random.default_rng(0)
    I, B, F, C = 2, 500, 4, 6
    active = rng.random((I, B, F)) < 0.3
    fmap = np.array([[0, 2, 2, 5], [1, 1, 3, 4]])
    s, a, r = scrub.scrub_masks(active, fmap, C, rng)
    forced = scrub.forced_components(active, fmap, C)
    assert np.all(s[forced]) and not np.any(a[forced])
    assert np.array_equal(s & ~forced, r & ~forced) and np.array_equal(a, r & ~forced)
    # Bernoulli(1/2) over ALL components, including those with index >= F (the reference's bug)
    assert 0.4 < r[..., F:].mean() < 0.6
    for i in range(I):
        for b in range(5):
            want = {int(fmap[i, f]) for f in np.flatnonzero(active[i, b])}
            assert set(np.flatnonzero(forced[i, b])) == want


def test_single_feature_and_per_feature_mean():
    x = np.array([[[0, 1.0, 0], [0.5, 0, 0], [0.2, 0.3, 0], [0, 0, 0], [0, -0.4, 0]]])
    feat = ar.single_feature(x)
    assert feat.tolist() == [[1, 0, -1, -1, 1]]
    vals = np.array([[1.0, 2.0, 100.0, 100.0, 3.0]])
    means, counts = ar.per_feature_mean(feat, vals, 3)
    assert means[0, 0] == 2.0 and means[0, 1] == 2.0 and np.isnan(means[0, 2])
    assert counts.tolist() == [[1, 2, 0]]
    assert ar.nanmean_features(means)[0] == pytest.approx(2.0)


def test_monosemantic_baselines_and_masked_mean():
    from runtime.targets.tms.analysis import monosemantic_tms

    x = np.array([[[0.5, -0.5, 0.2]]])
    lab = x + np.maximum(x, 0)
    np.testing.assert_allclose(ar.monosemantic_resid(x, lab, 2), [[[1.0, -0.5, 0.2]]])
    np.testing.assert_allclose(monosemantic_tms(x, 1), [[[0.5, 0.0, 0.0]]])
    v = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    w = np.array([[True, False, True], [False, False, False]])
    got = masked_mean(v, w)
    assert got[0] == 2.0 and np.isnan(got[1])


def test_log_bins():
    b = ar.log_bins(1.0)
    assert len(b) == 51 and b[0] == pytest.approx(1e-7) and b[-1] == pytest.approx(1.0)
    assert np.all(np.diff(np.log(b)) > 0)
    assert ar.log_bins(0.0)[-1] > 1e-7  # degenerate upper bound still gives valid bins


# ------------------------------------------------------------------------------------------
# The exact narrow copy of a 1-layer residual MLP


@pytest.mark.parametrize("kw", [{}, {"in_bias": True, "out_bias": True, "activation": "gelu", "output_activation": True}])
def test_reduced_residual_is_exact(kw):
    rng = np.random.default_rng(3)
    arch = ResidMlpTarget(features=3, d_embed=20, d_mlp=4, layers=1, **kw)
    I, C, m = 2, 5, 2
    target = random_params(arch, I, rng, np.float64)
    comps = {k: rng.normal(0, 0.5, v.shape) for k, v in apd.init_components(arch, C, m, I, 1.0, rng, np.float64).items()}
    small = reduced_residual(arch, target, comps)
    assert small is not None and small[0].d_embed <= 6
    x = rng.uniform(-1, 1, (I, 9, 3))
    mask = (rng.random((I, 9, C)) < 0.5).astype(float)
    sarch, st, sc = small
    np.testing.assert_allclose(target_forward(sarch, st, x).y, target_forward(arch, target, x).y, atol=1e-10)
    np.testing.assert_allclose(apd.apd_forward(sarch, st, sc, x, mask=mask, m=m).y,
                               apd.apd_forward(arch, target, comps, x, mask=mask, m=m).y, atol=1e-10)
    np.testing.assert_allclose(gradient_attributions(sarch, st, target_forward(sarch, st, x), sc, C),
                               gradient_attributions(arch, target, target_forward(arch, target, x), comps, C),
                               rtol=1e-8, atol=1e-10)
    assert reduced_residual(ResidMlpTarget(features=3, d_embed=20, d_mlp=4, layers=2), random_params(
        ResidMlpTarget(features=3, d_embed=20, d_mlp=4, layers=2), 1, rng), comps) is None


def _small_resid_target(rng, F=5, D=9, d=3):
    """A 1-layer residual MLP in superposition (d < F neurons, random unit embeddings, W_U = W_E^T)."""
    arch = ResidMlpTarget(features=F, d_embed=D, d_mlp=d, layers=1)
    target = random_params(arch, 1, rng)
    W_E = rng.normal(size=(1, F, D))
    W_E /= np.linalg.norm(W_E, axis=-1, keepdims=True)
    target.update({"W_E": W_E, "W_U": np.swapaxes(W_E, 1, 2).copy()})
    return arch, target


def test_canonical_factors_follow_their_definition():
    rng = np.random.default_rng(3)
    arch, t = _small_resid_target(rng)
    W_E, W_U, W_in, W_out = t["W_E"][0], t["W_U"][0], t["layers.0.W_in"][0], t["layers.0.W_out"][0]
    A_in, B_in, A_out, B_out = (a[0] for a in ar.canonical_factors(t["W_E"], t["W_U"], t["layers.0.W_in"],
                                                                   t["layers.0.W_out"]))
    F = W_E.shape[0]
    for f in range(F):
        d_f = np.linalg.lstsq(W_E, np.eye(F)[f], rcond=None)[0]  # minimum-norm solution of W_E d = e_f
        u_f = np.linalg.lstsq(W_U.T, np.eye(F)[f], rcond=None)[0]  # u W_U = e_f^T
        np.testing.assert_allclose(A_in[f] @ B_in[f], np.outer(d_f, W_E[f] @ W_in), atol=1e-12)
        np.testing.assert_allclose(A_out[f] @ B_out[f], np.outer(W_out @ W_U[:, f], u_f), atol=1e-12)
    # the sums act on the embedding span exactly as the target's weights do
    np.testing.assert_allclose(W_E @ np.einsum("fdi,fio->do", A_in, B_in), W_E @ W_in, atol=1e-12)
    np.testing.assert_allclose(np.einsum("fdi,fio->do", A_out, B_out) @ W_U, W_out @ W_U, atol=1e-12)


def test_canonical_decomposition_forward_by_hand():
    rng = np.random.default_rng(4)
    arch, t = _small_resid_target(rng)
    F = arch.features
    factors = ar.canonical_factors(t["W_E"], t["W_U"], t["layers.0.W_in"], t["layers.0.W_out"])
    comps = {**apd.from_components("layers.0.W_in", *factors[:2]), **apd.from_components("layers.0.W_out", *factors[2:])}
    x = rng.uniform(-1, 1, (1, 6, F)) * (rng.random((1, 6, F)) < 0.5)
    np.testing.assert_allclose(apd.apd_forward(arch, t, comps, x, mask=np.ones((1, 6, F)), m=1).y,
                               target_forward(arch, t, x).y, atol=1e-12)  # all on = the target
    # feature f alone with only component f on: readout f is the target's, readout g != f has only the
    # residual path (the MLP's interference on g is gone)
    f, v = 2, 0.7
    xf = np.zeros((1, 1, F)); xf[0, 0, f] = v
    only_f = np.zeros((1, 1, F)); only_f[0, 0, f] = 1.0
    y = apd.apd_forward(arch, t, comps, xf, mask=only_f, m=1).y[0, 0]
    W_E, W_U = t["W_E"][0], t["W_U"][0]
    h = np.maximum(v * W_E[f] @ t["layers.0.W_in"][0], 0.0)
    want = v * W_E[f] @ W_U
    want[f] += h @ t["layers.0.W_out"][0] @ W_U[:, f]
    np.testing.assert_allclose(y, want, atol=1e-12)


def test_canonical_decomposition_only_for_one_layer():
    an = analysis_for(resid_run())
    assert an.part.canonical()[2]["layers.0.W_in.A"].shape == (1, 4, 4)  # (I, D, F * rank 1)
    two = analysis_for(resid_run())
    two.model = (ResidMlpTarget(features=4, d_embed=4, d_mlp=4, layers=2),) + two.model[1:]
    assert two.part.canonical() is None  # later layers read MLP outputs off the embedding span


def test_canonical_scrub_masks():
    active = np.array([[[True, False, False, True]] * 500])
    s, a = ar.canonical_scrub_masks(active, np.random.default_rng(0))
    assert s[..., [0, 3]].all() and not a[..., [0, 3]].any()
    assert np.array_equal(s[..., 1:3], a[..., 1:3]) and 0.4 < a[..., 1:3].mean() < 0.6


# ------------------------------------------------------------------------------------------
# Run-level analyses


def test_perfect_resid_decomposition_scrubbing_and_feature_map():
    r = resid_run(F=4, probability=0.4)
    an = analysis_for(r)
    assert an.feature_map().tolist() == [[0, 1, 2, 3]]
    s = an.sampled()
    act = s["active_input"]
    assert s["scrubbed"][act].max() < 1e-20  # the forced components restore the output exactly
    assert s["anti_scrubbed"][act].mean() > 1e-2
    assert s["random"][act].mean() > s["scrubbed"][act].mean()
    c = an.part.contributions()
    assert c["target"].shape == (1, 4, 4) and c["components"].shape == (1, 4, 4, 4)
    np.testing.assert_allclose(c["components"].sum(axis=1), c["target"])  # no cross terms here
    assert c["dominant"].tolist() == [[0, 1, 2, 3]]
    fr = an.part.feature_response()
    assert fr["feature"] == 3 and fr["scrubbed"].shape == (1, 200, 4)
    np.testing.assert_allclose(fr["scrubbed"][0], np.broadcast_to(fr["target"][0], (200, 4)), atol=1e-12)
    assert np.all(fr["anti_scrubbed"][0][:, 3] == 0)  # feature 3's ReLU part needs component 3
    pf = an.part.per_feature()
    assert np.all(pf["counts"] > 0) and np.nanmax(pf["top1_vs_labels"]) < 1e-20


def test_target_response_of_the_exact_model():
    an = analysis_for(resid_run(F=3))
    t = an.part.target_response()
    np.testing.assert_allclose(t["onehot_out"][0], 2 * np.eye(3))  # x + ReLU(x) at x = 1
    np.testing.assert_allclose(t["sweep_out"], t["sweep_labels"], atol=1e-12)
    assert t["sweep_out"].shape == (1, 3, 41)


def test_mse_by_sparsity_levels_and_models():
    an = analysis_for(replace_report(resid_run(F=4), eval_batches=10))
    t = an.mse_by_sparsity()
    assert list(t) == ["training", "exactly 1", "exactly 2", "exactly 3", "exactly 4"]
    assert set(t["exactly 2"]) == {"target", "apd", "monosemantic", "input"}
    assert t["exactly 1"]["target"][0] < 1e-20 and t["exactly 1"]["apd"][0] < 1e-20
    assert t["exactly 4"]["monosemantic"][0] == pytest.approx(0.0)  # n_mono = d_mlp = F: every feature handled


def test_gated_separation_on_hand_built_decompositions():
    g = analysis_for(gated_run(functions=3, neurons=4, layers=2)).part.gated()
    assert g["separated"].tolist() == [3]
    assert g["assignment"][0].tolist() == [0, 1, 2]
    np.testing.assert_allclose(g["topk"], g["target"], atol=1e-12)
    np.testing.assert_allclose(g["activity"][0], np.eye(3))
    assert g["true"].shape == g["target"].shape
    g = analysis_for(gated_run(functions=3, neurons=4, layers=2, swap=True)).part.gated()
    assert g["separated"].tolist() == [0]


def test_separated_functions_rule():
    freq = np.array([[0.9, 0.1, 0.0], [0.0, 0.6, 0.4], [0.0, 0.55, 0.45]])
    n, assign, sep = ag.separated_functions(freq)
    assert assign.tolist() == [0, 1, 1] and sep.tolist() == [True, False, False] and n == 1


def test_gated_neuron_and_edge_functions_match_the_permutation():
    from runtime.targets.gated.model import build_gated

    arch = GatedTarget(functions=3, neurons=4, layers=2)
    rng = np.random.default_rng(5)
    target, extras = build_gated(arch, 1, rng, rng, np.float64)
    perm = extras["permutation"][0]
    d = 6
    for l in range(2):
        fn = ag.neuron_functions(target[f"layers.{l}.W_in"][0], 3)
        assert fn.tolist() == (perm[l * d:(l + 1) * d] // 4).tolist()
        lab = ag.edge_functions(target[f"layers.{l}.W_out"][0], fn, 0)
        assert np.all(lab[:, :-1] == -1) and lab[:, -1].tolist() == fn.tolist()


def test_function_grid_and_attribution_share():
    xs, x = ag.function_grid(2, 0.0, 5.0, 4, 3)
    assert x.shape == (3, 8, 3) and xs.tolist() == pytest.approx([0, 5 / 3, 10 / 3, 5])
    assert x[0, :4, 1].tolist() == [1] * 4 and x[0, 4:, 2].tolist() == [1] * 4 and x[0, :4, 2].sum() == 0
    attr = np.array([[[1.0, 3.0], [0.0, 0.0]]])  # second point has no attribution: skipped
    np.testing.assert_allclose(ag.attribution_share(attr), [[0.25, 0.75]])


def test_analyses_are_reproducible_and_cached():
    r1, r2 = tms_run(I=2), tms_run(I=2)
    a1, a2 = analysis_for(r1), analysis_for(r2)
    assert a1 is analysis_for(r1)
    assert a1.sampled() is a1.sampled()
    np.testing.assert_array_equal(a1.sampled()["topk_vs_target"], a2.sampled()["topk_vs_target"])


def test_diagnostics_name_known_failure_modes():
    exp = check(Experiment(target=TmsTarget(features=5, hidden=2), decompose=Decompose(components=5)))
    metrics = {"ml2r": [0.6], "mmcs": [0.95], "dead_components": [2.0], "faithfulness": [0.5]}
    text = " ".join(t for _, t in diagnose(exp, exp.target, metrics, [], weight_scale=1.0))
    assert "Shrinkage" in text and "dead" in text and "MMCS" in text and "Faithfulness not converged" in text
    resid = check(Experiment(target=ResidMlpTarget(features=10, d_embed=20, d_mlp=5), train=None,
                             decompose=Decompose(components=12)))
    m = {"duo_components": [2.0], "poly_components": [1.0], "dedicated_features": [6.0], "scrub_ratio": [1.5],
         "per_feature_loss_top1": [1.0], "per_feature_loss_topk": [0.1]}
    text = " ".join(t for _, t in diagnose(resid, resid.target, m, []))
    assert "two features" in text and "dedicated" in text and "not specialised" in text and "spread" in text
    # a scrub ratio at or above the target's canonical decomposition's is a note about the target
    kinds = dict((t, k) for k, t in diagnose(resid, resid.target, {"scrub_ratio": [5.0], "canonical_scrub_ratio": [3.8]}, []))
    assert list(kinds.values()) == ["note"] and "canonical" in next(iter(kinds))
    below = diagnose(resid, resid.target, {"scrub_ratio": [2.0], "canonical_scrub_ratio": [3.8]}, [])
    assert below[0][0] == "problem" and "canonical decomposition: 3.8x" in below[0][1]
    assert diagnose(exp, exp.target, {"mmcs": [1.0], "ml2r": [1.0]}, []) == []
    hist = [{"step": s, "total": float(np.exp(-s / 10))} for s in range(0, 100, 10)]
    assert any("still falling" in t for _, t in diagnose(exp, exp.target, {}, hist))
    flat = [{"step": s, "total": 1.0 + float(np.exp(-s))} for s in range(0, 100, 10)]
    assert not any("still falling" in t for _, t in diagnose(exp, exp.target, {}, flat))


def test_diagnostics_say_when_components_stopped_being_used():
    """Hand-made log: replicate 0 drops from 8 to 6 used components by step 300, replicate 1 from 8
    to 7 at step 1200; replicate 0 misses one component in a single late batch (not a drop)."""
    exp = check(Experiment(target=TmsTarget(features=5, hidden=2), decompose=Decompose(components=8), replicates=2))

    def log(end):
        hist = []
        for s in range(0, end + 1, 100):
            r0 = 8 if s < 200 else 7 if s < 300 else 6
            r1 = 8 if s < 1200 else 7
            if s == end - 500:
                r0 = 5
            hist.append({"step": s, "used_components": (r0 + r1) / 2, "used_components/replicates": [r0, r1]})
        return hist

    def settled(hist, dead=(2.0, 1.0)):
        return [t for _, t in diagnose(exp, exp.target, {"dead_components": list(dead)}, hist) if "settled" in t]

    notes = settled(log(4000))
    assert len(notes) == 1
    assert "settled at 6, 7 by step 300, 1200 of 4000 (per replicate)" in notes[0]
    assert "first quarter" not in notes[0]  # 1200 > 4000 / 4
    assert "first quarter" in settled(log(8000))[0]  # 1200 <= 8000 / 4
    assert settled(log(4000), dead=(0.0, 0.0)) == []  # nothing died: nothing to say


def test_spd_diagnostics_say_which_matrix_strays_from_one_subcomponent_per_feature():
    from runtime.analysis.causal import onehot_ci_use

    F, C = 6, 8
    per_feature = np.zeros((F, C), bool)
    per_feature[np.arange(F), np.arange(F)] = True  # the ground truth: feature f -> subcomponent f
    basis = np.zeros((F, C), bool)
    basis[:, :2] = True  # two subcomponents important for every feature
    represents = {"W": np.stack([per_feature, per_feature]), "W.T": np.stack([per_feature, basis])}
    use = onehot_ci_use(represents)
    assert use == {"W": ([6, 6], [1.0, 1.0]), "W.T": ([6, 2], [1.0, 2.0])}
    exp = check(Experiment(target=TmsTarget(features=F, hidden=2), decompose=Decompose(method="spd", components=C)))
    text = " ".join(t for _, t in diagnose(exp, exp.target, {"ci_error": [0.0, 1.5]}, [], prepared=use))
    assert "W 6 / 1, 6 / 1; W.T 6 / 1, 2 / 2." in text
    assert "In W.T of replicate 1 a few subcomponents serve every feature together" in text
    plain = " ".join(t for _, t in diagnose(exp, exp.target, {"ci_error": [0.0, 1.5]}, []))
    assert "far from the ground truth" in plain and "Per matrix" not in plain
