"""decompose.revive = split(...): dead components take half of the most-chosen live one (not part of APD)."""
import json
import os

import numpy as np
import pytest

import apdspec
from runtime.methods.apd import components as apd, revive
from runtime.pipeline import runner
from runtime.methods.apd.train import ApdDecomposition as Decomposition, Trainer
from apd_cases import ARCHS, inputs
from runtime.engine.models import random_params, target_forward
from runtime.engine.data import sample_inputs
from runtime.pipeline.restarts import take
from runtime.spec import Decompose, Experiment, Optimizer, Report, Schedule, Training, check
from runtime import ApdLosses as Losses, Revive, TmsTarget, TopK


def test_donor_order_is_by_count_then_index():
    assert revive.donor_order(np.array([0, 7, 3, 0, 7, 0, 1])) == [1, 4, 2, 6]  # dead ones are not donors
    assert revive.donor_order(np.zeros(3, dtype=int)) == []


def test_oblique_projector_keeps_one_direction_and_kills_the_other():
    u1, u2 = np.array([1.0, 0.0, 0.0]), np.array([0.6, 0.8, 0.0])  # cos 0.6: not orthogonal
    P = revive.oblique_projector(u1, u2)
    np.testing.assert_allclose(P @ P, P, atol=1e-12)  # a projector
    np.testing.assert_allclose(u1 @ P, u1, atol=1e-12)
    np.testing.assert_allclose(u2 @ P, 0.0, atol=1e-12)
    np.testing.assert_allclose(np.array([0.0, 0.0, 1.0]) @ P, 0.0, atol=1e-12)  # the rest stays with the donor
    assert revive.oblique_projector(u1, np.array([0.95, 0.1, 0.0])) is None  # |cos| > MAX_COS


def test_two_lines_groups_rows_by_direction_whatever_their_sign_and_length():
    rng = np.random.default_rng(0)
    d1, d2 = np.array([1.0, 1.0, 0.0]) / np.sqrt(2), np.array([0.0, 0.6, 0.8])
    s = rng.uniform(0.5, 2, 40) * rng.choice([-1.0, 1.0], 40)
    truth = np.arange(40) % 3 == 0
    R = np.where(truth[:, None], s[:, None] * d1, s[:, None] * d2) + 1e-3 * rng.standard_normal((40, 3))
    labels = revive.two_lines(R)
    assert labels is not None
    g = labels == labels[0]
    assert np.array_equal(g, truth) or np.array_equal(g, ~truth)
    assert revive.two_lines(R[:10]) is None  # too few samples for two groups of MIN_SAMPLES
    # a sample the donor barely reads (along a third direction) is left out, not made a group
    odd = np.vstack([R, 1e-3 * np.array([[0.0, 0.0, 1.0]])])
    labels = revive.two_lines(odd)
    assert labels is not None and labels[-1] == -1
    g = labels[:-1] == labels[0]
    assert np.array_equal(g, truth) or np.array_equal(g, ~truth)
    assert revive.two_lines(np.outer(s, d1)) is None  # one direction only


def layered_comps(rng, I=2, C=4, m=3):
    """Flat-layout factors of two decomposed parameters (shapes as apd.from_components builds them)."""
    comps = {}
    for name, (d_in, d_out) in {"W1": (5, 4), "W2": (4, 6)}.items():
        comps.update(apd.from_components(name, rng.standard_normal((I, C, d_in, m)),
                                         rng.standard_normal((I, C, m, d_out))))
    return comps


def weights(comps, name, C):
    A, B = apd.to_components(comps, name, C)
    return A @ B  # (I, C, d_in, d_out)


