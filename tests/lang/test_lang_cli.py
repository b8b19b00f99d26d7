"""The `apdspec` command line: exit codes, output, and no tracebacks for user mistakes."""
import json
import os
import subprocess
import sys
import types

import pytest

from apdspec.cli import main

from paths import ROOT  # noqa: E402  (the repository)
TMS = os.path.join(ROOT, "specs", "tms_5_2.apd")
QUICK = os.path.join(ROOT, "tests", "specs", "quick.apd")  # a smoke run: its problems do not fail it


def test_check_prints_a_resolved_summary(capsys):
    assert main(["check", TMS]) == 0
    out = capsys.readouterr().out
    assert f"{TMS}: ok" in out
    assert "W 5x2, W.T 2x5 (tied to W)" in out
    assert "C = 5, rank m = 3" in out
    assert "k = 432 active of B x C = 10,240 per batch" in out
    # per replicate: C * m * (d_in + d_out) for the one decomposed parameter W = 5 * 3 * 7
    # ... trained as 4 restarts of each of the 5 replicates
    assert "105 trainable APD parameters per replicate (2,100 in all, 4 restarts each)" in out
    assert "4 inits per replicate, the one with the lowest held-out top-k MSE kept" in out


def test_check_shows_revival(capsys):
    assert main(["check", TMS, "-s", "decompose.revive=split(every = 500, until = 5_000)"]) == 0
    out = capsys.readouterr().out
    assert ("every 500 steps up to step 5,000, dead components (chosen in under half of the last 200 steps) split busy "
            "ones (not part of APD)") in out
    assert main(["check", TMS, "-s", "decompose.revive=split(clear = true)"]) == 0
    assert "split busy ones, those left dead at the last revival are zeroed" in capsys.readouterr().out
    assert main(["check", TMS, "-s", "decompose.revive=split(adopt = true)"]) == 0
    assert "split busy ones, dead ones left over adopt inputs no component serves (not part" in capsys.readouterr().out
    assert main(["check", TMS]) == 0
    assert "revive" not in capsys.readouterr().out  # off by default


