"""Progress of long runs: step, steps/s, ETA and current losses.

On a terminal one stderr line is rewritten at most every `interval` seconds. Elsewhere (nohup, CI, a
log file) a plain line is appended every `line_interval` seconds (10 by default) and at the last
step, so `tail -f` shows the run moving without flooding the log. APDSPEC_PROGRESS=1 forces the
terminal form, 0 turns progress off.
"""
from __future__ import annotations

import os
import sys
import time


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class ProgressLine:
    def __init__(self, stream=None, interval: float = 0.5, enabled: bool | None = None,
                 line_interval: float = 10.0, clock=time.perf_counter):
        self.stream = stream or sys.stderr
        env = os.environ.get("APDSPEC_PROGRESS")
        tty = self.stream.isatty()
        if enabled is None:
            enabled = env != "0"
        self.enabled = enabled
        self.rewrite = tty or env == "1"  # rewrite one line in place; else append plain lines
        self.interval = interval if self.rewrite else line_interval
        self.clock = clock
        self.t0 = clock()
        self.last = self.t0 if not self.rewrite else 0.0  # plain lines: the first after `line_interval`
        self.width = 0
        self.label = ""
        self.first: int | None = None  # the phase's first step reported (a resumed run starts late)

    def begin(self, label: str) -> None:
        """Start a new phase (e.g. "target"): its lines are prefixed with `label`, its rate and ETA
        restart from now. On a terminal the previous phase's line is kept."""
        if self.enabled and self.rewrite and self.width:
            self.stream.write("\n")
            self.width = 0
        self.label = label
        self.t0 = self.clock()
        self.last = self.t0 if not self.rewrite else 0.0
        self.first = None

    def __call__(self, step: int, steps: int, entry: dict) -> None:
        """Step `step` of `steps` is done. The rate counts the steps done since the phase began (the
        first call follows its first step): a resumed run's rate starts from its resumed step."""
        if not self.enabled:
            return
        if self.first is None:
            self.first = step
        now = self.clock()
        if now - self.last < self.interval and step < steps:
            return
        self.last = now
        rate = (step - self.first + 1) / max(now - self.t0, 1e-9)
        eta = (steps - step) / rate if rate > 0 else 0.0
        losses = " ".join(f"{k}={v:.3g}" for k, v in entry.items()
                          if k not in ("step", "lr") and isinstance(v, float))
        line = f"{self.label + ' ' if self.label else ''}step {step}/{steps}  {rate:.1f} steps/s  ETA {_fmt_time(eta)}  {losses}"
        if self.rewrite:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.rewrite and self.width:
            self.stream.write("\n")
            self.stream.flush()
