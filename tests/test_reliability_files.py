"""Reliability of what a run writes (issue 28): temporary files created exclusively inside the run
directory (never through a planted symbolic link), --out that cannot be used is a usage error,
`check` refuses a FIFO instead of hanging, a full disk is one line and exit 1 and never leaves a
temporary file or a run marked ok, and no NumPy warning precedes "run diverged"."""
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from apdspec.cli import main
from reliability_cli import QUICK, ROOT, assert_same_run, cli, finish, status, temporaries, tiny
from runtime.pipeline import runner


# ------------------------------------------------------------------------------------------
# Symbolic links planted at the names of temporary files


def _plant(directory, names, victims):
    """A symbolic link `directory/<name>` to a file outside it per name; returns {victim: content}."""
    os.makedirs(directory, exist_ok=True)
    planted = {}
    for name in names:
        victim = os.path.join(victims, f"victim-{name.replace('/', '_')}")
        with open(victim, "w") as f:
            f.write(f"precious {name}\n")
        os.symlink(victim, os.path.join(directory, name))
        planted[victim] = f"precious {name}\n"
    return planted


def _untouched(planted):
    return {v: open(v).read() for v in planted} == planted


def test_a_run_never_writes_through_links_planted_at_its_temporary_names(tmp_path, capsys):
    out, victims = tmp_path / "run", tmp_path / "elsewhere"
    victims.mkdir()
    names = [f"{n}.tmp" for n in ("spec.json", "summary.json", "metrics.jsonl", "spec.apd", "spec.original.apd",
                                  "report.md", "report.html")]
    planted = _plant(out, names, victims)
    assert main(["run", QUICK, "--out", str(out), "--quiet", *tiny()]) == 0
    assert _untouched(planted), "a file outside --out was overwritten"
    assert status(out) == "ok" and json.loads((out / "spec.json").read_text())["name"] == "quickstart"
    assert all(os.path.islink(out / n) for n in names)  # left alone, neither followed nor replaced


def test_a_sweep_never_writes_through_links_planted_at_its_temporary_names(tmp_path, capsys):
    out, victims = tmp_path / "sweep", tmp_path / "elsewhere"
    victims.mkdir()
    planted = _plant(out, ["sweep.json.tmp", "sweep.md.tmp", "spec.json.tmp"], victims)
    planted.update(_plant(out / "seed=1", ["summary.json.tmp", "metrics.jsonl.tmp", "spec.json.tmp"], victims))
    assert main(["run", QUICK, "--out", str(out), "--quiet", "--jobs", "1", "-s", "seed=seeds(2)", *tiny()]) == 0
    assert _untouched(planted), "a file outside --out was overwritten"
    assert status(out / "seed=1") == "ok"


# ------------------------------------------------------------------------------------------
# --out that cannot be a run directory


def test_out_naming_a_file_or_an_unwritable_path_is_a_usage_error(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    for args in (["run", QUICK, "--out", str(a_file), "--quiet", *tiny()],
                 ["run", QUICK, "--out", str(a_file), "--quiet", "-s", "seed=seeds(2)", *tiny()]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"apdspec run: --out {a_file}: it is a file, not a directory; give a directory you can write to" in err
        assert "internal error" not in err and "Traceback" not in err
    assert main(["run", QUICK, "--out", str(a_file / "sub"), "--quiet", *tiny()]) == 2
    assert f"--out {a_file / 'sub'}: cannot create it: Not a directory" in capsys.readouterr().err
    assert a_file.read_text() == "mine\n"
    assert main(["pick", str(tmp_path), "--out", str(a_file)]) == 2
    assert f"apdspec pick: --out {a_file}: it is a file" in capsys.readouterr().err
    if os.geteuid() != 0:  # root may write anywhere
        locked_dir = tmp_path / "ro"
        locked_dir.mkdir(mode=0o500)
        assert main(["run", QUICK, "--out", str(locked_dir), "--quiet", *tiny()]) == 2
        assert "cannot write in it: Permission denied" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# A FIFO given to check


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_check_and_fmt_refuse_a_fifo_instead_of_hanging(tmp_path):
    fifo = tmp_path / "spec.apd"
    os.mkfifo(fifo)
    for command in (["check", "--no-estimate"], ["fmt", "--check"]):
        p = subprocess.run([sys.executable, "-m", "apdspec", *command, str(fifo)], cwd=ROOT, text=True,
                           capture_output=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
        assert p.returncode == 2, p.stderr
        assert f"{fifo}: error: cannot read spec: not a regular file (a pipe or a device)" in p.stderr
