"""Sweeps on a real dask cluster (issue 28): `dask scheduler` and `dask worker` processes on
127.0.0.1 (free ports, no dashboard), each test bounded in time and its processes killed at the end.

A sweep on dask is byte-identical to --jobs 1 (every array, every metrics.jsonl); a worker killed
mid-point is restarted by its nanny and the point resumes from its checkpoint; a killed scheduler
gives one line with the resume command, exit 1, and no worker writes into the sweep once the driver
has given up; a scheduler without workers is reported after APDSPEC_DASK_WAIT seconds."""
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from reliability_cli import QUICK, ROOT, assert_same_run, cli, finish, has_checkpoint, snapshot, tiny, wait_for

DASK = os.path.join(os.path.dirname(sys.executable), "dask")
needs_dask = pytest.mark.skipif(not os.path.exists(DASK) or importlib.util.find_spec("distributed") is None,
                                reason="needs dask.distributed and its dask command (pip install '.[distributed]')")

SWEEP = ["-s", "seed=seeds(2)", "--checkpoint-every", "100", *tiny(steps=3000, train=50)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A scheduler and `workers` workers (one thread each, with a nanny), as processes in their own
    sessions so that killing one kills its children too."""

    def __init__(self, logs, workers: int):
        self.logs, self.procs = logs, {}
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", self.address.rsplit(":", 1)[1],
                                  "--no-dashboard", "--idle-timeout", "300"])
        wait_for("the scheduler listening", self._listening, timeout=60, proc=self.procs["scheduler"])
        for i in range(workers):
            self.add_worker(f"worker{i}")
        if workers:
            from distributed import Client

            with Client(self.address, timeout=60) as c:
                c.wait_for_workers(workers, timeout=60)

    def _start(self, name: str, args: list) -> None:
        log = open(os.path.join(self.logs, f"{name}.log"), "w")
        self.procs[name] = subprocess.Popen([DASK, *args], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)

    def add_worker(self, name: str) -> None:
        self._start(name, ["worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
                           "--death-timeout", "60", "--local-directory", os.path.join(self.logs, name)])

    def _listening(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", int(self.address.rsplit(":", 1)[1])), 1):
            return True
        return False

    def kill(self, name: str) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(timeout=30)

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(workers: int = 1) -> Cluster:
        made.append(Cluster(str(tmp_path), workers))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep run with --jobs 1: what a dask run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    code, _, err = finish(cli(["run", QUICK, "--out", str(out), "--quiet", "--jobs", "1", *SWEEP]))
    assert code == 0, err
    return out


def _assert_same_sweep(a, b) -> None:
    for s in (0, 1):
        assert_same_run(a / f"seed={s}", b / f"seed={s}")
    points = lambda d: [(p["label"], p["status"], p["metrics_per_replicate"])  # noqa: E731
                        for p in json.loads((d / "sweep.json").read_text())["points"]]
    assert points(a) == points(b)


@needs_dask
def test_a_sweep_on_dask_processes_is_byte_identical_to_jobs_1(tmp_path, cluster, reference):
    c = cluster(workers=2)
    out = tmp_path / "sweep"
    code, stdout, err = finish(cli(["run", QUICK, "--out", str(out), "--quiet", "--scheduler", c.address, *SWEEP]),
                               timeout=180)
    assert code == 0, err
    assert stdout.splitlines()[0] == f"output    {out}"
    assert stdout.splitlines()[1].startswith(f"sweep     2 points on {c.address} (experiment quickstart: tms target")
    _assert_same_sweep(reference, out)


@needs_dask
def test_a_dask_worker_killed_mid_point_resumes_it_from_its_checkpoint(tmp_path, cluster, reference):
    c = cluster(workers=1)
    out = tmp_path / "sweep"
    p = cli(["run", QUICK, "--out", str(out), "--quiet", "--scheduler", c.address, *SWEEP])
    lock = out / "seed=0" / ".lock"
    wait_for("a checkpoint of seed=0", lambda: has_checkpoint(out / "seed=0") and lock.exists() and lock.read_text(),
             proc=p)
    os.kill(int(lock.read_text()), signal.SIGKILL)  # the worker process; its nanny starts another
    code, _, err = finish(p, timeout=180)
    assert code == 0, err
    summary = json.loads((out / "seed=0" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["resumed_from"].startswith("checkpoints/step-")
    _assert_same_sweep(reference, out)


@needs_dask
def test_losing_the_dask_scheduler_is_one_line_with_the_resume_command_and_no_orphan_writes(tmp_path, cluster):
    c = cluster(workers=1)
    out = tmp_path / "sweep"
    slow = ["-s", "seed=seeds(2)", "--checkpoint-every", "200", *tiny(steps=8000, train=50)]
    p = cli(["run", QUICK, "--out", str(out), "--quiet", "--scheduler", c.address, *slow])
    wait_for("a checkpoint of seed=0", lambda: has_checkpoint(out / "seed=0"), proc=p)
    c.kill("scheduler")
    code, stdout, err = finish(p, timeout=90)
    assert code == 1
    assert err.count("\n") == 1, err  # one line
    assert err.startswith(f"apdspec run: lost the dask scheduler {c.address} with 2 points unfinished (checkpointed); "
                          f"resume with: apdspec run --resume {out} --scheduler {c.address} once it is back"), err
    assert "Traceback" not in stdout + err and "error" not in stdout
    # the worker stopped its point with a checkpoint before the driver gave up, and writes nothing after
    before = snapshot(out)
    summary = json.loads((out / "seed=0" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["next_step"] < 8000
    time.sleep(3)
    assert snapshot(out) == before, "a worker wrote into the sweep after the driver gave up"
    assert not os.path.exists(out / "sweep.json") or all(
        pt["status"] == "pending" for pt in json.loads((out / "sweep.json").read_text())["points"])
    # the resume line works: here, without a scheduler, from the checkpoint
    code, _, err = finish(cli(["run", "--resume", str(out), "--quiet", "--jobs", "2"]), timeout=180)
    assert code == 0, err
    assert json.loads((out / "seed=0" / "summary.json").read_text())["resumed_from"].startswith("checkpoints/step-")


@needs_dask
def test_a_scheduler_without_workers_says_so(tmp_path, cluster):
    c = cluster(workers=0)
    out, log = tmp_path / "sweep", tmp_path / "driver.err"
    with open(log, "w") as err:
        p = subprocess.Popen([sys.executable, "-m", "apdspec", "run", QUICK, "--out", str(out), "--quiet",
                              "--scheduler", c.address, *SWEEP], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                             env=dict(os.environ, PYTHONPATH=ROOT, APDSPEC_DASK_WAIT="2"), text=True)
        try:
            wait_for("the note about no workers", lambda: "no dask worker" in log.read_text(), timeout=60)
            p.send_signal(signal.SIGINT)
            try:
                code = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("the driver did not exit within 60 s of SIGINT; its stderr:\n" + log.read_text())
            assert code == 130
        finally:
            p.kill()
            p.wait()
    text = log.read_text()
    assert (f"apdspec run: note: no dask worker has joined {c.address} for 2 s; the points wait for one. Start "
            f"workers with: OPENBLAS_NUM_THREADS=1 dask worker {c.address} --nthreads 1 --host 127.0.0.1") in text
    assert text.count("no dask worker") == 1


def test_ci_runs_the_readme_test_command_which_installs_dask():
    """These tests are skipped without dask: the command CI runs (the README's) must install it."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    command = next(line for line in readme.splitlines() if "pytest" in line and line.startswith("python3 -m venv"))
    assert "'.[test,distributed]'" in command
    assert command in ci.splitlines()


def test_documented_dask_commands_listen_on_loopback():
    """Every `dask scheduler` / `dask worker` command the docs give binds to 127.0.0.1 (dask's default
    is every interface), and the scheduler's dashboard too."""
    found = 0
    for doc in ("README.md", "docs/outputs.md", "docs/language.md", "apdspec/cli.py"):
        for line in open(os.path.join(ROOT, doc)).read().splitlines():
            for command in ("dask scheduler", "dask worker"):
                if command in line and ("--nthreads" in line or "--port" in line):
                    found += 1
                    assert "--host 127.0.0.1" in line or "docs/outputs.md" in line, f"{doc}: {line.strip()}"
                    if command == "dask scheduler":
                        assert "--dashboard-address 127.0.0.1" in line or "--no-dashboard" in line, line
    assert found >= 3