def test_split_gives_each_input_group_to_one_component_and_keeps_the_layer_sums():
    """Donor 2 of replicate 1 answers two groups of inputs (e_0 and e_3 in layer W1). After the
    split the dead component 0 answers e_0 exactly as the donor did and not e_3; the donor keeps e_3."""
    rng = np.random.default_rng(0)
    I, C, m = 2, 4, 3
    comps = layered_comps(rng, I, C, m)
    before = {n: weights(comps, n, C) for n in ("W1", "W2")}
    moments = tuple({k: rng.standard_normal(v.shape) for k, v in comps.items()} for _ in range(2))
    # samples: half are scaled copies of e_0, half of e_3 in layer W1's input, and of e_1 / e_2 in W2's
    s = rng.uniform(0.5, 1.5, 40)
    a1, a2 = np.zeros((40, 5)), np.zeros((40, 4))
    a1[::2, 0] = a2[::2, 1] = s[::2]
    a1[1::2, 3] = a2[1::2, 2] = s[1::2]
    # the model input is W1's input here (as in TMS): unit inputs are the identity
    P = revive.projectors(comps, {"W1": a1, "W2": a2}, a1, np.eye(5), i=1, c=2, m=m)
    assert P is not None
    revive.split(comps, moments, i=1, d=0, c=2, m=m, P=P)
    after = {n: weights(comps, n, C) for n in ("W1", "W2")}
    for n in ("W1", "W2"):
        lost = np.zeros_like(before[n][:, 0])  # the dead component's old weight is dropped
        lost[1] = before[n][1, 0]
        np.testing.assert_allclose(after[n].sum(axis=1), before[n].sum(axis=1) - lost, atol=1e-10)
        np.testing.assert_array_equal(after[n][0], before[n][0])  # other replicate untouched
        np.testing.assert_array_equal(after[n][1, [1, 3]], before[n][1, [1, 3]])
    # d took the group of sample 0 (e_0 / e_1) or of sample 1 (e_3 / e_2), the same one in both layers
    took_first = np.abs(after["W1"][1, 0, 0]).max() > np.abs(after["W1"][1, 0, 3]).max()
    for n, (g1, g2) in {"W1": (0, 3), "W2": (1, 2)}.items():
        mine, theirs = (g1, g2) if took_first else (g2, g1)
        Wd, Wc, old = after[n][1, 0], after[n][1, 2], before[n][1, 2]
        np.testing.assert_allclose(Wd[mine], old[mine], atol=1e-10)  # full strength on its group
        np.testing.assert_allclose(Wd[theirs], 0.0, atol=1e-10)
        np.testing.assert_allclose(Wc[theirs], old[theirs], atol=1e-10)
        np.testing.assert_allclose(Wc[mine], 0.0, atol=1e-10)
    for mom in moments:  # the new component takes over the donor's Adam moments
        for n in ("W1", "W2"):
            Am, Bm = apd.to_components(mom, n, C)
            np.testing.assert_array_equal(Am[1, 0], Am[1, 2])
            np.testing.assert_array_equal(Bm[1, 0], Bm[1, 2])


def test_a_donor_with_one_input_group_is_not_split():
    rng = np.random.default_rng(1)
    comps = layered_comps(rng, 1, 3, 3)
    a1 = np.zeros((30, 5))
    a1[:, 2] = rng.uniform(0.5, 1.5, 30)
    a2 = np.zeros((30, 4))
    a2[::2, 0], a2[1::2, 1] = 1.0, 1.0  # two groups in the second layer do not matter: the first decides
    assert revive.projectors(comps, {"W1": a1, "W2": a2}, a1, np.eye(5), 0, 1, 3) is None


def test_schedule_of_windows_and_revivals():
    r = revive.Reviver(Revive(every=10, until=25, window=3), replicates=1, C=2, m=1)
    assert [s for s in range(40) if r.is_revival_step(s)] == [10, 20]  # 30 > until; never step 0
    assert [s for s in range(40) if r.watching(s)] == [8, 9, 10, 18, 19, 20]


