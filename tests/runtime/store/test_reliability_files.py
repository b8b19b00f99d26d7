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


# ------------------------------------------------------------------------------------------
# A full disk


def _enospc(what: str) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), what)


def _assert_no_space(out, err: str, code: int) -> None:
    assert code == 1, err
    assert f"no space left on {out}: free some space, then resume with: apdspec run --resume {out}" in err
    assert "Traceback" not in err and "internal error" not in err
    assert temporaries(out) == []
    assert status(out) != "ok"


def test_a_full_disk_while_logging_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    args = [QUICK, "--quiet", "--checkpoint-every", "20", *tiny(steps=200), "-s", "decompose.log_every=5"]
    assert main(["run", *args, "--out", str(tmp_path / "straight")]) == 0
    real = runner._restart_log

    class FullAfter:  # metrics.jsonl that takes 15 more lines, then finds the disk full
        def __init__(self, f):
            self.f, self.left = f, 15

        def write(self, text):
            self.left -= 1
            if self.left < 0:
                raise _enospc("metrics.jsonl")
            return self.f.write(text)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(runner, "_restart_log", lambda path, keep: FullAfter(real(path, keep)))
    out = tmp_path / "run"
    code = main(["run", *args, "--out", str(out)])
    _assert_no_space(out, capsys.readouterr().err, code)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "error" and "No space left on device" in summary["error"]
    monkeypatch.undo()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert_same_run(tmp_path / "straight", out)


def test_a_full_disk_at_the_report_never_leaves_the_run_ok(tmp_path, monkeypatch, capsys):
    from runtime.report import document

    monkeypatch.setattr(document, "to_html", lambda *a, **k: (_ for _ in ()).throw(_enospc("report.html")))
    out = tmp_path / "run"
    code = main(["run", QUICK, "--out", str(out), "--quiet", *tiny()])
    _assert_no_space(out, capsys.readouterr().err, code)
    assert status(out) == "error" and (out / "checkpoints").is_dir()  # kept: the run can be resumed
    monkeypatch.undo()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert status(out) == "ok" and (out / "report.html").exists() and not (out / "checkpoints").exists()


def test_a_full_disk_at_a_rename_leaves_no_temporary_file_and_no_ok(tmp_path, monkeypatch, capsys):
    real = os.replace

    def replace(src, dst, *a, **k):
        if os.path.basename(dst) == "summary.json":
            raise _enospc(dst)
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "run"
    code = main(["run", QUICK, "--out", str(out), "--quiet", *tiny()])
    _assert_no_space(out, capsys.readouterr().err, code)
    assert status(out) is None  # not even "error" could be written: no summary at all, never a stale one


def test_a_full_disk_stops_a_sweep_with_one_line(tmp_path, monkeypatch, capsys):
    real = runner._restart_log

    def full(path, keep):
        if "seed=1" in path:
            raise _enospc(path)
        return real(path, keep)

    monkeypatch.setattr(runner, "_restart_log", full)
    out = tmp_path / "sweep"
    code = main(["run", QUICK, "--out", str(out), "--quiet", "--jobs", "1", "-s", "seed=seeds(3)", *tiny()])
    captured = capsys.readouterr()
    _assert_no_space(out, captured.err, code)
    assert "seed=2" not in captured.out and not (out / "seed=2").exists()  # the sweep stopped there
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["status"] for p in points] == ["ok", "pending", "pending"]


def _tmpfs(path) -> bool:
    """Mount a 1 MB tmpfs at `path` (root only); False if that is not possible here."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not _tmpfs(disk):
        pytest.skip("needs root and mount -t tmpfs for a real full disk")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_really_full_disk_at_any_point_is_one_line_and_resumable(small_disk):
    """A 1 MB tmpfs filled up to leave 16-160 KB: the run finds the disk full in its log, a
    checkpoint, its arrays or its report; every time: exit 1 with one line, no temporary file, never
    status ok, and after space is freed --resume finishes it."""
    for free_kb in (16, 48, 96, 160):
        out = small_disk / f"run{free_kb}"
        filler = small_disk / "filler"
        size = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize - free_kb * 1024
        with open(filler, "wb") as f:
            f.write(b"\0" * max(size, 0))
        code, _, err = finish(cli(["run", QUICK, "--out", str(out), "--quiet", "--checkpoint-every", "50",
                                   "-s", "decompose.steps=400", "-s", "target.train.steps=50",
                                   "-s", "report.plots=[polygons, losses]"]))
        _assert_no_space(out, err, code)
        os.unlink(filler)
        code, _, err = finish(cli(["run", "--resume", str(out), "--quiet"]))
        assert code == 0 and status(out) == "ok", err
        shutil.rmtree(out)


# ------------------------------------------------------------------------------------------
# NumPy warnings before "run diverged"


def test_no_numpy_warning_comes_before_run_diverged(tmp_path):
    code, _, err = finish(cli(["run", QUICK, "--out", str(tmp_path / "run"), "--quiet", *tiny(steps=50),
                               "-s", "decompose.optimizer=adam(lr=1e6)"]))
    assert code == 1
    assert err.startswith("apdspec run: the run diverged: "), err
    assert "Warning" not in err and "numpy" not in err
