"""Reliability of sweeps (issue 28): a finished point is reused only if its arrays are all there, and
under --jobs a worker process killed mid-point is replaced: only that point's checkpoint interval is
lost, the other points (running or not yet started) are untouched."""
import json
import os
import signal

from apdspec.cli import main
from reliability_cli import QUICK, assert_same_run, cli, finish, has_checkpoint, status, tiny, wait_for


def test_a_finished_point_whose_arrays_are_gone_runs_again(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["run", QUICK, "--out", str(out), "--quiet", "--jobs", "1", "-s", "seed=seeds(3)", *tiny(),
            "-s", "replicates=2"]
    assert main(args) == 0
    capsys.readouterr()
    os.unlink(out / "seed=1" / "replicates" / "1" / "decomposition.npz")
    target = out / "seed=2" / "target.npz"
    target.write_bytes(target.read_bytes()[:100])  # cut short: not a whole .npz
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "[1/3] seed=0  ok (reused)" in captured.out
    assert "seed=1  ok  " in captured.out and "seed=2  ok  " in captured.out  # run again, not reused
    assert ("note: point seed=1: finished earlier, but replicates/1/decomposition.npz is missing or not a whole "
            ".npz; it runs again") in captured.err
    assert "note: point seed=2: finished earlier, but target.npz is missing" in captured.err
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["resumed"] for p in points] == [True, False, False]
    assert (out / "seed=1" / "replicates" / "1" / "decomposition.npz").exists()
    assert len(target.read_bytes()) > 100


def _sweep_with_a_killed_worker(out, kills: int):
    """A --jobs 2 sweep over 4 seeds whose point seed=1 has its worker killed -9 once it has a
    checkpoint, and then `kills - 1` times more as soon as another worker holds the point again:
    (exit code, stdout, stderr)."""
    p = cli(["run", QUICK, "--out", str(out), "--quiet", "--jobs", "2", "-s", "seed=seeds(4)",
             "--checkpoint-every", "100", *tiny(steps=3000, train=50)])
    lock = out / "seed=1" / ".lock"

    def holder() -> int:
        try:
            return int(lock.read_text() or 0)
        except (OSError, ValueError):
            return 0

    wait_for("a checkpoint of seed=1", lambda: has_checkpoint(out / "seed=1") and holder(), proc=p)
    killed = []
    for _ in range(kills):
        if killed:
            wait_for("seed=1 running again", lambda: holder() not in (0, killed[-1]), proc=p)
        killed.append(holder())
        os.kill(killed[-1], signal.SIGKILL)
    return finish(p)


def test_a_killed_jobs_worker_loses_only_its_points_interval(tmp_path):
    out = tmp_path / "sweep"
    code, stdout, err = _sweep_with_a_killed_worker(out, kills=1)
    assert code == 0, err
    assert ("note: point seed=1: its worker was lost (its process was killed by SIGKILL); it runs again in another "
            "worker, from its last checkpoint") in err
    assert [status(out / f"seed={s}") for s in range(4)] == ["ok"] * 4
    summary = json.loads((out / "seed=1" / "summary.json").read_text())
    assert summary["resumed_from"].startswith("checkpoints/step-")
    assert "BrokenProcessPool" not in stdout + err
    # what the killed point computed is what an uninterrupted run of it computes
    straight = tmp_path / "straight"
    code, _, err = finish(cli(["run", QUICK, "--out", str(straight), "--quiet", "-s", "seed=1", *tiny(steps=3000, train=50)]))
    assert code == 0, err
    assert_same_run(straight, out / "seed=1")


def test_a_point_whose_worker_keeps_dying_is_an_error_and_the_others_finish(tmp_path):
    out = tmp_path / "sweep"
    code, stdout, err = _sweep_with_a_killed_worker(out, kills=2)
    assert code == 1, err
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["status"] for p in points] == ["ok", "error", "ok", "ok"]
    assert points[1]["error"] == "its worker was lost 2 times (its process was killed by SIGKILL); not run again"
    assert "seed=1  error  its worker was lost 2 times" in stdout
