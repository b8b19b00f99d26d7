"""Progress output: rewritten in place on a terminal, plain lines every ~10 s elsewhere."""
import io

from runtime.report.progress import ProgressLine


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_a_plain_line_every_interval_and_at_the_end(monkeypatch):
    monkeypatch.delenv("APDSPEC_PROGRESS", raising=False)
    out, clock = io.StringIO(), Clock()
    p = ProgressLine(out, clock=clock, line_interval=10.0)
    for step in range(101):
        clock.t = (step + 1) * 0.5  # 2 steps/s: step s is done after s + 1 steps (the loop starts at 0)
        p(step, 100, {"step": step, "lr": 1e-3, "total": 1.0 / (step + 1)})
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 6  # at 10, 20, 30, 40, 50 s and the last step
    assert lines[0].startswith("step 19/100  2.0 steps/s  ETA 00:40  total=0.05")
    assert lines[-1].startswith("step 100/100")


def test_a_resumed_run_s_rate_counts_from_its_resumed_step(monkeypatch):
    monkeypatch.delenv("APDSPEC_PROGRESS", raising=False)
    out, clock = io.StringIO(), Clock()
    clock.t = 100.0  # the process has been up a while (loading the checkpoint)
    p = ProgressLine(out, clock=clock, line_interval=10.0)
    p.begin("")
    for step in range(500, 1001):  # resumed at step 500 of 1000, 10 steps/s
        clock.t = 100.0 + (step - 499) * 0.1
        p(step, 1000, {"total": 1.0})
    first = out.getvalue().splitlines()[0]
    assert first.startswith("step 599/1000  10.0 steps/s  ETA 00:40"), first


def test_on_a_terminal_one_line_is_rewritten(monkeypatch):
    monkeypatch.delenv("APDSPEC_PROGRESS", raising=False)
    out, clock = Tty(), Clock()
    p = ProgressLine(out, clock=clock)
    for step in range(11):
        clock.t = step * 1.0
        p(step, 10, {"total": 2.0})
    p.close()
    text = out.getvalue()
    assert text.count("\r") == 10 and text.endswith("\n") and text.count("\n") == 1


def test_the_environment_turns_it_off_or_forces_the_terminal_form(monkeypatch):
    monkeypatch.setenv("APDSPEC_PROGRESS", "0")
    out = io.StringIO()
    p = ProgressLine(out)
    p(10, 10, {"total": 1.0})
    assert out.getvalue() == ""
    monkeypatch.setenv("APDSPEC_PROGRESS", "1")
    p = ProgressLine(out)
    p(10, 10, {"total": 1.0})
    assert out.getvalue().startswith("\rstep 10/10")
