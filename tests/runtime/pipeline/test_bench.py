"""runtime.pipeline.bench: the documented keys on a tiny spec, and the FLOP model on hand-computed cases.
No wall-clock assertions."""
import math

import pytest

from runtime.pipeline import bench as B
from runtime.methods.apd import cost as C
from runtime.spec import Data, Decompose, Experiment
from runtime import ApdLosses as Losses, ResidMlpTarget, TmsTarget, TopK


def tiny_tms(**kw):
    return Experiment(name="tiny", replicates=2, target=TmsTarget(features=3, hidden=2), train=None,
                      data=Data(probability=0.3),
                      decompose=Decompose(components=2, rank=2, topk=TopK("batch", 0.5), batch=10, steps=50,
                                          loss=Losses(faithfulness=1.0, minimality=1.0, simplicity=1.0), **kw))


def test_bench_returns_the_documented_keys():
    r = B.bench(tiny_tms(), steps=3, warmup=1)
    assert set(r) == set(B.KEYS)
    assert r["experiment"] == "tiny" and r["replicates"] == 2 and r["dtype"] == "float32"
    assert r["compute_path"] == "fused-tms"
    assert 0 < r["ms_per_step_min"] <= r["ms_per_step_median"] <= r["ms_per_step_max"]
    assert r["ms_per_replicate_step"] == pytest.approx(r["ms_per_step_median"] / 2)
    assert r["projected_full_run_s"] == pytest.approx(50 * r["ms_per_step_median"] / 1e3)
    assert r["steps_per_s"] == pytest.approx(1e3 / r["ms_per_step_median"])
    assert r["gflop_per_step"] == pytest.approx(C.step_flops(tiny_tms())["total"] / 1e9)
    assert r["fraction_of_matmul_peak"] == pytest.approx(r["achieved_gflops"] / r["matmul_peak_gflops"])
    assert r["matmul_peak_gflops"] > 0 and r["state_mb"] > 0 and r["max_rss_mb"] > 0
    assert r["blas_threads"] is None or r["blas_threads"] >= 1
    assert "init_target" in r["target_params"]


def test_bench_autograd_path_and_thread_setting():
    exp = tiny_tms()
    exp = Experiment(**{**exp.__dict__, "decompose": Decompose(components=2, rank=2, topk=None, batch=10, steps=20,
                                                                 loss=Losses(minimality=None, sparsity=1.0))})
    r = B.bench(exp, steps=2, warmup=0, threads=1)
    assert r["compute_path"] == "autograd"
    if B.blas_info()["blas_threads"] is not None:
        assert r["blas_threads"] == 1


def test_flops_tms_by_hand():
    # F 3, H 2, C 2, m 2 (Cm 4), B 10 rows (exactly one active feature: no all-zero rows), K 5
    exp = Experiment(replicates=1, target=TmsTarget(features=3, hidden=2), train=None,
                     data=Data(mode="exactly_n_active", n_active=1),
                     decompose=Decompose(components=2, rank=2, topk=TopK("batch", 0.5), batch=10,
                                         loss=Losses(faithfulness=1.0, minimality=1.0, simplicity=1.0)))
    f = C.step_flops(exp)
    assert f["faithfulness"] == 3 * 2 * 3 * 4 * 2  # 144
    assert f["target_forward"] == 2 * 10 * (3 * 2 + 2 * 3)  # 240
    # per layer use: 2 B d_in Cm + 2 Cm d_out F + 2 C B m F
    assert f["attributions"] == (240 + 48 + 240) + (160 + 72 + 240)  # 1000
    assert f["masked_forward"] == 2 * (3 * 2 * 10 * 4 * 5)  # dense variant: 2400
    assert f["simplicity"] == 3 * 2 * 4 * 5  # 120
    assert f["optimizer"] == 10 * (3 * 4 + 4 * 2)  # 200
    assert f["total"] == 4104
    assert C.step_flops(Experiment(**{**exp.__dict__, "replicates": 3}))["total"] == 3 * 4104


def test_flops_resid_by_hand():
    # F 3, D 4, d_mlp 2, 1 layer, C 2, m 1 (Cm 2), B 4, K 4, d_L 3 (forward-mode attributions)
    exp = Experiment(replicates=1, target=ResidMlpTarget(features=3, d_embed=4, d_mlp=2, layers=1), train=None,
                     data=Data(mode="exactly_n_active", n_active=1),
                     decompose=Decompose(components=2, rank=1, topk=TopK("batch", 1.0), batch=4,
                                         loss=Losses(faithfulness=1.0, minimality=1.0)))
    f = C.step_flops(exp)
    assert f["faithfulness"] == 2 * (3 * 2 * 4 * 2 * 2)  # 192
    assert f["target_forward"] == 2 * 4 * (4 * 2 + 2 * 4) + 2 * 4 * 3 * 4 + 2 * 4 * 4 * 3  # 320
    assert f["attributions"] == 48 + 48 + 32 + 48 + 32 + 144  # 352
    assert f["masked_forward"] == 2 * (6 * 4 * 1 * 6) + 6 * 4 * 4 * 3  # 576
    assert "simplicity" not in f
    assert f["optimizer"] == 10 * (4 * 2 + 2 * 2 + 2 * 2 + 2 * 4)  # 240
    assert f["total"] == 1680


def test_expected_rows_drop_all_zero_inputs():
    exp = tiny_tms()
    assert C.expected_rows(exp, exp.target) == pytest.approx(10 * (1 - 0.7 ** 3))
    assert C.active_pairs(exp, exp.target) == 5


def test_describe_config_and_blas_info():
    text = C.describe_config(tiny_tms(unit_norm=True))
    for part in ("B 10", "C 2", "m 2", "I 2", "top-k batch 0.5", "simplicity 1 p 1", "unit_norm", "float32"):
        assert part in text
    info = B.blas_info()
    assert set(info) == {"blas", "blas_threads"}
    assert math.isfinite(B.matmul_peak_gflops(n=64, repeats=1))


def test_jobs_vs_threads_times_both_layouts_in_subprocesses():
    r = B.jobs_vs_threads(tiny_tms(), steps=2)
    two = r["ms_per_step_2jobs_1thread"]
    assert len(two) == 2 and all(t > 0 for t in two) and r["ms_per_step_1job_2threads"] > 0
    assert math.isclose(r["steps_per_s_2jobs_1thread"], sum(1e3 / t for t in two))
    assert math.isclose(r["jobs_over_threads"], r["steps_per_s_2jobs_1thread"] / r["steps_per_s_1job_2threads"])
