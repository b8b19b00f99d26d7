"""Helpers of the reliability tests (tests/test_reliability_*.py, tests/test_dask_processes.py):
the CLI in a subprocess, waiting on files, and comparing run directories."""
import json
import os
import subprocess
import sys
import time

import numpy as np

from paths import ROOT  # noqa: E402  (the repository)
QUICK = os.path.join(ROOT, "tests", "specs", "quick.apd")  # a smoke run: its problems do not fail it


def tiny(steps: int = 40, train: int = 20) -> list[str]:
    """-s overrides that make specs/quickstart.apd a run of a fraction of a second (no plots)."""
    return ["-s", f"decompose.steps={steps}", "-s", f"target.train.steps={train}", "-s", "report.plots=[]"]


def cli(args: list[str], env: dict | None = None) -> subprocess.Popen:
    """`python -m apdspec ARGS` from the repository, output captured as text."""
    full = dict(os.environ, PYTHONPATH=ROOT, APDSPEC_PROGRESS="0", OPENBLAS_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "apdspec", *args], cwd=ROOT, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a CLI process; killed if it outlives `timeout`."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"apdspec did not finish in {timeout} s; stderr: {err[-2000:]}") from None
    return p.returncode, out, err


def wait_for(what: str, ready, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    """Poll `ready()` until it is true; fail after `timeout` s, or if `proc` ended meanwhile."""
    deadline = time.time() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first (exit {proc.returncode}): {proc.stderr.read()[-2000:]}")
        assert time.time() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def has_checkpoint(run_dir) -> bool:
    d = os.path.join(run_dir, "checkpoints")
    return os.path.isdir(d) and any(n.startswith("step-") for n in os.listdir(d))


def temporaries(top) -> list[str]:
    """Every temporary file left under `top` (the .<name>.<random>.tmp of atomic writes, and the
    <name>.tmp of older versions)."""
    return [os.path.join(d, n) for d, _, names in os.walk(top) for n in names if n.endswith(".tmp") or n.startswith(".tmp")]


def snapshot(top) -> dict:
    """path -> (size, mtime) of every file under `top`."""
    out = {}
    for d, _, names in os.walk(top):
        for n in names:
            st = os.stat(os.path.join(d, n))
            out[os.path.relpath(os.path.join(d, n), top)] = (st.st_size, st.st_mtime_ns)
    return out


def status(run_dir) -> str | None:
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            return json.load(f).get("status")
    except FileNotFoundError:
        return None


def assert_same_run(a, b) -> None:
    """Two run directories hold the same results: every array of every .npz equal byte for byte,
    metrics.jsonl identical, the same metrics in summary.json (an .npz itself records its write
    time, so it is compared array by array)."""
    for d, _, names in os.walk(a):
        for n in names:
            if not n.endswith(".npz"):
                continue
            rel = os.path.relpath(os.path.join(d, n), a)
            x, y = np.load(os.path.join(a, rel)), np.load(os.path.join(b, rel))
            assert sorted(x.files) == sorted(y.files), rel
            for k in x.files:
                assert x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes(), f"{rel}: {k}"
    with open(os.path.join(a, "metrics.jsonl"), "rb") as f, open(os.path.join(b, "metrics.jsonl"), "rb") as g:
        assert f.read() == g.read()
    with open(os.path.join(a, "summary.json")) as f, open(os.path.join(b, "summary.json")) as g:
        assert json.load(f)["metrics"] == json.load(g)["metrics"]
