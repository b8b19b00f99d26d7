"""Two runs on one --out: the second is refused while the first lives; a dead run's lock is taken over."""
import os
import subprocess
import sys

import pytest

from apdspec.cli import main
from runtime.store.rundir import LOCK, RunDirBusy, locked

from paths import ROOT  # noqa: E402  (the repository)
QUICK = os.path.join(ROOT, "tests", "specs", "quick.apd")  # a smoke run: its problems do not fail it
TINY = ["-s", "decompose.steps=5", "-s", "target.train.steps=5", "--quiet"]


@pytest.fixture
def live_pid():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p.pid
    p.kill()
    p.wait()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_live_run_keeps_its_directory(tmp_path, live_pid, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(str(live_pid))
    assert main(["run", QUICK, "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    assert f"apdspec run: {out} is being written by another run (pid {live_pid}); give another --out" in err
    assert sorted(os.listdir(out)) == [LOCK]  # nothing of the second run was written
    assert main(["run", QUICK, "--out", str(out), "-s", "seed=seeds(2)", *TINY]) == 1  # nor a sweep
    assert "is being written by another run" in capsys.readouterr().err


def test_a_dead_runs_lock_is_taken_over_and_released(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(str(_dead_pid()))
    assert main(["run", QUICK, "--out", str(out), *TINY]) == 0
    assert not (out / LOCK).exists() and (out / "summary.json").exists()


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with locked(str(tmp_path)):
            assert int((tmp_path / LOCK).read_text()) == os.getpid()
            1 / 0
    assert not (tmp_path / LOCK).exists()
    with locked(str(tmp_path)):  # and can be taken again
        pass


def test_busy_names_the_directory_and_pid(tmp_path, live_pid):
    (tmp_path / LOCK).write_text(str(live_pid))
    with pytest.raises(RunDirBusy) as info:
        with locked(str(tmp_path)):
            pass
    assert info.value.pid == live_pid and info.value.out_dir == str(tmp_path)