def test_check_all_specs(capsys):
    specs = sorted(os.path.join(ROOT, "specs", f) for f in os.listdir(os.path.join(ROOT, "specs")) if f.endswith(".apd"))
    assert main(["check", *specs]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok\n") == len(specs)
    assert "13,650,000 trainable APD parameters per replicate" in out  # resid 1L: 130 * 50 * 2100


def test_check_reports_errors_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.apd"
    bad.write_text("experiment x {\n  target tms { featurs = 5 }\n}\n")
    assert main(["check", TMS, str(bad)]) == 2
    captured = capsys.readouterr()
    assert f"{TMS}: ok" in captured.out
    assert f"{bad}:2:16: error: unknown key 'featurs' for a tms target" in captured.err
    assert f"{bad}: 1 error" in captured.err


def test_check_with_override(capsys):
    assert main(["check", QUICK, "-s", "decompose.steps=7"]) == 0
    assert "7 steps" in capsys.readouterr().out
    assert main(["check", QUICK, "-s", "decompose.stepz=7"]) == 2
    err = capsys.readouterr().err
    assert "<override 1>:1:11: error: unknown key 'stepz'" in err and "did you mean 'steps'?" in err


def test_fmt_check_and_rewrite(tmp_path, capsys):
    p = tmp_path / "x.apd"
    p.write_text("experiment x {target tms{features=5}  # five\n}")
    assert main(["fmt", "--check", str(p)]) == 1
    assert f"would reformat: {p}" in capsys.readouterr().out
    assert p.read_text() == "experiment x {target tms{features=5}  # five\n}"  # --check changes nothing
    assert main(["fmt", str(p)]) == 0
    assert p.read_text() == "experiment x {\n  target tms {\n    features = 5\n  }  # five\n}\n"
    capsys.readouterr()
    assert main(["fmt", "--check", str(p)]) == 0
    assert capsys.readouterr().out == "1 file already formatted\n"


def test_fmt_syntax_error_exits_2(tmp_path, capsys):
    p = tmp_path / "x.apd"
    p.write_text("experiment x {\n")
    assert main(["fmt", str(p)]) == 2
    assert "unexpected end of file" in capsys.readouterr().err
    assert p.read_text() == "experiment x {\n"


def _fake_module(monkeypatch, name, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def test_run_calls_the_runtime(tmp_path, monkeypatch, capsys):
    calls = {}

    def run_to_dir(exp, out_dir, spec_text=None, spec_files=(), progress=False, resume=False, checkpoint_every=None,
                   spec_original=None):
        calls.update(exp=exp, out_dir=out_dir, spec_text=spec_text, spec_files=spec_files, progress=progress,
                     resume=resume, checkpoint_every=checkpoint_every, spec_original=spec_original)
        return {"status": "ok"}

    _fake_module(monkeypatch, "runtime.pipeline.runner", run_to_dir=run_to_dir)
    monkeypatch.chdir(tmp_path)
    assert main(["run", QUICK, "-s", "decompose.steps=5", "--quiet"]) == 0
    assert calls["exp"].decompose.steps == 5
    assert calls["out_dir"].startswith(os.path.join("runs", "quickstart", ""))
    assert "steps = 5\n" in calls["spec_text"] and calls["progress"] is False
    assert calls["spec_files"] == [QUICK]
    assert calls["spec_original"] == open(QUICK).read()  # the file as written, comments and all
    assert main(["run", QUICK, "--out", str(tmp_path / "o")]) == 0
    assert calls["out_dir"] == str(tmp_path / "o") and calls["progress"] is True
    assert calls["resume"] is False and calls["checkpoint_every"] is None
    assert main(["run", QUICK, "--out", str(tmp_path / "o"), "--checkpoint-every", "7"]) == 0
    assert calls["checkpoint_every"] == 7
    assert main(["run", QUICK, "-o", str(tmp_path / "short")]) == 0  # -o is --out
    assert calls["out_dir"] == str(tmp_path / "short")


def test_run_prints_metrics_and_verdicts(monkeypatch, capsys):
    summary = {"status": "expectations_failed", "metrics": {"mmcs": [0.999, 0.97], "canonical_anti_scrubbed_loss": [2.0]},
               "expectations": [{"text": "expect mmcs >= 0.99", "passed": False, "observed": 1, "needed": "2 of 2 replicates"}],
               "report": ["o/report.md"]}
    _fake_module(monkeypatch, "runtime.pipeline.runner", run_to_dir=lambda *a, **k: summary)
    assert main(["run", QUICK, "--out", "o", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "mmcs" in captured.out and "0.9845  [0.999, 0.97]" in captured.out
    lines = captured.out.splitlines()[1:]  # after the output directory; values line up after the longest metric name
    assert lines[0].index("0.9845") == lines[1].index(" 2") + 1 == len("  canonical_anti_scrubbed_loss ")
    assert "FAIL  expect mmcs >= 0.99  (observed 1; needed 2 of 2 replicates)" in captured.out
    assert "report: o/report.md" in captured.out
    assert captured.out.splitlines()[0] == "output    o"
    assert captured.out.splitlines()[-1] == "o: expectations_failed (1 of 1 expectations failed)"


def test_run_exit_code_follows_status(monkeypatch):
    _fake_module(monkeypatch, "runtime.pipeline.runner", run_to_dir=lambda *a, **k: {"status": "expectations_failed"})
    assert main(["run", QUICK, "--out", "unused"]) == 1


def test_run_spec_error_exits_2_before_running(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "runtime.pipeline.runner", None)
    assert main(["run", str(tmp_path / "nope.apd")]) == 2
    assert "cannot read spec: No such file" in capsys.readouterr().err


def test_bench_and_report(tmp_path, monkeypatch, capsys):
    seen = {}

    def bench(exp, steps=20):
        seen["steps"] = steps
        return {"ms_per_step": 1.5, "steps": steps}

    _fake_module(monkeypatch, "runtime.pipeline.bench", bench=bench)
    assert main(["bench", QUICK, "--steps", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ms_per_step": 1.5, "steps": 3}
    assert main(["bench", QUICK]) == 0
    assert seen["steps"] == 20 and "ms_per_step  1.5" in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2  # no run directory, and none below it to index
    assert "no run directories under" in capsys.readouterr().err
    _fake_module(monkeypatch, "runtime.report", render=lambda run_dir: [os.path.join(run_dir, "report.md")])
    (tmp_path / "summary.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == os.path.join(str(tmp_path), "report.md")
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_explain(capsys):
    assert main(["explain", TMS, "decompose.topk"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"decompose.topk.mode = batch  ({TMS}:31:12)", f"decompose.topk.value = 0.211  ({TMS}:31:18)"]
    # an optional object that is off reads as the language writes it
    assert main(["explain", TMS, "decompose.revive"]) == 0
    assert capsys.readouterr().out == "decompose.revive = none  (default)\n"


def test_threads_option_sets_blas_variables(monkeypatch, capsys):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    assert main(["--threads", "2", "check", QUICK]) == 0
    assert os.environ["OPENBLAS_NUM_THREADS"] == os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "2"


@pytest.mark.parametrize("command", ["check", "fmt", "run", "report", "pick", "compare", "bench", "explain"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: apdspec " + command in capsys.readouterr().out


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "apdspec", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=60)


def test_user_mistakes_never_show_a_traceback(tmp_path):
    garbage = tmp_path / "garbage.apd"
    garbage.write_bytes(bytes(range(256)) * 4)
    nul = tmp_path / "nul.apd"
    nul.write_text("experiment x {\x00}")
    for args in (["check", "missing.apd"], ["check", str(tmp_path)], ["check", str(garbage)], ["check", str(nul)],
                 ["check", TMS, "-s", "decompose.steps="], ["check", TMS, "-s", "nonsense"],
                 ["fmt", str(garbage)], ["explain", TMS, "nope"]):
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stdout + r.stderr, args
        assert "error" in r.stderr
    r = _cli("check")  # a usage error: argparse's message, exit 2
    assert r.returncode == 2 and "Traceback" not in r.stderr and "usage:" in r.stderr


def test_module_entry_point_checks_a_spec():
    r = _cli("check", "specs/quickstart.apd")
    assert r.returncode == 0 and "specs/quickstart.apd: ok" in r.stdout
