"""runtime.pipeline.compare: APD and SPD runs and sweeps in one table."""
import json

from runtime.pipeline import compare
from runtime.spec import Decompose, Experiment, to_dict
from runtime import TmsTarget


def _run(d, method, seed, mmcs, ml2r, wall=60.0):
    d.mkdir(parents=True)
    exp = Experiment(seed=seed, replicates=len(mmcs), target=TmsTarget(features=5, hidden=2),
                     decompose=Decompose(method=method))
    (d / "spec.json").write_text(json.dumps(to_dict(exp)))
    (d / "summary.json").write_text(json.dumps({"status": "ok", "replicates": len(mmcs), "wall_time_s": wall,
                                                "metrics": {"mmcs": mmcs, "ml2r": ml2r}}))


def test_groups_by_target_and_method_and_counts_the_bars(tmp_path):
    _run(tmp_path / "apd", "apd", 0, [0.998, 0.995, 0.98], [0.90, 0.89, 0.90])
    sweep = tmp_path / "sweep"
    _run(sweep / "seed=0", "spd", 0, [1.0, 0.999], [0.99, 0.95], wall=120)
    _run(sweep / "seed=1", "spd", 1, [1.0, 1.0], [0.99, 0.98], wall=180)
    (sweep / "sweep.json").write_text(json.dumps({"points": [{"label": "seed=0"}, {"label": "seed=1"}]}))
    rows = {r["method"]: r for r in (compare.row(k[0], k[1], v, k[2]) for k, v in
                                     compare.group(compare.runs_in(str(tmp_path / "apd")) +
                                                   compare.runs_in(str(sweep))).items())}
    assert rows["apd"]["replicates"] == 3 and abs(rows["apd"]["mmcs_rate"] - 2 / 3) < 1e-12 and rows["apd"]["both_rate"] == 0
    assert rows["spd"]["runs"] == 2 and rows["spd"]["seeds"] == [0, 1]
    assert rows["spd"]["mmcs_rate"] == 1.0 and rows["spd"]["both_rate"] == 0.75 and rows["spd"]["wall_min"] == 2.5
    text = compare.compare([str(tmp_path / "apd"), str(sweep)])
    assert "| TMS 5-2 | APD (experiment) | 1 (0) | 3 | 67% | 0% |" in text
    assert "| TMS 5-2 | SPD (experiment) | 2 (0, 1) | 4 | 100% | 75% |" in text


def test_a_run_on_a_target_file_groups_with_trained_targets_of_its_architecture(tmp_path):
    import numpy as np

    from runtime.spec import FileTarget
    from runtime.store.files import save_target

    arch = TmsTarget(features=5, hidden=2)
    _run(tmp_path / "trained", "spd", 0, [1.0], [1.0])
    loaded = tmp_path / "loaded"
    _run(loaded, "spd", 1, [0.98], [1.0])
    exp = Experiment(seed=1, replicates=1, target=FileTarget(path=str(tmp_path / "t.npz")), decompose=Decompose(method="spd"))
    (loaded / "spec.json").write_text(json.dumps(to_dict(exp)))
    save_target(loaded / "target.npz", arch, {"W": np.zeros((5, 2)), "b": np.zeros(5)})
    runs = compare.runs_in(str(tmp_path / "trained")) + compare.runs_in(str(loaded))
    assert list(compare.group(runs)) == [("TMS 5-2", "spd", "experiment")]
    (loaded / "target.npz").unlink()  # no saved target: labelled by the file's folder instead
    assert len(compare.group(runs)) == 2


def test_apdspec_compare_prints_and_writes_the_table_and_names_a_path_without_runs(tmp_path, capsys):
    from apdspec.cli import main as apdspec

    _run(tmp_path / "apd", "apd", 0, [0.998, 0.98], [0.90, 0.99])
    out = tmp_path / "table.md"
    assert apdspec(["compare", str(tmp_path / "apd"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| TMS 5-2 | APD (experiment) | 1 (0) | 2 | 50% | 0% |" in printed and out.read_text() == printed
    (tmp_path / "empty").mkdir()
    assert apdspec(["compare", str(tmp_path / "apd"), str(tmp_path / "empty")]) == 2  # a user mistake
    err = capsys.readouterr().err
    assert "apdspec compare:" in err and "empty: no finished run here" in err and "Traceback" not in err
    assert compare.main([str(tmp_path / "missing")]) == 2
    assert "missing: no finished run" in capsys.readouterr().err


def test_other_configurations_and_selections_get_rows_of_their_own(tmp_path):
    _run(tmp_path / "one", "spd", 0, [1.0, 0.98], [1.0, 1.0])
    _run(tmp_path / "picked", "spd", 0, [1.0, 1.0], [1.0, 1.0], wall=120)
    summary = json.loads((tmp_path / "picked" / "summary.json").read_text())
    summary["restarts"] = {"restarts": 2, "chosen": [0, 1]}
    (tmp_path / "picked" / "summary.json").write_text(json.dumps(summary))
    _run(tmp_path / "other", "spd", 1, [0.9], [1.0])
    spec = json.loads((tmp_path / "other" / "spec.json").read_text())
    (tmp_path / "other" / "spec.json").write_text(json.dumps(dict(spec, name="spd_variant")))
    text = compare.compare([str(tmp_path / d) for d in ("one", "picked", "other")])
    assert "| TMS 5-2 | SPD (experiment) | 1 (0) | 2 | 50% | 50% |" in text
    assert "| TMS 5-2 | SPD (experiment, best of 2 inits) | 1 (0) | 2 | 100% | 100% |" in text
    assert "| TMS 5-2 | SPD (spd_variant) | 1 (1) | 1 | 0% | 0% |" in text