def test_observe_counts_choices_on_nonzero_inputs():
    r = revive.Reviver(Revive(), replicates=1, C=3, m=1)
    x = np.array([[[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]])
    mask = np.array([[[True, False, False], [False, True, False], [True, False, True]]])
    r.observe(mask, x)
    r.observe(mask, x)
    r.observe(np.zeros_like(mask), x)
    assert r.counts.tolist() == [[4, 0, 2]]  # component 1 was chosen only on the zero input
    assert r.present.tolist() == [[2, 0, 2]] and r.steps == 3  # steps in which each was chosen


def tms_exp(revive_cfg, replicates=2, steps=40, restarts=1):
    return check(Experiment(
        name="rv", seed=4, replicates=replicates, dtype="float64", target=TmsTarget(features=5, hidden=2),
        train=Training(steps=100, batch=128),
        decompose=Decompose(components=6, topk=TopK("batch", 0.211), loss=Losses(simplicity=0.7),
                            optimizer=Optimizer("adam", 3e-2), schedule=Schedule("constant"),
                            steps=steps, batch=128, log_every=10, restarts=restarts, revive=revive_cfg),
        report=Report(metrics=("topk_mse",), plots=())))


def test_trainer_revives_a_component_that_is_never_chosen():
    """Component 5 starts at zero: zero attribution, never chosen. At the revival step it takes
    over part of a busy component, and the summed weight is unchanged by the revival."""
    exp = tms_exp(Revive(every=10, until=10, window=10))
    arch, target, _, _ = runner.build_target(exp)
    rng = np.random.default_rng(1)
    comps = apd.init_components(arch, 6, exp.decompose.rank, 2, 1.0, rng, np.float64)
    A, B = apd.to_components(comps, "W", 6)
    A, B = A.copy(), B.copy()
    A[:, 5] = 0.0
    B[:, 5] = 0.0
    comps = apd.from_components("W", A, B)
    sample = lambda n: sample_inputs(arch, exp.data, 2, n, rng, np.float64)  # noqa: E731
    tr = Trainer(exp, arch, target, sample, rng, comps)
    for _ in range(10):
        tr.step()
    assert tr.reviver.counts[:, 5].tolist() == [0, 0]
    seen = {}
    orig = tr.reviver.revive

    def revive_and_record(step, comps, moments, layer_inputs):
        seen["before"] = weights(comps, "W", 6)
        return orig(step, comps, moments, layer_inputs)

    tr.reviver.revive = revive_and_record
    tr.step()  # step 10: Adam step, then observe and revive
    events = tr.reviver.events
    assert [e["replicate"] for e in events] == [0, 1]  # one record per replicate with dead components
    revived = [e["replicate"] for e in events if 5 in e["dead"]]
    assert revived  # (which replicates have a busy component with two input groups this early depends on the init)
    for e in events:
        assert 5 in e["dead"] + e["still_dead"]
    for r in revived:
        assert np.abs(weights(tr.comps, "W", 6)[r, 5]).max() > 0  # alive again
    # the summed weight loses exactly what the revived components held (component 5: nothing, it
    # never got a gradient); the donors' parts are only moved
    expected = seen["before"].sum(axis=1)
    for e in events:  # revived (and cleared still-dead) components lose what they held
        gone = e["dead"] + (e["still_dead"] if e["cleared"] else [])
        expected[e["replicate"]] -= seen["before"][e["replicate"], gone].sum(axis=0)
        np.testing.assert_array_equal(seen["before"][e["replicate"], 5], 0.0)
    np.testing.assert_allclose(weights(tr.comps, "W", 6).sum(axis=1), expected, atol=1e-12)
    assert tr.reviver.counts.sum() == 0 and tr.reviver.probes == []  # the next window starts afresh


def test_run_records_revivals_in_the_summary(tmp_path):
    exp = tms_exp(Revive(every=10, until=30, window=5), replicates=1, steps=40)
    summary = runner.run_to_dir(exp, str(tmp_path), report=False)
    with open(os.path.join(tmp_path, "summary.json")) as f:
        saved = json.load(f)
    assert saved["revivals"] == json.loads(json.dumps(summary["revivals"]))
    for e in saved["revivals"]:
        assert e["step"] in (10, 20, 30) and len(e["dead"]) == len(e["donors"]) == len(e["donor_counts"])
        assert min(e["donor_counts"], default=1) > 0
    # the training log carries the same counts at the revival steps (replicates = 1: no events -> 0)
    by_step = {e["step"]: e for e in saved["revivals"]}
    logged = [e for e in summary_history(tmp_path) if e["step"] in (10, 20, 30)]
    assert len(logged) == 3
    for entry in logged:
        ev = by_step.get(entry["step"], {"dead": [], "still_dead": []})
        assert entry["revived"] == len(ev["dead"]) and entry["still_dead"] == len(ev["still_dead"])


def summary_history(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [e for e in map(json.loads, f) if e.get("phase") == "decompose"]


def test_take_renumbers_revivals_of_kept_instances():
    comps = {"W.A": np.zeros((4, 2, 3)), "W.B": np.zeros((4, 3, 2))}
    ev = [{"step": 10, "replicate": r, "dead": [0], "donors": [1], "donor_counts": [5], "still_dead": []}
          for r in (0, 3)]
    dec = Decomposition(None, 3, 1, comps, [], revivals=ev)
    out = take(dec, np.array([1, 3]))
    assert [e["replicate"] for e in out.revivals] == [1]


SPEC = """experiment t {
  target tms { features = 5  hidden = 2 }
  decompose {
    components = 5
    topk = batch(0.25)
    steps = 100
    batch = 64
    REVIVE
  }
}
"""


def test_spec_syntax_compiles_to_the_runtime_object():
    loaded = apdspec.loads(SPEC.replace("REVIVE", "revive = split(every = 20, until = 60, window = 5)"), "t.apd")
    assert loaded.experiment.decompose.revive == Revive(kind="split", every=20, until=60, window=5, clear=False)
    # the canonical text that the run directory stores reads back to the same experiment
    assert "revive = split(" in loaded.text
    assert apdspec.loads(loaded.text, "resolved.apd").experiment == loaded.experiment
    assert apdspec.loads(SPEC.replace("REVIVE", "revive = none"), "t.apd").experiment.decompose.revive is None
    assert apdspec.loads(SPEC.replace("REVIVE", "revive = split(adopt = true)"), "t.apd").experiment.decompose.revive.adopt
    assert apdspec.loads(SPEC.replace("REVIVE", ""), "t.apd").experiment.decompose.revive is None


@pytest.mark.parametrize("text,message", [
    ("revive = split(every = 10, window = 20)", "window (20 steps) is longer than every (10)"),
    ("revive = split(every = 0)", "decompose.revive.every: must be > 0"),
])
def test_invalid_revive_settings_are_reported(text, message):
    with pytest.raises(apdspec.SpecError) as info:
        apdspec.loads(SPEC.replace("REVIVE", text), "t.apd")
    assert message in info.value.render()
    d = next(d for d in info.value.diagnostics if message in d.message)
    assert d.span is not None and d.span.line == 8


def test_revive_needs_top_k():
    with pytest.raises(apdspec.SpecError) as info:
        apdspec.loads(SPEC.replace("topk = batch(0.25)", "topk = none\n    loss { sparsity = lp(1, p = 1) }")
                      .replace("REVIVE", "revive = split()"), "t.apd")
    assert "revive counts top-k choices" in info.value.render()


def test_report_line_counts_revivals_per_replicate():
    from runtime.report.document import revivals_text

    ev = [{"step": 1000, "replicate": 0, "dead": [3, 7], "donors": [1, 2], "donor_counts": [9, 8], "still_dead": [9]},
          {"step": 2000, "replicate": 0, "dead": [7], "donors": [4], "donor_counts": [5], "still_dead": []},
          {"step": 1000, "replicate": 2, "dead": [], "donors": [], "donor_counts": [], "still_dead": [0, 1]}]
    assert revivals_text(ev) == ("replicate 0: 3 revived (steps 1000, 2000); "
                                 "replicate 2: 0 revived, 2 left dead at step 1000")
    assert revivals_text([]).startswith("none")
    ev[1]["adopted"] = [9]
    assert revivals_text(ev).startswith("replicate 0: 3 revived (steps 1000, 2000), 1 adopted an unserved input (step 2000); ")


@pytest.mark.parametrize("clear", [True, False])
@pytest.mark.parametrize("name", sorted(ARCHS))
def test_revival_on_every_architecture_moves_weight_only_from_donors_to_dead(name, clear):
    """Every layer's summed weight after a revival is the old sum minus what the revived (dead)
    components held, and with `clear` what the still-dead ones held (they become zero, Adam
    moments too); components neither dead nor donor are untouched."""
    rng = np.random.default_rng(5)
    arch, C, m, I_, Bsz = ARCHS[name], 6, 2, 2, 64
    target = random_params(arch, I_, rng)
    comps = apd.init_components(arch, C, m, I_, 1.0, rng, np.float64)
    comps = {k: rng.normal(0, 0.5, v.shape) for k, v in comps.items()}
    r = revive.Reviver(Revive(every=4, until=4, window=4, clear=clear), I_, C, m)
    for _ in range(4):
        x = inputs(arch, I_, Bsz, rng)
        mask = rng.uniform(size=(I_, Bsz, C)) < np.array([0.6, 0.3, 0.3, 0.3, 0.0, 0.0])  # 4, 5 dead
        r.observe(mask, x)
    names = apd.decomposed_params(arch)
    before = {n: apd.component_weights(comps, n, C) for n in names}
    layer_inputs = lambda x: {n: target_forward(arch, target, x).pre[n] for n in names}  # noqa: E731
    moments = ({k: rng.normal(size=v.shape) for k, v in comps.items()},)
    events = r.revive(4, comps, moments, layer_inputs)
    assert [e["replicate"] for e in events] == [0, 1]
    if name != "resid_2l_bias":  # with these seeds every other model has a donor that splits
        assert any(e["dead"] for e in events)
    for n in names:
        after = apd.component_weights(comps, n, C)
        for e in events:
            i = e["replicate"]
            assert sorted(e["dead"] + e["still_dead"]) == [4, 5]
            assert set(e["donors"]) <= {0, 1, 2, 3}
            gone = e["dead"] + (e["still_dead"] if clear else [])
            expected = before[n][i].sum(axis=0) - before[n][i, gone].sum(axis=0)
            np.testing.assert_allclose(after[i].sum(axis=0), expected, atol=1e-9)
            kept = e["still_dead"] if not clear else []
            np.testing.assert_array_equal(after[i, kept], before[n][i, kept])
            if clear:
                np.testing.assert_array_equal(after[i, e["still_dead"]], 0.0)
                Am, Bm = apd.to_components(moments[0], n, C)
                assert not Am[i, e["still_dead"]].any() and not Bm[i, e["still_dead"]].any()
            untouched = [c for c in range(C) if c not in e["dead"] + e["donors"] + gone]
            np.testing.assert_array_equal(after[i, untouched], before[n][i, untouched])


def one_hot_samples(rng, F: int, per: int, zeros: int = 20):
    """`per` samples with a single active feature for each feature (values in [0.1, 1)), then
    zeros; and each sample's feature (-1 for the zeros)."""
    x = np.zeros((F * per + zeros, F))
    for f in range(F):
        x[f * per:(f + 1) * per, f] = rng.uniform(0.1, 1.0, per)
    return x, np.concatenate([np.repeat(np.arange(F), per), np.full(zeros, -1)])


def test_orphans_are_inputs_top_k_leaves_unserved_even_when_large():
    rng = np.random.default_rng(0)
    F, per = 6, 40
    x, feat = one_hot_samples(rng, F, per)
    chosen = np.zeros((len(x), 3), dtype=bool)
    chosen[np.isin(feat, [0, 1, 3]), 0] = True  # served
    chosen[(feat == 2) & (x[:, 2] > 0.6), 1] = True  # served when large: not an orphan
    # features 4 and 5 are never served: two orphans of similar mass, found one at a time
    groups = revive.orphans(chosen, x, most=5)
    assert sorted(sorted(set(feat[g])) for g in groups) == [[4], [5]]
    assert sorted(len(g) for g in groups) == [per, per]
    assert len(revive.orphans(chosen, x, most=1)) == 1
    # a sample along an orphan with a small second feature still belongs to it
    x2 = np.vstack([x, [[0.02, 0, 0, 0, 0.9, 0]] * 3])
    chosen2 = np.vstack([chosen, np.zeros((3, 3), dtype=bool)])
    g4 = next(g for g in revive.orphans(chosen2, x2, most=5) if x2[g[0], 4] != 0)
    assert set(range(len(x), len(x) + 3)) <= set(g4.tolist())
    # everything served: no orphans
    assert revive.orphans(np.ones_like(chosen), x, most=5) == []


def test_orphan_search_over_the_largest_unserved_samples_finds_the_same_groups(monkeypatch):
    rng = np.random.default_rng(3)
    x, feat = one_hot_samples(rng, 6, 40)
    chosen = np.zeros((len(x), 2), dtype=bool)
    chosen[(feat >= 0) & (feat < 5), 0] = True
    chosen[(feat == 1) & (x[:, 1] < 0.3), 0] = False  # small samples of a served input go unserved
    full = revive.orphans(chosen, x, most=3)
    monkeypatch.setattr(revive, "MODE_SAMPLES", 30)  # fewer than the unserved samples
    capped = revive.orphans(chosen, x, most=3)
    assert [sorted(set(feat[g])) for g in full] == [[5]]
    assert [g.tolist() for g in capped] == [g.tolist() for g in full]


def test_adopt_moves_one_input_direction_of_every_component_into_the_dead_one():
    rng = np.random.default_rng(1)
    I_, C, m, d_in, d_out, d = 2, 5, 3, 7, 4, 2
    comps = {"W.A": rng.normal(size=(I_, d_in, C * m)), "W.B": rng.normal(size=(I_, C * m, d_out))}
    moments = ({k: rng.normal(size=v.shape) for k, v in comps.items()},)
    before = apd.component_weights(comps, "W", C)
    mom_before = {k: v.copy() for k, v in moments[0].items()}
    g = rng.normal(size=d_in)
    g /= np.linalg.norm(g)
    P = np.outer(g, g)
    revive.adopt(comps, moments, 1, d, m, {"W": g})
    after = apd.component_weights(comps, "W", C)
    np.testing.assert_array_equal(after[0], before[0])  # other replicates untouched
    np.testing.assert_allclose(after[1, d], P @ before[1].sum(axis=0), atol=1e-12)
    assert np.linalg.matrix_rank(after[1, d], tol=1e-9) == 1
    for c in set(range(C)) - {d}:
        np.testing.assert_allclose(after[1, c], before[1, c] - P @ before[1, c], atol=1e-12)
        np.testing.assert_allclose(g @ after[1, c], 0.0, atol=1e-12)
    # the sum keeps everything but what d held outside the adopted direction
    np.testing.assert_allclose(after[1].sum(axis=0), before[1].sum(axis=0) - (np.eye(d_in) - P) @ before[1, d], atol=1e-12)
    A, B = apd.to_components(moments[0], "W", C)
    assert not A[1, d].any() and not B[1, d].any()
    A0, B0 = apd.to_components(mom_before, "W", C)
    keep = [c for c in range(C) if c != d]
    np.testing.assert_array_equal(A[:, keep], A0[:, keep])
    np.testing.assert_array_equal(B[:, keep], B0[:, keep])
    np.testing.assert_array_equal(A[0], A0[0])


def test_reviver_adopts_an_unserved_feature_into_a_spare_dead_component():
    """TMS: the layer input of W is the model input, so an orphan feature f is adopted as the
    direction e_f: the dead component becomes row f of the summed weight, and no other component
    keeps any of row f."""
    rng = np.random.default_rng(2)
    exp = tms_exp(Revive(every=4, until=4, window=4, adopt=True))
    arch, target, _, _ = runner.build_target(exp)
    F, C, m = arch.features, 6, exp.decompose.rank
    comps = {k: rng.normal(0, 0.5, v.shape) for k, v in apd.init_components(arch, C, m, 2, 1.0, rng, np.float64).items()}
    r = revive.Reviver(exp.decompose.revive, 2, C, m)
    for _ in range(4):
        x, feat = one_hot_samples(rng, F, 20)
        mask = np.zeros((len(x), C), dtype=bool)
        for f in range(F - 1):  # feature F-1 is never served; components 4 and 5 are never chosen
            mask[feat == f, f] = True
        r.observe(np.stack([mask, mask]), np.stack([x, x]))
    before = apd.component_weights(comps, "W", C)
    layer_inputs = lambda x: {"W": target_forward(arch, target, x).pre["W"]}  # noqa: E731
    events = r.revive(4, comps, ({k: np.zeros_like(v) for k, v in comps.items()},), layer_inputs)
    after = apd.component_weights(comps, "W", C)
    for e in events:
        i = e["replicate"]
        # no donor serves two inputs (nothing to split); one orphan for the first spare dead component
        assert e["dead"] == [] and e["adopted"] == [4] and e["still_dead"] == [5]
        row = np.zeros(F)
        row[F - 1] = 1.0
        np.testing.assert_allclose(after[i, 4], np.outer(row, before[i].sum(axis=0)[F - 1]), atol=1e-9)
        np.testing.assert_allclose(np.delete(after[i], 4, axis=0)[:, F - 1], 0.0, atol=1e-9)
        others = [c for c in range(C) if c != 4]  # (the still-dead 5 included) keep their other rows
        np.testing.assert_allclose(after[i, others, :F - 1], before[i, others, :F - 1], atol=1e-12)
