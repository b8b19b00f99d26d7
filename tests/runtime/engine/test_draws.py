"""Every random array is created in the run's dtype with the values a float64 draw cast to it had
(runtime/engine/draws.py): the same values whatever the chunk size, equal to the former
`rng.<draw>(shape).astype(dtype)`, and no float64 copy of a large array."""
import tracemalloc

import numpy as np
import pytest

from runtime import Data, DeepLinearTarget, GatedTarget, ResidMlpTarget, TmsTarget
from runtime.engine import data as D
from runtime.engine import draws
from runtime.engine.models import init_target
from runtime.methods.apd import components as apd
from runtime.methods.spd import ci
from runtime.methods.spd import model as spd


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_draws_equal_one_float64_draw_cast_whatever_the_chunk(monkeypatch, dtype):
    shape = (3, 101, 7)
    ref_n = np.random.default_rng(5).normal(0.2, 0.7, shape).astype(dtype)
    ref_u = np.random.default_rng(5).uniform(-0.3, 0.9, shape).astype(dtype)
    for chunk in (7, 100, 1 << 20):
        monkeypatch.setattr(draws, "CHUNK", chunk)
        n = draws.normal(np.random.default_rng(5), 0.2, 0.7, shape, dtype)
        u = draws.uniform(np.random.default_rng(5), -0.3, 0.9, shape, dtype)
        assert n.dtype == dtype and n.tobytes() == ref_n.tobytes()
        assert u.dtype == dtype and u.tobytes() == ref_u.tobytes()


def _chunked_equal(monkeypatch, make):
    """make() gives the same arrays (bytes, dtype) with a tiny chunk as with the default one."""
    monkeypatch.setattr(draws, "CHUNK", 1 << 20)
    big = make()
    monkeypatch.setattr(draws, "CHUNK", 5)
    small = make()
    flat = lambda d: d.items() if isinstance(d, dict) else [("", d)]  # noqa: E731
    for (k, a), (_, b) in zip(flat(big), flat(small)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), k
    return big


ARCHS = [TmsTarget(features=6, hidden=3, hidden_layers=1),
         ResidMlpTarget(features=7, d_embed=9, d_mlp=4, layers=2, in_bias=True, out_bias=True),
         ResidMlpTarget(features=8, d_embed=8, d_mlp=3, embedding="identity"),
         DeepLinearTarget(features=5, layers=2, init_noise=0.1)]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.kind)
def test_target_inits_are_in_the_run_dtype_and_chunk_invariant(monkeypatch, arch):
    p = _chunked_equal(monkeypatch, lambda: init_target(arch, 3, np.random.default_rng(1), np.float32))
    assert all(v.dtype == np.float32 for v in p.values())
    p64 = init_target(arch, 3, np.random.default_rng(1), np.float64)
    for k in p:  # a float32 run starts from the float64 run's values, rounded
        assert np.array_equal(p[k], p64[k].astype(np.float32)), k


def test_the_random_embedding_is_unit_rows_of_a_float64_draw():
    arch = ResidMlpTarget(features=7, d_embed=9, d_mlp=4)
    W = np.random.default_rng(2).standard_normal((2, 7, 9))
    W /= np.linalg.norm(W, axis=-1, keepdims=True)  # the former init, in float64
    got = init_target(arch, 2, np.random.default_rng(2), np.float32)
    assert got["W_E"].tobytes() == W.astype(np.float32).tobytes()
    assert got["W_U"].tobytes() == np.ascontiguousarray(np.swapaxes(W, -1, -2)).astype(np.float32).tobytes()


@pytest.mark.parametrize("arch", [TmsTarget(features=5, hidden=2), GatedTarget()], ids=lambda a: a.kind)
def test_method_inits_are_in_the_run_dtype_and_chunk_invariant(monkeypatch, arch):
    comps = _chunked_equal(monkeypatch, lambda: apd.init_components(arch, 4, 2, 3, 1.0, np.random.default_rng(3),
                                                                    np.float32))
    assert all(v.dtype == np.float32 for v in comps.values())
    comps64 = apd.init_components(arch, 4, 2, 3, 1.0, np.random.default_rng(3), np.float64)
    assert all(np.array_equal(comps[k], comps64[k].astype(np.float32)) for k in comps)
    params = _chunked_equal(monkeypatch, lambda: spd.init_spd(arch, 4, 3, 2, 1.0, np.random.default_rng(4),
                                                              np.float32))
    params64 = spd.init_spd(arch, 4, 3, 2, 1.0, np.random.default_rng(4), np.float64)
    assert all(v.dtype == np.float32 and np.array_equal(v, params64[k].astype(np.float32))
               for k, v in params.items())
    assert all(v.dtype == np.float32 for v in ci.init_ci(4, 3, 2, np.random.default_rng(0), np.float32).values())


@pytest.mark.parametrize("data", [Data(probability=0.3, values=(-1.0, 1.0)),
                                  Data(probability=0.3, synced=((0, 2),)),
                                  Data(mode="exactly_n_active", n_active=2, values=(0.5, 2.0))],
                         ids=["at_least_zero_active", "synced", "exactly_n_active"])
def test_batches_are_chunk_invariant_and_equal_the_float64_draw(monkeypatch, data):
    arch = TmsTarget(features=6, hidden=2)
    x = _chunked_equal(monkeypatch, lambda: D.sample_inputs(arch, data, 3, 50, np.random.default_rng(7), np.float32))
    x64 = D.sample_inputs(arch, data, 3, 50, np.random.default_rng(7), np.float64)
    assert x.dtype == np.float32 and np.array_equal(x, np.minimum(x64.astype(np.float32), x.max()))
    assert np.array_equal(x != 0, x64 != 0)


def test_gated_inputs_are_chunk_invariant(monkeypatch):
    arch = GatedTarget()
    _chunked_equal(monkeypatch, lambda: D.sample_inputs(arch, Data(probability=0.2), 2, 40, np.random.default_rng(9),
                                                        np.float32))


def test_a_float32_init_never_holds_a_float64_copy(monkeypatch):
    """Drawing the components of a float32 run holds the float32 result, one transposed copy of a
    factor and a chunk; the former float64 draw held 3x the result (22 MB here, measured)."""
    monkeypatch.setattr(draws, "CHUNK", 1 << 16)
    arch = ResidMlpTarget(features=20, d_embed=400, d_mlp=50)
    tracemalloc.start()
    try:
        comps = apd.init_components(arch, 40, 50, 1, 1.0, np.random.default_rng(0), np.float32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result = sum(v.nbytes for v in comps.values())  # 2 x 40 x 50 x 450 floats: 7.2 MB
    assert peak < 1.6 * result + 4 * draws.CHUNK * 8  # the result, one transposed copy of A, a chunk
