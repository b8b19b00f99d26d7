"""Data from an .npz file: rows drawn with replacement, labels that travel with their inputs, the
sha256 recorded and verified, and runs end to end (tiny), resumed bit-identically, through the CLI."""
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from runtime.engine.data import load_data_file, sample_batch, sample_inputs
from runtime.engine.decompose import Interrupted
from runtime.pipeline import runner
from runtime.spec import (
    Data, Decompose, Experiment, Optimizer, Report, SpecValidationError, Training, check, from_dict, resolve, validate,
)
from runtime import TmsTarget, TopK

from paths import ROOT  # noqa: E402  (the repository)

TMS = TmsTarget(features=4, hidden=2)


def write_data(path, n=400, seed=0, labels=True, scale=0.5):
    """Sparse inputs (n, 4) and labels = scale * inputs (a target trained on them learns to halve)."""
    g = np.random.default_rng(seed)
    x = ((g.random((n, 4)) < 0.2) * g.random((n, 4))).astype(np.float32)
    arrays = {"inputs": x}
    if labels:
        arrays["labels"] = (scale * x).astype(np.float32)
    np.savez(path, **arrays)
    return x


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_batches_are_rows_of_the_file_with_their_labels(tmp_path):
    path = str(tmp_path / "d.npz")
    g = np.random.default_rng(1)
    x = g.normal(size=(50, 4))
    np.savez(path, inputs=x, labels=np.stack([x.sum(1), x[:, 0], x[:, 1] * 2, -x[:, 3]], 1))
    data = Data(file=path, sha256=sha(path))
    xb = sample_inputs(TMS, data, 3, 200, np.random.default_rng(0), np.float64)
    assert xb.shape == (3, 200, 4) and xb.dtype == np.float64
    rows = {tuple(r) for r in x}
    assert all(tuple(r) in rows for r in xb.reshape(-1, 4))
    assert not np.array_equal(xb[0], xb[1])  # replicates draw their own rows
    # the same generator state draws the same rows: uniform indices, with replacement
    want = np.random.default_rng(0).integers(0, 50, size=(3, 200))
    np.testing.assert_array_equal(xb, x[want])
    assert len({tuple(r) for r in xb[0]}) < 200  # with replacement: 200 draws from 50 rows repeat
    xl, lab = sample_batch(TMS, data, Training(), np.ones((3, 4)), 3, 200, np.random.default_rng(0), np.float32)
    assert xl.dtype == lab.dtype == np.float32
    np.testing.assert_allclose(lab[..., 0], xl.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(lab[..., 3], -xl[..., 3])
    # empirical row frequencies: uniform over the 50 rows (chi-square within a loose bound)
    idx = np.random.default_rng(2).integers(0, 50, 100_000)
    counts = np.bincount(idx, minlength=50)
    assert ((counts - 2000) ** 2 / 2000).sum() < 120  # chi2(49): mean 49, 120 is far in the tail


def test_a_changed_or_non_finite_file_is_refused(tmp_path):
    path = str(tmp_path / "d.npz")
    write_data(path)
    recorded = sha(path)
    write_data(path, seed=1)  # other bytes
    with pytest.raises(ValueError, match="has changed: its sha256 is"):
        load_data_file(Data(file=path, sha256=recorded))
    issues = validate(resolve(Experiment(target=TMS, data=Data(file=path, sha256=recorded))))
    assert [i.path for i in issues] == ["data.sha256"] and "has changed" in issues[0].message
    bad = str(tmp_path / "nan.npz")
    np.savez(bad, inputs=np.array([[0.0, 1.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="row 0 holds nan"):
        load_data_file(Data(file=bad))


def test_an_object_array_is_refused_without_unpickling(tmp_path):
    path = str(tmp_path / "obj.npz")
    np.savez(path, inputs=np.array([[object()] * 4], dtype=object))
    issues = validate(resolve(Experiment(target=TMS, data=Data(file=path))))
    assert [i.path for i in issues] == ["data.inputs"] and "dtype object" in issues[0].message
    with pytest.raises(ValueError, match="allow_pickle"):
        load_data_file(Data(file=path))


def test_resolve_records_the_sha256(tmp_path):
    path = str(tmp_path / "d.npz")
    write_data(path)
    exp = resolve(Experiment(target=TMS, data=Data(file=path)))
    assert exp.data.sha256 == sha(path)
    assert validate(exp) == []


def _experiment(path, **dec):
    return Experiment(name="filedata", seed=3, replicates=2, target=TMS, data=Data(file=path),
                      train=Training(steps=400, batch=128, optimizer=Optimizer("adamw", 1e-2, weight_decay=0.0)),
                      decompose=Decompose(**{**dict(components=4, topk=TopK("batch", 0.3), steps=40, batch=64,
                                                    log_every=10), **dec}),
                      report=Report(eval_batches=3, plots=()))


def test_a_run_on_a_data_file_trains_on_its_labels_and_records_its_sha256(tmp_path):
    path = str(tmp_path / "d.npz")
    x = write_data(path, scale=0.5)
    out = tmp_path / "run"
    summary = runner.run_to_dir(_experiment(path), str(out))
    assert summary["status"] in ("ok", "expectations_failed")
    assert summary["data_file"] == {"path": path, "sha256": sha(path), "inputs": {"name": "inputs", "shape": [400, 4]},
                                    "labels": {"name": "labels", "shape": [400, 4]}}
    spec = json.loads((out / "spec.json").read_text())
    assert spec["data"]["file"] == path and spec["data"]["sha256"] == sha(path)
    assert f"sha256 `{sha(path)}`" in (out / "report.md").read_text()
    # the target learned the file's labels (0.5 x), not TMS's own rule (x)
    result = runner.run(_experiment(path))
    from runtime.engine.models import target_forward

    y = np.asarray(target_forward(TMS, result.target, np.broadcast_to(x, (2,) + x.shape).astype(np.float32)).y)
    assert np.mean((y - 0.5 * x) ** 2) < 0.2 * np.mean((y - x) ** 2)
    assert result.metrics["target_loss"][0] < 0.01  # measured against the file's labels
    from runtime.analysis.core import analysis_for

    assert list(analysis_for(result).mse_by_sparsity()) == ["training"]  # exactly-n rows are generated data
    # a run from the recorded spec.json refuses a file that has changed since
    write_data(path, seed=7)
    with pytest.raises(SpecValidationError, match="data.sha256: the data file .* has changed"):
        check(from_dict(spec))


def test_without_labels_a_trained_target_learns_its_own_rule(tmp_path):
    path = str(tmp_path / "d.npz")
    x = write_data(path, labels=False)
    exp = dataclasses.replace(_experiment(path), replicates=1)
    result = runner.run(exp)
    from runtime.engine.models import target_forward

    y = np.asarray(target_forward(TMS, result.target, x[None].astype(np.float32)).y)
    assert np.mean((y - x) ** 2) < np.mean((y - 0.5 * x) ** 2)  # TMS's identity labels


def test_a_run_on_a_data_file_resumes_bit_identically(tmp_path):
    path = str(tmp_path / "d.npz")
    write_data(path)
    exp = _experiment(path, steps=30)
    straight = runner.run(exp, with_metrics=False)
    saved, calls, decomposing = [], [0], [False]

    def stop():
        calls[0] += decomposing[0]
        return signal.SIGINT if calls[0] == 15 else None

    with pytest.raises(Interrupted):
        runner.run(exp, with_metrics=False, checkpoint=lambda a, s: saved.append((a, s)), checkpoint_every=7, stop=stop,
                   on_target=lambda *built: decomposing.__setitem__(0, True))
    resumed = runner.run(exp, with_metrics=False, resume=saved[-1])
    for k in straight.decomposition.comps:
        assert np.array_equal(straight.decomposition.comps[k], resumed.decomposition.comps[k]), k


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, APDSPEC_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "apdspec", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_cli_runs_a_data_file_and_refuses_it_once_changed(tmp_path):
    write_data(str(tmp_path / "d.npz"))
    (tmp_path / "f.apd").write_text(
        'experiment f {\n  target tms {\n    features = 4\n    hidden = 2\n    train { steps = 100 }\n  }\n'
        '  data file("d.npz")\n  decompose { steps = 20 }\n  report { plots = [] }\n}\n')
    r = _cli("run", "f.apd", "-o", "run", "--quiet", cwd=tmp_path)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    assert "data file" in (tmp_path / "run" / "report.md").read_text()
    write_data(str(tmp_path / "d.npz"), seed=5)
    r = _cli("check", "run/spec.apd", cwd=tmp_path)  # the resolved spec pins the file's sha256
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "data.sha256: the data file" in r.stderr and "has changed" in r.stderr
    assert "run/spec.apd:" in r.stderr  # located in the resolved spec


def test_a_sweep_over_data_files_checks_each_file_by_its_own_sha256(tmp_path):
    import apdspec
    from runtime.pipeline.sweep import points

    write_data(str(tmp_path / "a.npz"), seed=1)
    write_data(str(tmp_path / "b.npz"), seed=2)
    spec = apdspec.loads('experiment s {\n  target tms {\n    features = 4\n    hidden = 2\n  }\n  data file("a.npz")\n'
                         '  sweep { data.file = ["a.npz", "b.npz"] }\n}\n', str(tmp_path / "s.apd"))
    assert spec.experiment.data.sha256 == sha(tmp_path / "a.npz")  # the resolved base records its own file
    pts = points(spec.experiment)
    assert [resolve(p.experiment).data.sha256 for p in pts] == [sha(tmp_path / "a.npz"), sha(tmp_path / "b.npz")]
