"""Target checkpoints and npz helpers."""
import json
import os

import numpy as np
import pytest

from runtime.engine import models
from runtime.targets.gated.model import build_gated
from runtime.store.files import load_npz, load_target, save_npz, save_target
from runtime.spec.target_file import read_target_meta
from runtime.spec import Experiment, FileTarget, resolve, target_kind, to_dict
from runtime import GatedTarget, ResidMlpTarget, TmsTarget


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_resid(tmp_path, dtype):
    arch = ResidMlpTarget(features=4, d_embed=6, d_mlp=3, layers=2, in_bias=True, activation="gelu")
    params = models.init_target(arch, 2, np.random.default_rng(0), dtype)
    path = tmp_path / "target.npz"
    meta = {"train": {"steps": 10}, "final_loss": [0.1, 0.2]}
    assert save_target(path, arch, params, extras={"label_coeffs": np.ones((2, 4))}, meta=meta) == str(path)
    arch2, params2, extras2, meta2 = load_target(path)
    assert arch2 == arch
    assert set(params2) == set(params)
    for k in params:
        assert params2[k].dtype == dtype
        np.testing.assert_array_equal(params2[k], params[k])
    np.testing.assert_array_equal(extras2["label_coeffs"], np.ones((2, 4)))
    assert meta2["train"] == {"steps": 10} and meta2["final_loss"] == [0.1, 0.2]
    assert meta2["kind"] == "resid_mlp" and meta2["dtype"] == np.dtype(dtype).name
    assert meta2["target"] == json.loads(json.dumps(to_dict(arch)))
    assert read_target_meta(path) == meta2


def test_round_trip_gated_extras_and_spec_integration(tmp_path):
    arch = GatedTarget(functions=3, neurons=4, layers=2, input_range=(1.0, 2.0))
    params, extras = build_gated(arch, 2, np.random.default_rng(0), np.random.default_rng(1), np.float64)
    path = str(tmp_path / "g.npz")
    save_target(path, arch, params, extras)
    arch2, params2, extras2, _ = load_target(path)
    assert arch2 == arch and arch2.input_range == (1.0, 2.0)  # tuples survive JSON
    assert set(extras2) == set(extras)
    assert extras2["permutation"].dtype == np.int64
    for k in extras:
        np.testing.assert_array_equal(extras2[k], extras[k])
    x = np.random.default_rng(2).random((2, 5, 4))
    np.testing.assert_array_equal(models.target_forward(arch2, params2, x).y, models.target_forward(arch, params, x).y)
    # runtime.spec reads the file through read_target_meta
    exp = Experiment(target=FileTarget(path))
    assert target_kind(exp) == "gated"
    assert resolve(exp).data.values == (1.0, 2.0)


def test_path_is_exact_atomic_and_overwritable(tmp_path):
    arch = TmsTarget()
    params = models.init_target(arch, 1, np.random.default_rng(0))
    path = tmp_path / "target"  # no .npz suffix: written exactly here
    save_target(path, arch, params)
    assert os.path.exists(path) and not os.path.exists(str(path) + ".npz")
    params["W"] = params["W"] + 1
    save_target(path, arch, params)
    np.testing.assert_array_equal(load_target(path)[1]["W"], params["W"])
    assert sorted(os.listdir(tmp_path)) == ["target"]  # no temp files left behind


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "a.npz"
    save_npz(path, {"x": np.arange(3)})
    with pytest.raises(ValueError, match="object"):
        save_npz(path, {"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="JSON"):
        save_target(path, TmsTarget(), {"W": np.zeros((1, 5, 2))}, meta={"bad": object()})
    np.testing.assert_array_equal(load_npz(path)["x"], np.arange(3))
    assert os.listdir(tmp_path) == ["a.npz"]


def test_npz_helpers_round_trip(tmp_path):
    arrays = {"a.b": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3), "s": np.array("text")}
    save_npz(tmp_path / "x.npz", arrays)
    got = load_npz(tmp_path / "x.npz")
    assert set(got) == set(arrays)
    for k in arrays:
        assert got[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(got[k], arrays[k])


def test_meta_cannot_contradict_reserved_keys(tmp_path):
    arch = TmsTarget()
    params = models.init_target(arch, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="kind"):
        save_target(tmp_path / "t.npz", arch, params, meta={"kind": "gated"})
    with pytest.raises(ValueError, match="reserved"):
        save_target(tmp_path / "t.npz", arch, {**params, "extra.x": np.zeros(1)})
    _, _, _, meta = load_target(save_target(tmp_path / "t.npz", arch, params, meta={"kind": "tms"}))
    save_target(tmp_path / "t2.npz", arch, params, meta=meta)  # re-saving a loaded meta is fine


def test_bad_files(tmp_path):
    missing = str(tmp_path / "nope.npz")
    with pytest.raises(OSError, match="nope.npz"):
        load_target(missing)
    with pytest.raises(OSError, match="nope.npz"):
        read_target_meta(missing)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        load_target(garbage)

    plain = tmp_path / "plain.npz"
    np.savez(plain, W=np.zeros(3))
    with pytest.raises(ValueError, match="plain.npz.*not an apdspec target"):
        read_target_meta(plain)

    other = tmp_path / "other.npz"
    np.savez(other, __meta__=np.array(json.dumps({"format": "something/2", "kind": "tms", "target": {}})))
    with pytest.raises(ValueError, match="unsupported target format"):
        load_target(other)

    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="single.npy"):
        load_npz(npy)

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, o=np.array([{"a": 1}], dtype=object))  # needs pickle to read: refused
    with pytest.raises(ValueError, match="pickled.npz"):
        load_npz(pickled)

    truncated = tmp_path / "trunc.npz"
    save_target(truncated, TmsTarget(), models.init_target(TmsTarget(), 1, np.random.default_rng(0)))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.npz"):
        load_target(truncated)

    # spec validation reports the unreadable file at target.path
    from runtime.spec import validate

    issues = validate(Experiment(target=FileTarget(str(garbage))))
    assert issues and issues[0].path == "target.path"
